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

/** Compacted revisions whose individual summaries were dropped to bound the history: how many, and when. */
export interface DroppedSummaries {
  count: number;
  /** Stamp of the newest dropped revision. */
  upTo: Stamp;
  firstAt: number;
  lastAt: number;
}

/**
 * A compaction base: the folded state of every record in `summaries` (and of older bases). Its id
 * hashes only its content, so two peers compacting the same records write the same id.
 */
export interface BaseRecord {
  v: 1;
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

export type UnsignedBase = Omit<BaseRecord, 'id' | 'sig' | 'compactor' | 'at'>;

function baseBody(b: UnsignedBase): JsonObject {
  return {
    v: b.v,
    kind: b.kind,
    object: b.object,
    cut: [...b.cut],
    heads: b.heads,
    summaries: b.summaries.map((s) => summaryJson(s)),
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

export function summaryJson(s: RevisionSummary): JsonObject {
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

export function baseId(b: UnsignedBase): string {
  return hashId('meshd/base/v1', baseBody(b)).id;
}

function baseSigPayload(id: string, compactor: Author, at: number): Uint8Array {
  return hashId('meshd/base-sig/v1', { id, compactor: { ...compactor }, at }).bytes;
}

export function signBase(unsigned: UnsignedBase, compactor: Author, at: number, signer: Signer): BaseRecord {
  if (compactor.peer !== signer.peer)
    throw new TypeError(`compactor ${compactor.peer} is not ${signer.peer}`);
  const id = baseId(unsigned);
  const sig = Buffer.from(signer.sign(baseSigPayload(id, compactor, at))).toString('base64url');
  return { ...unsigned, id, compactor, at, sig };
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
  if (baseId(base) !== base.id) return { kind: 'base', base, problem: 'id does not match the base content' };
  const payload = baseSigPayload(base.id, base.compactor, base.at);
  if (!verifier.verify(base.compactor.peer, payload, Buffer.from(base.sig, 'base64url'))) {
    return { kind: 'base', base, problem: `signature does not verify for peer ${base.compactor.peer}` };
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
