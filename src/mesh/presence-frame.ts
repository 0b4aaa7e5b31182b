// Presence link frames: what a peer sends each directly connected peer once per presence tick, and peer tags.

import { createHash } from 'node:crypto';
import { Packr, Unpackr } from 'msgpackr';
import { PeerProtocolError } from '../shared/errors.ts';

export interface PresenceFrame {
  /**
   * Signed beacons (`encodePresence`): the sender's own first, then the newest beacon of each peer the
   * receiver does not hear directly, so liveness spreads past direct connections.
   */
  beacons: Uint8Array[];
  /**
   * The receiver's latest own beacon (by seq) that reached the sender directly, and how long the sender held
   * it before sending this frame: together they give the receiver its round-trip time without pings.
   */
  echo?: { seq: number; holdMs: number };
  /**
   * Tags (`peerTag`) of every peer whose own beacons reach the sender directly. Sent when the set changed and
   * every few frames; a frame without it means "as before".
   */
  direct?: string[];
}

/** Bytes of a peer tag on the wire. 64 bits: a collision among a mesh's peers is not a practical concern. */
const tagBytes = 8;
const limits = { beacons: 1024, directTags: 4096 } as const;
const badFrameHint = 'The peer runs an incompatible or broken meshd; upgrade it or `meshd node forget` it.';

/** A short fixed-size stand-in for a peer id in `direct` sets: hex of the first 8 bytes of its SHA-256. */
export function peerTag(peerId: string): string {
  return createHash('sha256').update(peerId).digest().subarray(0, tagBytes).toString('hex');
}

/** Encodes a frame as the msgpack array `[1, beacons, echoSeq, holdMs, directTags]` (absent parts nil). */
export function encodePresenceFrame(frame: PresenceFrame): Uint8Array {
  const direct =
    frame.direct === undefined ? null : Buffer.concat(frame.direct.map((t) => Buffer.from(t, 'hex')));
  return new Packr({ useRecords: false }).pack([
    1,
    frame.beacons,
    frame.echo?.seq ?? null,
    frame.echo?.holdMs ?? null,
    direct,
  ]);
}

/** Decodes a frame from `peer`; anything but a well-formed frame is a `PeerProtocolError`. */
export function decodePresenceFrame(bytes: Uint8Array, peer: string): PresenceFrame {
  const bad = (why: string) =>
    new PeerProtocolError('E_PEER_BAD_PRESENCE', `peer ${peer} sent a malformed presence frame: ${why}`, {
      hint: badFrameHint,
      details: { peer, bytes: bytes.byteLength },
    });
  let value: unknown;
  try {
    // a fresh decoder per frame: msgpackr record definitions must never carry over between peers' frames
    value = new Unpackr({ useRecords: false, mapsAsObjects: true }).unpack(bytes);
  } catch {
    throw bad('not msgpack');
  }
  if (!Array.isArray(value) || value.length !== 5 || value[0] !== 1)
    throw bad('not [1, beacons, seq, hold, direct]');
  const [, beacons, seq, holdMs, direct] = value as unknown[];
  if (!Array.isArray(beacons) || beacons.length > limits.beacons)
    throw bad(`beacons is not a list of at most ${limits.beacons}`);
  if (!beacons.every((b): b is Uint8Array => b instanceof Uint8Array)) throw bad('a beacon is not bytes');
  const frame: PresenceFrame = { beacons };
  if (seq !== null || holdMs !== null) {
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0)
      throw bad('echo seq is not a non-negative integer');
    if (typeof holdMs !== 'number' || !Number.isFinite(holdMs) || holdMs < 0)
      throw bad('echo hold is not a non-negative number');
    frame.echo = { seq, holdMs };
  }
  if (direct !== null) {
    if (
      !(direct instanceof Uint8Array) ||
      direct.byteLength % tagBytes !== 0 ||
      direct.byteLength > tagBytes * limits.directTags
    ) {
      throw bad(`direct is not a list of at most ${limits.directTags} ${tagBytes}-byte tags`);
    }
    const tags: string[] = [];
    for (let i = 0; i < direct.byteLength; i += tagBytes)
      tags.push(Buffer.from(direct.buffer, direct.byteOffset + i, tagBytes).toString('hex'));
    frame.direct = tags;
  }
  return frame;
}
