// This node's scheduling loop: decides claims from the document and presence, writes signed leases, says what to run and why.

import type { ClusterView, Lease } from '../scheduler/cluster-view.ts';
import {
  type ClaimDecision,
  claimLease,
  decideClaims,
  leaseValid,
  releaseLease,
  resolveAll,
} from '../scheduler/lease-claims.ts';
import { admitLeases, type IgnoredLease, type LeaseVerifier } from '../scheduler/lease-signature.ts';
import { nextLivenessChange } from '../scheduler/liveness.ts';
import { planPlacement } from '../scheduler/placement.ts';
import { compareStrings, parseSlot, slotsOf } from '../scheduler/slots.ts';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import type { SkippedEntry } from './cluster-view-source.ts';
import type { LeaseStore, RejectedLeaseEntry } from './lease-store.ts';

/** A slot this node should run now: replica `slot` of pod `pod` under lease epoch `leaseEpoch` (the fencing token). */
export interface DesiredSlot {
  readonly pod: string;
  readonly slot: number;
  readonly leaseEpoch: number;
}

/** Where the view comes from (the ClusterViewSource). */
export interface ViewSource {
  read(): { view: ClusterView; skipped: SkippedEntry[] };
}

/** Something whose changes should trigger a decision soon; returns an unsubscribe. */
export type ChangeFeed = (listener: () => void) => () => void;

export interface ClaimLoopDeps {
  readonly source: ViewSource;
  /** Where this node's leases are read and written; its signer's peer id is this node's identity. */
  readonly leases: LeaseStore;
  readonly verifier: LeaseVerifier;
  readonly clock: Clock;
  /**
   * Document changes that call for a decision: node registry (ClusterDoc.onChange) and pods
   * (ObjectStore.onChange). Lease changes are watched through `leases` (remote ones only).
   */
  readonly feeds?: readonly ChangeFeed[];
  readonly logger?: Logger;
  /** Decision period: how soon lapsed presence is acted on. Default 1000 ms. */
  readonly intervalMs?: number;
  /** Delay after a document change before deciding, so a burst of updates makes one decision. Default 2 ms. */
  readonly debounceMs?: number;
}

/** A claim entry of a slot as `explain` shows it. */
export interface LeaseHolderView {
  readonly node: string;
  readonly peerId: string;
  readonly epoch: number;
  readonly claimedAt: number;
  readonly releasedAt?: number;
}

export interface SlotExplanation {
  /** `pod/web#0`. */
  readonly slot: string;
  readonly index: number;
  /** The winning lease entry and whether it holds the slot now (with why, or why not). */
  readonly holder?: LeaseHolderView & { readonly valid: boolean; readonly reason: string };
  /** Other claimers of the slot, which lost to the holder (a partition's leftovers). */
  readonly contenders: readonly LeaseHolderView[];
  /** What this node does about the slot, and why. */
  readonly decision: string;
  /** For a slot without a valid lease: the feasible nodes, best first (the first one should claim it). */
  readonly candidates: readonly string[];
  /** Nomad-style, when no node fits: `no feasible node: memory exhausted on a, b; label zone=eu missing on c`. */
  readonly summary?: string;
  /** Every refused node with its reasons (for a slot without a valid lease). */
  readonly rejections: readonly { readonly node: string; readonly reason: string }[];
}

export interface PodExplanation {
  readonly pod: string;
  /** Why the pod is not scheduled at all (absent, deleted, unreadable), when it is not. */
  readonly problem?: string;
  readonly replicas: number;
  readonly slots: readonly SlotExplanation[];
  /** Lease entries for this pod's slots that were ignored (forged, malformed), with the reason. */
  readonly ignored: readonly { readonly slot: string; readonly holder: string; readonly reason: string }[];
}

/** `meshd why` lines for a pod explanation. */
export function formatExplanation(e: PodExplanation): string[] {
  const out: string[] = [];
  if (e.problem !== undefined) out.push(`pod ${e.pod}: ${e.problem}`);
  for (const s of e.slots) {
    const h = s.holder;
    out.push(
      h === undefined ? `${s.slot}: no lease` : `${s.slot}: ${h.valid ? 'held' : 'not held'} — ${h.reason}`,
    );
    out.push(`  this node: ${s.decision}`);
    if (s.summary !== undefined) out.push(`  ${s.summary}`);
    else if (s.candidates.length > 0) out.push(`  candidates: ${s.candidates.join(', ')}`);
    for (const r of s.rejections) out.push(`  ${r.node}: ${r.reason}`);
    for (const c of s.contenders)
      out.push(`  lost claim: ${c.node} epoch ${c.epoch}${c.releasedAt === undefined ? '' : ' (released)'}`);
  }
  for (const i of e.ignored) out.push(`ignored lease ${i.slot} by ${i.holder}: ${i.reason}`);
  return out;
}

function sameSlots(a: readonly DesiredSlot[], b: readonly DesiredSlot[]): boolean {
  return (
    a.length === b.length &&
    a.every((x, i) => {
      const y = b[i];
      return y !== undefined && x.pod === y.pod && x.slot === y.slot && x.leaseEpoch === y.leaseEpoch;
    })
  );
}

/**
 * Runs `decideClaims` for this node on every relevant document change (debounced) and on a timer, writes
 * the resulting claims and releases as signed leases, and publishes the slots this node validly holds.
 * It never waits for anyone: with no peer reachable, a node keeps holding what its document says it holds
 * (it counts as present to itself), so `start()` on a persisted document yields `desiredSlots()` at once.
 */
export class ClaimLoop {
  private readonly deps: ClaimLoopDeps;
  private readonly self: string;
  private readonly listeners = new Set<(slots: readonly DesiredSlot[]) => void>();
  private readonly unsubscribe: (() => void)[] = [];
  private readonly loggedIgnored = new Set<string>();
  private timer: TimerHandle | undefined;
  private pending: TimerHandle | undefined;
  /** Set for the next moment a node's absence crosses a grace or deadAfter (see nextLivenessChange). */
  private wake: { at: number; timer: TimerHandle } | undefined;
  private running = false;
  /** How long the latest decision took (ms): the least spacing of decisions made on changes. */
  private lastTickMs = 0;
  private again = false;
  private desired: DesiredSlot[] = [];
  private last: ClaimDecision | undefined;
  private skipped: SkippedEntry[] = [];
  /** Admitted lease entry (`slot|holder|sig`) → local time this node first saw it (see `read`). */
  private readonly arrivals = new Map<string, number>();

  constructor(deps: ClaimLoopDeps) {
    this.deps = deps;
    this.self = deps.leases.self;
  }

  /** Decides once right away (so `desiredSlots()` is ready on return), then on changes and every interval. */
  start(): void {
    if (this.timer !== undefined) return;
    const soon = () => this.poke();
    for (const feed of this.deps.feeds ?? []) this.unsubscribe.push(feed(soon));
    this.unsubscribe.push(
      this.deps.leases.onChange((local) => {
        // Our own writes were decided on already; deciding again on them would only repeat the decision.
        if (!local) this.poke();
      }),
    );
    this.timer = this.deps.clock.setInterval(() => this.safeTick(), this.deps.intervalMs ?? 1000);
    this.tick();
  }

  /** Stops deciding; leases stay as written (a restart picks them up). */
  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.pending?.cancel();
    this.pending = undefined;
    this.wake?.timer.cancel();
    this.wake = undefined;
    for (const off of this.unsubscribe.splice(0)) off();
  }

  /**
   * Decides again at `at`: an ha holder's grace ends then, and waiting for the periodic tick would add up
   * to a whole interval to every failover.
   */
  private wakeAt(at: number | undefined, now: number): void {
    if (this.timer === undefined || at === undefined || this.wake?.at === at) return;
    this.wake?.timer.cancel();
    const timer = this.deps.clock.setTimeout(() => {
      this.wake = undefined;
      this.safeTick();
    }, at - now);
    this.wake = { at, timer };
  }

  /** Asks for a decision soon (debounced): for changes the loop does not watch itself, such as presence. */
  poke(): void {
    if (this.pending !== undefined || this.timer === undefined) return;
    // At least as long as the last decision took: a burst of changes (a thousand applies, a big sync)
    // then costs this loop at most about half a core, and each decision still sees the latest document.
    const delay = Math.max(this.deps.debounceMs ?? 2, this.lastTickMs);
    this.pending = this.deps.clock.setTimeout(() => {
      this.pending = undefined;
      this.safeTick();
    }, delay);
  }

  /** A decision from a timer: a failure is logged, and the next tick tries again. */
  private safeTick(): void {
    try {
      this.tick();
    } catch (err) {
      this.deps.logger?.error('scheduling decision failed', {
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }

  /** The slots this node should run now, sorted by pod and slot: exactly those it validly holds. */
  desiredSlots(): DesiredSlot[] {
    return [...this.desired];
  }

  /** Calls `listener` with the new list whenever `desiredSlots()` changes. Returns an unsubscribe. */
  onDesiredChange(listener: (slots: readonly DesiredSlot[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The latest decision (claims, releases, stops, holds and one reason per slot), if any was made. */
  lastDecision(): ClaimDecision | undefined {
    return this.last;
  }

  /** Document entries the latest decision could not use, each with its reason: invalid pods, bad node fields, bad lease entries, forged leases. */
  problems(): {
    skipped: SkippedEntry[];
    rejectedLeases: RejectedLeaseEntry[];
    ignoredLeases: IgnoredLease[];
  } {
    return {
      skipped: [...this.skipped],
      rejectedLeases: this.deps.leases.rejected(),
      ignoredLeases: [...(this.last?.ignored ?? [])],
    };
  }

  /** Decides now, writes what the decision says, and publishes the slots to run. Returns the decision. */
  tick(): ClaimDecision | undefined {
    if (this.running) {
      this.again = true;
      return this.last;
    }
    this.running = true;
    const started = this.deps.clock.now();
    try {
      let decision: ClaimDecision | undefined;
      do {
        this.again = false;
        decision = this.decideAndWrite();
      } while (this.again);
      return decision;
    } finally {
      this.running = false;
      this.lastTickMs = Math.min(this.deps.clock.now() - started, 1000);
    }
  }

  private decideAndWrite(): ClaimDecision {
    const { clock, leases, verifier, logger } = this.deps;
    const now = clock.now();
    let { view, skipped } = this.read(now);
    this.wakeAt(nextLivenessChange(view, now), now);
    let decision = decideClaims(this.self, view, now, { verifier });
    const writes: Lease[] = [];
    for (const intent of decision.claim) writes.push(leases.sign(claimLease(intent, this.self, now)));
    if (decision.release.length > 0) {
      const winners = resolveAll(admitLeases(view.leases, verifier).admitted);
      for (const slot of decision.release) {
        const own = winners.get(slot);
        if (own !== undefined && own.holder === this.self && own.releasedAt === undefined)
          writes.push(leases.sign(releaseLease(own, now)));
      }
    }
    if (writes.length > 0 && leases.writeAll(writes) > 0) {
      for (const w of writes) {
        const fields = {
          pod: parseSlot(w.slot)?.pod ?? w.slot,
          slot: w.slot,
          epoch: w.epoch,
          ...(w.rank === undefined ? {} : { rank: w.rank }),
        };
        const reason = decision.reasons.find((r) => r.slot === w.slot)?.reason;
        logger?.info(w.releasedAt === undefined ? 'slot claimed' : 'slot released', { ...fields, reason });
      }
      // Decide again on the document as written, so the new holds show at once.
      ({ view, skipped } = this.read(now));
      decision = decideClaims(this.self, view, now, { verifier });
    }
    this.last = decision;
    this.skipped = skipped;
    this.logIgnored(decision.ignored);
    this.publish(decision);
    return decision;
  }

  /**
   * The source's view, with the arrival of a lease counted as a sign of life of its holder: a holder was
   * alive when it signed a claim or release this node has only just received, and its heartbeats may lag
   * behind the document (on a heal the state-vector sync can land before the first presence beacon). Judged
   * by presence alone, the side that rejoins would find the other side's fresh claims held by nodes
   * "missing" since the partition began and claim over them at once: one more move and epoch for nothing.
   * Like `presenceSince`, this only ever delays a takeover, by at most the grace, and only for a lease this
   * node received within the grace. Only admitted (correctly signed) leases count.
   */
  private read(now: number): { view: ClusterView; skipped: SkippedEntry[] } {
    const { view, skipped } = this.deps.source.read();
    const presence = new Map(view.presence);
    const current = new Set<string>();
    for (const lease of view.leases) {
      // the signature covers the slot; the holder is named so a copied signature counts for nobody else
      const id = `${lease.holder}|${lease.sig}`;
      let at = this.arrivals.get(id);
      if (at === undefined) {
        // Checked once, when first seen: a forged entry is no sign of anyone's life.
        if (admitLeases([lease], this.deps.verifier).admitted.length === 0) continue;
        at = now;
        this.arrivals.set(id, at);
      }
      current.add(id);
      if (at > (presence.get(lease.holder) ?? Number.NEGATIVE_INFINITY)) presence.set(lease.holder, at);
    }
    for (const id of this.arrivals.keys()) if (!current.has(id)) this.arrivals.delete(id);
    return { view: { ...view, presence }, skipped };
  }

  private publish(decision: ClaimDecision): void {
    const next: DesiredSlot[] = [];
    for (const h of decision.hold) {
      const ref = parseSlot(h.slot);
      if (ref !== undefined) next.push({ pod: ref.pod, slot: ref.index, leaseEpoch: h.epoch });
    }
    next.sort((a, b) => compareStrings(a.pod, b.pod) || a.slot - b.slot);
    if (sameSlots(next, this.desired)) return;
    const lost = this.desired.filter((d) => !next.some((n) => n.pod === d.pod && n.slot === d.slot));
    for (const d of lost) {
      const slot = `pod/${d.pod}#${d.slot}`;
      this.deps.logger?.info('slot no longer held here', {
        pod: d.pod,
        slot,
        epoch: d.leaseEpoch,
        reason: decision.reasons.find((r) => r.slot === slot)?.reason,
      });
    }
    this.desired = next;
    for (const l of this.listeners) {
      try {
        l(this.desiredSlots());
      } catch (err) {
        this.deps.logger?.error('desired-slots listener failed', { error: String(err) });
      }
    }
  }

  private logIgnored(ignored: readonly IgnoredLease[]): void {
    for (const i of ignored) {
      const id = `${i.lease.slot}|${i.lease.holder}|${String(i.lease.sig)}`;
      if (this.loggedIgnored.has(id)) continue;
      if (this.loggedIgnored.size > 10_000) this.loggedIgnored.clear();
      this.loggedIgnored.add(id);
      this.deps.logger?.warn('lease ignored', { slot: i.lease.slot, peer: i.lease.holder, reason: i.reason });
    }
  }

  /**
   * Why each slot of `podName` is where it is, from this node's view now: the holder and its validity, the
   * other claimers, this node's decision, and for a slot without a valid lease the candidates or the
   * reasons every node was refused (`meshd why` / `describe`).
   */
  explain(podName: string): PodExplanation {
    const { verifier } = this.deps;
    const now = this.deps.clock.now();
    const { view: stored, skipped } = this.read(now);
    const presence = new Map(stored.presence);
    presence.set(this.self, now);
    const { admitted, ignored } = admitLeases(stored.leases, verifier);
    const view: ClusterView = { ...stored, presence, leases: admitted };
    const decision = decideClaims(this.self, stored, now, { verifier });
    const pod = view.pods.find((p) => p.name === podName);
    const nameOf = (peerId: string) => view.nodes.find((n) => n.peerId === peerId)?.name ?? peerId;
    const ofPod = (slot: string) => parseSlot(slot)?.pod === podName;

    const winners = resolveAll(admitted);
    // A winner's validity depends only on its pod, its holder, and the holder's other winning leases
    // (capacity is first-fit per holder), so each is judged against its holder's winners alone:
    // the same verdicts as against the whole view, without a quadratic cost in the number of slots.
    const byHolder = new Map<string, Lease[]>();
    for (const lease of winners.values())
      byHolder.set(lease.holder, [...(byHolder.get(lease.holder) ?? []), lease]);
    const held = new Map<string, string>();
    const validity = new Map<string, { valid: boolean; reason: string }>();
    for (const [slot, lease] of winners) {
      const p = view.pods.find((x) => x.name === parseSlot(slot)?.pod);
      const v = leaseValid(lease, { ...view, leases: byHolder.get(lease.holder) ?? [lease] }, p, now);
      validity.set(slot, v);
      if (v.valid) held.set(slot, lease.holder);
    }
    const plan = planPlacement(view, now, held);

    const slotKeys = new Set<string>(pod === undefined ? [] : slotsOf(pod));
    for (const slot of winners.keys()) if (ofPod(slot)) slotKeys.add(slot);
    const holderView = (l: Lease): LeaseHolderView => ({
      node: nameOf(l.holder),
      peerId: l.holder,
      epoch: l.epoch,
      claimedAt: l.claimedAt,
      ...(l.releasedAt === undefined ? {} : { releasedAt: l.releasedAt }),
    });
    const slots: SlotExplanation[] = [...slotKeys]
      .sort((a, b) => (parseSlot(a)?.index ?? 0) - (parseSlot(b)?.index ?? 0))
      .map((slot) => {
        const winner = winners.get(slot);
        const v = validity.get(slot);
        const sp = plan.bySlot.get(slot);
        const contenders = admitted
          .filter((l) => l.slot === slot && l !== winner)
          .sort((a, b) => b.epoch - a.epoch || compareStrings(a.holder, b.holder))
          .map(holderView);
        return {
          slot,
          index: parseSlot(slot)?.index ?? 0,
          ...(winner === undefined || v === undefined
            ? {}
            : { holder: { ...holderView(winner), valid: v.valid, reason: v.reason } }),
          contenders,
          decision: decision.reasons.find((r) => r.slot === slot)?.reason ?? 'not considered',
          candidates: (sp?.candidates ?? []).map(nameOf),
          ...(sp?.summary === undefined ? {} : { summary: sp.summary }),
          rejections: [...(sp?.rejections ?? [])]
            .sort((a, b) => compareStrings(a.node, b.node))
            .map((r) => ({ node: r.node, reason: r.reason })),
        };
      });

    let problem: string | undefined;
    if (pod === undefined) {
      const why = skipped.find((s) => s.key === `pod/${podName}`);
      problem =
        why === undefined ? 'no such pod (never applied, or deleted)' : `not scheduled: ${why.reason}`;
    }
    return {
      pod: podName,
      ...(problem === undefined ? {} : { problem }),
      replicas: pod?.replicas ?? 0,
      slots,
      ignored: ignored
        .filter((i) => typeof i.lease.slot === 'string' && ofPod(i.lease.slot))
        .map((i) => ({ slot: i.lease.slot, holder: String(i.lease.holder), reason: i.reason })),
    };
  }
}
