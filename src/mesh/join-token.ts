// Join tokens: a versioned, copy-paste-safe string carrying what a new peer needs to enter a mesh.
//
// Format: `meshd1` + base58btc( msgpack(payload) ‖ first 4 bytes of sha256(msgpack(payload)) ).
// base58 has no look-alike characters and selects with one double-click; the checksum catches a
// truncated or mistyped token before anything is written to disk.

import { createHash } from 'node:crypto';
import { Packr } from 'msgpackr';
import { fromString as fromText, toString as toText } from 'uint8arrays';
import { TokenError } from '../shared/errors.ts';

export const tokenPrefix = 'meshd';
export const tokenVersion = 1;

export interface JoinToken {
  meshId: string;
  meshName: string;
  /** 32 raw bytes: the mesh's pre-shared key for the libp2p private network. */
  psk: Uint8Array;
  /** Bumped by key rotation; a token with an older epoch is stale. */
  keyEpoch: number;
  /** Multiaddrs ending in /p2p/<peerId> of members to dial first. */
  bootstrap: string[];
}

const checksumBytes = 4;
const packr = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true });
const fixHint = 'Copy the whole token again (run `meshd token` on any member to print one).';

export function encodeJoinToken(token: JoinToken): string {
  if (token.psk.byteLength !== 32) throw new Error('join token psk must be 32 bytes');
  const body = packr.pack({
    v: tokenVersion,
    m: token.meshId,
    n: token.meshName,
    k: token.psk,
    e: token.keyEpoch,
    b: token.bootstrap,
  });
  const sum = checksum(body);
  const bytes = new Uint8Array(body.byteLength + checksumBytes);
  bytes.set(body, 0);
  bytes.set(sum, body.byteLength);
  return `${tokenPrefix}${tokenVersion}${toText(bytes, 'base58btc')}`;
}

/** Parses a token, throwing a TokenError that says exactly what is wrong with it. */
export function decodeJoinToken(input: string): JoinToken {
  const text = input.trim();
  if (text.length === 0) throw new TokenError('E_TOKEN_EMPTY', 'the join token is empty', { hint: fixHint });
  if (!text.startsWith(tokenPrefix)) {
    const looksLike = text.startsWith('tskey-') ? ' (it looks like a Tailscale auth key)' : '';
    throw new TokenError(
      'E_TOKEN_FOREIGN',
      `this is not a meshd join token${looksLike}: it should start with "${tokenPrefix}${tokenVersion}"`,
      { hint: fixHint },
    );
  }
  // One digit: base58 digits follow the version, so `meshd12…` is version 1 followed by data.
  const versionMatch = /^meshd(\d)/.exec(text);
  const version = versionMatch?.[1] === undefined ? Number.NaN : Number(versionMatch[1]);
  if (version !== tokenVersion) {
    const newer = Number.isFinite(version) && version > tokenVersion;
    throw new TokenError(
      'E_TOKEN_VERSION',
      newer
        ? `join token version ${version} is newer than this meshd understands (version ${tokenVersion})`
        : `join token has no valid version after "${tokenPrefix}"`,
      { hint: newer ? 'Upgrade meshd on this machine, then join again.' : fixHint },
    );
  }
  const encoded = text.slice(`${tokenPrefix}${tokenVersion}`.length);
  const bad = /[^1-9A-HJ-NP-Za-km-z]/.exec(encoded);
  if (bad !== null) {
    throw new TokenError(
      'E_TOKEN_DAMAGED',
      `join token has a character that cannot appear in a token: ${JSON.stringify(bad[0])} at position ${
        bad.index + tokenPrefix.length + 2
      }`,
      { hint: fixHint },
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = fromText(encoded, 'base58btc');
  } catch {
    throw new TokenError('E_TOKEN_DAMAGED', 'join token is damaged: it does not decode', { hint: fixHint });
  }
  if (bytes.byteLength <= checksumBytes) {
    throw new TokenError('E_TOKEN_DAMAGED', 'join token is too short: it was probably cut off', {
      hint: fixHint,
    });
  }
  const body = bytes.subarray(0, bytes.byteLength - checksumBytes);
  const sum = bytes.subarray(bytes.byteLength - checksumBytes);
  if (!equalBytes(sum, checksum(body))) {
    throw new TokenError(
      'E_TOKEN_DAMAGED',
      'join token is damaged (checksum mismatch): it was probably truncated or mistyped',
      { hint: fixHint },
    );
  }
  let raw: unknown;
  try {
    raw = packr.unpack(body);
  } catch {
    throw new TokenError('E_TOKEN_DAMAGED', 'join token is damaged: its contents do not decode', {
      hint: fixHint,
    });
  }
  return validatePayload(raw);
}

function validatePayload(raw: unknown): JoinToken {
  const fail = (what: string): never => {
    throw new TokenError('E_TOKEN_INVALID', `join token is invalid: ${what}`, { hint: fixHint });
  };
  if (typeof raw !== 'object' || raw === null) return fail('not an object');
  const p = raw as Record<string, unknown>;
  if (p.v !== tokenVersion) fail(`payload version ${String(p.v)} does not match ${tokenVersion}`);
  if (typeof p.m !== 'string' || p.m.length === 0) fail('mesh id missing');
  if (typeof p.n !== 'string') fail('mesh name missing');
  if (!(p.k instanceof Uint8Array) || p.k.byteLength !== 32) fail('pre-shared key missing or not 32 bytes');
  if (typeof p.e !== 'number' || !Number.isInteger(p.e) || p.e < 0) fail('key epoch missing');
  if (!Array.isArray(p.b) || !p.b.every((a) => typeof a === 'string' && a.includes('/p2p/'))) {
    fail('bootstrap addresses missing or without a peer id');
  }
  return {
    meshId: p.m as string,
    meshName: p.n as string,
    psk: new Uint8Array(p.k as Uint8Array),
    keyEpoch: p.e as number,
    bootstrap: p.b as string[],
  };
}

function checksum(body: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(body).digest().subarray(0, checksumBytes));
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}
