// Leases in the cluster document: one signed entry per (slot, holder), each written only by its holder.

import type { PrivateKey } from '@libp2p/interface';
import * as Y from 'yjs';
import type { Lease } from '../scheduler/cluster-view.ts';
import { compareLeases } from '../scheduler/lease-claims.ts';
import {
  admitLeases,
  assertOwnLease,
  LeaseSignatureError,
  type LeaseSigner,
  type LeaseVerifier,
  leaseSigningPayload,
  type UnsignedLease,
} from '../scheduler/lease-signature.ts';
import { ed25519Signer, peerIdVerifier } from '../state/revision-records.ts';

/**
 * Layout: the top-level `doc.getMap('leases')`, key `${slot}|${holder}`, value a plain signed `Lease`.
 * No two peers ever write the same key (0004: a single entry per slot would let Yjs settle concurrent
 * claims by client id and lose the higher epoch), and a holder only ever overwrites its own entry with a
 * lease that beats it (`compareLeases`), so the highest epoch of every slot survives any merge order.
 */
export const leasesMapName = 'leases';

/** A signer whose signature is ready at once (Ed25519 in node:crypto), so a claim is one synchronous step. */
export interface SyncLeaseSigner extends LeaseSigner {
  sign(payload: Uint8Array): Uint8Array;
}

/** An entry of the leases map that is not even shaped like a lease (or sits under the wrong key), and why. */
export interface RejectedLeaseEntry {
  readonly key: string;
  readonly reason: string;
}

/** Transaction origin of the store's own writes, so its listeners can tell them from remote ones. */
export const leaseWriteOrigin: unique symbol = Symbol('meshd-lease-write');

export function leaseKey(slot: string, holder: string): string {
  return `${slot}|${holder}`;
}

/** Signs leases with the node's libp2p Ed25519 identity key. */
export function ed25519LeaseSigner(privateKey: PrivateKey): SyncLeaseSigner {
  const s = ed25519Signer(privateKey);
  return { peerId: s.peer, sign: (payload) => s.sign(payload) };
}

/**
 * Verifies a lease against the Ed25519 public key inside its holder's peer id (no key registry). Every
 * decision re-admits every stored lease: `verdicts` keeps each lease object's verdict, and the store
 * hands out the same object for the same stored value, so a lease is verified once, not every second.
 */
export function peerIdLeaseVerifier(): LeaseVerifier {
  const v = peerIdVerifier();
  return { verdicts: new WeakMap(), verify: (holder, payload, sig) => v.verify(holder, payload, sig) };
}

/** `signLease`, synchronously: the holder must be the signer. */
export function signLeaseNow(lease: UnsignedLease, signer: SyncLeaseSigner): Lease {
  assertOwnLease(lease, signer.peerId);
  const sig = Buffer.from(signer.sign(leaseSigningPayload(lease))).toString('base64url');
  return { ...lease, sig };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Y.AbstractType)
  );
}

/** The lease fields of a stored value, copied (unknown fields dropped); shape checks are `admitLeases`'s. */
function leaseOf(value: Record<string, unknown>): Lease {
  const out: Record<string, unknown> = {
    slot: value.slot,
    holder: value.holder,
    epoch: value.epoch,
    claimedAt: value.claimedAt,
    sig: value.sig,
  };
  if (value.rank !== undefined) out.rank = value.rank;
  if (value.releasedAt !== undefined) out.releasedAt = value.releasedAt;
  return out as unknown as Lease;
}

/** Reads every lease entry of the document and writes this peer's own, signed. */
export class LeaseStore {
  readonly doc: Y.Doc;
  private readonly map: Y.Map<unknown>;
  private readonly signer: SyncLeaseSigner;
  private readonly verifier: LeaseVerifier;
  /** Lease objects by the stored value they were read from (values in a Y.Map never change in place). */
  private readonly parsed = new WeakMap<object, Lease>();

  constructor(doc: Y.Doc, signer: SyncLeaseSigner, verifier: LeaseVerifier) {
    this.doc = doc;
    this.map = doc.getMap<unknown>(leasesMapName);
    this.signer = signer;
    this.verifier = verifier;
  }

  /** This peer's id: the only holder this store writes for. */
  get self(): string {
    return this.signer.peerId;
  }

  /**
   * Every entry shaped like an object under its own `${slot}|${holder}` key, as stored: forged or
   * malformed fields are left for `admitLeases`, which ignores them with a reason.
   */
  all(): Lease[] {
    return this.read().leases;
  }

  /** Entries that `all()` leaves out because they are not lease objects or sit under another key. */
  rejected(): RejectedLeaseEntry[] {
    return this.read().rejected;
  }

  private read(): { leases: Lease[]; rejected: RejectedLeaseEntry[] } {
    const leases: Lease[] = [];
    const rejected: RejectedLeaseEntry[] = [];
    for (const [key, value] of this.map.entries()) {
      if (!isRecord(value)) {
        rejected.push({ key: `leases/${key}`, reason: 'not a lease object' });
        continue;
      }
      if (typeof value.slot !== 'string' || typeof value.holder !== 'string') {
        rejected.push({ key: `leases/${key}`, reason: 'slot and holder must be strings' });
        continue;
      }
      if (key !== leaseKey(value.slot, value.holder)) {
        rejected.push({
          key: `leases/${key}`,
          reason: `stored under the wrong key (its slot and holder make ${leaseKey(value.slot, value.holder)})`,
        });
        continue;
      }
      // the same stored value gives the same Lease object, so verdicts by object carry across reads
      let lease = this.parsed.get(value);
      if (lease === undefined) {
        lease = leaseOf(value);
        this.parsed.set(value, lease);
      }
      leases.push(lease);
    }
    leases.sort((a, b) => (a.slot < b.slot ? -1 : a.slot > b.slot ? 1 : compareLeases(a, b)));
    rejected.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { leases, rejected };
  }

  /**
   * This peer's own entry for `slot` (undefined when it never claimed it). An entry someone else forged over
   * this peer's key does not count: it must not keep this peer from writing its real lease back.
   */
  own(slot: string): Lease | undefined {
    const value = this.map.get(leaseKey(slot, this.self));
    if (!isRecord(value)) return undefined;
    const lease = leaseOf(value);
    return lease.slot === slot && admitLeases([lease], this.verifier).admitted.length === 1
      ? lease
      : undefined;
  }

  /** Signs `unsigned` (holder = this peer) and writes it; see `writeAll`. */
  sign(unsigned: UnsignedLease): Lease {
    return signLeaseNow(unsigned, this.signer);
  }

  /** Writes one signed lease of this peer's; see `writeAll`. */
  write(lease: Lease): boolean {
    return this.writeAll([lease]) === 1;
  }

  /**
   * Writes signed leases of this peer's in one transaction (one document update), each only where it beats
   * the stored entry (`compareLeases`): a stale or repeated write changes nothing. Returns how many were
   * written. Throws LeaseSignatureError for a lease held by another peer.
   */
  writeAll(leases: readonly Lease[]): number {
    for (const lease of leases) {
      if (lease.holder !== this.self) {
        throw new LeaseSignatureError(
          'E_LEASE_NOT_OWN',
          `lease for ${lease.slot} is held by ${lease.holder}; this peer (${this.self}) writes only its own`,
          {
            hint: 'This is a bug in the caller: claim and release through the ClaimLoop of the holder.',
            details: { slot: lease.slot, peer: lease.holder },
          },
        );
      }
    }
    const fresh = leases.filter((lease) => {
      const stored = this.own(lease.slot);
      return stored === undefined || compareLeases(lease, stored) < 0;
    });
    if (fresh.length === 0) return 0;
    this.doc.transact(() => {
      for (const lease of fresh) this.map.set(leaseKey(lease.slot, lease.holder), { ...lease });
    }, leaseWriteOrigin);
    return fresh.length;
  }

  /**
   * Calls `listener` after every transaction (local or remote) that changed a lease entry; `local` is true
   * for this store's own writes. Returns an unsubscribe.
   */
  onChange(listener: (local: boolean) => void): () => void {
    const handler = (tr: Y.Transaction): void => {
      const map: unknown = this.map;
      if (![...tr.changed.keys()].some((type) => type === map)) return;
      try {
        listener(tr.origin === leaseWriteOrigin);
      } catch (err) {
        // Throwing inside a Yjs event would abort the rest of the transaction's cleanup: surface it later.
        queueMicrotask(() => {
          throw err;
        });
      }
    };
    this.doc.on('afterTransaction', handler);
    return () => this.doc.off('afterTransaction', handler);
  }
}
