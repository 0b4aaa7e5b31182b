// End to end in a real browser (Debian's chromium via playwright-core): the dashboard of a three-peer mesh started through the CLI.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import type { PodDescription, RevisionView } from '../src/api/types.ts';
import { upgradeStatus as upgradeStatusOf } from './support/http-status.ts';
import { fixedLoopback, lastLine, MeshFixture } from './support/meshd-cli.ts';
import { waitFor } from './support/wait-for.ts';

const chromiumPath = '/usr/bin/chromium';
const chromiumFlags = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const artifacts = fileURLToPath(new URL('../test-artifacts/', import.meta.url));

/** The few browser globals the page callbacks touch (this project's TypeScript has no DOM library). */
type PageGlobals = {
  document: {
    querySelector(
      selector: string,
    ): { getAttribute(name: string): string | null; textContent: string | null } | null;
    querySelectorAll(selector: string): { length: number };
    getElementById(id: string): { value?: string } | null;
    documentElement: { scrollWidth: number };
  };
  innerWidth: number;
  sameDocument?: boolean;
};

// Pinned to b: a later test stops c, and the page must still reach the node that runs the pod.
const webSpec = (greeting: string) => `kind: Pod
name: web
spec:
  placement: { host: b }
  containers:
    - name: app
      command: [sleep, "600"]
      env: { GREETING: ${greeting} }
      resources: { cpu: 0.1, memory: 32Mi }
  replicas: 1
`;

/** The status an upgrade request to /ws gets (101 when it becomes a WebSocket). */
const upgradeStatus = (origin: string, headers: Record<string, string> = {}) =>
  upgradeStatusOf(`${origin}/ws`, headers);

describe('the dashboard in a real browser, on three peers', { timeout: 300_000 }, () => {
  let mesh: MeshFixture;
  let browser: BrowserContext | undefined;
  let page: Page;
  let url: string;
  let origin: string;
  const shot = (name: string) =>
    page.screenshot({ path: join(artifacts, `dashboard-${name}.png`), fullPage: true });
  const history = (node: string) => mesh.json<RevisionView[]>(node, ['history', 'pod', 'web']);
  /** What users wrote: the runtime adds `system` revisions (slot status) whenever the pod moves. */
  const userRevisions = async (node: string) =>
    (await history(node)).filter((r) => r.kind !== 'system').map((r) => [r.revision, r.kind, r.author.actor]);
  const specOf = async (node: string) =>
    (await mesh.json<PodDescription>(node, ['describe', 'pod', 'web'])).spec;

  before(async () => {
    mesh = await MeshFixture.create('meshd-dash-');
    const listen: Record<string, string[]> = {};
    for (const n of ['a', 'b', 'c']) listen[n] = await fixedLoopback();
    // Three daemons on one host: each dashboard on a free port (the default 7947 fits one node per host).
    await mesh.form(['a', 'b', 'c'], {
      initFlags: ['--name', 'home'],
      flags: (n) => [...(listen[n] ?? []), '--dashboard-port', '0'],
    });
    const file = join(mesh.root, 'web.yaml');
    fs.writeFileSync(file, webSpec('hello'));
    await mesh.ok('a', ['apply', '-f', file, '--as', 'alice']);
    fs.writeFileSync(file, webSpec('bonjour'));
    await mesh.ok('a', ['apply', '-f', file, '--as', 'bob']);

    url = lastLine(await mesh.ok('a', ['dashboard']));
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/#token=[A-Za-z0-9_-]{43}$/);
    origin = new URL(url).origin;

    fs.mkdirSync(artifacts, { recursive: true });
    browser = await chromium.launchPersistentContext(fs.mkdtempSync(join(mesh.root, 'chromium-')), {
      executablePath: chromiumPath,
      headless: true,
      args: chromiumFlags,
      timeout: 30_000,
      viewport: { width: 1100, height: 900 },
    });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(15_000);
  });

  after(async () => {
    await browser?.close();
    await mesh?.cleanup();
  });

  test('requests without the token are refused: 401 on API routes, page files and the WebSocket upgrade', async () => {
    const api = await fetch(`${origin}/api/pods`, { signal: AbortSignal.timeout(5000) });
    assert.equal(api.status, 401);
    assert.equal(((await api.json()) as { error: { code: string } }).error.code, 'E_DASHBOARD_AUTH');
    const wrong = await fetch(`${origin}/api/status`, {
      headers: { authorization: `Bearer ${'x'.repeat(43)}` },
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(wrong.status, 401);
    assert.equal((await fetch(`${origin}/app.js`, { signal: AbortSignal.timeout(5000) })).status, 401);
    assert.equal(await upgradeStatus(origin), 401);
    assert.equal(await upgradeStatus(origin, { cookie: 'meshd_dashboard_0=forged' }), 401);
    // The same token as a bearer works for scripts, which shows the refusals were about the token.
    const token = url.split('#token=')[1] ?? '';
    const ok = await fetch(`${origin}/api/status`, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(ok.status, 200);
    assert.equal(await upgradeStatus(origin, { authorization: `Bearer ${token}` }), 101);
  });

  test('the peer map shows the three nodes, ready, with the pod on its node', async () => {
    await page.goto(url);
    await page.waitForURL(/#\/peers$/);
    await page.waitForFunction(
      () =>
        (globalThis as unknown as PageGlobals).document.querySelectorAll(
          'svg.map [data-node][data-state="ready"]',
        ).length === 3,
      null,
      { timeout: 20_000 },
    );
    assert.deepEqual(
      await page
        .locator('svg.map [data-node]')
        .evaluateAll((els) => els.map((e) => e.getAttribute('data-node')).sort()),
      ['a', 'b', 'c'],
    );
    // State is also said in words (not colour only), and the token left the address bar.
    assert.equal(await page.locator('table tr[data-node="b"] td').first().textContent(), '✓ ready');
    assert.doesNotMatch(page.url(), /token/);
    await page.waitForSelector('body[data-live="live"]');
    await shot('peer-map');
    await page.setViewportSize({ width: 360, height: 760 });
    await shot('peer-map-360px');
    const overflow = await page.evaluate(() => {
      const g = globalThis as unknown as PageGlobals;
      return g.document.documentElement.scrollWidth - g.innerWidth;
    });
    assert.ok(overflow <= 0, `the page fits 360 px without sideways scrolling (overflow ${overflow}px)`);
    await page.setViewportSize({ width: 1100, height: 900 });
  });

  test('a node stopped with `meshd down` turns unreachable in the open page, without a reload', async () => {
    await page.evaluate(() => {
      (globalThis as unknown as PageGlobals).sameDocument = true;
    });
    await mesh.ok('c', ['down']);
    await page.waitForFunction(
      () =>
        (globalThis as unknown as PageGlobals).document
          .querySelector('svg.map [data-node="c"]')
          ?.getAttribute('data-state') === 'unreachable',
      null,
      { timeout: 20_000 },
    );
    assert.equal(await page.locator('table tr[data-node="c"] td').first().textContent(), '✗ unreachable');
    assert.equal(
      await page.evaluate(() => (globalThis as unknown as PageGlobals).sameDocument),
      true,
      'the page was not reloaded',
    );
    await shot('peer-map-unreachable');
  });

  test('a rollback made in the page is in the history on another peer, by dashboard@a', async () => {
    await page.goto(`${origin}/#/pods/web`);
    await page.waitForSelector('table.history tr[data-revision="2"]');
    // The lifecycle graph marks each step as `meshd why` does, with the markers the daemon sends.
    const doneStep = page.locator('g.step[data-state="done"] text.step-name').first();
    await doneStep.waitFor();
    assert.match((await doneStep.textContent()) ?? '', /^✓ \S/);
    await page.selectOption('#rollback-to', '1');
    await page.getByRole('button', { name: 'Roll back' }).click();
    const status = page.locator('p.status-line[role="status"]');
    await page.waitForFunction(() =>
      /Rolled back|refused/.test(
        (globalThis as unknown as PageGlobals).document.querySelector('p.status-line')?.textContent ?? '',
      ),
    );
    const said = (await status.textContent()) ?? '';
    const revision = /Rolled back: revision (\d+) /.exec(said)?.[1];
    assert.ok(revision !== undefined, `the page says the rollback was made: ${said}`);
    const onB = await waitFor(async () => (await history('b')).find((r) => r.revision === revision), {
      timeoutMs: 20_000,
      what: `revision ${revision} in the history on b`,
    });
    assert.equal(onB.kind, 'rollback');
    assert.equal(onB.author.actor, 'dashboard@a');
    const specOnB = await mesh.json<PodDescription>('b', ['describe', 'pod', 'web']);
    assert.match(specOnB.spec, /GREETING: hello/);
    // The page shows it too, live, with its author.
    const row = `table.history tr[data-revision="${revision}"][data-kind="rollback"]`;
    await page.waitForSelector(row);
    assert.equal(await page.locator(`${row} .author`).textContent(), 'dashboard@a');
    await shot('pod-after-rollback');
  });

  test('an invalid edit shows its errors inline, at their field paths, and changes nothing', async () => {
    const before = await userRevisions('a');
    const specBefore = await specOf('a');
    await page.goto(`${origin}/#/edit/web`);
    await page.waitForFunction(() =>
      (globalThis as unknown as PageGlobals).document
        .getElementById('spec-text')
        ?.value?.includes('name: web'),
    );
    await page.fill(
      '#spec-text',
      'kind: Pod\nname: web\nspec:\n  containers:\n    - name: app\n      comand: [sleep, "1"]\n  replicas: two\n',
    );
    await page.getByRole('button', { name: 'Apply' }).click();
    const replicas = page.locator('#spec-errors .issue[data-path="spec.replicas"]');
    await replicas.waitFor();
    assert.match((await replicas.textContent()) ?? '', /line 7, column \d+ spec\.replicas: /);
    assert.match(
      (await page.locator('#spec-errors .issue[data-path="spec.containers[0].comand"]').textContent()) ?? '',
      /line 6, column 7 .*did you mean "command"/,
    );
    assert.equal(await page.locator('#spec-text').getAttribute('aria-invalid'), 'true');
    assert.match((await page.locator('#spec-errors').textContent()) ?? '', /Not applied — nothing changed/);
    await shot('edit-invalid');
    assert.deepEqual(await userRevisions('a'), before, 'no revision was made');
    assert.equal(await specOf('a'), specBefore);
    assert.deepEqual(await userRevisions('b'), before, 'nothing reached the other peer either');
    assert.equal(await specOf('b'), specBefore);
  });

  test('meshd top lists every node with its pods; CPU and memory only where measured', async () => {
    const top = await mesh.json<{
      node: string;
      rows: Array<{ node: string; pod: string | null; rssBytes: number | null }>;
    }>('a', ['top', '--once', '--interval', '300ms']);
    assert.equal(top.node, 'a');
    assert.deepEqual([...new Set(top.rows.map((r) => r.node))].sort(), ['a', 'b', 'c']);
    assert.equal(top.rows.filter((r) => r.pod === 'web').length, 1);
    for (const r of top.rows)
      if (r.node !== 'a') assert.equal(r.rssBytes, null, 'other nodes are not measured from here');
  });
});
