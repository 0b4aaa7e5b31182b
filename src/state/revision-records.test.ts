// Tests for revision records: canonical bytes, content ids, Ed25519 signatures from peer ids, labels and references.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { seededKey } from '../../test/support/test-keys.ts';
import { NotFoundError, ValidationError } from '../shared/errors.ts';
import type { JsonValue } from './merge-patch.ts';
import {
  type BaseRecord,
  canonicalJson,
  createEntryChecker,
  ed25519Signer,
  peerIdVerifier,
  resolveRevision,
  revisionLabels,
  type Signer,
  signBase,
  signRecord,
  type UnsignedBase,
  type UnsignedRecord,
  type Verifier,
} from './revision-records.ts';

const alice = ed25519Signer(await seededKey(7));

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

  it('stores bases compactly (v2) and reads back exactly what was folded', () => {
    const check = createEntryChecker(peerIdVerifier());
    const base = sampleBase(alice.peer);
    const stored = signBase(base, compactor, 9, alice);
    const c = check(stored);
    assert.equal(c.kind, 'base');
    assert.equal((c as { problem?: string }).problem, undefined);
    const { v: _v, id: _id, compactor: _c, at: _at, sig: _s, ...read } = (c as { base: BaseRecord }).base;
    assert.deepEqual(read, base);
    // The same content under the old JSON shape (v1) takes far more room.
    const v1 = canonicalJson(v1Body(base)).length;
    assert.ok(
      canonicalJson(stored as unknown as JsonValue).length < v1 * 0.7,
      `v2 ${canonicalJson(stored as unknown as JsonValue).length} vs v1 ${v1}`,
    );
    // Whoever compacts, the id depends only on the content.
    const bob = signBase(base, { ...compactor, host: 'other' }, 10, alice);
    assert.equal(bob.id, stored.id);
  });

  it('still reads bases written in the v1 shape', () => {
    const base = sampleBase(alice.peer);
    const { restore: _r, dropped: _d, ...rest } = base;
    const old: UnsignedBase = {
      ...rest,
      dropped: { count: 7, upTo: [3, alice.peer, 'c'.repeat(32)], firstAt: 1, lastAt: 2 },
    };
    const body = v1Body(old) as Record<string, JsonValue>;
    const id = createHash('sha256')
      .update(`meshd/base/v1\n${canonicalJson(body)}`)
      .digest('hex')
      .slice(0, 32);
    const payload = new TextEncoder().encode(
      `meshd/base-sig/v1\n${canonicalJson({ id, compactor: { ...compactor }, at: 9 })}`,
    );
    const entry = {
      ...body,
      id,
      compactor,
      at: 9,
      sig: Buffer.from(alice.sign(payload)).toString('base64url'),
    };
    const c = createEntryChecker(peerIdVerifier())(entry);
    assert.equal(c.kind, 'base');
    assert.equal((c as { problem?: string }).problem, undefined);
    assert.deepEqual((c as { base: BaseRecord }).base.summaries, base.summaries);
    assert.deepEqual((c as { base: BaseRecord }).base.dropped, old.dropped);
    assert.deepEqual((c as { base: BaseRecord }).base.state, base.state);
  });

  it('refuses malformed or altered v2 bases with a reason', () => {
    const check = createEntryChecker(peerIdVerifier());
    const stored = signBase(sampleBase(alice.peer), compactor, 9, alice) as unknown as Record<
      string,
      unknown
    >;
    const summaries = stored.summaries as unknown[][];
    const cases: [unknown, RegExp][] = [
      [{ ...stored, extra: 1 }, /unknown field extra/],
      [{ ...stored, cut: 99 }, /cut is not a stamp/],
      [{ ...stored, who: [[9, 'h', 'a', 'user']] }, /an author is not/],
      [
        { ...stored, summaries: [[...(summaries[0] ?? []).slice(0, 2), 42, 0, 1]] },
        /a summary has no author/,
      ],
      [{ ...stored, summaries: [['x', 1, 0, 0, 1]] }, /a summary lacks id/],
      [{ ...stored, restore: [[42, {}]] }, /a restore point is not/],
      [{ ...stored, state: ['v', 77, 1] }, /state is not a field tree/],
      [{ ...stored, dropped: [1, 0, 1, 2] }, /dropped is not/],
    ];
    for (const [entry, reason] of cases) {
      const c = check(entry);
      assert.equal(c.kind, 'malformed', String(reason));
      assert.match((c as { reason: string }).reason, reason);
    }
    const altered = check({ ...stored, texts: ['changed', ...(stored.texts as string[]).slice(1)] });
    assert.match((altered as { problem?: string }).problem ?? '', /id does not match/);
    const forged = check({ ...stored, sig: Buffer.alloc(64).toString('base64url') });
    assert.match((forged as { problem?: string }).problem ?? '', /signature does not verify/);
  });
});

const compactor = { peer: alice.peer, host: 'nas', actor: 'compaction' };

/** A base as compaction would build it: summaries, an aggregate of dropped ones, restore points, a tree. */
function sampleBase(peer: string): UnsignedBase {
  const id = (n: number) => n.toString(16).padStart(32, '0');
  const summaries = Array.from({ length: 20 }, (_, i) => ({
    id: id(i + 10),
    lamport: i + 10,
    author: { peer, host: 'nas', actor: i % 3 === 0 ? 'alice' : 'runtime' },
    controller: i % 3 === 0 ? 'user' : 'runtime',
    kind: i % 3 === 0 ? ('user' as const) : ('system' as const),
    at: 1767225600000 + i * 60_000 + (i === 5 ? 0.5 : 0),
    concurrent: i === 7,
    ...(i % 3 === 0 ? { message: `scale ${i}` } : { message: 'slot 0 running' }),
    ...(i === 9 ? { rollbackTo: id(3), rejected: 'builds on invalid record 00000000' } : {}),
  }));
  return {
    kind: 'base',
    object: 'pod/web',
    cut: [29, peer, id(29)],
    heads: [id(29)],
    summaries,
    dropped: {
      count: 9,
      upTo: [9, peer, id(9)],
      firstAt: 1,
      lastAt: 2,
      by: [{ author: { peer, host: 'nas', actor: 'runtime' }, controller: 'runtime', count: 9 }],
    },
    restore: [
      { id: id(28), patch: {} },
      { id: id(25), patch: { spec: { replicas: 2 } } },
    ],
    state: [
      'o',
      [1, peer, id(1)],
      {
        kind: ['v', [1, peer, id(1)], 'Pod'],
        spec: [
          'o',
          [1, peer, id(1)],
          { replicas: ['v', [25, peer, id(25)], 3] },
          [0, '', ''],
          [25, peer, id(25)],
        ],
        status: ['d', [20, peer, id(20)]],
      },
      [0, '', ''],
      [25, peer, id(25)],
    ],
  };
}

/** The v1 JSON body of a base (full summaries, stamps inline), as bases were stored before v2. */
function v1Body(b: UnsignedBase): JsonValue {
  return {
    v: 1,
    kind: 'base',
    object: b.object,
    cut: [...b.cut],
    heads: b.heads,
    summaries: b.summaries.map((s) => ({
      id: s.id,
      lamport: s.lamport,
      author: { ...s.author },
      controller: s.controller,
      kind: s.kind,
      at: s.at,
      concurrent: s.concurrent,
      ...(s.message === undefined ? {} : { message: s.message }),
      ...(s.rollbackTo === undefined ? {} : { rollbackTo: s.rollbackTo }),
      ...(s.rejected === undefined ? {} : { rejected: s.rejected }),
    })),
    state: b.state as unknown as JsonValue,
    ...(b.dropped === undefined
      ? {}
      : {
          dropped: {
            count: b.dropped.count,
            upTo: [...b.dropped.upTo],
            firstAt: b.dropped.firstAt,
            lastAt: b.dropped.lastAt,
          },
        }),
  };
}
