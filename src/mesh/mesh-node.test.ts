// Real libp2p meshes on loopback: convergence of many peers, catch-up after restart, mesh key, hostile peers.

import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { lpStream } from '@libp2p/utils';
import { multiaddr } from '@multiformats/multiaddr';
import * as Y from 'yjs';
import { hostilePeer } from '../../test/support/hostile-peer.ts';
import { copyDoc, docState, newPsk, peerGroup, type TestPeer } from '../../test/support/mesh-peers.ts';
import { waitFor } from '../../test/support/wait-for.ts';
import { MeshdError } from '../shared/errors.ts';
import { encodeSyncFrame } from './doc-sync.ts';
import type { MeshLibp2p } from './libp2p-node.ts';
import { remoteOrigin } from './mesh-node.ts';
import { meshProtocols } from './mesh-protocols.ts';
import { encodePresence } from './presence.ts';
import { encodePresenceFrame } from './presence-frame.ts';

const meshId = 'mesh-test';
const names = meshProtocols(meshId);

/** A bare libp2p node with the mesh's key and protocols but none of MeshNode's checks (a hostile peer), stopped after the test. */
async function rawPeer(t: TestContext, psk: Uint8Array): Promise<MeshLibp2p> {
  const { libp2p } = await hostilePeer({ meshKey: { psk, epoch: 0 }, meshId });
  t.after(() => libp2p.stop());
  return libp2p;
}

/** Runs `send` and waits until `peer` has rejected one more message than before it. */
async function expectRejection(peer: TestPeer, what: string, send: () => unknown): Promise<void> {
  const before = peer.node.stats().rejectedMessages;
  await send();
  await waitFor(() => peer.node.stats().rejectedMessages > before, {
    timeoutMs: 5000,
    what: `${peer.name} to reject ${what}`,
  });
}

/** Codes of the warnings `peer` logged about peer `from`, in order. */
function warningCodes(peer: TestPeer, from: string): unknown[] {
  return peer.logs.filter((l) => l.level === 'warn' && l.peer === from).map((l) => l.code);
}

test('ten peers that edit concurrently converge to one document', async (t) => {
  const { peers, start } = peerGroup(t);
  const psk = newPsk();
  const started = Date.now();
  // a tree, not a star: joiner i knows only peer (i-1)/2, so updates must be relayed and re-published
  for (let i = 0; i < 10; i++) {
    const parent = peers[Math.floor((i - 1) / 2)];
    const peer = await start({
      name: `n${i}`,
      psk,
      meshId,
      bootstrap: i === 0 || parent === undefined ? [] : parent.node.addrs(),
    });
    // an edit made before the peer has any connection: it can only spread by sync + re-publish
    peer.doc.getMap('m').set(`offline-${i}`, i);
  }
  await Promise.all(peers.slice(1).map((p) => p.node.waitForPeer(10_000)));
  const originsAt5 = new Set<unknown>();
  peers[5]?.doc.on('update', (_u: Uint8Array, origin: unknown) => originsAt5.add(origin));
  const joinedMs = Date.now() - started;

  const editsAt = Date.now();
  for (const [i, peer] of peers.entries()) {
    if (i % 3 !== 0) continue;
    const m = peer.doc.getMap('m');
    peer.doc.transact(() => {
      m.set(`online-${i}`, { by: peer.name, n: i });
      m.set('shared', peer.name); // concurrent writes to one key: all replicas must pick the same winner
    });
  }
  peers[4]?.doc.getMap('m').delete('offline-4');
  await waitFor(() => new Set(peers.map((p) => docState(p.doc))).size === 1, {
    timeoutMs: 15_000,
    what: 'all ten documents to be equal',
  });
  const convergedMs = Date.now() - editsAt;

  assert.deepEqual([...originsAt5], [remoteOrigin], 'n5 made no edit: everything it applied came from peers');
  const m = peers[0]?.doc.getMap('m');
  assert.ok(m);
  for (let i = 0; i < 10; i++)
    assert.equal(m.get(`offline-${i}`), i === 4 ? undefined : i, `offline edit of n${i}`);
  for (const i of [0, 3, 6, 9]) assert.deepEqual(m.get(`online-${i}`), { by: `n${i}`, n: i });
  assert.ok(['n0', 'n3', 'n6', 'n9'].includes(String(m.get('shared'))));

  // presence is relayed through the tree: everyone ends up knowing every other peer by name
  await waitFor(
    () =>
      peers.every((p) => p.node.peers().filter((v) => v.name !== null && v.lastSeenAt !== null).length === 9),
    {
      timeoutMs: 10_000,
      what: 'every peer to see the nine others by presence',
    },
  );
  // once the gossip mesh has formed, an edit travels by gossip alone
  const steadyAt = Date.now();
  peers[9]?.doc.getMap('m').set('steady', 'n9');
  await waitFor(() => peers.every((p) => p.doc.getMap('m').get('steady') === 'n9'), {
    timeoutMs: 5000,
    intervalMs: 2,
    what: 'the steady-state edit everywhere',
  });
  const steadyMs = Date.now() - steadyAt;
  for (const p of peers) assert.equal(p.node.stats().rejectedMessages, 0, `${p.name} rejected nothing`);
  assert.ok(
    peers.some((p) => p.node.stats().presenceRelayed > 0),
    'in a tree, presence reaches non-neighbours only by relay',
  );
  t.diagnostic(
    `10 peers: all joined in ${joinedMs} ms; edits on 4 peers converged in ${convergedMs} ms; one edit reached all in ${steadyMs} ms`,
  );
});

test('in a full mesh an edit reaches everyone straight from its publisher, and nobody forwards it', async (t) => {
  const { peers, start } = peerGroup(t);
  const psk = newPsk();
  const everyone = () => peers.map((p) => ({ peerId: p.node.peerId, addrs: p.node.addrs() }));
  const a = await start({ name: 'a', psk, meshId, knownPeers: everyone });
  for (const name of ['b', 'c', 'd'])
    await start({ name, psk, meshId, bootstrap: a.node.addrs(), knownPeers: everyone });
  await waitFor(
    () => peers.every((p) => p.node.peers().filter((v) => v.connected && v.name !== null).length === 3),
    {
      timeoutMs: 10_000,
      what: 'a full mesh of four with presence',
    },
  );
  const others = peers.filter((p) => p !== a);
  // neighbours report whom they hear with their next presence frames; until then gossip forwards as usual
  let n = 0;
  await waitFor(
    () => {
      a.doc.getMap('m').set('warm-up', n++);
      return others.every((p) => p.node.stats().gossipForwardsSkipped > 0);
    },
    { timeoutMs: 10_000, intervalMs: 100, what: 'forwarding to stop in the full mesh' },
  );
  await waitFor(() => others.every((p) => p.doc.getMap('m').get('warm-up') === n - 1), {
    timeoutMs: 5000,
    what: 'the warm-up edits everywhere',
  });
  const skipped = others.map((p) => p.node.stats().gossipForwardsSkipped);
  a.doc.getMap('m').set('edit', 'a');
  await waitFor(() => others.every((p) => p.doc.getMap('m').get('edit') === 'a'), {
    timeoutMs: 5000,
    intervalMs: 2,
    what: 'the edit everywhere',
  });
  assert.deepEqual(
    others.map((p, i) => p.node.stats().gossipForwardsSkipped - (skipped[i] ?? 0)),
    [1, 1, 1],
    'each peer applied the edit once, from a, and forwarded nothing',
  );
  for (const p of peers) assert.equal(p.node.stats().rejectedMessages, 0, `${p.name} rejected nothing`);
});

test('a peer that was stopped catches up after restart, and its offline edit reaches everyone', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  // anti-entropy off: only the connection sync and the re-publish of what it taught may carry the edits
  const tuning = { antiEntropyMinMs: 3_600_000 };
  const a = await start({ name: 'a', psk, meshId, tuning });
  const b = await start({ name: 'b', psk, meshId, tuning, bootstrap: a.node.addrs() });
  const c = await start({ name: 'c', psk, meshId, tuning, bootstrap: a.node.addrs() });
  a.doc.getMap('m').set('before', 'stop');
  await waitFor(() => c.doc.getMap('m').get('before') === 'stop', {
    timeoutMs: 5000,
    what: 'c to receive the first edit',
  });

  const saved = copyDoc(c.doc);
  await c.node.stop();
  for (let i = 0; i < 100; i++) (i % 2 === 0 ? a : b).doc.getMap('m').set(`missed-${i}`, i);
  saved.getMap('m').set('offline-by-c', true);

  const restartedAt = Date.now();
  const c2 = await start({
    name: 'c',
    psk,
    meshId,
    tuning,
    key: c.key,
    doc: saved,
    bootstrap: b.node.addrs(),
  });
  assert.equal(c2.node.peerId, c.node.peerId);
  await c2.node.waitForPeer(10_000);
  await waitFor(() => docState(c2.doc) === docState(a.doc) && docState(b.doc) === docState(a.doc), {
    timeoutMs: 10_000,
    what: 'restarted c, a and b to hold the same document',
  });
  const caughtUpMs = Date.now() - restartedAt;
  assert.equal(c2.doc.getMap('m').get('missed-99'), 99);
  assert.equal(
    a.doc.getMap('m').get('offline-by-c'),
    true,
    'c synced with b only; a got the edit by re-publish',
  );
  assert.ok(
    !c2.node.peers().some((p) => p.peerId === a.node.peerId && p.connected),
    'c2 never connected to a',
  );
  t.diagnostic(
    `restarted peer missed 100 updates and caught up (both ways) in ${caughtUpMs} ms including start-up`,
  );
});

test('a remembered peer that is down is redialled with backoff and connects once it is back', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  const first = await start({ name: 'a', psk, meshId });
  const addr = first.node.addrs()[0] ?? '';
  const listen = [addr.replace(/\/p2p\/.*$/, '')];
  await first.node.stop();

  // the known-peers list gives the address without /p2p; both forms must work
  const b = await start({
    name: 'b',
    psk,
    meshId,
    knownPeers: () => [{ peerId: first.node.peerId, addrs: listen }],
  });
  let peerEvents = 0;
  b.node.events.addEventListener('peers', () => peerEvents++);
  await waitFor(() => b.logs.some((l) => l.msg === 'redial failed' && l.peer === first.node.peerId), {
    timeoutMs: 5000,
    what: 'a failed redial',
  });
  assert.deepEqual(
    b.node.peers().map((p) => ({ peerId: p.peerId, connected: p.connected, addrs: p.addrs })),
    [{ peerId: first.node.peerId, connected: false, addrs: [addr] }],
  );

  const back = await start({ name: 'a', psk, meshId, key: first.key, listen });
  back.doc.getMap('m').set('from', 'a');
  await waitFor(() => b.doc.getMap('m').get('from') === 'a', {
    timeoutMs: 5000,
    what: 'b to redial a and sync',
  });
  await waitFor(
    () => b.node.peers().find((p) => p.peerId === back.node.peerId && p.connected && p.name === 'a'),
    {
      timeoutMs: 5000,
      what: 'b to show a as connected with its name',
    },
  );
  assert.ok(peerEvents > 0, "'peers' events were dispatched");
  const failures = b.logs.filter((l) => l.msg === 'redial failed').map((l) => l.retryInMs);
  assert.ok(failures.length >= 1);
  assert.ok(
    failures.every((ms, i) => i === 0 || Number(ms) >= Number(failures[i - 1])),
    `backoff never shrinks: ${failures.join(', ')}`,
  );
});

test('a node with the wrong mesh key cannot connect or exchange the document', async (t) => {
  const { start } = peerGroup(t);
  const a = await start({ name: 'a', psk: newPsk(), meshId });
  a.doc.getMap('m').set('secret', 'a');
  const intruder = await start({ name: 'x', psk: newPsk(), meshId, tuning: { dialTimeoutMs: 3000 } });
  intruder.doc.getMap('m').set('planted', 'x');

  // plain pnet fails fast only by luck (garbled Noise lengths can make both ends wait for the dial timeout),
  // so dial several times: every attempt must be refused quickly and say why
  let slowestMs = 0;
  for (let attempt = 0; attempt < 5; attempt++) {
    const began = Date.now();
    const err = await intruder.node.dial(a.node.addrs()[0] ?? '').then(
      () => undefined,
      (e: unknown) => e,
    );
    slowestMs = Math.max(slowestMs, Date.now() - began);
    assert.ok(err instanceof MeshdError, `dial must fail with a MeshdError, got ${String(err)}`);
    assert.equal(err.code, 'E_DIAL_FAILED');
    assert.match(err.message, /different mesh key/);
    assert.ok(err.hint?.includes('token'));
  }
  assert.ok(slowestMs < 1000, `wrong key must fail fast, took ${slowestMs} ms`);

  const join = await intruder.node.waitForPeer(300).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(join instanceof MeshdError && join.code === 'E_JOIN_TIMEOUT');
  assert.equal(intruder.node.connectedCount(), 0);
  assert.equal(a.node.connectedCount(), 0);
  assert.equal(intruder.doc.getMap('m').get('secret'), undefined);
  assert.equal(a.doc.getMap('m').get('planted'), undefined);
  t.diagnostic(`wrong-key dials failed within ${slowestMs} ms`);
});

test('garbage on the sync protocol is rejected and logged; the document and the node are unharmed', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  const a = await start({ name: 'a', psk, meshId, tuning: { maxSyncBytes: 64 * 1024 } });
  const b = await start({ name: 'b', psk, meshId, bootstrap: a.node.addrs() });
  const raw = await rawPeer(t, psk);
  a.doc.getMap('m').set('k', 'v');
  await waitFor(() => b.doc.getMap('m').get('k') === 'v', { timeoutMs: 5000, what: 'b to sync' });
  const before = docState(a.doc);
  const rawId = raw.peerId.toString();

  const realUpdate = Y.encodeStateAsUpdate(b.doc);
  const attacks: Array<{ what: string; code: string; frames: Uint8Array[]; rawPrefix?: Uint8Array }> = [
    { what: 'unknown frame type', code: 'E_PEER_BAD_FRAME', frames: [Uint8Array.from([7, 1, 0])] },
    {
      what: 'trailing bytes after a step 1',
      code: 'E_PEER_BAD_FRAME',
      frames: [Uint8Array.from([0, 1, 0, 9, 9])],
    },
    {
      what: 'malformed state vector',
      code: 'E_PEER_BAD_STATE_VECTOR',
      frames: [encodeSyncFrame({ kind: 'step1', stateVector: Uint8Array.from([5, 1]) })],
    },
    {
      what: 'garbage update in step 2',
      code: 'E_PEER_BAD_UPDATE',
      frames: [
        encodeSyncFrame({ kind: 'step1', stateVector: Y.encodeStateVector(new Y.Doc()) }),
        encodeSyncFrame({ kind: 'step2', update: Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]) }),
      ],
    },
    {
      what: 'truncated update in step 2',
      code: 'E_PEER_BAD_UPDATE',
      frames: [
        encodeSyncFrame({ kind: 'step1', stateVector: Y.encodeStateVector(new Y.Doc()) }),
        encodeSyncFrame({
          kind: 'step2',
          update: realUpdate.subarray(0, Math.floor(realUpdate.byteLength / 2)),
        }),
      ],
    },
    // a length prefix announcing 1 MiB against a 64 KiB limit: refused before a byte of it is buffered
    {
      what: 'oversized frame',
      code: 'E_PEER_FRAME_TOO_LARGE',
      frames: [],
      rawPrefix: Uint8Array.from([0x80, 0x80, 0x40]),
    },
  ];
  for (const attack of attacks) {
    const stream = await raw.dialProtocol(multiaddr(a.node.addrs()[0] ?? ''), names.syncProtocol, {
      signal: AbortSignal.timeout(5000),
    });
    const lp = lpStream(stream);
    await expectRejection(a, attack.what, async () => {
      if (attack.rawPrefix !== undefined) stream.send(attack.rawPrefix);
      for (const frame of attack.frames) await lp.write(frame, { signal: AbortSignal.timeout(5000) });
    });
    stream.abort(new Error('done'));
    assert.equal(docState(a.doc), before, `doc untouched after ${attack.what}`);
  }
  assert.deepEqual(
    warningCodes(a, rawId),
    attacks.map((x) => x.code),
    'one warning naming the peer per attack',
  );

  // a keeps working both ways
  b.doc.getMap('m').set('after', 'b');
  a.doc.getMap('m').set('after-a', 'a');
  await waitFor(() => a.doc.getMap('m').get('after') === 'b' && b.doc.getMap('m').get('after-a') === 'a', {
    timeoutMs: 5000,
    what: 'a and b to keep replicating',
  });
});

test('garbage on the doc topic is rejected and logged; the document and the node are unharmed', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  const a = await start({ name: 'a', psk, meshId, tuning: { maxGossipBytes: 16 * 1024 } });
  const b = await start({ name: 'b', psk, meshId, bootstrap: a.node.addrs() });
  const raw = await rawPeer(t, psk);
  a.doc.getMap('m').set('k', 'v');
  await waitFor(() => b.doc.getMap('m').get('k') === 'v', { timeoutMs: 5000, what: 'b to sync' });
  raw.services.pubsub.subscribe(names.docTopic);
  await raw.dial(multiaddr(a.node.addrs()[0] ?? ''), { signal: AbortSignal.timeout(5000) });
  await waitFor(
    () => raw.services.pubsub.getSubscribers(names.docTopic).some((p) => p.toString() === a.node.peerId),
    { timeoutMs: 5000, what: 'raw peer to see a subscribed' },
  );
  const before = docState(a.doc);
  const rawId = raw.peerId.toString();
  const attacks: Array<{ what: string; code: string; data: Uint8Array }> = [
    {
      what: 'a message too short for an origin tag',
      code: 'E_PEER_BAD_UPDATE',
      data: Uint8Array.from([1, 2, 3]),
    },
    {
      what: 'garbage doc update',
      code: 'E_PEER_BAD_UPDATE',
      data: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]),
    },
    { what: 'oversized doc update', code: 'E_PEER_OVERSIZED', data: new Uint8Array(20 * 1024).fill(1) },
  ];
  for (const attack of attacks) {
    await expectRejection(a, attack.what, () => raw.services.pubsub.publish(names.docTopic, attack.data));
    assert.equal(docState(a.doc), before, `doc untouched after ${attack.what}`);
  }
  assert.deepEqual(
    warningCodes(a, rawId),
    attacks.map((x) => x.code),
    'one warning naming the relaying peer per attack',
  );

  b.doc.getMap('m').set('after', 'b');
  await waitFor(() => a.doc.getMap('m').get('after') === 'b', {
    timeoutMs: 5000,
    what: 'a to keep receiving gossip',
  });
});

test('garbage and forgeries on the presence link are rejected and logged; presence keeps working', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  const a = await start({ name: 'a', psk, meshId, tuning: { maxMessageBytes: 16 * 1024 } });
  const b = await start({ name: 'b', psk, meshId, bootstrap: a.node.addrs() });
  await waitFor(() => a.node.peers().some((p) => p.peerId === b.node.peerId && p.name === 'b'), {
    timeoutMs: 5000,
    what: 'a to hear b',
  });
  const raw = await rawPeer(t, psk);
  const rawId = raw.peerId.toString();
  const stream = await raw.dialProtocol(multiaddr(a.node.addrs()[0] ?? ''), names.presenceProtocol, {
    signal: AbortSignal.timeout(5000),
  });
  const lp = lpStream(stream);
  const forged = (seq: number) =>
    generateKeyPair('Ed25519').then((otherKey) =>
      encodePresence(
        { v: 2, peerId: b.node.peerId, name: 'evil', seq, sentAt: 0, addrs: [], svHash: 'x' },
        otherKey,
        meshId,
      ),
    );
  const attacks: Array<{ what: string; code: string; frame: Uint8Array }> = [
    {
      what: 'a frame that is not msgpack',
      code: 'E_PEER_BAD_PRESENCE',
      frame: Uint8Array.from([0xc1, 0, 0x13]),
    },
    {
      what: 'a malformed beacon in a frame',
      code: 'E_PEER_BAD_PRESENCE',
      frame: encodePresenceFrame({ beacons: [Uint8Array.from([0xc1, 0x00, 0x13])] }),
    },
    {
      what: "a relayed beacon claiming b's id, signed by another key",
      code: 'E_PEER_BAD_PRESENCE',
      frame: encodePresenceFrame({ beacons: [await forged(Number.MAX_SAFE_INTEGER)] }),
    },
  ];
  for (const attack of attacks) {
    await expectRejection(a, attack.what, () =>
      lp.write(attack.frame, { signal: AbortSignal.timeout(5000) }),
    );
  }
  // an oversized frame length is refused before it is buffered, and ends the link
  await expectRejection(a, 'an oversized frame length', () =>
    stream.send(Uint8Array.from([0xff, 0xff, 0xff, 0x7f])),
  );
  assert.deepEqual(
    warningCodes(a, rawId),
    [...attacks.map((x) => x.code), 'E_PEER_FRAME_TOO_LARGE'],
    'one warning naming the sending peer per attack',
  );
  assert.equal(
    a.node.peers().find((p) => p.peerId === b.node.peerId)?.name,
    'b',
    'forged presence changed nothing',
  );
  const seenBefore = a.node.peers().find((p) => p.peerId === b.node.peerId)?.lastSeenAt ?? 0;
  await waitFor(
    () => (a.node.peers().find((p) => p.peerId === b.node.peerId)?.lastSeenAt ?? 0) > seenBefore,
    {
      timeoutMs: 5000,
      what: "b's genuine beacons to keep arriving",
    },
  );
});

test('connected peers get an RTT from presence echoes; a peer that sends no presence is disconnected', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  const a = await start({ name: 'a', psk, meshId, tuning: { silentPeerCloseMs: 1500 } });
  const b = await start({ name: 'b', psk, meshId, bootstrap: a.node.addrs() });
  await waitFor(
    () => a.node.peers().some((p) => p.peerId === b.node.peerId && p.connected && p.rttMs !== null),
    { timeoutMs: 5000, what: 'a to know its RTT to b' },
  );
  const rtt = a.node.peers().find((p) => p.peerId === b.node.peerId)?.rttMs ?? -1;
  assert.ok(rtt >= 0 && rtt < 1000, `loopback RTT ${rtt} ms`);
  const seen = a.node.lastSeen().get(b.node.peerId);
  assert.ok(seen !== undefined && seen <= Date.now(), 'lastSeen() has b');
  assert.ok(seen <= (a.node.peers().find((p) => p.peerId === b.node.peerId)?.lastSeenAt ?? 0));

  // a bare libp2p node: connects fine but never speaks the presence protocol
  const raw = await rawPeer(t, psk);
  await raw.dial(multiaddr(a.node.addrs()[0] ?? ''), { signal: AbortSignal.timeout(5000) });
  await waitFor(() => a.node.peers().some((p) => p.peerId === raw.peerId.toString() && p.connected), {
    timeoutMs: 5000,
    what: 'a to see the bare peer connected',
  });
  await waitFor(() => !a.node.peers().some((p) => p.peerId === raw.peerId.toString() && p.connected), {
    timeoutMs: 5000,
    what: 'a to drop the silent peer',
  });
  assert.ok(
    a.logs.some((l) => l.msg === 'closing connection to silent peer' && l.peer === raw.peerId.toString()),
  );
  assert.ok(
    a.node.peers().some((p) => p.peerId === b.node.peerId && p.connected),
    'b, which speaks, stays',
  );
});

test('start-up refuses a bad bootstrap address and a busy port with errors a user can act on', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  await assert.rejects(
    start({ name: 'x', psk, meshId, bootstrap: ['/ip4/127.0.0.1/tcp/7946'] }),
    (e: unknown) => e instanceof MeshdError && e.code === 'E_BOOTSTRAP_INVALID' && /\/p2p\//.test(e.message),
  );
  const a = await start({ name: 'a', psk, meshId });
  const busy = [(a.node.addrs()[0] ?? '').replace(/\/p2p\/.*$/, '')];
  await assert.rejects(
    start({ name: 'b', psk, meshId, listen: busy }),
    (e: unknown) => e instanceof MeshdError && e.code === 'E_MESH_START' && e.hint !== undefined,
  );
});
