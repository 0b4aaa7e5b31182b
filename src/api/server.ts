// The local HTTP API on a unix socket (mode 0600): the only way the CLI reaches the daemon.

import * as fs from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { DaemonError, type ErrorBody, isMeshdError, ValidationError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { readJson } from './json-body.ts';
import type {
  ApplyRequest,
  ApplyResult,
  ControllersView,
  DashboardView,
  HistoryQuery,
  LabelRequest,
  LogsQuery,
  MeshEvent,
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

/** What the daemon offers the API. Declared here so the API is tested without a mesh. */
export interface ApiHandlers {
  status(): StatusView;
  peers(): PeerEntry[];
  nodes(): NodeEntry[];
  labelNode(name: string, req: LabelRequest): NodeEntry;
  nodeAction(name: string, action: NodeAction): NodeEntry;
  removeNode(name: string): Promise<RemoveNodeResult>;
  token(): string;
  stats(): StatsView;
  dashboard(): DashboardView;
  shutdown(): void;
  pods: {
    apply(req: ApplyRequest): ApplyResult;
    list(): PodEntry[];
    describe(name: string): PodDescription;
    spec(name: string): { revision: string; text: string };
    delete(name: string, req: WriteRequest): { name: string; revision: string };
    history(name: string, q: HistoryQuery): RevisionView[];
    diff(name: string, from: string | undefined, to: string | undefined): PodDiff;
    rollback(
      name: string,
      to: string | undefined,
      req: WriteRequest,
    ): { name: string; revision: string; changed: boolean };
    controllers(): ControllersView;
    why(name: string): Promise<WhyView>;
    logs(name: string, q: LogsQuery, signal: AbortSignal): AsyncIterable<string>;
  };
  /** Calls `listener` on every document or peer change until the returned function is called. */
  subscribe(listener: (event: MeshEvent) => void): () => void;
}

export class ApiServer {
  private readonly server: Server;
  private readonly socketPath: string;
  private readonly handlers: ApiHandlers;
  private readonly logger: Logger;
  private readonly streams = new Set<ServerResponse>();

  private constructor(socketPath: string, handlers: ApiHandlers, logger: Logger) {
    this.socketPath = socketPath;
    this.handlers = handlers;
    this.logger = logger;
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
  }

  /** Binds the socket with mode 0600 from the first instant (umask), replacing a stale socket file. */
  static async listen(socketPath: string, handlers: ApiHandlers, logger: Logger): Promise<ApiServer> {
    const api = new ApiServer(socketPath, handlers, logger);
    fs.rmSync(socketPath, { force: true });
    const oldMask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        api.server.once('error', reject);
        api.server.listen(socketPath, () => {
          api.server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(oldMask);
    }
    fs.chmodSync(socketPath, 0o600);
    return api;
  }

  async close(): Promise<void> {
    for (const res of this.streams) res.end();
    this.streams.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    fs.rmSync(this.socketPath, { force: true });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://meshd');
    const route = `${req.method ?? 'GET'} ${url.pathname}`;
    const h = this.handlers;
    if (route === 'GET /v1/status') return this.send(res, 200, h.status());
    if (route === 'GET /v1/peers') return this.send(res, 200, h.peers());
    if (route === 'GET /v1/nodes') return this.send(res, 200, h.nodes());
    if (route === 'GET /v1/token') return this.send(res, 200, { token: h.token() });
    if (route === 'GET /v1/stats') return this.send(res, 200, h.stats());
    if (route === 'GET /v1/dashboard') return this.send(res, 200, h.dashboard());
    if (route === 'GET /v1/events') return this.stream(req, res);
    if (route === 'POST /v1/shutdown') {
      this.send(res, 202, { stopping: true });
      setImmediate(() => h.shutdown());
      return;
    }
    if (route === 'GET /v1/pods') return this.send(res, 200, h.pods.list());
    if (route === 'POST /v1/pods') return this.send(res, 200, h.pods.apply(parseApply(await readJson(req))));
    if (route === 'GET /v1/controllers') return this.send(res, 200, h.pods.controllers());
    const pod = /^(GET|POST|DELETE) \/v1\/pods\/([^/]+)(?:\/([a-z]+))?$/.exec(route);
    if (pod !== null) {
      const [, method, rawName, sub] = pod;
      const name = decodeURIComponent(rawName ?? '');
      const q = url.searchParams;
      const opt = (k: string) => q.get(k) ?? undefined;
      if (method === 'GET' && sub === undefined) return this.send(res, 200, h.pods.describe(name));
      if (method === 'GET' && sub === 'spec') return this.send(res, 200, h.pods.spec(name));
      if (method === 'GET' && sub === 'history') {
        const kind = opt('kind');
        if (kind !== undefined && !['user', 'system', 'rollback', 'delete'].includes(kind)) {
          throw new ValidationError(
            'E_BAD_KIND',
            `--kind must be user, system, rollback or delete, not ${JSON.stringify(kind)}`,
          );
        }
        const query: HistoryQuery = {
          ...(opt('author') === undefined ? {} : { author: opt('author') as string }),
          ...(opt('excludeAuthor') === undefined ? {} : { excludeAuthor: opt('excludeAuthor') as string }),
          ...(kind === undefined ? {} : { kind: kind as NonNullable<HistoryQuery['kind']> }),
        };
        return this.send(res, 200, h.pods.history(name, query));
      }
      if (method === 'GET' && sub === 'diff')
        return this.send(res, 200, h.pods.diff(name, opt('from'), opt('to')));
      if (method === 'GET' && sub === 'why') return this.send(res, 200, await h.pods.why(name));
      if (method === 'GET' && sub === 'logs') return this.streamLogs(req, res, name, parseLogsQuery(q));
      if (method === 'POST' && sub === 'rollback') {
        const body = parseWrite(await readJson(req)) as WriteRequest & { to?: string };
        return this.send(res, 200, h.pods.rollback(name, body.to, body));
      }
      if (method === 'DELETE' && sub === undefined)
        return this.send(res, 200, h.pods.delete(name, parseWrite(await readJson(req))));
    }
    const action = /^POST \/v1\/nodes\/([^/]+)\/(cordon|uncordon|drain|forget)$/.exec(route);
    if (action?.[1] !== undefined && action[2] !== undefined) {
      return this.send(res, 200, h.nodeAction(decodeURIComponent(action[1]), action[2] as NodeAction));
    }
    const remove = /^POST \/v1\/nodes\/([^/]+)\/remove$/.exec(route);
    if (remove?.[1] !== undefined)
      return this.send(res, 200, await h.removeNode(decodeURIComponent(remove[1])));
    const label = /^POST \/v1\/nodes\/([^/]+)\/labels$/.exec(route);
    if (label?.[1] !== undefined) {
      const body = await readJson(req);
      return this.send(res, 200, h.labelNode(decodeURIComponent(label[1]), parseLabelRequest(body)));
    }
    throw new DaemonError('E_NO_ROUTE', `the daemon has no API route ${route}`, {
      hint: 'The CLI and the daemon may be different versions: restart the daemon with `meshd down && meshd up`.',
    });
  }

  private stream(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    res.write(`${JSON.stringify({ type: 'hello', at: Date.now() })}\n`);
    this.streams.add(res);
    const unsubscribe = this.handlers.subscribe((event) => res.write(`${JSON.stringify(event)}\n`));
    const done = () => {
      unsubscribe();
      this.streams.delete(res);
    };
    req.on('close', done);
    res.on('error', done);
  }

  /** Streams log lines as text; an error before the first line is sent as a normal JSON error. */
  private async streamLogs(
    req: IncomingMessage,
    res: ServerResponse,
    name: string,
    q: LogsQuery,
  ): Promise<void> {
    const abort = new AbortController();
    req.on('close', () => abort.abort());
    const lines = this.handlers.pods.logs(name, q, abort.signal)[Symbol.asyncIterator]();
    const first = await lines.next();
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    this.streams.add(res);
    try {
      for (let r = first; !r.done; r = await lines.next()) {
        if (!res.write(`${r.value}\n`)) await new Promise((resolve) => res.once('drain', resolve));
      }
    } catch (err) {
      if (!abort.signal.aborted)
        res.write(`meshd: log stream ended: ${err instanceof Error ? err.message : String(err)}\n`);
    } finally {
      this.streams.delete(res);
      res.end();
    }
  }

  private send(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private fail(res: ServerResponse, err: unknown): void {
    if (isMeshdError(err)) {
      const status = err.code === 'E_NO_ROUTE' ? 404 : err.name === 'NotFoundError' ? 404 : 400;
      this.sendError(res, status, err.toJSON());
      return;
    }
    this.logger.error('api handler failed', { err: err instanceof Error ? err.stack : String(err) });
    this.sendError(res, 500, {
      code: 'E_INTERNAL',
      message: `internal error in the daemon: ${err instanceof Error ? err.message : String(err)}`,
      hint: 'This is a bug in meshd; the daemon log (meshd.log in the data dir) has the stack trace.',
    });
  }

  private sendError(res: ServerResponse, status: number, body: ErrorBody): void {
    if (res.headersSent) {
      res.end();
      return;
    }
    this.send(res, status, { error: body });
  }
}

function parseLabelRequest(body: unknown): LabelRequest {
  const b = body as Partial<LabelRequest> | null;
  const setOk =
    typeof b?.set === 'object' && b.set !== null && Object.values(b.set).every((v) => typeof v === 'string');
  const removeOk = Array.isArray(b?.remove) && b.remove.every((k) => typeof k === 'string');
  if (!setOk || !removeOk || b === null) {
    throw new ValidationError('E_BAD_REQUEST', 'label request must be {set: {key: value}, remove: [key]}');
  }
  return { set: b.set as Record<string, string>, remove: b.remove as string[] };
}

function parseWrite(body: unknown): WriteRequest & { to?: string } {
  const b = body as { actor?: unknown; message?: unknown; to?: unknown } | null;
  if (typeof b?.actor !== 'string')
    throw new ValidationError('E_BAD_REQUEST', 'request needs an "actor" string');
  if (b.message !== undefined && typeof b.message !== 'string')
    throw new ValidationError('E_BAD_REQUEST', '"message" must be a string');
  if (b.to !== undefined && typeof b.to !== 'string')
    throw new ValidationError('E_BAD_REQUEST', '"to" must be a string');
  return {
    actor: b.actor,
    ...(typeof b.message === 'string' ? { message: b.message } : {}),
    ...(typeof b.to === 'string' ? { to: b.to } : {}),
  };
}

function parseApply(body: unknown): ApplyRequest {
  const b = body as { text?: unknown; file?: unknown } | null;
  if (typeof b?.text !== 'string' || typeof b.file !== 'string') {
    throw new ValidationError('E_BAD_REQUEST', 'apply request needs "text" and "file" strings');
  }
  const expectName = (body as { expectName?: unknown }).expectName;
  return {
    text: b.text,
    file: b.file,
    ...parseWrite(body),
    ...(typeof expectName === 'string' ? { expectName } : {}),
  };
}

function parseLogsQuery(q: URLSearchParams): LogsQuery {
  const num = (k: string): number | undefined => {
    const v = q.get(k);
    if (v === null) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) {
      throw new ValidationError('E_BAD_REQUEST', `--${k} must be a whole number, not ${JSON.stringify(v)}`);
    }
    return n;
  };
  const stream = q.get('stream');
  if (stream !== null && stream !== 'stdout' && stream !== 'stderr') {
    throw new ValidationError(
      'E_BAD_REQUEST',
      `--stream must be stdout or stderr, not ${JSON.stringify(stream)}`,
    );
  }
  const container = q.get('container');
  const tail = num('tail');
  const slot = num('slot');
  return {
    ...(container === null ? {} : { container }),
    ...(tail === undefined ? {} : { tail }),
    ...(slot === undefined ? {} : { slot }),
    ...(stream === null ? {} : { stream }),
    ...(q.get('follow') === '1' ? { follow: true } : {}),
  };
}
