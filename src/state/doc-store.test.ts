// Tests of the cluster document store: durability across SIGKILL, compaction, corrupt files, full disks.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, statSync, writeSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as Y from 'yjs';
import { ManualClock } from '../shared/clock.ts';
import { DataDirError, type MeshdError, StorageError } from '../shared/errors.ts';
import { createLogger, type Logger, silentLogger } from '../shared/logger.ts';
import { DocStore, type DocStoreOptions, storeOrigin } from './doc-store.ts';

const crashFixture = fileURLToPath(new URL('./doc-store.crash-fixture.ts', import.meta.url));
const diskFullFixture = fileURLToPath(new URL('./doc-store.disk-full-fixture.ts', import.meta.url));

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'meshd-doc-store-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function openStore(t: TestContext, path: string, opts: Partial<DocStoreOptions> = {}): DocStore {
  const store = DocStore.open(path, { logger: silentLogger, clock: new ManualClock(), ...opts });
  t.after(() => store.close());
  return store;
}

/** Loads the store at `path` into a fresh doc through a second, independent connection. */
function reload(path: string): Y.Doc {
  const store = DocStore.open(path, { logger: silentLogger, clock: new ManualClock() });
  try {
    const doc = new Y.Doc();
    store.load(doc);
    return doc;
  } finally {
    store.close();
  }
}

function integrityCheck(path: string): string {
  const db = new DatabaseSync(path);
  try {
    const rows = db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[];
    return rows.map((r) => r.integrity_check).join('; ');
  } finally {
    db.close();
  }
}

function capture(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { lines, logger: createLogger({ level: 'debug', write: (l) => lines.push(JSON.parse(l)) }) };
}

function catchError(fn: () => unknown): MeshdError {
  try {
    fn();
  } catch (err) {
    return err as MeshdError;
  }
  assert.fail('expected an error');
}

test('every update is in the store when the code that made it returns', { timeout: 10_000 }, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cluster.db');
  const store = openStore(t, path);
  const doc = new Y.Doc();
  store.load(doc);
  store.attach(doc);
  doc.getMap('nodes').set('a', 1);
  doc.transact(() => {
    doc.getMap('nodes').set('b', 2);
    doc.getArray('pods').push(['web']);
  });
  // Read back through another connection while the writer is still open: nothing waits for close().
  const seen = reload(path);
  assert.deepEqual(seen.getMap('nodes').toJSON(), { a: 1, b: 2 });
  assert.deepEqual(seen.getArray('pods').toJSON(), ['web']);
  assert.equal(store.stats().logUpdates, 2);
  store.assertDurable();
});

test('group commit: peer updates wait a moment and go to disk together; a local write takes them along', {
  timeout: 10_000,
}, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cluster.db');
  const fromPeer = Symbol('peer');
  const clock = new ManualClock();
  const store = openStore(t, path, { clock, groupCommit: (o) => o === fromPeer, groupCommitMs: 25 });
  const doc = new Y.Doc();
  store.load(doc);
  store.attach(doc);
  for (let i = 0; i < 5; i++) doc.transact(() => doc.getMap('nodes').set(`peer-${i}`, i), fromPeer);
  assert.equal(store.stats().logUpdates, 0, 'nothing written yet');
  assert.equal(store.stats().pendingUpdates, 5);
  clock.advance(25);
  assert.equal(store.stats().logUpdates, 5, 'written together once the moment passed');
  assert.equal(Object.keys(reload(path).getMap('nodes').toJSON()).length, 5);

  // a local write does not wait, and takes the waiting peer updates along, in order
  doc.transact(() => doc.getMap('nodes').set('peer-late', 1), fromPeer);
  doc.getMap('nodes').set('local', 1);
  assert.equal(store.stats().pendingUpdates, 0);
  assert.deepEqual(Object.keys(reload(path).getMap('nodes').toJSON()).sort(), [
    'local',
    'peer-0',
    'peer-1',
    'peer-2',
    'peer-3',
    'peer-4',
    'peer-late',
  ]);
  // and assertDurable() writes what waits rather than calling it a failure
  doc.transact(() => doc.getMap('nodes').set('peer-last', 1), fromPeer);
  store.assertDurable();
  assert.equal(store.stats().pendingUpdates, 0);
});

test('load() does not write back what it read, and attach() saves what came between load and attach', {
  timeout: 10_000,
}, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cluster.db');
  {
    const store = DocStore.open(path, { logger: silentLogger, clock: new ManualClock() });
    const doc = new Y.Doc();
    store.attach(doc);
    doc.getMap('m').set('x', 1);
    doc.getMap('m').set('y', 2);
    store.close();
  }
  const store = openStore(t, path);
  const doc = new Y.Doc();
  const origins: unknown[] = [];
  doc.on('update', (_u: Uint8Array, origin: unknown) => origins.push(origin));
  const loaded = store.load(doc);
  assert.equal(loaded.updates, 2);
  assert.deepEqual(origins, [storeOrigin]);
  // A delete changes no state vector: it must still be caught up at attach.
  doc.getMap('m').delete('x');
  store.attach(doc);
  assert.equal(store.stats().logUpdates, 3);
  assert.deepEqual(reload(path).getMap('m').toJSON(), { y: 2 });
  // Nothing new: reloading and attaching again appends nothing.
  const other = openStore(t, join(dir, 'cluster.db'));
  const again = new Y.Doc();
  other.load(again);
  other.attach(again);
  assert.equal(other.stats().logUpdates, 3);
});

test('SIGKILL at a random moment loses no acknowledged update and leaves a sound file', {
  timeout: 120_000,
}, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cluster.db');
  const children = new Set<ChildProcess>();
  t.after(() => {
    for (const c of children) c.kill('SIGKILL');
  });
  let acked = -1; // highest update index acknowledged over all rounds (acks are consecutive)
  const rounds = 6;
  for (let round = 0; round < rounds; round++) {
    // Small thresholds make kills land during compactions too.
    const compactAfter = [5, 17, 40, 1000][round % 4] ?? 40;
    const target = 1 + Math.floor(Math.random() * 300);
    const child = spawn(process.execPath, [crashFixture, path, String(compactAfter), '1000000'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    let start = -1;
    let count = 0;
    let buffered = '';
    child.stdout?.on('data', (b: Buffer) => {
      buffered += b.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        const [word, n] = line.split(' ');
        if (word === 'start') {
          start = Number(n);
          assert.equal(start, acked + 1, 'the child must resume right after the last acknowledged update');
        } else if (word === 'ack') {
          assert.equal(Number(n), acked + 1, 'acks are consecutive');
          acked = Number(n);
          count++;
          if (count === target) child.kill('SIGKILL');
        }
      }
    });
    const exit = await Promise.race([
      new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.on('close', (code, signal) => resolve({ code, signal })),
      ),
      new Promise<never>((_, reject) =>
        setTimeout(
          () => reject(new Error(`round ${round}: child never reached ${target} acks`)),
          30_000,
        ).unref(),
      ),
    ]);
    children.delete(child);
    assert.equal(exit.signal, 'SIGKILL', `child ended by itself: ${exit.code} ${stderr}`);
    assert.equal(integrityCheck(path), 'ok');
    const doc = reload(path);
    const log = doc.getArray<number>('log').toArray();
    // Everything acked is there, exactly once and in order; at most a few unacked updates more.
    assert.ok(
      log.length >= acked + 1,
      `round ${round}: ${log.length} updates on disk, ${acked + 1} acknowledged`,
    );
    for (let i = 0; i < log.length; i++) assert.equal(log[i], i);
    acked = log.length - 1; // unacked-but-written updates are legitimately kept; the next child resumes after them
  }
  assert.ok(acked > rounds, 'the children did write');
});

test('compaction keeps the content, empties the log and shrinks the file', { timeout: 20_000 }, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cluster.db');
  const store = openStore(t, path, { compactAfterUpdates: 1_000_000, compactAfterBytes: 1 << 30 });
  const doc = new Y.Doc();
  store.load(doc);
  store.attach(doc);
  const m = doc.getMap<unknown>('nodes');
  for (let i = 0; i < 2000; i++) m.set(`n${i % 10}`, { i, pad: 'p'.repeat(100) });
  doc.getArray('gone').push(['a', 'b']);
  doc.getArray('gone').delete(0, 1);
  const before = store.stats();
  assert.equal(before.logUpdates, 2002);
  store.compact();
  const after = store.stats();
  assert.equal(after.logUpdates, 0);
  assert.equal(after.logBytes, 0);
  assert.ok(
    after.snapshotBytes > 0 && after.snapshotBytes < before.logBytes / 10,
    JSON.stringify({ before, after }),
  );
  assert.ok(after.fileBytes < before.fileBytes, JSON.stringify({ before, after }));
  const seen = reload(path);
  assert.deepEqual(seen.getMap('nodes').toJSON(), m.toJSON());
  assert.deepEqual(seen.getArray('gone').toJSON(), ['b']);
  assert.deepEqual(Y.encodeStateVector(seen), Y.encodeStateVector(doc));
});

test('compaction runs by itself past the update and byte thresholds', { timeout: 10_000 }, async (t) => {
  const dir = await tempDir(t);
  const byCount = openStore(t, join(dir, 'a.db'), { compactAfterUpdates: 10 });
  const a = new Y.Doc();
  byCount.attach(a);
  for (let i = 0; i < 25; i++) a.getMap('m').set('k', i);
  assert.equal(byCount.stats().logUpdates, 5);
  assert.ok(byCount.stats().snapshotBytes > 0);

  const byBytes = openStore(t, join(dir, 'b.db'), { compactAfterBytes: 10_000 });
  const b = new Y.Doc();
  byBytes.attach(b);
  for (let i = 0; i < 12; i++) b.getArray('a').push(['x'.repeat(1000)]);
  assert.ok(byBytes.stats().logBytes < 10_000);
  assert.ok(byBytes.stats().snapshotBytes > 10_000);
  assert.equal(reload(join(dir, 'b.db')).getArray('a').length, 12);
});

test('reopening after compaction and more updates loads everything', { timeout: 10_000 }, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cluster.db');
  {
    const store = DocStore.open(path, { logger: silentLogger, clock: new ManualClock() });
    const doc = new Y.Doc();
    store.load(doc);
    store.attach(doc);
    doc.getMap('m').set('before', 1);
    store.compact();
    doc.getMap('m').set('after', 2);
    doc.getMap('m').delete('before');
    store.close();
  }
  {
    // Attached without load(): compaction must rebuild from disk, not from this (partial) doc.
    const store = DocStore.open(path, { logger: silentLogger, clock: new ManualClock() });
    const doc = new Y.Doc();
    store.attach(doc);
    doc.getMap('m').set('third', 3);
    store.compact();
    doc.getMap('m').set('fourth', 4);
    store.close();
  }
  const store = openStore(t, path);
  const doc = new Y.Doc();
  const loaded = store.load(doc);
  assert.equal(loaded.updates, 1);
  assert.ok(loaded.snapshotBytes > 0);
  assert.deepEqual(doc.getMap('m').toJSON(), { after: 2, third: 3, fourth: 4 });
});

test('a garbage, damaged or foreign file gives a clear error naming the file and the fix', {
  timeout: 10_000,
}, async (t) => {
  const dir = await tempDir(t);

  const garbage = join(dir, 'garbage.db');
  await writeFile(garbage, 'this is not a database\n'.repeat(500));
  const e1 = catchError(() => DocStore.open(garbage, { logger: silentLogger, clock: new ManualClock() }));
  assert.ok(e1 instanceof DataDirError);
  assert.equal(e1.code, 'E_STORE_NOT_DB');
  assert.match(e1.message, /garbage\.db/);
  assert.match(e1.hint ?? '', /mv .*garbage\.db/);

  // A real store whose pages are then overwritten with junk.
  const damaged = join(dir, 'damaged.db');
  {
    const store = DocStore.open(damaged, { logger: silentLogger, clock: new ManualClock() });
    const doc = new Y.Doc();
    store.attach(doc);
    for (let i = 0; i < 200; i++) doc.getArray('a').push(['y'.repeat(500)]);
    store.close();
  }
  {
    const size = statSync(damaged).size;
    const fd = openSync(damaged, 'r+');
    for (let off = 4096; off < size; off += 4096) writeSync(fd, Buffer.alloc(64, 0xa5), 0, 64, off);
    closeSync(fd);
  }
  const e2 = catchError(() => DocStore.open(damaged, { logger: silentLogger, clock: new ManualClock() }));
  assert.ok(e2 instanceof DataDirError, String(e2));
  assert.equal(e2.code, 'E_STORE_CORRUPT');
  assert.match(e2.message, /damaged\.db/);
  assert.match(e2.hint ?? '', /resyncs/);

  const foreign = join(dir, 'foreign.db');
  const db = new DatabaseSync(foreign);
  db.exec('CREATE TABLE photos (id INTEGER PRIMARY KEY)');
  db.close();
  const e3 = catchError(() => DocStore.open(foreign, { logger: silentLogger, clock: new ManualClock() }));
  assert.equal(e3.code, 'E_STORE_FOREIGN');
  assert.match(e3.message, /foreign\.db/);

  const e4 = catchError(() => DocStore.open(dir, { logger: silentLogger, clock: new ManualClock() }));
  assert.equal(e4.code, 'E_STORE_UNREADABLE');
  const e5 = catchError(() =>
    DocStore.open(join(dir, 'missing', 'x.db'), { logger: silentLogger, clock: new ManualClock() }),
  );
  assert.equal(e5.code, 'E_STORE_UNREADABLE');
  assert.match(e5.hint ?? '', /data directory exists/);
});

test('a full disk keeps updates in memory, says so, and writes them once space returns', {
  timeout: 10_000,
}, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cluster.db');
  const clock = new ManualClock();
  const { logger, lines } = capture();
  let conn: DatabaseSync | undefined;
  /** The store's own connection: `PRAGMA max_page_count` is per connection. */
  const sql = (statement: string): void => {
    assert.ok(conn, 'openDatabase was used');
    conn.exec(statement);
  };
  const pageCount = (): number => {
    assert.ok(conn, 'openDatabase was used');
    return (conn.prepare('PRAGMA page_count').get() as { page_count: number }).page_count;
  };
  const store = openStore(t, path, {
    clock,
    logger,
    retryAfterMs: 1000,
    openDatabase: (p) => {
      conn = new DatabaseSync(p);
      return conn;
    },
  });
  const doc = new Y.Doc();
  store.load(doc);
  store.attach(doc);
  const items = doc.getArray<string>('items');
  items.push(['fits']);
  // The disk is "full": SQLite may not grow the file (same SQLITE_FULL as a real ENOSPC).
  sql(`PRAGMA max_page_count = ${pageCount()}`);
  for (let i = 0; i < 5; i++) items.push([`big${i}:${'z'.repeat(8000)}`]);
  assert.equal(store.stats().pendingUpdates, 5);
  assert.equal(items.length, 6, 'the in-memory document is unaffected');

  const err = catchError(() => store.assertDurable());
  assert.ok(err instanceof StorageError);
  assert.equal(err.code, 'E_DISK_FULL');
  assert.match(err.message, /disk full/);
  assert.match(err.message, /cluster\.db/);
  assert.match(err.hint ?? '', /Free space/);
  const errors = lines.filter((l) => l.level === 'error');
  assert.equal(errors.length, 1, 'the outage is logged once, not once per write');

  // Still full when the retry timer fires: still pending, still one log line.
  clock.advance(1000);
  assert.equal(store.stats().pendingUpdates, 5);
  assert.equal(lines.filter((l) => l.level === 'error').length, 1);
  assert.equal(reload(path).getArray('items').length, 1);

  // Space comes back; the timer alone writes everything, in order.
  sql('PRAGMA max_page_count = 1073741823');
  clock.advance(1000);
  store.assertDurable();
  assert.equal(store.stats().pendingUpdates, 0);
  assert.ok(lines.some((l) => l.msg === 'store writable again; pending updates written'));
  const seen = reload(path).getArray<string>('items').toArray();
  assert.deepEqual(
    seen.map((s) => s.split(':')[0]),
    ['fits', 'big0', 'big1', 'big2', 'big3', 'big4'],
  );

  // A second outage is recovered by the next write, without waiting for the timer.
  sql(`PRAGMA max_page_count = ${pageCount()}`);
  items.push([`big5:${'z'.repeat(8000)}`]);
  assert.throws(() => store.assertDurable(), { code: 'E_DISK_FULL' });
  sql('PRAGMA max_page_count = 1073741823');
  items.push(['small']);
  store.assertDurable();
  assert.equal(reload(path).getArray('items').length, 8);
});

test('a really full file system (tmpfs): updates are kept and written when space returns', {
  timeout: 30_000,
}, async (t) => {
  const probe = spawnSync('unshare', ['--mount', '--propagation', 'private', 'true']);
  if (probe.status !== 0) {
    t.skip('needs a private mount namespace (root or user namespaces) to mount a small tmpfs');
    return;
  }
  const dir = await tempDir(t);
  // The tmpfs lives in the child's private mount namespace: it disappears with the child.
  const child = spawn(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      'mount -t tmpfs -o size=1m tmpfs "$1" && exec "$2" "$3" "$1"',
      'sh',
      dir,
      process.execPath,
      diskFullFixture,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  let errOut = '';
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString();
  });
  child.stderr.on('data', (b: Buffer) => {
    errOut += b.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, errOut);
  const result = JSON.parse(out) as {
    written: number;
    error?: { code: string; message: string; hint: string };
    pendingWhileFull: number;
    reloaded: number;
    sameOrder: boolean;
  };
  assert.equal(result.error?.code, 'E_DISK_FULL');
  assert.match(result.error?.hint ?? '', /Free space/);
  assert.ok(result.pendingWhileFull >= 20, JSON.stringify(result));
  assert.equal(result.reloaded, result.written);
  assert.ok(result.sameOrder);
});

test('meta holds small JSON local state across restarts', { timeout: 10_000 }, async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cluster.db');
  {
    const store = DocStore.open(path, { logger: silentLogger, clock: new ManualClock() });
    store.setMeta('running', { pods: ['web'], spec: { image: 'x' } });
    store.setMeta('identity', 'peer-1');
    store.setMeta('identity', undefined);
    store.close();
  }
  const store = openStore(t, path);
  assert.deepEqual(store.getMeta('running'), { pods: ['web'], spec: { image: 'x' } });
  assert.equal(store.getMeta('identity'), undefined);
  assert.equal(store.getMeta('never'), undefined);
});
