// Key rotation messages: the new mesh key and the machines removed, signed by the member that rotated it.
//
// A rotation travels only over connections that are already open: libp2p's Noise encrypts and
// authenticates them, so the new key is never on the wire in the clear and only a peer that was a member
// a moment ago receives it. Each receiver checks the signature of the member that rotated (so a relayed
// copy cannot be altered), stores the key, switches to it and passes it on to its own neighbours.

import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { Packr, Unpackr } from 'msgpackr';
import { PeerProtocolError } from '../shared/errors.ts';
import { MAX_KEY_EPOCH, type MeshKey, PSK_BYTES } from './mesh-key.ts';

export interface KeyRotation {
  key: MeshKey;
  /** Every peer id removed from the mesh that the rotating member knew of: never to be connected to again. */
  removed: string[];
  /** The member that rotated the key (and signed this message). */
  origin: string;
  /** When it rotated (ms since the epoch, its clock). */
  at: number;
}

/** Largest encoded rotation accepted: a key, up to `maxRotationRemovals` peer ids (~53 bytes each) and a signature. */
export const maxRotationBytes = 96 * 1024;
/** Removed peer ids one rotation carries at most (each ~53 bytes). */
export const maxRotationRemovals = 1000;
const badHint =
  'The peer runs an incompatible or broken meshd; upgrade it, or remove it with `meshd node remove`.';

// Signatures cover a per-mesh context, so a rotation signature is never valid as anything else.
function signedBytes(meshId: string, body: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from(`meshd/key-rotation/1/${meshId}\n`), body]);
}

export async function encodeKeyRotation(
  rotation: KeyRotation,
  privateKey: PrivateKey,
  meshId: string,
): Promise<Uint8Array> {
  const body = new Packr({ useRecords: false }).pack([
    1,
    rotation.key.epoch,
    rotation.key.psk,
    rotation.removed,
    rotation.origin,
    rotation.at,
  ]);
  const sig = await privateKey.sign(signedBytes(meshId, body));
  return new Packr({ useRecords: false }).pack([body, sig]);
}

/** Decodes and verifies a rotation that `from` sent; anything else is a `PeerProtocolError` naming it. */
export async function decodeKeyRotation(
  bytes: Uint8Array,
  from: string,
  meshId: string,
): Promise<KeyRotation> {
  const bad = (why: string) =>
    new PeerProtocolError('E_PEER_BAD_ROTATION', `peer ${from} sent a malformed key rotation: ${why}`, {
      hint: badHint,
      details: { peer: from, bytes: bytes.byteLength },
    });
  if (bytes.byteLength > maxRotationBytes) throw bad(`${bytes.byteLength} bytes is over the limit`);
  const unpack = (b: Uint8Array): unknown => {
    try {
      return new Unpackr({ useRecords: false, mapsAsObjects: true }).unpack(b);
    } catch {
      throw bad('not msgpack');
    }
  };
  const outer = unpack(bytes);
  if (!Array.isArray(outer) || outer.length !== 2) throw bad('not [body, signature]');
  const [body, sig] = outer as unknown[];
  if (!(body instanceof Uint8Array) || !(sig instanceof Uint8Array))
    throw bad('body or signature is not bytes');
  const inner = unpack(body);
  if (!Array.isArray(inner) || inner.length !== 6 || inner[0] !== 1) throw bad('not a version 1 rotation');
  const [, epoch, psk, removed, origin, at] = inner as unknown[];
  if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 1 || epoch > MAX_KEY_EPOCH)
    throw bad('epoch is not an integer in 1..2^32-1');
  if (!(psk instanceof Uint8Array) || psk.byteLength !== PSK_BYTES)
    throw bad(`key is not ${PSK_BYTES} bytes`);
  if (
    !Array.isArray(removed) ||
    removed.length > maxRotationRemovals ||
    !removed.every((r) => typeof r === 'string' && r.length > 0 && r.length <= 128)
  )
    throw bad(`removed is not a list of at most ${maxRotationRemovals} peer ids`);
  if (typeof origin !== 'string' || origin.length === 0 || origin.length > 128)
    throw bad('origin is not a peer id');
  if (typeof at !== 'number' || !Number.isFinite(at)) throw bad('time is not a number');
  let ok: boolean;
  try {
    const publicKey = peerIdFromString(origin).publicKey;
    if (publicKey === undefined) throw new Error('no public key in the peer id');
    ok = await publicKey.verify(signedBytes(meshId, body), sig);
  } catch (err) {
    throw bad(`cannot check the signature of ${origin}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!ok) throw bad(`signature does not match peer ${origin}`);
  return {
    key: { psk: new Uint8Array(psk), epoch },
    removed: removed as string[],
    origin,
    at,
  };
}
