// The pod lifecycle as a systemd-like graph of named steps: definitions, validation and deterministic order.
//
// Semantics (docs/decisions/0003-step-graph-semantics.md):
// - `after`/`before` only order steps: a step starts once every step ordered before it has finished,
//   whatever the outcome.
// - `requires`/`wants` are dependencies. A step whose required step fails, times out, or itself has a
//   failed requirement becomes `dependency-failed`; a wanted step failing changes nothing.
// - Unlike systemd, `requires`/`wants` also imply `after` (the dependant starts after its dependency),
//   unless an explicit `before`/`after` edge orders the dependant first: explicit ordering always wins.
// - `requiredBy`/`wantedBy` are the reverse forms (systemd's RequiredBy=/WantedBy=): a plugin step
//   with `requiredBy: ['running.target']` gates the pod without editing the target.
// - Targets are steps without a `start`; the four standard targets are always part of a graph.

import { ValidationError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';

/** Facts a step hands to later steps (an allocated port, an address); must be JSON-serialisable. */
export type StepOutput = Record<string, unknown>;

/** What a step's `start`/`stop` is given. Everything but `logger` is JSON-serialisable. */
export interface StepContext {
  /** Pod key, e.g. `default/web`. */
  readonly pod: string;
  readonly node: string;
  /** Start attempt of this pod on this node, from 1. */
  readonly attempt: number;
  readonly step: string;
  /** The pod spec; opaque to the lifecycle. */
  readonly spec: unknown;
  /** Outputs of the steps that were done when this step began, by step name. */
  readonly outputs: Readonly<Record<string, StepOutput>>;
  readonly logger: Logger;
}

export interface StepDefinition {
  readonly name: string;
  readonly description?: string;
  /** Where the step comes from (`built-in`, a plugin file, a node config path), for error messages. */
  readonly source?: string;
  readonly after?: readonly string[];
  readonly before?: readonly string[];
  readonly requires?: readonly string[];
  readonly wants?: readonly string[];
  readonly requiredBy?: readonly string[];
  readonly wantedBy?: readonly string[];
  /** Applies to `start` and to `stop` separately; the runner's default (30 s) otherwise. */
  readonly timeoutMs?: number;
  /** Absent on targets. Must honour `signal`: the runner does not wait for a timed-out start to return. */
  readonly start?: (ctx: StepContext, signal: AbortSignal) => Promise<StepOutput | undefined>;
  /** Runs for every step whose start was called (done or not), so it must tolerate partial starts. */
  readonly stop?: (ctx: StepContext, signal: AbortSignal) => Promise<void>;
}

export const NETWORK_TARGET = 'network.target';
export const STORAGE_TARGET = 'storage.target';
export const SANDBOX_TARGET = 'sandbox.target';
export const RUNNING_TARGET = 'running.target';

/** Always present. The sandbox needs network and storage; the pod is running once the sandbox is. */
export const STANDARD_TARGETS: readonly StepDefinition[] = Object.freeze(
  [
    { name: NETWORK_TARGET, source: 'built-in', description: 'pod networking is ready' },
    { name: STORAGE_TARGET, source: 'built-in', description: 'pod volumes are ready' },
    {
      name: SANDBOX_TARGET,
      source: 'built-in',
      description: 'the sandbox exists',
      requires: Object.freeze([NETWORK_TARGET, STORAGE_TARGET]),
    },
    {
      name: RUNNING_TARGET,
      source: 'built-in',
      description: 'the pod is running',
      requires: Object.freeze([SANDBOX_TARGET]),
    },
  ].map((t) => Object.freeze(t)),
);

export type EdgeKind = 'after' | 'requires' | 'wants';

/** `from <kind> to`: `web after db`, `web requires db`. Arrows in Graphviz point the same way. */
export interface GraphEdge {
  readonly from: string;
  readonly to: string;
  readonly kind: EdgeKind;
  /** An `after` edge that exists only because of a `requires`/`wants`. */
  readonly implied: boolean;
  /** Which field made this edge, for error messages: `web.after lists db`. */
  readonly reason: string;
}

export interface GraphStep {
  readonly name: string;
  readonly kind: 'step' | 'target';
  readonly source: string;
  readonly definition: StepDefinition;
  /** Effective ordering predecessors (explicit and implied), sorted. */
  readonly after: readonly string[];
  /** Effective successors: steps ordered after this one, sorted. */
  readonly before: readonly string[];
  /** Effective hard dependencies (including other steps' `requiredBy`), sorted. */
  readonly requires: readonly string[];
  readonly wants: readonly string[];
  /** Steps that require this one (reverse of `requires`), sorted. */
  readonly requiredBy: readonly string[];
}

export interface StepGraph {
  /** In topological order. */
  readonly steps: ReadonlyMap<string, GraphStep>;
  /** Deterministic topological order: layer by layer, names sorted within a layer. */
  readonly order: readonly string[];
  /** Layer k holds the steps whose longest ordering chain from a root has k edges. */
  readonly layers: readonly (readonly string[])[];
  readonly edges: readonly GraphEdge[];
}

/** JSON form of a graph, stored with each journaled run (the graph can change between runs). */
export interface GraphShape {
  readonly steps: readonly {
    readonly name: string;
    readonly kind: 'step' | 'target';
    readonly source: string;
    readonly description?: string;
    readonly timeoutMs?: number;
    readonly after: readonly string[];
    readonly requires: readonly string[];
    readonly wants: readonly string[];
  }[];
  readonly edges: readonly GraphEdge[];
}

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$/;
const LIST_FIELDS = ['after', 'before', 'requires', 'wants', 'requiredBy', 'wantedBy'] as const;
const KNOWN_FIELDS: readonly string[] = [
  'name',
  'description',
  'source',
  ...LIST_FIELDS,
  'timeoutMs',
  'start',
  'stop',
];

/**
 * Checks that `value` is a well-formed step definition (a plugin's export, say) and returns it.
 * `where` names it in errors, e.g. `plugin /etc/meshd/audit.mjs: steps[1]`.
 */
export function validateStepDefinition(value: unknown, where: string, source?: string): StepDefinition {
  const fail = (field: string, what: string): never => {
    throw new ValidationError('E_STEP_INVALID', `${where}${field === '' ? '' : `.${field}`} ${what}`, {
      hint: 'A step is { name, after?, before?, requires?, wants?, requiredBy?, wantedBy?, timeoutMs?, start?, stop? }.',
      details: { path: field === '' ? where : `${where}.${field}` },
    });
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return fail('', 'must be an object');
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!KNOWN_FIELDS.includes(key)) {
      const near = closestName(key, KNOWN_FIELDS);
      fail(key, `is not a step field${near === undefined ? '' : ` (did you mean '${near}'?)`}`);
    }
  }
  const name = record.name;
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    fail('name', 'must be a step name: letters, digits and . _ @ : - (at most 100 characters)');
  }
  for (const field of LIST_FIELDS) {
    const list = record[field];
    if (list === undefined) continue;
    if (!Array.isArray(list) || !list.every((n) => typeof n === 'string')) {
      fail(field, 'must be a list of step names');
    }
  }
  for (const field of ['description', 'source'] as const) {
    if (record[field] !== undefined && typeof record[field] !== 'string') fail(field, 'must be a string');
  }
  const timeoutMs = record.timeoutMs;
  if (
    timeoutMs !== undefined &&
    (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0)
  ) {
    fail('timeoutMs', 'must be a positive number of milliseconds');
  }
  for (const field of ['start', 'stop'] as const) {
    if (record[field] !== undefined && typeof record[field] !== 'function') {
      fail(field, 'must be a function (ctx, signal) => Promise');
    }
  }
  if (record.stop !== undefined && record.start === undefined) {
    fail('stop', 'is given without start (a target has neither)');
  }
  // A fresh object of the known fields: prototype methods (a class-based plugin) keep their `this`.
  const step: Record<string, unknown> = {};
  for (const key of KNOWN_FIELDS) {
    const v = record[key];
    if (v !== undefined) step[key] = typeof v === 'function' ? v.bind(record) : v;
  }
  if (step.source === undefined && source !== undefined) step.source = source;
  return step as unknown as StepDefinition;
}

/**
 * Validates definitions and resolves them into an ordered graph. The standard targets are added.
 * Throws ValidationError on a malformed step, a duplicate name, a reference to an unknown step, or an
 * ordering cycle (printed as `a → b → c → a`, where → reads "runs before").
 */
export function buildStepGraph(definitions: readonly StepDefinition[]): StepGraph {
  const defs = new Map<string, StepDefinition>();
  const all = [...STANDARD_TARGETS, ...definitions];
  all.forEach((raw, i) => {
    const def = validateStepDefinition(raw, describeWhere(raw, i - STANDARD_TARGETS.length));
    const seen = defs.get(def.name);
    if (seen !== undefined) {
      throw new ValidationError(
        'E_STEP_DUPLICATE',
        `step '${def.name}' is defined twice (${sourceOf(seen)} and ${sourceOf(def)})`,
        {
          hint:
            seen.source === 'built-in'
              ? 'Built-in steps and targets cannot be redefined: rename the plugin step.'
              : 'Rename one of the two steps.',
          details: { step: def.name, sources: [sourceOf(seen), sourceOf(def)] },
        },
      );
    }
    defs.set(def.name, def);
  });

  for (const def of defs.values()) {
    for (const field of LIST_FIELDS) {
      (def[field] ?? []).forEach((ref, i) => {
        if (ref === def.name) {
          throw new ValidationError('E_STEP_INVALID', `step '${def.name}' lists itself in ${field}`, {
            hint: `Remove '${ref}' from ${def.name}.${field}.`,
            details: { step: def.name, path: `${def.name}.${field}[${i}]` },
          });
        }
        if (!defs.has(ref)) {
          const near = closestName(ref, [...defs.keys()]);
          throw new ValidationError(
            'E_STEP_UNKNOWN',
            `step '${def.name}' (${sourceOf(def)}) lists unknown step '${ref}' in ${field}${near === undefined ? '' : ` — did you mean '${near}'?`}`,
            {
              hint:
                near === undefined
                  ? `Define a step named '${ref}' or remove it from ${def.name}.${field}.`
                  : `Replace '${ref}' with '${near}' in ${def.name}.${field}.`,
              details: {
                step: def.name,
                path: `${def.name}.${field}[${i}]`,
                unknown: ref,
                ...(near === undefined ? {} : { suggestion: near }),
              },
            },
          );
        }
      });
    }
  }

  // Dependencies, with the reverse forms folded in. `requires` beats `wants` on the same pair.
  const requires = new Map<string, Map<string, string>>();
  const wants = new Map<string, Map<string, string>>();
  for (const name of defs.keys()) {
    requires.set(name, new Map());
    wants.set(name, new Map());
  }
  for (const def of defs.values()) {
    for (const d of def.requires ?? []) setOnce(requires, def.name, d, `${def.name} requires ${d}`);
    for (const d of def.requiredBy ?? [])
      setOnce(requires, d, def.name, `${d} requires ${def.name} (${def.name}.requiredBy)`);
  }
  for (const def of defs.values()) {
    for (const d of def.wants ?? []) {
      if (!requires.get(def.name)?.has(d)) setOnce(wants, def.name, d, `${def.name} wants ${d}`);
    }
    for (const d of def.wantedBy ?? []) {
      if (!requires.get(d)?.has(def.name))
        setOnce(wants, d, def.name, `${d} wants ${def.name} (${def.name}.wantedBy)`);
    }
  }

  // Ordering: explicit edges first, then those implied by dependencies unless explicitly reversed.
  const after = new Map<string, Map<string, { reason: string; implied: boolean }>>();
  for (const name of defs.keys()) after.set(name, new Map());
  const order = (later: string, earlier: string, reason: string, implied: boolean) => {
    const m = after.get(later);
    if (m !== undefined && !m.has(earlier)) m.set(earlier, { reason, implied });
  };
  for (const def of defs.values()) {
    for (const e of def.after ?? []) order(def.name, e, `${def.name}.after lists ${e}`, false);
    for (const l of def.before ?? []) order(l, def.name, `${def.name}.before lists ${l}`, false);
  }
  const explicitlyFirst = (dependant: string, dependency: string) =>
    after.get(dependency)?.get(dependant)?.implied === false;
  for (const deps of [requires, wants]) {
    for (const [dependant, m] of deps) {
      for (const [dependency, reason] of m) {
        if (!explicitlyFirst(dependant, dependency))
          order(dependant, dependency, `${reason} (implies after)`, true);
      }
    }
  }

  const names = [...defs.keys()].sort();
  const preds = new Map<string, string[]>(names.map((n) => [n, [...(after.get(n)?.keys() ?? [])].sort()]));
  const cycle = findCycle(names, preds);
  if (cycle !== undefined) {
    const reasons: string[] = [];
    for (let i = 0; i + 1 < cycle.length; i++) {
      const earlier = cycle[i] as string;
      const later = cycle[i + 1] as string;
      reasons.push(after.get(later)?.get(earlier)?.reason ?? `${later} after ${earlier}`);
    }
    throw new ValidationError(
      'E_STEP_CYCLE',
      `step ordering has a cycle: ${cycle.join(' → ')} (→ means "runs before"; ${reasons.join('; ')})`,
      {
        hint: 'Remove one of these ordering edges; an implied one goes away if the dependant lists the dependency in `before`.',
        details: { cycle, edges: reasons },
      },
    );
  }
  const layers = orderLayers(names, preds);
  const topo = layers.flat();

  const successors = new Map<string, string[]>(names.map((n) => [n, []]));
  const dependants = new Map<string, string[]>(names.map((n) => [n, []]));
  for (const n of names) {
    for (const p of preds.get(n) ?? []) successors.get(p)?.push(n);
    for (const d of requires.get(n)?.keys() ?? []) dependants.get(d)?.push(n);
  }

  const steps = new Map<string, GraphStep>();
  const edges: GraphEdge[] = [];
  for (const name of topo) {
    const def = defs.get(name) as StepDefinition;
    steps.set(name, {
      name,
      kind: def.start === undefined ? 'target' : 'step',
      source: sourceOf(def),
      definition: def,
      after: preds.get(name) ?? [],
      before: (successors.get(name) ?? []).sort(),
      requires: [...(requires.get(name)?.keys() ?? [])].sort(),
      wants: [...(wants.get(name)?.keys() ?? [])].sort(),
      requiredBy: (dependants.get(name) ?? []).sort(),
    });
    for (const [to, e] of [...(after.get(name) ?? [])].sort(byKey)) {
      edges.push({ from: name, to, kind: 'after', implied: e.implied, reason: e.reason });
    }
    for (const [to, reason] of [...(requires.get(name) ?? [])].sort(byKey)) {
      edges.push({ from: name, to, kind: 'requires', implied: false, reason });
    }
    for (const [to, reason] of [...(wants.get(name) ?? [])].sort(byKey)) {
      edges.push({ from: name, to, kind: 'wants', implied: false, reason });
    }
  }
  return { steps, order: topo, layers, edges };
}

/** The JSON form of a graph, for the journal and for `meshd why` from another peer. */
export function describeGraph(graph: StepGraph): GraphShape {
  return {
    steps: [...graph.steps.values()].map((s) => ({
      name: s.name,
      kind: s.kind,
      source: s.source,
      ...(s.definition.description === undefined ? {} : { description: s.definition.description }),
      ...(s.definition.timeoutMs === undefined ? {} : { timeoutMs: s.definition.timeoutMs }),
      after: [...s.after],
      requires: [...s.requires],
      wants: [...s.wants],
    })),
    edges: graph.edges.map((e) => ({ ...e })),
  };
}

/**
 * Deterministic layering of a DAG given each node's predecessors: a node's layer is one more than
 * its deepest predecessor's; names are sorted within a layer. Throws on a cycle (use findCycle first).
 */
export function orderLayers(
  names: readonly string[],
  preds: ReadonlyMap<string, readonly string[]>,
): string[][] {
  const depth = new Map<string, number>();
  const visiting = new Set<string>();
  const depthOf = (n: string): number => {
    const known = depth.get(n);
    if (known !== undefined) return known;
    if (visiting.has(n)) throw new Error(`orderLayers: cycle through ${n}`);
    visiting.add(n);
    let d = 0;
    for (const p of preds.get(n) ?? []) d = Math.max(d, depthOf(p) + 1);
    visiting.delete(n);
    depth.set(n, d);
    return d;
  };
  const layers: string[][] = [];
  for (const n of [...names].sort()) {
    const d = depthOf(n);
    while (layers.length <= d) layers.push([]);
    layers[d]?.push(n);
  }
  return layers.map((l) => l.sort());
}

/**
 * Finds an ordering cycle, returned in "runs before" direction and closed (`[a, b, c, a]`), rotated
 * to start at its smallest name so the same graph always prints the same cycle.
 */
export function findCycle(
  names: readonly string[],
  preds: ReadonlyMap<string, readonly string[]>,
): string[] | undefined {
  const next = new Map<string, string[]>(names.map((n) => [n, []]));
  for (const n of names) for (const p of preds.get(n) ?? []) next.get(p)?.push(n);
  for (const list of next.values()) list.sort();
  const colour = new Map<string, 'grey' | 'black'>();
  const stack: string[] = [];
  const visit = (n: string): string[] | undefined => {
    colour.set(n, 'grey');
    stack.push(n);
    for (const m of next.get(n) ?? []) {
      const c = colour.get(m);
      if (c === 'grey') {
        const loop = stack.slice(stack.indexOf(m));
        const start = loop.indexOf([...loop].sort()[0] as string);
        const rotated = [...loop.slice(start), ...loop.slice(0, start)];
        return [...rotated, rotated[0] as string];
      }
      if (c === undefined) {
        const found = visit(m);
        if (found !== undefined) return found;
      }
    }
    stack.pop();
    colour.set(n, 'black');
    return undefined;
  };
  for (const n of [...names].sort()) {
    if (colour.get(n) === undefined) {
      const found = visit(n);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/** The candidate closest to `name` by edit distance, if close enough to be a plausible typo. */
export function closestName(name: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  const limit = Math.max(2, Math.floor(name.length / 3));
  for (const c of [...candidates].sort()) {
    const d = editDistance(name.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return bestDistance <= limit ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const sub = (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, sub));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

function setOnce(map: Map<string, Map<string, string>>, from: string, to: string, reason: string): void {
  const m = map.get(from);
  if (m !== undefined && !m.has(to)) m.set(to, reason);
}

function sourceOf(def: StepDefinition): string {
  return def.source ?? 'unnamed source';
}

function byKey<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

function describeWhere(raw: unknown, index: number): string {
  if (typeof raw !== 'object' || raw === null) return `steps[${index}]`;
  const { name, source } = raw as { name?: unknown; source?: unknown };
  const label = typeof name === 'string' ? `step '${name}'` : `steps[${index}]`;
  return typeof source === 'string' ? `${source}: ${label}` : label;
}
