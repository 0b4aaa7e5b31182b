// Tests of plugin steps: exec hooks as real child processes (stdin, failure, timeout, kill) and ES modules.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { waitFor } from '../../test/support/wait-for.ts';
import { ManualClock } from '../shared/clock.ts';
import { ValidationError } from '../shared/errors.ts';
import { GraphRunner } from './graph-runner.ts';
import { PodJournal } from './journal.ts';
import { execHookStep, loadModulePlugin, loadPluginSteps, parseDuration } from './plugin-steps.ts';
import { buildStepGraph, RUNNING_TARGET, type StepDefinition } from './step-graph.ts';
import { renderSummary } from './why-report.ts';

const dir = mkdtempSync(join(tmpdir(), 'meshd-lifecycle-'));
/** Every pid a hook reported; killed (if still there) when the file's tests end. */
const reportedPids = new Set<number>();
after(() => {
  for (const pid of reportedPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone, as it should be.
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

let fileSeq = 0;
function tempFile(name: string, content?: string): string {
  const path = join(dir, `${fileSeq++}-${name}`);
  if (content !== undefined) writeFileSync(path, content);
  return path;
}

/** Gone, or a zombie nobody reaped yet (PID 1 in a container may not reap): either way not running. */
function isGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function readPids(file: string, count: number): Promise<number[]> {
  const pids = await waitFor(
    () => {
      if (!existsSync(file)) return undefined;
      const list = readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
      return list.length >= count ? list : undefined;
    },
    { timeoutMs: 5000, what: `${count} pids in ${file}` },
  );
  for (const pid of pids) reportedPids.add(pid);
  return pids;
}

function runnerFor(defs: StepDefinition[], clock: ManualClock, spec: unknown = { image: 'python:3' }) {
  const graph = buildStepGraph(defs);
  return new GraphRunner(graph, { clock, pod: { pod: 'default/web', node: 'node-a', attempt: 2, spec } });
}

const sh = (script: string, ...args: string[]) => ['/bin/sh', '-c', script, 'sh', ...args];

describe('exec hooks', { timeout: 20_000 }, () => {
  test('the hook gets the pod context as JSON on stdin; a JSON object on stdout is its output', async () => {
    const clock = new ManualClock();
    const input = tempFile('stdin.json');
    const seen: unknown[] = [];
    const hook = execHookStep(
      {
        name: 'company.audit',
        after: ['port.allocate'],
        exec: sh('cat > "$1"; echo "{\\"ticket\\": \\"$MESHD_POD/$MESHD_STEP\\"}"', input),
      },
      'lifecycle.hooks[0]',
      { clock },
    );
    const r = runnerFor(
      [
        { name: 'port.allocate', start: async () => ({ port: 8080 }) },
        hook,
        {
          name: 'later',
          after: ['company.audit'],
          start: async (ctx) => {
            seen.push(ctx.outputs['company.audit']);
            return undefined;
          },
        },
      ],
      clock,
    );
    const result = await r.start();
    assert.equal(result.states['company.audit'], 'done');
    assert.deepEqual(JSON.parse(readFileSync(input, 'utf8')), {
      pod: 'default/web',
      node: 'node-a',
      attempt: 2,
      step: 'company.audit',
      phase: 'start',
      spec: { image: 'python:3' },
      outputs: { 'port.allocate': { port: 8080 } },
    });
    assert.deepEqual(seen, [{ ticket: 'default/web/company.audit' }]);
  });

  test('a non-zero exit fails the step with the tail of stderr; a missing program says not found', async () => {
    const clock = new ManualClock();
    const r = runnerFor(
      [
        execHookStep(
          { name: 'audit', exec: sh('echo noise >&2; echo "audit: pod web is not approved" >&2; exit 3') },
          'lifecycle.hooks[0]',
          { clock },
        ),
        execHookStep({ name: 'missing', exec: ['/nonexistent/python4', '-V'] }, 'lifecycle.hooks[1]', {
          clock,
        }),
        execHookStep({ name: 'silent', exec: sh('exec 0<&-; exit 0') }, 'lifecycle.hooks[2]', { clock }),
      ],
      clock,
    );
    const result = await r.start();
    const error = (step: string) => result.failures.find((f) => f.step === step)?.error;
    assert.equal(error('audit'), '/bin/sh exited with code 3: noise | audit: pod web is not approved');
    assert.equal(error('missing'), '/nonexistent/python4: not found');
    assert.equal(result.states.silent, 'done', 'a hook that does not read stdin is fine');
  });

  test('on timeout the hook is timed-out and its whole process group is killed', async () => {
    const clock = new ManualClock();
    const pids = tempFile('pids');
    const hook = execHookStep(
      // The shell and a grandchild both report their pid, then wait.
      {
        name: 'slow.hook',
        timeout: '5s',
        exec: sh('echo $$ >> "$1"; sleep 30 & echo $! >> "$1"; wait', pids),
      },
      'lifecycle.hooks[0]',
      { clock },
    );
    const r = runnerFor([hook], clock);
    const done = r.start();
    const [shell, grandchild] = await readPids(pids, 2);
    assert.ok(shell !== undefined && grandchild !== undefined);
    assert.ok(!isGone(shell) && !isGone(grandchild));
    clock.advance(5000);
    assert.equal(r.states()['slow.hook'], 'timed-out');
    await waitFor(() => isGone(shell) && isGone(grandchild), {
      timeoutMs: 5000,
      what: 'hook processes gone',
    });
    const result = await done;
    assert.equal(result.failures[0]?.error, 'timed out after 5 s');
  });

  test('a hook that ignores SIGTERM is SIGKILLed after the grace period', async () => {
    const clock = new ManualClock();
    const pids = tempFile('pids');
    const hook = execHookStep(
      {
        name: 'stubborn',
        timeout: 1000,
        exec: sh('trap "" TERM; echo $$ >> "$1"; sleep 30 & echo $! >> "$1"; wait', pids),
      },
      'lifecycle.hooks[0]',
      { clock, killGraceMs: 3000 },
    );
    const r = runnerFor([hook], clock);
    const done = r.start();
    const [shell, grandchild] = await readPids(pids, 2);
    assert.ok(shell !== undefined && grandchild !== undefined);
    clock.advance(1000);
    assert.equal(r.states().stubborn, 'timed-out');
    // SIGTERM has been sent and ignored; a short real wait shows both survive it.
    await assert.rejects(
      waitFor(() => isGone(shell) || isGone(grandchild), { timeoutMs: 300, what: 'a death' }),
      /timed out after 300 ms/,
    );
    clock.advance(3000);
    await waitFor(() => isGone(shell) && isGone(grandchild), { timeoutMs: 5000, what: 'SIGKILL' });
    await done;
  });

  test('processes a hook leaves behind are killed when it exits', async () => {
    const clock = new ManualClock();
    const pids = tempFile('pids');
    const hook = execHookStep(
      { name: 'leaky', exec: sh('sleep 30 & echo $! >> "$1"; exit 0', pids) },
      'lifecycle.hooks[0]',
      { clock },
    );
    const result = await runnerFor([hook], clock).start();
    assert.equal(result.states.leaky, 'done');
    const [leftover] = await readPids(pids, 1);
    assert.ok(leftover !== undefined);
    await waitFor(() => isGone(leftover), { timeoutMs: 5000, what: 'leftover gone' });
  });

  test('stopExec runs when the pod stops, with phase stop', async () => {
    const clock = new ManualClock();
    const input = tempFile('stop.json');
    const hook = execHookStep(
      { name: 'register', exec: ['/bin/true'], stopExec: sh('cat > "$1"', input) },
      'lifecycle.hooks[0]',
      { clock },
    );
    const r = runnerFor([hook], clock);
    await r.start();
    assert.ok(!existsSync(input));
    const stop = await r.stop();
    assert.deepEqual(stop.errors, []);
    const seen = JSON.parse(readFileSync(input, 'utf8')) as { phase: string; step: string };
    assert.equal(seen.phase, 'stop');
    assert.equal(seen.step, 'register');
  });

  test('hook config errors name the field path, with a suggestion for typos', () => {
    const clock = new ManualClock();
    const err = (config: unknown) => {
      try {
        execHookStep(config, 'lifecycle.hooks[3]', { clock });
      } catch (e) {
        assert.ok(e instanceof ValidationError);
        return e;
      }
      assert.fail('expected an error');
    };
    const typo = err({ name: 'a', exec: ['/bin/true'], tiemout: '5s' });
    assert.match(
      typo.message,
      /^lifecycle\.hooks\[3\]\.tiemout is not a hook field \(did you mean 'timeout'\?\)/,
    );
    assert.equal(typo.details?.path, 'lifecycle.hooks[3].tiemout');
    assert.match(
      err({ name: 'a', exec: [] }).message,
      /lifecycle\.hooks\[3\]\.exec must be a non-empty list/,
    );
    assert.match(
      err({ name: 'a', exec: ['/bin/true'], timeout: '5 sec' }).message,
      /lifecycle\.hooks\[3\]\.timeout must be a duration/,
    );
    assert.match(
      err({ name: 'a', exec: ['/bin/true'], after: 'b' }).message,
      /lifecycle\.hooks\[3\]\.after must be a list/,
    );
  });

  test('durations parse in ms, s, m, h', () => {
    assert.equal(parseDuration('5s', 'x'), 5000);
    assert.equal(parseDuration('250ms', 'x'), 250);
    assert.equal(parseDuration('1.5s', 'x'), 1500);
    assert.equal(parseDuration('2m', 'x'), 120_000);
    assert.equal(parseDuration(700, 'x'), 700);
    assert.throws(() => parseDuration('0s', 'x'), ValidationError);
    assert.throws(() => parseDuration(-1, 'x'), ValidationError);
  });
});

describe('module plugins', { timeout: 20_000 }, () => {
  test('steps from `export const steps` and from a default function load and validate', async () => {
    const a = tempFile(
      'audit.mjs',
      `export const steps = [{ name: 'company.audit', requiredBy: ['running.target'], async start(ctx) { return { audited: ctx.pod }; } }];`,
    );
    const b = tempFile(
      'fn.mjs',
      `export default async () => [{ name: 'company.notify', wantedBy: ['running.target'] }];`,
    );
    const steps = [...(await loadModulePlugin(a)), ...(await loadModulePlugin(b))];
    assert.deepEqual(
      steps.map((s) => [s.name, s.source]),
      [
        ['company.audit', a],
        ['company.notify', b],
      ],
    );
  });

  test('a malformed plugin is refused with an error naming the file and the field', async () => {
    const cases: [string, string, RegExp, string][] = [
      [
        'bad-field.mjs',
        `export const steps = [{ name: 'x', after: 'y' }];`,
        /steps\[0\]\.after must be a list/,
        'E_STEP_INVALID',
      ],
      ['no-steps.mjs', `export const other = 1;`, /exports no steps/, 'E_PLUGIN_INVALID'],
      ['syntax.mjs', `export const steps = [;`, /could not be loaded/, 'E_PLUGIN_LOAD'],
      [
        'throws.mjs',
        `export default () => { throw new Error('no config'); };`,
        /default export threw: no config/,
        'E_PLUGIN_LOAD',
      ],
      [
        'typo.mjs',
        `export const steps = [{ name: 'x', timeout: '5s', async start() {} }];`,
        /timeout is not a step field \(did you mean 'timeoutMs'\?\)/,
        'E_STEP_INVALID',
      ],
    ];
    for (const [name, source, message, code] of cases) {
      const file = tempFile(name, source);
      await assert.rejects(loadModulePlugin(file), (err: unknown) => {
        assert.ok(err instanceof ValidationError, String(err));
        assert.equal(err.code, code, name);
        assert.match(err.message, message);
        assert.ok(err.message.includes(file), `${err.message} names ${file}`);
        return true;
      });
    }
    await assert.rejects(loadModulePlugin(join(dir, 'missing.mjs')), /missing\.mjs could not be loaded/);
  });

  test('hooks and modules join the built-in graph: an operator gates running.target with company.audit', async () => {
    const clock = new ManualClock();
    const plugin = tempFile(
      'notify.mjs',
      `export const steps = [{ name: 'company.notify', after: ['company.audit'], wantedBy: ['running.target'], async start() {} }];`,
    );
    const builtIn: StepDefinition[] = [
      {
        name: 'process.start',
        source: 'built-in',
        requires: ['sandbox.target'],
        start: async () => undefined,
      },
      {
        name: 'health.check',
        source: 'built-in',
        requires: ['process.start'],
        requiredBy: [RUNNING_TARGET],
        start: async () => undefined,
      },
    ];
    const pluginSteps = await loadPluginSteps(
      {
        hooks: [
          {
            name: 'company.audit',
            after: ['health.check'],
            requiredBy: [RUNNING_TARGET],
            exec: sh('echo "audit: web has no owner label" >&2; exit 1'),
            timeout: '5s',
          },
        ],
        modules: [plugin],
      },
      { clock },
    );
    const graph = buildStepGraph([...builtIn, ...pluginSteps]);
    assert.ok(graph.order.indexOf('company.audit') > graph.order.indexOf('health.check'));
    assert.ok(graph.order.indexOf('company.audit') < graph.order.indexOf(RUNNING_TARGET));
    assert.equal(graph.steps.get('company.audit')?.source, 'node config lifecycle.hooks[0]');

    const journal = new PodJournal('web', { clock });
    const rec = journal.beginRun(graph, { node: 'node-a' });
    const r = new GraphRunner(graph, {
      clock,
      pod: { pod: 'web', node: 'node-a', attempt: rec.attempt },
      observer: rec,
    });
    const result = await r.start();
    assert.equal(result.reachedGoal, false);
    assert.equal(result.states['company.notify'], 'done', 'only ordered after the audit, so it still runs');
    const snap = journal.snapshot();
    assert.ok(snap !== undefined);
    assert.equal(
      renderSummary(snap),
      'pod web: stuck at company.audit (failed: /bin/sh exited with code 1: audit: web has no owner label)',
    );
  });

  test('a plugin step clashing with a built-in one is refused naming both', async () => {
    const plugin = tempFile(
      'clash.mjs',
      `export const steps = [{ name: 'process.start', async start() {} }];`,
    );
    const steps = await loadModulePlugin(plugin);
    assert.throws(
      () =>
        buildStepGraph([
          { name: 'process.start', source: 'built-in', start: async () => undefined },
          ...steps,
        ]),
      (err: unknown) => err instanceof ValidationError && err.message.includes(`built-in and ${plugin}`),
    );
  });
});
