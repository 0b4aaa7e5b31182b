// Rendezvous (highest-random-weight) hashing: a stable per-slot preference order over node peer ids.

import { createHash } from 'node:crypto';
import { compareStrings } from './slots.ts';

/** Weight of `peerId` for `slot`: the first 64 bits of sha256(slot NUL peerId). Higher is preferred. */
export function rendezvousScore(slot: string, peerId: string): bigint {
  return createHash('sha256').update(slot).update('\0').update(peerId).digest().readBigUInt64BE(0);
}

/** Peer ids from most to least preferred for `slot`; ties (practically never) by peer id. */
export function rendezvousOrder(slot: string, peerIds: Iterable<string>): string[] {
  const scored = [...peerIds].map((peerId) => ({ peerId, score: rendezvousScore(slot, peerId) }));
  scored.sort((a, b) =>
    a.score === b.score ? compareStrings(a.peerId, b.peerId) : a.score > b.score ? -1 : 1,
  );
  return scored.map((s) => s.peerId);
}
