import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { TokenError } from '../shared/errors.ts';
import { decodeJoinToken, encodeJoinToken, type JoinToken } from './join-token.ts';

const sample: JoinToken = {
  meshId: 'm-3f9a2c',
  meshName: 'home',
  psk: new Uint8Array(randomBytes(32)),
  keyEpoch: 0,
  bootstrap: ['/ip4/127.0.0.1/tcp/7946/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'],
};

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TokenError, `expected TokenError, got ${String(err)}`);
    assert.ok(err.hint, 'every token error carries a hint');
    return err.code;
  }
  assert.fail('expected the token to be refused');
}

test('a token round-trips and is copy-paste safe', () => {
  const text = encodeJoinToken(sample);
  assert.match(text, /^meshd1[1-9A-HJ-NP-Za-km-z]+$/);
  assert.deepEqual(decodeJoinToken(`  ${text}\n`), sample);
});

test('a truncated token is refused as damaged', () => {
  const text = encodeJoinToken(sample);
  for (const cut of [1, 5, 20, text.length - 8]) {
    assert.equal(
      codeOf(() => decodeJoinToken(text.slice(0, text.length - cut))),
      'E_TOKEN_DAMAGED',
    );
  }
});

test('any single mistyped character is caught', () => {
  const text = encodeJoinToken(sample);
  const alphabet = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  fc.assert(
    fc.property(fc.integer({ min: 6, max: text.length - 1 }), fc.integer({ min: 0, max: 57 }), (pos, ci) => {
      const ch = alphabet[ci] ?? '1';
      fc.pre(text[pos] !== ch);
      const typo = text.slice(0, pos) + ch + text.slice(pos + 1);
      const code = codeOf(() => decodeJoinToken(typo));
      assert.ok(['E_TOKEN_DAMAGED', 'E_TOKEN_INVALID'].includes(code), code);
    }),
    { numRuns: 300 },
  );
});

test('foreign, empty, future-version and look-alike-character tokens say what is wrong', () => {
  assert.equal(
    codeOf(() => decodeJoinToken('')),
    'E_TOKEN_EMPTY',
  );
  assert.equal(
    codeOf(() => decodeJoinToken('tskey-auth-kXyZ')),
    'E_TOKEN_FOREIGN',
  );
  assert.equal(
    codeOf(() => decodeJoinToken('hello world')),
    'E_TOKEN_FOREIGN',
  );
  const text = encodeJoinToken(sample);
  assert.equal(
    codeOf(() => decodeJoinToken(`meshd2${text.slice(6)}`)),
    'E_TOKEN_VERSION',
  );
  assert.throws(
    () => decodeJoinToken(`${text.slice(0, 10)}0${text.slice(11)}`),
    /character .*"0".* at position 11/,
  );
});
