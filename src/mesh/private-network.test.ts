// The private network's keystream: any chunking of a stream encrypts exactly like the whole at once.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { xsalsa20 } from '@noble/ciphers/salsa.js';
import fc from 'fast-check';
import { NONCE_BYTES, XSalsa20Stream } from './private-network.ts';

test('property: XSalsa20Stream over any chunking equals one XSalsa20 pass over the whole', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: NONCE_BYTES, maxLength: NONCE_BYTES }),
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 12 }),
      (key, nonce, chunks) => {
        const stream = new XSalsa20Stream(key, nonce);
        const pieces = Buffer.concat(chunks.map((c) => stream.update(c)));
        const whole = xsalsa20(key, nonce, Buffer.concat(chunks));
        assert.deepEqual(new Uint8Array(pieces), new Uint8Array(whole));
      },
    ),
  );
});

test('decrypting with the same key and nonce gives the bytes back; another nonce does not', () => {
  const key = new Uint8Array(32).fill(3);
  const nonce = new Uint8Array(NONCE_BYTES).fill(5);
  const text = new TextEncoder().encode('the mesh key protects every byte of the connection');
  const sealed = new XSalsa20Stream(key, nonce).update(text);
  assert.notDeepEqual(sealed, text);
  assert.deepEqual(new XSalsa20Stream(key, nonce).update(sealed), text);
  const other = new XSalsa20Stream(key, new Uint8Array(NONCE_BYTES).fill(6)).update(sealed);
  assert.notDeepEqual(other, text);
});
