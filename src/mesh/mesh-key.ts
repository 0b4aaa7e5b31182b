// The mesh key this node uses for new connections, its epoch, and the rule that picks one of two keys.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Length of the raw mesh key carried in join tokens and kept in `mesh.psk`. */
export const PSK_BYTES = 32;

/** The largest key epoch (it travels as a u32 in `mesh.psk` and the handshake). */
export const MAX_KEY_EPOCH = 0xffff_ffff;

/** A fresh random mesh key of `epoch`. */
export function newMeshKey(epoch: number): MeshKey {
  return { psk: new Uint8Array(randomBytes(PSK_BYTES)), epoch };
}

/** A mesh pre-shared key and its epoch: `meshd node remove` rotates to epoch + 1. */
export interface MeshKey {
  /** 32 random bytes. */
  psk: Uint8Array;
  epoch: number;
}

/**
 * Which of two keys the mesh settles on: the higher epoch; on a tie (two members removed two machines at
 * the same moment, each rotating to the same next epoch) the key with the smaller SHA-256. Every peer
 * applies the same rule to what it hears, so the mesh converges on one key without coordination.
 * Returns a negative number when `a` wins, positive when `b` wins, 0 when they are the same key.
 */
export function compareKeys(a: MeshKey, b: MeshKey): number {
  if (a.epoch !== b.epoch) return b.epoch - a.epoch;
  if (a.psk.byteLength === b.psk.byteLength && timingSafeEqual(a.psk, b.psk)) return 0;
  return Buffer.compare(keyDigest(a.psk), keyDigest(b.psk)) < 0 ? -1 : 1;
}

function keyDigest(psk: Uint8Array): Buffer {
  return createHash('sha256').update('meshd/key-order/1').update(psk).digest();
}

/**
 * Holds the key for new connections. The connection protector reads it at every handshake, so a rotation
 * applies to the next connection at once; connections already open stay up (they were authenticated with
 * the key of their time, and the removed peer's are closed by the gater, not by the key).
 */
export class MeshKeyring {
  private key: MeshKey;

  constructor(initial: MeshKey) {
    if (initial.psk.byteLength !== PSK_BYTES) throw new Error(`mesh key must be ${PSK_BYTES} bytes`);
    if (!Number.isSafeInteger(initial.epoch) || initial.epoch < 0) throw new Error('key epoch must be ≥ 0');
    this.key = { psk: new Uint8Array(initial.psk), epoch: initial.epoch };
  }

  current(): MeshKey {
    return this.key;
  }

  /** Takes `next` when it wins over the current key (`compareKeys`); returns whether it did. */
  adopt(next: MeshKey): boolean {
    if (compareKeys(next, this.key) >= 0) return false;
    this.key = { psk: new Uint8Array(next.psk), epoch: next.epoch };
    return true;
  }
}
