// Pure renderers of a pod's lifecycle snapshot for `meshd why`: text, --blame, --dot and a one-line summary.

import { formatMs, type StepState } from './graph-runner.ts';
import type { Blocker, WhySnapshot, WhyStep } from './journal.ts';

/** A marker and a word for every state, so the report reads the same without colour. */
export const STATE_MARKERS: Readonly<Record<StepState, string>> = Object.freeze({
  waiting: '…',
  running: '▶',
  done: '✓',
  failed: '✗',
  'timed-out': '⏱',
  'dependency-failed': '⊘',
  skipped: '↷',
  stopping: '▼',
  stopped: '■',
});

const ANSI: Readonly<Record<StepState, string>> = Object.freeze({
  waiting: '2',
  running: '36',
  done: '32',
  failed: '31',
  'timed-out': '33',
  'dependency-failed': '35',
  skipped: '2',
  stopping: '33',
  stopped: '2',
});

const DOT_COLOURS: Readonly<Record<StepState, string>> = Object.freeze({
  waiting: '#eeeeee',
  running: '#bbdefb',
  done: '#c8e6c9',
  failed: '#ef9a9a',
  'timed-out': '#ffcc80',
  'dependency-failed': '#f8bbd0',
  skipped: '#e0e0e0',
  stopping: '#fff59d',
  stopped: '#cfd8dc',
});

export interface TextOptions {
  /** ANSI colour on markers and state words (off by default). */
  readonly color?: boolean;
}

/** `pod web: stuck at process.start (failed: exec: python4: not found)`. */
export function renderSummary(snap: WhySnapshot): string {
  const head = `pod ${snap.pod}`;
  const blocker = snap.blocker === undefined ? '' : describeBlocker(snap.blocker);
  switch (snap.status) {
    case 'running': {
      const took = snap.finishedAt === undefined ? '' : ` in ${formatMs(snap.finishedAt - snap.startedAt)}`;
      const failed = snap.failedSteps;
      const extra =
        failed.length === 0
          ? ''
          : `; wanted step${failed.length > 1 ? 's' : ''} failed: ${failed.join(', ')}`;
      return `${head}: running (${snap.goal} reached${took}, attempt ${snap.attempt})${extra}`;
    }
    case 'starting':
      if (snap.blocker === undefined) return `${head}: starting (attempt ${snap.attempt})`;
      if (isFailure(snap.blocker.state)) return `${head}: stuck at ${blocker}`;
      return `${head}: starting — ${blocker}`;
    case 'failed':
      return `${head}: stuck at ${blocker === '' ? `${snap.goal} (not reached)` : blocker}`;
    case 'cancelled':
      return `${head}: start cancelled${blocker === '' ? '' : ` at ${blocker}`}`;
    case 'stopping':
    case 'stopped': {
      const last =
        snap.startOutcome === 'running'
          ? ' (it was running)'
          : snap.startOutcome === 'failed' && blocker !== ''
            ? ` — last start stuck at ${blocker}`
            : '';
      return `${head}: ${snap.status}${last}`;
    }
  }
}

/** The full report: the summary, then every step in graph order with marker, state word and detail. */
export function renderText(snap: WhySnapshot, opts: TextOptions = {}): string {
  const lines = [renderSummary(snap)];
  const stopped = snap.stoppedAt === undefined ? '' : `, stopped ${iso(snap.stoppedAt)}`;
  lines.push(`attempt ${snap.attempt} on node ${snap.node}, started ${iso(snap.startedAt)}${stopped}`);
  lines.push('');
  const nameWidth = Math.max(...snap.steps.map((s) => s.name.length), 4);
  const durations = snap.steps.map((s) =>
    s.durationMs === undefined || s.kind === 'target' ? '' : formatMs(s.durationMs),
  );
  const durWidth = Math.max(...durations.map((d) => d.length), 0);
  snap.steps.forEach((step, i) => {
    const word = `${STATE_MARKERS[step.state]} ${step.state.padEnd(17)}`;
    const coloured = opts.color === true ? `\u001b[${ANSI[step.state]}m${word}\u001b[0m` : word;
    const detail = stepDetail(step, snap);
    const row = `  ${coloured}  ${step.name.padEnd(nameWidth)}  ${(durations[i] ?? '').padStart(durWidth)}  ${detail}`;
    lines.push(row.trimEnd());
  });
  if (snap.droppedEntries > 0)
    lines.push('', `(${snap.droppedEntries} older journal entries of this run dropped)`);
  if (snap.previousRuns.length > 0) {
    lines.push('', 'earlier attempts:');
    for (const r of snap.previousRuns.slice(0, 5)) {
      const at =
        r.blocker === undefined
          ? ''
          : ` — ${isFailure(r.blocker.state) ? 'stuck at ' : ''}${describeBlocker(r.blocker)}`;
      const stopped = r.stopReason === undefined ? '' : `; stopped: ${r.stopReason}`;
      lines.push(`  ${r.attempt}: ${r.startOutcome ?? r.status}${at}${stopped}`);
    }
    if (snap.previousRuns.length > 5) lines.push(`  … ${snap.previousRuns.length - 5} more`);
  }
  return `${lines.join('\n')}\n`;
}

/** `--blame`: steps that ran, slowest first (running steps count their time so far). */
export function renderBlame(snap: WhySnapshot): string {
  const ran = snap.steps
    .filter((s) => s.kind === 'step' && s.durationMs !== undefined)
    .sort((a, b) => (b.durationMs ?? 0) - (a.durationMs ?? 0) || (a.name < b.name ? -1 : 1));
  const lines = [`pod ${snap.pod}, attempt ${snap.attempt}: start time by step, slowest first`];
  if (ran.length === 0) lines.push('  (no step has started yet)');
  const width = Math.max(...ran.map((s) => formatMs(s.durationMs ?? 0).length), 0);
  const nameWidth = Math.max(...ran.map((s) => s.name.length), 0);
  for (const s of ran) {
    const state = s.outcome ?? s.state;
    const why = s.error !== undefined && (state === 'failed' || state === 'timed-out') ? `: ${s.error}` : '';
    const so = s.state === 'running' ? ' (so far)' : '';
    lines.push(
      `  ${formatMs(s.durationMs ?? 0).padStart(width)}  ${s.name.padEnd(nameWidth)}  ${STATE_MARKERS[state]} ${state}${so}${why}`.trimEnd(),
    );
  }
  return `${lines.join('\n')}\n`;
}

/**
 * `--dot`: a Graphviz digraph. Edges point like systemd-analyze dot: `A -> B` reads "A after B"
 * (green), "A requires B" (black, bold) or "A wants B" (grey, dashed). Ordering implied by a
 * requires/wants is not drawn twice. Nodes are filled by state; targets are ellipses.
 */
export function renderDot(snap: WhySnapshot): string {
  const lines = [
    `digraph ${quote(`pod ${snap.pod} attempt ${snap.attempt}`)} {`,
    '  rankdir=BT;',
    `  label=${quote(renderSummary(snap), 'edges: green = after, black = requires, grey dashed = wants')};`,
    '  labelloc=t;',
    '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    '  edge [fontname="Helvetica"];',
  ];
  for (const s of snap.steps) {
    const duration = s.durationMs === undefined || s.kind === 'target' ? '' : ` · ${formatMs(s.durationMs)}`;
    const attrs = [
      `label=${quote(s.name, `${STATE_MARKERS[s.state]} ${s.state}${duration}`)}`,
      `fillcolor=${quote(DOT_COLOURS[s.state])}`,
    ];
    if (s.kind === 'target') attrs.push('shape=ellipse');
    const tip = s.error ?? s.stopError;
    if (tip !== undefined) attrs.push(`tooltip=${quote(tip)}`);
    if (s.state === 'failed' || s.state === 'timed-out') attrs.push('penwidth=2', 'color="#b71c1c"');
    lines.push(`  ${quote(s.name)} [${attrs.join(', ')}];`);
  }
  for (const e of snap.edges) {
    if (e.kind === 'after' && e.implied) continue;
    const style =
      e.kind === 'after'
        ? 'color="#2e7d32"'
        : e.kind === 'requires'
          ? 'color="#000000", penwidth=1.5'
          : 'color="#9e9e9e", style=dashed';
    lines.push(`  ${quote(e.from)} -> ${quote(e.to)} [${style}, tooltip=${quote(e.reason)}];`);
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

function stepDetail(step: WhyStep, snap: WhySnapshot): string {
  switch (step.state) {
    case 'waiting':
      return step.waitingOn.length === 0 ? '' : `waiting on ${step.waitingOn.join(', ')}`;
    case 'running':
      return step.timeoutMs === undefined ? 'running' : `running (timeout ${formatMs(step.timeoutMs)})`;
    case 'failed':
    case 'timed-out':
    case 'skipped':
      return step.error ?? '';
    case 'dependency-failed':
      return dependencyDetail(step, snap);
    case 'stopping':
    case 'stopped': {
      const parts: string[] = [];
      if (step.outcome !== undefined && step.outcome !== 'done') {
        parts.push(
          step.outcome === 'dependency-failed'
            ? `start ${dependencyDetail(step, snap)}`
            : `start ${step.outcome}${step.error === undefined ? '' : `: ${step.error}`}`,
        );
      }
      if (step.stopError !== undefined) parts.push(step.stopError);
      else if (step.stopDurationMs !== undefined) parts.push(`stop took ${formatMs(step.stopDurationMs)}`);
      return parts.join('; ');
    }
    case 'done':
      return '';
  }
}

function dependencyDetail(step: WhyStep, snap: WhySnapshot): string {
  const dep = step.failedDependency;
  if (dep === undefined) return 'a required step failed';
  const depState = snap.steps.find((s) => s.name === dep);
  const how = depState === undefined ? '' : ` (${depState.outcome ?? depState.state})`;
  const root = step.rootCause !== undefined && step.rootCause !== dep ? `; root cause ${step.rootCause}` : '';
  return `requires ${dep}${how}${root}`;
}

function describeBlocker(b: Blocker): string {
  switch (b.state) {
    case 'failed':
      return `${b.step} (failed${b.error === undefined ? '' : `: ${b.error}`})`;
    case 'timed-out':
      return `${b.step} (${b.error ?? 'timed out'})`;
    case 'running':
      return `${b.step} running${b.runningForMs === undefined ? '' : ` for ${formatMs(b.runningForMs)}`}`;
    case 'waiting':
      return `${b.step} waiting`;
    default:
      return `${b.step} (${b.state}${b.error === undefined ? '' : `: ${b.error}`})`;
  }
}

function isFailure(state: StepState): boolean {
  return state === 'failed' || state === 'timed-out' || state === 'dependency-failed';
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A Graphviz double-quoted string; each part on its own line. */
function quote(...parts: string[]): string {
  const escaped = (t: string) => t.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\r?\n/g, '\\n');
  return `"${parts.map(escaped).join('\\n')}"`;
}
