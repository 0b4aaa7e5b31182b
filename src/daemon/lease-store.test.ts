// Tests of leases in the document: real Ed25519 signatures, own-key-only writes, and merges that keep every claim.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import * as Y from 'yjs';
import { seededLeaseSigners } from '../../test/support/test-keys.ts';
import { claimLease, releaseLease, resolveAll } from '../scheduler/lease-claims.ts';
import { admitLeases, leaseSigningPayload } from '../scheduler/lease-signature.ts';
import {
  LeaseStore,
  leaseKey,
  leasesMapName,
  peerIdLeaseVerifier,
  type SyncLeaseSigner,
  signLeaseNow,
} from './lease-store.ts';

const signers = await seededLeaseSigners([21, 22, 23]);
const [s1, s2, s3] = signers as [SyncLeaseSigner, SyncLeaseSigner, SyncLeaseSigner];
const SLOT = 'pod/web#0';

function exchange(a: Y.Doc, b: Y.Doc): void {
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)));
  Y.applyUpdate(a, Y.encodeStateAsUpdate(b, Y.encodeStateVector(a)));
}

test('signatures: a lease verifies for its holder only, and any changed field breaks it', () => {
  const verifier = peerIdLeaseVerifier();
  const lease = signLeaseNow({ slot: SLOT, holder: s1.peerId, epoch: 3, claimedAt: 1000, rank: 1 }, s1);
  assert.equal(admitLeases([lease], verifier).admitted.length, 1);
  for (const tampered of [
    { ...lease, epoch: 4 },
    { ...lease, rank: 0 },
    { ...lease, releasedAt: 5 },
    { ...lease, holder: s2.peerId },
    { ...lease, slot: 'pod/web#1' },
  ]) {
    const { ignored } = admitLeases([tampered], verifier);
    assert.match(ignored[0]?.reason ?? '', /signature does not verify for holder/);
  }
  // A holder that is not an Ed25519 peer id at all is refused, not thrown on.
  assert.equal(verifier.verify('not-a-peer-id', leaseSigningPayload(lease), new Uint8Array(64)), false);
  // The remembered verdict is the same as a fresh one.
  assert.equal(admitLeases([{ ...lease, epoch: 4 }], verifier).admitted.length, 0);
  assert.throws(() => signLeaseNow({ slot: SLOT, holder: s2.peerId, epoch: 1, claimedAt: 0 }, s1), {
    code: 'E_LEASE_SIGNER',
  });
});

test('write: own leases only, each only when it beats the stored entry, one update per batch', () => {
  const doc = new Y.Doc();
  const store = new LeaseStore(doc, s1, peerIdLeaseVerifier());
  const updates: Uint8Array[] = [];
  doc.on('update', (u: Uint8Array) => updates.push(u));
  const claim = store.sign(claimLease({ slot: SLOT, epoch: 2, rank: 0 }, s1.peerId, 1000));
  const other = store.sign(claimLease({ slot: 'pod/web#1', epoch: 1 }, s1.peerId, 1000));
  assert.equal(store.writeAll([claim, other]), 2);
  assert.equal(updates.length, 1, 'one transaction');
  assert.equal(store.write(claim), false, 'the same lease again writes nothing');
  const stale = store.sign(claimLease({ slot: SLOT, epoch: 1 }, s1.peerId, 2000));
  assert.equal(store.write(stale), false, 'a lower epoch never overwrites a higher one');
  assert.equal(store.own(SLOT)?.epoch, 2);
  const release = store.sign(releaseLease(claim, 3000));
  assert.equal(store.write(release), true, 'a release beats the claim it ends');
  assert.equal(store.own(SLOT)?.releasedAt, 3000);
  assert.equal(updates.length, 2);

  const foreign = signLeaseNow(claimLease({ slot: SLOT, epoch: 9 }, s2.peerId, 0), s2);
  assert.throws(() => store.write(foreign), { code: 'E_LEASE_NOT_OWN' });
  assert.deepEqual(
    store.all().map((l) => [l.slot, l.epoch, l.releasedAt]),
    [
      [SLOT, 2, 3000],
      ['pod/web#1', 1, undefined],
    ],
  );
});

test('a stored lease is read as the same object every time, so its signature is checked once', () => {
  const doc = new Y.Doc();
  const base = peerIdLeaseVerifier();
  let checks = 0;
  const counting = {
    verdicts: base.verdicts ?? new WeakMap(),
    verify: (h: string, p: Uint8Array, sig: Uint8Array) => {
      checks++;
      return base.verify(h, p, sig);
    },
  };
  const store = new LeaseStore(doc, s1, counting);
  store.writeAll([store.sign(claimLease({ slot: SLOT, epoch: 1, rank: 0 }, s1.peerId, 1000))]);
  const first = store.all();
  for (let i = 0; i < 5; i++) assert.equal(admitLeases(store.all(), counting).admitted.length, 1);
  assert.equal(store.all()[0], first[0], 'the same lease object');
  assert.equal(checks, 1, 'one signature check for six admissions');
  // a forged copy under the same key is a new stored value: checked (and refused) on its own
  const forged = { ...(first[0] as object), epoch: 9 };
  doc.getMap(leasesMapName).set(leaseKey(SLOT, s1.peerId), forged);
  assert.equal(admitLeases(store.all(), counting).admitted.length, 0);
  assert.equal(checks, 2);
});

test('concurrent claims of one slot by two peers both survive the merge, and every peer picks the same winner', () => {
  const d1 = new Y.Doc();
  const d2 = new Y.Doc();
  const a = new LeaseStore(d1, s1, peerIdLeaseVerifier());
  const b = new LeaseStore(d2, s2, peerIdLeaseVerifier());
  a.write(a.sign(claimLease({ slot: SLOT, epoch: 1, rank: 1 }, s1.peerId, 10)));
  b.write(b.sign(claimLease({ slot: SLOT, epoch: 1, rank: 0 }, s2.peerId, 20)));
  exchange(d1, d2);
  assert.equal(a.all().length, 2);
  assert.deepEqual(a.all(), b.all());
  assert.equal(resolveAll(a.all()).get(SLOT)?.holder, s2.peerId, 'the better rank wins the tie on epoch');
});

test('onChange tells the store’s own writes from remote ones; raw junk is reported, not returned', () => {
  const d1 = new Y.Doc();
  const d2 = new Y.Doc();
  const a = new LeaseStore(d1, s1, peerIdLeaseVerifier());
  const b = new LeaseStore(d2, s2, peerIdLeaseVerifier());
  const seen: boolean[] = [];
  a.onChange((local) => seen.push(local));
  a.write(a.sign(claimLease({ slot: SLOT, epoch: 1 }, s1.peerId, 10)));
  b.write(b.sign(claimLease({ slot: 'pod/api#0', epoch: 1 }, s2.peerId, 10)));
  exchange(d1, d2);
  d1.getMap('other').set('x', 1);
  assert.deepEqual(seen, [true, false]);

  const misfiled = signLeaseNow(claimLease({ slot: SLOT, epoch: 5 }, s3.peerId, 0), s3);
  d1.transact(() => {
    const map = d1.getMap<unknown>(leasesMapName);
    map.set('junk', 42);
    map.set('half', { slot: 3 });
    map.set(leaseKey(SLOT, s1.peerId), { ...misfiled, holder: s1.peerId });
    map.set(leaseKey(SLOT, s2.peerId), misfiled);
  });
  assert.deepEqual(
    a.rejected().map((r) => r.key),
    ['leases/half', 'leases/junk', `leases/${leaseKey(SLOT, s2.peerId)}`],
  );
  assert.match(a.rejected()[2]?.reason ?? '', /wrong key/);
  // A forgery over this peer's own key is not taken for its lease, so its real claim can be written back.
  assert.equal(a.own(SLOT), undefined);
  assert.equal(a.write(a.sign(claimLease({ slot: SLOT, epoch: 1 }, s1.peerId, 30))), true);
});

test('property: any interleaving of claims, releases and merges ends with the same leases on every peer', () => {
  type Op =
    | { kind: 'claim' | 'release'; peer: number; slot: number }
    | { kind: 'sync'; from: number; to: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({
      kind: fc.constantFrom('claim' as const, 'release' as const),
      peer: fc.nat(2),
      slot: fc.nat(1),
    }),
    fc.record({ kind: fc.constant('sync' as const), from: fc.nat(2), to: fc.nat(2) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
      const docs = signers.map(() => new Y.Doc());
      const stores = signers.map((s, i) => new LeaseStore(docs[i] as Y.Doc, s, peerIdLeaseVerifier()));
      let now = 0;
      const highest = new Map<string, number>();
      for (const o of ops) {
        now += 1;
        if (o.kind === 'sync') {
          const [from, to] = [docs[o.from], docs[o.to]];
          if (from !== undefined && to !== undefined && from !== to)
            Y.applyUpdate(to, Y.encodeStateAsUpdate(from, Y.encodeStateVector(to)));
          continue;
        }
        const store = stores[o.peer] as LeaseStore;
        const slot = `pod/web#${o.slot}`;
        const seen = Math.max(
          0,
          ...store
            .all()
            .filter((l) => l.slot === slot)
            .map((l) => l.epoch),
        );
        const own = store.own(slot);
        if (o.kind === 'claim') {
          store.write(store.sign(claimLease({ slot, epoch: seen + 1 }, store.self, now)));
          highest.set(slot, Math.max(highest.get(slot) ?? 0, seen + 1));
        } else if (own !== undefined && own.releasedAt === undefined)
          store.write(store.sign(releaseLease(own, now)));
      }
      for (const a of docs) for (const b of docs) if (a !== b) exchange(a, b);
      const first = JSON.stringify(stores[0]?.all());
      for (const s of stores) assert.equal(JSON.stringify(s.all()), first);
      // The highest epoch ever claimed for a slot survives every merge order.
      for (const [slot, epoch] of highest)
        assert.equal(
          Math.max(...(stores[0]?.all() ?? []).filter((l) => l.slot === slot).map((l) => l.epoch)),
          epoch,
        );
    }),
    { numRuns: 60 },
  );
});
