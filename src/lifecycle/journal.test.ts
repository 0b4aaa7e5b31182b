// Tests of the pod journal: what `meshd why` sees during and after a run, bounds, and persistence.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { waitFor } from '../../test/support/wait-for.ts';
import { ManualClock } from '../shared/clock.ts';
import { ValidationError } from '../shared/errors.ts';
import { GraphRunner } from './graph-runner.ts';
import { type JournalSink, PodJournal, type PodJournalData, type WhySnapshot } from './journal.ts';
import { buildStepGraph, RUNNING_TARGET, type StepDefinition, type StepGraph } from './step-graph.ts';
import { renderText } from './why-report.ts';

const step = (name: string, rest: Partial<StepDefinition> = {}): StepDefinition => ({
  name,
  start: async () => undefined,
  ...rest,
});

function untilAborted(signal: AbortSignal): Promise<undefined> {
  return new Promise((_, reject) =>
    signal.addEventListener('abort', () => reject(signal.reason), { once: true }),
  );
}

function attempt(journal: PodJournal, graph: StepGraph, clock: ManualClock) {
  const recorder = journal.beginRun(graph, { node: 'node-a' });
  return new GraphRunner(graph, {
    clock,
    pod: { pod: journal.pod, node: 'node-a', attempt: recorder.attempt },
    observer: recorder,
  });
}

describe('pod journal', { timeout: 20_000 }, () => {
  test('a live snapshot shows what runs, for how long, and what waits on it', async () => {
    const clock = new ManualClock();
    const journal = new PodJournal('default/web', { clock });
    const graph = buildStepGraph([
      step('image.pull', { start: (_c, s) => untilAborted(s), timeoutMs: 60_000 }),
      step('process.start', { requires: ['image.pull', 'sandbox.target'], requiredBy: [RUNNING_TARGET] }),
    ]);
    const runner = attempt(journal, graph, clock);
    const done = runner.start();
    await waitFor(() => runner.states()['image.pull'] === 'running', {
      timeoutMs: 2000,
      what: 'pull running',
    });
    clock.advance(12_000);
    const snap = journal.snapshot();
    assert.ok(snap !== undefined);
    assert.equal(snap.status, 'starting');
    const pull = snap.steps.find((s) => s.name === 'image.pull');
    assert.equal(pull?.state, 'running');
    assert.equal(pull?.durationMs, 12_000);
    const proc = snap.steps.find((s) => s.name === 'process.start');
    assert.deepEqual(proc?.waitingOn, ['image.pull']);
    assert.deepEqual(proc?.requires, ['image.pull', 'sandbox.target']);
    assert.deepEqual(snap.blocker, { step: 'image.pull', state: 'running', runningForMs: 12_000 });
    clock.advance(48_000);
    await done;
    const after = journal.snapshot();
    assert.equal(after?.status, 'failed');
    assert.deepEqual(after?.blocker, {
      step: 'image.pull',
      state: 'timed-out',
      error: 'timed out after 1 min',
    });
    assert.equal(after?.steps.find((s) => s.name === 'image.pull')?.durationMs, 60_000);
    assert.equal(after?.steps.find((s) => s.name === 'process.start')?.rootCause, 'image.pull');
  });

  test('after a stop, the run still says what failed', async () => {
    const clock = new ManualClock();
    const journal = new PodJournal('default/web', { clock });
    const graph = buildStepGraph([
      step('process.start', {
        requiredBy: [RUNNING_TARGET],
        start: async () => Promise.reject(new Error('exec: python4: not found')),
        stop: async () => undefined,
      }),
    ]);
    const runner = attempt(journal, graph, clock);
    await runner.start();
    await runner.stop();
    const snap = journal.snapshot();
    assert.equal(snap?.status, 'stopped');
    assert.equal(snap?.startOutcome, 'failed');
    const proc = snap?.steps.find((s) => s.name === 'process.start');
    assert.equal(proc?.state, 'stopped');
    assert.equal(proc?.outcome, 'failed');
    assert.equal(proc?.error, 'exec: python4: not found');
    assert.deepEqual(snap?.blocker, {
      step: 'process.start',
      state: 'failed',
      error: 'exec: python4: not found',
    });
  });

  test('keeps the last maxRuns runs and at most maxEntriesPerRun entries each', async () => {
    const clock = new ManualClock();
    const journal = new PodJournal('default/web', { clock, maxRuns: 3, maxEntriesPerRun: 10 });
    const graph = buildStepGraph([step('a'), step('b'), step('c')]);
    for (let i = 0; i < 5; i++) {
      const runner = attempt(journal, graph, clock);
      await runner.start();
      await runner.stop(`edit ${i + 1}`);
    }
    const runs = journal.runs();
    assert.deepEqual(
      runs.map((r) => r.attempt),
      [3, 4, 5],
    );
    for (const r of runs) {
      assert.equal(r.entries.length, 10);
      // 7 steps: waiting, running (real steps only), done, stopped.
      assert.equal(r.droppedEntries, 7 * 3 + 3 - 10);
      assert.equal(r.entries.at(-1)?.state, 'stopped');
      assert.ok(
        r.steps.every((s) => s.state === 'stopped'),
        'step records stay complete when entries are dropped',
      );
    }
    const snap = journal.snapshot();
    assert.deepEqual(
      snap?.previousRuns.map((r) => [r.attempt, r.stopReason]),
      [
        [4, 'edit 4'],
        [3, 'edit 3'],
      ],
    );
    assert.equal(snap?.stopReason, 'edit 5', 'each run says why it was stopped');
    assert.match(renderText(snap as WhySnapshot), /^ {2}4: running; stopped: edit 4$/m);
    assert.equal(journal.snapshot(1), undefined);
  });

  test('persists through a sink as JSON, coalesced, and reloads to the same snapshot', async () => {
    const clock = new ManualClock();
    const saved: { pod: string; json: string }[] = [];
    const sink: JournalSink = { save: (pod, data) => void saved.push({ pod, json: JSON.stringify(data) }) };
    const journal = new PodJournal('default/web', { clock, sink, saveDelayMs: 500 });
    const graph = buildStepGraph([step('a'), step('b', { requires: ['a'] })]);
    const runner = attempt(journal, graph, clock);
    await runner.start();
    assert.equal(saved.length, 1, 'the transitions and the end of the start make one save');
    clock.advance(1000);
    assert.equal(saved.length, 1, 'nothing left pending');
    const last = saved.at(-1);
    assert.equal(last?.pod, 'default/web');
    const reloaded = PodJournal.fromJSON('default/web', JSON.parse(last?.json ?? 'null'), { clock });
    assert.deepEqual(reloaded.snapshot(), journal.snapshot());
    const next = reloaded.beginRun(graph, { node: 'node-a' });
    assert.equal(next.attempt, 2, 'attempt numbers continue after a reload');
  });

  test('a failing sink is logged, not thrown into the lifecycle', async () => {
    const clock = new ManualClock();
    const lines: string[] = [];
    const { createLogger } = await import('../shared/logger.ts');
    const journal = new PodJournal('default/web', {
      clock,
      saveDelayMs: 0,
      sink: { save: () => Promise.reject(new Error('disk full')) },
      logger: createLogger({ write: (l) => void lines.push(l) }),
    });
    const runner = attempt(journal, buildStepGraph([step('a')]), clock);
    const result = await runner.start();
    assert.equal(result.reachedGoal, true);
    await waitFor(() => lines.length > 0, { timeoutMs: 2000, what: 'a warning' });
    const line = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
    assert.equal(line.msg, 'journal save failed');
    assert.equal(line.pod, 'default/web');
    assert.equal(line.error, 'disk full');
  });

  test('a stored journal that is not one is refused with a readable error', () => {
    const clock = new ManualClock();
    for (const bad of [null, { version: 99 }, { version: 1, lastAttempt: 1, runs: [{ attempt: 1 }] }]) {
      assert.throws(
        () => PodJournal.fromJSON('default/web', bad, { clock }),
        (err: unknown) =>
          err instanceof ValidationError &&
          err.code === 'E_JOURNAL_INVALID' &&
          /default\/web/.test(err.message),
      );
    }
  });

  test('errors are clipped so one chatty hook cannot bloat the journal', async () => {
    const clock = new ManualClock();
    const journal = new PodJournal('p', { clock });
    const graph = buildStepGraph([
      step('a', { start: async () => Promise.reject(new Error('x'.repeat(5000))) }),
    ]);
    await attempt(journal, graph, clock).start();
    const data: PodJournalData = journal.toJSON();
    const error = data.runs[0]?.steps.find((s) => s.name === 'a')?.error ?? '';
    assert.equal(error.length, 1000);
    assert.ok(error.endsWith('…'));
  });
});
