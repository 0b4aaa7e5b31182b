// Revision records: their shape, canonical bytes, content ids, Ed25519 signatures and revision labels.

import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { NotFoundError, ValidationError } from '../shared/errors.ts';
import { isPlainObject, type JsonObject, type JsonValue, jsonProblem } from './merge-patch.ts';

/** Who wrote a record: the signing peer, the host it runs on, and the person or controller acting. */
export interface Author {
  peer: string;
  host: string;
  actor: string;
}

export type RecordKind = 'user' | 'system' | 'rollback' | 'delete';
export const recordKinds: readonly RecordKind[] = ['user', 'system', 'rollback', 'delete'];

/**
 * One signed edit of one object. `lamport` is the revision number users see; `parents` are the heads
 * of the object's history the author had seen (this is what "concurrent" is defined by).
 */
export interface RevisionRecord {
  v: 1;
  /** Object key, e.g. `pod/web`: signed, so a record cannot be replayed into another object. */
  object: string;
  /** Content id: hex SHA-256 (128 bits) of the signed payload. */
  id: string;
  lamport: number;
  parents: string[];
  author: Author;
  controller: string;
  kind: RecordKind;
  /** Milliseconds since the epoch, from the author's clock (display only; never used for ordering). */
  at: number;
  message?: string;
  /** RFC 7386 merge patch over `{kind, name, spec, status}`; `null` for a delete. */
  patch: JsonValue;
  /** For rollbacks: id of the revision restored. */
  rollbackTo?: string;
  /** base64url Ed25519 signature by `author.peer` over the payload. */
  sig: string;
}

/** What survives of a compacted record: everything `meshd history` shows, not its content. */
export interface RevisionSummary {
  id: string;
  lamport: number;
  author: Author;
  controller: string;
  kind: RecordKind;
  at: number;
  message?: string;
  rollbackTo?: string;
  concurrent: boolean;
  rejected?: string;
}

/** Sort key of a record: (lamport, peer, id). Also the write stamp of every field it set. */
export type Stamp = readonly [lamport: number, peer: string, id: string];
export const zeroStamp: Stamp = [0, '', ''];

export function compareStamps(a: Stamp, b: Stamp): number {
  if (a[0] !== b[0]) return a[0] - b[0];
  if (a[1] !== b[1]) return a[1] < b[1] ? -1 : 1;
  if (a[2] !== b[2]) return a[2] < b[2] ? -1 : 1;
  return 0;
}

export function stampOf(r: { lamport: number; author: Author; id: string }): Stamp {
  return [r.lamport, r.author.peer, r.id];
}

/**
 * Serialized field tree with write stamps (see materialize.ts): `o` object (since, children, last
 * replacement before it, newest write into it), `v` value, `d` removed. Canonical JSON sorts children, so equal trees hash equal.
 */
export type SerializedNode =
  | readonly ['o', Stamp, { [key: string]: SerializedNode }, Stamp, Stamp]
  | readonly ['v', Stamp, JsonValue]
  | readonly ['d', Stamp];

/** Who wrote some of the dropped revisions (one author acting through one controller), and how many. */
export interface DroppedAuthor {
  author: Author;
  controller: string;
  count: number;
}

/** Compacted revisions whose individual summaries were dropped to bound the history: how many, when, by whom. */
export interface DroppedSummaries {
  count: number;
  /** Stamp of the newest dropped revision. */
  upTo: Stamp;
  firstAt: number;
  lastAt: number;
  /**
   * The most frequent authors of the dropped revisions, most first, at most `maxDroppedAuthors`; the
   * rest of `count` is everyone else. Absent in bases written before authors were counted.
   */
  by?: DroppedAuthor[];
}

/** A compacted revision that can still be rolled back to, as a merge patch from the next newer one. */
export interface RestorePoint {
  id: string;
  patch: JsonValue;
}

/** How many authors an aggregate of dropped revisions names (the rest are only counted). */
export const maxDroppedAuthors = 8;

export function droppedAuthorKey(a: { author: Author; controller: string }): string {
  return JSON.stringify([a.author.peer, a.author.host, a.author.actor, a.controller]);
}

/** The `maxDroppedAuthors` most frequent authors, most first (ties in a fixed order, so every peer agrees). */
export function topDroppedAuthors(all: readonly DroppedAuthor[]): DroppedAuthor[] {
  const keyed = all.map((a) => ({ a, k: droppedAuthorKey(a) }));
  keyed.sort((x, y) => y.a.count - x.a.count || (x.k < y.k ? -1 : x.k > y.k ? 1 : 0));
  return keyed.slice(0, maxDroppedAuthors).map((x) => x.a);
}

/**
 * A compaction base as materialize reads it: the folded state of every record in `summaries` (and of
 * older bases). Its id hashes only its content, so two peers compacting the same records write the
 * same id. Stored as `StoredBase` (v2, with shared tables); v1 bases (this shape, as JSON) are still read.
 */
export interface BaseRecord {
  v: 1 | 2;
  kind: 'base';
  object: string;
  id: string;
  /** Stamp of the last folded record. */
  cut: Stamp;
  /** Heads of the folded history (records no other folded record names as parent). */
  heads: string[];
  summaries: RevisionSummary[];
  /** Revisions folded so long ago that only their count and time span are kept. */
  dropped?: DroppedSummaries;
  /**
   * Restore points: the newest folded user revisions whose user-owned fields (what rollback restores)
   * are kept, newest first. Each patch turns the previous object into that revision's user-owned
   * fields; the first applies to the user-owned fields of `state`. Absent in v1 bases.
   */
  restore?: RestorePoint[];
  state: SerializedNode;
  /** Who compacted and when: signed, but not part of the id. */
  compactor: Author;
  at: number;
  sig: string;
}

export type StoredEntry = RevisionRecord | BaseRecord;

/** Signs payloads as one peer. Synchronous: records are built inside Yjs transactions. */
export interface Signer {
  readonly peer: string;
  sign(payload: Uint8Array): Uint8Array;
}

/** Checks that `peer` signed `payload`; the public key comes from the peer id itself. */
export interface Verifier {
  verify(peer: string, payload: Uint8Array, signature: Uint8Array): boolean;
}

/** JSON with object keys sorted (UTF-16 order) and no whitespace: the bytes that are hashed and signed. */
export function canonicalJson(value: JsonValue): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k] as JsonValue)}`).join(',')}}`;
}

const encoder = new TextEncoder();

function hashId(domain: string, body: JsonValue): { id: string; bytes: Uint8Array } {
  const bytes = encoder.encode(`${domain}\n${canonicalJson(body)}`);
  return { id: createHash('sha256').update(bytes).digest('hex').slice(0, 32), bytes };
}

export type UnsignedRecord = Omit<RevisionRecord, 'id' | 'sig'>;

function recordBody(r: UnsignedRecord): JsonObject {
  const body: JsonObject = {
    v: r.v,
    object: r.object,
    lamport: r.lamport,
    parents: r.parents,
    author: { peer: r.author.peer, host: r.author.host, actor: r.author.actor },
    controller: r.controller,
    kind: r.kind,
    at: r.at,
    patch: r.patch,
  };
  if (r.message !== undefined) body.message = r.message;
  if (r.rollbackTo !== undefined) body.rollbackTo = r.rollbackTo;
  return body;
}

/** Computes the id of `unsigned` and signs it with `signer` (which must be the author's peer). */
export function signRecord(unsigned: UnsignedRecord, signer: Signer): RevisionRecord {
  if (unsigned.author.peer !== signer.peer) {
    throw new TypeError(`record author ${unsigned.author.peer} is not the signing peer ${signer.peer}`);
  }
  const { id, bytes } = hashId('meshd/record/v1', recordBody(unsigned));
  return { ...unsigned, id, sig: Buffer.from(signer.sign(bytes)).toString('base64url') };
}

export type UnsignedBase = Omit<BaseRecord, 'v' | 'id' | 'sig' | 'compactor' | 'at'>;

/**
 * A summary as stored in a v2 base: `[id, lamport, who, kind, at, text, rollbackTo, rejected]`.
 * `who` indexes `StoredBase.who`; `kind` is the index in `recordKinds`, plus 4 when concurrent; `at`
 * is the difference to the previous summary's time, or `[at]` when a difference would not be exact;
 * `text` (the message) and `rejected` index `texts` (-1: none); `rollbackTo` is an id or ''. Trailing
 * "none" values are left out, so a status write without a message is five small values and an id.
 */
export type StoredSummary = readonly (string | number | readonly number[])[];

/** A field-tree node as stored in a v2 base: as `SerializedNode`, stamps given as indices into `stamps`. */
export type StoredNode =
  | readonly ['o', number, { readonly [key: string]: StoredNode }, number, number]
  | readonly ['v', number, JsonValue]
  | readonly ['d', number];

/**
 * A base as written into the document (v2): peers, authors, stamps and texts each stored once in a
 * table and referred to by index, summaries as tuples. The same content as `BaseRecord` in about a
 * third of the bytes; what a long-lived object keeps of its past is mostly this.
 */
export interface StoredBase {
  v: 2;
  kind: 'base';
  object: string;
  id: string;
  /** Peer ids. */
  peers: string[];
  /** An author with the controller it acted through: [peer index, host, actor, controller]. */
  who: (readonly [number, string, string, string])[];
  /** Write stamps: [lamport, peer index, record id]. */
  stamps: (readonly [number, number, string])[];
  /** Messages and rejection reasons. */
  texts: string[];
  /** Index of the cut's stamp. */
  cut: number;
  heads: string[];
  summaries: StoredSummary[];
  /** [count, index of the upTo stamp, firstAt, lastAt, [[who index, count], ...]]. */
  dropped?: readonly [number, number, number, number, readonly (readonly [number, number])[]];
  /** Restore points, newest first: [index of the revision's summary, merge patch]. */
  restore?: readonly (readonly [number, JsonValue])[];
  state: StoredNode;
  /** Who compacted and when: signed, but not part of the id. */
  compactor: Author;
  at: number;
  sig: string;
}

/** The stored form of `b` without id and signature; tables are filled in a fixed traversal order, so equal content encodes equally. */
function encodeBase(b: UnsignedBase): JsonObject {
  const peers: string[] = [];
  const who: [number, string, string, string][] = [];
  const stamps: [number, number, string][] = [];
  const texts: string[] = [];
  const indices = new Map<string, number>();
  const intern = <T>(table: T[], tag: string, k: string, make: () => T): number => {
    const key = `${tag}\u0000${k}`;
    let i = indices.get(key);
    if (i === undefined) {
      i = table.push(make()) - 1;
      indices.set(key, i);
    }
    return i;
  };
  const peer = (p: string) => intern(peers, 'p', p, () => p);
  const text = (t: string) => intern(texts, 't', t, () => t);
  const stamp = (s: Stamp) => {
    const p = peer(s[1]);
    return intern(stamps, 's', JSON.stringify(s), () => [s[0], p, s[2]]);
  };
  const author = (a: Author, controller: string) => {
    const p = peer(a.peer);
    return intern(who, 'w', JSON.stringify([a.peer, a.host, a.actor, controller]), () => [
      p,
      a.host,
      a.actor,
      controller,
    ]);
  };
  const node = (n: SerializedNode): JsonValue => {
    if (n[0] === 'd') return ['d', stamp(n[1])];
    if (n[0] === 'v') return ['v', stamp(n[1]), n[2]];
    const s = stamp(n[1]);
    const c: JsonObject = {};
    for (const k of Object.keys(n[2]).sort()) c[k] = node(n[2][k] as SerializedNode);
    return ['o', s, c, stamp(n[3]), stamp(n[4])];
  };

  const cut = stamp(b.cut);
  const state = node(b.state);
  let prevAt = 0;
  const summaries = b.summaries.map((s) => {
    const d = s.at - prevAt;
    const at: JsonValue = Number.isSafeInteger(d) && prevAt + d === s.at ? d : [s.at];
    prevAt = s.at;
    const kind = recordKinds.indexOf(s.kind) + (s.concurrent ? 4 : 0);
    const row: JsonValue[] = [
      s.id,
      s.lamport,
      author(s.author, s.controller),
      kind,
      at,
      s.message === undefined ? -1 : text(s.message),
      s.rollbackTo ?? '',
      s.rejected === undefined ? -1 : text(s.rejected),
    ];
    while (row.length > 5 && (row.at(-1) === -1 || row.at(-1) === '')) row.pop();
    return row;
  });
  const body: JsonObject = {
    v: 2,
    kind: 'base',
    object: b.object,
    peers,
    who,
    stamps,
    texts,
    cut,
    heads: b.heads,
    summaries,
    state,
  };
  // A restore point names its revision by the index of its summary (an id would cost 33 bytes more).
  const summaryIndex = new Map(b.summaries.map((s, i) => [s.id, i]));
  const restore = (b.restore ?? []).flatMap((r) => {
    const i = summaryIndex.get(r.id);
    return i === undefined ? [] : [[i, r.patch]];
  });
  if (restore.length > 0) body.restore = restore;
  if (b.dropped !== undefined) {
    const d = b.dropped;
    body.dropped = [
      d.count,
      stamp(d.upTo),
      d.firstAt,
      d.lastAt,
      (d.by ?? []).map((x) => [author(x.author, x.controller), x.count]),
    ];
  }
  return body;
}

/** The v1 body (JSON summaries, full stamps): only to check the ids of bases written before v2. */
function baseBodyV1(b: BaseRecord): JsonObject {
  return {
    v: 1,
    kind: b.kind,
    object: b.object,
    cut: [...b.cut],
    heads: b.heads,
    summaries: b.summaries.map((s) => summaryJsonV1(s)),
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

function summaryJsonV1(s: RevisionSummary): JsonObject {
  const out: JsonObject = {
    id: s.id,
    lamport: s.lamport,
    author: { peer: s.author.peer, host: s.author.host, actor: s.author.actor },
    controller: s.controller,
    kind: s.kind,
    at: s.at,
    concurrent: s.concurrent,
  };
  if (s.message !== undefined) out.message = s.message;
  if (s.rollbackTo !== undefined) out.rollbackTo = s.rollbackTo;
  if (s.rejected !== undefined) out.rejected = s.rejected;
  return out;
}

/** The id a base with this content gets (v2): the same on every peer that folds the same records. */
export function baseId(b: UnsignedBase): string {
  return hashId('meshd/base/v2', encodeBase(b)).id;
}

function baseSigPayload(id: string, compactor: Author, at: number): Uint8Array {
  return hashId('meshd/base-sig/v1', { id, compactor: { ...compactor }, at }).bytes;
}

/** Encodes (v2), identifies and signs a base: what goes into the document. */
export function signBase(unsigned: UnsignedBase, compactor: Author, at: number, signer: Signer): StoredBase {
  if (compactor.peer !== signer.peer)
    throw new TypeError(`compactor ${compactor.peer} is not ${signer.peer}`);
  const body = encodeBase(unsigned);
  const { id } = hashId('meshd/base/v2', body);
  const sig = Buffer.from(signer.sign(baseSigPayload(id, compactor, at))).toString('base64url');
  return {
    ...(body as unknown as Omit<StoredBase, 'id' | 'compactor' | 'at' | 'sig'>),
    id,
    compactor: { peer: compactor.peer, host: compactor.host, actor: compactor.actor },
    at,
    sig,
  };
}

// ---- Ed25519 keys through libp2p peer ids ---------------------------------------------------------

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/** A signer for the peer whose libp2p Ed25519 private key this is. */
export function ed25519Signer(privateKey: PrivateKey): Signer {
  if (privateKey.type !== 'Ed25519')
    throw new TypeError(`records are signed with Ed25519 keys, not ${privateKey.type}`);
  const peer = peerIdFromPrivateKey(privateKey).toString();
  const key = createPrivateKey({
    format: 'jwk',
    key: {
      kty: 'OKP',
      crv: 'Ed25519',
      d: b64url(privateKey.raw.subarray(0, 32)),
      x: b64url(privateKey.publicKey.raw),
    },
  });
  return { peer, sign: (payload) => new Uint8Array(sign(null, payload, key)) };
}

/** Verifies against the Ed25519 public key embedded in each peer id; keys are decoded once per verifier. */
export function peerIdVerifier(): Verifier {
  const keys = new Map<string, KeyObject | null>();
  const keyOf = (peer: string): KeyObject | null => {
    let key = keys.get(peer);
    if (key !== undefined) return key;
    key = null;
    try {
      const id = peerIdFromString(peer);
      if (id.type === 'Ed25519') {
        key = createPublicKey({
          format: 'jwk',
          key: { kty: 'OKP', crv: 'Ed25519', x: b64url(id.publicKey.raw) },
        });
      }
    } catch {
      key = null;
    }
    if (keys.size > 10_000) keys.clear();
    keys.set(peer, key);
    return key;
  };
  return {
    verify(peer, payload, signature) {
      const key = keyOf(peer);
      if (key === null) return false;
      try {
        return verify(null, payload, key, signature);
      } catch {
        return false;
      }
    },
  };
}

// ---- Checking entries read from the document ------------------------------------------------------

export type CheckedEntry =
  | { kind: 'record'; record: RevisionRecord; problem?: string }
  | { kind: 'base'; base: BaseRecord; problem?: string }
  | { kind: 'malformed'; reason: string };

export type EntryChecker = (entry: unknown) => CheckedEntry;

const idPattern = /^[0-9a-f]{32}$/;
/** Payload bytes above which a record is refused (a spec is at most 64 KiB; status is small). */
export const maxRecordBytes = 256 * 1024;

/**
 * Returns a checker that validates an entry's shape, recomputes its id and verifies its signature.
 * Results are memoized per entry object (Yjs hands out the same objects), so re-materializing is cheap.
 */
export function createEntryChecker(verifier: Verifier): EntryChecker {
  const memo = new WeakMap<object, CheckedEntry>();
  return (entry) => {
    if (entry === null || typeof entry !== 'object') return checkEntry(entry, verifier);
    const hit = memo.get(entry);
    if (hit !== undefined) return hit;
    const checked = checkEntry(entry, verifier);
    memo.set(entry, checked);
    return checked;
  };
}

function checkEntry(entry: unknown, verifier: Verifier): CheckedEntry {
  if (!isPlainObject(entry)) return { kind: 'malformed', reason: 'entry is not an object' };
  if (entry.kind === 'base' && entry.v === 2) return checkBaseV2(entry, verifier);
  if (entry.v !== 1)
    return { kind: 'malformed', reason: `unsupported entry version ${JSON.stringify(entry.v)}` };
  return entry.kind === 'base' ? checkBase(entry, verifier) : checkRecord(entry, verifier);
}

function authorProblem(a: unknown): string | undefined {
  if (!isPlainObject(a)) return 'author is not an object';
  for (const k of Object.keys(a))
    if (!['peer', 'host', 'actor'].includes(k)) return `author has unknown field ${k}`;
  for (const k of ['peer', 'host', 'actor'] as const) {
    const v = a[k];
    if (typeof v !== 'string' || v.length === 0 || v.length > 256)
      return `author.${k} is not a non-empty string`;
  }
  return undefined;
}

const recordFields = new Set([
  'v',
  'object',
  'id',
  'lamport',
  'parents',
  'author',
  'controller',
  'kind',
  'at',
  'message',
  'patch',
  'rollbackTo',
  'sig',
]);

function isLamport(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
}

function isIdList(v: unknown, max: number): v is string[] {
  return Array.isArray(v) && v.length <= max && v.every((x) => typeof x === 'string' && idPattern.test(x));
}

function checkRecord(e: JsonObject, verifier: Verifier): CheckedEntry {
  const bad = (reason: string): CheckedEntry => ({ kind: 'malformed', reason });
  for (const k of Object.keys(e)) if (!recordFields.has(k)) return bad(`record has unknown field ${k}`);
  if (typeof e.id !== 'string' || !idPattern.test(e.id)) return bad('record id is not 32 hex digits');
  if (typeof e.object !== 'string' || !/^[a-z][a-z0-9-]*\/[^/]+$/.test(e.object))
    return bad(`record ${e.id}: object key is not kind/name`);
  if (!isLamport(e.lamport)) return bad(`record ${e.id}: lamport is not a positive integer`);
  if (!isIdList(e.parents, 64)) return bad(`record ${e.id}: parents are not a list of record ids`);
  const ap = authorProblem(e.author);
  if (ap !== undefined) return bad(`record ${e.id}: ${ap}`);
  if (typeof e.controller !== 'string' || e.controller === '') return bad(`record ${e.id}: no controller`);
  if (!recordKinds.includes(e.kind as RecordKind))
    return bad(`record ${e.id}: unknown kind ${String(e.kind)}`);
  if (typeof e.at !== 'number' || !Number.isFinite(e.at)) return bad(`record ${e.id}: at is not a time`);
  if (e.message !== undefined && (typeof e.message !== 'string' || e.message.length > 4096))
    return bad(`record ${e.id}: message is not a string of at most 4096 characters`);
  if (e.rollbackTo !== undefined && (typeof e.rollbackTo !== 'string' || !idPattern.test(e.rollbackTo)))
    return bad(`record ${e.id}: rollbackTo is not a record id`);
  if (!Object.hasOwn(e, 'patch')) return bad(`record ${e.id}: no patch`);
  const jp = jsonProblem(e.patch);
  if (jp !== undefined) return bad(`record ${e.id}: patch: ${jp}`);
  if (typeof e.sig !== 'string') return bad(`record ${e.id}: no signature`);
  const record = e as unknown as RevisionRecord;
  const { id, bytes } = hashId('meshd/record/v1', recordBody(record));
  if (bytes.byteLength > maxRecordBytes)
    return {
      kind: 'record',
      record,
      problem: `record is ${bytes.byteLength} bytes (limit ${maxRecordBytes})`,
    };
  if (id !== record.id) return { kind: 'record', record, problem: 'id does not match the record content' };
  if (!verifier.verify(record.author.peer, bytes, Buffer.from(record.sig, 'base64url'))) {
    return { kind: 'record', record, problem: `signature does not verify for peer ${record.author.peer}` };
  }
  return { kind: 'record', record };
}

const baseFields = new Set([
  'v',
  'kind',
  'object',
  'id',
  'cut',
  'heads',
  'summaries',
  'dropped',
  'state',
  'compactor',
  'at',
  'sig',
]);

function isStamp(v: unknown): v is Stamp {
  return (
    Array.isArray(v) &&
    v.length === 3 &&
    typeof v[0] === 'number' &&
    Number.isSafeInteger(v[0]) &&
    v[0] >= 0 &&
    typeof v[1] === 'string' &&
    typeof v[2] === 'string'
  );
}

function nodeProblem(n: unknown, depth: number): string | undefined {
  if (depth > 64 || !Array.isArray(n) || !isStamp(n[1])) return 'state is not a field tree';
  if (n[0] === 'd' && n.length === 2) return undefined;
  if (n[0] === 'v' && n.length === 3) return jsonProblem(n[2]);
  if (n[0] === 'o' && n.length === 5 && isPlainObject(n[2]) && isStamp(n[3]) && isStamp(n[4])) {
    for (const [k, c] of Object.entries(n[2])) {
      if (k === '__proto__') return 'state has a __proto__ key';
      const p = nodeProblem(c, depth + 1);
      if (p !== undefined) return p;
    }
    return undefined;
  }
  return 'state is not a field tree';
}

function summaryProblem(s: unknown): string | undefined {
  if (!isPlainObject(s)) return 'summary is not an object';
  if (typeof s.id !== 'string' || !idPattern.test(s.id) || !isLamport(s.lamport))
    return 'summary lacks id or lamport';
  const ap = authorProblem(s.author);
  if (ap !== undefined) return ap;
  if (typeof s.controller !== 'string' || !recordKinds.includes(s.kind as RecordKind))
    return 'summary lacks kind';
  if (typeof s.at !== 'number' || typeof s.concurrent !== 'boolean') return 'summary lacks at or concurrent';
  if (s.message !== undefined && typeof s.message !== 'string') return 'summary message is not a string';
  if (s.rejected !== undefined && typeof s.rejected !== 'string') return 'summary rejected is not a string';
  if (s.rollbackTo !== undefined && typeof s.rollbackTo !== 'string')
    return 'summary rollbackTo is not an id';
  return undefined;
}

function checkBase(e: JsonObject, verifier: Verifier): CheckedEntry {
  const bad = (reason: string): CheckedEntry => ({ kind: 'malformed', reason });
  for (const k of Object.keys(e)) if (!baseFields.has(k)) return bad(`base has unknown field ${k}`);
  if (typeof e.id !== 'string' || !idPattern.test(e.id)) return bad('base id is not 32 hex digits');
  if (typeof e.object !== 'string') return bad(`base ${e.id}: no object key`);
  if (!isStamp(e.cut)) return bad(`base ${e.id}: cut is not a stamp`);
  if (!isIdList(e.heads, 4096)) return bad(`base ${e.id}: heads are not record ids`);
  if (!Array.isArray(e.summaries)) return bad(`base ${e.id}: summaries are not a list`);
  for (const s of e.summaries) {
    const p = summaryProblem(s);
    if (p !== undefined) return bad(`base ${e.id}: ${p}`);
  }
  const d = e.dropped;
  if (
    d !== undefined &&
    !(
      isPlainObject(d) &&
      Object.keys(d).length === 4 &&
      Number.isSafeInteger(d.count) &&
      isStamp(d.upTo) &&
      typeof d.firstAt === 'number' &&
      typeof d.lastAt === 'number'
    )
  ) {
    return bad(`base ${e.id}: dropped is not {count, upTo, firstAt, lastAt}`);
  }
  const np = nodeProblem(e.state, 0);
  if (np !== undefined) return bad(`base ${e.id}: ${np}`);
  const ap = authorProblem(e.compactor);
  if (ap !== undefined) return bad(`base ${e.id}: compactor: ${ap.replace('author', 'compactor')}`);
  if (typeof e.at !== 'number' || typeof e.sig !== 'string') return bad(`base ${e.id}: no time or signature`);
  const base = e as unknown as BaseRecord;
  if (hashId('meshd/base/v1', baseBodyV1(base)).id !== base.id)
    return { kind: 'base', base, problem: 'id does not match the base content' };
  const payload = baseSigPayload(base.id, base.compactor, base.at);
  if (!verifier.verify(base.compactor.peer, payload, Buffer.from(base.sig, 'base64url'))) {
    return { kind: 'base', base, problem: `signature does not verify for peer ${base.compactor.peer}` };
  }
  return { kind: 'base', base };
}

const baseV2Fields = new Set([
  'v',
  'kind',
  'object',
  'id',
  'peers',
  'who',
  'stamps',
  'texts',
  'cut',
  'heads',
  'summaries',
  'dropped',
  'restore',
  'state',
  'compactor',
  'at',
  'sig',
]);

function isIndex(v: unknown, table: readonly unknown[]): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < table.length;
}

function isShortString(v: unknown, max: number): v is string {
  return typeof v === 'string' && v.length <= max;
}

/** Reads a stored v2 base into the form materialize folds, or says what is wrong with it. */
function decodeBaseV2(
  e: JsonObject,
): { base: Omit<BaseRecord, 'compactor' | 'at' | 'sig'> } | { problem: string } {
  const fail = (problem: string) => ({ problem });
  const { peers, who, stamps, texts } = e;
  if (!Array.isArray(peers) || !peers.every((p) => isShortString(p, 256)))
    return fail('peers are not strings');
  if (!Array.isArray(texts) || !texts.every((t) => isShortString(t, 4096)))
    return fail('texts are not strings');
  if (!Array.isArray(stamps)) return fail('stamps are not a list');
  const stampTable: Stamp[] = [];
  for (const s of stamps) {
    if (!Array.isArray(s) || s.length !== 3 || !isIndex(s[1], peers) || typeof s[2] !== 'string')
      return fail('a stamp is not [lamport, peer, id]');
    const stamp: unknown = [s[0], peers[s[1]], s[2]];
    if (!isStamp(stamp)) return fail('a stamp is not [lamport, peer, id]');
    stampTable.push(stamp);
  }
  if (!Array.isArray(who)) return fail('who is not a list');
  const whoTable: { author: Author; controller: string }[] = [];
  for (const w of who) {
    if (!Array.isArray(w) || w.length !== 4 || !isIndex(w[0], peers))
      return fail('an author is not [peer, host, actor, controller]');
    const author = { peer: peers[w[0]] as string, host: w[1], actor: w[2] };
    const ap = authorProblem(author);
    if (ap !== undefined) return fail(ap);
    if (typeof w[3] !== 'string' || w[3] === '' || w[3].length > 256)
      return fail('an author has no controller');
    whoTable.push({ author: author as Author, controller: w[3] });
  }
  const stampAt = (i: unknown): Stamp | undefined => (isIndex(i, stampTable) ? stampTable[i] : undefined);
  const cut = stampAt(e.cut);
  if (cut === undefined) return fail('cut is not a stamp');
  if (!isIdList(e.heads, 4096)) return fail('heads are not record ids');
  if (!Array.isArray(e.summaries)) return fail('summaries are not a list');
  const summaries: RevisionSummary[] = [];
  let prevAt = 0;
  for (const row of e.summaries) {
    if (!Array.isArray(row) || row.length < 5 || row.length > 8) return fail('a summary is not a tuple');
    const [id, lamport, w, kf, at, message = -1, rollbackTo = '', rejected = -1] = row;
    if (typeof id !== 'string' || !idPattern.test(id) || !isLamport(lamport))
      return fail('a summary lacks id or lamport');
    if (!isIndex(w, whoTable)) return fail('a summary has no author');
    if (typeof kf !== 'number' || !Number.isInteger(kf) || kf < 0 || kf > 7 || (kf & 3) >= recordKinds.length)
      return fail('a summary has no kind');
    let time: number;
    if (typeof at === 'number' && Number.isSafeInteger(at)) time = prevAt + at;
    else if (Array.isArray(at) && at.length === 1 && typeof at[0] === 'number' && Number.isFinite(at[0]))
      time = at[0];
    else return fail('a summary has no time');
    prevAt = time;
    if (!(message === -1 || isIndex(message, texts))) return fail('a summary message is not a text');
    if (!(rejected === -1 || isIndex(rejected, texts))) return fail('a summary rejection is not a text');
    if (typeof rollbackTo !== 'string' || !(rollbackTo === '' || idPattern.test(rollbackTo)))
      return fail('a summary rollbackTo is not an id');
    const { author, controller } = whoTable[w] as { author: Author; controller: string };
    const s: RevisionSummary = {
      id,
      lamport,
      author,
      controller,
      kind: recordKinds[kf & 3] as RecordKind,
      at: time,
      concurrent: (kf & 4) !== 0,
    };
    if (message !== -1) s.message = texts[message as number] as string;
    if (rollbackTo !== '') s.rollbackTo = rollbackTo;
    if (rejected !== -1) s.rejected = texts[rejected as number] as string;
    summaries.push(s);
  }
  let dropped: DroppedSummaries | undefined;
  if (e.dropped !== undefined) {
    const d = e.dropped;
    const upTo = Array.isArray(d) ? stampAt(d[1]) : undefined;
    if (
      !Array.isArray(d) ||
      d.length !== 5 ||
      !Number.isSafeInteger(d[0]) ||
      upTo === undefined ||
      typeof d[2] !== 'number' ||
      typeof d[3] !== 'number' ||
      !Array.isArray(d[4]) ||
      d[4].length > maxDroppedAuthors
    )
      return fail('dropped is not [count, upTo, firstAt, lastAt, by]');
    const by: DroppedAuthor[] = [];
    for (const x of d[4]) {
      if (!Array.isArray(x) || x.length !== 2 || !isIndex(x[0], whoTable) || !Number.isSafeInteger(x[1]))
        return fail('dropped authors are not [author, count]');
      const { author, controller } = whoTable[x[0]] as { author: Author; controller: string };
      by.push({ author, controller, count: x[1] as number });
    }
    dropped = { count: d[0] as number, upTo, firstAt: d[2], lastAt: d[3], by };
  }
  let restore: RestorePoint[] | undefined;
  if (e.restore !== undefined) {
    if (!Array.isArray(e.restore) || e.restore.length > 64) return fail('restore is not a list');
    restore = [];
    for (const r of e.restore) {
      if (!Array.isArray(r) || r.length !== 2 || !isIndex(r[0], summaries))
        return fail('a restore point is not [summary, patch]');
      const jp = jsonProblem(r[1]);
      if (jp !== undefined) return fail(`restore point ${r[0]}: ${jp}`);
      restore.push({ id: (summaries[r[0]] as RevisionSummary).id, patch: r[1] as JsonValue });
    }
  }
  const node = (n: unknown, depth: number): SerializedNode | string => {
    if (depth > 64 || !Array.isArray(n)) return 'state is not a field tree';
    const s = stampAt(n[1]);
    if (s === undefined) return 'state is not a field tree';
    if (n[0] === 'd' && n.length === 2) return ['d', s];
    if (n[0] === 'v' && n.length === 3) {
      const jp = jsonProblem(n[2]);
      return jp ?? ['v', s, n[2] as JsonValue];
    }
    const p = stampAt(n[3]);
    const last = stampAt(n[4]);
    if (n[0] !== 'o' || n.length !== 5 || !isPlainObject(n[2]) || p === undefined || last === undefined)
      return 'state is not a field tree';
    const c: { [key: string]: SerializedNode } = {};
    for (const [k, child] of Object.entries(n[2])) {
      if (k === '__proto__') return 'state has a __proto__ key';
      const r = node(child, depth + 1);
      if (typeof r === 'string') return r;
      c[k] = r;
    }
    return ['o', s, c, p, last];
  };
  const state = node(e.state, 0);
  if (typeof state === 'string') return fail(state);
  return {
    base: {
      v: 2,
      kind: 'base',
      object: e.object as string,
      id: e.id as string,
      cut,
      heads: e.heads,
      summaries,
      ...(dropped === undefined ? {} : { dropped }),
      ...(restore === undefined ? {} : { restore }),
      state,
    },
  };
}

function checkBaseV2(e: JsonObject, verifier: Verifier): CheckedEntry {
  const bad = (reason: string): CheckedEntry => ({ kind: 'malformed', reason });
  for (const k of Object.keys(e)) if (!baseV2Fields.has(k)) return bad(`base has unknown field ${k}`);
  if (typeof e.id !== 'string' || !idPattern.test(e.id)) return bad('base id is not 32 hex digits');
  if (typeof e.object !== 'string') return bad(`base ${e.id}: no object key`);
  const decoded = decodeBaseV2(e);
  if ('problem' in decoded) return bad(`base ${e.id}: ${decoded.problem}`);
  const ap = authorProblem(e.compactor);
  if (ap !== undefined) return bad(`base ${e.id}: compactor: ${ap.replace('author', 'compactor')}`);
  if (typeof e.at !== 'number' || typeof e.sig !== 'string') return bad(`base ${e.id}: no time or signature`);
  const compactor = e.compactor as unknown as Author;
  const base: BaseRecord = { ...decoded.base, compactor, at: e.at, sig: e.sig };
  const { id: _id, compactor: _c, at: _at, sig: _sig, ...body } = e;
  if (hashId('meshd/base/v2', body).id !== base.id)
    return { kind: 'base', base, problem: 'id does not match the base content' };
  const payload = baseSigPayload(base.id, compactor, base.at);
  if (!verifier.verify(compactor.peer, payload, Buffer.from(base.sig, 'base64url'))) {
    return { kind: 'base', base, problem: `signature does not verify for peer ${compactor.peer}` };
  }
  return { kind: 'base', base };
}

// ---- Revision labels -----------------------------------------------------------------------------

/** The shortest id prefix (at least 4 hex digits) that tells `id` apart from `others`. */
export function shortId(id: string, others: readonly string[] = []): string {
  for (let n = 4; n < id.length; n++) {
    const p = id.slice(0, n);
    if (!others.some((o) => o !== id && o.startsWith(p))) return p;
  }
  return id;
}

export interface Labelled {
  lamport: number;
  id: string;
  revision: string;
}

/**
 * Labels each entry: the lamport number alone when no other entry shares it, else `lamport@idprefix`.
 * The number is fixed when the record is written; the suffix only appears once a concurrent record
 * with the same number is known, and `N@prefix` is always accepted as a reference.
 */
export function revisionLabels(entries: readonly { lamport: number; id: string }[]): string[] {
  const byLamport = new Map<number, string[]>();
  for (const e of entries) {
    const ids = byLamport.get(e.lamport);
    if (ids === undefined) byLamport.set(e.lamport, [e.id]);
    else ids.push(e.id);
  }
  return entries.map((e) => {
    const ids = byLamport.get(e.lamport) ?? [];
    return ids.length > 1 ? `${e.lamport}@${shortId(e.id, ids)}` : String(e.lamport);
  });
}

/**
 * Finds the history entry a user means by `ref`: `5`, `5@3fa2`, or a record id (prefix of 4+ hex
 * digits). A number shared by concurrent records is refused with the candidates listed.
 */
export function resolveRevision<T extends Labelled & { author: Author; controller: string }>(
  objectKey: string,
  history: readonly T[],
  ref: string | number,
): T {
  const text = String(ref).trim();
  const m = /^(\d+)(?:@([0-9a-f]{1,32}))?$/.exec(text);
  let found: T[];
  if (m !== null) {
    const n = Number(m[1]);
    const prefix = m[2];
    found = history.filter((h) => h.lamport === n && (prefix === undefined || h.id.startsWith(prefix)));
  } else if (/^[0-9a-f]{4,32}$/.test(text)) {
    found = history.filter((h) => h.id.startsWith(text));
  } else {
    throw new ValidationError('E_REVISION_REF', `"${text}" is not a revision of ${objectKey}`, {
      hint: 'Give a revision number (5), a number with an id prefix (5@3fa2) or a record id, as `meshd history` shows.',
      details: { object: objectKey, ref: text },
    });
  }
  const only = found[0];
  if (found.length === 1 && only !== undefined) return only;
  if (found.length === 0) {
    throw new NotFoundError('E_NO_REVISION', `${objectKey} has no revision ${text}`, {
      hint: `Run \`meshd history ${objectKey.replace('/', ' ')}\` to list its revisions.`,
      details: { object: objectKey, ref: text },
    });
  }
  const all = history.filter((h) => found.includes(h));
  const labels = all.map(
    (h) =>
      `${h.lamport}@${shortId(
        h.id,
        all.map((x) => x.id),
      )} (${h.author.actor} via ${h.controller})`,
  );
  throw new ValidationError(
    'E_AMBIGUOUS_REVISION',
    `revision ${text} of ${objectKey} is ambiguous: concurrent edits share it: ${labels.join(', ')}`,
    {
      hint: `Name one of them, e.g. --to ${labels[0]?.split(' ')[0] ?? text}.`,
      details: { object: objectKey, ref: text },
    },
  );
}
