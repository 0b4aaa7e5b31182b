// One sync run brings two documents level both ways; malformed frames are refused and never touch a document.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { lpStream, streamPair } from '@libp2p/utils';
import fc from 'fast-check';
import * as Y from 'yjs';
import { canonicalJson } from '../../test/support/mesh-peers.ts';
import { MeshdError, PeerProtocolError } from '../shared/errors.ts';
import {
  decodeSyncFrame,
  encodeSyncFrame,
  runDocSync,
  type SyncByteCounts,
  type SyncParty,
} from './doc-sync.ts';
import { applyPeerUpdate } from './doc-update.ts';

const origin = Symbol('test-remote');

function party(doc: Y.Doc, peer: string): SyncParty {
  return {
    stateVector: () => Y.encodeStateVector(doc),
    missingFor: (sv) => Y.encodeStateAsUpdate(doc, sv),
    apply: (update) => applyPeerUpdate(doc, update, origin, peer),
  };
}

const state = (doc: Y.Doc) => canonicalJson(doc.getMap('m').toJSON());
const counts = (): SyncByteCounts => ({ bytesSent: 0, bytesReceived: 0 });

test('frames round-trip in the y-protocols layout', () => {
  const sv = Y.encodeStateVector(new Y.Doc());
  assert.deepEqual(decodeSyncFrame(encodeSyncFrame({ kind: 'step1', stateVector: sv }), 'p'), {
    kind: 'step1',
    stateVector: sv,
  });
  const update = Uint8Array.from([0, 0]);
  assert.deepEqual(decodeSyncFrame(encodeSyncFrame({ kind: 'step2', update }), 'p'), {
    kind: 'step2',
    update,
  });
  assert.deepEqual([...encodeSyncFrame({ kind: 'step2', update })], [1, 2, 0, 0]);
});

test('arbitrary bytes decode to a frame or fail with a PeerProtocolError, nothing else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        decodeSyncFrame(bytes, 'p');
      } catch (err) {
        assert.ok(err instanceof PeerProtocolError, String(err));
      }
    }),
    { numRuns: 2000 },
  );
});

test('one run over a stream brings both documents level, each applying with the remote origin', async () => {
  const a = new Y.Doc();
  const b = new Y.Doc();
  a.getMap('m').set('a', 1);
  b.getMap('m').set('b', { nested: [1, 2] });
  const origins: unknown[] = [];
  a.on('update', (_u: Uint8Array, o: unknown) => origins.push(o));
  const [sa, sb] = await streamPair();
  const ca = counts();
  const cb = counts();
  await Promise.all([
    runDocSync(sa, party(a, 'b'), {
      maxFrameBytes: 1 << 20,
      signal: AbortSignal.timeout(5000),
      peer: 'b',
      counts: ca,
    }),
    runDocSync(sb, party(b, 'a'), {
      maxFrameBytes: 1 << 20,
      signal: AbortSignal.timeout(5000),
      peer: 'a',
      counts: cb,
    }),
  ]);
  assert.equal(state(a), state(b));
  assert.equal(state(a), canonicalJson({ a: 1, b: { nested: [1, 2] } }));
  assert.deepEqual(origins, [origin]);
  assert.equal(ca.bytesSent, cb.bytesReceived);
  assert.equal(cb.bytesSent, ca.bytesReceived);
});

test('a garbage step 2 is refused, the stream aborted, and the document left as it was', async () => {
  const a = new Y.Doc();
  a.getMap('m').set('keep', true);
  const before = Y.encodeStateAsUpdate(a);
  const [sa, sb] = await streamPair();
  const run = runDocSync(sa, party(a, 'evil'), {
    maxFrameBytes: 1 << 20,
    signal: AbortSignal.timeout(5000),
    peer: 'evil',
    counts: counts(),
  });
  const lp = lpStream(sb);
  await lp.write(encodeSyncFrame({ kind: 'step1', stateVector: Y.encodeStateVector(new Y.Doc()) }));
  await lp.write(
    encodeSyncFrame({ kind: 'step2', update: Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]) }),
  );
  await assert.rejects(
    run,
    (e: unknown) =>
      e instanceof PeerProtocolError && e.code === 'E_PEER_BAD_UPDATE' && e.details?.peer === 'evil',
  );
  assert.deepEqual(Y.encodeStateAsUpdate(a), before);
  assert.equal(sa.status, 'aborted');
});

test('frames in the wrong order and oversized frames are refused', async () => {
  for (const [what, bytes, code] of [
    ['step 2 first', encodeSyncFrame({ kind: 'step2', update: Uint8Array.from([0, 0]) }), 'E_PEER_BAD_FRAME'],
    ['oversized length', new Uint8Array(2048), 'E_PEER_FRAME_TOO_LARGE'],
    // more bytes in one burst than the read buffer holds, before any length could be checked
    ['oversized burst', new Uint8Array(2 * 1024 * 1024), 'E_PEER_FRAME_TOO_LARGE'],
  ] as const) {
    const [sa, sb] = await streamPair();
    const run = runDocSync(sa, party(new Y.Doc(), 'evil'), {
      maxFrameBytes: 1024,
      signal: AbortSignal.timeout(5000),
      peer: 'evil',
      counts: counts(),
    });
    // the refusing end resets the stream, so a large write may fail half-way: that is the point
    const written = lpStream(sb)
      .write(bytes)
      .catch(() => undefined);
    await assert.rejects(run, (e: unknown) => e instanceof PeerProtocolError && e.code === code, what);
    await written;
  }
});

test('a document too large for one frame fails locally with E_SYNC_TOO_LARGE, not as a peer fault', async () => {
  const big = new Y.Doc();
  big.getMap('m').set('blob', 'x'.repeat(4096));
  const [sa, sb] = await streamPair();
  const run = runDocSync(sa, party(big, 'p'), {
    maxFrameBytes: 1024,
    signal: AbortSignal.timeout(5000),
    peer: 'p',
    counts: counts(),
  });
  const lp = lpStream(sb);
  await lp.write(encodeSyncFrame({ kind: 'step1', stateVector: Y.encodeStateVector(new Y.Doc()) }));
  await assert.rejects(
    run,
    (e: unknown) =>
      e instanceof MeshdError && !(e instanceof PeerProtocolError) && e.code === 'E_SYNC_TOO_LARGE',
  );
});
