// Tests for compaction: the object and recent history survive, bases are deterministic, concurrent compactions converge.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { podMaterializeContext, storedWebPod } from '../../test/support/stored-objects.ts';
import { seededSigners } from '../../test/support/test-keys.ts';
import { ValidationError } from '../shared/errors.ts';
import { FieldOwnership, ownedFieldsPatch } from './field-ownership.ts';
import {
  type HistoryEntry,
  type MaterializeContext,
  materialize,
  objectAtRevision,
  userFields,
} from './materialize.ts';
import type { JsonObject, JsonValue } from './merge-patch.ts';
import { type CompactionPolicy, planCompaction } from './revision-compaction.ts';
import {
  type BaseRecord,
  canonicalJson,
  type RevisionRecord,
  type Signer,
  signBase,
  signRecord,
} from './revision-records.ts';

const signers = await seededSigners([21, 22, 23]);
const [alice, bob, carol] = signers as [Signer, Signer, Signer];
const key = 'pod/web';
const userPatterns = FieldOwnership.withBuiltins().ownedBy('user');

const context = (): MaterializeContext => podMaterializeContext();

const created: JsonObject = storedWebPod();

function write(
  ctx: MaterializeContext,
  view: readonly unknown[],
  signer: Signer,
  patch: JsonValue,
  controller = 'user',
  message?: string,
): RevisionRecord {
  const m = materialize(key, view, ctx);
  return signRecord(
    {
      v: 1,
      object: key,
      lamport: m.maxLamport + 1,
      parents: m.heads,
      author: { peer: signer.peer, host: 'h', actor: controller },
      controller,
      kind: controller === 'user' ? 'user' : 'system',
      at: 1000 + m.maxLamport,
      ...(message === undefined ? {} : { message }),
      patch,
    },
    signer,
  );
}

/** A user edit of one field chosen by `pick` (all combinations stay valid). */
function edit(
  ctx: MaterializeContext,
  view: readonly unknown[],
  signer: Signer,
  pick: number,
): RevisionRecord | undefined {
  const m = materialize(key, view, ctx);
  if (m.object === null) return undefined;
  const s = structuredClone(m.object.spec) as JsonObject;
  const app = (s.containers as JsonObject).app as JsonObject;
  if (pick % 4 === 0) s.replicas = 1 + (pick % 5);
  else if (pick % 4 === 1)
    app.env = { ...((app.env as JsonObject | undefined) ?? {}), [`K${pick % 3}`]: `v${pick % 9}` };
  else if (pick % 4 === 2) delete app.env;
  else s.restartPolicy = ['always', 'never'][pick % 2] as string;
  const patch = ownedFieldsPatch(m.object, { ...m.object, spec: s }, userPatterns);
  return patch === undefined ? undefined : write(ctx, view, signer, patch, 'user', `edit ${pick}`);
}

/** Runs a compaction on `entries` as a store would: the base added, what it replaces removed. */
function compact(
  ctx: MaterializeContext,
  entries: readonly unknown[],
  signer: Signer,
  policy: CompactionPolicy,
  force = true,
): unknown[] {
  const plan = planCompaction(key, entries, ctx, policy, force);
  if (plan === undefined) return [...entries];
  const base = signBase(plan.base, { peer: signer.peer, host: 'h', actor: 'compaction' }, 5, signer);
  const kept = entries.filter((e) => {
    const c = ctx.check(e);
    return !(c.kind === 'record'
      ? plan.remove.has(c.record.id)
      : c.kind === 'base' && plan.remove.has(c.base.id));
  });
  return [...kept, base];
}

/** A history entry without what compaction itself adds (whether it was compacted, and if restorable). */
function withoutCompacted(h: HistoryEntry) {
  const { compacted: _c, restorable: _r, ...rest } = h;
  return rest;
}

describe('revision compaction', () => {
  it('does nothing under the threshold and folds all but the newest records over it', () => {
    const ctx = context();
    const log: unknown[] = [write(ctx, [], alice, created, 'user', 'create')];
    for (let i = 0; i < 11; i++)
      log.push(edit(ctx, log, alice, i) ?? write(ctx, log, alice, { spec: { replicas: 1 + (i % 3) } }));
    assert.equal(planCompaction(key, log, ctx, { threshold: 12, keep: 4 }), undefined);
    const plan = planCompaction(key, log, ctx, { threshold: 11, keep: 4 });
    assert.equal(plan?.folded, 8);
    assert.equal(plan?.kept, 4);
    assert.equal(plan?.base.summaries.length, 8);
    assert.deepEqual(plan?.base.summaries[0], {
      ...plan?.base.summaries[0],
      lamport: 1,
      message: 'create',
      at: 1000,
    });
  });

  it('preserves the object and the history, and keeps the newest revisions restorable (property)', () => {
    const arb = fc.tuple(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.nat(1000), fc.boolean()), {
        minLength: 3,
        maxLength: 30,
      }),
      fc.integer({ min: 1, max: 8 }),
    );
    fc.assert(
      fc.property(arb, ([steps, keep]) => {
        const ctx = context();
        let entries: unknown[] = [write(ctx, [], alice, created)];
        for (const [who, pick, compactNow] of steps) {
          const r = edit(ctx, entries, signers[who] as Signer, pick);
          if (r !== undefined) entries.push(r);
          if (compactNow) {
            const before = materialize(key, entries, ctx);
            entries = compact(ctx, entries, signers[who] as Signer, { threshold: 0, keep });
            const after = materialize(key, entries, ctx);
            assert.equal(canonicalJson(after.object), canonicalJson(before.object));
            assert.deepEqual(after.history.map(withoutCompacted), before.history.map(withoutCompacted));
            assert.deepEqual(after.heads, before.heads);
            const full = after.history.filter((h) => !h.compacted);
            assert.ok(full.length >= Math.min(keep, before.history.filter((h) => !h.compacted).length));
            for (const h of full)
              assert.deepEqual(
                objectAtRevision(key, entries, ctx, h.id).object,
                objectAtRevision(key, [...entries], ctx, h.id).object,
              );
          }
        }
      }),
      { numRuns: 40 },
    );
  });

  it('writes the same base id for the same records, whoever compacts; duplicates collapse', () => {
    const ctx = context();
    const log: unknown[] = [write(ctx, [], alice, created)];
    for (let i = 0; i < 10; i++)
      log.push(
        edit(ctx, log, signers[i % 3] as Signer, i * 7 + 1) ??
          write(ctx, log, alice, { spec: { replicas: 2 } }),
      );
    const byAlice = compact(ctx, log, alice, { threshold: 0, keep: 3 });
    const byBob = compact(ctx, log, bob, { threshold: 0, keep: 3 });
    const baseA = byAlice.at(-1) as BaseRecord;
    const baseB = byBob.at(-1) as BaseRecord;
    assert.equal(baseA.id, baseB.id);
    assert.notEqual(baseA.sig, baseB.sig);
    const merged = [...new Set([...byAlice, ...byBob])];
    const m = materialize(key, merged, ctx);
    assert.deepEqual(m.bases, [baseA.id]);
    assert.equal(canonicalJson(m.object), canonicalJson(materialize(key, log, ctx).object));
  });

  it('converges when peers compact different views concurrently, and loses no edit (property)', () => {
    const step = fc.tuple(
      fc.integer({ min: 0, max: 2 }),
      fc.constantFrom('edit', 'edit', 'sync', 'compact'),
      fc.nat(1000),
      fc.integer({ min: 0, max: 2 }),
    );
    fc.assert(
      fc.property(fc.array(step, { minLength: 4, maxLength: 40 }), (steps) => {
        const ctx = context();
        const first = write(ctx, [], alice, created);
        // Each replica as Yjs keeps it: every entry it received, and the ids deleted (delete sets union).
        const replicas = signers.map(() => ({
          entries: new Map<string, unknown>([[first.id, first]]),
          deleted: new Set<string>(),
        }));
        const view = (r: (typeof replicas)[number]) =>
          [...r.entries].filter(([id]) => !r.deleted.has(id)).map(([, e]) => e);
        const ever: unknown[] = [first];
        for (const [who, op, pick, other] of steps) {
          const r = replicas[who] as (typeof replicas)[number];
          if (op === 'edit') {
            const rec = edit(ctx, view(r), signers[who] as Signer, pick);
            if (rec !== undefined) {
              r.entries.set(rec.id, rec);
              ever.push(rec);
            }
          } else if (op === 'compact') {
            const plan = planCompaction(key, view(r), ctx, { threshold: 0, keep: pick % 4 }, true);
            if (plan === undefined) continue;
            const base = signBase(
              plan.base,
              { peer: signers[who]?.peer ?? '', host: 'h', actor: 'compaction' },
              5,
              signers[who] as Signer,
            );
            for (const id of plan.remove) if (id !== base.id) r.deleted.add(id);
            r.entries.set(base.id, base);
          } else {
            const to = replicas[other] as (typeof replicas)[number];
            for (const [id, e] of r.entries) to.entries.set(id, e);
            for (const id of r.deleted) to.deleted.add(id);
          }
        }
        for (const a of replicas)
          for (const b of replicas) {
            for (const [id, e] of a.entries) b.entries.set(id, e);
            for (const id of a.deleted) b.deleted.add(id);
          }
        const m = materialize(key, view(replicas[0] as (typeof replicas)[number]), ctx);
        const reference = materialize(key, ever, ctx);
        assert.equal(canonicalJson(m.object), canonicalJson(reference.object));
        assert.deepEqual(new Set(m.history.map((h) => h.id)), new Set(reference.history.map((h) => h.id)));
        assert.ok(m.history.every((h) => h.rejected === undefined));
        assert.ok(m.bases.length >= (replicas.some((x) => x.deleted.size > 0) ? 1 : 0));
      }),
      { numRuns: 80 },
    );
  });

  it('applies a record that arrives after its era was compacted as if it had been there', () => {
    const ctx = context();
    const log: unknown[] = [write(ctx, [], alice, created)];
    const partition = [...log];
    for (let i = 0; i < 8; i++) log.push(write(ctx, log, alice, { spec: { replicas: 1 + (i % 4) } }));
    // Bob, partitioned since revision 1, changes another field and one Alice also changes later.
    const late = write(ctx, partition, bob, {
      spec: { restartPolicy: 'never', containers: { app: { env: { FROM: 'bob' } } } },
    });
    const compacted = compact(ctx, log, alice, { threshold: 0, keep: 2 });
    const m = materialize(key, [...compacted, late], ctx);
    const reference = materialize(key, [...log, late], ctx);
    assert.equal(canonicalJson(m.object), canonicalJson(reference.object));
    assert.equal(at(m.object ?? null, 'spec', 'restartPolicy'), 'never');
    const entry = m.history.find((h) => h.id === late.id);
    assert.equal(entry?.concurrent, true);
    assert.equal(entry?.rejected, undefined);
  });

  it('caps summaries, dropping status writes first, and still accepts records built on dropped ones', () => {
    const ctx = context();
    let log: unknown[] = [write(ctx, [], alice, created, 'user', 'create')];
    const early = [...log];
    for (let i = 0; i < 12; i++) {
      log.push(
        i % 3 === 0
          ? write(ctx, log, alice, { spec: { replicas: 1 + (i % 4) } }, 'user', `scale ${i}`)
          : write(ctx, log, bob, { status: { restarts: i } }, 'runtime'),
      );
    }
    const before = materialize(key, log, ctx);
    log = compact(ctx, log, alice, { threshold: 0, keep: 2, maxSummaries: 4, restorePoints: 0 });
    const m = materialize(key, log, ctx);
    assert.equal(canonicalJson(m.object), canonicalJson(before.object));
    const listed = m.history.filter((h) => h.compacted);
    assert.equal(listed.length, 4);
    assert.deepEqual(
      listed.map((h) => h.controller),
      ['user', 'user', 'user', 'user'],
      'status writes are dropped first',
    );
    assert.deepEqual(
      listed.map((h) => h.message),
      ['scale 0', 'scale 3', 'scale 6', 'scale 9'],
    );
    // Dropped: six status writes and, the cap still exceeded, the oldest user revision.
    assert.deepEqual(m.dropped && { count: m.dropped.count, lamport: m.dropped.upTo[0] }, {
      count: 7,
      lamport: 10,
    });
    assert.equal(m.maxLamport, 13);
    // A peer partitioned since revision 1 writes now: its parent's summary was dropped, yet it applies.
    const late = write(ctx, early, carol, { spec: { restartPolicy: 'never' } });
    assert.equal(
      materialize(key, [...log, late], ctx).history.find((h) => h.id === late.id)?.rejected,
      undefined,
    );
    // One built on a record whose summary was dropped is not left waiting for it.
    const dropped = before.history.find((h) => h.controller === 'runtime');
    assert.ok(dropped);
    const onDropped = signRecord(
      {
        v: 1,
        object: key,
        lamport: dropped.lamport + 1,
        parents: [dropped.id],
        author: { peer: carol.peer, host: 'h', actor: 'runtime' },
        controller: 'runtime',
        kind: 'system',
        at: 1,
        patch: { status: { phase: 'running' } },
      },
      carol,
    );
    const withLate = materialize(key, [...log, onDropped], ctx);
    assert.equal(withLate.history.find((h) => h.id === onDropped.id)?.rejected, undefined);
    assert.equal(at(withLate.object ?? null, 'status', 'phase'), 'running');
    // But such a parent bounds the lamport by the dropped era: no inflation through it.
    const inflated = signRecord(
      { ...onDropped, lamport: 1000, patch: { status: { phase: 'failed' } } } as Parameters<
        typeof signRecord
      >[0],
      carol,
    );
    const withInflated = materialize(key, [...log, inflated], ctx);
    assert.match(
      withInflated.history.find((h) => h.id === inflated.id)?.rejected ?? '',
      /lamport 1000 does not follow/,
    );
    // Who wrote the dropped revisions stays counted: six status writes by bob's runtime, alice's create.
    assert.deepEqual(
      m.dropped?.by?.map((b) => [b.author.actor, b.controller, b.count]),
      [
        ['runtime', 'runtime', 6],
        ['user', 'user', 1],
      ],
    );
    // Compaction never drops the summaries of the heads the next records build on.
    assert.ok(m.heads.every((h) => m.history.some((e) => e.id === h)));
  });

  it('keeps the newest folded user revisions restorable, exactly as they were (property)', () => {
    const arb = fc.tuple(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.nat(1000), fc.boolean(), fc.boolean()), {
        minLength: 3,
        maxLength: 25,
      }),
      fc.integer({ min: 0, max: 4 }),
      fc.integer({ min: 0, max: 6 }),
    );
    fc.assert(
      fc.property(arb, ([steps, keep, points]) => {
        const ctx = context();
        let entries: unknown[] = [write(ctx, [], alice, created, 'user', 'create')];
        for (const [who, pick, status, compactNow] of steps) {
          const signer = signers[who] as Signer;
          const r = status
            ? write(ctx, entries, signer, { status: { restarts: pick % 7 } }, 'runtime')
            : edit(ctx, entries, signer, pick);
          if (r !== undefined) entries.push(r);
          if (!compactNow) continue;
          const prior = [...entries];
          const before = materialize(key, prior, ctx);
          entries = compact(ctx, entries, signer, { threshold: 0, keep, restorePoints: points });
          const after = materialize(key, entries, ctx);
          const users = before.history.filter(
            (h) => (h.kind === 'user' || h.kind === 'rollback') && h.rejected === undefined,
          );
          const newest = new Set(users.slice(Math.max(0, users.length - points)).map((h) => h.id));
          for (const h of before.history) {
            const a = after.history.find((x) => x.id === h.id);
            if (a === undefined || h.rejected !== undefined) continue;
            // Restorable before, and still full or among the newest `points` user revisions.
            const keepsIt = (!h.compacted || h.restorable === true) && (!a.compacted || newest.has(h.id));
            if (!keepsIt) continue;
            assert.ok(!a.compacted || a.restorable === true, `${h.revision} stays restorable`);
            const was = objectAtRevision(key, prior, ctx, h.id).object;
            const now = objectAtRevision(key, entries, ctx, h.id).object;
            assert.equal(canonicalJson(userOnly(now)), canonicalJson(userOnly(was)), h.revision);
          }
          assert.ok(after.history.filter((h) => h.restorable === true).length <= points);
          for (const h of after.history.filter((x) => x.compacted && x.restorable !== true))
            assert.throws(() => objectAtRevision(key, entries, ctx, h.id), /was compacted/);
        }
      }),
      { numRuns: 40 },
    );
  });

  it('refuses to roll back to a compacted revision, saying so', () => {
    const ctx = context();
    let log: unknown[] = [write(ctx, [], alice, created)];
    for (let i = 0; i < 6; i++) log.push(write(ctx, log, alice, { spec: { replicas: 2 + i } }));
    log = compact(ctx, log, alice, { threshold: 0, keep: 2, restorePoints: 0 });
    assert.throws(
      () => objectAtRevision(key, log, ctx, 2),
      (e: unknown) =>
        e instanceof ValidationError &&
        e.code === 'E_REVISION_COMPACTED' &&
        e.message ===
          'revision 2 of pod/web was compacted: its author, time and message are kept, its content is not' &&
        /revision 6 or later/.test(e.hint ?? ''),
    );
    assert.equal(at(objectAtRevision(key, log, ctx, 6).object ?? null, 'spec', 'replicas'), 6);
  });

  it('ignores bases with a bad signature or for another object', () => {
    const ctx = context();
    const log: unknown[] = [write(ctx, [], alice, created)];
    for (let i = 0; i < 4; i++) log.push(write(ctx, log, alice, { spec: { replicas: 2 + i } }));
    const plan = planCompaction(key, log, ctx, { threshold: 0, keep: 1 }, true);
    assert.ok(plan);
    const forged = {
      ...signBase(
        { ...plan.base, state: ['d', [9, 'x', 'y']] },
        { peer: carol.peer, host: 'h', actor: 'c' },
        1,
        carol,
      ),
      sig: 'AAAA',
    };
    const foreign = signBase(
      { ...plan.base, object: 'pod/other' },
      { peer: carol.peer, host: 'h', actor: 'c' },
      1,
      carol,
    );
    const m = materialize(key, [...log, forged, foreign], ctx);
    assert.equal(canonicalJson(m.object), canonicalJson(materialize(key, log, ctx).object));
    assert.equal(m.problems.length, 2);
    assert.match(m.problems.join('\n'), /signature does not verify/);
    assert.match(m.problems.join('\n'), /belongs to pod\/other/);
  });
});

/** What a rollback restores of an object: its user-owned fields. */
function userOnly(o: JsonObject | null): JsonObject | null {
  return o === null ? null : userFields(o, FieldOwnership.withBuiltins());
}

/** The value at `path` inside `obj`, or undefined. */
function at(obj: JsonValue | undefined, ...path: string[]): JsonValue | undefined {
  let v = obj;
  for (const k of path) v = v !== null && typeof v === 'object' && !Array.isArray(v) ? v[k] : undefined;
  return v;
}
