// Feasibility checkers: each one a named function that either accepts a node for a pod or says why not.

import { posix } from 'node:path';
import type { ClusterView, HostPathRule, NodeInfo, PodInfo } from './cluster-view.ts';
import { deadReason, haGraceOf, missingForMs } from './liveness.ts';
import { formatBytes, formatCores, formatDuration, toMillicores } from './units.ts';

export type CheckerName = 'host' | 'alive' | 'cordon' | 'labels' | 'policy' | 'cpu' | 'memory';

/** Resources left on a node after every slot held or already planned there. */
export interface FreeResources {
  readonly cpuMillis: number;
  readonly memoryBytes: number;
}

export interface CheckContext {
  readonly view: ClusterView;
  readonly now: number;
  readonly pod: PodInfo;
  readonly node: NodeInfo;
  readonly free: FreeResources;
}

/** A refusal: `reason` is what `meshd why` prints; `summary` drops per-node figures to group nodes. */
export interface CheckFailure {
  readonly reason: string;
  readonly summary: string;
}

export interface Rejection extends CheckFailure {
  readonly checker: CheckerName;
  readonly node: string;
  readonly peerId: string;
}

export interface FeasibilityChecker {
  readonly name: CheckerName;
  readonly check: (ctx: CheckContext) => CheckFailure | undefined;
}

function fail(reason: string, summary = reason): CheckFailure {
  return { reason, summary };
}

/** `placement.host` pins every replica to the node of that name. */
export function checkPinnedHost({ pod, node }: CheckContext): CheckFailure | undefined {
  const host = pod.placement.host;
  return host === undefined || node.name === host ? undefined : fail(`pinned to host ${host}`);
}

/** Forgotten and dead nodes never take slots; nor do nodes missing longer than the pod's live window. */
export function checkAlive({ view, now, pod, node }: CheckContext): CheckFailure | undefined {
  const dead = deadReason(view, node.peerId, now);
  if (dead !== undefined) return fail(`node dead: ${dead}`, 'node dead');
  const missing = missingForMs(view, node.peerId, now);
  const window = haGraceOf(pod);
  if (missing > window) {
    return fail(
      `node missing for ${formatDuration(missing)} (live within ${formatDuration(window)})`,
      'node missing',
    );
  }
  return undefined;
}

/** Cordoned and draining nodes take no new slots. */
export function checkCordon({ node }: CheckContext): CheckFailure | undefined {
  if (node.draining === true) return fail('draining');
  return node.cordoned ? fail('cordoned') : undefined;
}

/** Every `placement.labels` entry must be on the node with the same value. */
export function checkLabels({ pod, node }: CheckContext): CheckFailure | undefined {
  const wanted = Object.entries(pod.placement.labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const missing = wanted.filter(([k, v]) => node.labels[k] !== v);
  if (missing.length === 0) return undefined;
  const list = missing.map(([k, v]) => `${k}=${v}`).join(', ');
  const summary = `label${missing.length > 1 ? 's' : ''} ${list} missing`;
  const has = missing.flatMap(([k]) => (node.labels[k] === undefined ? [] : [`${k}=${node.labels[k]}`]));
  return fail(has.length === 0 ? summary : `${summary} (node has ${has.join(', ')})`, summary);
}

/** `path` is `prefix` or lies below it (after normalizing both; `/` covers everything). */
export function underPrefix(path: string, prefix: string): boolean {
  const p = posix.normalize(path);
  const pre = posix.normalize(prefix).replace(/\/+$/, '');
  return pre === '' || p === pre || p.startsWith(`${pre}/`);
}

/**
 * The most specific rule allowing `asked` (a read-write request needs a rule without `readOnly: true`),
 * or undefined. One test for the scheduler and for the node that grants, so both agree on what fits.
 */
export function allowingRule(
  asked: { path: string; readOnly?: boolean },
  rules: readonly HostPathRule[],
): string | undefined {
  if (!posix.isAbsolute(asked.path)) return undefined;
  let best: string | undefined;
  for (const rule of rules) {
    if (!posix.isAbsolute(rule.path) || !underPrefix(asked.path, rule.path)) continue;
    if (rule.readOnly === true && asked.readOnly !== true) continue;
    if (best === undefined || rule.path.length > best.length) best = rule.path;
  }
  return best;
}

function pathAllowed(requested: HostPathRule, rules: readonly HostPathRule[]): boolean {
  return allowingRule(requested, rules) !== undefined;
}

/** Double opt-in: each relaxation the pod requests must be allowed by the node's operator. */
export function checkPolicy({ pod, node }: CheckContext): CheckFailure | undefined {
  const want = pod.security;
  const allow = node.policy;
  const denied: string[] = [];
  if (want.hostNetwork === true && allow.hostNetwork !== true) denied.push('hostNetwork');
  if (want.unsandboxed === true && allow.unsandboxed !== true) denied.push('unsandboxed');
  for (const hp of want.hostPaths ?? []) {
    if (!pathAllowed(hp, allow.hostPaths ?? [])) {
      denied.push(`hostPath ${hp.path}${hp.readOnly === true ? ' (read-only)' : ' (read-write)'}`);
    }
  }
  for (const d of want.devices ?? []) if (!(allow.devices ?? []).includes(d)) denied.push(`device ${d}`);
  for (const c of want.capabilities ?? [])
    if (!(allow.capabilities ?? []).includes(c)) denied.push(`capability ${c}`);
  if (denied.length === 0) return undefined;
  return fail(
    `node policy does not allow ${denied.join(', ')} (the pod requests it; the node operator must allow it)`,
  );
}

export function checkCpu({ pod, free }: CheckContext): CheckFailure | undefined {
  const asked = toMillicores(pod.resources.cpu);
  if (asked <= free.cpuMillis) return undefined;
  return fail(
    `cpu exhausted: ${formatCores(free.cpuMillis)} free, ${formatCores(asked)} asked`,
    'cpu exhausted',
  );
}

export function checkMemory({ pod, free }: CheckContext): CheckFailure | undefined {
  const asked = Math.max(0, pod.resources.memoryBytes);
  if (asked <= free.memoryBytes) return undefined;
  return fail(
    `memory exhausted: ${formatBytes(free.memoryBytes)} free, ${formatBytes(asked)} asked`,
    'memory exhausted',
  );
}

/** Every checker, in the order reasons are reported. */
export const FEASIBILITY_CHECKERS: readonly FeasibilityChecker[] = Object.freeze([
  { name: 'host', check: checkPinnedHost },
  { name: 'alive', check: checkAlive },
  { name: 'cordon', check: checkCordon },
  { name: 'labels', check: checkLabels },
  { name: 'policy', check: checkPolicy },
  { name: 'cpu', check: checkCpu },
  { name: 'memory', check: checkMemory },
]);

/**
 * The checkers that depend only on the (eventually identical) document: they decide a node's
 * preference rank for a slot, which must not shift with presence or load.
 */
export const STATIC_CHECKERS: readonly FeasibilityChecker[] = Object.freeze(
  FEASIBILITY_CHECKERS.filter((c) => c.name === 'host' || c.name === 'labels' || c.name === 'policy'),
);

/**
 * Why the node can never run the pod whatever its presence and load (pinned host, labels, policy).
 * The static checkers read neither the clock nor free resources.
 */
export function staticRejections(view: ClusterView, pod: PodInfo, node: NodeInfo): Rejection[] {
  return rejectionsFor({ view, now: 0, pod, node, free: { cpuMillis: 0, memoryBytes: 0 } }, STATIC_CHECKERS);
}

/** Every reason `checkers` give for refusing the node (empty: feasible). */
export function rejectionsFor(ctx: CheckContext, checkers = FEASIBILITY_CHECKERS): Rejection[] {
  const out: Rejection[] = [];
  for (const c of checkers) {
    const failure = c.check(ctx);
    if (failure !== undefined)
      out.push({ checker: c.name, node: ctx.node.name, peerId: ctx.node.peerId, ...failure });
  }
  return out;
}
