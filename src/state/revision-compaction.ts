// Compaction: folds an object's old records into one deterministic base record so its history stays bounded.

import {
  type HistoryEntry,
  type MaterializeContext,
  type Materialized,
  materialize,
  userFields,
} from './materialize.ts';
import { diffMergePatch, type JsonObject } from './merge-patch.ts';
import {
  compareStamps,
  type DroppedAuthor,
  type DroppedSummaries,
  droppedAuthorKey,
  type RestorePoint,
  type RevisionSummary,
  type Stamp,
  stampOf,
  topDroppedAuthors,
  type UnsignedBase,
} from './revision-records.ts';

export interface CompactionPolicy {
  /** Compact once an object's array holds more than this many records. */
  threshold: number;
  /** Records kept whole (restorable by rollback) after compacting. */
  keep: number;
  /**
   * Summaries of compacted revisions kept in the base (default 500). Beyond it the oldest are
   * dropped, `system` ones (status writes) first, and only their count and time span remain, so a
   * pod's share of the document stays bounded however long it lives.
   */
  maxSummaries?: number;
  /**
   * Folded user revisions (apply or rollback) that stay restorable: the base keeps their user-owned
   * fields as small merge patches, so rolling back to one of them still works after its record is gone.
   */
  restorePoints?: number;
}

export const defaultCompactionPolicy: Readonly<CompactionPolicy> = Object.freeze({
  threshold: 200,
  keep: 3,
  maxSummaries: 20,
  restorePoints: 5,
});

/** Drops summaries beyond `max`: system ones first, oldest first; returns what stays and the aggregate. */
function capSummaries(
  all: RevisionSummary[],
  max: number,
  prior: DroppedSummaries | undefined,
  heads: ReadonlySet<string>,
): { summaries: RevisionSummary[]; dropped: DroppedSummaries | undefined } {
  const excess = all.length - Math.max(0, max);
  if (excess <= 0) return { summaries: all, dropped: prior };
  // The heads stay: the next records name them as parents and are checked against their lamports.
  const order = all
    .map((s, i) => ({ s, i }))
    .filter((x) => !heads.has(x.s.id))
    .sort((a, b) => Number(a.s.kind !== 'system') - Number(b.s.kind !== 'system') || a.i - b.i);
  const gone = new Set(order.slice(0, excess).map((x) => x.s.id));
  let dropped = prior;
  const by = new Map<string, DroppedAuthor>();
  for (const a of prior?.by ?? []) by.set(droppedAuthorKey(a), { ...a });
  for (const s of all) {
    if (!gone.has(s.id)) continue;
    const stamp: Stamp = [s.lamport, s.author.peer, s.id];
    dropped =
      dropped === undefined
        ? { count: 1, upTo: stamp, firstAt: s.at, lastAt: s.at }
        : {
            count: dropped.count + 1,
            upTo: compareStamps(stamp, dropped.upTo) > 0 ? stamp : dropped.upTo,
            firstAt: Math.min(dropped.firstAt, s.at),
            lastAt: Math.max(dropped.lastAt, s.at),
          };
    const who = { author: s.author, controller: s.controller, count: 1 };
    const k = droppedAuthorKey(who);
    const had = by.get(k);
    if (had === undefined) by.set(k, who);
    else had.count++;
  }
  if (dropped !== undefined) dropped = { ...dropped, by: topDroppedAuthors([...by.values()]) };
  return { summaries: all.filter((s) => !gone.has(s.id)), dropped };
}

export interface CompactionPlan {
  /** The new base, unsigned: the same on every peer that sees the same records. */
  base: UnsignedBase;
  /** Ids of the records and bases the new base replaces: delete every array entry carrying one. */
  remove: Set<string>;
  /** Records folded now (earlier bases' summaries not counted). */
  folded: number;
  /** Records left whole. */
  kept: number;
}

function summaryOf(h: HistoryEntry): RevisionSummary {
  const s: RevisionSummary = {
    id: h.id,
    lamport: h.lamport,
    author: h.author,
    controller: h.controller,
    kind: h.kind,
    at: h.at,
    concurrent: h.concurrent,
  };
  if (h.message !== undefined) s.message = h.message;
  if (h.rollbackTo !== undefined) s.rollbackTo = h.rollbackTo;
  if (h.rejected !== undefined) s.rejected = h.rejected;
  return s;
}

/** Whether `m` has outgrown `policy`. */
export function needsCompaction(
  m: Materialized,
  policy: CompactionPolicy = defaultCompactionPolicy,
): boolean {
  return m.recordEntries > policy.threshold;
}

/**
 * Plans the compaction of `key`: every record but the newest `policy.keep` (and every earlier base) is
 * folded into one base holding the object's field tree at the cut and a summary of each folded
 * record. Records still waiting for their parents stay whole. The plan depends only on the entries,
 * so peers compacting the same records at once write bases with the same id. Returns undefined when
 * under the threshold (unless `force`) or when nothing is old enough to fold.
 */
export function planCompaction(
  key: string,
  entries: readonly unknown[],
  ctx: MaterializeContext,
  policy: CompactionPolicy = defaultCompactionPolicy,
  force = false,
): CompactionPlan | undefined {
  const m = materialize(key, entries, ctx);
  if (!force && !needsCompaction(m, policy)) return undefined;
  const live = m.history.filter((h) => !h.compacted);
  const foldable = live
    .slice(0, Math.max(0, live.length - Math.max(0, policy.keep)))
    .filter((h) => h.pending !== true);
  const last = foldable[foldable.length - 1];
  if (last === undefined) return undefined;
  const foldIds = new Set(foldable.map((h) => h.id));
  const baseIds = new Set(m.bases);

  // Re-fold just the bases in use and the folded records: the tree at the cut and the heads of that history.
  const subset = entries.filter((e) => {
    const c = ctx.check(e);
    if (c.kind === 'record') return foldIds.has(c.record.id);
    return c.kind === 'base' && baseIds.has(c.base.id);
  });
  // Restore points: the newest user revisions among those folded now and those earlier bases kept.
  const wanted = Math.max(0, policy.restorePoints ?? defaultCompactionPolicy.restorePoints ?? 0);
  const eligible = (h: HistoryEntry) =>
    (h.kind === 'user' || h.kind === 'rollback') && h.rejected === undefined && h.pending !== true;
  const candidates = m.history.filter((h) => (foldIds.has(h.id) && eligible(h)) || m.restorable.has(h.id));
  const points = candidates.slice(Math.max(0, candidates.length - wanted)).reverse();
  const fresh = new Set(points.filter((h) => foldIds.has(h.id)).map((h) => h.id));

  const atCut = materialize(key, subset, ctx, { until: last.id, snapshots: fresh });
  if (atCut.at === undefined) return undefined;
  const restore: RestorePoint[] = [];
  let previous: JsonObject = userFields(atCut.at.object ?? {}, ctx.rules);
  for (const h of points) {
    const snapshot = fresh.has(h.id) ? atCut.snapshots?.get(h.id) : m.restoreOf(h.id);
    if (snapshot === undefined || snapshot === null) continue;
    const fields = fresh.has(h.id) ? userFields(snapshot, ctx.rules) : snapshot;
    restore.push({ id: h.id, patch: diffMergePatch(previous, fields) ?? {} });
    previous = fields;
  }

  let cut: Stamp = stampOf({ lamport: last.lamport, author: last.author, id: last.id });
  if (m.cut !== undefined && compareStamps(m.cut, cut) > 0) cut = m.cut;
  const capped = capSummaries(
    m.history.filter((h) => h.compacted || foldIds.has(h.id)).map(summaryOf),
    policy.maxSummaries ?? defaultCompactionPolicy.maxSummaries ?? 500,
    m.dropped,
    new Set([...atCut.heads, ...restore.map((r) => r.id)]),
  );
  const summaries = capped.summaries;

  // Every base in use is folded into the new one; stray copies of folded records go too.
  const remove = new Set([...foldIds, ...m.bases]);
  const compacted = new Set(m.history.filter((h) => h.compacted).map((h) => h.id));
  for (const e of entries) {
    const c = ctx.check(e);
    if (c.kind === 'base' && c.problem === undefined && c.base.object === key) remove.add(c.base.id);
    if (c.kind === 'record' && compacted.has(c.record.id)) remove.add(c.record.id);
  }
  return {
    base: {
      kind: 'base',
      object: key,
      cut,
      heads: atCut.heads,
      summaries,
      ...(capped.dropped === undefined ? {} : { dropped: capped.dropped }),
      ...(restore.length === 0 ? {} : { restore }),
      state: atCut.at.state,
    },
    remove,
    folded: foldIds.size,
    kept: live.length - foldIds.size,
  };
}
