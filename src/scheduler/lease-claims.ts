// Consensus-free lease claims: the total order that settles concurrent claims, lease validity, and what this peer claims.

import type { ClusterView, Lease, NodeInfo, PodInfo } from './cluster-view.ts';
import { checkCpu, checkMemory, type FreeResources, staticRejections } from './feasibility.ts';
import { admitLeases, type IgnoredLease, type LeaseVerifier, type UnsignedLease } from './lease-signature.ts';
import { deadReason, haGraceOf, missingForMs } from './liveness.ts';
import { planPlacement, preferenceRank } from './placement.ts';
import { compareStrings, parseSlot, replicaCount } from './slots.ts';
import { formatDuration, toMillicores } from './units.ts';

/** Environment variable that carries the lease epoch to the pod: a fencing token for what it writes. */
export const MESHD_LEASE_EPOCH = 'MESHD_LEASE_EPOCH';

/**
 * The total order on leases of one slot; negative when `a` wins. Keys, in turn: higher epoch; better
 * (lower) rank, a missing rank being worst; lower holder peer id; a release over the claim it ends;
 * later claimedAt; then slot and sig, so that only identical leases compare equal. It reads nothing but
 * the two leases, so every peer ranks the same set the same way.
 */
export function compareLeases(a: Lease, b: Lease): number {
  if (a.epoch !== b.epoch) return a.epoch > b.epoch ? -1 : 1;
  const ra = a.rank ?? Number.POSITIVE_INFINITY;
  const rb = b.rank ?? Number.POSITIVE_INFINITY;
  if (ra !== rb) return ra < rb ? -1 : 1;
  const holder = compareStrings(a.holder, b.holder);
  if (holder !== 0) return holder;
  const xa = a.releasedAt ?? Number.NEGATIVE_INFINITY;
  const xb = b.releasedAt ?? Number.NEGATIVE_INFINITY;
  if (xa !== xb) return xa > xb ? -1 : 1;
  if (a.claimedAt !== b.claimedAt) return a.claimedAt > b.claimedAt ? -1 : 1;
  return compareStrings(a.slot, b.slot) || compareStrings(a.sig, b.sig);
}

/** The winning claim among the leases of one slot (undefined when there are none). */
export function resolveLease(candidates: readonly Lease[]): Lease | undefined {
  let best: Lease | undefined;
  for (const lease of candidates) if (best === undefined || compareLeases(lease, best) < 0) best = lease;
  return best;
}

/** The winning lease of every slot that has any. */
export function resolveAll(leases: readonly Lease[]): Map<string, Lease> {
  const winners = new Map<string, Lease>();
  for (const lease of leases) {
    const best = winners.get(lease.slot);
    if (best === undefined || compareLeases(lease, best) < 0) winners.set(lease.slot, lease);
  }
  return winners;
}

export interface LeaseValidity {
  readonly valid: boolean;
  /** Why it is (still) valid or why not, for `meshd why`. */
  readonly reason: string;
}

function valid(reason: string): LeaseValidity {
  return { valid: true, reason };
}

function invalid(reason: string): LeaseValidity {
  return { valid: false, reason };
}

function nodesByPeer(view: ClusterView): Map<string, NodeInfo> {
  const byPeer = new Map<string, NodeInfo>();
  const sorted = [...view.nodes].sort(
    (a, b) => compareStrings(a.peerId, b.peerId) || compareStrings(a.name, b.name),
  );
  for (const node of sorted) if (!byPeer.has(node.peerId)) byPeer.set(node.peerId, node);
  return byPeer;
}

function podsByName(pods: readonly PodInfo[]): Map<string, PodInfo> {
  const byName = new Map<string, PodInfo>();
  const sorted = [...pods].sort((a, b) => compareStrings(a.name, b.name));
  for (const pod of sorted) if (!byName.has(pod.name)) byName.set(pod.name, pod);
  return byName;
}

/** Every validity rule except the holder's capacity, which needs all of the holder's leases at once. */
function validityBeforeCapacity(
  lease: Lease,
  pod: PodInfo | undefined,
  node: NodeInfo | undefined,
  view: ClusterView,
  now: number,
): LeaseValidity {
  const who = node?.name ?? lease.holder;
  if (lease.releasedAt !== undefined) return invalid(`released by ${who} (epoch ${lease.epoch})`);
  const ref = parseSlot(lease.slot);
  if (ref === undefined) return invalid(`${lease.slot} is not a slot key`);
  if (pod === undefined) return invalid(`pod ${ref.pod} no longer exists`);
  if (ref.index >= replicaCount(pod))
    return invalid(`pod ${pod.name} has ${replicaCount(pod)} replica(s) now`);
  if (node === undefined) return invalid(`holder ${lease.holder} is not a known node`);
  if (view.forgotten.has(node.peerId)) return invalid(`holder ${who} was forgotten (meshd node forget)`);
  const host = pod.placement.host;
  if (host !== undefined && node.name !== host)
    return invalid(`pod is pinned to host ${host}; ${who} may not hold it`);
  const misfit = staticRejections(view, pod, node)[0];
  if (misfit !== undefined) return invalid(`holder ${who} no longer fits: ${misfit.reason}`);
  const held = `held by ${who} (epoch ${lease.epoch})`;
  // A pinned pod never moves: its host keeps the lease however long it is away.
  if (host !== undefined) return valid(`${held}, pinned to host ${host}`);
  if (pod.availability === 'ha') {
    const missing = missingForMs(view, node.peerId, now);
    const grace = haGraceOf(pod);
    if (missing > grace) {
      return invalid(
        `holder ${who} missing for ${formatDuration(missing)} (ha grace ${formatDuration(grace)})`,
      );
    }
    return valid(
      missing === 0 ? held : `${held}, missing for ${formatDuration(missing)} of ${formatDuration(grace)}`,
    );
  }
  const dead = deadReason(view, node.peerId, now);
  if (dead !== undefined) return invalid(`holder ${who} is dead: ${dead}`);
  const missing = missingForMs(view, node.peerId, now);
  return valid(
    missing === 0 ? held : `${held}, unreachable for ${formatDuration(missing)} (best-effort waits)`,
  );
}

/**
 * Validity of each slot's winning lease. Capacity is checked first-fit per holder in claim order
 * (claimedAt, epoch, slot): when a holder's leases no longer fit its capacity (a pod asked for more, the
 * node shrank) only the latest ones lose validity, the same ones on every peer.
 */
function evaluateWinners(
  view: ClusterView,
  now: number,
  winners: ReadonlyMap<string, Lease>,
  podOf: (name: string) => PodInfo | undefined,
): Map<string, LeaseValidity> {
  const nodes = nodesByPeer(view);
  const result = new Map<string, LeaseValidity>();
  const fitting = new Map<string, { lease: Lease; pod: PodInfo; ok: LeaseValidity }[]>();
  for (const [slot, lease] of winners) {
    const pod = podOf(parseSlot(slot)?.pod ?? '');
    const node = nodes.get(lease.holder);
    const v = validityBeforeCapacity(lease, pod, node, view, now);
    if (!v.valid || pod === undefined || node === undefined) {
      result.set(slot, v);
      continue;
    }
    const list = fitting.get(node.peerId) ?? [];
    list.push({ lease, pod, ok: v });
    fitting.set(node.peerId, list);
  }
  for (const [peerId, list] of fitting) {
    const node = nodes.get(peerId);
    if (node === undefined) continue;
    list.sort(
      (a, b) =>
        a.lease.claimedAt - b.lease.claimedAt ||
        a.lease.epoch - b.lease.epoch ||
        compareStrings(a.lease.slot, b.lease.slot),
    );
    let free: FreeResources = {
      cpuMillis: toMillicores(node.capacity.cpu),
      memoryBytes: node.capacity.memoryBytes,
    };
    for (const { lease, pod, ok } of list) {
      const ctx = { view, now, pod, node, free };
      const short = checkCpu(ctx) ?? checkMemory(ctx);
      if (short !== undefined) {
        result.set(lease.slot, invalid(`holder ${node.name} no longer fits: ${short.reason}`));
        continue;
      }
      free = {
        cpuMillis: free.cpuMillis - toMillicores(pod.resources.cpu),
        memoryBytes: free.memoryBytes - Math.max(0, pod.resources.memoryBytes),
      };
      result.set(lease.slot, ok);
    }
  }
  return result;
}

/**
 * Whether `lease` holds its slot at `now`, as if it were the slot's winning lease. The holder's presence
 * is the renewal: no lease is ever rewritten to stay valid. Rules: a released lease, a lease for a slot
 * that no longer exists, and a lease whose holder is unknown, forgotten, or no longer fits the pod
 * (pinned host, labels, policy, capacity) are invalid. Otherwise a pinned pod's lease is valid whatever
 * its host's presence; an `ha` lease until its holder has been missing longer than `haGraceMs`; a
 * `best-effort` lease until its holder is dead (forgotten, or missing longer than `deadAfterMs`).
 * `view.leases` must already be admitted (see `admitLeases`); `pod` undefined means the pod is gone.
 */
export function leaseValid(
  lease: Lease,
  view: ClusterView,
  pod: PodInfo | undefined,
  now: number,
): LeaseValidity {
  const winners = resolveAll(view.leases);
  winners.set(lease.slot, lease);
  const name = parseSlot(lease.slot)?.pod;
  const pods = podsByName(view.pods);
  const podOf = (n: string) => (n === name ? pod : pods.get(n));
  return (
    evaluateWinners(view, now, winners, podOf).get(lease.slot) ?? invalid(`${lease.slot} was not evaluated`)
  );
}

export interface ClaimIntent {
  readonly slot: string;
  /** Highest epoch seen for the slot + 1. */
  readonly epoch: number;
  /** This peer's preference rank for the slot (see `preferenceRank`). */
  readonly rank?: number;
}

/** A slot this peer holds validly: it should be running here, with this epoch. */
export interface HeldSlot {
  readonly slot: string;
  readonly epoch: number;
}

export interface SlotReason {
  readonly slot: string;
  readonly reason: string;
}

export interface ClaimDecision {
  /** Slots to claim: write `claimLease(intent, self, now)`, signed. */
  readonly claim: readonly ClaimIntent[];
  /** Slots whose winning lease is this peer's and must be given up: write `releaseLease(own lease, now)`. */
  readonly release: readonly string[];
  /** Slots this peer runs (or holds a lease for) but does not validly hold: stop the local copy. */
  readonly stop: readonly string[];
  /** Slots this peer validly holds: they should run here with this epoch. */
  readonly hold: readonly HeldSlot[];
  /** One line per slot considered, for `meshd why`. */
  readonly reasons: readonly SlotReason[];
  /** Stored leases that were not admitted (malformed or forged). */
  readonly ignored: readonly IgnoredLease[];
}

export interface DecideOptions {
  readonly verifier: LeaseVerifier;
  /**
   * Slots the local runtime runs now. When given, `stop` lists exactly the running slots this peer must
   * stop; when omitted, any slot this peer has an unreleased lease entry for counts as running.
   */
  readonly running?: readonly string[];
}

/**
 * What this peer does now, decided from its own view alone. It claims a slot when the slot has no valid
 * lease and the placement plan puts it on this peer (the best live feasible candidate); it stops what it
 * runs but lost; it releases its winning lease when it drains or no longer qualifies. A cordoned peer
 * makes no claims; a draining peer releases everything it holds.
 */
export function decideClaims(
  self: string,
  view: ClusterView,
  now: number,
  opts: DecideOptions,
): ClaimDecision {
  // A peer is present to itself.
  const presence = new Map(view.presence);
  presence.set(self, now);
  const { admitted, ignored } = admitLeases(view.leases, opts.verifier);
  const v: ClusterView = { ...view, presence, leases: admitted };

  const pods = podsByName(v.pods);
  const nodes = nodesByPeer(v);
  const winners = resolveAll(admitted);
  const validity = evaluateWinners(v, now, winners, (n) => pods.get(n));
  const held = new Map<string, string>();
  for (const [slot, lease] of winners) if (validity.get(slot)?.valid === true) held.set(slot, lease.holder);
  const plan = planPlacement(v, now, held);

  const mine = new Set(
    admitted.filter((l) => l.holder === self && l.releasedAt === undefined).map((l) => l.slot),
  );
  const running = opts.running === undefined ? mine : new Set(opts.running);
  const draining = nodes.get(self)?.draining === true;
  const nameOf = (peerId: string) => nodes.get(peerId)?.name ?? peerId;

  const claim: ClaimIntent[] = [];
  const release: string[] = [];
  const stop: string[] = [];
  const hold: HeldSlot[] = [];
  const reasons: SlotReason[] = [];
  const say = (slot: string, reason: string) => reasons.push({ slot, reason });

  const slots = new Set<string>([...plan.bySlot.keys(), ...winners.keys(), ...running]);
  for (const slot of [...slots].sort(compareStrings)) {
    const sp = plan.bySlot.get(slot);
    const winner = winners.get(slot);
    const why = winner === undefined ? 'no lease' : (validity.get(slot)?.reason ?? 'lease not evaluated');
    const mineToRelease = winner !== undefined && winner.holder === self && winner.releasedAt === undefined;
    const runsHere = running.has(slot);

    if (sp === undefined) {
      // The pod is gone or scaled down.
      if (mineToRelease) release.push(slot);
      if (runsHere) stop.push(slot);
      say(slot, runsHere || mineToRelease ? `stop: ${why}` : why);
      continue;
    }
    if (sp.heldBy === self && winner !== undefined) {
      if (draining) {
        release.push(slot);
        if (runsHere) stop.push(slot);
        say(slot, `release: this node is draining (epoch ${winner.epoch})`);
      } else {
        hold.push({ slot, epoch: winner.epoch });
        say(slot, `hold: ${why}`);
      }
      continue;
    }
    if (sp.heldBy !== undefined) {
      if (runsHere) stop.push(slot);
      say(slot, runsHere ? `stop: lost to ${nameOf(sp.heldBy)}; ${why}` : why);
      continue;
    }
    const pod = pods.get(sp.pod);
    if (sp.assigned === self && pod !== undefined) {
      const rank = preferenceRank(v, pod, slot, self);
      const epoch = (winner?.epoch ?? 0) + 1;
      claim.push(rank === undefined ? { slot, epoch } : { slot, epoch, rank });
      say(
        slot,
        `claim: ${why}; this node is the best live feasible candidate (epoch ${epoch}, rank ${rank ?? '-'})`,
      );
      continue;
    }
    if (mineToRelease) release.push(slot);
    if (runsHere) stop.push(slot);
    const next =
      sp.assigned === undefined ? (sp.summary ?? 'no feasible node') : `up to ${nameOf(sp.assigned)}`;
    say(slot, `${runsHere || mineToRelease ? 'stop: ' : ''}${why}; ${next}`);
  }
  return { claim, release, stop, hold, reasons, ignored };
}

/** The unsigned lease a claim writes (sign it with `signLease`). */
export function claimLease(intent: ClaimIntent, holder: string, now: number): UnsignedLease {
  const base = { slot: intent.slot, holder, epoch: intent.epoch, claimedAt: now };
  return intent.rank === undefined ? base : { ...base, rank: intent.rank };
}

/** The unsigned record that gives up `lease`: same claim, same epoch, marked released. */
export function releaseLease(lease: Lease, now: number): UnsignedLease {
  const { sig: _sig, ...claim } = lease;
  return { ...claim, releasedAt: now };
}

/** The environment a holder gives its pod: the epoch as a fencing token. */
export function fencingEnv(epoch: number): Record<typeof MESHD_LEASE_EPOCH, string> {
  return { [MESHD_LEASE_EPOCH]: String(epoch) };
}
