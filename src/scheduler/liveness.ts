// Liveness from this peer's presence observations: how long a node has been missing, and whether it is dead.

import {
  type ClusterView,
  DEFAULT_DEAD_AFTER_MS,
  DEFAULT_HA_GRACE_MS,
  type PodInfo,
} from './cluster-view.ts';
import { formatDuration } from './units.ts';

/**
 * How long `peerId` has been missing in this peer's view (0 when heard from at `now`). Capped by how
 * long this peer has been watching (`presenceSince`): absence it did not observe is not counted.
 */
export function missingForMs(view: ClusterView, peerId: string, now: number): number {
  return Math.max(0, now - absentSince(view, peerId));
}

/** Since when `peerId` counts as absent: its last presence, or when this peer began watching if later. */
function absentSince(view: ClusterView, peerId: string): number {
  return Math.max(view.presence.get(peerId) ?? Number.NEGATIVE_INFINITY, view.presenceSince);
}

export function deadAfterMs(view: ClusterView): number {
  const d = view.deadAfterMs;
  return d !== undefined && Number.isFinite(d) && d > 0 ? d : DEFAULT_DEAD_AFTER_MS;
}

/** Why `peerId` counts as dead (forgotten, or missing for deadAfter), or undefined while it does not. */
export function deadReason(view: ClusterView, peerId: string, now: number): string | undefined {
  if (view.forgotten.has(peerId)) return 'forgotten (meshd node forget)';
  const missing = missingForMs(view, peerId, now);
  const limit = deadAfterMs(view);
  if (missing > limit) return `missing for ${formatDuration(missing)} (dead after ${formatDuration(limit)})`;
  return undefined;
}

/** A pod's ha grace: also the window in which a node counts as a live candidate for its slots. */
export function haGraceOf(pod: PodInfo): number {
  const g = pod.haGraceMs;
  return g !== undefined && Number.isFinite(g) && g >= 0 ? g : DEFAULT_HA_GRACE_MS;
}

/**
 * The first moment after `now` at which some node's absence crosses a limit a decision depends on: an ha
 * pod's grace (its holder stops counting) or `deadAfter`. Undefined when no crossing lies ahead. Lets the
 * claim loop decide at that very moment instead of on its next periodic tick.
 */
export function nextLivenessChange(view: ClusterView, now: number): number | undefined {
  const limits = new Set<number>([deadAfterMs(view)]);
  for (const pod of view.pods) if (pod.availability === 'ha') limits.add(haGraceOf(pod));
  let next: number | undefined;
  for (const node of view.nodes) {
    const since = absentSince(view, node.peerId);
    for (const limit of limits) {
      // `missing > limit` is what flips a decision, so the first such moment is one millisecond after
      const at = since + limit + 1;
      if (at > now && (next === undefined || at < next)) next = at;
    }
  }
  return next;
}
