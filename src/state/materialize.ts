// Materialize: fold an object's signed revision records (and compaction bases) into one object, the same on every peer.

import { ValidationError } from '../shared/errors.ts';
import type { WriteRules } from './field-ownership.ts';
import { applyMergePatch, cloneJson, isPlainObject, type JsonObject, type JsonValue } from './merge-patch.ts';
import {
  type BaseRecord,
  compareStamps,
  type DroppedAuthor,
  type DroppedSummaries,
  droppedAuthorKey,
  type EntryChecker,
  type RevisionRecord,
  type RevisionSummary,
  resolveRevision,
  revisionLabels,
  type SerializedNode,
  type Stamp,
  stampOf,
  topDroppedAuthors,
  zeroStamp,
} from './revision-records.ts';

// ---- The stamped field tree -----------------------------------------------------------------------
//
// The object is kept as a tree whose nodes remember the stamp (lamport, peer, id) of the record that
// wrote them. Applying merge patches in stamp order gives exactly RFC 7386; the stamps make the
// result independent of the order patches are applied in (property-tested), so a record that arrives
// after its era was compacted, and two bases from concurrent compactions, merge field by field exactly
// as if every original record had been folded in stamp order.
//
// - `v` value / `d` removal: written at `s`; a write older than `s` loses.
// - `o` object: an object since `s`; `p` is the last replacement (value or removal) before that and
//   `e` the newest record that wrote into it. A write inside it stamped between `p` and `s` still
//   lands (the object existed then); one stamped before `p` was wiped by that replacement. A late
//   replacement older than `e` does not remove it: the newer write re-created it.
// Children of an object all carry stamps ≥ its `s` (older ones are dead and pruned), and removals stay
// as `d` nodes so that a late write cannot resurrect a field a newer record removed.

type TreeNode =
  | {
      readonly k: 'o';
      readonly s: Stamp;
      readonly p: Stamp;
      readonly e: Stamp;
      readonly c: ReadonlyMap<string, TreeNode>;
    }
  | { readonly k: 'v'; readonly s: Stamp; readonly v: JsonValue }
  | { readonly k: 'd'; readonly s: Stamp };

type ObjectNode = Extract<TreeNode, { k: 'o' }>;

/** The tree of an object that was never written: a removed root with the zero stamp. */
const emptyTree: TreeNode = { k: 'd', s: zeroStamp };
const noChildren: ReadonlyMap<string, TreeNode> = new Map();

function maxStamp(n: TreeNode): Stamp {
  if (n.k !== 'o') return n.s;
  let m = n.e;
  for (const c of n.c.values()) {
    const cm = maxStamp(c);
    if (compareStamps(cm, m) > 0) m = cm;
  }
  return m;
}

/**
 * What survives of `n` when an ancestor is replaced at `t`: parts written after `t`. An object holding
 * such writes was re-created by them, so it is re-dated to `t`.
 */
function rebase(n: TreeNode, t: Stamp): TreeNode | undefined {
  if (compareStamps(n.s, t) > 0) return n;
  if (n.k !== 'o') return undefined;
  const c = rebaseChildren(n, t);
  return c.size === 0 && compareStamps(n.e, t) <= 0 ? undefined : { k: 'o', s: t, p: t, e: n.e, c };
}

function rebaseChildren(n: ObjectNode, t: Stamp): Map<string, TreeNode> {
  const c = new Map<string, TreeNode>();
  for (const [k, child] of n.c) {
    const r = rebase(child, t);
    if (r !== undefined) c.set(k, r);
  }
  return c;
}

/** Replaces `n` with a value (or a removal, `null`) written at `t`. */
function replace(n: TreeNode | undefined, value: JsonValue, t: Stamp): TreeNode {
  const leaf: TreeNode = value === null ? { k: 'd', s: t } : { k: 'v', s: t, v: value };
  if (n === undefined) return leaf;
  if (n.k !== 'o') return compareStamps(n.s, t) > 0 ? n : leaf;
  if (compareStamps(t, n.s) < 0) {
    // The object was (re)created after `t`: the value lost, but it is now the replacement before it.
    return compareStamps(t, n.p) > 0 ? { ...n, p: t } : n;
  }
  // Newer records wrote inside it, so after `t` it became an object again holding only those writes.
  if (compareStamps(maxStamp(n), t) > 0) return { k: 'o', s: t, p: t, e: n.e, c: rebaseChildren(n, t) };
  return leaf;
}

/** Applies merge patch `patch` written at `t` to node `n` (RFC 7386 when `t` is newer than everything). */
function applyAt(n: TreeNode | undefined, patch: JsonValue, t: Stamp): TreeNode {
  if (!isPlainObject(patch)) return replace(n, patch, t);
  let base: ObjectNode;
  if (n === undefined) base = { k: 'o', s: t, p: zeroStamp, e: t, c: noChildren };
  else if (n.k === 'o') {
    if (compareStamps(t, n.e) > 0) base = { ...n, e: t };
    else if (compareStamps(t, n.s) >= 0) base = n;
    else if (compareStamps(t, n.p) > 0)
      base = { ...n, s: t }; // it was an object at `t` already
    else return n; // a replacement after `t` wiped what this patch wrote inside
  } else {
    if (compareStamps(n.s, t) > 0) return n; // replaced after `t`
    base = { k: 'o', s: t, p: n.s, e: t, c: noChildren }; // RFC 7386: a non-object target starts from {}
  }
  let c: Map<string, TreeNode> | undefined;
  for (const [k, v] of Object.entries(patch)) {
    const child = (c ?? base.c).get(k);
    const next = applyAt(child, v, t);
    if (next !== child) {
      c ??= new Map(base.c);
      c.set(k, next);
    }
  }
  if (c === undefined) return base === n ? n : base;
  return { ...base, c };
}

function treeToJson(n: TreeNode): JsonValue | undefined {
  if (n.k === 'd') return undefined;
  if (n.k === 'v') return cloneJson(n.v);
  const out: JsonObject = {};
  for (const [k, child] of n.c) {
    const v = treeToJson(child);
    if (v !== undefined) out[k] = v;
  }
  return out;
}

function objectOf(tree: TreeNode): JsonObject | null {
  const v = treeToJson(tree);
  return isPlainObject(v) ? v : null;
}

function serializeTree(n: TreeNode): SerializedNode {
  if (n.k === 'd') return ['d', n.s];
  if (n.k === 'v') return ['v', n.s, n.v];
  const c: { [key: string]: SerializedNode } = {};
  for (const k of [...n.c.keys()].sort()) c[k] = serializeTree(n.c.get(k) as TreeNode);
  return ['o', n.s, c, n.p, n.e];
}

function deserializeTree(s: SerializedNode): TreeNode {
  if (s[0] === 'd') return { k: 'd', s: s[1] };
  if (s[0] === 'v') return { k: 'v', s: s[1], v: s[2] };
  const c = new Map<string, TreeNode>();
  for (const [k, child] of Object.entries(s[2])) c.set(k, deserializeTree(child));
  return { k: 'o', s: s[1], p: s[3], e: s[4], c };
}

/** Folds another base's tree into `into` by replaying its nodes as writes, oldest first. */
function replayTree(into: TreeNode, other: SerializedNode): TreeNode {
  const ops: { path: string[]; stamp: Stamp; patch: JsonValue; seq: number }[] = [];
  const walk = (n: SerializedNode, path: string[]) => {
    if (n[0] === 'o') {
      // The replacement the object was created over, the object itself, its newest write.
      if (compareStamps(n[3], zeroStamp) !== 0) ops.push({ path, stamp: n[3], patch: null, seq: ops.length });
      ops.push({ path, stamp: n[1], patch: {}, seq: ops.length });
      if (compareStamps(n[4], n[1]) !== 0) ops.push({ path, stamp: n[4], patch: {}, seq: ops.length });
      for (const [k, c] of Object.entries(n[2])) walk(c, [...path, k]);
    } else if (compareStamps(n[1], zeroStamp) !== 0) {
      ops.push({ path, stamp: n[1], patch: n[0] === 'v' ? n[2] : null, seq: ops.length });
    }
  };
  walk(other, []);
  ops.sort((a, b) => compareStamps(a.stamp, b.stamp) || a.seq - b.seq);
  let tree = into;
  for (const op of ops) {
    let patch = op.patch;
    for (let i = op.path.length - 1; i >= 0; i--) patch = { [op.path[i] as string]: patch };
    tree = applyAt(tree, patch, op.stamp);
  }
  return tree;
}

/**
 * Folds stamped merge patches (`[lamport, patch]`, lamports distinct) through the stamped tree,
 * applying them in the order given. Applied in increasing lamport order this is exactly RFC 7386;
 * the tree makes the result independent of application order. Exported for property tests.
 */
export function foldStampedPatches(patches: readonly (readonly [number, JsonValue])[]): SerializedNode {
  let tree = emptyTree;
  for (const [lamport, p] of patches) tree = applyAt(tree, p, [lamport, 'p', '']);
  return serializeTree(tree);
}

/** The object of a folded state, after replaying `others` into it (as materialize merges bases). */
export function objectOfStates(first: SerializedNode, ...others: SerializedNode[]): JsonObject | null {
  let tree = deserializeTree(first);
  for (const o of others) tree = replayTree(tree, o);
  return objectOf(tree);
}

/**
 * The part of `object` the `user` controller may write: what a rollback restores (kind, name, spec
 * for pods), and what a restore point keeps.
 */
export function userFields(object: JsonObject, rules: WriteRules): JsonObject {
  const walk = (obj: JsonObject, path: readonly string[]): JsonObject => {
    const out: JsonObject = {};
    for (const [k, v] of Object.entries(obj)) {
      let patch: JsonValue = v;
      for (let i = path.length; i >= 0; i--) patch = { [i === path.length ? k : (path[i] as string)]: patch };
      if (rules.writeProblem('user', patch) === undefined) out[k] = v;
      else if (isPlainObject(v)) {
        const inner = walk(v, [...path, k]);
        if (Object.keys(inner).length > 0) out[k] = inner;
      }
    }
    return out;
  };
  return walk(object, []);
}

/** What each restore point of `b` restores: its user-owned fields, by record id. */
function restorePointsOf(b: BaseRecord, rules: WriteRules): Map<string, JsonObject> {
  const out = new Map<string, JsonObject>();
  if (b.restore === undefined || b.restore.length === 0) return out;
  let current: JsonValue = userFields(objectOf(deserializeTree(b.state)) ?? {}, rules);
  for (const r of b.restore) {
    current = applyMergePatch(current, r.patch);
    if (isPlainObject(current)) out.set(r.id, current);
  }
  return out;
}

// ---- Folding records ------------------------------------------------------------------------------

export interface MaterializeContext {
  /** Shape, id and signature check of raw entries (memoized; see `createEntryChecker`). */
  check: EntryChecker;
  /** Who may write which fields. */
  rules: WriteRules;
  /** Why `object` is not a valid object for `key`, or undefined if it is. */
  validate: (key: string, object: JsonObject) => string | undefined;
}

/**
 * One row of a pod's history: what a revision summary says (`concurrent`: neither this record nor some
 * other had seen the other, see docs/decisions/0002; `rejected`: why it was skipped), and its label.
 */
export interface HistoryEntry extends RevisionSummary {
  /** What users see and type: `5`, or `5@3fa2` when concurrent records share 5. */
  revision: string;
  /** Waiting for a record it builds on that has not arrived yet (it is applied once it does). */
  pending?: boolean;
  /** Content folded into a compaction base: listed, and restorable only if `restorable`. */
  compacted: boolean;
  /** A compacted user revision whose user-owned fields a base kept: rollback to it still works. */
  restorable?: true;
}

export interface Materialized {
  key: string;
  /** The current object, or null if it was never created or is deleted. */
  object: JsonObject | null;
  /** True when the object existed and a delete record is what removed it. */
  deleted: boolean;
  /** Label of the last record that took effect. */
  revision?: string;
  revisionNumber?: number;
  /** Every record, compacted ones included, in (lamport, peer, id) order. */
  history: HistoryEntry[];
  /** Compacted revisions whose summaries were dropped too (history shows only the count and span). */
  dropped?: DroppedSummaries;
  /** Ids a new record names as parents (the newest records nobody builds on yet). */
  heads: string[];
  /** 1 + this is the next record's lamport. */
  maxLamport: number;
  /** Entries that were not understood at all (wrong shape, unknown version, bad base). */
  problems: string[];
  /** How many array entries are records (duplicates and forgeries included): what compaction counts. */
  recordEntries: number;
  /** Compaction bases in use, and the stamp of the last record they fold. */
  bases: string[];
  cut?: Stamp;
  /** The field tree with write stamps (what `judgeAppend` and compaction build on). */
  state: SerializedNode;
  /** With `until`: the object and tree right after that record. */
  at?: { object: JsonObject | null; state: SerializedNode; entry: HistoryEntry };
  /** With `snapshots`: the object right after each of those records (that was folded here). */
  snapshots?: Map<string, JsonObject | null>;
  /** Compacted revisions the bases kept restore points for (see `restoreOf`). */
  restorable: ReadonlySet<string>;
  /** The user-owned fields restore point `id` keeps (computed on first use), or undefined. */
  restoreOf(id: string): JsonObject | undefined;
}

interface Candidate {
  record: RevisionRecord;
  problem?: string;
}

/** Deduplicated, well-formed bases of `key`, in a deterministic order. Any mix of them merges exactly. */
function pickBases(key: string, bases: BaseRecord[], problems: string[]): BaseRecord[] {
  const byId = new Map<string, BaseRecord>();
  for (const b of bases) {
    if (b.object !== key) {
      problems.push(`base ${b.id} belongs to ${b.object}`);
      continue;
    }
    const prev = byId.get(b.id);
    // Equal content from two compactors: keep one deterministically.
    if (prev === undefined || b.compactor.peer < prev.compactor.peer) byId.set(b.id, b);
  }
  return [...byId.values()].sort(
    (a, b) => compareStamps(b.cut, a.cut) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
}

function mergeDropped(
  a: DroppedSummaries | undefined,
  b: DroppedSummaries | undefined,
): DroppedSummaries | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  // Concurrent bases may count the same revisions: keep the larger aggregate rather than add them,
  // and per author the larger count.
  const big = a.count >= b.count ? a : b;
  const upTo = compareStamps(a.upTo, b.upTo) >= 0 ? a.upTo : b.upTo;
  const merged: DroppedSummaries = {
    count: big.count,
    upTo,
    firstAt: Math.min(a.firstAt, b.firstAt),
    lastAt: Math.max(a.lastAt, b.lastAt),
  };
  if (a.by === undefined && b.by === undefined) return merged;
  const by = new Map<string, DroppedAuthor>();
  for (const x of [...(a.by ?? []), ...(b.by ?? [])]) {
    const k = droppedAuthorKey(x);
    const had = by.get(k);
    if (had === undefined || had.count < x.count) by.set(k, x);
  }
  return { ...merged, by: topDroppedAuthors([...by.values()]) };
}

type Verdict = { rejected?: string; pending?: boolean; taint?: boolean };

/** What the fold knows about earlier records when it judges the next one. */
interface Known {
  lamportOf: ReadonlyMap<string, number>;
  untrusted: ReadonlySet<string>;
  verdicts: ReadonlyMap<string, Verdict>;
  /** Lamport up to which parents may be compacted records whose summaries were dropped. */
  droppedUpTo: number;
}

/** Why `r` cannot apply whatever the object's state; `taint` also distrusts records built on it. */
function precheck(r: RevisionRecord, known: Known, rules: WriteRules): Verdict | undefined {
  const missing = r.parents.filter((p) => !known.lamportOf.has(p));
  const knownMax = Math.max(0, ...r.parents.map((p) => known.lamportOf.get(p) ?? 0));
  // Once summaries have been dropped, an unknown parent may be one of those compacted records: its
  // lamport is then at most the dropped era's, which bounds this record's. Otherwise it has simply
  // not arrived yet, and the record waits for it (a lamport cannot be checked against the unknown).
  const maybeDropped = missing.length > 0 && known.droppedUpTo > 0;
  if (missing.length > 0 && !maybeDropped) {
    const ids = missing.map((m) => m.slice(0, 8)).join(', ');
    return {
      rejected: `waiting for ${missing.length} earlier record(s) it builds on (${ids})`,
      taint: true,
      pending: true,
    };
  }
  const bad = r.parents.find((p) => known.untrusted.has(p));
  if (bad !== undefined) {
    return known.verdicts.get(bad)?.pending === true
      ? {
          rejected: `waiting for earlier records (builds on pending ${bad.slice(0, 8)})`,
          taint: true,
          pending: true,
        }
      : { rejected: `builds on invalid record ${bad.slice(0, 8)}`, taint: true };
  }
  const expected = 1 + knownMax;
  const ok = maybeDropped
    ? r.lamport >= expected && r.lamport <= 1 + Math.max(knownMax, known.droppedUpTo)
    : r.lamport === expected;
  if (!ok)
    return {
      rejected: `lamport ${r.lamport} does not follow its parents (expected ${expected})`,
      taint: true,
    };
  if ((r.kind === 'delete') !== (r.patch === null)) {
    return {
      rejected:
        r.kind === 'delete'
          ? 'a delete record must carry a null patch'
          : 'only a delete record may carry a null patch',
    };
  }
  const owner = rules.writeProblem(r.controller, r.patch);
  return owner === undefined ? undefined : { rejected: owner };
}

/** Applies `r` to `tree` if the object it yields is valid; else says why not. */
function applyValid(
  key: string,
  tree: TreeNode,
  r: RevisionRecord,
  ctx: MaterializeContext,
): { tree: TreeNode } | { rejected: string } {
  const next = applyAt(tree, r.patch, stampOf(r));
  const obj = objectOf(next);
  const invalid = obj === null ? undefined : ctx.validate(key, obj);
  if (invalid === undefined) return { tree: next };
  const gone = r.patch !== null && objectOf(tree) === null;
  return { rejected: gone ? `the object does not exist (deleted or never created): ${invalid}` : invalid };
}

/**
 * Marks which records are concurrent: neither had seen the other, i.e. neither is reachable from the
 * other through parents. Ancestor sets are bitsets over the records in key order (parents come first
 * when lamports are honest), so this is O(n²/32) words and O(n²) bit tests.
 */
function concurrency(records: readonly RevisionRecord[]): boolean[] {
  const n = records.length;
  const words = (n + 31) >>> 5;
  const index = new Map(records.map((r, i) => [r.id, i]));
  const anc = records.map(() => new Uint32Array(words));
  records.forEach((r, i) => {
    const a = anc[i] as Uint32Array;
    for (const p of r.parents) {
      const j = index.get(p);
      if (j === undefined) continue;
      a[j >>> 5] = (a[j >>> 5] as number) | (1 << (j & 31));
      if (j < i) {
        const b = anc[j] as Uint32Array;
        for (let w = 0; w < words; w++) a[w] = (a[w] as number) | (b[w] as number);
      }
    }
  });
  const has = (i: number, j: number) => (((anc[i] as Uint32Array)[j >>> 5] as number) >>> (j & 31)) & 1;
  return records.map((_, i) => {
    for (let j = 0; j < n; j++) if (j !== i && has(i, j) === 0 && has(j, i) === 0) return true;
    return false;
  });
}

/**
 * The current object of `key` from the raw entries of its array: records sorted by (lamport, peer, id)
 * and deduplicated by id, their patches folded on top of the compaction bases. A record is skipped,
 * with its reason in `history[].rejected`, when its signature or id fails, its lamport does not follow
 * its parents, its controller does not own a field it writes, or the object it yields is invalid.
 */
export function materialize(
  key: string,
  entries: readonly unknown[],
  ctx: MaterializeContext,
  opts: { until?: string; snapshots?: ReadonlySet<string> } = {},
): Materialized {
  const problems: string[] = [];
  const byId = new Map<string, Candidate>();
  const rawBases: BaseRecord[] = [];
  let recordEntries = 0;
  for (const raw of entries) {
    const c = ctx.check(raw);
    if (c.kind === 'malformed') {
      problems.push(c.reason);
      continue;
    }
    if (c.kind === 'base') {
      if (c.problem === undefined) rawBases.push(c.base);
      else problems.push(`base ${c.base.id}: ${c.problem}`);
      continue;
    }
    recordEntries++;
    const problem =
      c.problem ?? (c.record.object === key ? undefined : `record belongs to ${c.record.object}`);
    const prev = byId.get(c.record.id);
    // A forged copy of a genuine record (same id, bad signature) must not hide it: prefer a good copy.
    if (prev === undefined || (prev.problem !== undefined && problem === undefined)) {
      byId.set(c.record.id, problem === undefined ? { record: c.record } : { record: c.record, problem });
    }
  }

  // Bases from concurrent compactions merge field by field (the stamped tree makes that exact).
  const bases = pickBases(key, rawBases, problems);
  let tree: TreeNode = emptyTree;
  const summaries = new Map<string, RevisionSummary>();
  let cut: Stamp | undefined;
  let dropped: DroppedSummaries | undefined;
  const baseHeads = new Set<string>();
  const restorable = new Set<string>();
  bases.forEach((b, i) => {
    for (const r of b.restore ?? []) restorable.add(r.id);
    tree = i === 0 ? deserializeTree(b.state) : replayTree(tree, b.state);
    for (const s of b.summaries) if (!summaries.has(s.id)) summaries.set(s.id, s);
    if (cut === undefined || compareStamps(b.cut, cut) > 0) cut = b.cut;
    dropped = mergeDropped(dropped, b.dropped);
    for (const h of b.heads) baseHeads.add(h);
  });
  // A head of one base that another base folded (with its descendants) is no head any more.
  for (const h of [...baseHeads]) {
    if (bases.some((o) => !o.heads.includes(h) && o.summaries.some((s) => s.id === h))) baseHeads.delete(h);
  }

  const remaining = [...byId.values()].filter((c) => !summaries.has(c.record.id));
  remaining.sort((a, b) => compareStamps(stampOf(a.record), stampOf(b.record)));

  // Lamports of everything known (summaries and authentic records) for the parent checks.
  const lamportOf = new Map<string, number>();
  for (const s of summaries.values()) lamportOf.set(s.id, s.lamport);
  for (const c of remaining) if (c.problem === undefined) lamportOf.set(c.record.id, c.record.lamport);
  const verdicts = new Map<string, Verdict>();
  const untrusted = new Set<string>(); // lamport-invalid or pending: neither heads nor counted as seen
  const known: Known = {
    lamportOf,
    untrusted,
    verdicts,
    droppedUpTo: (dropped as DroppedSummaries | undefined)?.upTo[0] ?? 0,
  };
  let at: { object: JsonObject | null; state: SerializedNode } | undefined;
  const snapshots = new Map<string, JsonObject | null>();

  for (const { record: r, problem } of remaining) {
    const pre: Verdict | undefined =
      problem === undefined ? precheck(r, known, ctx.rules) : { rejected: problem };
    if (pre !== undefined) {
      verdicts.set(r.id, pre);
      if (pre.taint === true) untrusted.add(r.id);
    } else {
      const applied = applyValid(key, tree, r, ctx);
      if ('tree' in applied) {
        tree = applied.tree;
        verdicts.set(r.id, {});
      } else {
        verdicts.set(r.id, { rejected: applied.rejected });
      }
    }
    if (opts.until === r.id) at = { object: objectOf(tree), state: serializeTree(tree) };
    if (opts.snapshots?.has(r.id) === true) snapshots.set(r.id, objectOf(tree));
  }

  const authentic = remaining.filter((c) => c.problem === undefined).map((c) => c.record);
  const concurrent = concurrency(authentic);
  const isConcurrent = new Map(authentic.map((r, i) => [r.id, concurrent[i] === true]));

  const rows: Omit<HistoryEntry, 'revision'>[] = [];
  for (const s of summaries.values())
    rows.push({ ...s, compacted: true, ...(restorable.has(s.id) ? { restorable: true as const } : {}) });
  for (const id of [...restorable.keys()]) if (!summaries.has(id)) restorable.delete(id);
  for (const { record: r, problem } of remaining) {
    const v = verdicts.get(r.id) ?? {};
    // A record older than the compaction cut arrived after its era was compacted: nobody there saw it.
    const late = cut !== undefined && compareStamps(stampOf(r), cut) < 0;
    rows.push({
      lamport: r.lamport,
      id: r.id,
      author: r.author,
      controller: r.controller,
      kind: r.kind,
      at: r.at,
      ...(r.message === undefined ? {} : { message: r.message }),
      ...(r.rollbackTo === undefined ? {} : { rollbackTo: r.rollbackTo }),
      concurrent: problem === undefined && (late || isConcurrent.get(r.id) === true),
      ...(v.rejected === undefined ? {} : { rejected: v.rejected }),
      ...(v.pending === true ? { pending: true } : {}),
      compacted: false,
    });
  }
  rows.sort((a, b) => compareStamps([a.lamport, a.author.peer, a.id], [b.lamport, b.author.peer, b.id]));
  const labels = revisionLabels(rows);
  const history: HistoryEntry[] = rows.map((r, i) => ({ revision: labels[i] as string, ...r }));

  // Only records that count as seen (not pending, lamport valid) retire their parents from the heads:
  // a record waiting for a missing parent must not leave the next edit with no parents at all.
  const trusted = authentic.filter((r) => !untrusted.has(r.id));
  const parentsUsed = new Set(trusted.flatMap((r) => r.parents));
  const heads = [
    ...[...baseHeads].filter((h) => !parentsUsed.has(h)),
    ...trusted.filter((r) => !parentsUsed.has(r.id)).map((r) => r.id),
  ].sort();
  const maxLamport = Math.max(
    0,
    ...heads.map((h) => lamportOf.get(h) ?? 0),
    (dropped as DroppedSummaries | undefined)?.upTo[0] ?? 0,
  );

  const object = objectOf(tree);
  const lastEffective = history.findLast((h) => h.rejected === undefined);
  const result: Materialized = {
    key,
    object,
    deleted: object === null && history.some((h) => h.kind === 'delete' && h.rejected === undefined),
    history,
    heads,
    maxLamport,
    problems,
    recordEntries,
    bases: bases.map((b) => b.id),
    state: serializeTree(tree),
    restorable,
    restoreOf: () => undefined,
  };
  if (opts.snapshots !== undefined) result.snapshots = snapshots;
  let restored: Map<string, JsonObject> | undefined;
  result.restoreOf = (id) => {
    if (!restorable.has(id)) return undefined;
    if (restored === undefined) {
      // The first base (in pickBases order) that keeps a point decides it: every peer picks the same.
      restored = new Map();
      for (const b of bases)
        for (const [rid, o] of restorePointsOf(b, ctx.rules)) if (!restored.has(rid)) restored.set(rid, o);
    }
    return restored.get(id);
  };
  if (lastEffective !== undefined) {
    result.revision = lastEffective.revision;
    result.revisionNumber = lastEffective.lamport;
  }
  if (dropped !== undefined) result.dropped = dropped;
  if (cut !== undefined) result.cut = cut;
  if (at !== undefined) {
    const entry = history.find((h) => h.id === opts.until) as HistoryEntry;
    result.at = { ...at, entry };
  }
  return result;
}

/**
 * The verdict materialize will give `record` when it is appended after everything in `current`
 * (its lamport is above every record that took effect, its parents are `current.heads`): undefined if
 * it takes effect, else the reason. O(size of the object), not O(history): the API calls this before
 * writing so that a write that would be rejected is refused instead.
 */
export function judgeAppend(
  key: string,
  current: Materialized | undefined,
  record: RevisionRecord,
  ctx: MaterializeContext,
): string | undefined {
  const lamportOf = new Map((current?.history ?? []).map((h) => [h.id, h.lamport]));
  const known: Known = {
    lamportOf,
    untrusted: new Set(),
    verdicts: new Map(),
    droppedUpTo: current?.dropped?.upTo[0] ?? 0,
  };
  const pre = precheck(record, known, ctx.rules);
  if (pre !== undefined) return pre.rejected;
  const tree = current === undefined ? emptyTree : deserializeTree(current.state);
  const applied = applyValid(key, tree, record, ctx);
  return 'rejected' in applied ? applied.rejected : undefined;
}

/** The object as it was right after revision `ref` (for rollback and diffs); refuses compacted or rejected revisions. */
export function objectAtRevision(
  key: string,
  entries: readonly unknown[],
  ctx: MaterializeContext,
  ref: string | number,
): { entry: HistoryEntry; object: JsonObject | null } {
  const m = materialize(key, entries, ctx);
  const entry = resolveRevision(key, m.history, ref);
  const kept = entry.compacted ? m.restoreOf(entry.id) : undefined;
  if (kept !== undefined) return { entry, object: cloneJson(kept) };
  if (entry.compacted) {
    const oldest = m.history.find((h) => !h.compacted);
    const points = m.history.filter((h) => h.restorable === true).map((h) => h.revision);
    const also = points.length === 0 ? '' : ` (or the restore points ${points.join(', ')})`;
    throw new ValidationError(
      'E_REVISION_COMPACTED',
      `revision ${entry.revision} of ${key} was compacted: its author, time and message are kept, its content is not`,
      {
        hint:
          oldest === undefined
            ? `No full revision is left to restore${also}; apply the spec you want instead.`
            : `Roll back to revision ${oldest.revision} or later${also}, or apply the spec you want.`,
        details: { object: key, revision: entry.revision, id: entry.id },
      },
    );
  }
  if (entry.rejected !== undefined) {
    throw new ValidationError(
      'E_REVISION_REJECTED',
      `revision ${entry.revision} of ${key} never took effect: ${entry.rejected}`,
      {
        hint: 'Pick a revision that took effect; `meshd history` marks rejected ones.',
        details: { object: key, revision: entry.revision, id: entry.id },
      },
    );
  }
  const m2 = materialize(key, entries, ctx, { until: entry.id });
  return { entry, object: m2.at?.object ?? null };
}
