// Tests for lease resolution (a total order every peer agrees on), lease validity and decideClaims.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Lease } from './cluster-view.ts';
import {
  claimLease,
  compareLeases,
  decideClaims,
  fencingEnv,
  leaseValid,
  releaseLease,
  resolveAll,
  resolveLease,
} from './lease-claims.ts';
import { planPlacement, preferenceRank } from './placement.ts';
import {
  fakeSign,
  fakeVerifier,
  GI,
  lease,
  MI,
  node,
  peerOf,
  pod,
  shuffled,
  T0,
  view,
} from './view-fixtures.ts';

const opts = { verifier: fakeVerifier };

const leaseArb: fc.Arbitrary<Lease> = fc
  .record({
    slot: fc.constantFrom('pod/web#0', 'pod/web#1', 'pod/db#0'),
    holder: fc.constantFrom('a', 'b', 'c', 'd'),
    epoch: fc.integer({ min: 1, max: 4 }),
    claimedAt: fc.integer({ min: 0, max: 3 }),
    rank: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
    releasedAt: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
  })
  .map(({ holder, rank, releasedAt, ...r }) =>
    fakeSign({
      ...r,
      holder: peerOf(holder),
      ...(rank === undefined ? {} : { rank }),
      ...(releasedAt === undefined ? {} : { releasedAt }),
    }),
  );

const sign = (n: number) => (n < 0 ? -1 : n > 0 ? 1 : 0);

/** A replica of the lease store: one entry per (slot, holder), merged by keeping the entry that wins. */
function mergeInto(store: Map<string, Lease>, leases: Iterable<Lease>): void {
  for (const l of leases) {
    const key = `${l.slot}\0${l.holder}`;
    const cur = store.get(key);
    if (cur === undefined || compareLeases(l, cur) < 0) store.set(key, l);
  }
}

describe('resolveLease', () => {
  it('prefers the higher epoch, then the better rank, then the lower peer id', () => {
    const slot = 'pod/web#0';
    assert.equal(
      resolveLease([lease(slot, 'a', 1, { rank: 0 }), lease(slot, 'b', 2, { rank: 3 })])?.holder,
      peerOf('b'),
    );
    assert.equal(
      resolveLease([lease(slot, 'a', 2, { rank: 1 }), lease(slot, 'b', 2, { rank: 0 })])?.holder,
      peerOf('b'),
    );
    assert.equal(
      resolveLease([lease(slot, 'b', 2, { rank: 1 }), lease(slot, 'a', 2, { rank: 1 })])?.holder,
      peerOf('a'),
    );
    assert.equal(resolveLease([lease(slot, 'a', 2), lease(slot, 'b', 2, { rank: 5 })])?.holder, peerOf('b'));
    assert.equal(resolveLease([]), undefined);
  });

  it('lets a release supersede the claim it ends', () => {
    const claim = lease('pod/web#0', 'a', 3, { rank: 0 });
    const release = fakeSign(releaseLease(claim, T0 + 1));
    assert.equal(resolveLease([claim, release]), release);
  });

  it('property: compareLeases is a total order (antisymmetric, transitive, 0 only for equal leases)', () => {
    fc.assert(
      fc.property(leaseArb, leaseArb, leaseArb, (a, b, c) => {
        assert.equal(sign(compareLeases(a, b)) + sign(compareLeases(b, a)), 0);
        assert.equal(compareLeases(a, b) === 0, JSON.stringify(a) === JSON.stringify(b));
        if (compareLeases(a, b) <= 0 && compareLeases(b, c) <= 0) assert.ok(compareLeases(a, c) <= 0);
      }),
      { numRuns: 1000 },
    );
  });

  it('property: for any concurrent claims and any merge order, every peer computes the same winner per slot', () => {
    fc.assert(
      fc.property(
        fc.array(leaseArb, { minLength: 1, maxLength: 30 }),
        fc.array(
          fc.tuple(fc.array(fc.nat(), { minLength: 1, maxLength: 10 }), fc.integer({ min: 1, max: 5 })),
          {
            minLength: 2,
            maxLength: 5,
          },
        ),
        (leases, peers) => {
          const everything = new Map<string, Lease>();
          mergeInto(everything, leases);
          const expected = resolveAll([...everything.values()]);
          for (const [seeds, batches] of peers) {
            // Each peer receives the claims in its own order, in several merges.
            const order = shuffled(leases, seeds);
            const store = new Map<string, Lease>();
            const size = Math.ceil(order.length / batches);
            for (let i = 0; i < order.length; i += size) mergeInto(store, order.slice(i, i + size));
            const got = resolveAll([...store.values()]);
            assert.deepEqual([...got.entries()].sort(), [...expected.entries()].sort());
            // And it is the same winner as resolving the raw, unmerged set.
            for (const [slot, winner] of got) {
              assert.deepEqual(winner, resolveLease(leases.filter((l) => l.slot === slot)));
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('leaseValid', () => {
  const a = node('a');
  const b = node('b', { labels: { zone: 'eu' } });
  const nodes = [a, b];

  it('keeps an ha lease while the holder is within its grace, and drops it after', () => {
    const p = pod('web', { haGraceMs: 5_000 });
    const l = lease('pod/web#0', 'a', 1);
    const at = (ago: number) =>
      view({ nodes, pods: [p], leases: [l], presence: new Map([[a.peerId, T0 - ago]]) });
    assert.deepEqual(leaseValid(l, at(0), p, T0), { valid: true, reason: 'held by a (epoch 1)' });
    assert.equal(leaseValid(l, at(4_000), p, T0).valid, true);
    assert.deepEqual(leaseValid(l, at(6_000), p, T0), {
      valid: false,
      reason: 'holder a missing for 6s (ha grace 5s)',
    });
  });

  it('keeps a best-effort lease through weeks of absence until deadAfter or forget', () => {
    const p = pod('web', { availability: 'best-effort' });
    const l = lease('pod/web#0', 'a', 1);
    const week = 7 * 86_400_000;
    const at = (ago: number) =>
      view({ nodes, pods: [p], leases: [l], presence: new Map([[a.peerId, T0 - ago]]) });
    assert.equal(leaseValid(l, at(week - 1), p, T0).valid, true);
    assert.equal(
      leaseValid(l, at(week + 1), p, T0).reason,
      'holder a is dead: missing for 7d (dead after 7d)',
    );
    const forgotten = { ...at(0), forgotten: new Set([a.peerId]) };
    assert.equal(leaseValid(l, forgotten, p, T0).reason, 'holder a was forgotten (meshd node forget)');
  });

  it('keeps a pinned lease valid for its host forever, and never for another node', () => {
    const p = pod('nas-backup', { placement: { host: 'a' } });
    const gone = view({ nodes, pods: [p], presence: new Map([[a.peerId, T0 - 90 * 86_400_000]]) });
    assert.equal(leaseValid(lease('pod/nas-backup#0', 'a', 1), gone, p, T0).valid, true);
    assert.equal(
      leaseValid(lease('pod/nas-backup#0', 'b', 2), gone, p, T0).reason,
      'pod is pinned to host a; b may not hold it',
    );
  });

  it('drops released leases, deleted pods, scaled-away slots, unknown holders and misfits', () => {
    const p = pod('web', { replicas: 1, placement: { labels: { zone: 'eu' } } });
    const v = view({ nodes, pods: [p] });
    const held = lease('pod/web#0', 'b', 2);
    assert.equal(leaseValid(held, v, p, T0).valid, true);
    assert.equal(leaseValid(fakeSign(releaseLease(held, T0)), v, p, T0).reason, 'released by b (epoch 2)');
    assert.equal(leaseValid(held, v, undefined, T0).reason, 'pod web no longer exists');
    assert.equal(leaseValid(lease('pod/web#1', 'b', 1), v, p, T0).reason, 'pod web has 1 replica(s) now');
    assert.equal(
      leaseValid(lease('pod/web#0', 'zz', 1), v, p, T0).reason,
      'holder peer-zz is not a known node',
    );
    assert.equal(
      leaseValid(lease('pod/web#0', 'a', 1), v, p, T0).reason,
      'holder a no longer fits: label zone=eu missing',
    );
  });

  it('when a holder no longer fits its leases, only the latest claims lose validity', () => {
    const small = node('a', { capacity: { cpu: 4, memoryBytes: 100 * MI } });
    const pods = [
      pod('x', { resources: { cpu: 0.1, memoryBytes: 60 * MI } }),
      pod('y', { resources: { cpu: 0.1, memoryBytes: 60 * MI } }),
    ];
    const lx = lease('pod/x#0', 'a', 1, { claimedAt: T0 - 10 });
    const ly = lease('pod/y#0', 'a', 1, { claimedAt: T0 - 5 });
    const v = view({ nodes: [small], pods, leases: [lx, ly] });
    assert.equal(leaseValid(lx, v, pods[0], T0).valid, true);
    assert.equal(
      leaseValid(ly, v, pods[1], T0).reason,
      'holder a no longer fits: memory exhausted: 40Mi free, 60Mi asked',
    );
  });
});

describe('decideClaims', () => {
  const nodes = ['a', 'b', 'c'].map((n) => node(n));
  const web = pod('web');
  const best = () => planPlacement(view({ nodes, pods: [web] }), T0).bySlot.get('pod/web#0')?.assigned;

  it('has exactly the best live feasible candidate claim an unleased slot, with epoch 1 and its rank', () => {
    const v = view({ nodes, pods: [web] });
    const winner = best();
    assert.ok(winner);
    for (const n of nodes) {
      const d = decideClaims(n.peerId, v, T0, opts);
      if (n.peerId === winner) {
        assert.deepEqual(d.claim, [
          { slot: 'pod/web#0', epoch: 1, rank: preferenceRank(v, web, 'pod/web#0', winner) },
        ]);
        assert.match(
          d.reasons[0]?.reason ?? '',
          /^claim: no lease; this node is the best live feasible candidate/,
        );
      } else {
        assert.deepEqual(d.claim, []);
        assert.match(d.reasons[0]?.reason ?? '', /^no lease; up to [abc]$/);
      }
    }
  });

  it('a cordoned node makes no claim; the next candidate does', () => {
    const winner = best();
    const cordoned = nodes.map((n) => (n.peerId === winner ? { ...n, cordoned: true } : n));
    const v = view({ nodes: cordoned, pods: [web] });
    assert.ok(winner);
    assert.deepEqual(decideClaims(winner, v, T0, opts).claim, []);
    const claimers = nodes.filter((n) => decideClaims(n.peerId, v, T0, opts).claim.length > 0);
    assert.equal(claimers.length, 1);
    assert.notEqual(claimers[0]?.peerId, winner);
  });

  it('a cordoned node keeps what it holds; a draining node releases and stops it', () => {
    const held = lease('pod/web#0', 'a', 4);
    const cordoned = view({ nodes: [node('a', { cordoned: true }), node('b')], pods: [web], leases: [held] });
    const d1 = decideClaims(peerOf('a'), cordoned, T0, { ...opts, running: ['pod/web#0'] });
    assert.deepEqual(d1.hold, [{ slot: 'pod/web#0', epoch: 4 }]);
    assert.deepEqual([d1.release, d1.stop], [[], []]);
    const draining = view({ nodes: [node('a', { draining: true }), node('b')], pods: [web], leases: [held] });
    const d2 = decideClaims(peerOf('a'), draining, T0, { ...opts, running: ['pod/web#0'] });
    assert.deepEqual([d2.release, d2.stop, d2.claim], [['pod/web#0'], ['pod/web#0'], []]);
    // Once the release is merged, b takes over with the next epoch.
    const released = fakeSign(releaseLease(held, T0));
    const after = view({
      nodes: [node('a', { draining: true }), node('b')],
      pods: [web],
      leases: [held, released],
    });
    assert.deepEqual(
      decideClaims(peerOf('b'), after, T0, opts).claim.map((c) => c.epoch),
      [5],
    );
  });

  it('stops the local copy of a slot lost to a better claim', () => {
    const mine = lease('pod/web#0', 'c', 3, { rank: 2 });
    const theirs = lease('pod/web#0', 'b', 3, { rank: 0 });
    const v = view({ nodes, pods: [web], leases: [mine, theirs] });
    const d = decideClaims(peerOf('c'), v, T0, opts);
    assert.deepEqual(d.stop, ['pod/web#0']);
    assert.deepEqual(d.claim, []);
    assert.equal(d.reasons[0]?.reason, 'stop: lost to b; held by b (epoch 3)');
    assert.deepEqual(decideClaims(peerOf('b'), v, T0, opts).hold, [{ slot: 'pod/web#0', epoch: 3 }]);
  });

  it('ignores a forged lease: it neither wins nor bumps the epoch', () => {
    const real = lease('pod/web#0', 'a', 2);
    const forged = fakeSign(
      { slot: 'pod/web#0', holder: peerOf('b'), epoch: 99, claimedAt: T0 },
      peerOf('c'),
    );
    const v = view({ nodes, pods: [web], leases: [forged, real] });
    const d = decideClaims(peerOf('a'), v, T0, opts);
    assert.deepEqual(d.hold, [{ slot: 'pod/web#0', epoch: 2 }]);
    assert.deepEqual(
      d.ignored.map((i) => i.reason),
      [`signature does not verify for holder ${peerOf('b')}`],
    );
    assert.deepEqual(decideClaims(peerOf('b'), v, T0, opts).hold, []);
  });

  it('ignores malformed leases with a reason', () => {
    const bad = { ...lease('pod/web#0', 'a', 1), epoch: 0 };
    const d = decideClaims(peerOf('a'), view({ nodes, pods: [web], leases: [bad] }), T0, opts);
    assert.deepEqual(
      d.ignored.map((i) => i.reason),
      ['malformed lease: epoch must be a positive integer'],
    );
  });

  it('releases and stops slots of a deleted or scaled-down pod', () => {
    const v = view({
      nodes,
      pods: [pod('web', { replicas: 1 })],
      leases: [lease('pod/web#1', 'a', 1), lease('pod/gone#0', 'a', 1)],
    });
    const d = decideClaims(peerOf('a'), v, T0, opts);
    assert.deepEqual(d.release, ['pod/gone#0', 'pod/web#1']);
    assert.deepEqual(d.stop, ['pod/gone#0', 'pod/web#1']);
  });

  it('stops a running slot it has no lease for, when told what runs', () => {
    const v = view({ nodes, pods: [web], leases: [lease('pod/web#0', 'b', 1)] });
    assert.deepEqual(
      decideClaims(peerOf('a'), v, T0, { ...opts, running: ['pod/web#0', 'pod/old#0'] }).stop,
      ['pod/old#0', 'pod/web#0'],
    );
  });

  it('claims over an invalid lease with the next epoch', () => {
    const l = lease('pod/web#0', 'a', 7);
    const v = view({
      nodes,
      pods: [web],
      leases: [l],
      presence: new Map([
        [peerOf('b'), T0],
        [peerOf('c'), T0],
      ]),
    });
    const claims = ['b', 'c'].flatMap((n) => decideClaims(peerOf(n), v, T0, opts).claim);
    assert.deepEqual(
      claims.map((c) => c.epoch),
      [8],
    );
  });

  it('says why a slot is pending', () => {
    const v = view({ nodes, pods: [pod('big', { resources: { cpu: 1, memoryBytes: 64 * GI } })] });
    const d = decideClaims(peerOf('a'), v, T0, opts);
    assert.equal(d.reasons[0]?.reason, 'no lease; no feasible node: memory exhausted on a, b, c');
  });

  it('claimLease and fencingEnv carry the epoch', () => {
    assert.deepEqual(claimLease({ slot: 'pod/web#0', epoch: 3, rank: 1 }, peerOf('a'), T0), {
      slot: 'pod/web#0',
      holder: peerOf('a'),
      epoch: 3,
      claimedAt: T0,
      rank: 1,
    });
    assert.deepEqual(fencingEnv(3), { MESHD_LEASE_EPOCH: '3' });
  });
});
