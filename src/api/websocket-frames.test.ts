// RFC 6455 framing: the handshake key, frame headers of every length class, and the client-frame parser's refusals.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  acceptKey,
  encodeClose,
  encodeFrame,
  encodeText,
  FrameReader,
  isValidClientKey,
  WsProtocolError,
  wsClose,
  wsOpcode,
} from './websocket-frames.ts';

/** A client frame as a browser sends it: masked, with the shortest length encoding. */
function clientFrame(
  opcode: number,
  payload: Uint8Array,
  opts: { fin?: boolean; mask?: boolean; rsv?: number } = {},
) {
  const n = payload.byteLength;
  const lengthBytes =
    n < 126
      ? [n]
      : n <= 0xffff
        ? [126, n >> 8, n & 0xff]
        : [127, 0, 0, 0, 0, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
  const masked = opts.mask ?? true;
  const key = [0x12, 0x34, 0x56, 0x78];
  const head = [
    ((opts.fin ?? true) ? 0x80 : 0) | (opts.rsv ?? 0) | opcode,
    (masked ? 0x80 : 0) | (lengthBytes[0] ?? 0),
    ...lengthBytes.slice(1),
  ];
  const body = masked ? payload.map((b, i) => b ^ (key[i & 3] ?? 0)) : payload;
  return Buffer.concat([Buffer.from(head), masked ? Buffer.from(key) : Buffer.alloc(0), Buffer.from(body)]);
}

test('the accept key is the one of RFC 6455 §1.3', () => {
  assert.equal(acceptKey('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  assert.ok(isValidClientKey('dGhlIHNhbXBsZSBub25jZQ=='));
  assert.ok(!isValidClientKey(undefined));
  assert.ok(!isValidClientKey('short=='));
  assert.ok(!isValidClientKey('dGhlIHNhbXBsZSBub25jZQ==\r\nx: y'));
});

test('server frames use the 7-bit, 16-bit and 64-bit length forms at their boundaries, unmasked and final', () => {
  for (const [n, headerLength] of [
    [0, 2],
    [125, 2],
    [126, 4],
    [65535, 4],
    [65536, 10],
  ] as const) {
    const frame = encodeFrame(wsOpcode.binary, new Uint8Array(n).fill(7));
    assert.equal(frame.byteLength, headerLength + n, `length ${n}`);
    assert.equal(frame[0], 0x82);
    assert.equal((frame[1] ?? 0) & 0x80, 0, 'never masked');
  }
  const text = encodeText('héllo');
  assert.equal(text[0], 0x81);
  assert.equal(text.subarray(2).toString('utf8'), 'héllo');
  const close = encodeClose(1001, 'x'.repeat(300));
  assert.equal(close.byteLength, 2 + 125, 'a close frame stays a valid control frame');
  assert.equal(close.readUInt16BE(2), 1001);
});

test('client frames parse the same however the bytes are split', () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 5 }),
      fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }),
      (payloads, cuts) => {
        const bytes = Buffer.concat(payloads.map((p) => clientFrame(wsOpcode.binary, p)));
        const reader = new FrameReader(1024);
        const frames = [];
        let at = 0;
        for (let i = 0; at < bytes.byteLength; i++) {
          const size = cuts[i % cuts.length] ?? 1;
          frames.push(...reader.push(bytes.subarray(at, at + size)));
          at += size;
        }
        assert.deepEqual(
          frames.map((f) => [...f.payload]),
          payloads.map((p) => [...p]),
        );
      },
    ),
  );
});

test('the parser refuses what a server must refuse, with the right close code', () => {
  const refuse = (bytes: Buffer, code: number) => {
    assert.throws(
      () => new FrameReader(1024).push(bytes),
      (err: unknown) => err instanceof WsProtocolError && err.closeCode === code,
    );
  };
  const small = Buffer.from('hi');
  refuse(clientFrame(wsOpcode.text, small, { mask: false }), wsClose.protocolError);
  refuse(clientFrame(wsOpcode.text, small, { rsv: 0x40 }), wsClose.protocolError);
  refuse(clientFrame(0x3, small), wsClose.protocolError);
  refuse(clientFrame(wsOpcode.ping, new Uint8Array(126)), wsClose.protocolError);
  refuse(clientFrame(wsOpcode.ping, small, { fin: false }), wsClose.protocolError);
  refuse(clientFrame(wsOpcode.binary, new Uint8Array(1025)), wsClose.tooBig);
  // A 64-bit length larger than the limit is refused from the header alone, before any payload arrives.
  const huge = Buffer.from([0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0]);
  refuse(huge, wsClose.tooBig);
});

test('control frames between fragments and a close with its code come out in order', () => {
  const reader = new FrameReader(1024);
  const close = Buffer.alloc(2);
  close.writeUInt16BE(1000);
  const frames = reader.push(
    Buffer.concat([
      clientFrame(wsOpcode.text, Buffer.from('a'), { fin: false }),
      clientFrame(wsOpcode.ping, Buffer.from('p')),
      clientFrame(wsOpcode.continuation, Buffer.from('b')),
      clientFrame(wsOpcode.close, close),
    ]),
  );
  assert.deepEqual(
    frames.map((f) => [f.opcode, f.fin, f.payload.toString('latin1')]),
    [
      [wsOpcode.text, false, 'a'],
      [wsOpcode.ping, true, 'p'],
      [wsOpcode.continuation, true, 'b'],
      [wsOpcode.close, true, '\x03\xe8'],
    ],
  );
});
