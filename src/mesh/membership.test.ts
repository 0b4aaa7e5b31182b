// Removing a peer and rotating the mesh key between real MeshNodes on loopback: who gets the key, who is out.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newPsk, peerGroup, type TestPeer } from '../../test/support/mesh-peers.ts';
import { waitFor } from '../../test/support/wait-for.ts';
import type { MeshKey } from './mesh-key.ts';
import type { EpochMismatch } from './pnet-protector.ts';

const meshId = 'mesh-members';

/** Every key a peer stored (what the daemon writes to its data dir), and every epoch mismatch it saw. */
function membershipProbe() {
  const stored: MeshKey[] = [];
  const mismatches: EpochMismatch[] = [];
  return {
    stored,
    mismatches,
    hooks: {
      persistKey: (k: MeshKey) => {
        stored.push(k);
      },
      onEpochMismatch: (m: EpochMismatch) => {
        mismatches.push(m);
      },
    },
  };
}

const connectedTo = (p: TestPeer, other: TestPeer) =>
  p.node.peers().some((v) => v.peerId === other.node.peerId && v.connected);

/** Peer `a`, and one peer per other name bootstrapped from it, all on key `psk`, once a sees them all. */
async function star<N extends string>(
  start: ReturnType<typeof peerGroup>['start'],
  psk: Uint8Array,
  names: N[],
): Promise<Record<'a' | N, TestPeer>> {
  const a = await start({ name: 'a', psk, meshId });
  const peers = { a } as Record<'a' | N, TestPeer>;
  for (const name of names) peers[name] = await start({ name, psk, meshId, bootstrap: a.node.addrs() });
  await waitFor(() => names.every((n) => connectedTo(a, peers[n])), {
    timeoutMs: 10_000,
    what: 'the mesh to form',
  });
  return peers;
}

test('a removed peer is cut off; the rest switch to a new key, relayed past direct links', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  const probes = { a: membershipProbe(), b: membershipProbe(), c: membershipProbe(), x: membershipProbe() };
  const a = await start({ name: 'a', psk, meshId, membership: probes.a.hooks });
  const b = await start({ name: 'b', psk, meshId, bootstrap: a.node.addrs(), membership: probes.b.hooks });
  // c knows only b: it must get the rotation relayed by b
  const c = await start({ name: 'c', psk, meshId, bootstrap: b.node.addrs(), membership: probes.c.hooks });
  const x = await start({ name: 'x', psk, meshId, bootstrap: a.node.addrs(), membership: probes.x.hooks });
  await waitFor(() => connectedTo(a, b) && connectedTo(b, c) && connectedTo(a, x), {
    timeoutMs: 10_000,
    what: 'the mesh to form',
  });
  assert.equal(connectedTo(a, c), false, 'the test needs c to hear a only through b');

  const { key, sentTo } = await a.node.rotateKey([x.node.peerId]);
  assert.equal(key.epoch, 1);
  assert.deepEqual(sentTo.sort(), [b.node.peerId].sort(), 'the removed peer is not sent the key');
  assert.deepEqual(probes.a.stored, [key], 'the key is stored before the node switches to it');
  await waitFor(() => b.node.currentKey().epoch === 1 && c.node.currentKey().epoch === 1, {
    timeoutMs: 10_000,
    what: 'b and c to switch to epoch 1',
  });
  for (const p of [b, c]) assert.deepEqual(p.node.currentKey().psk, key.psk);
  assert.equal(probes.c.stored.length, 1, 'c stored the relayed key once');
  assert.equal(x.node.currentKey().epoch, 0, 'the removed peer never sees the new key');
  await waitFor(() => !connectedTo(a, x), { timeoutMs: 10_000, what: 'a to close the removed peer' });

  // x tries to come back with what it holds: refused by peer id at a, refused by key epoch everywhere
  await assert.rejects(x.node.dial(a.node.addrs()[0] ?? ''));
  await assert.rejects(x.node.dial(b.node.addrs()[0] ?? ''));
  await waitFor(() => probes.x.mismatches.some((m) => m.remoteEpoch === 1 && m.localEpoch === 0), {
    timeoutMs: 5000,
    what: 'x to learn its key is stale',
  });
  assert.equal(connectedTo(b, x), false);

  // a brand-new peer with the old key (an old token) is refused as stale; with the new key it joins
  const late = await start({ name: 'late', psk, meshId, membership: probes.x.hooks });
  await assert.rejects(late.node.dial(b.node.addrs()[0] ?? ''), /stale/);
  const fresh = await start({ name: 'fresh', psk: key.psk, keyEpoch: 1, meshId });
  await fresh.node.dial(b.node.addrs()[0] ?? '');
  await waitFor(() => connectedTo(b, fresh), { timeoutMs: 5000, what: 'b to list the fresh peer' });
});

test('a peer offline during the rotation comes back with the current key (what `meshd join` gives it)', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  const { a, b, x } = await star(start, psk, ['b', 'x']);
  const bKey = b.key;
  const bListen = b.node.addrs();
  await b.node.stop();
  const { key } = await a.node.rotateKey([x.node.peerId]);

  // b restarts with the old key: refused, and it is told it is the stale one
  const probe = membershipProbe();
  const stale = await start({ name: 'b', psk, meshId, key: bKey, listen: bListen, membership: probe.hooks });
  await assert.rejects(stale.node.dial(a.node.addrs()[0] ?? ''), /stale/);
  assert.ok(
    probe.mismatches.some((m) => m.localEpoch === 0 && m.remoteEpoch === 1 && m.direction === 'outbound'),
  );
  await stale.node.stop();

  // same identity, current key: back in, and a concurrent rotation does not undo the removal
  const back = await start({
    name: 'b',
    psk: key.psk,
    keyEpoch: key.epoch,
    meshId,
    key: bKey,
    listen: bListen,
  });
  await back.node.dial(a.node.addrs()[0] ?? '');
  assert.equal(back.node.peerId, b.node.peerId);
  await waitFor(() => connectedTo(a, back), { timeoutMs: 5000, what: 'a to list b again' });
  assert.equal(a.node.isDenied(x.node.peerId), true);
});

test('two members removing two machines at once converge on one key that neither removed machine holds', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  const { a, b, c, x, y } = await star(start, psk, ['b', 'c', 'x', 'y']);
  await Promise.all([a.node.rotateKey([x.node.peerId]), b.node.rotateKey([y.node.peerId])]);
  // Each rotation went out before its author knew of the other removal, so the winning epoch-1 key may
  // have reached the other removed peer: the members must end on a key neither removed peer holds.
  const hex = (p: TestPeer) => Buffer.from(p.node.currentKey().psk).toString('hex');
  await waitFor(
    () =>
      hex(a) === hex(b) &&
      hex(b) === hex(c) &&
      hex(x) !== hex(a) &&
      hex(y) !== hex(a) &&
      [a, b, c].every((p) => p.node.isDenied(x.node.peerId) && p.node.isDenied(y.node.peerId)),
    { timeoutMs: 15_000, what: 'a, b and c to settle on one key that neither x nor y holds, refusing both' },
  );
  assert.ok(a.node.currentKey().epoch >= 1);
});
