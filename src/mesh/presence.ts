// Presence beacons: who a peer is, where to reach it and a digest of its doc, msgpack-encoded and signed.

import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { Packr, Unpackr } from 'msgpackr';
import { describeError, PeerProtocolError } from '../shared/errors.ts';

export interface Presence {
  v: 1;
  peerId: string;
  name: string;
  /** Increases with every beacon of one run of the peer. */
  seq: number;
  /** The sender's clock (ms); only ever compared with the same sender's earlier beacons. */
  sentAt: number;
  /** Dialable multiaddrs of the sender, each ending in /p2p/<peerId>. */
  addrs: string[];
  /** `docDigest` of the sender's document when it sent the beacon. */
  svHash: string;
}

const limits = { name: 256, addrs: 64, addr: 512, peerId: 128, svHash: 128 } as const;
const badPresenceHint =
  'The peer runs an incompatible or broken meshd; upgrade it or `meshd node forget` it.';

// Signatures cover a per-mesh context string, so a presence signature can never be replayed as anything else
// (libp2p signs its own records with the same key under different domains).
function signedBytes(meshId: string, body: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from(`meshd/${meshId}/presence/1\n`), body]);
}

/** Encodes and signs a beacon: msgpack `{ v: 1, body, sig }` where `body` is the msgpack of the presence. */
export async function encodePresence(
  presence: Presence,
  key: PrivateKey,
  meshId: string,
): Promise<Uint8Array> {
  const packr = new Packr({ useRecords: false });
  const body = packr.pack(presence);
  const sig = await key.sign(signedBytes(meshId, body));
  return packr.pack({ v: 1, body, sig });
}

/**
 * Decodes a beacon and verifies its signature against the public key inside the claimed peer id.
 * Anything malformed, oversized or unverifiable is a `PeerProtocolError` naming `from` (the relaying peer).
 */
export async function decodePresence(
  bytes: Uint8Array,
  meshId: string,
  maxBytes: number,
  from: string,
): Promise<Presence> {
  const reject = (why: string): PeerProtocolError =>
    new PeerProtocolError('E_PEER_BAD_PRESENCE', `peer ${from} relayed an invalid presence message: ${why}`, {
      hint: badPresenceHint,
      details: { peer: from, bytes: bytes.byteLength },
    });
  if (bytes.byteLength > maxBytes)
    throw reject(`${bytes.byteLength} bytes exceeds the ${maxBytes}-byte limit`);
  // a fresh decoder per message: msgpackr keeps record definitions on the instance, and those must never
  // carry over from one peer's message to the next
  const envelope = unpackUntrusted(bytes);
  if (
    !isRecord(envelope) ||
    envelope.v !== 1 ||
    !(envelope.body instanceof Uint8Array) ||
    !(envelope.sig instanceof Uint8Array)
  ) {
    throw reject('envelope is not { v: 1, body, sig }');
  }
  const body = unpackUntrusted(envelope.body);
  const presence = parsePresence(body);
  if (typeof presence === 'string') throw reject(presence);
  let verified = false;
  try {
    const publicKey = peerIdFromString(presence.peerId).publicKey;
    if (publicKey === undefined) throw new Error('peer id does not embed a public key');
    verified = await publicKey.verify(signedBytes(meshId, envelope.body), envelope.sig);
  } catch (err) {
    throw reject(`cannot check the signature of ${presence.peerId} (${describeError(err)})`);
  }
  if (!verified) throw reject(`signature does not match peer ${presence.peerId}`);
  return presence;
}

function unpackUntrusted(bytes: Uint8Array): unknown {
  try {
    return new Unpackr({ useRecords: false, mapsAsObjects: true }).unpack(bytes);
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
  );
}

/** Returns the presence, or a sentence saying what is wrong with it. */
function parsePresence(value: unknown): Presence | string {
  if (!isRecord(value)) return 'body is not a map';
  const { v, peerId, name, seq, sentAt, addrs, svHash } = value;
  if (v !== 1) return `unsupported version ${String(v)}`;
  if (typeof peerId !== 'string' || peerId.length === 0 || peerId.length > limits.peerId)
    return 'peerId is not a short string';
  if (typeof name !== 'string' || name.length > limits.name)
    return 'name is not a string of at most 256 characters';
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0)
    return 'seq is not a non-negative integer';
  if (typeof sentAt !== 'number' || !Number.isFinite(sentAt)) return 'sentAt is not a number';
  if (!Array.isArray(addrs) || addrs.length > limits.addrs)
    return 'addrs is not a list of at most 64 entries';
  if (!addrs.every((a): a is string => typeof a === 'string' && a.length <= limits.addr))
    return 'addrs holds a non-string';
  if (typeof svHash !== 'string' || svHash.length > limits.svHash) return 'svHash is not a short string';
  return { v: 1, peerId, name, seq, sentAt, addrs, svHash };
}
