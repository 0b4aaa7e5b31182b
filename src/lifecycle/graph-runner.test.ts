// Tests of the graph runner: ordering at run time, parallelism, timeouts, requires/wants, reverse stop.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { waitFor } from '../../test/support/wait-for.ts';
import { ManualClock } from '../shared/clock.ts';
import { GraphRunner, type StepTransition } from './graph-runner.ts';
import { buildStepGraph, RUNNING_TARGET, type StepDefinition, type StepGraph } from './step-graph.ts';

const pod = { pod: 'default/web', node: 'node-a', attempt: 1 };
const noop = async () => undefined;
const step = (name: string, rest: Partial<StepDefinition> = {}): StepDefinition => ({
  name,
  start: noop,
  ...rest,
});

function runner(graph: StepGraph, clock = new ManualClock(), transitions: StepTransition[] = []) {
  return new GraphRunner(graph, { clock, pod, observer: { transition: (t) => transitions.push(t) } });
}

/** Resolves on a macrotask boundary, `n` times: lets real interleavings happen without timers. */
async function ticks(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

function deferred() {
  let resolve: () => void = () => {};
  let reject: (e: Error) => void = () => {};
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A step body that logs its start and end around `until`. */
async function logged(events: string[], name: string, until: Promise<void>): Promise<undefined> {
  events.push(`${name}+`);
  await until;
  events.push(`${name}-`);
  return undefined;
}

/** Waits until `signal` aborts, then rejects with its reason (what a well-behaved step does). */
function untilAborted(signal: AbortSignal): Promise<undefined> {
  return new Promise((_, reject) =>
    signal.addEventListener('abort', () => reject(signal.reason), { once: true }),
  );
}

describe('graph runner: start', { timeout: 20_000 }, () => {
  test('steps reach running.target in order and outputs flow to later steps', async () => {
    const seen: string[] = [];
    const graph = buildStepGraph([
      step('port.allocate', { requiredBy: ['network.target'], start: async () => ({ port: 8080 }) }),
      step('process.start', {
        requires: ['sandbox.target'],
        requiredBy: [RUNNING_TARGET],
        start: async (ctx) => {
          seen.push(`${ctx.pod} ${ctx.step} port=${String(ctx.outputs['port.allocate']?.port)}`);
          return undefined;
        },
      }),
    ]);
    const result = await runner(graph).start();
    assert.equal(result.reachedGoal, true);
    assert.equal(result.goal, RUNNING_TARGET);
    assert.deepEqual(result.failures, []);
    assert.deepEqual(seen, ['default/web process.start port=8080']);
    assert.equal(result.states[RUNNING_TARGET], 'done');
  });

  test('steps with no order between them run at the same time', async () => {
    const a = deferred();
    const b = deferred();
    const events: string[] = [];
    const graph = buildStepGraph([
      step('a', { start: () => logged(events, 'a', a.promise) }),
      step('b', { start: () => logged(events, 'b', b.promise) }),
      step('c', { after: ['a', 'b'], start: () => logged(events, 'c', Promise.resolve()) }),
    ]);
    const r = runner(graph);
    const done = r.start();
    await waitFor(() => r.states().a === 'running' && r.states().b === 'running', {
      timeoutMs: 2000,
      what: 'a and b running together',
    });
    assert.deepEqual(events, ['a+', 'b+']);
    b.resolve();
    await waitFor(() => r.states().b === 'done', { timeoutMs: 2000, what: 'b done' });
    assert.equal(r.states().c, 'waiting');
    a.resolve();
    await done;
    assert.deepEqual(events, ['a+', 'b+', 'b-', 'a-', 'c+', 'c-']);
  });

  test('a step past its timeout is timed-out (not failed), its signal aborts, requirers fail, wanters run', async () => {
    const clock = new ManualClock();
    let slowSignal: AbortSignal | undefined;
    const graph = buildStepGraph([
      step('slow', {
        timeoutMs: 5000,
        start: async (_ctx, signal) => {
          slowSignal = signal;
          return untilAborted(signal);
        },
      }),
      step('needs.slow', { requires: ['slow'] }),
      step('likes.slow', { wants: ['slow'] }),
      step('default.timeout', { start: (_ctx, signal) => untilAborted(signal) }),
    ]);
    const transitions: StepTransition[] = [];
    const r = runner(graph, clock, transitions);
    const done = r.start();
    await waitFor(() => slowSignal !== undefined, { timeoutMs: 2000, what: 'slow started' });
    clock.advance(4999);
    assert.equal(r.states().slow, 'running');
    clock.advance(1);
    assert.equal(r.states().slow, 'timed-out');
    assert.equal(slowSignal?.aborted, true);
    assert.equal((slowSignal?.reason as DOMException | undefined)?.name, 'TimeoutError');
    assert.equal(r.states()['needs.slow'], 'dependency-failed');
    await waitFor(() => r.states()['likes.slow'] === 'done', { timeoutMs: 2000, what: 'likes.slow done' });
    assert.equal(r.states()['default.timeout'], 'running');
    clock.advance(30_000 - 5000);
    const result = await done;
    assert.equal(result.states['default.timeout'], 'timed-out');
    const slowT = transitions.find((t) => t.step === 'slow' && t.state === 'timed-out');
    assert.equal(slowT?.error, 'timed out after 5 s');
    assert.deepEqual(
      result.failures.find((f) => f.step === 'needs.slow'),
      {
        step: 'needs.slow',
        state: 'dependency-failed',
        error: 'required step slow timed-out',
        rootCause: 'slow',
      },
    );
  });

  test('requires propagates a failure down a chain to running.target; wants does not', async () => {
    const graph = buildStepGraph([
      step('image.pull', { start: async () => Promise.reject(new Error('exec: python4: not found')) }),
      step('process.start', { requires: ['image.pull'] }),
      step('metrics', { start: async () => Promise.reject(new Error('no collector')) }),
      step('health.check', { requires: ['process.start'], wants: ['metrics'], requiredBy: [RUNNING_TARGET] }),
      step('independent', { wants: ['image.pull'] }),
    ]);
    const transitions: StepTransition[] = [];
    const result = await runner(graph, new ManualClock(), transitions).start();
    assert.equal(result.reachedGoal, false);
    assert.equal(result.states['image.pull'], 'failed');
    assert.equal(result.states['process.start'], 'dependency-failed');
    assert.equal(result.states['health.check'], 'dependency-failed');
    assert.equal(result.states[RUNNING_TARGET], 'dependency-failed');
    assert.equal(result.states.independent, 'done');
    assert.equal(result.states.metrics, 'failed');
    const goal = transitions.find((t) => t.step === RUNNING_TARGET && t.state === 'dependency-failed');
    assert.equal(goal?.failedDependency, 'health.check');
    assert.equal(goal?.rootCause, 'image.pull');
  });

  test('a wanted step failing does not keep the pod from running', async () => {
    const graph = buildStepGraph([
      step('metrics', { wantedBy: [RUNNING_TARGET], start: async () => Promise.reject(new Error('down')) }),
    ]);
    const result = await runner(graph).start();
    assert.equal(result.reachedGoal, true);
    assert.deepEqual(result.failures, [{ step: 'metrics', state: 'failed', error: 'down' }]);
  });

  test('a dependant ordered before its requirement is failed when the requirement fails later', async () => {
    let forwarderSignal: AbortSignal | undefined;
    const graph = buildStepGraph([
      step('proc', { start: async () => Promise.reject(new Error('crashed')) }),
      step('log.forward', {
        requires: ['proc'],
        before: ['proc'],
        start: async (_c, s) => {
          forwarderSignal = s;
          return undefined;
        },
      }),
    ]);
    const result = await runner(graph).start();
    assert.equal(result.states['log.forward'], 'dependency-failed');
    assert.equal(forwarderSignal?.aborted, false, 'it had finished; it is stopped with the pod, not aborted');
  });

  test('a synchronous throw and a bad return value are failures with a message', async () => {
    const graph = buildStepGraph([
      step('throws', {
        start: () => {
          throw new Error('boom');
        },
      }),
      step('returns.string', { start: async () => 'yes' as unknown as undefined }),
    ]);
    const result = await runner(graph).start();
    assert.equal(result.failures.find((f) => f.step === 'throws')?.error, 'boom');
    assert.match(result.failures.find((f) => f.step === 'returns.string')?.error ?? '', /returned string/);
  });

  test('stop during start cancels: waiting steps are skipped, running ones aborted', async () => {
    let signal: AbortSignal | undefined;
    const graph = buildStepGraph([
      step('pull', {
        start: (_c, s) => {
          signal = s;
          return untilAborted(s);
        },
      }),
      step('run', { after: ['pull'] }),
    ]);
    const r = runner(graph);
    const started = r.start();
    await waitFor(() => signal !== undefined, { timeoutMs: 2000, what: 'pull running' });
    const stopped = r.stop();
    const result = await started;
    assert.equal(result.cancelled, true);
    assert.equal(result.states.run, 'skipped');
    assert.equal(result.states.pull, 'failed');
    assert.match(
      result.failures.find((f) => f.step === 'pull')?.error ?? '',
      /^cancelled: pod stop requested/,
    );
    const stop = await stopped;
    assert.deepEqual(
      stop.stopped.filter((n) => graph.steps.get(n)?.kind === 'step'),
      ['pull'],
    );
    assert.equal(r.states().pull, 'stopped');
    assert.equal(r.states().run, 'skipped');
  });
});

describe('graph runner: stop', { timeout: 20_000 }, () => {
  test('stops run in reverse order, only for started steps; a failing stop does not block the rest', async () => {
    const events: string[] = [];
    const stopper =
      (name: string, fail = false) =>
      async () => {
        events.push(name);
        if (fail) throw new Error('umount: busy');
      };
    const graph = buildStepGraph([
      step('netns', { stop: stopper('netns') }),
      step('volumes', { stop: stopper('volumes', true) }),
      step('sandbox', { requires: ['netns', 'volumes'], stop: stopper('sandbox') }),
      step('proc', {
        requires: ['sandbox'],
        stop: stopper('proc'),
        start: async () => Promise.reject(new Error('x')),
      }),
      step('health', { requires: ['proc'], stop: stopper('health') }),
    ]);
    const r = runner(graph);
    await r.start();
    const result = await r.stop();
    // netns and volumes are independent: both launch at once, in reverse graph order.
    assert.deepEqual(events, ['proc', 'sandbox', 'volumes', 'netns']);
    assert.ok(!events.includes('health'), 'health never started, so it is not stopped');
    assert.deepEqual(result.errors, [{ step: 'volumes', error: 'stop failed: umount: busy' }]);
    assert.equal(r.states().health, 'dependency-failed');
  });

  test('a stop that hangs times out and the stops before it still run', async () => {
    const clock = new ManualClock();
    const events: string[] = [];
    const graph = buildStepGraph([
      step('first', { stop: async () => void events.push('first') }),
      step('second', { after: ['first'], timeoutMs: 1000, stop: (_c, s) => untilAborted(s) }),
    ]);
    const r = runner(graph, clock);
    await r.start();
    const stopping = r.stop();
    await waitFor(() => r.states().second === 'stopping', { timeoutMs: 2000, what: 'second stopping' });
    assert.deepEqual(events, []);
    clock.advance(1000);
    const result = await stopping;
    assert.deepEqual(events, ['first']);
    assert.deepEqual(result.errors, [{ step: 'second', error: 'stop timed out after 1 s' }]);
  });
});

/** Random DAG over shuffled names; every edge orders a lower index before a higher one. */
const dagArb = fc.integer({ min: 1, max: 9 }).chain((n) =>
  fc.record({
    n: fc.constant(n),
    names: fc.shuffledSubarray(
      Array.from({ length: 12 }, (_, i) => `s${i}`),
      { minLength: n, maxLength: n },
    ),
    edges: fc.array(
      fc.record({
        i: fc.nat(n - 1),
        j: fc.nat(n - 1),
        kind: fc.constantFrom('after', 'before', 'requires', 'wants', 'requiredBy', 'requires-reversed'),
      }),
      { maxLength: n * 2 },
    ),
    delays: fc.array(fc.nat(3), { minLength: n * 2, maxLength: n * 2 }),
    fails: fc.array(fc.boolean(), { minLength: n, maxLength: n }),
  }),
);

interface Dag {
  n: number;
  names: string[];
  edges: { i: number; j: number; kind: string }[];
  delays: number[];
  fails: boolean[];
}

function buildDag(dag: Dag, events: string[]) {
  const defs = dag.names.map((name, k) => ({
    name,
    after: [] as string[],
    before: [] as string[],
    requires: [] as string[],
    wants: [] as string[],
    requiredBy: [] as string[],
    start: async () => {
      events.push(`start ${name}`);
      await ticks(dag.delays[k] ?? 0);
      events.push(`end ${name}`);
      if (dag.fails[k]) throw new Error(`${name} failed`);
      return undefined;
    },
    stop: async () => {
      events.push(`stop ${name}`);
      await ticks(dag.delays[dag.n + k] ?? 0);
      events.push(`stopped ${name}`);
    },
  }));
  const order: [string, string][] = [];
  const hard: [string, string, 'ordered' | 'reversed'][] = [];
  for (const { i, j, kind } of dag.edges) {
    if (i === j) continue;
    const [lo, hi] = i < j ? [i, j] : [j, i];
    const early = defs[lo];
    const late = defs[hi];
    if (early === undefined || late === undefined) continue;
    if (kind === 'after') late.after.push(early.name);
    if (kind === 'before') early.before.push(late.name);
    if (kind === 'requires') {
      late.requires.push(early.name);
      hard.push([late.name, early.name, 'ordered']);
    }
    if (kind === 'wants') late.wants.push(early.name);
    if (kind === 'requiredBy') {
      early.requiredBy.push(late.name);
      hard.push([late.name, early.name, 'ordered']);
    }
    if (kind === 'requires-reversed') {
      // early starts first but requires late (a sidecar pattern).
      early.before.push(late.name);
      early.requires.push(late.name);
      hard.push([early.name, late.name, 'reversed']);
    }
    order.push([early.name, late.name]);
  }
  return { graph: buildStepGraph(defs), order, hard };
}

describe('graph runner (properties)', { timeout: 20_000 }, () => {
  test('no step starts before every step ordered before it has finished; requires hold', async () => {
    await fc.assert(
      fc.asyncProperty(dagArb, async (dag) => {
        const events: string[] = [];
        const { graph, order, hard } = buildDag(dag, events);
        const r = runner(graph);
        const result = await r.start();
        await ticks(1);
        assert.deepEqual(result.states, r.states(), 'the result is taken once the graph has settled');
        const at = (e: string) => events.indexOf(e);
        for (const [early, late] of order) {
          if (at(`start ${late}`) === -1 || at(`start ${early}`) === -1) continue;
          assert.ok(
            at(`end ${early}`) < at(`start ${late}`),
            `${early} must end before ${late} starts: ${events.join(', ')}`,
          );
        }
        const succeeded = (name: string) => at(`end ${name}`) !== -1 && !dag.fails[dag.names.indexOf(name)];
        for (const [dependant, dependency, how] of hard) {
          if (succeeded(dependency)) continue;
          // A dependant ordered after its requirement never starts; one ordered before it may have
          // failed on its own first, but it never ends done.
          if (how === 'ordered') {
            assert.equal(result.states[dependant], 'dependency-failed');
            assert.equal(at(`start ${dependant}`), -1);
          } else {
            assert.notEqual(result.states[dependant], 'done');
          }
        }
        for (const [name, state] of Object.entries(result.states)) {
          assert.ok(['done', 'failed', 'dependency-failed'].includes(state), `${name} is ${state}`);
        }
      }),
      { numRuns: 150 },
    );
  });

  test('stop runs in reverse order, once per started step, never for unstarted ones', async () => {
    await fc.assert(
      fc.asyncProperty(dagArb, async (dag) => {
        const events: string[] = [];
        const { graph, order } = buildDag(dag, events);
        const r = runner(graph);
        await r.start();
        const started = new Set(dag.names.filter((n) => events.includes(`start ${n}`)));
        const stop = await r.stop();
        const at = (e: string) => events.indexOf(e);
        for (const name of dag.names) {
          const stops = events.filter((e) => e === `stop ${name}`).length;
          assert.equal(stops, started.has(name) ? 1 : 0, `${name} stopped ${stops} times`);
        }
        for (const [early, late] of order) {
          if (!started.has(early) || !started.has(late)) continue;
          assert.ok(
            at(`stopped ${late}`) < at(`stop ${early}`),
            `${late} must stop before ${early}: ${events.join(', ')}`,
          );
        }
        assert.deepEqual(new Set(stop.stopped.filter((n) => dag.names.includes(n))), started);
      }),
      { numRuns: 150 },
    );
  });
});
