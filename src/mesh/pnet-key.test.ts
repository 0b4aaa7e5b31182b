// The mesh key converts losslessly to the swarm key @libp2p/pnet accepts, and malformed keys are refused.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateKey, preSharedKey } from '@libp2p/pnet';
import fc from 'fast-check';
import { ValidationError } from '../shared/errors.ts';
import { PSK_BYTES, pskFromSwarmKey, swarmKeyFromPsk } from './pnet-key.ts';

test('any 32-byte key round-trips through the 95-byte swarm key format', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: PSK_BYTES, maxLength: PSK_BYTES }), (psk) => {
      const swarm = swarmKeyFromPsk(psk);
      assert.equal(swarm.byteLength, 95);
      assert.deepEqual(pskFromSwarmKey(swarm), psk);
    }),
  );
});

test('@libp2p/pnet accepts the swarm key we build, and we read the keys it generates', () => {
  assert.doesNotThrow(() => preSharedKey({ psk: swarmKeyFromPsk(new Uint8Array(PSK_BYTES).fill(7)) })());
  const generated = new Uint8Array(95);
  generateKey(generated);
  assert.equal(pskFromSwarmKey(generated).byteLength, PSK_BYTES);
  assert.deepEqual(swarmKeyFromPsk(pskFromSwarmKey(generated)), generated);
});

test('keys of the wrong length or format are refused with E_PSK_INVALID', () => {
  for (const bad of [new Uint8Array(31), new Uint8Array(33), new Uint8Array(0)]) {
    assert.throws(
      () => swarmKeyFromPsk(bad),
      (e: unknown) => e instanceof ValidationError && e.code === 'E_PSK_INVALID',
    );
  }
  const text = (s: string) => new TextEncoder().encode(s);
  for (const bad of [
    text(''),
    text('/key/swarm/psk/1.0.0/\n/base16/\nabc'),
    text(`/key/swarm/psk/1.0.0/\n/base64/\n${'a'.repeat(64)}`),
    text(`/key/swarm/psk/1.0.0/\n/base16/\n${'g'.repeat(64)}`),
  ]) {
    assert.throws(
      () => pskFromSwarmKey(bad),
      (e: unknown) => e instanceof ValidationError && e.code === 'E_PSK_INVALID',
    );
  }
});
