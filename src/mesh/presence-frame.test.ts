// Presence link frames round-trip, and anything else a peer might send is refused with a reason.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { PeerProtocolError } from '../shared/errors.ts';
import { decodePresenceFrame, encodePresenceFrame, type PresenceFrame, peerTag } from './presence-frame.ts';

const isBadFrame = (e: unknown) => e instanceof PeerProtocolError && e.code === 'E_PEER_BAD_PRESENCE';

test('frames decode to what was encoded, with or without echo and direct set', () => {
  const tags = ['12D3KooWa', '12D3KooWb'].map(peerTag);
  const frames: PresenceFrame[] = [
    { beacons: [Uint8Array.from([1, 2, 3])] },
    {
      beacons: [Uint8Array.from([1]), Uint8Array.from([2, 2])],
      echo: { seq: 1_767_225_600_123, holdMs: 412 },
    },
    { beacons: [], direct: tags },
    { beacons: [Uint8Array.from([9])], echo: { seq: 0, holdMs: 0 }, direct: [] },
  ];
  for (const frame of frames) {
    const decoded = decodePresenceFrame(encodePresenceFrame(frame), 'p');
    // msgpackr hands binary back as Buffers (Uint8Array subclasses): compare the bytes
    assert.deepEqual({ ...decoded, beacons: decoded.beacons.map((b) => Uint8Array.from(b)) }, frame);
  }
});

test('peer tags are 8 bytes, stable and distinct for distinct peers', () => {
  assert.match(peerTag('12D3KooWa'), /^[0-9a-f]{16}$/);
  assert.equal(peerTag('12D3KooWa'), peerTag('12D3KooWa'));
  assert.notEqual(peerTag('12D3KooWa'), peerTag('12D3KooWb'));
});

test('malformed frames are refused, naming the peer', () => {
  const packr = new Packr({ useRecords: false });
  const bad = [
    Uint8Array.from([0xc1]),
    packr.pack({ beacons: [] }),
    packr.pack([2, [], null, null, null]),
    packr.pack([1, ['not bytes'], null, null, null]),
    packr.pack([1, [], -1, 0, null]),
    packr.pack([1, [], 5, null, null]),
    packr.pack([1, [], null, null, Uint8Array.from([1, 2, 3])]),
  ];
  for (const bytes of bad) {
    assert.throws(
      () => decodePresenceFrame(bytes, 'peer-x'),
      (e: unknown) => isBadFrame(e) && e instanceof PeerProtocolError && e.message.includes('peer-x'),
    );
  }
});

test('arbitrary bytes and msgpack values only ever yield E_PEER_BAD_PRESENCE or a valid frame', () => {
  const packr = new Packr({ useRecords: false });
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 256 }),
        fc.anything().map((v) => packr.pack(v)),
        fc
          .tuple(fc.constant(1), fc.anything(), fc.anything(), fc.anything(), fc.anything())
          .map((v) => packr.pack(v)),
      ),
      (bytes) => {
        try {
          const frame = decodePresenceFrame(bytes, 'p');
          assert.ok(frame.beacons.every((b) => b instanceof Uint8Array));
        } catch (e) {
          assert.ok(isBadFrame(e), String(e));
        }
      },
    ),
    { numRuns: 500 },
  );
});
