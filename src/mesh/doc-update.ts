// Checks Yjs updates and state vectors from peers before they touch the document, and digests a doc's state.

import { createHash } from 'node:crypto';
import * as Y from 'yjs';
import { describeError, PeerProtocolError } from '../shared/errors.ts';

// The wire uses the V1 update encoding on purpose: every struct and delete-set entry in V1 consumes at least
// one input byte, so decoding garbage is bounded by its length. V2's run-length decoders can claim billions
// of structs from a few bytes, which would let one hostile frame spin the CPU.

/** Throws `PeerProtocolError` unless `update` decodes as a Yjs V1 update. Never touches a document. */
export function checkUpdate(update: Uint8Array, peer: string): void {
  try {
    Y.decodeUpdate(update);
  } catch (err) {
    throw new PeerProtocolError(
      'E_PEER_BAD_UPDATE',
      `peer ${peer} sent an undecodable Yjs update (${describeError(err)})`,
      {
        hint: 'The peer runs an incompatible or broken meshd; upgrade it or `meshd node forget` it.',
        details: { peer, bytes: update.byteLength },
      },
    );
  }
}

/** Throws `PeerProtocolError` unless `sv` is a well-formed encoded state vector. */
export function checkStateVector(sv: Uint8Array, peer: string): void {
  try {
    const decoded = Y.decodeStateVector(sv);
    for (const [client, clock] of decoded) {
      if (!Number.isSafeInteger(client) || !Number.isSafeInteger(clock) || client < 0 || clock < 0) {
        throw new Error(`bad entry ${client}:${clock}`);
      }
    }
  } catch (err) {
    throw new PeerProtocolError(
      'E_PEER_BAD_STATE_VECTOR',
      `peer ${peer} sent a malformed state vector (${describeError(err)})`,
      {
        hint: 'The peer runs an incompatible or broken meshd; upgrade it or `meshd node forget` it.',
        details: { peer, bytes: sv.byteLength },
      },
    );
  }
}

/**
 * Checks then applies a peer's update with `origin`. A structurally valid update that still fails to
 * integrate is reported as `PeerProtocolError` too; the caller logs and counts it and carries on.
 */
export function applyPeerUpdate(doc: Y.Doc, update: Uint8Array, origin: unknown, peer: string): void {
  checkUpdate(update, peer);
  try {
    Y.applyUpdate(doc, update, origin);
  } catch (err) {
    throw new PeerProtocolError(
      'E_PEER_BAD_UPDATE',
      `peer ${peer} sent a Yjs update that failed to apply (${describeError(err)})`,
      {
        hint: 'The peer runs an incompatible or broken meshd; upgrade it or `meshd node forget` it.',
        details: { peer, bytes: update.byteLength },
      },
    );
  }
}

/**
 * A short hex digest of the doc's state vector AND delete set. Two replicas with equal digests hold the same
 * content; the state vector alone would miss deletions, which do not advance any clock.
 */
export function docDigest(doc: Y.Doc): string {
  const snapshot = Y.encodeSnapshot(Y.snapshot(doc));
  return createHash('sha256').update(snapshot).digest('hex').slice(0, 16);
}

/** Bytes of the origin tag (`peerTag` of the publishing peer) in front of every doc update on gossip. */
export const originTagBytes = 8;

/** A doc update as published on gossip: the publisher's 8-byte tag, then the Yjs V1 update. */
export function encodeDocGossip(originTag: Uint8Array, update: Uint8Array): Uint8Array {
  const out = new Uint8Array(originTagBytes + update.byteLength);
  out.set(originTag.subarray(0, originTagBytes));
  out.set(update, originTagBytes);
  return out;
}

/** Splits a gossiped doc update; throws `PeerProtocolError` when it is too short to hold the origin tag. */
export function decodeDocGossip(data: Uint8Array, peer: string): { originTag: string; update: Uint8Array } {
  if (data.byteLength <= originTagBytes) {
    throw new PeerProtocolError(
      'E_PEER_BAD_UPDATE',
      `peer ${peer} relayed a ${data.byteLength}-byte doc message, too short for an origin tag and an update`,
      {
        hint: 'The peer runs an incompatible or broken meshd; upgrade it or `meshd node forget` it.',
        details: { peer, bytes: data.byteLength },
      },
    );
  }
  return {
    originTag: Buffer.from(data.buffer, data.byteOffset, originTagBytes).toString('hex'),
    update: data.subarray(originTagBytes),
  };
}
