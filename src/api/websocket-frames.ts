// RFC 6455 for the dashboard's notification socket: the handshake key, server frames and a bounded parser of client frames.

import { createHash } from 'node:crypto';

/** The GUID every WebSocket server appends to the client's key (RFC 6455 §1.3). */
const handshakeGuid = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const wsOpcode = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa,
} as const;

export type WsOpcode = (typeof wsOpcode)[keyof typeof wsOpcode];

/** Close codes used here (RFC 6455 §7.4.1). */
export const wsClose = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  tooBig: 1009,
} as const;

/** `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`. */
export function acceptKey(clientKey: string): string {
  return createHash('sha1')
    .update(clientKey + handshakeGuid)
    .digest('base64');
}

/** A client key must be the base64 of 16 bytes (RFC 6455 §4.1). */
export function isValidClientKey(key: string | undefined): key is string {
  return (
    key !== undefined && /^[A-Za-z0-9+/]{22}==$/.test(key) && Buffer.from(key, 'base64').byteLength === 16
  );
}

/** One unfragmented, unmasked server frame (servers never mask, §5.1). */
export function encodeFrame(opcode: WsOpcode, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const n = payload.byteLength;
  const headerLength = n < 126 ? 2 : n <= 0xffff ? 4 : 10;
  const frame = Buffer.alloc(headerLength + n);
  frame[0] = 0x80 | opcode;
  if (n < 126) {
    frame[1] = n;
  } else if (n <= 0xffff) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(n), 2);
  }
  frame.set(payload, headerLength);
  return frame;
}

export function encodeText(text: string): Buffer {
  return encodeFrame(wsOpcode.text, Buffer.from(text, 'utf8'));
}

/** A close frame; the reason is cut so the control frame stays within 125 bytes. */
export function encodeClose(code: number, reason = ''): Buffer {
  const why = Buffer.from(reason, 'utf8').subarray(0, 123);
  const payload = Buffer.alloc(2 + why.byteLength);
  payload.writeUInt16BE(code, 0);
  payload.set(why, 2);
  return encodeFrame(wsOpcode.close, payload);
}

export interface ClientFrame {
  fin: boolean;
  opcode: WsOpcode;
  /** Already unmasked. */
  payload: Buffer;
}

/** The client broke the protocol; the connection must be closed with `closeCode`. */
export class WsProtocolError extends Error {
  readonly closeCode: number;

  constructor(closeCode: number, message: string) {
    super(message);
    this.closeCode = closeCode;
  }
}

const knownOpcodes: ReadonlySet<number> = new Set(Object.values(wsOpcode));

/**
 * Parses client frames from a byte stream. Refuses what a server must refuse: unmasked frames,
 * reserved bits without an extension, unknown opcodes, fragmented or oversized control frames, and
 * any frame larger than `maxPayload` (checked from the header, before the payload is buffered).
 */
export class FrameReader {
  private readonly maxPayload: number;
  private buffered: Buffer = Buffer.alloc(0);

  constructor(maxPayload: number) {
    this.maxPayload = maxPayload;
  }

  /** Frames completed by `chunk`, in order. Throws WsProtocolError on the first violation. */
  push(chunk: Uint8Array): ClientFrame[] {
    this.buffered =
      this.buffered.byteLength === 0 ? Buffer.from(chunk) : Buffer.concat([this.buffered, chunk]);
    const frames: ClientFrame[] = [];
    for (;;) {
      const frame = this.next();
      if (frame === undefined) return frames;
      frames.push(frame);
    }
  }

  private next(): ClientFrame | undefined {
    const buf = this.buffered;
    if (buf.byteLength < 2) return undefined;
    const b0 = buf[0] ?? 0;
    const b1 = buf[1] ?? 0;
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    if ((b0 & 0x70) !== 0) throw new WsProtocolError(wsClose.protocolError, 'reserved bits set');
    if (!knownOpcodes.has(opcode))
      throw new WsProtocolError(wsClose.protocolError, `unknown opcode ${opcode}`);
    if ((b1 & 0x80) === 0) throw new WsProtocolError(wsClose.protocolError, 'client frames must be masked');
    const isControl = opcode >= 0x8;
    let length = b1 & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (buf.byteLength < 4) return undefined;
      length = buf.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (buf.byteLength < 10) return undefined;
      const big = buf.readBigUInt64BE(2);
      if (big > BigInt(this.maxPayload)) throw new WsProtocolError(wsClose.tooBig, 'frame too large');
      length = Number(big);
      offset = 10;
    }
    if (isControl && (!fin || length > 125)) {
      throw new WsProtocolError(wsClose.protocolError, 'control frames must be final and at most 125 bytes');
    }
    if (length > this.maxPayload) throw new WsProtocolError(wsClose.tooBig, 'frame too large');
    if (buf.byteLength < offset + 4 + length) return undefined;
    const mask = buf.subarray(offset, offset + 4);
    const payload = Buffer.from(buf.subarray(offset + 4, offset + 4 + length));
    for (let i = 0; i < payload.byteLength; i++) payload[i] = (payload[i] ?? 0) ^ (mask[i & 3] ?? 0);
    this.buffered = buf.subarray(offset + 4 + length);
    return { fin, opcode: opcode as WsOpcode, payload };
  }
}
