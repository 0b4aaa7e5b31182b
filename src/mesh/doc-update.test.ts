// Peer updates are checked before they touch the document, and the doc digest tells equal replicas from unequal ones.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import * as Y from 'yjs';
import { PeerProtocolError } from '../shared/errors.ts';
import { applyPeerUpdate, checkStateVector, docDigest } from './doc-update.ts';

test('no byte string a peer sends can change the document unless it is a real update', () => {
  const doc = new Y.Doc();
  doc.getMap('m').set('keep', 1);
  const before = Y.encodeStateAsUpdate(doc);
  const realUpdate = Y.encodeStateAsUpdate(doc);
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 128 }),
        // a real update with some bytes flipped or cut off
        fc.tuple(fc.nat(realUpdate.byteLength - 1), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
          const copy = realUpdate.slice();
          copy[i] = (copy[i] ?? 0) ^ x;
          return copy;
        }),
        fc.nat(realUpdate.byteLength - 1).map((n) => realUpdate.subarray(0, n)),
      ),
      (bytes) => {
        const target = new Y.Doc();
        Y.applyUpdate(target, before);
        try {
          applyPeerUpdate(target, bytes, 'remote', 'p');
        } catch (err) {
          assert.ok(err instanceof PeerProtocolError, String(err));
          assert.deepEqual(target.getMap('m').toJSON(), { keep: 1 });
        }
      },
    ),
    { numRuns: 1000 },
  );
});

test('malformed state vectors are refused', () => {
  assert.doesNotThrow(() => checkStateVector(Y.encodeStateVector(new Y.Doc()), 'p'));
  for (const bad of [Uint8Array.from([5, 1]), Uint8Array.from([1, 0xff])]) {
    assert.throws(
      () => checkStateVector(bad, 'p'),
      (e: unknown) => e instanceof PeerProtocolError && e.code === 'E_PEER_BAD_STATE_VECTOR',
    );
  }
});

test('replicas holding the same content have the same digest, whatever order they learned it in', () => {
  const a = new Y.Doc();
  const b = new Y.Doc();
  a.getMap('m').set('x', 1);
  b.getMap('m').set('y', 2);
  const ua = Y.encodeStateAsUpdate(a);
  const ub = Y.encodeStateAsUpdate(b);
  const c = new Y.Doc();
  const d = new Y.Doc();
  Y.applyUpdate(c, ua);
  Y.applyUpdate(c, ub);
  Y.applyUpdate(d, ub);
  Y.applyUpdate(d, ua);
  assert.equal(docDigest(c), docDigest(d));
  assert.notEqual(docDigest(c), docDigest(a));
});

test('a deletion changes the digest although it leaves the state vector alone', () => {
  const a = new Y.Doc();
  a.getMap('m').set('x', 1);
  const b = new Y.Doc();
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
  const sv = Y.encodeStateVector(a);
  a.getMap('m').delete('x');
  assert.deepEqual(Y.encodeStateVector(a), sv);
  assert.notEqual(docDigest(a), docDigest(b));
});
