// Object store: pods and other objects as signed, append-only revision records in top-level Y.Arrays.

import { randomBytes } from 'node:crypto';
import type * as Y from 'yjs';
import type { Clock } from '../shared/clock.ts';
import { NotFoundError, ValidationError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { type FieldOwnership, ownedFieldsPatch } from './field-ownership.ts';
import {
  type HistoryEntry,
  judgeAppend,
  type MaterializeContext,
  type Materialized,
  materialize,
  objectAtRevision,
} from './materialize.ts';
import { isPlainObject, type JsonObject, type JsonValue, jsonProblem } from './merge-patch.ts';
import { type Pod, storedPodProblem, toStoredPod } from './pod-spec.ts';
import { type CompactionPolicy, defaultCompactionPolicy, planCompaction } from './revision-compaction.ts';
import {
  type Author,
  createEntryChecker,
  type RecordKind,
  type RevisionRecord,
  type Signer,
  type StoredBase,
  signBase,
  signRecord,
  type UnsignedRecord,
  type Verifier,
} from './revision-records.ts';

/**
 * Records are appended to their author's log: the top-level array `objlog:<peer id>`, one per peer,
 * holding that peer's records of every object. A peer pushes to the end of its own log only, so its
 * records are consecutive Yjs items (same client, consecutive clocks, each the origin of the next),
 * and when compaction deletes them, Yjs merges each run of deleted neighbours into one tombstone.
 * An array per object would keep one tombstone per record ever written, since records of one object
 * are never consecutive in its author's clock (the author writes other objects in between): ~5 bytes
 * (V2) and a heap object per record, forever. Top-level types merge across peers by name, so a log
 * needs no creation step. Records are never overwritten; only compaction deletes them.
 */
export const objectLogPrefix = 'objlog:';

/**
 * Before logs, an object's records lived in the top-level array `obj:<kind>/<name>`. Such arrays are
 * still read and compacted (their records drain into bases), never written.
 */
export const objectArrayPrefix = 'obj:';

/**
 * Compaction bases live in a top-level map `objbase:<kind>/<name>`, one fresh key per compaction. A new
 * map key depends on no other item, so a replica always integrates the base together with the record
 * deletions of the same compaction; a base pushed into an array could wait for its left neighbour
 * while those deletions already applied, and the object would vanish there meanwhile.
 */
export const objectBasePrefix = 'objbase:';

export function objectLogName(peer: string): string {
  return `${objectLogPrefix}${peer}`;
}

export function objectArrayName(key: string): string {
  return `${objectArrayPrefix}${key}`;
}

export function objectBaseMapName(key: string): string {
  return `${objectBasePrefix}${key}`;
}

/** `pod/web` → { kind: 'pod', name: 'web' }; undefined for anything else. */
export function parseObjectKey(key: string): { kind: string; name: string } | undefined {
  const m = /^([a-z][a-z0-9-]{0,62})\/([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$/.exec(key);
  return m === null ? undefined : { kind: m[1] as string, name: m[2] as string };
}

/** Why an object of one kind is invalid for its key, or undefined. One per kind. */
export type ObjectValidator = (key: string, object: JsonObject) => string | undefined;

export const builtinValidators: Readonly<Record<string, ObjectValidator>> = Object.freeze({
  pod: storedPodProblem,
});

export interface ObjectStoreDeps {
  signer: Signer;
  verifier: Verifier;
  ownership: FieldOwnership;
  clock: Clock;
  /** This peer's host name, recorded as the compactor of the bases it writes. */
  host?: string;
  validators?: Readonly<Record<string, ObjectValidator>>;
  /** Where compactions are reported (default: nowhere). */
  logger?: Logger;
  /** When to compact after an append; `false` never compacts by itself. Default 200 / keep 50. */
  compaction?: CompactionPolicy | false;
}

export interface AppendInput {
  controller: string;
  kind: RecordKind;
  author: Author;
  message?: string;
  /** Merge patch over the object; `null` (with kind `delete`) deletes it. */
  patch: JsonValue;
  rollbackTo?: string;
}

export interface CompactionReport {
  /** The base as written into the document. */
  base: StoredBase;
  folded: number;
  kept: number;
  /** Array entries deleted. */
  removed: number;
}

export type ChangeListener = (keys: string[]) => void;

/** Reads and writes objects in one cluster Y.Doc. Materialized views are cached until their array changes. */
export class ObjectStore {
  private readonly doc: Y.Doc;
  private readonly deps: ObjectStoreDeps;
  private readonly ctx: MaterializeContext;
  private readonly cache = new Map<string, Materialized>();
  private readonly listeners = new Set<ChangeListener>();
  private readonly onTransaction: (tr: Y.Transaction) => void;
  /** The logs' entries by object key, counted (one entry object can sit in a log twice). */
  private readonly logged = new Map<string, Map<unknown, number>>();
  /** Logs being indexed, with how to stop observing them. */
  private readonly logs = new Map<string, { array: Y.Array<unknown>; stop: () => void }>();
  /** Keys whose log entries changed in the transaction being cleaned up. */
  private touched = new Set<string>();

  constructor(doc: Y.Doc, deps: ObjectStoreDeps) {
    this.doc = doc;
    this.deps = deps;
    const validators = deps.validators ?? builtinValidators;
    this.ctx = {
      check: createEntryChecker(deps.verifier),
      rules: deps.ownership,
      validate: (key, object) => {
        const kind = parseObjectKey(key)?.kind ?? '';
        const v = validators[kind];
        return v === undefined ? `no schema for objects of kind "${kind}"` : v(key, object);
      },
    };
    for (const name of [...doc.share.keys()]) if (name.startsWith(objectLogPrefix)) this.watchLog(name);
    this.touched.clear();
    this.onTransaction = (tr) => this.changed(tr);
    doc.on('afterTransaction', this.onTransaction);
  }

  /** Stops watching the document (the store must not be used afterwards). */
  close(): void {
    this.doc.off('afterTransaction', this.onTransaction);
    for (const log of this.logs.values()) log.stop();
    this.logs.clear();
    this.logged.clear();
    this.listeners.clear();
    this.cache.clear();
  }

  /**
   * Indexes log `name` by object key and keeps the index current. Yjs calls observers before it
   * garbage-collects deleted content, so a deleted entry can still be read to unindex it.
   */
  private watchLog(name: string): void {
    if (this.logs.has(name)) return;
    const array = this.doc.getArray<unknown>(name);
    for (const e of array.toArray()) this.index(e, 1);
    const observer = (ev: Y.YArrayEvent<unknown>) => {
      for (const item of ev.changes.added) for (const e of item.content.getContent()) this.index(e, 1);
      for (const item of ev.changes.deleted) for (const e of item.content.getContent()) this.index(e, -1);
    };
    array.observe(observer);
    this.logs.set(name, { array, stop: () => array.unobserve(observer) });
  }

  /** Counts `entry` in (+1) or out (-1) of its object's log entries. Entries naming no object are ignored. */
  private index(entry: unknown, delta: 1 | -1): void {
    if (!isPlainObject(entry) || typeof entry.object !== 'string') return;
    const key = entry.object;
    let counts = this.logged.get(key);
    if (counts === undefined) {
      if (delta < 0) return;
      counts = new Map();
      this.logged.set(key, counts);
    }
    const n = (counts.get(entry) ?? 0) + delta;
    if (n > 0) counts.set(entry, n);
    else counts.delete(entry);
    if (counts.size === 0) this.logged.delete(key);
    this.touched.add(key);
  }

  private changed(tr: Y.Transaction): void {
    const keys = this.touched;
    this.touched = new Set();
    for (const [name, type] of [...this.doc.share]) {
      if (!tr.changed.has(type)) continue;
      if (name.startsWith(objectLogPrefix)) {
        // A log another peer started: index all of it (the observer was not there for this transaction).
        if (!this.logs.has(name)) this.watchLog(name);
        continue;
      }
      const key = objectKeyOfShare(name);
      if (key !== undefined) keys.add(key);
    }
    for (const k of this.touched) keys.add(k);
    this.touched.clear();
    if (keys.size === 0) return;
    for (const k of keys) this.cache.delete(k);
    for (const l of this.listeners) l([...keys]);
  }

  /** Calls `listener` with the keys of objects whose records changed (local or remote). Returns an unsubscribe. */
  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Keys of every object with records in the document, optionally of one kind, sorted. */
  keys(kind?: string): string[] {
    const out = new Set<string>(this.logged.keys());
    for (const name of this.doc.share.keys()) {
      const key = objectKeyOfShare(name);
      if (key !== undefined) out.add(key);
    }
    return [...out].filter((key) => kind === undefined || key.startsWith(`${kind}/`)).sort();
  }

  /** Records and bases of `key`, as stored (unchecked). */
  private entries(key: string): unknown[] {
    const out: unknown[] = [];
    if (this.doc.share.has(objectArrayName(key)))
      out.push(...this.doc.getArray<unknown>(objectArrayName(key)).toArray());
    for (const [e, n] of this.logged.get(key) ?? []) for (let i = 0; i < n; i++) out.push(e);
    if (this.doc.share.has(objectBaseMapName(key)))
      out.push(...this.doc.getMap<unknown>(objectBaseMapName(key)).values());
    return out;
  }

  /**
   * The materialized object with its history, or undefined if no record of it exists. The result is
   * cached and shared until the object's records change: treat it as read-only.
   */
  get(key: string): Materialized | undefined {
    const hit = this.cache.get(key);
    if (hit !== undefined) return hit;
    const entries = this.entries(key);
    if (entries.length === 0) return undefined;
    const m = materialize(key, entries, this.ctx);
    this.cache.set(key, m);
    return m;
  }

  /**
   * The object right after revision `ref` (`5`, `5@3fa2`, an id prefix), for diffs and rollback.
   * Throws NotFoundError / ValidationError for unknown, ambiguous, compacted or rejected revisions.
   */
  objectAt(key: string, ref: string | number): { entry: HistoryEntry; object: JsonObject | null } {
    return objectAtRevision(key, this.entries(key), this.ctx, ref);
  }

  /** Objects of `kind` (`pod`) that currently exist; deleted ones too with `includeDeleted`. */
  list(kind: string, opts: { includeDeleted?: boolean } = {}): Materialized[] {
    const out: Materialized[] = [];
    for (const key of this.keys(kind)) {
      const m = this.get(key);
      if (m !== undefined && (m.object !== null || opts.includeDeleted === true)) out.push(m);
    }
    return out;
  }

  /**
   * Signs and appends one record. It is checked first exactly as materialize will judge it, so a write
   * that would be rejected throws (OwnershipError for a field the controller does not own,
   * ValidationError for an invalid result) instead of leaving a rejected record behind.
   */
  append(key: string, input: AppendInput): RevisionRecord {
    if (parseObjectKey(key) === undefined) {
      throw new ValidationError('E_OBJECT_KEY', `"${key}" is not an object key like pod/web`, {
        hint: 'Use <kind>/<name> with a lowercase name.',
        details: { path: 'name', key },
      });
    }
    const notJson = jsonProblem(input.patch);
    if (notJson !== undefined) {
      throw new ValidationError('E_PATCH_NOT_JSON', `${key}: the patch is not JSON: ${notJson}`, {
        hint: 'Patches hold only objects, arrays, strings, finite numbers, booleans and null.',
        details: { path: key, object: key },
      });
    }
    this.deps.ownership.assertMayWrite(input.controller, input.patch);
    const current = this.get(key);
    const unsigned: UnsignedRecord = {
      v: 1,
      object: key,
      lamport: (current?.maxLamport ?? 0) + 1,
      parents: current?.heads ?? [],
      author: input.author,
      controller: input.controller,
      kind: input.kind,
      at: this.deps.clock.now(),
      patch: input.patch,
    };
    if (input.message !== undefined) unsigned.message = input.message;
    if (input.rollbackTo !== undefined) unsigned.rollbackTo = input.rollbackTo;
    const record = signRecord(unsigned, this.deps.signer);

    const rejected = judgeAppend(key, current, record, this.ctx);
    if (rejected !== undefined) {
      throw new ValidationError('E_INVALID_OBJECT', `${key}: ${rejected}`, {
        hint: 'Nothing was written. Fix the change and try again; `meshd get` shows the current object.',
        details: { path: key, object: key, reason: rejected },
      });
    }
    const log = objectLogName(this.deps.signer.peer);
    this.watchLog(log);
    this.doc.transact(() => this.doc.getArray<unknown>(log).push([record]));

    const policy = this.deps.compaction ?? defaultCompactionPolicy;
    // Not inside a caller's transaction: compaction needs one of its own (see compact()).
    const due = policy !== false && (current?.recordEntries ?? 0) + 1 > policy.threshold;
    if (due && this.doc._transaction === null) this.compact(key, policy);
    return record;
  }

  /**
   * Makes the user-owned fields (kind, name, spec) of `object` current. Returns the new record, or
   * undefined when they already are: applying an identical spec makes no revision.
   */
  apply(object: JsonObject, author: Author, message?: string): RevisionRecord | undefined {
    const kind = typeof object.kind === 'string' ? object.kind.toLowerCase() : '';
    const key = `${kind}/${typeof object.name === 'string' ? object.name : ''}`;
    const current = this.get(key)?.object ?? null;
    const patch = ownedFieldsPatch(current, object, this.deps.ownership.ownedBy('user'));
    if (patch === undefined) return undefined;
    return this.append(key, {
      controller: 'user',
      kind: 'user',
      author,
      patch,
      ...(message === undefined ? {} : { message }),
    });
  }

  /** `apply` for a validated pod spec (see `parsePodSpec`). */
  applyPod(pod: Pod, author: Author, message?: string): RevisionRecord | undefined {
    return this.apply(toStoredPod(pod), author, message);
  }

  /**
   * A new record whose patch makes the user-owned fields equal to revision `to` (`5`, `5@3fa2`, an id).
   * Status is live state owned by other controllers and is not rolled back. Undefined if nothing changes.
   */
  rollback(key: string, to: string | number, author: Author, message?: string): RevisionRecord | undefined {
    const { entry, object } = this.objectAt(key, to);
    if (object === null) {
      throw new ValidationError(
        'E_ROLLBACK_TO_DELETED',
        `revision ${entry.revision} of ${key} is a deletion`,
        {
          hint: `Roll back to a revision before ${entry.revision}, or delete the object instead.`,
          details: { object: key, revision: entry.revision },
        },
      );
    }
    const current = this.get(key)?.object ?? null;
    const patch = ownedFieldsPatch(current, object, this.deps.ownership.ownedBy('user'));
    if (patch === undefined) return undefined;
    return this.append(key, {
      controller: 'user',
      kind: 'rollback',
      author,
      patch,
      rollbackTo: entry.id,
      message: message ?? `rollback to revision ${entry.revision}`,
    });
  }

  /** Appends a delete tombstone; the history stays readable and a later apply re-creates the object. */
  delete(key: string, author: Author, message?: string): RevisionRecord {
    const current = this.get(key);
    if (current?.object === null || current === undefined) {
      throw new NotFoundError(
        'E_NOT_FOUND',
        `${key} does not exist${current?.deleted === true ? ' (already deleted)' : ''}`,
        {
          hint: `Run \`meshd get ${parseObjectKey(key)?.kind ?? 'pod'}s\` to list what exists.`,
          details: { object: key },
        },
      );
    }
    return this.append(key, {
      controller: 'user',
      kind: 'delete',
      author,
      patch: null,
      ...(message === undefined ? {} : { message }),
    });
  }

  /**
   * Folds old records of `key` into a base (see revision-compaction.ts) and deletes what it replaces,
   * in one transaction. Undefined when under the policy's threshold (unless `force`) or nothing is old enough.
   */
  compact(
    key: string,
    policy: CompactionPolicy = defaultCompactionPolicy,
    force = false,
  ): CompactionReport | undefined {
    const entries = this.entries(key);
    const plan = planCompaction(key, entries, this.ctx, policy, force);
    if (plan === undefined) return undefined;
    const { signer, clock } = this.deps;
    const base = signBase(
      plan.base,
      { peer: signer.peer, host: this.deps.host ?? 'unknown', actor: 'compaction' },
      clock.now(),
      signer,
    );
    if (this.doc._transaction !== null) throw new Error('compact() must not run inside a Yjs transaction');
    let removed = 0;
    // Yjs applies a delete set at once but integrates a client's structs only in clock order, so a
    // base written under this peer's client id could wait for its earlier records on a replica that
    // missed them, while the deletions in the same update already took effect there: the object
    // would vanish meanwhile. Under a fresh client id (Yjs itself reassigns ids at run time) the
    // base is clock 0 of a new client under a fresh map key: it depends on nothing and lands with
    // its deletions. The key is that client id too: fresh by construction, even when another peer
    // wrote the same base already (setting an existing key would depend on the item it replaces),
    // and short, since every replaced base stays in the document as a tombstone with its key.
    // Cost: one more entry in state vectors, and ~50 bytes (V2), per compaction.
    const own = this.doc.clientID;
    const bases = this.doc.getMap<unknown>(objectBaseMapName(key));
    let client = freshClientId(own);
    while (bases.has(client.toString(36))) client = freshClientId(own);
    const baseKey = client.toString(36);
    this.doc.clientID = client;
    try {
      this.doc.transact(() => {
        bases.set(baseKey, base);
        for (const [k, v] of [...bases.entries()]) {
          if (k !== baseKey && this.removable(v, plan.remove)) {
            bases.delete(k);
            removed++;
          }
        }
        // Logs hold every object's records: look only at this object's (no signature checks for others').
        const ours = (e: unknown) => isPlainObject(e) && e.object === key && this.removable(e, plan.remove);
        const arrays: [Y.Array<unknown>, (e: unknown) => boolean][] = [...this.logs.values()].map((l) => [
          l.array,
          ours,
        ]);
        if (this.doc.share.has(objectArrayName(key)))
          arrays.push([
            this.doc.getArray<unknown>(objectArrayName(key)),
            (e) => this.removable(e, plan.remove),
          ]);
        for (const [arr, gone] of arrays) {
          const items = arr.toArray();
          // Delete from the end so earlier indices stay valid; adjacent entries go in one range.
          let i = items.length - 1;
          while (i >= 0) {
            if (!gone(items[i])) {
              i--;
              continue;
            }
            let start = i;
            while (start > 0 && gone(items[start - 1])) start--;
            arr.delete(start, i - start + 1);
            removed += i - start + 1;
            i = start - 1;
          }
        }
      });
    } finally {
      this.doc.clientID = own;
    }
    this.deps.logger?.info('object compacted', {
      object: key,
      base: base.id,
      folded: plan.folded,
      kept: plan.kept,
      removed,
      summaries: plan.base.summaries.length,
      dropped: plan.base.dropped?.count ?? 0,
    });
    return { base, folded: plan.folded, kept: plan.kept, removed };
  }

  private removable(entry: unknown, ids: ReadonlySet<string>): boolean {
    const c = this.ctx.check(entry);
    if (c.kind === 'record') return ids.has(c.record.id);
    if (c.kind === 'base') return ids.has(c.base.id);
    return false;
  }
}

/** The object key a top-level shared type belongs to (`obj:pod/web`, `objbase:pod/web` → `pod/web`). */
function objectKeyOfShare(name: string): string | undefined {
  if (name.startsWith(objectArrayPrefix)) return name.slice(objectArrayPrefix.length);
  if (name.startsWith(objectBasePrefix)) return name.slice(objectBasePrefix.length);
  return undefined;
}

/** A random Yjs client id (uint32, as Yjs makes them) other than `not`. */
function freshClientId(not: number): number {
  for (;;) {
    const id = randomBytes(4).readUInt32LE(0);
    if (id !== not) return id;
  }
}
