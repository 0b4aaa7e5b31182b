// Tests of the `meshd why` renderers over journal snapshots of real runs (text, summary, blame, dot).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../shared/clock.ts';
import { GraphRunner } from './graph-runner.ts';
import { PodJournal, type WhySnapshot } from './journal.ts';
import { buildStepGraph, RUNNING_TARGET, type StepDefinition } from './step-graph.ts';
import { renderBlame, renderDot, renderSummary, renderText } from './why-report.ts';

/** Runs `defs` for pod web with time moving in 10 ms steps, then returns the journal's snapshot. */
async function snapshotOf(
  defs: (wait: (ms: number) => () => Promise<undefined>) => StepDefinition[],
  opts: { stop?: boolean; maxTicks?: number } = {},
): Promise<{ snap: WhySnapshot; journal: PodJournal; clock: ManualClock }> {
  const clock = new ManualClock();
  const wait = (ms: number) => () => new Promise<undefined>((r) => clock.setTimeout(() => r(undefined), ms));
  const graph = buildStepGraph(defs(wait));
  const journal = new PodJournal('web', { clock });
  const rec = journal.beginRun(graph, { node: 'node-a' });
  const runner = new GraphRunner(graph, {
    clock,
    pod: { pod: 'web', node: 'node-a', attempt: rec.attempt },
    observer: rec,
  });
  let finished = false;
  const started = runner.start().then(() => {
    finished = true;
  });
  for (let i = 0; i < (opts.maxTicks ?? 1000) && !finished; i++) {
    clock.advance(10);
    await new Promise((r) => setImmediate(r));
  }
  if (finished) await started;
  if (opts.stop === true) await runner.stop();
  const snap = journal.snapshot();
  assert.ok(snap !== undefined);
  return { snap, journal, clock };
}

const failingPod = (wait: (ms: number) => () => Promise<undefined>): StepDefinition[] => [
  { name: 'port.allocate', requiredBy: ['network.target'], start: wait(20) },
  { name: 'volumes.mount', requiredBy: ['storage.target'], start: wait(200) },
  {
    name: 'sandbox.create',
    requires: ['network.target', 'storage.target'],
    requiredBy: ['sandbox.target'],
    start: wait(1200),
  },
  {
    name: 'process.start',
    requires: ['sandbox.target'],
    start: async () => {
      await wait(140)();
      throw new Error('exec: python4: not found');
    },
  },
  { name: 'health.check', requires: ['process.start'], requiredBy: [RUNNING_TARGET] },
  { name: 'metrics.register', wantedBy: [RUNNING_TARGET], start: wait(10) },
];

describe('why report', { timeout: 20_000 }, () => {
  test('the summary names the step the pod is stuck at and why', async () => {
    const { snap } = await snapshotOf(failingPod);
    assert.equal(renderSummary(snap), 'pod web: stuck at process.start (failed: exec: python4: not found)');
  });

  test('the summary of a timed-out step, a running pod, a starting pod, and a stopped one', async () => {
    const slow = await snapshotOf((wait) => [
      { name: 'image.pull', requiredBy: [RUNNING_TARGET], timeoutMs: 2000, start: wait(5000) },
    ]);
    assert.equal(renderSummary(slow.snap), 'pod web: stuck at image.pull (timed out after 2 s)');

    const ok = await snapshotOf((wait) => [
      { name: 'process.start', requiredBy: [RUNNING_TARGET], start: wait(300) },
      { name: 'metrics', wantedBy: [RUNNING_TARGET], start: async () => Promise.reject(new Error('no')) },
    ]);
    assert.equal(
      renderSummary(ok.snap),
      'pod web: running (running.target reached in 300 ms, attempt 1); wanted step failed: metrics',
    );

    const live = await snapshotOf(
      (wait) => [{ name: 'image.pull', requiredBy: [RUNNING_TARGET], start: wait(20_000) }],
      {
        maxTicks: 1200,
      },
    );
    assert.equal(renderSummary(live.snap), 'pod web: starting — image.pull running for 12 s');

    const stopped = await snapshotOf(failingPod, { stop: true });
    assert.equal(
      renderSummary(stopped.snap),
      'pod web: stopped — last start stuck at process.start (failed: exec: python4: not found)',
    );
  });

  test('the text report has a marker and a word per step, in graph order, with details', async () => {
    const { snap } = await snapshotOf(failingPod);
    const text = renderText(snap);
    const lines = text.split('\n');
    assert.equal(lines[0], 'pod web: stuck at process.start (failed: exec: python4: not found)');
    const row = (name: string) =>
      lines.find((l) => l.startsWith('  ') && (l.includes(` ${name} `) || l.endsWith(` ${name}`))) ?? '';
    assert.match(row('sandbox.create'), /^ {2}✓ done +sandbox\.create +1\.2 s$/);
    assert.match(row('process.start'), /✗ failed +process\.start +140 ms +exec: python4: not found$/);
    assert.match(
      row('health.check'),
      /⊘ dependency-failed +health\.check +requires process\.start \(failed\)$/,
    );
    assert.match(
      row('running.target'),
      /⊘ dependency-failed +running\.target +requires health\.check .*root cause process\.start/,
    );
    assert.ok(lines.indexOf(row('sandbox.create')) < lines.indexOf(row('process.start')));
    const esc = String.fromCharCode(27);
    assert.ok(!text.includes(esc), 'no colour unless asked');
    assert.ok(renderText(snap, { color: true }).includes(`${esc}[31m✗ failed`));
  });

  test('a waiting step says what it waits on', async () => {
    const { snap } = await snapshotOf(
      (wait) => [
        { name: 'image.pull', start: wait(60_000), timeoutMs: 120_000 },
        { name: 'process.start', requires: ['image.pull'], requiredBy: [RUNNING_TARGET] },
      ],
      { maxTicks: 5 },
    );
    assert.match(renderText(snap), /… waiting +process\.start +waiting on image\.pull/);
    assert.match(renderText(snap), /▶ running +image\.pull +50 ms +running \(timeout 2 min\)/);
  });

  test('--blame lists steps that ran, slowest first, without targets', async () => {
    const { snap } = await snapshotOf(failingPod);
    const lines = renderBlame(snap).trimEnd().split('\n');
    assert.equal(lines[0], 'pod web, attempt 1: start time by step, slowest first');
    const names = lines.slice(1).map((l) => l.trim().split(/\s+/)[2]);
    assert.deepEqual(names, [
      'sandbox.create',
      'volumes.mount',
      'process.start',
      'port.allocate',
      'metrics.register',
    ]);
    assert.match(lines[3] ?? '', /140 ms +process\.start +✗ failed: exec: python4: not found/);
  });

  test('--dot draws after/requires/wants edges differently and colours nodes by state', async () => {
    const { snap } = await snapshotOf((wait) => [
      ...failingPod(wait),
      { name: 'log.forward', after: ['sandbox.create'], start: wait(10) },
      { name: 'odd.name', start: async () => Promise.reject(new Error('quote " and \\ backslash\nnewline')) },
    ]);
    const dot = renderDot(snap);
    assert.match(dot, /^digraph "pod web attempt 1" \{\n/);
    assert.match(dot, /\n}\n$/);
    assert.match(dot, /"health\.check" -> "process\.start" \[color="#000000", penwidth=1\.5/);
    assert.match(dot, /"log\.forward" -> "sandbox\.create" \[color="#2e7d32"/);
    assert.match(dot, /"running\.target" -> "metrics\.register" \[color="#9e9e9e", style=dashed/);
    assert.doesNotMatch(
      dot,
      /"process\.start" -> "sandbox\.target" \[color="#2e7d32"/,
      'implied ordering not drawn twice',
    );
    assert.match(dot, /"process\.start" \[label="process\.start\\n✗ failed · 140 ms", fillcolor="#ef9a9a"/);
    assert.match(dot, /"sandbox\.create" \[[^\]]*fillcolor="#c8e6c9"/);
    assert.match(dot, /"running\.target" \[[^\]]*fillcolor="#f8bbd0", shape=ellipse/);
    assert.match(dot, /"odd\.name" \[[^\]]*tooltip="quote \\" and \\\\ backslash\\nnewline"/);
    // Every line inside the braces is a statement: no raw newline leaked out of a label.
    for (const line of dot.trimEnd().split('\n').slice(1, -1)) assert.match(line, /;$/);
  });
});
