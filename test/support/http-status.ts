// The bare HTTP status a test server answers with: a plain GET, or a WebSocket upgrade request.

import { randomBytes } from 'node:crypto';
import { type ClientRequest, request } from 'node:http';

/** Resolves with the status of the first answer `req` gets (the body is dropped); rejects on error or timeout. */
function firstStatus(req: ClientRequest, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${what} timed out`)));
    req.end();
  });
}

/** The status a GET of `url` gets. */
export function httpStatus(url: string, timeoutMs = 5000): Promise<number> {
  return firstStatus(request(url, { timeout: timeoutMs }), `GET ${url}`);
}

/**
 * The status a WebSocket upgrade request to `url` (an `http://` address of the socket's path) gets: 101 when
 * it becomes a WebSocket, whose socket is then closed at once. `headers` are added to (or replace) the upgrade's.
 */
export function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  const req = request(url, {
    headers: {
      connection: 'Upgrade',
      upgrade: 'websocket',
      'sec-websocket-version': '13',
      'sec-websocket-key': randomBytes(16).toString('base64'),
      ...headers,
    },
    timeout: 5000,
  });
  return firstStatus(req, `upgrade of ${url}`);
}
