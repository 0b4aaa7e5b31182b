// Local persistence of the cluster Y.Doc in node:sqlite: updates appended as they happen, folded into a snapshot.

import { statSync } from 'node:fs';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import * as Y from 'yjs';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { DataDirError, describeError, type MeshdError, StorageError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';

/** Transaction origin of updates that `load()` applies: they are already on disk, so they are not appended. */
export const storeOrigin: unique symbol = Symbol('meshd.doc-store');

export interface DocStoreOptions {
  logger: Logger;
  clock: Clock;
  /** Fold the log into the snapshot once it holds this many updates (default 1000). */
  compactAfterUpdates?: number;
  /** ... or this many bytes (default 4 MiB). */
  compactAfterBytes?: number;
  /** How often to retry appends that failed (disk full, I/O error); default 5000 ms. */
  retryAfterMs?: number;
  /**
   * How the SQLite connection is opened (default `new DatabaseSync(path)`). A seam for tests: it lets a
   * test hold the connection and, e.g., lower `PRAGMA max_page_count` to make the disk look full.
   */
  openDatabase?: (path: string) => DatabaseSync;
  /**
   * Updates whose transaction origin this accepts may wait up to `groupCommitMs` to be written together
   * (one fsync for a burst instead of one each): updates learned from peers, which peers still hold, and
   * derived state the node writes again after a crash. Every other update is on disk before the write
   * returns, and takes every waiting one with it. Default: none wait.
   */
  groupCommit?: (origin: unknown) => boolean;
  /** How long a group-committed update may wait (default 25 ms). */
  groupCommitMs?: number;
}

export interface DocStoreStats {
  logUpdates: number;
  logBytes: number;
  snapshotBytes: number;
  /** Main database file plus its write-ahead log. */
  fileBytes: number;
  /** Updates held in memory because appending them failed. */
  pendingUpdates: number;
}

/** 'mshd' in the SQLite header: tells a meshd store apart from any other SQLite file. */
const applicationId = 0x6d736864;
/** Layout version in `PRAGMA user_version`. 1 = V2-encoded snapshot + update log + meta. */
const schemaVersion = 1;
/** Above this many pending updates they are merged into one, so a long outage does not hold many arrays. */
const pendingMergeThreshold = 256;

// SQLite primary result codes (the low byte of an extended code).
const SQLITE_BUSY = 5;
const SQLITE_READONLY = 8;
const SQLITE_IOERR = 10;
const SQLITE_CORRUPT = 11;
const SQLITE_FULL = 13;
const SQLITE_CANTOPEN = 14;
const SQLITE_NOTADB = 26;

interface Failure {
  code: 'E_DISK_FULL' | 'E_STORAGE';
  what: string;
  since: number;
}

interface LoadedState {
  doc: Y.Doc;
  stateVector: Uint8Array;
  /** `encodeStateAsUpdateV2(doc, stateVector)` right after load: only the delete set. */
  baseline: Uint8Array;
}

interface Statements {
  insertUpdate: StatementSync;
  selectLog: StatementSync;
  selectSnapshot: StatementSync;
  putSnapshot: StatementSync;
  clearLog: StatementSync;
  logTotals: StatementSync;
  getMeta: StatementSync;
  putMeta: StatementSync;
  deleteMeta: StatementSync;
}

export class DocStore {
  readonly path: string;
  private readonly db: DatabaseSync;
  private readonly sql: Statements;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly compactAfterUpdates: number;
  private readonly compactAfterBytes: number;
  private readonly retryAfterMs: number;

  private logUpdates: number;
  private logBytes: number;
  private snapshotBytes: number;
  /** Updates the doc has but the disk may not: never dropped, retried on the next write and on a timer. */
  private pending: Uint8Array[] = [];
  private readonly groupCommit: ((origin: unknown) => boolean) | undefined;
  private readonly groupCommitMs: number;
  private groupTimer: TimerHandle | undefined;
  private failure: Failure | undefined;
  private retryTimer: TimerHandle | undefined;
  /** Automatic compaction is skipped until the log reaches this size after a failed attempt. */
  private autoCompactAfter = 0;
  private attached: Y.Doc | undefined;
  /** True when the attached doc holds everything on disk, so a snapshot can be taken from it directly. */
  private attachedCoversStore = false;
  private loaded: LoadedState | undefined;
  private closed = false;

  private readonly onUpdate = (update: Uint8Array, origin: unknown): void => {
    if (origin === storeOrigin) return;
    if (this.groupCommit?.(origin) === true && this.failure === undefined) {
      this.pending.push(update);
      this.groupTimer ??= this.clock.setTimeout(() => {
        this.groupTimer = undefined;
        if (!this.closed && this.flush()) this.maybeCompact();
      }, this.groupCommitMs);
      return;
    }
    this.append(update);
  };

  private constructor(path: string, db: DatabaseSync, opts: DocStoreOptions) {
    this.path = path;
    this.db = db;
    this.logger = opts.logger.child({ component: 'doc-store' });
    this.clock = opts.clock;
    this.compactAfterUpdates = opts.compactAfterUpdates ?? 1000;
    this.compactAfterBytes = opts.compactAfterBytes ?? 4 * 1024 * 1024;
    this.retryAfterMs = opts.retryAfterMs ?? 5000;
    this.groupCommit = opts.groupCommit;
    this.groupCommitMs = opts.groupCommitMs ?? 25;
    this.sql = {
      insertUpdate: db.prepare('INSERT INTO updates (data) VALUES (?)'),
      selectLog: db.prepare('SELECT seq, data FROM updates ORDER BY seq'),
      selectSnapshot: db.prepare('SELECT data FROM snapshot WHERE id = 1'),
      putSnapshot: db.prepare('INSERT OR REPLACE INTO snapshot (id, data, at) VALUES (1, ?, ?)'),
      clearLog: db.prepare('DELETE FROM updates'),
      logTotals: db.prepare('SELECT count(*) AS n, coalesce(sum(length(data)), 0) AS bytes FROM updates'),
      getMeta: db.prepare('SELECT value FROM meta WHERE key = ?'),
      putMeta: db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)'),
      deleteMeta: db.prepare('DELETE FROM meta WHERE key = ?'),
    };
    const totals = this.sql.logTotals.get() as { n: number; bytes: number };
    this.logUpdates = totals.n;
    this.logBytes = totals.bytes;
    const snap = this.sql.selectSnapshot.get() as { data: Uint8Array } | undefined;
    this.snapshotBytes = snap?.data.byteLength ?? 0;
  }

  /** Opens (or creates) the store at `path`. Throws DataDirError/StorageError naming the file and the fix. */
  static open(path: string, opts: DocStoreOptions): DocStore {
    let db: DatabaseSync;
    try {
      db = opts.openDatabase ? opts.openDatabase(path) : new DatabaseSync(path);
    } catch (err) {
      throw openError(path, err);
    }
    try {
      prepareSchema(db, path);
      return new DocStore(path, db, opts);
    } catch (err) {
      try {
        db.close();
      } catch {
        // Already failing; the first error is the one to report.
      }
      throw openError(path, err);
    }
  }

  /** Applies the stored snapshot and every logged update to `doc`, in one transaction with origin `storeOrigin`. */
  load(doc: Y.Doc): { snapshotBytes: number; updates: number; ms: number } {
    this.assertOpen();
    const started = this.clock.now();
    const { snapshotBytes, updates } = this.applyStored(doc);
    const stateVector = Y.encodeStateVector(doc);
    this.loaded = { doc, stateVector, baseline: Y.encodeStateAsUpdateV2(doc, stateVector) };
    const ms = this.clock.now() - started;
    this.logger.info('store loaded', { snapshotBytes, updates, ms });
    return { snapshotBytes, updates, ms };
  }

  /**
   * From now on every update of `doc` (except those with origin `storeOrigin`) is appended synchronously inside
   * the doc's update event, so it is on disk before the code that made it returns. Anything the doc gained since
   * `load()` (or, if it was never loaded from here, its whole state) is appended first.
   */
  attach(doc: Y.Doc): void {
    this.assertOpen();
    if (this.attached === doc) return;
    if (this.attached !== undefined) throw new Error('DocStore.attach: another Y.Doc is already attached');
    const storeWasEmpty = this.logUpdates === 0 && this.snapshotBytes === 0 && this.pending.length === 0;
    if (this.loaded?.doc === doc) {
      const diff = Y.encodeStateAsUpdateV2(doc, this.loaded.stateVector);
      if (!sameBytes(diff, this.loaded.baseline)) this.append(diff);
      this.attachedCoversStore = true;
    } else {
      if (!sameBytes(Y.encodeStateAsUpdateV2(doc), Y.encodeStateAsUpdateV2(new Y.Doc()))) {
        this.append(Y.encodeStateAsUpdateV2(doc));
      }
      this.attachedCoversStore = storeWasEmpty;
    }
    this.attached = doc;
    this.loaded = undefined;
    doc.on('updateV2', this.onUpdate);
  }

  /** Throws StorageError if any update of the attached doc is not yet on disk. Call it after a user's write. */
  assertDurable(): void {
    if (this.pending.length === 0) return;
    // group-committed updates waiting for their timer are not a failure: write them now
    if (this.failure === undefined && this.flush()) return;
    throw this.notDurableError();
  }

  /**
   * Replaces the snapshot with the whole document and clears the log, in one transaction. Runs by itself once
   * the log passes `compactAfterUpdates` or `compactAfterBytes`. Throws StorageError if it cannot be written
   * (the previous snapshot and log are then left as they were).
   */
  compact(): void {
    this.assertOpen();
    const started = this.clock.now();
    const fromDoc = this.attached !== undefined && this.attachedCoversStore;
    const snapshot =
      fromDoc && this.attached ? Y.encodeStateAsUpdateV2(this.attached) : this.rebuildSnapshot();
    const before = { logUpdates: this.logUpdates, logBytes: this.logBytes };
    try {
      this.db.exec('BEGIN IMMEDIATE');
      this.sql.putSnapshot.run(snapshot, this.clock.now());
      this.sql.clearLog.run();
      this.db.exec('COMMIT');
    } catch (err) {
      this.rollbackQuietly();
      throw storageError(this.path, err, 'compacting the cluster document');
    }
    this.logUpdates = 0;
    this.logBytes = 0;
    this.snapshotBytes = snapshot.byteLength;
    this.autoCompactAfter = 0;
    if (fromDoc && this.pending.length > 0) {
      // The snapshot came from the doc, which holds every pending update: they are on disk now.
      this.pending = [];
      this.recovered();
    }
    try {
      // Give freed pages back to the file system (auto_vacuum=INCREMENTAL) and empty the WAL.
      this.db.exec('PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);');
    } catch (err) {
      this.logger.debug('store space reclaim failed', { error: describeError(err) });
    }
    this.logger.debug('store compacted', {
      ...before,
      snapshotBytes: this.snapshotBytes,
      ms: this.clock.now() - started,
    });
  }

  /** Small JSON local state (what this node runs, its identity...). Undefined when absent. */
  getMeta<T>(key: string): T | undefined {
    this.assertOpen();
    const row = this.sql.getMeta.get(key) as { value: string } | undefined;
    if (row === undefined) return undefined;
    try {
      return JSON.parse(row.value) as T;
    } catch (err) {
      throw new DataDirError(
        'E_STORE_CORRUPT',
        `cluster document store ${this.path}: meta "${key}" is not JSON`,
        {
          hint: corruptHint(this.path),
          details: { path: this.path, key },
          cause: err,
        },
      );
    }
  }

  /** Stores `value` as JSON under `key` (undefined deletes it). Durable on return; StorageError otherwise. */
  setMeta(key: string, value: unknown): void {
    this.assertOpen();
    try {
      if (value === undefined) this.sql.deleteMeta.run(key);
      else this.sql.putMeta.run(key, JSON.stringify(value));
    } catch (err) {
      throw storageError(this.path, err, `saving local state "${key}"`);
    }
  }

  stats(): DocStoreStats {
    return {
      logUpdates: this.logUpdates,
      logBytes: this.logBytes,
      snapshotBytes: this.snapshotBytes,
      fileBytes: fileSize(this.path) + fileSize(`${this.path}-wal`),
      pendingUpdates: this.pending.length,
    };
  }

  /** Detaches the doc, tries once more to write pending updates, and closes the database. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.attached?.off('updateV2', this.onUpdate);
    this.attached = undefined;
    this.closed = true; // before the last flush, so a failure does not arm a retry timer
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.groupTimer?.cancel();
    this.groupTimer = undefined;
    if (this.pending.length > 0 && !this.flush()) {
      this.logger.error('store closed with updates not on disk', {
        pending: this.pending.length,
        error: this.failure?.what,
      });
    }
    this.db.close();
  }

  private append(update: Uint8Array): void {
    this.pending.push(update);
    if (!this.flush()) return;
    this.maybeCompact();
  }

  /** Writes every pending update in one transaction. Never throws: a failure keeps them pending. */
  private flush(): boolean {
    if (this.pending.length === 0) return true;
    const batch = this.pending;
    let bytes = 0;
    try {
      if (batch.length === 1 && batch[0] !== undefined) {
        this.sql.insertUpdate.run(batch[0]);
        bytes = batch[0].byteLength;
      } else {
        this.db.exec('BEGIN IMMEDIATE');
        for (const update of batch) {
          this.sql.insertUpdate.run(update);
          bytes += update.byteLength;
        }
        this.db.exec('COMMIT');
      }
    } catch (err) {
      this.rollbackQuietly();
      this.failed(err);
      return false;
    }
    this.pending = [];
    this.logUpdates += batch.length;
    this.logBytes += bytes;
    if (this.failure !== undefined) this.recovered();
    return true;
  }

  private failed(err: unknown): void {
    const code = sqliteCode(err);
    const failure: Failure = {
      code: code === SQLITE_FULL ? 'E_DISK_FULL' : 'E_STORAGE',
      what: describeError(err),
      since: this.failure?.since ?? this.clock.now(),
    };
    if (this.failure === undefined) {
      // Logged once per outage; assertDurable() tells every writer until it is over.
      this.logger.error('store append failed; keeping updates in memory', {
        path: this.path,
        code: failure.code,
        error: failure.what,
      });
    }
    this.failure = failure;
    if (this.pending.length > pendingMergeThreshold) {
      try {
        this.pending = [Y.mergeUpdatesV2(this.pending)];
      } catch (mergeErr) {
        this.logger.debug('pending merge failed', { error: describeError(mergeErr) });
      }
    }
    if (this.retryTimer === undefined && !this.closed) {
      this.retryTimer = this.clock.setTimeout(() => {
        this.retryTimer = undefined;
        if (this.flush()) this.maybeCompact();
      }, this.retryAfterMs);
    }
  }

  private recovered(): void {
    if (this.failure === undefined) return;
    this.logger.info('store writable again; pending updates written', {
      path: this.path,
      outageMs: this.clock.now() - this.failure.since,
    });
    this.failure = undefined;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
  }

  private maybeCompact(): void {
    if (this.logUpdates < this.compactAfterUpdates && this.logBytes < this.compactAfterBytes) return;
    if (this.logUpdates < this.autoCompactAfter) return;
    try {
      this.compact();
    } catch (err) {
      // Nothing is lost: the log is intact. Try again once the log has grown a little more.
      this.autoCompactAfter = this.logUpdates + Math.max(1, Math.floor(this.compactAfterUpdates / 4));
      this.logger.warn('store compaction failed', { error: describeError(err) });
    }
  }

  private applyStored(doc: Y.Doc): { snapshotBytes: number; updates: number } {
    let snapshotBytes = 0;
    let updates = 0;
    let seq = 0;
    try {
      doc.transact(() => {
        const snap = this.sql.selectSnapshot.get() as { data: Uint8Array } | undefined;
        if (snap !== undefined) {
          snapshotBytes = snap.data.byteLength;
          Y.applyUpdateV2(doc, snap.data);
        }
        for (const row of this.sql.selectLog.iterate() as Iterable<{ seq: number; data: Uint8Array }>) {
          seq = row.seq;
          Y.applyUpdateV2(doc, row.data);
          updates++;
        }
      }, storeOrigin);
    } catch (err) {
      if (sqliteCode(err) !== undefined) throw openError(this.path, err);
      const where = seq === 0 ? 'the snapshot' : `logged update #${seq}`;
      throw new DataDirError(
        'E_STORE_CORRUPT',
        `cluster document store ${this.path}: ${where} cannot be decoded`,
        {
          hint: corruptHint(this.path),
          details: { path: this.path, seq },
          cause: err,
        },
      );
    }
    return { snapshotBytes, updates };
  }

  /** The whole stored state re-encoded, for when no attached doc is known to hold it. */
  private rebuildSnapshot(): Uint8Array {
    const doc = new Y.Doc();
    try {
      this.applyStored(doc);
      return Y.encodeStateAsUpdateV2(doc);
    } finally {
      doc.destroy();
    }
  }

  private notDurableError(): MeshdError {
    const failure = this.failure ?? { code: 'E_STORAGE', what: 'not yet written', since: this.clock.now() };
    const n = this.pending.length;
    const details = { path: this.path, pending: n, since: new Date(failure.since).toISOString() };
    if (failure.code === 'E_DISK_FULL') {
      return new StorageError(
        'E_DISK_FULL',
        `disk full: cluster document changes are not saved to ${this.path} (${n} pending update(s), kept in memory)`,
        {
          hint: `Free space on the disk holding ${this.path}; meshd writes the pending changes by itself within seconds. Do not stop meshd before that, or these changes survive only on peers.`,
          details,
        },
      );
    }
    return new StorageError(
      'E_STORAGE',
      `cannot write cluster document changes to ${this.path}: ${failure.what} (${n} pending update(s), kept in memory)`,
      {
        hint: `Check the disk and permissions of ${this.path} (free space, read-only mount, I/O errors in dmesg); meshd retries by itself.`,
        details,
      },
    );
  }

  private rollbackQuietly(): void {
    try {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
    } catch {
      // SQLite may already have rolled back on SQLITE_FULL/IOERR.
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`DocStore ${this.path} is closed`);
  }
}

function prepareSchema(db: DatabaseSync, path: string): void {
  // First read: fails with SQLITE_NOTADB on a foreign or garbage file.
  const appId = (db.prepare('PRAGMA application_id').get() as { application_id: number }).application_id;
  const tables = (
    db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table'").get() as { n: number }
  ).n;
  if (appId !== applicationId && (appId !== 0 || tables > 0)) {
    throw new DataDirError('E_STORE_FOREIGN', `${path} is an SQLite database, but not a meshd store`, {
      hint: 'Check the --data-dir path: meshd keeps its own file there. Move this file elsewhere if it is not meshd’s.',
      details: { path, applicationId: appId },
    });
  }
  if (appId === applicationId) {
    const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
    if (version > schemaVersion) {
      throw new DataDirError(
        'E_STORE_VERSION',
        `${path} was written by a newer meshd (store layout ${version}, this meshd reads up to ${schemaVersion})`,
        { hint: 'Upgrade meshd on this machine.', details: { path, version } },
      );
    }
    const check = db.prepare('PRAGMA quick_check(1)').get() as { quick_check: string } | undefined;
    if (check?.quick_check !== 'ok') {
      throw new DataDirError(
        'E_STORE_CORRUPT',
        `cluster document store ${path} is damaged: ${check?.quick_check}`,
        {
          hint: corruptHint(path),
          details: { path },
        },
      );
    }
  } else {
    // Fresh file. auto_vacuum must be chosen before the first table exists.
    db.exec('PRAGMA auto_vacuum = INCREMENTAL');
  }
  const mode = (db.prepare('PRAGMA journal_mode = WAL').get() as { journal_mode: string }).journal_mode;
  if (mode !== 'wal') throw new Error(`SQLite refused WAL mode (got ${mode})`);
  // FULL: every commit is fsynced, so an update is on disk when its append returns.
  db.exec('PRAGMA synchronous = FULL; PRAGMA busy_timeout = 2000;');
  if (appId === 0) {
    db.exec(`BEGIN IMMEDIATE;
      CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL, at INTEGER NOT NULL);
      CREATE TABLE updates (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      PRAGMA application_id = ${applicationId};
      PRAGMA user_version = ${schemaVersion};
      COMMIT;`);
  }
}

function corruptHint(path: string): string {
  return `Stop meshd and move the file aside (mv ${path} ${path}.damaged; also its -wal and -shm files). On restart meshd starts an empty store and resyncs the cluster document from peers; this node's local run state in that file is lost.`;
}

/** SQLite's primary result code of a node:sqlite error, if it is one. */
function sqliteCode(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null || !('errcode' in err)) return undefined;
  const code = (err as { errcode: unknown }).errcode;
  return typeof code === 'number' ? code & 0xff : undefined;
}

function openError(path: string, err: unknown): MeshdError {
  if (err instanceof DataDirError || err instanceof StorageError) return err;
  const code = sqliteCode(err);
  const opts = { details: { path, sqlite: describeError(err) }, cause: err };
  if (code === SQLITE_NOTADB) {
    return new DataDirError('E_STORE_NOT_DB', `${path} is not a meshd store: it is not an SQLite database`, {
      ...opts,
      hint: `Check the --data-dir path. If this is meshd's store and it was damaged, ${corruptHint(path)}`,
    });
  }
  if (code === SQLITE_CORRUPT) {
    return new DataDirError('E_STORE_CORRUPT', `cluster document store ${path} is damaged`, {
      ...opts,
      hint: corruptHint(path),
    });
  }
  if (code === SQLITE_CANTOPEN) {
    return new DataDirError('E_STORE_UNREADABLE', `cannot open cluster document store ${path}`, {
      ...opts,
      hint: 'Check that the data directory exists, is writable by meshd, and that the path is a file, not a directory.',
    });
  }
  if (code === SQLITE_BUSY) {
    return new DataDirError('E_STORE_LOCKED', `cluster document store ${path} is locked by another process`, {
      ...opts,
      hint: 'Is another meshd running with this data directory? Stop it first.',
    });
  }
  return storageError(path, err, 'opening the cluster document store');
}

function storageError(path: string, err: unknown, doing: string): StorageError {
  const code = sqliteCode(err);
  const details = { path, sqlite: describeError(err) };
  if (code === SQLITE_FULL) {
    return new StorageError('E_DISK_FULL', `disk full while ${doing} (${path})`, {
      hint: `Free space on the disk holding ${path}, then retry.`,
      details,
      cause: err,
    });
  }
  const kind =
    code === SQLITE_READONLY ? 'file is read-only' : code === SQLITE_IOERR ? 'I/O error' : describeError(err);
  return new StorageError('E_STORAGE', `${kind} while ${doing} (${path})`, {
    hint: `Check the disk and permissions of ${path} (free space, read-only mount, I/O errors in dmesg), then retry.`,
    details,
    cause: err,
  });
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
