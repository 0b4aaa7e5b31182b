// The dashboard's live channel: WebSocket connections (RFC 6455, text frames out) that get a short JSON notice on every change.

import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
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

export interface NotifySocketsOptions {
  clock: Clock;
  logger: Logger;
  /** A ping goes out this often; a client that answered nothing since the previous ping is dropped. */
  pingEveryMs?: number;
}

interface Connection {
  socket: Duplex;
  reader: FrameReader;
  /** Something arrived since the last ping. */
  alive: boolean;
  closing: boolean;
}

/** Clients only ever send pings, pongs and close frames: anything bigger is refused. */
const maxClientPayload = 4096;
/** A client this far behind is not reading: drop it rather than buffer without bound. */
const maxBufferedBytes = 256 * 1024;

/** Ends an upgrade request with a plain HTTP answer (the socket is not a WebSocket yet). */
export function refuseUpgrade(
  socket: Duplex,
  status: number,
  reason: string,
  body: string,
  headers: Record<string, string> = {},
): void {
  const head = [
    `HTTP/1.1 ${status} ${reason}`,
    'content-type: application/json',
    `content-length: ${Buffer.byteLength(body)}`,
    'connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ].join('\r\n');
  socket.end(`${head}\r\n\r\n${body}`);
}

export class NotifySockets {
  private readonly opts: NotifySocketsOptions;
  private readonly connections = new Set<Connection>();
  private readonly pinger: TimerHandle;

  constructor(opts: NotifySocketsOptions) {
    this.opts = opts;
    this.pinger = opts.clock.setInterval(() => this.ping(), opts.pingEveryMs ?? 30_000);
  }

  get size(): number {
    return this.connections.size;
  }

  /** Completes the handshake of an already authorised upgrade request; answers 400/426 to a malformed one. */
  accept(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const upgrade = (req.headers.upgrade ?? '').toLowerCase();
    const connection = (req.headers.connection ?? '').toLowerCase();
    const key = req.headers['sec-websocket-key'];
    if (
      req.method !== 'GET' ||
      upgrade !== 'websocket' ||
      !connection.split(',').some((t) => t.trim() === 'upgrade')
    ) {
      refuseUpgrade(socket, 400, 'Bad Request', errorBody('E_BAD_UPGRADE', 'not a WebSocket upgrade'));
      return false;
    }
    if (req.headers['sec-websocket-version'] !== '13') {
      refuseUpgrade(
        socket,
        426,
        'Upgrade Required',
        errorBody('E_BAD_UPGRADE', 'only WebSocket version 13 is spoken'),
        { 'sec-websocket-version': '13' },
      );
      return false;
    }
    if (!isValidClientKey(key)) {
      refuseUpgrade(socket, 400, 'Bad Request', errorBody('E_BAD_UPGRADE', 'bad Sec-WebSocket-Key'));
      return false;
    }
    socket.write(
      [
        'HTTP/1.1 101 Switching Protocols',
        'upgrade: websocket',
        'connection: Upgrade',
        `sec-websocket-accept: ${acceptKey(key)}`,
      ].join('\r\n') + '\r\n\r\n',
    );
    const conn: Connection = {
      socket,
      reader: new FrameReader(maxClientPayload),
      alive: true,
      closing: false,
    };
    this.connections.add(conn);
    const drop = () => this.connections.delete(conn);
    socket.on('close', drop);
    socket.on('error', drop);
    socket.on('data', (chunk: Buffer) => this.receive(conn, chunk));
    if (head.byteLength > 0) this.receive(conn, head);
    return true;
  }

  /** Sends `message` (JSON) to every open connection. */
  broadcast(message: unknown): void {
    const frame = encodeText(JSON.stringify(message));
    for (const conn of this.connections) this.send(conn, frame);
  }

  /** Says "going away" to every client and forgets them. */
  close(): void {
    this.pinger.cancel();
    for (const conn of this.connections) this.closeConnection(conn, wsClose.goingAway, 'server stopping');
    this.connections.clear();
  }

  private receive(conn: Connection, chunk: Buffer): void {
    if (conn.closing) return;
    conn.alive = true;
    let frames: ReturnType<FrameReader['push']>;
    try {
      frames = conn.reader.push(chunk);
    } catch (err) {
      const code = err instanceof WsProtocolError ? err.closeCode : wsClose.protocolError;
      this.opts.logger.debug('dashboard socket protocol error', { err: String(err) });
      this.closeConnection(conn, code, err instanceof Error ? err.message : 'protocol error');
      return;
    }
    for (const frame of frames) {
      if (frame.opcode === wsOpcode.close) {
        // Echo the client's code (RFC 6455 §5.5.1), then end the TCP connection.
        const code = frame.payload.byteLength >= 2 ? frame.payload.readUInt16BE(0) : wsClose.normal;
        this.closeConnection(conn, code >= 1000 && code < 5000 ? code : wsClose.protocolError, '');
        return;
      }
      if (frame.opcode === wsOpcode.ping) this.send(conn, encodeFrame(wsOpcode.pong, frame.payload));
      // Pongs keep the connection alive; text and binary frames carry nothing the server uses.
    }
  }

  private send(conn: Connection, frame: Buffer): void {
    if (conn.closing || conn.socket.destroyed) return;
    if (conn.socket.writableLength > maxBufferedBytes) {
      this.opts.logger.debug('dashboard socket not reading; dropped');
      conn.socket.destroy();
      this.connections.delete(conn);
      return;
    }
    conn.socket.write(frame);
  }

  private ping(): void {
    for (const conn of this.connections) {
      if (!conn.alive) {
        conn.socket.destroy();
        this.connections.delete(conn);
        continue;
      }
      conn.alive = false;
      this.send(conn, encodeFrame(wsOpcode.ping));
    }
  }

  private closeConnection(conn: Connection, code: number, reason: string): void {
    if (conn.closing) return;
    conn.closing = true;
    this.connections.delete(conn);
    if (conn.socket.destroyed) return;
    conn.socket.end(encodeClose(code, reason), () => conn.socket.destroy());
  }
}

function errorBody(code: string, message: string): string {
  return JSON.stringify({ error: { code, message } });
}
