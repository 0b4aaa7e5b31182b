// The dashboard: the web page, JSON routes over the daemon's ApiHandlers and a live WebSocket, on 127.0.0.1 behind a token.

import * as fs from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { extname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { type ErrorBody, isMeshdError, MeshdError, ValidationError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { DashboardAuth, dashboardTokenFile } from './dashboard-auth.ts';
import { loginPageCsp, loginPageHtml } from './dashboard-login-page.ts';
import { type DashboardPort, readDashboardPort } from './dashboard-settings.ts';
import { readJson } from './json-body.ts';
import { NotifySockets, refuseUpgrade } from './notify-sockets.ts';
import type { ApiHandlers } from './server.ts';
import type { DashboardView, HistoryQuery, MeshEvent } from './types.ts';

export interface DashboardOptions {
  /** The node's data dir: `dashboard.token` and `dashboard.json` live there. */
  dataDir: string;
  handlers: ApiHandlers;
  logger: Logger;
  clock: Clock;
  /** Overrides `dashboard.json` (tests). */
  port?: DashboardPort;
  /** The folder of the page's files (default: `web/` of this checkout or package). */
  webRoot?: string;
  /** How often states derived from time (a node turning unreachable) are re-checked while a page listens. */
  statePollMs?: number;
}

const host = '127.0.0.1';
const maxLogLines = 2000;
const logReadTimeoutMs = 5000;
const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

const defaultWebRoot = fileURLToPath(new URL('../../web/', import.meta.url));

type Running = { server: Server; port: number; auth: DashboardAuth; files: Map<string, string> };

export class DashboardServer {
  private readonly opts: DashboardOptions;
  private readonly notify: NotifySockets;
  private readonly timers: TimerHandle[] = [];
  private running: Running | undefined;
  private problem: string | null = null;
  private unsubscribe: (() => void) | undefined;
  private pending = new Set<MeshEvent['type']>();
  private flushTimer: TimerHandle | undefined;
  private lastStateDigest = '';

  private constructor(opts: DashboardOptions) {
    this.opts = opts;
    this.notify = new NotifySockets({ clock: opts.clock, logger: opts.logger });
  }

  /**
   * Starts serving unless turned off. Never throws: a taken port or an unreadable token file is a
   * `problem` that `meshd dashboard` reports, not a reason to stop the node.
   */
  static async start(opts: DashboardOptions): Promise<DashboardServer> {
    const d = new DashboardServer(opts);
    let port: DashboardPort | undefined;
    try {
      port = opts.port ?? readDashboardPort(opts.dataDir);
      if (port === 'off') {
        d.problem = 'the dashboard is turned off on this node';
        return d;
      }
      const listenPort = port;
      const auth = DashboardAuth.loadOrCreate(opts.dataDir, opts.logger);
      const files = listWebFiles(opts.webRoot ?? defaultWebRoot);
      const server = createServer((req, res) => {
        d.handle(req, res).catch((err: unknown) => d.fail(res, err));
      });
      server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
        d.upgrade(req, socket, head),
      );
      server.on('clientError', (_err, socket) => socket.destroy());
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(listenPort, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      const address = server.address();
      d.running = {
        server,
        port: typeof address === 'object' && address !== null ? address.port : listenPort,
        auth,
        files,
      };
      d.unsubscribe = opts.handlers.subscribe((event) => d.queue(event.type));
      d.timers.push(opts.clock.setInterval(() => d.pollState(), opts.statePollMs ?? 1000));
      opts.logger.info('dashboard listening', { url: `http://${host}:${d.running.port}/` });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      d.problem =
        code === 'EADDRINUSE'
          ? `port ${port} on ${host} is already in use (another meshd on this machine?)`
          : isMeshdError(err)
            ? err.message
            : String(err instanceof Error ? err.message : err);
      opts.logger.warn('dashboard not started', { problem: d.problem });
    }
    return d;
  }

  /** `info()` of a dashboard that may not exist yet (the API answers before the dashboard starts). */
  static infoOf(d: DashboardServer | undefined, dataDir: string): DashboardView {
    return (
      d?.info() ?? {
        listening: false,
        url: null,
        port: null,
        problem: 'the daemon is still starting',
        tokenFile: dashboardTokenFile(dataDir),
      }
    );
  }

  /** What `meshd dashboard` prints; the URL carries the token, so only the owner-only API socket hands it out. */
  info(): DashboardView {
    const r = this.running;
    return {
      listening: r !== undefined,
      url: r === undefined ? null : `http://${host}:${r.port}/#token=${r.auth.token}`,
      port: r?.port ?? null,
      problem: this.problem,
      tokenFile: dashboardTokenFile(this.opts.dataDir),
    };
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    for (const t of this.timers.splice(0)) t.cancel();
    this.flushTimer?.cancel();
    this.notify.close();
    const r = this.running;
    this.running = undefined;
    if (r === undefined) return;
    await new Promise<void>((resolve) => {
      r.server.close(() => resolve());
      r.server.closeAllConnections();
    });
  }

  // ---- live notifications ------------------------------------------------------------------------

  /** Coalesces bursts (a sync brings many updates) into one notice per type every 100 ms. */
  private queue(type: MeshEvent['type']): void {
    if (this.notify.size === 0) return;
    this.pending.add(type);
    this.flushTimer ??= this.opts.clock.setTimeout(() => {
      this.flushTimer = undefined;
      const types = [...this.pending];
      this.pending = new Set();
      for (const t of types) this.notify.broadcast({ type: t, at: this.opts.clock.now() });
    }, 100);
  }

  /** A node turns unreachable by time passing, with no event: notice that too. */
  private pollState(): void {
    if (this.notify.size === 0) return;
    let digest: string;
    try {
      const h = this.opts.handlers;
      digest = [
        ...h.nodes().map((n) => `${n.peerId}:${n.state}`),
        ...h.peers().map((p) => `${p.peerId}:${p.connected}`),
      ].join(',');
    } catch {
      return; // still starting
    }
    if (digest !== this.lastStateDigest) {
      this.lastStateDigest = digest;
      this.queue('peers');
    }
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const r = this.running;
    const url = new URL(req.url ?? '/', 'http://dashboard');
    if (r === undefined || url.pathname !== '/ws') {
      refuseUpgrade(socket, 404, 'Not Found', errorJson('E_NO_ROUTE', 'no WebSocket here; use /ws'));
      return;
    }
    if (!this.hostAllowed(req) || !this.originAllowed(req)) {
      refuseUpgrade(socket, 403, 'Forbidden', errorJson('E_DASHBOARD_ORIGIN', 'wrong Host or Origin'));
      return;
    }
    if (!r.auth.isAuthorized(req.headers)) {
      refuseUpgrade(socket, 401, 'Unauthorized', errorJson('E_DASHBOARD_AUTH', unauthorizedMessage), {
        'www-authenticate': 'Bearer realm="meshd dashboard"',
      });
      return;
    }
    if (this.notify.accept(req, socket, head)) this.pollState();
  }

  // ---- HTTP --------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const r = this.running;
    if (r === undefined) throw new MeshdError('E_STOPPING', 'the dashboard is stopping');
    if (!this.hostAllowed(req)) {
      // DNS rebinding: a page of another site whose name resolves to 127.0.0.1.
      return this.sendJson(res, 421, {
        error: { code: 'E_DASHBOARD_HOST', message: `open the dashboard as http://${host}:${r.port}/` },
      });
    }
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const method = req.method ?? 'GET';
    if (method === 'POST' && url.pathname === '/auth') return this.login(req, res, r);
    if (!r.auth.isAuthorized(req.headers)) return this.refuse(res, url, method);
    if (url.pathname.startsWith('/api/')) {
      if (method !== 'GET') this.assertSameOrigin(req);
      return this.api(req, res, url, method);
    }
    if (url.pathname === '/ws') {
      return this.sendJson(res, 426, { error: { code: 'E_BAD_UPGRADE', message: 'use a WebSocket here' } });
    }
    if (method !== 'GET') {
      return this.sendJson(res, 405, {
        error: { code: 'E_METHOD', message: `${method} is not allowed here` },
      });
    }
    const file = r.files.get(url.pathname === '/' ? '/index.html' : url.pathname);
    if (file === undefined) {
      return this.sendJson(res, 404, { error: { code: 'E_NO_ROUTE', message: `no file ${url.pathname}` } });
    }
    const body = await fs.promises.readFile(file);
    res.writeHead(200, {
      ...securityHeaders(this.appCsp(r.port)),
      'content-type': contentTypes[extname(file)] ?? 'application/octet-stream',
      'content-length': body.byteLength,
    });
    res.end(body);
  }

  /** Trades the link's token for the session cookie. */
  private async login(req: IncomingMessage, res: ServerResponse, r: Running): Promise<void> {
    this.assertSameOrigin(req);
    const body = (await readJson(req)) as { token?: unknown } | null;
    if (!r.auth.tokenMatches(body?.token)) {
      this.opts.logger.warn('dashboard login refused');
      return this.sendJson(res, 401, {
        error: { code: 'E_DASHBOARD_AUTH', message: 'wrong dashboard token' },
      });
    }
    res.writeHead(204, { ...securityHeaders(), 'set-cookie': r.auth.setCookieHeader() });
    res.end();
  }

  /** 401 for everything without a session: the login page for pages, JSON for the rest. */
  private refuse(res: ServerResponse, url: URL, method: string): void {
    const headers = { ...securityHeaders(), 'www-authenticate': 'Bearer realm="meshd dashboard"' };
    if (method === 'GET' && !url.pathname.startsWith('/api/') && url.pathname !== '/ws') {
      res.writeHead(401, {
        ...headers,
        'content-security-policy': loginPageCsp,
        'content-type': 'text/html; charset=utf-8',
      });
      res.end(loginPageHtml);
      return;
    }
    const text = errorJson('E_DASHBOARD_AUTH', unauthorizedMessage);
    res.writeHead(401, {
      ...headers,
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  }

  private async api(req: IncomingMessage, res: ServerResponse, url: URL, method: string): Promise<void> {
    const h = this.opts.handlers;
    const route = `${method} ${url.pathname.slice('/api'.length)}`;
    const q = url.searchParams;
    const opt = (k: string) => q.get(k) ?? undefined;
    if (route === 'GET /status') return this.sendJson(res, 200, h.status());
    if (route === 'GET /session') {
      const node = h.status().name;
      return this.sendJson(res, 200, { node, actor: defaultActor(node) });
    }
    if (route === 'GET /peers') return this.sendJson(res, 200, h.peers());
    if (route === 'GET /nodes') return this.sendJson(res, 200, h.nodes());
    if (route === 'GET /pods') return this.sendJson(res, 200, h.pods.list());
    if (route === 'POST /pods') {
      const body = (await readJson(req)) as Record<string, unknown> | null;
      if (typeof body?.text !== 'string')
        throw new ValidationError('E_BAD_REQUEST', 'apply needs a "text" string');
      const expectName = typeof body.expectName === 'string' ? body.expectName : undefined;
      return this.sendJson(
        res,
        200,
        h.pods.apply({
          text: body.text,
          file: expectName === undefined ? 'the spec' : `pod/${expectName}`,
          ...this.writeFields(body),
          ...(expectName === undefined ? {} : { expectName }),
        }),
      );
    }
    const pod = /^(GET|POST) \/pods\/([^/]+)(?:\/([a-z]+))?$/.exec(route);
    if (pod !== null) {
      const [, verb, rawName, sub] = pod;
      const name = decodeURIComponent(rawName ?? '');
      if (verb === 'GET' && sub === undefined) return this.sendJson(res, 200, h.pods.describe(name));
      if (verb === 'GET' && sub === 'spec') return this.sendJson(res, 200, h.pods.spec(name));
      if (verb === 'GET' && sub === 'history') {
        const kind = opt('kind');
        const query: HistoryQuery = {
          ...(opt('author') === undefined ? {} : { author: opt('author') as string }),
          ...(kind === undefined ? {} : { kind: kind as NonNullable<HistoryQuery['kind']> }),
        };
        return this.sendJson(res, 200, h.pods.history(name, query));
      }
      if (verb === 'GET' && sub === 'diff')
        return this.sendJson(res, 200, h.pods.diff(name, opt('from'), opt('to')));
      if (verb === 'GET' && sub === 'why') return this.sendJson(res, 200, await h.pods.why(name));
      if (verb === 'GET' && sub === 'logs') return this.sendJson(res, 200, await this.logs(req, name, q));
      if (verb === 'POST' && sub === 'rollback') {
        const body = (await readJson(req)) as Record<string, unknown> | null;
        const to = typeof body?.to === 'string' && body.to !== '' ? body.to : undefined;
        return this.sendJson(res, 200, h.pods.rollback(name, to, this.writeFields(body)));
      }
    }
    throw new MeshdError('E_NO_ROUTE', `the dashboard has no route ${route}`);
  }

  /** The last lines of a log, not followed: the page asks again when it wants more. */
  private async logs(req: IncomingMessage, name: string, q: URLSearchParams): Promise<{ lines: string[] }> {
    const tail = Math.min(maxLogLines, Math.max(1, Number(q.get('tail') ?? 200) || 200));
    const slot = q.get('slot');
    const container = q.get('container');
    const stream = q.get('stream');
    const abort = new AbortController();
    const onClose = () => abort.abort();
    req.on('close', onClose);
    // A log read that hangs (a node asked over the mesh) must not hold the page's request forever.
    const deadline = this.opts.clock.setTimeout(() => abort.abort(), logReadTimeoutMs);
    const lines: string[] = [];
    try {
      const source = this.opts.handlers.pods.logs(
        name,
        {
          tail,
          ...(slot === null || !/^\d+$/.test(slot) ? {} : { slot: Number(slot) }),
          ...(container === null || container === '' ? {} : { container }),
          ...(stream === 'stderr' || stream === 'stdout' ? { stream } : {}),
        },
        abort.signal,
      );
      for await (const line of source) {
        lines.push(line);
        if (lines.length > tail) lines.shift();
      }
    } catch (err) {
      if (!abort.signal.aborted) throw err;
    } finally {
      deadline.cancel();
      req.off('close', onClose);
    }
    return { lines };
  }

  /** Writes from the page are attributed to the name given there, else to `dashboard@<node>`. */
  private writeFields(body: Record<string, unknown> | null): { actor: string; message?: string } {
    const given = typeof body?.actor === 'string' ? body.actor.trim() : '';
    const message =
      typeof body?.message === 'string' && body.message.trim() !== '' ? body.message : undefined;
    return {
      actor: given === '' ? defaultActor(this.opts.handlers.status().name) : given,
      ...(message === undefined ? {} : { message }),
    };
  }

  private hostAllowed(req: IncomingMessage): boolean {
    const r = this.running;
    return r !== undefined && [`${host}:${r.port}`, `localhost:${r.port}`].includes(req.headers.host ?? '');
  }

  private originAllowed(req: IncomingMessage): boolean {
    const r = this.running;
    const origin = req.headers.origin;
    if (origin === undefined) return true; // not a browser: the token or cookie still decides
    return r !== undefined && [`http://${host}:${r.port}`, `http://localhost:${r.port}`].includes(origin);
  }

  /** Writes must come from the dashboard's own page, as JSON (a cross-site form can send neither). */
  private assertSameOrigin(req: IncomingMessage): void {
    if (!this.originAllowed(req)) {
      throw new MeshdError('E_DASHBOARD_ORIGIN', 'writes are accepted only from the dashboard page itself');
    }
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim();
    if (type !== 'application/json') {
      throw new ValidationError(
        'E_BAD_REQUEST',
        'the request body must be JSON (content-type: application/json)',
      );
    }
  }

  private appCsp(port: number): string {
    return [
      "default-src 'none'",
      "script-src 'self'",
      "style-src 'self'",
      "img-src 'self' data:",
      `connect-src 'self' ws://${host}:${port} ws://localhost:${port}`,
      "base-uri 'none'",
      "form-action 'self'",
      "frame-ancestors 'none'",
    ].join('; ');
  }

  private sendJson(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      ...securityHeaders(),
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  }

  private fail(res: ServerResponse, err: unknown): void {
    let status = 500;
    let body: ErrorBody;
    if (isMeshdError(err)) {
      status =
        err.code === 'E_DASHBOARD_ORIGIN'
          ? 403
          : err.code === 'E_NOT_AVAILABLE'
            ? 501
            : err.code === 'E_NO_ROUTE' || err.name === 'NotFoundError' || err.code === 'E_POD_NOT_FOUND'
              ? 404
              : err.code === 'E_STOPPING'
                ? 503
                : 400;
      body = err.toJSON();
    } else {
      this.opts.logger.error('dashboard handler failed', {
        err: err instanceof Error ? err.stack : String(err),
      });
      body = {
        code: 'E_INTERNAL',
        message: `internal error in the daemon: ${err instanceof Error ? err.message : String(err)}`,
        hint: 'This is a bug in meshd; the daemon log (meshd.log in the data dir) has the stack trace.',
      };
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    this.sendJson(res, status, { error: body });
  }
}

const unauthorizedMessage = 'this dashboard needs the link printed by `meshd dashboard` (its token)';

function defaultActor(node: string): string {
  return `dashboard@${node}`;
}

function errorJson(code: string, message: string): string {
  return JSON.stringify({ error: { code, message } });
}

function securityHeaders(csp = "default-src 'none'; frame-ancestors 'none'"): Record<string, string> {
  return {
    'cache-control': 'no-store',
    'content-security-policy': csp,
    'referrer-policy': 'no-referrer',
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
  };
}

/** The page's files by URL path: only plain files of known types directly in the web root (no traversal). */
function listWebFiles(root: string): Map<string, string> {
  const files = new Map<string, string>();
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch (err) {
    throw new MeshdError(
      'E_NO_WEB_FILES',
      `the dashboard's page files are missing (${root}): ${String(err)}`,
      {
        hint: 'Reinstall meshd: its web/ folder is part of the package.',
      },
    );
  }
  for (const name of names) {
    const file = join(root, name);
    if (/^[a-z0-9-]+\.(html|js|css|svg)$/.test(name) && fs.statSync(file).isFile())
      files.set(`/${name}`, file);
  }
  if (!files.has('/index.html')) {
    throw new MeshdError('E_NO_WEB_FILES', `the dashboard's page files are missing (${root}/index.html)`, {
      hint: 'Reinstall meshd: its web/ folder is part of the package.',
    });
  }
  return files;
}
