// Tests for the object store: apply/get/history/rollback/delete on a Y.Doc, and convergence across replicas.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import * as Y from 'yjs';
import { podMaterializeContext, seededUnitRandom, valueAt } from '../../test/support/stored-objects.ts';
import { seededSigners } from '../../test/support/test-keys.ts';
import { ManualClock } from '../shared/clock.ts';
import { MeshdError, NotFoundError, OwnershipError, ValidationError } from '../shared/errors.ts';
import { createLogger } from '../shared/logger.ts';
import { FieldOwnership } from './field-ownership.ts';
import { type Materialized, materialize } from './materialize.ts';
import type { JsonObject, JsonValue } from './merge-patch.ts';
import {
  ObjectStore,
  objectArrayName,
  objectBaseMapName,
  objectLogName,
  objectLogPrefix,
} from './object-store.ts';
import { type Pod, parsePodSpec, podFromStored, storedPodProblem, toStoredPod } from './pod-spec.ts';
import type { CompactionPolicy } from './revision-compaction.ts';
import {
  canonicalJson,
  peerIdVerifier,
  type RevisionRecord,
  type Signer,
  signRecord,
} from './revision-records.ts';

const signers = await seededSigners([11, 12, 13]);

function author(signer: Signer, actor = 'alice') {
  return { peer: signer.peer, host: `host${signers.indexOf(signer)}`, actor };
}

function store(
  doc: Y.Doc,
  signer: Signer,
  compaction: CompactionPolicy | false = false,
  clock = new ManualClock(),
): ObjectStore {
  return new ObjectStore(doc, {
    signer,
    verifier: peerIdVerifier(),
    ownership: FieldOwnership.withBuiltins(),
    clock,
    host: `host${signers.indexOf(signer)}`,
    compaction,
  });
}

/**
 * One replica per signer, each with its own store under `policy`. A replica's local updates wait in the others'
 * inboxes until `deliver(j, all)` hands replica j all of them, or a random part, in an order drawn from `rand`.
 */
function gossipingReplicas(rand: () => number, policy: CompactionPolicy) {
  const docs = signers.map(() => new Y.Doc());
  const stores = docs.map((d, i) => store(d, signers[i] as Signer, policy));
  const inbox: Uint8Array[][] = docs.map(() => []);
  for (const [i, d] of docs.entries()) {
    d.on('update', (u: Uint8Array, origin: unknown) => {
      if (origin === 'remote') return;
      for (const [j, box] of inbox.entries()) if (j !== i) box.push(u);
    });
  }
  const deliver = (j: number, all: boolean) => {
    const box = inbox[j] as Uint8Array[];
    const take = box.filter(() => all || rand() < 0.6).sort(() => rand() - 0.5);
    inbox[j] = box.filter((u) => !take.includes(u));
    for (const u of take) Y.applyUpdate(docs[j] as Y.Doc, u, 'remote');
  };
  return { docs, stores, deliver };
}

const web = (replicas = 1, greeting = 'hello'): Pod =>
  parsePodSpec(
    `kind: Pod
name: web
spec:
  containers:
    - name: app
      command: [python3, -m, http.server, "\${PORT_HTTP}"]
      env: { GREETING: ${greeting} }
      ports: [{ name: http }]
      resources: { cpu: 0.25, memory: 64Mi }
  replicas: ${replicas}
`,
    'web.yaml',
  );

function fingerprint(m: Materialized | undefined): string {
  return canonicalJson({
    object: m?.object ?? null,
    history: (m?.history ?? []) as unknown as JsonValue,
    heads: m?.heads ?? [],
  });
}

describe('ObjectStore', () => {
  it('applies a spec, makes no revision for an identical one, and numbers edits 1, 2, …', () => {
    const clock = new ManualClock();
    const s = store(new Y.Doc(), signers[0] as Signer, false, clock);
    const first = s.applyPod(web(), author(signers[0] as Signer), 'create');
    assert.equal(first?.lamport, 1);
    assert.equal(s.applyPod(web(), author(signers[0] as Signer)), undefined, 'identical spec: no revision');
    clock.advance(1000);
    s.applyPod(web(2), author(signers[0] as Signer, 'bob'), 'scale to 2');
    const m = s.get('pod/web');
    assert.equal(m?.revision, '2');
    assert.equal(valueAt(m?.object ?? null, 'spec', 'replicas'), 2);
    assert.deepEqual(
      m?.history.map((h) => [h.revision, h.author.actor, h.kind, h.message, h.at - Date.UTC(2026, 0, 1)]),
      [
        ['1', 'alice', 'user', 'create', 0],
        ['2', 'bob', 'user', 'scale to 2', 1000],
      ],
    );
    assert.deepEqual(s.keys(), ['pod/web']);
    assert.equal(s.list('pod').length, 1);
    assert.equal(s.get('pod/none'), undefined);
  });

  it('refuses writes that would be rejected, and writes nothing', () => {
    const doc = new Y.Doc();
    const s = store(doc, signers[0] as Signer);
    const me = author(signers[0] as Signer);
    s.applyPod(web(), me);
    assert.throws(
      () =>
        s.append('pod/web', {
          controller: 'runtime',
          kind: 'system',
          author: me,
          patch: { spec: { replicas: 3 } },
        }),
      (e: unknown) => e instanceof OwnershipError && /owned by "user"/.test(e.message),
    );
    assert.throws(
      () =>
        s.append('pod/web', {
          controller: 'user',
          kind: 'user',
          author: me,
          patch: { spec: { replicas: 0 } },
        }),
      (e: unknown) =>
        e instanceof ValidationError && e.code === 'E_INVALID_OBJECT' && /spec\.replicas/.test(e.message),
    );
    assert.throws(
      () =>
        s.append('pod/ghost', {
          controller: 'runtime',
          kind: 'system',
          author: me,
          patch: { status: { phase: 'running' } },
        }),
      /does not exist/,
    );
    assert.throws(
      () =>
        s.append('pod/web', {
          controller: 'user',
          kind: 'user',
          author: me,
          patch: { spec: { replicas: undefined } } as unknown as JsonValue,
        }),
      (e: unknown) =>
        e instanceof ValidationError &&
        e.code === 'E_PATCH_NOT_JSON' &&
        /spec\.replicas is not JSON/.test(e.message),
    );
    assert.equal(storedEntries(doc).length, 1);
    assert.equal(doc.getArray(objectLogName(signers[0]?.peer ?? '')).length, 1, "in the author's log");
    s.append('pod/web', {
      controller: 'runtime',
      kind: 'system',
      author: { ...me, actor: 'runtime' },
      patch: { status: { phase: 'running' } },
    });
    assert.equal(valueAt(s.get('pod/web')?.object ?? null, 'status', 'phase'), 'running');
  });

  it('rolls back to a revision, leaving status alone, and explains bad references', () => {
    const s = store(new Y.Doc(), signers[0] as Signer);
    const me = author(signers[0] as Signer);
    s.applyPod(web(1, 'one'), me);
    s.applyPod(web(3, 'two'), me);
    s.append('pod/web', {
      controller: 'runtime',
      kind: 'system',
      author: me,
      patch: { status: { phase: 'running' } },
    });
    const r = s.rollback('pod/web', 1, me);
    assert.equal(r?.kind, 'rollback');
    const m = s.get('pod/web');
    assert.equal(m?.history.at(-1)?.message, 'rollback to revision 1');
    assert.equal(m?.history.at(-1)?.rollbackTo, m?.history[0]?.id);
    assert.deepEqual(m?.object?.spec, toStoredPod(web(1, 'one')).spec);
    assert.equal(valueAt(m?.object ?? null, 'status', 'phase'), 'running');
    assert.equal(s.rollback('pod/web', 1, me), undefined, 'already equal: no revision');
    assert.deepEqual(s.objectAt('pod/web', 2).object?.spec, toStoredPod(web(3, 'two')).spec);
    assert.equal(s.objectAt('pod/web', '2').entry.revision, '2');
    assert.throws(() => s.rollback('pod/web', 42, me), NotFoundError);
  });

  it('deletes with a tombstone, keeps history, and re-creates on apply', () => {
    const s = store(new Y.Doc(), signers[0] as Signer);
    const me = author(signers[0] as Signer);
    s.applyPod(web(), me);
    s.delete('pod/web', me, 'bye');
    const m = s.get('pod/web');
    assert.equal(m?.object, null);
    assert.equal(m?.deleted, true);
    assert.deepEqual(
      m?.history.map((h) => h.kind),
      ['user', 'delete'],
    );
    assert.equal(s.list('pod').length, 0);
    assert.equal(s.list('pod', { includeDeleted: true }).length, 1);
    assert.throws(
      () => s.delete('pod/web', me),
      (e: unknown) => e instanceof NotFoundError && /already deleted/.test(e.message),
    );
    assert.throws(
      () => s.rollback('pod/web', 2, me),
      (e: unknown) => e instanceof MeshdError && e.code === 'E_ROLLBACK_TO_DELETED',
    );
    s.rollback('pod/web', 1, me);
    assert.equal(s.get('pod/web')?.deleted, false);
  });

  it('compacts past the threshold: object and recent history kept, old revisions summarized', () => {
    const doc = new Y.Doc();
    const lines: string[] = [];
    const s = new ObjectStore(doc, {
      signer: signers[0] as Signer,
      verifier: peerIdVerifier(),
      ownership: FieldOwnership.withBuiltins(),
      clock: new ManualClock(),
      logger: createLogger({ write: (l) => lines.push(l) }),
      compaction: { threshold: 30, keep: 10, maxSummaries: 500 },
    });
    const me = author(signers[0] as Signer);
    s.applyPod(web(1), me, 'create');
    for (let i = 2; i <= 75; i++) s.applyPod(web(1 + (i % 9), `g${i}`), me, `edit ${i}`);
    const m = s.get('pod/web') as Materialized;
    assert.ok(storedEntries(doc).length <= 31, 'bounded log');
    assert.equal(doc.getArray(objectArrayName('pod/web')).length, 0, 'nothing in the old per-object array');
    assert.equal(doc.getMap(objectBaseMapName('pod/web')).size, 1, 'one live base');
    assert.equal(m.history.length, 75);
    assert.deepEqual(
      m.history.map((h) => h.lamport),
      Array.from({ length: 75 }, (_, i) => i + 1),
    );
    assert.equal(m.history[0]?.message, 'create');
    assert.ok(m.history[0]?.compacted);
    assert.ok(m.history.filter((h) => !h.compacted).length >= 10);
    assert.equal(valueAt(m.object ?? null, 'spec', 'replicas'), 1 + (75 % 9));
    assert.throws(
      () => s.rollback('pod/web', 3, me),
      (e: unknown) =>
        e instanceof ValidationError &&
        e.code === 'E_REVISION_COMPACTED' &&
        /revision 3 of pod\/web was compacted/.test(e.message),
    );
    s.rollback('pod/web', 74, me);
    const logged = lines.map((l) => JSON.parse(l) as { msg: string; object: string; kept: number });
    assert.ok(
      logged.length >= 2 &&
        logged.every((l) => l.msg === 'object compacted' && l.object === 'pod/web' && l.kept === 10),
    );
    assert.equal(valueAt(s.get('pod/web')?.object ?? null, 'spec', 'replicas'), 1 + (74 % 9));
  });

  it('grows the document with compactions, not with the records it ever held', () => {
    // Two peers write status for three pods in an irregular order, as a cluster does.
    const docs = [new Y.Doc(), new Y.Doc()];
    docs[0]?.on('update', (u: Uint8Array) => Y.applyUpdate(docs[1] as Y.Doc, u, 'remote'));
    docs[1]?.on('update', (u: Uint8Array, origin: unknown) => {
      if (origin !== 'remote') Y.applyUpdate(docs[0] as Y.Doc, u, 'remote');
    });
    let compactions = 0;
    const stores = docs.map(
      (d, i) =>
        new ObjectStore(d, {
          signer: signers[i] as Signer,
          verifier: peerIdVerifier(),
          ownership: FieldOwnership.withBuiltins(),
          clock: new ManualClock(),
          logger: createLogger({ write: () => compactions++ }),
          compaction: { threshold: 30, keep: 3 },
        }),
    );
    const names = ['a', 'b', 'c'];
    const me = author(signers[0] as Signer);
    for (const n of names) stores[0]?.apply({ ...toStoredPod(web()), name: n }, me);
    const rand = seededUnitRandom(7);
    const round = () => {
      for (let i = 0; i < 300; i++) {
        const p = Math.floor(rand() * 2);
        (stores[p] as ObjectStore).append(`pod/${names[Math.floor(rand() * 3)]}`, {
          controller: 'runtime',
          kind: 'system',
          author: author(signers[p] as Signer, 'runtime'),
          patch: { status: { restarts: i } },
        });
      }
      for (const n of names) stores[0]?.compact(`pod/${n}`, { threshold: 0, keep: 3 }, true);
    };
    const yjsHistory = (d: Y.Doc) => {
      // What the document holds beyond its live entries: deleted items, compactions' client ids.
      const fresh = new Y.Doc();
      for (const [name] of d.share) {
        if (name.startsWith('objbase:')) for (const [k, v] of d.getMap(name)) fresh.getMap(name).set(k, v);
        else fresh.getArray(name).push(d.getArray(name).toArray());
      }
      return Y.encodeStateAsUpdateV2(d).byteLength - Y.encodeStateAsUpdateV2(fresh).byteLength;
    };
    round();
    const [history1, compactions1] = [yjsHistory(docs[0] as Y.Doc), compactions];
    round();
    const added = compactions - compactions1;
    const growth = yjsHistory(docs[0] as Y.Doc) - history1;
    // ~50 bytes per compaction (its client id and the base it replaced); one tombstone per record
    // (an array per object) would add ~5 bytes for each of the 300 records of the round on top.
    assert.ok(added > 0);
    assert.ok(growth < added * 60, `grew ${growth} bytes with ${added} compactions`);
    assert.equal(fingerprint(stores[0]?.get('pod/a')), fingerprint(stores[1]?.get('pod/a')));
    for (const st of stores) st.close();
  });

  it('reads records from the per-object arrays of older versions and drains them by compaction', () => {
    const doc = new Y.Doc();
    const ctx = podMaterializeContext();
    const legacy = doc.getArray<unknown>(objectArrayName('pod/web'));
    const me = author(signers[1] as Signer);
    for (let i = 1; i <= 5; i++) {
      const m = materialize('pod/web', legacy.toArray(), ctx);
      legacy.push([
        signRecord(
          {
            v: 1,
            object: 'pod/web',
            lamport: m.maxLamport + 1,
            parents: m.heads,
            author: me,
            controller: 'user',
            kind: 'user',
            at: i,
            patch: i === 1 ? toStoredPod(web()) : { spec: { replicas: i } },
          },
          signers[1] as Signer,
        ),
      ]);
    }
    const s = store(doc, signers[0] as Signer, { threshold: 6, keep: 2 });
    assert.deepEqual(s.keys('pod'), ['pod/web']);
    assert.equal(s.get('pod/web')?.revision, '5');
    s.applyPod(web(1, 'new'), author(signers[0] as Signer));
    s.applyPod(web(2, 'new'), author(signers[0] as Signer));
    const m = s.get('pod/web') as Materialized;
    assert.equal(legacy.length, 0, 'every old record folded');
    assert.deepEqual(
      m.history.map((h) => [h.lamport, h.compacted]),
      [
        [1, true],
        [2, true],
        [3, true],
        [4, true],
        [5, true],
        [6, false],
        [7, false],
      ],
    );
    assert.equal(valueAt(m.object, 'spec', 'replicas'), 2);
    s.close();
  });

  it('keeps concurrent edits of different fields of one container, and of two containers, from two partitions', () => {
    const a = new Y.Doc();
    const b = new Y.Doc();
    const sa = store(a, signers[0] as Signer);
    const sb = store(b, signers[1] as Signer);
    const two = (appCmd: string, appEnv: string, sideCmd: string) =>
      parsePodSpec(
        `kind: Pod\nname: web\nspec:\n  containers:\n    - { name: app, command: [${appCmd}], env: { MODE: ${appEnv} } }\n    - { name: side, command: [${sideCmd}] }\n`,
        'web.yaml',
      );
    sa.applyPod(two('serve', 'one', 'tail'), author(signers[0] as Signer));
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
    // Partition: alice changes app's command, bob app's env and the side container.
    sa.applyPod(two('serve2', 'one', 'tail'), author(signers[0] as Signer, 'alice'));
    sb.applyPod(two('serve', 'two', 'tail2'), author(signers[1] as Signer, 'bob'));
    Y.applyUpdate(a, Y.encodeStateAsUpdate(b));
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
    const pod = podFromStored(sa.get('pod/web')?.object as JsonObject);
    assert.deepEqual(
      pod.spec.containers.map((c) => [c.name, c.command, c.env]),
      [
        ['app', ['serve2'], { MODE: 'two' }],
        ['side', ['tail2'], undefined],
      ],
    );
    assert.equal(fingerprint(sa.get('pod/web')), fingerprint(sb.get('pod/web')));
    assert.deepEqual(
      sa.get('pod/web')?.history.map((h) => [h.revision.split('@')[0], h.concurrent]),
      [
        ['1', false],
        ['2', true],
        ['2', true],
      ],
    );
  });

  it('notifies listeners of local and remote changes', () => {
    const a = new Y.Doc();
    const b = new Y.Doc();
    a.on('update', (u: Uint8Array) => Y.applyUpdate(b, u, 'remote'));
    const sa = store(a, signers[0] as Signer);
    const sb = store(b, signers[1] as Signer);
    const seenA: string[][] = [];
    const seenB: string[][] = [];
    sa.onChange((keys) => seenA.push(keys));
    const off = sb.onChange((keys) => seenB.push(keys));
    sa.applyPod(web(), author(signers[0] as Signer));
    assert.deepEqual(seenA, [['pod/web']]);
    assert.deepEqual(seenB, [['pod/web']]);
    assert.equal(sb.get('pod/web')?.revision, '1');
    off();
    sa.applyPod(web(2), author(signers[0] as Signer));
    assert.equal(seenB.length, 1);
    assert.equal(sb.get('pod/web')?.revision, '2', 'cache invalidated by remote update');
    sa.close();
    sb.close();
  });

  it('converges across replicas exchanging updates in random order, with concurrent compactions (property)', () => {
    const opArb = fc.record({
      peer: fc.integer({ min: 0, max: 2 }),
      op: fc.constantFrom(
        'user',
        'user',
        'runtime',
        'scheduler',
        'deliver',
        'deliver',
        'compact',
        'rollback',
      ),
      pick: fc.integer({ min: 0, max: 10_000 }),
    });
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 5, maxLength: 40 }),
        fc.integer({ min: 1, max: 2 ** 30 }),
        (ops, seed) => {
          const rand = seededUnitRandom(seed);
          const policy = { threshold: 8, keep: 3 };
          const { docs, stores, deliver } = gossipingReplicas(rand, policy);
          const ever = new Map<string, RevisionRecord>();
          const remember = () => {
            for (const d of docs)
              for (const e of storedEntries(d)) {
                const r = e as RevisionRecord;
                if (typeof r === 'object' && r !== null && 'lamport' in r) ever.set(r.id, r);
              }
          };
          stores[0]?.applyPod(web(), author(signers[0] as Signer));
          for (let j = 1; j < docs.length; j++) deliver(j, true);
          remember();
          for (const o of ops) {
            const s = stores[o.peer] as ObjectStore;
            const me = author(signers[o.peer] as Signer, o.op);
            try {
              if (o.op === 'deliver') deliver(o.peer, false);
              else if (o.op === 'compact') s.compact('pod/web', policy, true);
              else if (o.op === 'user') s.applyPod(web(1 + (o.pick % 5), `g${o.pick % 7}`), me);
              else if (o.op === 'runtime')
                s.append('pod/web', {
                  controller: 'runtime',
                  kind: 'system',
                  author: me,
                  patch: { status: { phase: `p${o.pick % 3}`, restarts: o.pick % 4 } },
                });
              else if (o.op === 'scheduler')
                s.append('pod/web', {
                  controller: 'scheduler',
                  kind: 'system',
                  author: me,
                  patch: { status: { placement: { node: `n${o.pick % 3}` } } },
                });
              else {
                const h = s.get('pod/web')?.history ?? [];
                s.rollback('pod/web', h[o.pick % Math.max(1, h.length)]?.revision ?? '1', me);
              }
            } catch (err) {
              // Rollback to a compacted or ambiguous revision is refused; nothing else may fail.
              if (!(o.op === 'rollback' && err instanceof MeshdError)) throw err;
            }
            remember();
          }
          for (let j = 0; j < docs.length; j++) deliver(j, true);
          const views = stores.map((s) => s.get('pod/web'));
          const first = fingerprint(views[0]);
          for (const [i, v] of views.entries()) assert.equal(fingerprint(v), first, `replica ${i} differs`);
          assert.ok(
            views[0]?.history.every((h) => h.rejected === undefined),
            JSON.stringify(views[0]?.history.filter((h) => h.rejected)),
          );
          // Compaction never changes the object: it equals folding every record ever written.
          const ctx = podMaterializeContext();
          const reference = materialize('pod/web', [...ever.values()], ctx);
          assert.equal(canonicalJson(views[0]?.object ?? null), canonicalJson(reference.object));
          assert.deepEqual(
            views[0]?.history.map((h) => h.id),
            reference.history.map((h) => h.id),
            'no revision lost from history',
          );
          for (const s of stores) s.close();
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('ObjectStore under hostile and destructive edits', () => {
  it('converges with deletes, re-creates and raw forged, unowned or invalid entries on any replica (property)', () => {
    const opArb = fc.record({
      peer: fc.integer({ min: 0, max: 2 }),
      op: fc.constantFrom(
        'user',
        'runtime',
        'deliver',
        'deliver',
        'delete',
        'forge',
        'unowned',
        'invalid',
        'compact',
      ),
      pick: fc.integer({ min: 0, max: 10_000 }),
    });
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 5, maxLength: 40 }),
        fc.integer({ min: 1, max: 2 ** 30 }),
        (ops, seed) => {
          const rand = seededUnitRandom(seed);
          const policy = { threshold: 8, keep: 3 };
          const { docs, stores, deliver } = gossipingReplicas(rand, policy);
          const hostile = new Set<string>();
          stores[0]?.applyPod(web(), author(signers[0] as Signer));
          for (const o of ops) {
            const s = stores[o.peer] as ObjectStore;
            const me = author(signers[o.peer] as Signer, o.op);
            const raw = (patch: JsonValue, controller: string, signer: Signer, track: boolean) => {
              // Written straight into the array, as a buggy or hostile peer could.
              const m = s.get('pod/web');
              const r = signRecord(
                {
                  v: 1,
                  object: 'pod/web',
                  lamport: (m?.maxLamport ?? 0) + 1,
                  parents: m?.heads ?? [],
                  author: me,
                  controller,
                  kind: 'user',
                  at: 0,
                  patch,
                },
                signer,
              );
              if (track) hostile.add(r.id);
              // Into a log (its own or another peer's), or the per-object array older versions wrote.
              const into = [objectArrayName('pod/web'), objectLogName(me.peer), objectLogName(signer.peer)];
              docs[o.peer]?.getArray(into[o.pick % 3] as string).push([r]);
            };
            try {
              if (o.op === 'deliver') deliver(o.peer, false);
              else if (o.op === 'compact') s.compact('pod/web', policy, true);
              else if (o.op === 'user') s.applyPod(web(1 + (o.pick % 5), `g${o.pick % 7}`), me);
              else if (o.op === 'runtime')
                s.append('pod/web', {
                  controller: 'runtime',
                  kind: 'system',
                  author: me,
                  patch: { status: { restarts: o.pick % 4 } },
                });
              else if (o.op === 'delete') s.delete('pod/web', me);
              else if (o.op === 'forge')
                raw(
                  { spec: { replicas: 7 } },
                  'user',
                  { peer: me.peer, sign: (b) => (signers[(o.peer + 1) % 3] as Signer).sign(b) },
                  true,
                );
              else if (o.op === 'unowned')
                raw({ spec: { replicas: 8 } }, 'runtime', signers[o.peer] as Signer, true);
              // An invalid write may also arrive after newer writes to its field were compacted: it then
              // loses to them and changes nothing, so only the object's validity is asserted for it.
              else raw({ spec: { replicas: 0 } }, 'user', signers[o.peer] as Signer, false);
            } catch (err) {
              // Deleting what is gone, or writing status on a deleted pod, is refused up front.
              if (
                !(
                  err instanceof NotFoundError ||
                  (err instanceof ValidationError && /does not exist/.test(err.message))
                )
              )
                throw err;
            }
          }
          for (let j = 0; j < docs.length; j++) deliver(j, true);
          const views = stores.map((s) => s.get('pod/web'));
          for (const [i, v] of views.entries()) {
            assert.equal(fingerprint(v), fingerprint(views[0]), `replica ${i} differs`);
          }
          const v = views[0] as Materialized;
          for (const h of v.history)
            if (hostile.has(h.id)) assert.ok(h.rejected !== undefined, `hostile ${h.revision} was applied`);
          if (v.object !== null) assert.equal(storedPodProblem('pod/web', v.object), undefined);
          assert.ok(![0, 7, 8].includes((v.object?.spec as JsonObject | undefined)?.replicas as number));
          for (const s of stores) s.close();
        },
      ),
      { numRuns: 30 },
    );
  });
});

/** Every record and base entry stored in `doc`'s logs and per-object arrays. */
function storedEntries(doc: Y.Doc): unknown[] {
  const out: unknown[] = [];
  for (const name of doc.share.keys())
    if (name.startsWith(objectLogPrefix) || name.startsWith('obj:'))
      out.push(...doc.getArray(name).toArray());
  return out;
}
