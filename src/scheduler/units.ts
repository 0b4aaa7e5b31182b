// Human formatting of bytes, cores and durations for rejection reasons (`64Mi`, `0.5`, `8d`).

const KI = 1024;
const MI = KI * 1024;
const GI = MI * 1024;
const TI = GI * 1024;

function trim(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1).replace(/\.0$/, '');
}

/** `64Mi`, `1.5Gi`, `512` (plain bytes below 1Ki). Negative amounts print as 0. */
export function formatBytes(bytes: number): string {
  const b = Math.max(0, bytes);
  if (b >= TI) return `${trim(b / TI)}Ti`;
  if (b >= GI) return `${trim(b / GI)}Gi`;
  if (b >= MI) return `${trim(b / MI)}Mi`;
  if (b >= KI) return `${trim(b / KI)}Ki`;
  return String(Math.floor(b));
}

/** Cores from millicores: `2`, `0.5`, `0.125`. Negative amounts print as 0. */
export function formatCores(millis: number): string {
  return String(Math.max(0, millis) / 1000);
}

/** Whole millicores from cores, so sums and comparisons are exact on every peer. */
export function toMillicores(cores: number): number {
  return Number.isFinite(cores) ? Math.max(0, Math.round(cores * 1000)) : 0;
}

/** `250ms`, `6s`, `2.5m`, `3h`, `8d`. */
export function formatDuration(ms: number): string {
  const d = Math.max(0, ms);
  if (d < 1000) return `${Math.round(d)}ms`;
  if (d < 60_000) return `${trim(d / 1000)}s`;
  if (d < 3_600_000) return `${trim(d / 60_000)}m`;
  if (d < 86_400_000) return `${trim(d / 3_600_000)}h`;
  return `${trim(d / 86_400_000)}d`;
}
