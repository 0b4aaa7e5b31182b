// The dashboard server without a mesh: token and cookie, refusals, write attribution, live notices over its WebSocket.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { upgradeStatus } from '../../test/support/http-status.ts';
import { waitFor } from '../../test/support/wait-for.ts';
import { ManualClock } from '../shared/clock.ts';
import { NotFoundError, ValidationError } from '../shared/errors.ts';
import { createLogger } from '../shared/logger.ts';
import { dashboardTokenFile } from './dashboard-auth.ts';
import { DashboardServer } from './dashboard-server.ts';
import { writeDashboardPort } from './dashboard-settings.ts';
import type { ApiHandlers } from './server.ts';
import type { ApplyRequest, MeshEvent, NodeEntry, WriteRequest } from './types.ts';

const logger = createLogger({ level: 'error', write: () => {} });

interface Calls {
  applied: ApplyRequest[];
  rolledBack: Array<{ name: string; to: string | undefined; req: WriteRequest }>;
}

function fakeHandlers(calls: Calls, listeners: Set<(e: MeshEvent) => void>, nodes: NodeEntry[]): ApiHandlers {
  const unused = () => {
    throw new Error('not used by the dashboard');
  };
  return {
    status: () => ({
      name: 'n1',
      peerId: 'p1',
      mesh: { id: 'm', name: 'home' },
      addrs: [],
      version: 'test',
      dataDir: '/x',
      pid: 1,
      connectedPeers: 0,
      syncedPeers: 0,
      ready: true,
      joining: false,
      keyEpoch: 0,
    }),
    peers: () => [],
    nodes: () => nodes,
    labelNode: unused,
    nodeAction: unused,
    removeNode: unused,
    dashboard: unused,
    token: () => 'meshd1-join-token-must-never-leak',
    stats: unused,
    shutdown: unused,
    subscribe: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    pods: {
      apply: (req) => {
        if (req.text.includes('bad')) {
          throw new ValidationError('E_SPEC_INVALID', 'the spec: 1 problem', {
            details: { path: 'spec.replicas', line: 3, column: 5, issues: [] },
          });
        }
        calls.applied.push(req);
        return { name: 'web', revision: '2', changed: true };
      },
      list: () => [],
      describe: () => {
        throw new NotFoundError('E_POD_NOT_FOUND', 'pod x does not exist');
      },
      spec: () => ({ revision: '1', text: 'kind: Pod\n' }),
      delete: unused,
      history: () => [],
      diff: unused,
      rollback: (name, to, req) => {
        calls.rolledBack.push({ name, to, req });
        return { name, revision: '3', changed: true };
      },
      controllers: unused,
      why: async (name) => ({
        pod: name,
        node: 'n1',
        summary: `pod ${name}: running`,
        slots: [],
        report: {},
        markers: {},
      }),
      logs: async function* (name, q) {
        if (name !== 'web') throw new NotFoundError('E_NO_LOGS', `node n1 has no logs of pod ${name}`);
        for (let i = 1; i <= 10; i++) yield `line ${i} of ${q.tail ?? 'all'}`;
      },
    },
  };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function http(
  port: number,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method, path, headers: opts.headers ?? {}, timeout: 5000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.end(opts.body);
  });
}

/** A WebSocket to the dashboard on `port`, authorised by `bearer`, once it is open. The caller closes it. */
async function openSocket(port: number, bearer: string): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
    headers: { authorization: `Bearer ${bearer}` },
  } as unknown as string[]);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error('websocket failed'));
  });
  return ws;
}

describe('dashboard server', { timeout: 60_000 }, () => {
  const dir = fs.mkdtempSync(join(tmpdir(), 'meshd-dash-'));
  const web = join(dir, 'web');
  const clock = new ManualClock();
  const calls: Calls = { applied: [], rolledBack: [] };
  const listeners = new Set<(e: MeshEvent) => void>();
  const nodes: NodeEntry[] = [];
  let dash: DashboardServer;
  let port: number;
  let token: string;
  let origin: string;

  before(async () => {
    fs.mkdirSync(web);
    fs.writeFileSync(join(web, 'index.html'), '<!doctype html><title>app</title>');
    fs.writeFileSync(join(web, 'app.js'), 'export {};');
    fs.writeFileSync(join(dir, 'secret.txt'), 'not served');
    dash = await DashboardServer.start({
      dataDir: dir,
      handlers: fakeHandlers(calls, listeners, nodes),
      logger,
      clock,
      port: 0,
      webRoot: web,
    });
    const info = dash.info();
    assert.equal(info.listening, true, info.problem ?? '');
    port = info.port ?? 0;
    origin = `http://127.0.0.1:${port}`;
    token = /#token=([A-Za-z0-9_-]+)$/.exec(info.url ?? '')?.[1] ?? '';
  });

  /** Another dashboard over the same page files, whose handlers nobody notifies. */
  const startQuiet = (dataDir: string, port?: number) =>
    DashboardServer.start({
      dataDir,
      handlers: fakeHandlers(calls, new Set(), []),
      logger,
      clock,
      ...(port === undefined ? {} : { port }),
      webRoot: web,
    });

  after(async () => {
    await dash.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the token is random, in a 0600 file, and in the printed URL only as a fragment', () => {
    assert.match(
      dash.info().url ?? '',
      new RegExp(`^http://127\\.0\\.0\\.1:${port}/#token=[A-Za-z0-9_-]{43}$`),
    );
    const file = dashboardTokenFile(dir);
    assert.equal(fs.readFileSync(file, 'utf8').trim(), token);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  });

  test('without the token every request is refused with 401: API, page, assets and the WebSocket', async () => {
    const api = await http(port, 'GET', '/api/status');
    assert.equal(api.status, 401);
    assert.equal(JSON.parse(api.body).error.code, 'E_DASHBOARD_AUTH');
    assert.doesNotMatch(api.body, /n1|home/, 'nothing about the node leaks');
    const page = await http(port, 'GET', '/');
    assert.equal(page.status, 401);
    assert.match(page.body, /meshd dashboard/);
    assert.doesNotMatch(page.body, /<title>app<\/title>/);
    assert.equal((await http(port, 'GET', '/app.js')).status, 401);
    assert.equal((await http(port, 'POST', '/api/pods', { body: '{}' })).status, 401);
    assert.equal(await upgradeStatus(`${origin}/ws`), 401);
    const wrong = 'x'.repeat(43);
    assert.equal(
      (await http(port, 'GET', '/api/status', { headers: { authorization: `Bearer ${wrong}` } })).status,
      401,
    );
    assert.equal(await upgradeStatus(`${origin}/ws`, { cookie: `meshd_dashboard_x=${wrong}` }), 401);
    assert.equal(
      (await http(port, 'GET', `/api/status?token=${token}`)).status,
      401,
      'no token in query strings',
    );
  });

  test('the token is traded for an HttpOnly SameSite=Strict cookie that opens page, API and WebSocket', async () => {
    const bad = await http(port, 'POST', '/auth', {
      headers: { 'content-type': 'application/json', origin },
      body: JSON.stringify({ token: 'nope' }),
    });
    assert.equal(bad.status, 401);
    assert.equal(bad.headers['set-cookie'], undefined);
    const good = await http(port, 'POST', '/auth', {
      headers: { 'content-type': 'application/json', origin },
      body: JSON.stringify({ token }),
    });
    assert.equal(good.status, 204);
    const setCookie = String(good.headers['set-cookie']);
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    assert.ok(!setCookie.includes(token), 'the cookie is not the token itself');
    const cookie = setCookie.split(';')[0] ?? '';
    const page = await http(port, 'GET', '/', { headers: { cookie } });
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-security-policy']), /script-src 'self'/);
    assert.equal((await http(port, 'GET', '/api/status', { headers: { cookie } })).status, 200);
    assert.equal(await upgradeStatus(`${origin}/ws`, { cookie, origin }), 101);
    // Scripts may send the token itself.
    const bearer = await http(port, 'GET', '/api/session', { headers: { authorization: `Bearer ${token}` } });
    assert.deepEqual(JSON.parse(bearer.body), { node: 'n1', actor: 'dashboard@n1' });
  });

  test('only the page files are served: no traversal, no join token, no shutdown', async () => {
    const auth = { authorization: `Bearer ${token}` };
    assert.equal((await http(port, 'GET', '/../secret.txt', { headers: auth })).status, 404);
    assert.equal((await http(port, 'GET', '/%2e%2e/secret.txt', { headers: auth })).status, 404);
    assert.equal((await http(port, 'GET', '/api/token', { headers: auth })).status, 404);
    const shutdown = await http(port, 'POST', '/api/shutdown', {
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(shutdown.status, 404);
  });

  test('another Host (DNS rebinding) or another Origin is refused', async () => {
    const auth = { authorization: `Bearer ${token}` };
    assert.equal(
      (await http(port, 'GET', '/api/status', { headers: { ...auth, host: 'evil.example' } })).status,
      421,
    );
    const cross = await http(port, 'POST', '/api/pods', {
      headers: { ...auth, 'content-type': 'application/json', origin: 'http://evil.example' },
      body: JSON.stringify({ text: 'kind: Pod' }),
    });
    assert.equal(cross.status, 403);
    const form = await http(port, 'POST', '/api/pods', {
      headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'text=x',
    });
    assert.equal(form.status, 400);
    assert.equal(await upgradeStatus(`${origin}/ws`, { ...auth, origin: 'http://evil.example' }), 403);
    assert.equal(calls.applied.length, 0);
  });

  test('writes are attributed to dashboard@<node> unless the page names someone; errors keep their details', async () => {
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json', origin };
    const a = await http(port, 'POST', '/api/pods', { headers, body: JSON.stringify({ text: 'kind: Pod' }) });
    assert.equal(a.status, 200);
    const b = await http(port, 'POST', '/api/pods/web/rollback', {
      headers,
      body: JSON.stringify({ to: '1', actor: ' alice ', message: 'back' }),
    });
    assert.equal(b.status, 200);
    assert.deepEqual(
      calls.applied.map((r) => r.actor),
      ['dashboard@n1'],
    );
    assert.deepEqual(calls.rolledBack, [{ name: 'web', to: '1', req: { actor: 'alice', message: 'back' } }]);
    const bad = await http(port, 'POST', '/api/pods', { headers, body: JSON.stringify({ text: 'bad' }) });
    assert.equal(bad.status, 400);
    assert.deepEqual(JSON.parse(bad.body).error.details, {
      path: 'spec.replicas',
      line: 3,
      column: 5,
      issues: [],
    });
    const missing = await http(port, 'GET', '/api/pods/x', { headers });
    assert.equal(missing.status, 404);
  });

  test('why and the tail of a log come through as JSON; a log this node lacks is a 404', async () => {
    const headers = { authorization: `Bearer ${token}` };
    const why = await http(port, 'GET', '/api/pods/web/why', { headers });
    assert.equal(JSON.parse(why.body).summary, 'pod web: running');
    const logs = await http(port, 'GET', '/api/pods/web/logs?tail=3', { headers });
    assert.deepEqual(JSON.parse(logs.body), { lines: ['line 8 of 3', 'line 9 of 3', 'line 10 of 3'] });
    const none = await http(port, 'GET', '/api/pods/db/logs', { headers });
    assert.equal(none.status, 404);
    assert.equal(JSON.parse(none.body).error.code, 'E_NO_LOGS');
  });

  test('a change reaches an open WebSocket as one coalesced notice; time-derived node states too', async (t) => {
    const ws = await openSocket(port, token);
    t.after(() => ws.close());
    const received: MeshEvent[] = [];
    ws.onmessage = (e) => received.push(JSON.parse(String(e.data)) as MeshEvent);
    const notices = (n: number) =>
      waitFor(() => received.length >= n, { timeoutMs: 5000, intervalMs: 10, what: `${n} notices` });
    for (const l of listeners) for (let i = 0; i < 5; i++) l({ type: 'doc', at: 1 });
    clock.advance(100);
    await notices(1);
    assert.deepEqual(
      received.map((e) => e.type),
      ['doc'],
    );
    nodes.push({
      name: 'n2',
      peerId: 'p2',
      state: 'unreachable',
      self: false,
      labels: {},
      capacity: { cpu: 1, memoryBytes: 1 },
      addrs: [],
      version: 'test',
      joinedAt: '',
      cordoned: false,
      draining: false,
      forgotten: false,
      removed: false,
      policy: { hostNetwork: false, unsandboxed: false, hostPaths: [], devices: [], capabilities: [] },
    });
    clock.advance(1000);
    clock.advance(100);
    await notices(2);
    assert.equal(received[1]?.type, 'peers');
  });

  test('stopping the dashboard tells open pages "going away" (1001) and does not wait for them', async (t) => {
    const other = fs.mkdtempSync(join(tmpdir(), 'meshd-dash-'));
    let d: DashboardServer | undefined;
    t.after(async () => {
      await d?.close();
      fs.rmSync(other, { recursive: true, force: true });
    });
    d = await startQuiet(other, 0);
    const info = d.info();
    const bearer = /#token=(.+)$/.exec(info.url ?? '')?.[1] ?? '';
    const ws = await openSocket(info.port ?? 0, bearer);
    t.after(() => ws.close());
    const closed = new Promise<number>((resolve) => {
      ws.onclose = (e) => resolve(e.code);
    });
    const stopping = d;
    d = undefined;
    await stopping.close();
    assert.equal(await closed, 1001);
  });

  test('a taken port or "off" leaves the node running without a dashboard, and says why', async (t) => {
    const blocker = createServer();
    const other = fs.mkdtempSync(join(tmpdir(), 'meshd-dash-'));
    t.after(() => {
      blocker.close();
      fs.rmSync(other, { recursive: true, force: true });
    });
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = (blocker.address() as { port: number }).port;
    writeDashboardPort(other, taken);
    const d = await startQuiet(other);
    try {
      assert.equal(d.info().listening, false);
      assert.match(d.info().problem ?? '', new RegExp(`port ${taken} .* in use`));
    } finally {
      await d.close();
    }
    writeDashboardPort(other, 'off');
    const off = await startQuiet(other);
    try {
      assert.deepEqual(
        [off.info().listening, off.info().url, off.info().problem],
        [false, null, 'the dashboard is turned off on this node'],
      );
    } finally {
      await off.close();
    }
  });

  test('the token survives a restart; a token file readable by others is tightened', async () => {
    fs.chmodSync(dashboardTokenFile(dir), 0o644);
    const again = await startQuiet(dir, 0);
    try {
      assert.ok(again.info().url?.endsWith(`#token=${token}`));
      assert.equal(fs.statSync(dashboardTokenFile(dir)).mode & 0o777, 0o600);
    } finally {
      await again.close();
    }
  });
});
