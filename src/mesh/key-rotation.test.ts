// Key rotation messages: signed by the member that rotated, refused when altered, forged or malformed.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Packr, Unpackr } from 'msgpackr';
import { PeerProtocolError } from '../shared/errors.ts';
import { decodeKeyRotation, encodeKeyRotation, type KeyRotation, maxRotationBytes } from './key-rotation.ts';

const meshId = 'm1';

async function signedRotation() {
  const key = await generateKeyPair('Ed25519');
  const origin = peerIdFromPrivateKey(key).toString();
  const rotation: KeyRotation = {
    key: { psk: new Uint8Array(32).fill(7), epoch: 2 },
    removed: ['12D3KooWRemovedPeerIdPlaceholder'],
    origin,
    at: 1_700_000_000_000,
  };
  return { key, rotation, bytes: await encodeKeyRotation(rotation, key, meshId) };
}

const refused = (code: string, text: RegExp) => (e: unknown) =>
  e instanceof PeerProtocolError && e.code === code && text.test(e.message);

test('a rotation round-trips and is checked against its origin', async () => {
  const { rotation, bytes } = await signedRotation();
  assert.deepEqual(await decodeKeyRotation(bytes, 'relay', meshId), rotation);
});

test('an altered, re-signed-by-someone-else or other-mesh rotation is refused naming the sender', async () => {
  const { rotation, bytes } = await signedRotation();
  const [body, sig] = new Unpackr({ useRecords: false }).unpack(bytes) as [Uint8Array, Uint8Array];
  const tampered = Uint8Array.from(body);
  const at = tampered.length - 40;
  tampered[at] = (tampered[at] ?? 0) ^ 1;
  const repacked = new Packr({ useRecords: false }).pack([tampered, sig]);
  await assert.rejects(decodeKeyRotation(repacked, 'peerZ', meshId), refused('E_PEER_BAD_ROTATION', /peerZ/));
  const other = await generateKeyPair('Ed25519');
  const forged = await encodeKeyRotation(rotation, other, meshId);
  await assert.rejects(
    decodeKeyRotation(forged, 'peerZ', meshId),
    refused('E_PEER_BAD_ROTATION', /signature/),
  );
  await assert.rejects(
    decodeKeyRotation(bytes, 'peerZ', 'another-mesh'),
    refused('E_PEER_BAD_ROTATION', /signature/),
  );
});

test('garbage, oversized and ill-typed rotations are refused with a reason', async () => {
  const { key, rotation } = await signedRotation();
  await assert.rejects(
    decodeKeyRotation(new Uint8Array([0xc1]), 'p', meshId),
    refused('E_PEER_BAD_ROTATION', /msgpack|not \[body/),
  );
  await assert.rejects(
    decodeKeyRotation(new Uint8Array(maxRotationBytes + 1), 'p', meshId),
    refused('E_PEER_BAD_ROTATION', /over the limit/),
  );
  const short = await encodeKeyRotation(
    { ...rotation, key: { psk: new Uint8Array(16), epoch: 2 } },
    key,
    meshId,
  );
  await assert.rejects(decodeKeyRotation(short, 'p', meshId), refused('E_PEER_BAD_ROTATION', /32 bytes/));
  const zero = await encodeKeyRotation({ ...rotation, key: { ...rotation.key, epoch: 0 } }, key, meshId);
  await assert.rejects(decodeKeyRotation(zero, 'p', meshId), refused('E_PEER_BAD_ROTATION', /epoch/));
  const many = await encodeKeyRotation({ ...rotation, removed: Array(1001).fill('x') }, key, meshId);
  await assert.rejects(decodeKeyRotation(many, 'p', meshId), refused('E_PEER_BAD_ROTATION', /removed/));
});
