// Lease signatures: the canonical bytes a claimer signs, and admission of stored leases (forged ones are ignored).

import { MeshdError } from '../shared/errors.ts';
import type { Lease } from './cluster-view.ts';

/** Signs with the local peer's private key. The daemon backs it with the libp2p identity key. */
export interface LeaseSigner {
  readonly peerId: string;
  sign(payload: Uint8Array): Uint8Array | Promise<Uint8Array>;
}

/**
 * Checks that `holder` signed `payload`. Synchronous so that scheduling stays a pure synchronous
 * function; Ed25519 peer ids embed their public key, so no key registry is needed.
 */
export interface LeaseVerifier {
  verify(holder: string, payload: Uint8Array, sig: Uint8Array): boolean;
  /**
   * Verdicts by lease object, when the caller hands the same (immutable) lease objects to every decision:
   * admitting a thousand leases a tick then costs a lookup each, not an encoding and a signature check.
   */
  readonly verdicts?: WeakMap<Lease, boolean>;
}

export type UnsignedLease = Omit<Lease, 'sig'>;

/** A stored lease that was not admitted, and why. */
export interface IgnoredLease {
  readonly lease: Lease;
  readonly reason: string;
}

/** Signing was asked of a signer that is not the lease's holder (a wiring bug in the caller). */
export class LeaseSignatureError extends MeshdError {}

const PAYLOAD_VERSION = 'meshd-lease/1';

/** The exact bytes signed: every field but `sig`, in a fixed order (JSON numbers are canonical in JS). */
export function leaseSigningPayload(lease: UnsignedLease): Uint8Array {
  const fields = [
    PAYLOAD_VERSION,
    lease.slot,
    lease.holder,
    lease.epoch,
    lease.claimedAt,
    lease.rank ?? null,
    lease.releasedAt ?? null,
  ];
  return new TextEncoder().encode(JSON.stringify(fields));
}

/** Throws unless `signer` is the lease's holder: a peer signs only its own leases. */
export function assertOwnLease(lease: UnsignedLease, signer: string): void {
  if (signer === lease.holder) return;
  throw new LeaseSignatureError(
    'E_LEASE_SIGNER',
    `lease for ${lease.slot} names holder ${lease.holder} but the signer is ${signer}`,
    {
      hint: 'A peer signs only its own leases; pass the local peer id as holder.',
      details: { slot: lease.slot, peer: signer },
    },
  );
}

export async function signLease(lease: UnsignedLease, signer: LeaseSigner): Promise<Lease> {
  assertOwnLease(lease, signer.peerId);
  const sig = await signer.sign(leaseSigningPayload(lease));
  return { ...lease, sig: Buffer.from(sig).toString('base64url') };
}

function isNonNegativeInteger(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** What is wrong with a stored lease's fields, or undefined when its shape is usable. */
export function leaseShapeProblem(lease: Lease): string | undefined {
  if (typeof lease.slot !== 'string' || lease.slot === '') return 'slot must be a non-empty string';
  if (typeof lease.holder !== 'string' || lease.holder === '') return 'holder must be a non-empty string';
  if (!isNonNegativeInteger(lease.epoch) || lease.epoch < 1) return 'epoch must be a positive integer';
  if (typeof lease.claimedAt !== 'number' || !Number.isFinite(lease.claimedAt))
    return 'claimedAt must be a number';
  if (lease.rank !== undefined && !isNonNegativeInteger(lease.rank))
    return 'rank must be a non-negative integer';
  if (
    lease.releasedAt !== undefined &&
    (typeof lease.releasedAt !== 'number' || !Number.isFinite(lease.releasedAt))
  ) {
    return 'releasedAt must be a number';
  }
  if (typeof lease.sig !== 'string' || lease.sig === '') return 'sig must be a non-empty string';
  return undefined;
}

/** Splits stored leases into those signed by their holder and those ignored (malformed or forged). */
export function admitLeases(
  leases: readonly Lease[],
  verifier: LeaseVerifier,
): { admitted: Lease[]; ignored: IgnoredLease[] } {
  const admitted: Lease[] = [];
  const ignored: IgnoredLease[] = [];
  for (const lease of leases) {
    const problem = leaseShapeProblem(lease);
    if (problem !== undefined) {
      ignored.push({ lease, reason: `malformed lease: ${problem}` });
      continue;
    }
    let ok = verifier.verdicts?.get(lease);
    if (ok === undefined) {
      try {
        ok = verifier.verify(lease.holder, leaseSigningPayload(lease), Buffer.from(lease.sig, 'base64url'));
      } catch {
        ok = false;
      }
      verifier.verdicts?.set(lease, ok);
    }
    if (ok) admitted.push(lease);
    else ignored.push({ lease, reason: `signature does not verify for holder ${lease.holder}` });
  }
  return { admitted, ignored };
}
