// The CLI's only way to the daemon: typed calls over the local unix-socket API.

import { request } from 'node:http';
import { DaemonError, type ErrorBody, errorFromBody } from '../shared/errors.ts';
import type {
  ApplyRequest,
  ApplyResult,
  ControllersView,
  DashboardView,
  HistoryQuery,
  LabelRequest,
  LogsQuery,
  NodeAction,
  NodeEntry,
  PeerEntry,
  PodDescription,
  PodDiff,
  PodEntry,
  RemoveNodeResult,
  RevisionView,
  StatsView,
  StatusView,
  WhyView,
  WriteRequest,
} from './types.ts';

export type * from './types.ts';

export interface ApiClientOptions {
  socketPath: string;
  /** Shown in "not running" errors so the user knows which data dir was asked. */
  dataDir: string;
  timeoutMs?: number;
}

export class ApiClient {
  private readonly opts: ApiClientOptions;

  constructor(opts: ApiClientOptions) {
    this.opts = opts;
  }

  status(): Promise<StatusView> {
    return this.call('GET', '/v1/status');
  }
  peers(): Promise<PeerEntry[]> {
    return this.call('GET', '/v1/peers');
  }
  nodes(): Promise<NodeEntry[]> {
    return this.call('GET', '/v1/nodes');
  }
  async token(): Promise<string> {
    return (await this.call<{ token: string }>('GET', '/v1/token')).token;
  }
  labelNode(name: string, req: LabelRequest): Promise<NodeEntry> {
    return this.call('POST', `/v1/nodes/${encodeURIComponent(name)}/labels`, req);
  }
  stats(): Promise<StatsView> {
    return this.call('GET', '/v1/stats');
  }
  dashboard(): Promise<DashboardView> {
    return this.call('GET', '/v1/dashboard');
  }
  apply(req: ApplyRequest): Promise<ApplyResult> {
    return this.call('POST', '/v1/pods', req);
  }
  pods(): Promise<PodEntry[]> {
    return this.call('GET', '/v1/pods');
  }
  describePod(name: string): Promise<PodDescription> {
    return this.call('GET', `/v1/pods/${encodeURIComponent(name)}`);
  }
  podSpec(name: string): Promise<{ revision: string; text: string }> {
    return this.call('GET', `/v1/pods/${encodeURIComponent(name)}/spec`);
  }
  deletePod(name: string, req: WriteRequest): Promise<{ name: string; revision: string }> {
    return this.call('DELETE', `/v1/pods/${encodeURIComponent(name)}`, req);
  }
  history(name: string, q: HistoryQuery): Promise<RevisionView[]> {
    const params = new URLSearchParams();
    if (q.author !== undefined) params.set('author', q.author);
    if (q.excludeAuthor !== undefined) params.set('excludeAuthor', q.excludeAuthor);
    if (q.kind !== undefined) params.set('kind', q.kind);
    return this.call('GET', `/v1/pods/${encodeURIComponent(name)}/history?${params}`);
  }
  diff(name: string, from?: string, to?: string): Promise<PodDiff> {
    const params = new URLSearchParams();
    if (from !== undefined) params.set('from', from);
    if (to !== undefined) params.set('to', to);
    return this.call('GET', `/v1/pods/${encodeURIComponent(name)}/diff?${params}`);
  }
  rollback(
    name: string,
    req: WriteRequest & { to?: string },
  ): Promise<{ name: string; revision: string; changed: boolean }> {
    return this.call('POST', `/v1/pods/${encodeURIComponent(name)}/rollback`, req);
  }
  why(name: string): Promise<WhyView> {
    return this.call('GET', `/v1/pods/${encodeURIComponent(name)}/why`);
  }

  /** Streams a container's log lines to `onLine` until the daemon ends the stream or `signal` aborts. */
  async logs(name: string, q: LogsQuery, onLine: (line: string) => void, signal: AbortSignal): Promise<void> {
    const params = new URLSearchParams();
    if (q.container !== undefined) params.set('container', q.container);
    if (q.slot !== undefined) params.set('slot', String(q.slot));
    if (q.stream !== undefined) params.set('stream', q.stream);
    if (q.tail !== undefined) params.set('tail', String(q.tail));
    if (q.follow === true) params.set('follow', '1');
    const path = `/v1/pods/${encodeURIComponent(name)}/logs?${params}`;
    await new Promise<void>((resolve, reject) => {
      const req = request({ socketPath: this.opts.socketPath, path, method: 'GET', signal }, (res) => {
        res.setEncoding('utf8');
        if ((res.statusCode ?? 500) >= 400) {
          let text = '';
          res.on('data', (c: string) => {
            text += c;
          });
          res.on('end', () => {
            try {
              reject(errorFromBody((JSON.parse(text) as { error: ErrorBody }).error));
            } catch {
              reject(new DaemonError('E_BAD_RESPONSE', `the daemon answered ${res.statusCode} to ${path}`));
            }
          });
          return;
        }
        let buf = '';
        res.on('data', (chunk: string) => {
          buf += chunk;
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            onLine(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
          }
        });
        res.on('end', () => {
          if (buf !== '') onLine(buf);
          resolve();
        });
        res.on('error', (err) => (signal.aborted ? resolve() : reject(err)));
      });
      req.on('error', (err: NodeJS.ErrnoException) =>
        signal.aborted ? resolve() : reject(this.connectError(err)),
      );
      req.end();
    });
  }

  /** A failed connection to the socket, said in the user's terms. */
  private connectError(err: NodeJS.ErrnoException): Error {
    if (err instanceof DaemonError) return err;
    if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
      return new DaemonError('E_NOT_RUNNING', `meshd is not running for data dir ${this.opts.dataDir}`, {
        hint: 'Start it with `meshd up --detach` (or `meshd init` / `meshd join TOKEN` on a new machine).',
      });
    }
    if (err.code === 'EACCES') {
      return new DaemonError('E_SOCKET_DENIED', `permission denied on ${this.opts.socketPath}`, {
        hint: 'The API socket is owner-only (0600): run the CLI as the user that runs the daemon.',
      });
    }
    return err;
  }

  controllers(): Promise<ControllersView> {
    return this.call('GET', '/v1/controllers');
  }
  nodeAction(name: string, action: NodeAction): Promise<NodeEntry> {
    return this.call('POST', `/v1/nodes/${encodeURIComponent(name)}/${action}`, {});
  }
  removeNode(name: string): Promise<RemoveNodeResult> {
    return this.call('POST', `/v1/nodes/${encodeURIComponent(name)}/remove`, {});
  }
  async shutdown(): Promise<void> {
    await this.call('POST', '/v1/shutdown', {});
  }

  /** Raw request: resolves with the parsed JSON body, or throws the daemon's typed error. */
  call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.opts.socketPath,
          path,
          method,
          headers:
            payload === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
          timeout: this.opts.timeoutMs ?? 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = JSON.parse(text);
            } catch {
              reject(
                new DaemonError('E_BAD_RESPONSE', `the daemon sent a response that is not JSON (${path})`),
              );
              return;
            }
            if ((res.statusCode ?? 500) >= 400) {
              const err = (parsed as { error?: ErrorBody }).error;
              reject(
                err === undefined
                  ? new DaemonError('E_BAD_RESPONSE', `the daemon answered ${res.statusCode} to ${path}`)
                  : errorFromBody(err),
              );
              return;
            }
            resolve(parsed as T);
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => {
        req.destroy(
          new DaemonError('E_DAEMON_TIMEOUT', `the daemon did not answer ${method} ${path} in time`, {
            hint: `Check its log: ${this.opts.dataDir}/meshd.log`,
          }),
        );
      });
      req.on('error', (err: NodeJS.ErrnoException) => reject(this.connectError(err)));
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  /** Follows the daemon's event stream; calls `onEvent` per line until `signal` aborts. */
  async follow(onEvent: (event: { type: string; at: number }) => void, signal: AbortSignal): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const req = request(
        { socketPath: this.opts.socketPath, path: '/v1/events', method: 'GET', signal },
        (res) => {
          let buf = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buf += chunk;
            for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
              const line = buf.slice(0, nl);
              buf = buf.slice(nl + 1);
              if (line.trim() !== '') onEvent(JSON.parse(line) as { type: string; at: number });
            }
          });
          res.on('end', resolve);
          res.on('error', reject);
        },
      );
      req.on('error', (err) => (signal.aborted ? resolve() : reject(err)));
      req.end();
    });
  }
}
