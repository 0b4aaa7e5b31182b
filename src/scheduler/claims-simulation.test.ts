// Simulated peers, each deciding on its own (possibly stale) view over simulated time: availability and convergence.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../shared/clock.ts';
import type { ClusterView, Lease, NodeInfo, PodInfo } from './cluster-view.ts';
import {
  claimLease,
  compareLeases,
  decideClaims,
  leaseValid,
  releaseLease,
  resolveAll,
} from './lease-claims.ts';
import { planPlacement } from './placement.ts';
import { slotsOf } from './slots.ts';
import { fakeSign, fakeVerifier, node, nodeArb, pod, podsArb } from './view-fixtures.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

interface Peer {
  readonly node: NodeInfo;
  /** This peer's replica of the lease map: one entry per (slot, holder). */
  readonly store: Map<string, Lease>;
  readonly presence: Map<string, number>;
  readonly running: Set<string>;
  presenceSince: number;
  up: boolean;
}

function write(store: Map<string, Lease>, lease: Lease): void {
  const key = `${lease.slot}\0${lease.holder}`;
  const cur = store.get(key);
  if (cur === undefined || compareLeases(lease, cur) < 0) store.set(key, lease);
}

/** Many peers in one process; groups model partitions (a peer only hears from its own group). */
class SimCluster {
  readonly clock = new ManualClock();
  readonly peers: Peer[];
  pods: PodInfo[];
  forgotten = new Set<string>();

  constructor(nodes: readonly NodeInfo[], pods: readonly PodInfo[]) {
    this.pods = [...pods];
    const now = this.clock.now();
    this.peers = nodes.map((n) => ({
      node: n,
      store: new Map(),
      presence: new Map(),
      running: new Set(),
      presenceSince: now,
      up: true,
    }));
  }

  peer(name: string): Peer {
    const p = this.peers.find((x) => x.node.name === name);
    assert.ok(p, `no peer ${name}`);
    return p;
  }

  viewOf(p: Peer): ClusterView {
    return {
      nodes: this.peers.map((x) => x.node),
      pods: this.pods,
      leases: [...p.store.values()],
      presence: p.presence,
      presenceSince: p.presenceSince,
      forgotten: this.forgotten,
    };
  }

  crash(name: string): void {
    const p = this.peer(name);
    p.up = false;
    p.running.clear();
  }

  restart(name: string): void {
    const p = this.peer(name);
    p.up = true;
    p.presenceSince = this.clock.now();
  }

  /** Which group a peer is in (default: one group, everyone connected). */
  private groupOf = (_p: Peer): number => 0;

  partition(groups: readonly (readonly string[])[] | undefined): void {
    if (groups === undefined) {
      this.groupOf = () => 0;
      return;
    }
    this.groupOf = (p) => groups.findIndex((g) => g.includes(p.node.name));
  }

  /** Heartbeats and document sync within each group; `hears(from, to)` can drop single deliveries. */
  exchange(hears: (from: Peer, to: Peer) => boolean = () => true): void {
    const now = this.clock.now();
    const up = this.peers.filter((p) => p.up);
    const snapshot = new Map(up.map((p) => [p, [...p.store.values()]]));
    for (const to of up) {
      for (const from of up) {
        if (from === to || this.groupOf(from) !== this.groupOf(to) || !hears(from, to)) continue;
        to.presence.set(from.node.peerId, now);
        for (const l of snapshot.get(from) ?? []) write(to.store, l);
      }
    }
  }

  /** Every live peer decides on its own view and acts on its decision. */
  decideAll(): void {
    const now = this.clock.now();
    for (const p of this.peers.filter((x) => x.up)) {
      const self = p.node.peerId;
      const d = decideClaims(self, this.viewOf(p), now, { verifier: fakeVerifier, running: [...p.running] });
      for (const c of d.claim) {
        write(p.store, fakeSign(claimLease(c, self, now)));
        p.running.add(c.slot);
      }
      for (const slot of d.release) {
        const own = p.store.get(`${slot}\0${self}`);
        if (own !== undefined) write(p.store, fakeSign(releaseLease(own, now)));
      }
      for (const slot of d.stop) p.running.delete(slot);
      for (const h of d.hold) p.running.add(h.slot);
    }
  }

  round(stepMs: number, hears?: (from: Peer, to: Peer) => boolean): void {
    this.clock.advance(stepMs);
    this.exchange(hears);
    this.decideAll();
  }

  runners(slot: string): string[] {
    return this.peers
      .filter((p) => p.up && p.running.has(slot))
      .map((p) => p.node.name)
      .sort();
  }

  /** Winner per slot as peer `name` sees it, with its epoch. */
  winner(name: string, slot: string): Lease | undefined {
    return resolveAll([...this.peer(name).store.values()]).get(slot);
  }
}

function holderName(sim: SimCluster, lease: Lease | undefined): string | undefined {
  return sim.peers.find((p) => p.node.peerId === lease?.holder)?.node.name;
}

describe('availability over simulated time', () => {
  const nodes = ['a', 'b', 'c'].map((n) => node(n));

  function settled(pods: PodInfo[]): { sim: SimCluster; first: string } {
    const sim = new SimCluster(nodes, pods);
    for (let i = 0; i < 3; i++) sim.round(1_000);
    const [first, ...more] = sim.runners('pod/web#0');
    assert.ok(first !== undefined && more.length === 0, `one runner, got ${sim.runners('pod/web#0')}`);
    return { sim, first };
  }

  it('ha: when the holder is missing for haGrace, the next candidate claims with the next epoch', () => {
    const { sim, first } = settled([pod('web', { availability: 'ha', haGraceMs: 5_000 })]);
    const before = sim.winner(first, 'pod/web#0');
    sim.crash(first);
    const lastSeen = sim.clock.now();
    let movedAt: number | undefined;
    for (let i = 0; i < 10 && movedAt === undefined; i++) {
      sim.round(1_000);
      if (sim.runners('pod/web#0').length > 0) movedAt = sim.clock.now();
    }
    assert.ok(movedAt !== undefined, 'the slot moved');
    assert.ok(
      movedAt - lastSeen > 5_000 && movedAt - lastSeen <= 7_000,
      `moved after ${movedAt - lastSeen}ms`,
    );
    const [next] = sim.runners('pod/web#0');
    assert.ok(next !== undefined && next !== first);
    assert.equal(sim.winner(next, 'pod/web#0')?.epoch, (before?.epoch ?? 0) + 1);
  });

  it('ha: a partitioned holder keeps running (AP), and after the heal exactly one copy survives', () => {
    const { sim, first } = settled([pod('web', { availability: 'ha', haGraceMs: 5_000 })]);
    const others = nodes.map((n) => n.name).filter((n) => n !== first);
    sim.partition([[first], others]);
    for (let i = 0; i < 8; i++) sim.round(1_000);
    const during = sim.runners('pod/web#0');
    assert.equal(during.length, 2, `both sides run it during the partition: ${during}`);
    assert.ok(during.includes(first));
    sim.partition(undefined);
    sim.round(1_000);
    const after = sim.runners('pod/web#0');
    assert.equal(after.length, 1);
    assert.notEqual(after[0], first, 'the higher epoch (the other side) survives');
    for (const p of sim.peers) assert.equal(holderName(sim, sim.winner(p.node.name, 'pod/web#0')), after[0]);
  });

  it('best-effort: weeks of absence move nothing until deadAfter (7 days)', () => {
    const { sim, first } = settled([pod('web', { availability: 'best-effort' })]);
    sim.crash(first);
    const lastSeen = sim.clock.now();
    for (let t = 0; t < 7 * DAY - HOUR; t += HOUR) {
      sim.round(HOUR);
      assert.deepEqual(
        sim.runners('pod/web#0'),
        [],
        `nothing moves at ${(sim.clock.now() - lastSeen) / HOUR}h`,
      );
    }
    for (let i = 0; i < 3; i++) sim.round(HOUR);
    assert.equal(sim.runners('pod/web#0').length, 1, 'moved once the holder counts as dead');
    assert.ok(sim.clock.now() - lastSeen > 7 * DAY);
  });

  it('best-effort: `meshd node forget` moves it at once', () => {
    const { sim, first } = settled([pod('web', { availability: 'best-effort' })]);
    sim.crash(first);
    sim.round(HOUR);
    assert.deepEqual(sim.runners('pod/web#0'), []);
    sim.forgotten = new Set([sim.peer(first).node.peerId]);
    sim.round(1_000);
    assert.equal(sim.runners('pod/web#0').length, 1);
  });

  it('pinned: never moves, however long its host is gone; the host resumes with the same epoch', () => {
    const sim = new SimCluster(nodes, [pod('web', { placement: { host: 'b' }, availability: 'ha' })]);
    for (let i = 0; i < 3; i++) sim.round(1_000);
    assert.deepEqual(sim.runners('pod/web#0'), ['b']);
    const epoch = sim.winner('b', 'pod/web#0')?.epoch;
    sim.crash('b');
    for (let d = 0; d < 30; d++) sim.round(DAY);
    assert.deepEqual(sim.runners('pod/web#0'), []);
    for (const name of ['a', 'c']) assert.equal(holderName(sim, sim.winner(name, 'pod/web#0')), 'b');
    sim.restart('b');
    sim.round(1_000);
    assert.deepEqual(sim.runners('pod/web#0'), ['b']);
    assert.equal(sim.winner('b', 'pod/web#0')?.epoch, epoch);
  });

  it('a restarted peer that has not heard anyone yet takes nothing over', () => {
    const { sim, first } = settled([pod('web', { availability: 'ha' })]);
    const other = nodes.map((n) => n.name).find((n) => n !== first) ?? '';
    sim.crash(other);
    for (let h = 0; h < 24; h++) sim.round(HOUR);
    sim.restart(other);
    // It has the document (its disk) and day-old presence, but has heard nobody since it restarted:
    // the holder is not "missing" to it.
    const p = sim.peer(other);
    const d = decideClaims(p.node.peerId, sim.viewOf(p), sim.clock.now(), { verifier: fakeVerifier });
    assert.deepEqual(d.claim, []);
    assert.equal(d.reasons[0]?.reason, `held by ${first} (epoch 1)`);
    sim.decideAll();
    assert.deepEqual(sim.runners('pod/web#0'), [first]);
  });
});

describe('convergence of independent deciders', () => {
  it('property: N peers on stale, partitioned views converge to exactly one holder per slot after merge', () => {
    const scenario = fc.record({
      nodes: nodeArb.filter((ns) => ns.length >= 2),
      pods: podsArb,
      chaos: fc.array(
        fc.record({
          // Partition: each node's side (0 or 1); `drops` loses single deliveries (stale views).
          sides: fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 7, maxLength: 7 }),
          drops: fc.array(fc.boolean(), { minLength: 49, maxLength: 49 }),
          stepMs: fc.constantFrom(1_000, 2_000, 4_000),
        }),
        { minLength: 1, maxLength: 12 },
      ),
      crash: fc.option(fc.nat(6), { nil: undefined }),
    });
    fc.assert(
      fc.property(scenario, ({ nodes, pods, chaos, crash }) => {
        const sim = new SimCluster(nodes, pods);
        const crashed = crash === undefined ? undefined : sim.peers[crash % sim.peers.length];
        chaos.forEach(({ sides, drops, stepMs }, round) => {
          if (round === Math.floor(chaos.length / 2) && crashed !== undefined) sim.crash(crashed.node.name);
          sim.partition(
            [0, 1].map((side) => sim.peers.filter((_, i) => sides[i] === side).map((p) => p.node.name)),
          );
          const index = (p: { node: NodeInfo }) =>
            sim.peers.findIndex((x) => x.node.peerId === p.node.peerId);
          sim.round(stepMs, (from, to) => drops[index(from) * 7 + index(to)] !== true);
        });

        // Heal: full connectivity until nothing changes (bounded).
        sim.partition(undefined);
        let stable = false;
        for (let i = 0; i < 15 && !stable; i++) {
          const before = JSON.stringify(
            sim.peers.map((p) => [[...p.store.keys()].sort(), [...p.running].sort()]),
          );
          sim.round(1_000);
          sim.exchange();
          const after = JSON.stringify(
            sim.peers.map((p) => [[...p.store.keys()].sort(), [...p.running].sort()]),
          );
          stable = before === after && i > 8;
        }

        assert.ok(stable, 'the lease map and what runs stop changing after the heal');

        const live = sim.peers.filter((p) => p.up);
        const reference = live[0];
        assert.ok(reference);
        const now = sim.clock.now();
        const presence = new Map(reference.presence).set(reference.node.peerId, now);
        const view = { ...sim.viewOf(reference), presence };
        const winners = resolveAll(view.leases);
        const podByName = new Map(pods.map((p) => [p.name, p]));
        const valid = new Map<string, string>();
        for (const [slot, w] of winners) {
          const p = podByName.get(slot.slice(4, slot.lastIndexOf('#')));
          if (leaseValid(w, view, p, now).valid) valid.set(slot, w.holder);
        }
        const plan = planPlacement(view, now, valid);
        for (const p of live) {
          // Every peer computes the same winner for every slot...
          assert.deepEqual(resolveAll([...p.store.values()]), winners);
          // ...and has nothing left to claim or stop.
          const d = decideClaims(p.node.peerId, sim.viewOf(p), now, {
            verifier: fakeVerifier,
            running: [...p.running],
          });
          assert.deepEqual(
            [d.claim, d.stop, d.release],
            [[], [], []],
            `${p.node.name} still acts after the heal`,
          );
        }
        for (const p of pods) {
          for (const slot of slotsOf(p)) {
            const runners = sim.runners(slot);
            const winner = winners.get(slot);
            if (winner !== undefined && valid.has(slot)) {
              const holder = sim.peers.find((x) => x.node.peerId === winner.holder);
              // Exactly one copy, on the winner; none while a best-effort or pinned holder is down.
              assert.deepEqual(runners, holder?.up === true ? [holder.node.name] : [], `${slot} runners`);
            } else {
              assert.deepEqual(runners, [], `${slot} has no valid lease but runs on ${runners}`);
              assert.equal(
                plan.bySlot.get(slot)?.assigned,
                undefined,
                `${slot} is pending though a node fits`,
              );
            }
          }
        }
      }),
      { numRuns: 100 },
    );
  });
});
