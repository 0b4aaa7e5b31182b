// The rule that settles the mesh on one key, whatever order rotations arrive in.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { compareKeys, type MeshKey, MeshKeyring } from './mesh-key.ts';

const keyArb: fc.Arbitrary<MeshKey> = fc.record({
  psk: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  epoch: fc.integer({ min: 0, max: 5 }),
});

test('compareKeys is a total order: antisymmetric, and 0 only for the same key', () => {
  fc.assert(
    fc.property(keyArb, keyArb, (a, b) => {
      const ab = compareKeys(a, b);
      assert.equal(Math.sign(ab), -Math.sign(compareKeys(b, a)));
      assert.equal(ab === 0, a.epoch === b.epoch && Buffer.from(a.psk).equals(Buffer.from(b.psk)));
      if (a.epoch !== b.epoch) assert.equal(ab < 0, a.epoch > b.epoch, 'the higher epoch wins');
    }),
  );
});

test('peers that hear the same rotations in any order end on the same key', () => {
  fc.assert(
    fc.property(keyArb, fc.array(keyArb, { maxLength: 8 }), fc.integer(), (start, heard, seed) => {
      const shuffled = [...heard].sort(
        (x, y) =>
          ((x.epoch * 31 + (x.psk[0] ?? 0) + seed) % 7) - ((y.epoch * 31 + (y.psk[0] ?? 0) + seed) % 7),
      );
      const one = new MeshKeyring(start);
      const two = new MeshKeyring(start);
      for (const k of heard) one.adopt(k);
      for (const k of shuffled) two.adopt(k);
      assert.equal(compareKeys(one.current(), two.current()), 0);
      for (const k of [start, ...heard])
        assert.ok(compareKeys(one.current(), k) <= 0, 'no heard key beats the result');
    }),
  );
});

test('a keyring never goes back to an older epoch', () => {
  const ring = new MeshKeyring({ psk: new Uint8Array(32).fill(1), epoch: 3 });
  assert.equal(ring.adopt({ psk: new Uint8Array(32).fill(2), epoch: 2 }), false);
  assert.equal(ring.current().epoch, 3);
  assert.equal(ring.adopt({ psk: new Uint8Array(32).fill(2), epoch: 4 }), true);
  assert.equal(ring.current().epoch, 4);
});
