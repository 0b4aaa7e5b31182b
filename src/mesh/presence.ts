// Presence beacons: who a peer is, where to reach it and a digest of its doc, msgpack-encoded and signed.

import { createPublicKey, type KeyObject, verify as verifySignature } from 'node:crypto';
import type { PrivateKey, PublicKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { Packr, Unpackr } from 'msgpackr';
import { describeError, PeerProtocolError } from '../shared/errors.ts';

export interface Presence {
  v: 2;
  peerId: string;
  name: string;
  /** Increases with every beacon of one run of the peer. */
  seq: number;
  /** The sender's clock (ms); only ever compared with the same sender's earlier beacons. */
  sentAt: number;
  /**
   * Dialable multiaddrs of the sender, each ending in /p2p/<peerId>. Sent when they changed and every few
   * beacons, so a missing field means "as before", and a peer that missed the change learns it soon.
   */
  addrs?: string[];
  /** `docDigest` of the sender's document when it sent the beacon. */
  svHash: string;
}

/** A beacon whose fields are well-formed but whose signature has not been checked yet. */
export interface OpenedPresence {
  presence: Presence;
  body: Uint8Array;
  sig: Uint8Array;
}

const limits = { name: 256, addrs: 64, addr: 512, peerId: 128, svHash: 128 } as const;
const badPresenceHint =
  'The peer runs an incompatible or broken meshd; upgrade it or `meshd node forget` it.';

// Signatures cover a per-mesh context string, so a presence signature can never be replayed as anything else
// (libp2p signs its own records with the same key under different domains).
function signedBytes(meshId: string, body: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from(`meshd/${meshId}/presence/2\n`), body]);
}

/** Encodes and signs a beacon: msgpack `{ v: 2, body, sig }` where `body` is the msgpack of the presence. */
export async function encodePresence(
  presence: Presence,
  key: PrivateKey,
  meshId: string,
): Promise<Uint8Array> {
  const packr = new Packr({ useRecords: false });
  const body = packr.pack(presence);
  const sig = await key.sign(signedBytes(meshId, body));
  return packr.pack({ v: 2, body, sig });
}

function badPresence(from: string, bytes: number, why: string): PeerProtocolError {
  return new PeerProtocolError(
    'E_PEER_BAD_PRESENCE',
    `peer ${from} relayed an invalid presence message: ${why}`,
    {
      hint: badPresenceHint,
      details: { peer: from, bytes },
    },
  );
}

/**
 * Parses a beacon without checking its signature (see `PresenceVerifier`). Anything malformed or oversized is
 * a `PeerProtocolError` naming `from` (the peer that handed it to us).
 */
export function openPresence(bytes: Uint8Array, maxBytes: number, from: string): OpenedPresence {
  if (bytes.byteLength > maxBytes)
    throw badPresence(from, bytes.byteLength, `${bytes.byteLength} bytes exceeds the ${maxBytes}-byte limit`);
  // a fresh decoder per message: msgpackr keeps record definitions on the instance, and those must never
  // carry over from one peer's message to the next
  const envelope = unpackUntrusted(bytes);
  if (
    !isRecord(envelope) ||
    envelope.v !== 2 ||
    !(envelope.body instanceof Uint8Array) ||
    !(envelope.sig instanceof Uint8Array)
  ) {
    throw badPresence(from, bytes.byteLength, 'envelope is not { v: 2, body, sig }');
  }
  const presence = parsePresence(unpackUntrusted(envelope.body));
  if (typeof presence === 'string') throw badPresence(from, bytes.byteLength, presence);
  return { presence, body: envelope.body, sig: envelope.sig };
}

type CachedKey = { kind: 'node'; key: KeyObject } | { kind: 'libp2p'; key: PublicKey };

/**
 * Checks beacon signatures against the public key inside the claimed peer id. Building a key object costs
 * more than the verification itself, so one is kept per peer (up to `maxKeys`, oldest dropped first).
 */
export class PresenceVerifier {
  private readonly meshId: string;
  private readonly maxKeys: number;
  private readonly keys = new Map<string, CachedKey>();

  constructor(meshId: string, maxKeys = 4096) {
    this.meshId = meshId;
    this.maxKeys = maxKeys;
  }

  /** Resolves when the signature is the claimed peer's; otherwise rejects with a `PeerProtocolError` naming `from`. */
  async verify(opened: OpenedPresence, from: string): Promise<void> {
    const { presence, body, sig } = opened;
    let verified: boolean;
    try {
      const key = this.keyOf(presence.peerId);
      const data = signedBytes(this.meshId, body);
      verified =
        key.kind === 'node' ? verifySignature(null, data, key.key, sig) : await key.key.verify(data, sig);
    } catch (err) {
      throw badPresence(
        from,
        body.byteLength,
        `cannot check the signature of ${presence.peerId} (${describeError(err)})`,
      );
    }
    if (!verified)
      throw badPresence(from, body.byteLength, `signature does not match peer ${presence.peerId}`);
  }

  private keyOf(peerId: string): CachedKey {
    const cached = this.keys.get(peerId);
    if (cached !== undefined) return cached;
    const publicKey = peerIdFromString(peerId).publicKey;
    if (publicKey === undefined) throw new Error('peer id does not embed a public key');
    // Ed25519 (every meshd identity) goes straight to node:crypto; other key types keep libp2p's verify
    const key: CachedKey =
      publicKey.type === 'Ed25519'
        ? {
            kind: 'node',
            key: createPublicKey({
              format: 'jwk',
              key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(publicKey.raw).toString('base64url') },
            }),
          }
        : { kind: 'libp2p', key: publicKey };
    if (this.keys.size >= this.maxKeys) {
      const oldest = this.keys.keys().next();
      if (oldest.done !== true) this.keys.delete(oldest.value);
    }
    this.keys.set(peerId, key);
    return key;
  }
}

/** Opens and verifies a beacon; anything malformed, oversized or unverifiable is a `PeerProtocolError`. */
export async function decodePresence(
  bytes: Uint8Array,
  meshId: string,
  maxBytes: number,
  from: string,
  verifier: PresenceVerifier = new PresenceVerifier(meshId),
): Promise<Presence> {
  const opened = openPresence(bytes, maxBytes, from);
  await verifier.verify(opened, from);
  return opened.presence;
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
  if (v !== 2) return `unsupported version ${String(v)}`;
  if (typeof peerId !== 'string' || peerId.length === 0 || peerId.length > limits.peerId)
    return 'peerId is not a short string';
  if (typeof name !== 'string' || name.length > limits.name)
    return 'name is not a string of at most 256 characters';
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0)
    return 'seq is not a non-negative integer';
  if (typeof sentAt !== 'number' || !Number.isFinite(sentAt)) return 'sentAt is not a number';
  if (typeof svHash !== 'string' || svHash.length > limits.svHash) return 'svHash is not a short string';
  if (addrs === undefined) return { v: 2, peerId, name, seq, sentAt, svHash };
  if (!Array.isArray(addrs) || addrs.length > limits.addrs)
    return 'addrs is not a list of at most 64 entries';
  if (!addrs.every((a): a is string => typeof a === 'string' && a.length <= limits.addr))
    return 'addrs holds a non-string';
  return { v: 2, peerId, name, seq, sentAt, addrs, svHash };
}
