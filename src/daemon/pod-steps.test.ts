// Tests for the built-in pod steps over a recording fake driver: ports, argv, limits, health probes, partial starts, restore.

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { GraphRunner } from '../lifecycle/graph-runner.ts';
import { buildStepGraph } from '../lifecycle/step-graph.ts';
import {
  type ContainerHandle,
  type ContainerStatus,
  ProcessStartError,
  type RuntimeDriver,
  SandboxUnavailableError,
  type StartRequest,
} from '../runtime/driver.ts';
import { status as mockStatus } from '../runtime/mock/mock-driver.ts';
import { systemClock } from '../shared/clock.ts';
import { type Pod, parsePodSpec } from '../state/pod-spec.ts';
import {
  builtinPodSteps,
  containerArgv,
  containerLimits,
  newRunState,
  type PodRunInput,
  type PodRunState,
  type RestoreInput,
} from './pod-steps.ts';
import { PortAllocator } from './port-allocator.ts';
import { decideSecurity } from './security-grant.ts';

function pod(yaml: string): Pod {
  return parsePodSpec(`kind: Pod\nname: web\nspec:\n${yaml}`, 'web.yaml');
}

/** A running container's status (as the mock runtime reports one) with pid 100, changed by `over`. */
const statusOf = (over: Partial<ContainerStatus> = {}): ContainerStatus => ({
  ...mockStatus(true),
  pid: 100,
  ...over,
});

/** Pod `web` of one container `app` that sleeps `seconds`; each of `fields` is one more line of that container. */
function sleeper(seconds: string, ...fields: string[]): Pod {
  const more = fields.map((f) => `      ${f}\n`).join('');
  return pod(`  containers:\n    - name: app\n      command: [sleep, "${seconds}"]\n${more}`);
}

/** A driver that records calls; `fail` makes start of that container reject. */
function fakeDriver(
  opts: { fail?: Record<string, Error>; status?: () => ContainerStatus; noBwrap?: boolean } = {},
) {
  const started: StartRequest[] = [];
  const stopped: string[] = [];
  const adopted: string[] = [];
  const driver: RuntimeDriver = {
    async prepare() {
      if (opts.noBwrap === true)
        throw new SandboxUnavailableError('bubblewrap is not installed at /usr/bin/bwrap');
      return {
        bwrapPath: '/usr/bin/bwrap',
        bwrapVersion: 'bubblewrap 0.8.0',
        sandboxUser: { uid: 65534, gid: 65534 },
        cgroup: { mode: 'hybrid', controllers: {} },
        warnings: [],
      };
    },
    async start(req) {
      started.push(req);
      const err = opts.fail?.[req.container.name];
      if (err !== undefined) throw err;
      return handle(req.container.name);
    },
    async stop(h) {
      stopped.push(h.container);
      return statusOf({ running: false, state: 'stopped' });
    },
    async status() {
      return opts.status?.() ?? statusOf();
    },
    async adopt(stateFile) {
      adopted.push(stateFile);
      return stateFile.includes('gone') ? undefined : handle(stateFile.split('/')[0] ?? '');
    },
    logs() {
      throw new Error('not used');
    },
  };
  return { driver, started, stopped, adopted };
}

function handle(container: string): ContainerHandle {
  return {
    podKey: 'web.0',
    container,
    stateFile: `${container}/run/state.json`,
    pid: 100,
    startTime: 1,
    supervisorPid: 99,
    supervisorStartTime: 1,
    leaseEpoch: 0,
    specHash: 'x',
    logFiles: { stdout: `${container}.out`, stderr: `${container}.err` },
  };
}

async function run(
  p: Pod,
  driver: RuntimeDriver,
  opts: {
    state?: PodRunState;
    healthTimeoutMs?: number;
    alloc?: PortAllocator;
    security?: PodRunInput['security'];
  } = {},
) {
  const alloc =
    opts.alloc ??
    new PortAllocator({ clock: systemClock, range: { min: 30000, max: 30100 }, isFree: async () => true });
  const state = opts.state ?? newRunState({});
  const steps = builtinPodSteps(
    {
      driver,
      ports: alloc,
      clock: systemClock,
      healthTimeoutMs: opts.healthTimeoutMs ?? 5000,
      stopGraceMs: 100,
    },
    state,
  );
  const input: PodRunInput = {
    pod: p.name,
    slot: 0,
    unit: 'web.0',
    node: 'nas',
    revision: '3',
    leaseEpoch: 4,
    spec: p.spec,
    podDir: '/pods/web.0',
    logDir: '/logs/web.0',
    ...(opts.security === undefined ? {} : { security: opts.security }),
  };
  const runner = new GraphRunner(buildStepGraph(steps), {
    clock: systemClock,
    pod: { pod: 'web', node: 'nas', attempt: 1, spec: input },
  });
  const result = await runner.start();
  return { result, runner, state, alloc };
}

test('containers get PORT_* substituted in command and args, their env, limits, and the slot identity', async () => {
  const f = fakeDriver();
  const p = pod(`  restartPolicy: on-failure
  containers:
    - name: app
      command: [python3, -m, http.server, "\${PORT_HTTP}"]
      args: [--bind, "127.0.0.1", "--x=\${PORT_ADMIN}"]
      env: { GREETING: hi }
      ports: [{ name: http }]
      resources: { memory: 64Mi, cpu: 250m }
    - name: side
      command: [sleep, "600"]
      ports: [{ name: admin }]
`);
  const { result, state } = await run(p, f.driver);
  assert.equal(result.reachedGoal, true, JSON.stringify(result.failures));
  assert.deepEqual(state.ports, { http: 30000, admin: 30001 });
  const app = f.started.find((r) => r.container.name === 'app');
  assert.deepEqual(app?.container.command, [
    'python3',
    '-m',
    'http.server',
    '30000',
    '--bind',
    '127.0.0.1',
    '--x=30001',
  ]);
  assert.equal(app?.container.restart, 'on-failure');
  assert.deepEqual(app?.env, { GREETING: 'hi' });
  assert.deepEqual(app?.ports, { http: 30000, admin: 30001 }, 'every container sees every port of its pod');
  assert.deepEqual(app?.limits, { memoryBytes: 64 * 2 ** 20, cpuCores: 0.25 });
  assert.deepEqual(
    [app?.podKey, app?.podName, app?.slot, app?.node, app?.leaseEpoch],
    ['web.0', 'web', 0, 'nas', 4],
  );
  assert.deepEqual(f.started.find((r) => r.container.name === 'side')?.limits, {});
});

test('argv and limits helpers leave unknown references alone and omit absent resources', () => {
  /** `${NAME}` as a pod spec writes it. */
  const ref = (name: string) => `\${${name}}`;
  const c = {
    name: 'a',
    command: ['x', `${ref('PORT_HTTP')}${ref('PORT_HTTP')}`, '$PORT_HTTP', ref('HOME')],
  };
  assert.deepEqual(containerArgv(c, { http: 1 }), ['x', '11', '$PORT_HTTP', ref('HOME')]);
  assert.deepEqual(containerArgv({ ...c, args: [ref('PORT_WEB_UI')] }, { 'web-ui': 7 }).at(-1), '7');
  assert.deepEqual(containerLimits({ name: 'a', command: ['x'], resources: { cpu: 2 } }), { cpuCores: 2 });
});

test('a container that fails to start fails process.start; the started one is stopped with the pod', async () => {
  const f = fakeDriver({
    fail: {
      bad: new ProcessStartError('E_PROCESS_START', 'exec: python4: not found', {
        hint: 'use a command installed under /usr.',
      }),
    },
  });
  const p = pod(`  containers:
    - name: good
      command: [sleep, "600"]
    - name: bad
      command: [python4]
`);
  const { result, runner } = await run(p, f.driver);
  assert.equal(result.reachedGoal, false);
  const failure = result.failures.find((x) => x.step === 'process.start');
  assert.equal(
    failure?.error,
    'container bad: exec: python4: not found — use a command installed under /usr.',
  );
  await runner.stop();
  assert.deepEqual(f.stopped, ['good']);
});

test('a missing sandbox fails sandbox.prepare with the install hint and starts nothing', async () => {
  const f = fakeDriver({ noBwrap: true });
  const { result } = await run(sleeper('1'), f.driver);
  assert.equal(result.states['sandbox.prepare'], 'failed');
  assert.equal(result.states['process.start'], 'dependency-failed');
  assert.match(
    result.failures[0]?.error ?? '',
    /not installed at \/usr\/bin\/bwrap — Install bubblewrap: `apt-get install bubblewrap`/,
  );
  assert.equal(f.started.length, 0);
});

test('health.check retries a tcp probe until the server listens', async (t) => {
  const alloc = new PortAllocator({ clock: systemClock, range: { min: 38100, max: 38199 } });
  // The server comes up only after the third probe round has looked at the container.
  const srv = createServer((sock) => sock.destroy());
  t.after(() => srv.close());
  let rounds = 0;
  const f = fakeDriver({
    status: () => {
      rounds++;
      const port = alloc.held()['web.0']?.[0];
      if (rounds === 3 && port !== undefined) srv.listen(port, '127.0.0.1');
      return statusOf();
    },
  });
  const p = sleeper('600', 'ports: [{ name: http }]', 'health: { tcp: { port: http } }');
  const { result } = await run(p, f.driver, { alloc });
  assert.equal(result.reachedGoal, true, JSON.stringify(result.failures));
  assert.ok(rounds >= 3);
  assert.equal(srv.listening, true);
});

test('an exec probe runs through the driver beside the container until it exits 0', async () => {
  const f = fakeDriver();
  const calls: (readonly string[])[] = [];
  f.driver.exec = async (_h, command) => {
    calls.push(command);
    return calls.length < 3
      ? { exitCode: 1, signal: null, timedOut: false, output: 'not ready' }
      : { exitCode: 0, signal: null, timedOut: false, output: '' };
  };
  const p = sleeper('600', 'health: { exec: { command: [cat, /work/ready] } }');
  const { result } = await run(p, f.driver);
  assert.equal(result.reachedGoal, true, JSON.stringify(result.failures));
  assert.deepEqual(calls, [
    ['cat', '/work/ready'],
    ['cat', '/work/ready'],
    ['cat', '/work/ready'],
  ]);
  const { exec: _exec, ...noExec } = f.driver;
  const without = await run(p, noExec, { healthTimeoutMs: 30_000 });
  assert.equal(
    without.result.failures.find((x) => x.step === 'health.check')?.error,
    'container app: this runtime driver cannot run exec probes; use a tcp or http probe',
  );
});

test('health.check gives up at its timeout with the last probe error, and at once when the container exits', async () => {
  const p = sleeper('600', 'ports: [{ name: http }]', 'health: { http: { port: http, path: /ready } }');
  const alloc = new PortAllocator({ clock: systemClock, range: { min: 38200, max: 38299 } });
  const slow = await run(p, fakeDriver().driver, { healthTimeoutMs: 600, alloc });
  const err = slow.result.failures.find((x) => x.step === 'health.check')?.error ?? '';
  assert.match(
    err,
    /^container app not healthy after 0\.[67] s: http:\/\/127\.0\.0\.1:382\d\d\/ready: connection refused \(\d+ probes\)$/,
  );

  const began = Date.now();
  const exited = await run(
    p,
    fakeDriver({
      status: () =>
        statusOf({ running: false, state: 'exited', exitCode: 1, lastError: 'exited with code 1' }),
    }).driver,
    { healthTimeoutMs: 30_000, alloc },
  );
  assert.ok(Date.now() - began < 5000);
  assert.equal(
    exited.result.failures.find((x) => x.step === 'health.check')?.error,
    'container app is not running (exited: exited with code 1) while waiting for its health probe',
  );
});

test('a restore run adopts the recorded containers and ports, or says which container is gone', async () => {
  const p = sleeper('600', 'ports: [{ name: http }]');
  const restore = (stateFiles: Record<string, string>, complete = true): RestoreInput => ({
    ports: { http: 30555 },
    stateFiles,
    outputs: { 'sandbox.prepare': { bwrap: 'x' } },
    complete,
  });
  const ok = fakeDriver();
  const good = await run(p, ok.driver, {
    state: newRunState({}, { restore: restore({ app: 'app/run/state.json' }) }),
  });
  assert.equal(good.result.reachedGoal, true);
  assert.deepEqual(good.state.ports, { http: 30555 });
  assert.deepEqual(good.alloc.held(), { 'web.0': [30555] });
  assert.equal(ok.started.length, 0, 'nothing is started on a restore');
  assert.deepEqual(ok.adopted, ['app/run/state.json']);

  const gone = await run(p, fakeDriver().driver, {
    state: newRunState({}, { restore: restore({ app: 'gone/state.json' }) }),
  });
  assert.match(
    gone.result.failures.find((x) => x.step === 'process.start')?.error ?? '',
    /^container app no longer runs/,
  );
  const half = await run(p, fakeDriver().driver, {
    state: newRunState({}, { restore: restore({ app: 'app/run/state.json' }, false) }),
  });
  assert.match(half.result.failures[0]?.error ?? '', /daemon stopped while the pod was starting/);
});

test('security.grant: nothing asked starts the default sandbox, with no security in the start request', async () => {
  const f = fakeDriver();
  const { result } = await run(sleeper('1'), f.driver);
  assert.equal(result.reachedGoal, true);
  assert.equal(result.states['security.grant'], 'done');
  assert.equal('security' in (f.started[0] ?? {}), false, 'the default launch is unchanged');
});

test('security.grant: a refusal fails the step before anything starts, with the message and both ways out', async () => {
  const f = fakeDriver();
  const p = pod(
    `  security: { hostPaths: [{ path: /srv/data }] }\n  containers:\n    - name: app\n      command: [sleep, "1"]\n`,
  );
  const security = decideSecurity(p.spec.security, {
    policy: {},
    file: '/etc/meshd/policy.yaml',
    exists: true,
  });
  const { result } = await run(p, f.driver, { security });
  assert.equal(result.states['security.grant'], 'failed');
  assert.equal(result.states['process.start'], 'dependency-failed');
  assert.equal(f.started.length, 0, 'nothing started');
  assert.equal(
    result.failures.find((x) => x.step === 'security.grant')?.error,
    "pod asks for hostPath /srv/data (read-write) but this node's policy (/etc/meshd/policy.yaml) does not allow it; the node operator can add `hostPaths: [{ path: /srv/data }]` to it — Either the node operator allows it in /etc/meshd/policy.yaml and restarts meshd (or sends it SIGHUP), or the pod stops asking for it in spec.security.",
  );
});

test('security.grant: what is granted reaches the driver, checked against the host', async () => {
  const f = fakeDriver();
  const p = pod(
    `  security: { devices: [/dev/null], capabilities: [NET_BIND_SERVICE], hostPaths: [{ path: /usr/share, readOnly: true }] }\n  containers:\n    - name: app\n      command: [sleep, "1"]\n`,
  );
  const security = decideSecurity(p.spec.security, {
    policy: { devices: ['/dev/null'], capabilities: ['CAP_NET_BIND_SERVICE'], hostPaths: [{ path: '/usr' }] },
    file: '/etc/meshd/policy.yaml',
    exists: true,
  });
  const { result } = await run(p, f.driver, { security });
  assert.equal(result.reachedGoal, true, JSON.stringify(result.failures));
  assert.deepEqual(f.started[0]?.security, {
    hostPaths: [{ path: '/usr/share', source: '/usr/share', readOnly: true }],
    devices: ['/dev/null'],
    capabilities: ['CAP_NET_BIND_SERVICE'],
  });

  const missing = pod(
    `  security: { devices: [/dev/nope] }\n  containers:\n    - name: app\n      command: [sleep, "1"]\n`,
  );
  const g = fakeDriver();
  const { result: failed } = await run(missing, g.driver, {
    security: decideSecurity(missing.spec.security, {
      policy: { devices: ['/dev/nope'] },
      file: '/p.yaml',
      exists: true,
    }),
  });
  assert.equal(failed.states['security.grant'], 'failed');
  assert.match(
    failed.failures[0]?.error ?? '',
    /device \/dev\/nope does not exist on this node — Load the driver/,
  );
  assert.equal(g.started.length, 0);
});
