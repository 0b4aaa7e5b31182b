// Tests for revision records: canonical bytes, content ids, Ed25519 signatures from peer ids, labels and references.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKeyPair, generateKeyPairFromSeed } from '@libp2p/crypto/keys';
import { NotFoundError, ValidationError } from '../shared/errors.ts';
import {
  canonicalJson,
  createEntryChecker,
  ed25519Signer,
  peerIdVerifier,
  resolveRevision,
  revisionLabels,
  type Signer,
  signRecord,
  type UnsignedRecord,
  type Verifier,
} from './revision-records.ts';

const alice = ed25519Signer(await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(7)));

function unsigned(
  signer: Signer,
  patch: UnsignedRecord['patch'] = { spec: { replicas: 2 } },
): UnsignedRecord {
  return {
    v: 1,
    object: 'pod/web',
    lamport: 1,
    parents: [],
    author: { peer: signer.peer, host: 'nas', actor: 'alice' },
    controller: 'user',
    kind: 'user',
    at: 1,
    patch,
  };
}

describe('revision records', () => {
  it('hashes canonical JSON: key order does not change the id', () => {
    assert.equal(canonicalJson({ b: 1, a: [{ d: null, c: 'x' }] }), '{"a":[{"c":"x","d":null}],"b":1}');
    const one = signRecord(unsigned(alice, { spec: { a: 1, b: 2 } }), alice);
    const two = signRecord(unsigned(alice, { spec: { b: 2, a: 1 } }), alice);
    assert.equal(one.id, two.id);
    assert.match(one.id, /^[0-9a-f]{32}$/);
  });

  it('verifies signatures with the key inside the peer id, and refuses anything altered', () => {
    const check = createEntryChecker(peerIdVerifier());
    const r = signRecord(unsigned(alice), alice);
    assert.deepEqual(check(r), { kind: 'record', record: r });
    const resigned = { ...r, lamport: 2 };
    assert.match((check(resigned) as { problem?: string }).problem ?? '', /id does not match/);
    const badSig = { ...r, sig: Buffer.alloc(64).toString('base64url') };
    assert.match((check(badSig) as { problem?: string }).problem ?? '', /signature does not verify/);
    const notAPeer = signRecord(unsigned({ peer: 'not-a-peer-id', sign: alice.sign }), {
      peer: 'not-a-peer-id',
      sign: alice.sign,
    });
    assert.match(
      (check(notAPeer) as { problem?: string }).problem ?? '',
      /signature does not verify for peer not-a-peer-id/,
    );
    assert.throws(
      () => signRecord(unsigned(alice), { peer: 'someone-else', sign: alice.sign }),
      /is not the signing peer/,
    );
  });

  it('works with a freshly generated libp2p key', async () => {
    const signer = ed25519Signer(await generateKeyPair('Ed25519'));
    const r = signRecord(unsigned(signer), signer);
    assert.equal(createEntryChecker(peerIdVerifier())(r).kind, 'record');
    assert.equal((createEntryChecker(peerIdVerifier())(r) as { problem?: string }).problem, undefined);
  });

  it('refuses malformed entries with a reason and memoizes verification', () => {
    let calls = 0;
    const counting: Verifier = {
      verify: (peer, payload, sig) => {
        calls++;
        return peerIdVerifier().verify(peer, payload, sig);
      },
    };
    const check = createEntryChecker(counting);
    const r = signRecord(unsigned(alice), alice);
    check(r);
    check(r);
    assert.equal(calls, 1);
    const cases: [unknown, RegExp][] = [
      [42, /not an object/],
      [{ ...r, v: 2 }, /unsupported entry version 2/],
      [{ ...r, extra: 1 }, /unknown field extra/],
      [{ ...r, lamport: 0 }, /lamport is not a positive integer/],
      [{ ...r, parents: ['x'] }, /parents are not a list of record ids/],
      [{ ...r, kind: 'magic' }, /unknown kind magic/],
      [{ ...r, author: { peer: alice.peer, host: 'nas' } }, /author\.actor/],
      [{ ...r, patch: { a: Number.POSITIVE_INFINITY } }, /patch: a is not a finite number/],
      [{ ...r, object: 'web' }, /object key is not kind\/name/],
    ];
    for (const [entry, reason] of cases) {
      const c = check(entry);
      assert.equal(c.kind, 'malformed', String(reason));
      assert.match((c as { reason: string }).reason, reason);
    }
  });

  it('labels revisions with their number, adding an id prefix only when concurrent records share it', () => {
    const rows = [
      { lamport: 1, id: 'aaaa0000' },
      { lamport: 2, id: '3fa2aaaa' },
      { lamport: 2, id: '3fa3bbbb' },
      { lamport: 3, id: 'cccc0000' },
    ];
    assert.deepEqual(revisionLabels(rows), ['1', '2@3fa2', '2@3fa3', '3']);
    const history = revisionLabels(rows).map((revision, i) => ({
      ...(rows[i] as { lamport: number; id: string }),
      revision,
      author: { peer: 'p', host: 'h', actor: i === 1 ? 'alice' : 'bob' },
      controller: 'user',
    }));
    assert.equal(resolveRevision('pod/web', history, 3).id, 'cccc0000');
    assert.equal(resolveRevision('pod/web', history, '2@3fa3').id, '3fa3bbbb');
    assert.equal(resolveRevision('pod/web', history, '1@aa').id, 'aaaa0000', 'a suffix is always accepted');
    assert.equal(resolveRevision('pod/web', history, 'cccc').id, 'cccc0000');
    assert.throws(
      () => resolveRevision('pod/web', history, '2'),
      (e: unknown) =>
        e instanceof ValidationError &&
        e.message ===
          'revision 2 of pod/web is ambiguous: concurrent edits share it: 2@3fa2 (alice via user), 2@3fa3 (bob via user)' &&
        /--to 2@3fa2/.test(e.hint ?? ''),
    );
    assert.throws(
      () => resolveRevision('pod/web', history, 9),
      (e: unknown) => e instanceof NotFoundError && /pod\/web has no revision 9/.test(e.message),
    );
    assert.throws(() => resolveRevision('pod/web', history, 'latest'), /"latest" is not a revision/);
  });
});
