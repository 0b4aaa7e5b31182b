// The private network's keystream: any chunking of a stream encrypts exactly like the whole at once.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { KeyStream, NONCE_BYTES } from './private-network.ts';

test('property: a keystream over any chunking equals one pass over the whole', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: NONCE_BYTES, maxLength: NONCE_BYTES }),
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 12 }),
      (key, nonce, chunks) => {
        const stream = new KeyStream(key, nonce);
        const pieces = Buffer.concat(chunks.map((c) => stream.update(c)));
        const whole = new KeyStream(key, nonce).update(Buffer.concat(chunks));
        assert.deepEqual(new Uint8Array(pieces), new Uint8Array(whole));
      },
    ),
  );
});

test('the same key and nonce give the bytes back; another nonce or key does not', () => {
  const key = new Uint8Array(32).fill(3);
  const nonce = new Uint8Array(NONCE_BYTES).fill(5);
  const text = new TextEncoder().encode('the mesh key protects every byte of the connection');
  const sealed = new KeyStream(key, nonce).update(text);
  assert.notDeepEqual(new Uint8Array(sealed), text);
  assert.deepEqual(new Uint8Array(new KeyStream(key, nonce).update(sealed)), text);
  const otherNonce = new KeyStream(key, new Uint8Array(NONCE_BYTES).fill(6)).update(sealed);
  assert.notDeepEqual(new Uint8Array(otherNonce), text);
  const otherKey = new KeyStream(new Uint8Array(32).fill(4), nonce).update(sealed);
  assert.notDeepEqual(new Uint8Array(otherKey), text);
});

test('the keystream is ChaCha20 (RFC 8439 section 2.4.2 test vector, block counter 1)', () => {
  // The RFC vector starts at block 1: skip the 64 bytes of block 0 first.
  const key = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');
  const nonce = Buffer.alloc(NONCE_BYTES);
  Buffer.from('000000000000004a00000000', 'hex').copy(nonce);
  const stream = new KeyStream(key, nonce);
  stream.update(new Uint8Array(64));
  const plain = Buffer.from(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  );
  const sealed = Buffer.from(stream.update(plain)).toString('hex');
  assert.equal(sealed.slice(0, 32), '6e2e359a2568f98041ba0728dd0d6981');
});
