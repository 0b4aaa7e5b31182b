// Placement: for every slot, the feasible nodes ranked by rendezvous hashing, or why none fits.

import type { ClusterView, NodeInfo, PodInfo } from './cluster-view.ts';
import {
  type CheckerName,
  FEASIBILITY_CHECKERS,
  type FreeResources,
  type Rejection,
  rejectionsFor,
  staticRejections,
} from './feasibility.ts';
import { rendezvousOrder, rendezvousScore } from './rendezvous.ts';
import { compareStrings, replicaCount, slotKey } from './slots.ts';
import { toMillicores } from './units.ts';

export interface SlotPlan {
  readonly slot: string;
  readonly pod: string;
  readonly index: number;
  /** Peer id holding a valid lease: the slot is kept where it is and not re-planned. */
  readonly heldBy?: string;
  /** Feasible peer ids, best first. Empty for held slots. */
  readonly candidates: readonly string[];
  /** The node that should claim the slot (`candidates[0]`); its resources are reserved for later slots. */
  readonly assigned?: string;
  /** Every reason every refused node was refused for. */
  readonly rejections: readonly Rejection[];
  /** Refused nodes per checker, each node counted once under its first reason (Nomad-style metrics). */
  readonly metrics: Readonly<Partial<Record<CheckerName, number>>>;
  /** `no feasible node: memory exhausted on a, b; label zone=eu missing on c` when nothing fits. */
  readonly summary?: string;
}

export interface PlacementPlan {
  /** Ordered by replica index, then pod name: every pod gets its first replica before any gets a second. */
  readonly slots: readonly SlotPlan[];
  readonly bySlot: ReadonlyMap<string, SlotPlan>;
}

interface Usage {
  cpuMillis: number;
  memoryBytes: number;
}

const NAMES_SHOWN = 5;

function byPeerId(a: NodeInfo, b: NodeInfo): number {
  return compareStrings(a.peerId, b.peerId) || compareStrings(a.name, b.name);
}

function freeOf(node: NodeInfo, used: Usage | undefined): FreeResources {
  return {
    cpuMillis: toMillicores(node.capacity.cpu) - (used?.cpuMillis ?? 0),
    memoryBytes: Math.max(0, node.capacity.memoryBytes) - (used?.memoryBytes ?? 0),
  };
}

/** `no feasible node: memory exhausted on a, b; label zone=eu missing on c`. */
function summarize(firstReasons: readonly Rejection[]): string {
  if (firstReasons.length === 0) return 'no feasible node: no nodes known';
  const order = new Map(FEASIBILITY_CHECKERS.map((c, i) => [c.name, i]));
  const groups = new Map<string, { rank: number; names: string[] }>();
  for (const r of firstReasons) {
    const g = groups.get(r.summary) ?? { rank: order.get(r.checker) ?? 0, names: [] };
    g.names.push(r.node);
    groups.set(r.summary, g);
  }
  const parts = [...groups.entries()]
    .sort(([sa, a], [sb, b]) => a.rank - b.rank || compareStrings(sa, sb))
    .map(([summary, g]) => {
      const names = [...new Set(g.names)].sort(compareStrings);
      const shown = names.slice(0, NAMES_SHOWN).join(', ');
      const more = names.length > NAMES_SHOWN ? ` (+${names.length - NAMES_SHOWN} more)` : '';
      return `${summary} on ${shown}${more}`;
    });
  return `no feasible node: ${parts.join('; ')}`;
}

/**
 * The claimer's preference rank for a slot: its position in the slot's rendezvous order over the nodes
 * that pass the static checkers (pinned host, labels, policy) and are not forgotten. It depends only on
 * the document, not on presence or load, so concurrent claimers report comparable ranks. 0 is best.
 */
export function preferenceRank(
  view: ClusterView,
  pod: PodInfo,
  slot: string,
  peerId: string,
): number | undefined {
  const eligible = view.nodes.filter(
    (node) => !view.forgotten.has(node.peerId) && staticRejections(view, pod, node).length === 0,
  );
  const index = rendezvousOrder(
    slot,
    eligible.map((n) => n.peerId),
  ).indexOf(peerId);
  return index < 0 ? undefined : index;
}

/**
 * Plans every slot of every pod. `held` maps slot → holder for slots with a valid lease: those stay put and
 * their resources count against the holder. Every other slot is placed greedily, in plan order, on its best
 * feasible node; each placement reserves its resources for the slots after it. A pure function of its
 * inputs: the same view and `held` give the same plan whatever the order of the view's arrays.
 */
export function planPlacement(
  view: ClusterView,
  now: number,
  held: ReadonlyMap<string, string> = new Map(),
): PlacementPlan {
  // Sorted, and deduplicated (first wins) should the document ever hold two entries for one id.
  const nodes = [...view.nodes].sort(byPeerId).filter((n, i, all) => all[i - 1]?.peerId !== n.peerId);
  const pods = [...view.pods]
    .sort((a, b) => compareStrings(a.name, b.name))
    .filter((p, i, all) => all[i - 1]?.name !== p.name);
  const usage = new Map<string, Usage>();
  /** pod name → peer id → replicas of that pod held or planned there. */
  const siblings = new Map<string, Map<string, number>>();

  const reserve = (pod: PodInfo, peerId: string): void => {
    const u = usage.get(peerId) ?? { cpuMillis: 0, memoryBytes: 0 };
    u.cpuMillis += toMillicores(pod.resources.cpu);
    u.memoryBytes += Math.max(0, pod.resources.memoryBytes);
    usage.set(peerId, u);
    const s = siblings.get(pod.name) ?? new Map<string, number>();
    s.set(peerId, (s.get(peerId) ?? 0) + 1);
    siblings.set(pod.name, s);
  };

  const order: { pod: PodInfo; index: number; slot: string }[] = [];
  for (const pod of pods) {
    for (let index = 0; index < replicaCount(pod); index++)
      order.push({ pod, index, slot: slotKey(pod.name, index) });
  }
  order.sort((a, b) => a.index - b.index || compareStrings(a.pod.name, b.pod.name));

  // Held slots first, so that their load is known before anything is placed.
  for (const { pod, slot } of order) {
    const holder = held.get(slot);
    if (holder !== undefined) reserve(pod, holder);
  }

  const slots: SlotPlan[] = [];
  for (const { pod, index, slot } of order) {
    const holder = held.get(slot);
    if (holder !== undefined) {
      slots.push({ slot, pod: pod.name, index, heldBy: holder, candidates: [], rejections: [], metrics: {} });
      continue;
    }
    const rejections: Rejection[] = [];
    const firstReasons: Rejection[] = [];
    const metrics: Partial<Record<CheckerName, number>> = {};
    const feasible: NodeInfo[] = [];
    for (const node of nodes) {
      const refused = rejectionsFor({ view, now, pod, node, free: freeOf(node, usage.get(node.peerId)) });
      const first = refused[0];
      if (first === undefined) {
        feasible.push(node);
        continue;
      }
      rejections.push(...refused);
      firstReasons.push(first);
      metrics[first.checker] = (metrics[first.checker] ?? 0) + 1;
    }
    // Replicas of one pod prefer distinct nodes: fewer siblings first, then rendezvous weight.
    const mine = siblings.get(pod.name);
    const candidates = feasible
      .map((n) => ({
        peerId: n.peerId,
        siblings: mine?.get(n.peerId) ?? 0,
        score: rendezvousScore(slot, n.peerId),
      }))
      .sort(
        (a, b) =>
          a.siblings - b.siblings ||
          (a.score === b.score ? compareStrings(a.peerId, b.peerId) : a.score > b.score ? -1 : 1),
      )
      .map((c) => c.peerId);
    const assigned = candidates[0];
    if (assigned === undefined) {
      slots.push({
        slot,
        pod: pod.name,
        index,
        candidates,
        rejections,
        metrics,
        summary: summarize(firstReasons),
      });
    } else {
      reserve(pod, assigned);
      slots.push({ slot, pod: pod.name, index, candidates, assigned, rejections, metrics });
    }
  }
  return { slots, bySlot: new Map(slots.map((s) => [s.slot, s])) };
}
