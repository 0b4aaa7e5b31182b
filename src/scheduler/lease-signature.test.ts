// Tests lease signing and admission with real libp2p Ed25519 identities: a forged lease is never admitted.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { isMeshdError } from '../shared/errors.ts';
import { claimLease, decideClaims, releaseLease } from './lease-claims.ts';
import {
  admitLeases,
  type LeaseSigner,
  type LeaseVerifier,
  leaseSigningPayload,
  signLease,
} from './lease-signature.ts';
import { node, pod, T0, view } from './view-fixtures.ts';

/** The adapter the daemon wires: sign with the identity key, verify with the key inside the peer id. */
function libp2pSigner(key: PrivateKey): LeaseSigner {
  return { peerId: peerIdFromPrivateKey(key).toString(), sign: (payload) => key.sign(payload) };
}

const libp2pVerifier: LeaseVerifier = {
  verify(holder, payload, sig) {
    const publicKey = peerIdFromString(holder).publicKey;
    if (publicKey === undefined) return false;
    const ok = publicKey.verify(payload, sig);
    if (typeof ok !== 'boolean') throw new Error('asynchronous verification is not supported');
    return ok;
  },
};

describe('lease signatures with Ed25519 peer identities', () => {
  it('admits a lease signed by its holder and ignores one signed by anybody else', async () => {
    const aKey = await generateKeyPair('Ed25519');
    const bKey = await generateKeyPair('Ed25519');
    const a = libp2pSigner(aKey);
    const b = libp2pSigner(bKey);

    const genuine = await signLease(claimLease({ slot: 'pod/web#0', epoch: 1, rank: 0 }, a.peerId, T0), a);
    // b writes a lease naming a as holder with a higher epoch, signed with b's own key.
    const unsigned = claimLease({ slot: 'pod/web#0', epoch: 9, rank: 0 }, a.peerId, T0);
    const forged = {
      ...unsigned,
      sig: Buffer.from(await bKey.sign(leaseSigningPayload(unsigned))).toString('base64url'),
    };
    // And a genuine signature whose fields were altered afterwards.
    const tampered = { ...genuine, epoch: 5 };

    const { admitted, ignored } = admitLeases([forged, genuine, tampered], libp2pVerifier);
    assert.deepEqual(admitted, [genuine]);
    assert.equal(ignored.length, 2);
    assert.ok(ignored.every((i) => i.reason === `signature does not verify for holder ${a.peerId}`));

    // decideClaims sees only the genuine lease: a holds at epoch 1.
    const nodes = [node('a', { peerId: a.peerId }), node('b', { peerId: b.peerId })];
    const v = view({ nodes, pods: [pod('web')], leases: [forged, genuine, tampered] });
    const d = decideClaims(a.peerId, v, T0, { verifier: libp2pVerifier });
    assert.deepEqual(d.hold, [{ slot: 'pod/web#0', epoch: 1 }]);
    assert.equal(d.ignored.length, 2);

    // A release is signed like a claim.
    const released = await signLease(releaseLease(genuine, T0 + 1), a);
    assert.equal(admitLeases([released], libp2pVerifier).admitted.length, 1);
  });

  it('refuses to sign a lease for another holder', async () => {
    const a = libp2pSigner(await generateKeyPair('Ed25519'));
    const other = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString();
    await assert.rejects(
      signLease(claimLease({ slot: 'pod/web#0', epoch: 1 }, other, T0), a),
      (err: unknown) => isMeshdError(err) && err.code === 'E_LEASE_SIGNER',
    );
  });

  it('ignores a lease whose holder is not a peer id', () => {
    const bogus = { slot: 'pod/web#0', holder: 'not-a-peer-id', epoch: 1, claimedAt: T0, sig: 'AAAA' };
    assert.equal(admitLeases([bogus], libp2pVerifier).admitted.length, 0);
  });
});
