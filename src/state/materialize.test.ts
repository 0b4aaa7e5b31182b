// Tests for materialize: convergence under any delivery order, concurrency, rejections with reasons, delete, rollback.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  podMaterializeContext,
  seededUnitRandom,
  storedWebPod,
  valueAt,
} from '../../test/support/stored-objects.ts';
import { seededSigners } from '../../test/support/test-keys.ts';
import { ValidationError } from '../shared/errors.ts';
import { FieldOwnership, ownedFieldsPatch } from './field-ownership.ts';
import { type MaterializeContext, type Materialized, materialize, objectAtRevision } from './materialize.ts';
import { applyMergePatch, type JsonObject, type JsonValue } from './merge-patch.ts';
import {
  canonicalJson,
  createEntryChecker,
  peerIdVerifier,
  type RecordKind,
  type RevisionRecord,
  resolveRevision,
  type Signer,
  signRecord,
} from './revision-records.ts';

const signers = await seededSigners([1, 2, 3, 4]);
const [alice, bob, carol, mallory] = signers as [Signer, Signer, Signer, Signer];
const ownership = FieldOwnership.withBuiltins();
const userFields = ownership.ownedBy('user');
const key = 'pod/web';

const context = (): MaterializeContext => podMaterializeContext(ownership);
const pod = storedWebPod;

interface WriteOpts {
  controller?: string;
  kind?: RecordKind;
  lamport?: number;
  parents?: string[];
  message?: string;
  at?: number;
}

/** A record written by `signer` on top of `view` (what that peer has seen). */
function write(
  ctx: MaterializeContext,
  view: readonly unknown[],
  signer: Signer,
  patch: JsonValue,
  o: WriteOpts = {},
): RevisionRecord {
  const m = materialize(key, view, ctx);
  return signRecord(
    {
      v: 1,
      object: key,
      lamport: o.lamport ?? m.maxLamport + 1,
      parents: o.parents ?? m.heads,
      author: { peer: signer.peer, host: `host-${signer.peer.slice(-4)}`, actor: o.controller ?? 'alice' },
      controller: o.controller ?? 'user',
      kind: o.kind ?? (patch === null ? 'delete' : 'user'),
      at: o.at ?? 1_700_000_000_000,
      ...(o.message === undefined ? {} : { message: o.message }),
      patch,
    },
    signer,
  );
}

/** What must be equal on every peer: the object and the whole history. */
function fingerprint(m: Materialized): string {
  return canonicalJson({ object: m.object, history: m.history as unknown as JsonValue, heads: m.heads });
}

function spec(m: Materialized): JsonValue | undefined {
  return m.object?.spec;
}

describe('materialize', () => {
  it('numbers a single writer’s revisions 1, 2, 3 and folds the patches', () => {
    const ctx = context();
    const log: RevisionRecord[] = [];
    log.push(write(ctx, log, alice, pod()));
    log.push(write(ctx, log, alice, { spec: { replicas: 2 } }, { message: 'scale' }));
    log.push(write(ctx, log, alice, { spec: { containers: { app: { env: { A: 'x' } } } } }));
    const m = materialize(key, log, ctx);
    assert.deepEqual(
      m.history.map((h) => [h.revision, h.concurrent, h.rejected]),
      [
        ['1', false, undefined],
        ['2', false, undefined],
        ['3', false, undefined],
      ],
    );
    assert.equal(m.revision, '3');
    assert.equal(m.history[1]?.message, 'scale');
    assert.deepEqual(spec(m), {
      containers: { app: { command: ['serve'], order: 0, env: { A: 'x' } } },
      restartPolicy: 'always',
      availability: 'best-effort',
      replicas: 2,
    });
  });

  it('merges concurrent edits field by field; one deterministic winner per field; both kept and marked', () => {
    const ctx = context();
    const base = [write(ctx, [], alice, pod())];
    const a = write(ctx, base, alice, { spec: { replicas: 3, containers: { app: { env: { FROM: 'a' } } } } });
    const b = write(ctx, base, bob, {
      spec: { restartPolicy: 'never', containers: { app: { env: { FROM: 'b' } } } },
    });
    const m = materialize(key, [...base, b, a], ctx);
    const s = spec(m) as JsonObject;
    assert.equal(s.replicas, 3, 'a’s field applies');
    assert.equal(s.restartPolicy, 'never', 'b’s field applies');
    const winner = alice.peer > bob.peer ? 'a' : 'b';
    assert.deepEqual((s.containers as JsonObject).app, {
      command: ['serve'],
      order: 0,
      env: { FROM: winner },
    });
    const [h1, h2] = m.history.slice(1);
    assert.ok(h1?.concurrent && h2?.concurrent);
    assert.equal(h1?.lamport, 2);
    assert.equal(h2?.lamport, 2);
    assert.match(h1?.revision ?? '', /^2@[0-9a-f]{4,}$/);
    assert.notEqual(h1?.revision, h2?.revision);
    assert.throws(
      () => resolveRevision(key, m.history, 2),
      (e: unknown) =>
        e instanceof ValidationError &&
        e.code === 'E_AMBIGUOUS_REVISION' &&
        e.message.includes(h1?.revision ?? '?') &&
        e.message.includes(h2?.revision ?? '?'),
    );
    assert.equal(resolveRevision(key, m.history, h2?.revision ?? '').id, h2?.id);
    // The next edit saw both: it is not concurrent, and its number follows both.
    const c = write(ctx, [...base, a, b], carol, { spec: { replicas: 4 } });
    assert.deepEqual(c.parents.sort(), [a.id, b.id].sort());
    const m2 = materialize(key, [...base, a, b, c], ctx);
    assert.deepEqual(
      m2.history.map((h) => h.revision.split('@')[0]),
      ['1', '2', '2', '3'],
    );
    assert.equal(m2.history[3]?.concurrent, false);
  });

  it('marks records concurrent when neither saw the other, even with different numbers', () => {
    const ctx = context();
    const log = [write(ctx, [], alice, pod())];
    const side = [...log];
    log.push(write(ctx, log, alice, { spec: { replicas: 2 } }));
    log.push(write(ctx, log, alice, { spec: { replicas: 3 } }));
    side.push(write(ctx, side, bob, { spec: { restartPolicy: 'never' } }));
    const m = materialize(key, [...log, ...side], ctx);
    assert.deepEqual(
      m.history.map((h) => [h.revision, h.author.peer === bob.peer, h.concurrent]),
      [
        ['1', false, false],
        ['2@' + m.history[1]?.id.slice(0, 4), m.history[1]?.author.peer === bob.peer, true],
        ['2@' + m.history[2]?.id.slice(0, 4), m.history[2]?.author.peer === bob.peer, true],
        ['3', false, true],
      ],
    );
  });

  it('converges: any delivery order, duplication or partition of the same records gives the same object (property)', () => {
    const opArb = fc.record({
      peer: fc.integer({ min: 0, max: 2 }),
      op: fc.constantFrom('user', 'user', 'runtime', 'scheduler', 'sync', 'sync'),
      to: fc.integer({ min: 0, max: 2 }),
      pick: fc.integer({ min: 0, max: 1000 }),
    });
    const arb = fc.tuple(
      fc.array(opArb, { minLength: 1, maxLength: 24 }),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    );
    fc.assert(
      fc.property(arb, ([ops, seed]) => {
        const ctx = context();
        const peers = [alice, bob, carol];
        const created = write(ctx, [], alice, pod());
        const views: Map<string, RevisionRecord>[] = peers.map(() => new Map([[created.id, created]]));
        for (const o of ops) {
          const view = views[o.peer] as Map<string, RevisionRecord>;
          if (o.op === 'sync') {
            for (const [id, r] of view) views[o.to]?.set(id, r);
            continue;
          }
          const m = materialize(key, [...view.values()], ctx);
          let patch: JsonValue | undefined;
          if (o.op === 'user')
            patch = ownedFieldsPatch(m.object, mutate(m.object as JsonObject, o.pick), userFields);
          else if (o.op === 'runtime')
            patch = { status: { phase: ['running', 'failed'][o.pick % 2] as string, restarts: o.pick % 5 } };
          else patch = { status: { placement: { node: `n${o.pick % 3}` } } };
          if (patch === undefined) continue;
          const r = write(ctx, [...view.values()], peers[o.peer] as Signer, patch, { controller: o.op });
          view.set(r.id, r);
        }
        const all = [...new Set(views.flatMap((v) => [...v.values()]))];
        const reference = materialize(key, all, ctx);
        assert.ok(
          reference.history.every((h) => h.rejected === undefined),
          'every generated edit is valid',
        );
        // Field-level merge = RFC 7386 folded in (lamport, peer) order.
        let folded: JsonValue | undefined;
        for (const r of [...all].sort(
          (x, y) =>
            x.lamport - y.lamport ||
            (x.author.peer < y.author.peer ? -1 : x.author.peer > y.author.peer ? 1 : x.id < y.id ? -1 : 1),
        )) {
          folded = applyMergePatch(folded, r.patch);
        }
        assert.deepEqual(reference.object, folded);
        // Shuffled, duplicated, seen through fresh checkers: identical object and history.
        const rand = seededUnitRandom(seed);
        for (let k = 0; k < 3; k++) {
          const delivered = [...all, ...all.filter(() => rand() < 0.3)].sort(() => rand() - 0.5);
          const fresh = { ...ctx, check: createEntryChecker(peerIdVerifier()) };
          assert.equal(fingerprint(materialize(key, delivered, fresh)), fingerprint(reference));
        }
        // Peers that hold the same records agree, whatever else they saw before.
        for (const v of views) {
          if (v.size === all.length)
            assert.equal(fingerprint(materialize(key, [...v.values()], ctx)), fingerprint(reference));
        }
      }),
      { numRuns: 60 },
    );
  });

  it('rejects forged, tampered, unowned, invalid and inflated records with reasons, and the object survives', () => {
    const ctx = context();
    const log: RevisionRecord[] = [write(ctx, [], alice, pod())];
    log.push(write(ctx, log, alice, { spec: { replicas: 2 } }));
    const good = materialize(key, log, ctx);

    // Mallory writes a record claiming to be Alice (correct id, Mallory's signature).
    const asAlice: Signer = { peer: alice.peer, sign: (payload) => mallory.sign(payload) };
    const claimed = write(ctx, log, asAlice, { spec: { replicas: 9 } });
    const forged = write(ctx, log, mallory, { spec: { replicas: 9 } });
    // A genuine record whose patch was altered in transit.
    const tampered = { ...write(ctx, log, bob, { spec: { replicas: 5 } }), patch: { spec: { replicas: 7 } } };
    // The runtime trying to change the spec; a user writing status; an invalid object.
    const unowned = write(ctx, log, carol, { spec: { replicas: 6 } }, { controller: 'runtime' });
    const userStatus = write(ctx, log, carol, { status: { phase: 'running' } });
    const invalid = write(ctx, log, bob, { spec: { replicas: 0 } });
    // A lamport far ahead of its parents (to win every conflict), and a record built on it.
    const inflated = write(ctx, log, mallory, { spec: { replicas: 8 } }, { lamport: 1_000_000 });
    const onInflated = write(
      ctx,
      [...log, inflated],
      mallory,
      { spec: { replicas: 8 } },
      { parents: [inflated.id], lamport: 1_000_001 },
    );
    const orphan = write(ctx, log, bob, { spec: { replicas: 4 } }, { parents: ['f'.repeat(32)] });
    const after = write(ctx, log, bob, { spec: { restartPolicy: 'never' } });

    const m = materialize(
      key,
      [...log, claimed, tampered, unowned, userStatus, invalid, inflated, onInflated, orphan, after, 'junk'],
      ctx,
    );
    const reason = (id: string) => m.history.find((h) => h.id === id)?.rejected;
    assert.match(reason(claimed.id) ?? '', new RegExp(`signature does not verify for peer ${alice.peer}`));
    assert.match(reason(tampered.id) ?? '', /id does not match the record content/);
    assert.match(
      reason(unowned.id) ?? '',
      /controller "runtime" may not write spec\.replicas: it is owned by "user"/,
    );
    assert.match(
      reason(userStatus.id) ?? '',
      /controller "user" may not write status\.phase: it is owned by "runtime"/,
    );
    assert.match(
      reason(invalid.id) ?? '',
      /invalid pod: spec\.replicas: expected a whole number from 1 to 1000/,
    );
    assert.match(reason(inflated.id) ?? '', /lamport 1000000 does not follow its parents \(expected 3\)/);
    assert.match(reason(onInflated.id) ?? '', /builds on invalid record/);
    assert.match(reason(orphan.id) ?? '', /waiting for 1 earlier record/);
    assert.equal(m.history.find((h) => h.id === orphan.id)?.pending, true);
    assert.equal(reason(after.id), undefined);
    assert.deepEqual(m.problems, ['entry is not an object']);
    assert.deepEqual(m.object, applyMergePatch(good.object ?? undefined, after.patch));
    assert.equal(m.maxLamport, 3, 'rejected lamports do not inflate the next number');
    assert.deepEqual(m.heads.sort(), [after.id, invalid.id, unowned.id, userStatus.id].sort());

    // A forged copy with a genuine record's id cannot hide the genuine one, in either order.
    const fakeCopy = { ...after, sig: forged.sig };
    for (const entries of [
      [...log, fakeCopy, after],
      [...log, after, fakeCopy],
    ]) {
      const mm = materialize(key, entries, ctx);
      assert.equal(mm.history.find((h) => h.id === after.id)?.rejected, undefined);
      assert.equal(valueAt(mm.object ?? null, 'spec', 'restartPolicy'), 'never');
    }
  });

  it('keeps heads and numbers right while a record waits for a parent that has not arrived', () => {
    const ctx = context();
    const base = [write(ctx, [], alice, pod())];
    const a2 = write(ctx, base, alice, { spec: { replicas: 2 } });
    const b2 = write(ctx, base, bob, { spec: { restartPolicy: 'never' } });
    const c3 = write(ctx, [...base, a2, b2], carol, { spec: { replicas: 3 } });
    // This peer has c3 and a2 but not b2 yet: c3 waits, and a2 is still a head.
    const m = materialize(key, [...base, a2, c3], ctx);
    assert.equal(m.history.find((h) => h.id === c3.id)?.pending, true);
    assert.deepEqual(m.heads, [a2.id]);
    assert.equal(m.maxLamport, 2);
    assert.equal(valueAt(m.object ?? null, 'spec', 'replicas'), 2);
    const next = materialize(key, [...base, a2, c3, b2], ctx);
    assert.equal(valueAt(next.object ?? null, 'spec', 'replicas'), 3, 'applied once its parent arrives');
    assert.deepEqual(next.heads, [c3.id]);
  });

  it('keeps a deleted object’s history readable and lets it be re-created', () => {
    const ctx = context();
    const log: RevisionRecord[] = [write(ctx, [], alice, pod())];
    log.push(write(ctx, log, alice, { status: { phase: 'running' } }, { controller: 'runtime' }));
    const side = [...log];
    log.push(write(ctx, log, alice, null, { message: 'gone' }));
    // A status write from a peer that had not seen the delete.
    const late = write(ctx, side, bob, { status: { restarts: 1 } }, { controller: 'runtime' });
    let m = materialize(key, [...log, late], ctx);
    assert.equal(m.object, null);
    assert.equal(m.deleted, true);
    assert.equal(m.history.length, 4);
    const lateEntry = m.history.find((h) => h.id === late.id);
    if (alice.peer < bob.peer)
      assert.match(lateEntry?.rejected ?? '', /the object does not exist \(deleted or never created\)/);
    assert.match(
      materialize(key, [write(ctx, [], alice, { spec: { replicas: 2 } })], ctx).history[0]?.rejected ?? '',
      /does not exist/,
    );
    log.push(late);
    log.push(write(ctx, log, alice, pod({ replicas: 5 })));
    m = materialize(key, log, ctx);
    assert.equal(m.deleted, false);
    assert.equal(valueAt(m.object ?? null, 'spec', 'replicas'), 5);
    assert.equal(m.object?.status, undefined, 'the old status does not come back');
    const nullPatch = write(ctx, log, alice, null, { kind: 'user' });
    const withNull = materialize(key, [...log, nullPatch], ctx);
    assert.match(
      withNull.history.find((h) => h.id === nullPatch.id)?.rejected ?? '',
      /only a delete record may carry a null patch/,
    );
  });

  it('rollback restores exactly revision N’s spec (property)', () => {
    const arb = fc.tuple(
      fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: 1, maxLength: 12 }),
      fc.nat(),
      fc.array(fc.nat(), { maxLength: 3 }),
    );
    fc.assert(
      fc.property(arb, ([picks, target, statusAt]) => {
        const ctx = context();
        const log: RevisionRecord[] = [write(ctx, [], alice, pod())];
        picks.forEach((p, i) => {
          const m = materialize(key, log, ctx);
          const patch = ownedFieldsPatch(m.object, mutate(m.object as JsonObject, p), userFields);
          if (patch !== undefined) log.push(write(ctx, log, alice, patch));
          if (statusAt.includes(i))
            log.push(write(ctx, log, bob, { status: { phase: `p${i}` } }, { controller: 'runtime' }));
        });
        const before = materialize(key, log, ctx);
        const ref = (before.history[target % before.history.length]?.revision ?? '1') as string;
        const { object: wanted } = objectAtRevision(key, log, ctx, ref);
        const patch = ownedFieldsPatch(before.object, wanted as JsonObject, userFields);
        if (patch !== undefined) log.push(write(ctx, log, alice, patch, { kind: 'rollback' }));
        const after = materialize(key, log, ctx);
        assert.equal(canonicalJson(after.object?.spec ?? null), canonicalJson(wanted?.spec ?? null));
        assert.deepEqual(after.object?.status, before.object?.status, 'status is not rolled back');
      }),
      { numRuns: 60 },
    );
  });
});

/** A random valid change of the user-owned fields, removals (nulls in the patch) included. */
function mutate(object: JsonObject, pick: number): JsonObject {
  const s = structuredClone(object.spec) as JsonObject;
  const app = (s.containers as JsonObject).app as JsonObject;
  const env = { ...((app.env as JsonObject | undefined) ?? {}) };
  const v = `v${pick % 7}`;
  switch (pick % 6) {
    case 0:
      s.replicas = 1 + (pick % 4);
      break;
    case 1:
      env[`K${pick % 3}`] = v;
      app.env = env;
      break;
    case 2:
      delete env[`K${pick % 3}`];
      if (Object.keys(env).length === 0) delete app.env;
      else app.env = env;
      break;
    case 3:
      app.command = ['serve', v];
      break;
    case 4:
      if (pick % 2 === 0) s.placement = { labels: { zone: v } };
      else delete s.placement;
      break;
    default:
      s.restartPolicy = ['always', 'on-failure', 'never'][pick % 3] as string;
  }
  return { kind: 'Pod', name: 'web', spec: s };
}
