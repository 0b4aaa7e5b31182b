// Presence beacons verify only when signed by the key of the peer id they claim, and garbage never gets through.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { PeerProtocolError } from '../shared/errors.ts';
import { decodePresence, encodePresence, type Presence, PresenceVerifier } from './presence.ts';

const meshId = 'presence-test';

async function signedBeacon(overrides: Partial<Presence> = {}) {
  const key = await generateKeyPair('Ed25519');
  const presence: Presence = {
    v: 2,
    peerId: peerIdFromPrivateKey(key).toString(),
    name: 'nas',
    seq: 42,
    sentAt: 1_767_225_600_000,
    addrs: ['/ip4/127.0.0.1/tcp/7946/p2p/x'],
    svHash: '0123456789abcdef',
    ...overrides,
  };
  return { key, presence, bytes: await encodePresence(presence, key, meshId) };
}

const isBadPresence = (e: unknown) => e instanceof PeerProtocolError && e.code === 'E_PEER_BAD_PRESENCE';

test('a signed beacon decodes to what was sent', async () => {
  const { presence, bytes } = await signedBeacon();
  assert.deepEqual(await decodePresence(bytes, meshId, 1024 * 1024, 'relay'), presence);
});

test('a beacon without addresses decodes without them (they are sent only now and then)', async () => {
  const { key, presence } = await signedBeacon();
  const { addrs: _, ...withoutAddrs } = presence;
  const bytes = await encodePresence(withoutAddrs, key, meshId);
  const decoded = await decodePresence(bytes, meshId, 1024, 'relay');
  assert.deepEqual(decoded, withoutAddrs);
  assert.equal('addrs' in decoded, false);
});

test('a verifier that has cached a peer key still refuses signatures by any other key', async () => {
  const verifier = new PresenceVerifier(meshId);
  const { presence, bytes } = await signedBeacon();
  assert.deepEqual(await decodePresence(bytes, meshId, 1 << 20, 'relay', verifier), presence);
  const other = await generateKeyPair('Ed25519');
  for (let i = 0; i < 3; i++) {
    const next = { ...presence, seq: presence.seq + 1 + i };
    await assert.rejects(
      decodePresence(await encodePresence(next, other, meshId), meshId, 1 << 20, 'relay', verifier),
      isBadPresence,
    );
  }
  const genuine = await signedBeacon({ seq: 7 });
  assert.equal((await decodePresence(genuine.bytes, meshId, 1 << 20, 'relay', verifier)).seq, 7);
});

test('a beacon is refused when signed by another key, for another mesh, tampered with or too large', async () => {
  const { presence, bytes } = await signedBeacon();
  const other = await generateKeyPair('Ed25519');
  // claims the first peer's id but carries the other key's signature
  await assert.rejects(
    decodePresence(await encodePresence(presence, other, meshId), meshId, 1 << 20, 'relay'),
    isBadPresence,
  );
  await assert.rejects(decodePresence(bytes, 'another-mesh', 1 << 20, 'relay'), isBadPresence);
  await assert.rejects(decodePresence(bytes, meshId, bytes.byteLength - 1, 'relay'), isBadPresence);

  const packr = new Packr({ useRecords: false });
  const envelope = packr.unpack(bytes) as { v: 1; body: Uint8Array; sig: Uint8Array };
  const body = packr.unpack(envelope.body) as Presence;
  const tampered = packr.pack({ ...envelope, body: packr.pack({ ...body, name: 'evil' }) });
  await assert.rejects(decodePresence(tampered, meshId, 1 << 20, 'relay'), isBadPresence);
});

test('the refusal names the relaying peer', async () => {
  await assert.rejects(decodePresence(Uint8Array.from([0xc1]), meshId, 1024, 'peer-r'), (e: unknown) => {
    assert.ok(e instanceof PeerProtocolError);
    assert.equal(e.details?.peer, 'peer-r');
    assert.match(e.message, /peer-r/);
    return true;
  });
});

test('malformed fields are refused even when correctly signed', async () => {
  for (const bad of [
    { seq: -1 },
    { seq: 1.5 },
    { name: 'x'.repeat(300) },
    { addrs: Array.from({ length: 65 }, () => 'a') },
  ]) {
    const { bytes } = await signedBeacon(bad as Partial<Presence>);
    await assert.rejects(
      decodePresence(bytes, meshId, 1 << 20, 'relay'),
      isBadPresence,
      JSON.stringify(bad).slice(0, 40),
    );
  }
});

test('arbitrary bytes and arbitrary msgpack values only ever yield E_PEER_BAD_PRESENCE', async () => {
  const packr = new Packr({ useRecords: false });
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ maxLength: 256 }),
        fc.anything().map((v) => packr.pack(v)),
        fc
          .record({
            v: fc.constant(2),
            body: fc.anything().map((v) => packr.pack(v)),
            sig: fc.uint8Array({ maxLength: 64 }),
          })
          .map((v) => packr.pack(v)),
      ),
      async (bytes) => {
        await assert.rejects(decodePresence(bytes, meshId, 1 << 20, 'relay'), isBadPresence);
      },
    ),
    { numRuns: 300 },
  );
});
