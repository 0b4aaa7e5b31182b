// Deterministic Ed25519 keys and signers for tests: the same seed gives the same key (and peer id) on every run.

import { generateKeyPairFromSeed } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { ed25519LeaseSigner, type SyncLeaseSigner } from '../../src/daemon/lease-store.ts';
import { ed25519Signer, type Signer } from '../../src/state/revision-records.ts';

/** The Ed25519 key whose 32-byte seed is `seed` repeated. */
export function seededKey(seed: number): Promise<PrivateKey> {
  return generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(seed));
}

/** One record signer per seed, in order. */
export function seededSigners(seeds: readonly number[]): Promise<Signer[]> {
  return Promise.all(seeds.map(async (n) => ed25519Signer(await seededKey(n))));
}

/** One lease signer per seed, in order. */
export function seededLeaseSigners(seeds: readonly number[]): Promise<SyncLeaseSigner[]> {
  return Promise.all(seeds.map(async (n) => ed25519LeaseSigner(await seededKey(n))));
}
