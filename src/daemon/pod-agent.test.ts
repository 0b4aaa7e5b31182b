// End-to-end tests of the pod agent: real bubblewrap sandboxes, supervisors and ports, a real signed document.

import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, type TestContext, test } from 'node:test';
import { createPodWorld, NODE, type PodWorld, podTestRoot } from '../../test/support/pod-world.ts';
import { waitFor } from '../../test/support/wait-for.ts';
import { execHookStep } from '../lifecycle/plugin-steps.ts';
import type { ContainerStatus } from '../runtime/driver.ts';
import { status as mockStatus } from '../runtime/mock/mock-driver.ts';
import { isSameProcess, readProcStat } from '../runtime/process/proc-stat.ts';
import { systemClock } from '../shared/clock.ts';
import { parsePodSpec, podStatusKey } from '../state/pod-spec.ts';
import { emptyNodePolicy, type LoadedNodePolicy, loadNodePolicy } from './node-policy-file.ts';
import { explainPinned, pinnedSlots, runtimeSpecHash, slotHealth } from './pod-agent.ts';
import { DEFAULT_PORT_RANGE } from './port-allocator.ts';

const root = podTestRoot('meshd-agent-');
after(() => rmSync(root, { recursive: true, force: true }));

async function world(t: TestContext, driver = {}): Promise<PodWorld> {
  const w = await createPodWorld({ root, driver });
  t.after(() => w.close());
  return w;
}

const webSpec = (extraArgs = '') => `kind: Pod
name: web
spec:
  placement: { host: ${NODE} }
  containers:
    - name: app
      command: [python3, -m, http.server, "\${PORT_HTTP}", --bind, 127.0.0.1${extraArgs}]
      env: { GREETING: hi }
      ports: [{ name: http }]
      resources: { memory: 128Mi, cpu: 0.5 }
      health: { http: { port: http, path: / } }
`;

async function httpOk(port: number): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  return res.ok;
}

function running(w: PodWorld, pod: string, slot = 0) {
  const s = w.slot(pod, slot);
  return s?.phase === 'running' && typeof s.pid === 'number' ? s : undefined;
}

/** A pod of one container `app` running `command` (a YAML flow list), pinned to `host` (none if undefined). */
function podYaml(name: string, command: string, host: string | undefined = NODE): string {
  return `kind: Pod
name: ${name}
spec:
${host === undefined ? '' : `  placement: { host: ${host} }\n`}  containers:
    - name: app
      command: ${command}
`;
}

/** Waits until slot 0 of `pod` reports phase failed, and returns its status. */
function failedSlot(w: PodWorld, pod: string, what = 'slot 0 failed', timeoutMs = 20_000) {
  return waitFor(() => (w.slot(pod)?.phase === 'failed' ? w.slot(pod) : undefined), { timeoutMs, what });
}

/** Waits until slot 0 of `pod` runs again in a process other than `oldPid`, and returns its status. */
function runningAgain(w: PodWorld, pod: string, oldPid: unknown, what: string) {
  return waitFor(
    () => {
      const s = running(w, pod);
      return s !== undefined && s.pid !== oldPid ? s : undefined;
    },
    { timeoutMs: 20_000, what },
  );
}

/** Whether `pid` is still the process it was (not gone, not reused). */
async function stillRuns(pid: number): Promise<boolean> {
  return isSameProcess(pid, (await readProcStat(pid))?.startTime ?? -1);
}

/** Records of the pod and of its status object: a re-adoption must add to neither. */
function historyLength(w: PodWorld, pod: string): number {
  return (
    (w.store.get(`pod/${pod}`)?.history.length ?? 0) + (w.store.get(podStatusKey(pod))?.history.length ?? 0)
  );
}

/** A running container's status (as the mock runtime reports one) with pid 10, changed by `over`. */
const cs = (over: Partial<ContainerStatus>): ContainerStatus => ({ ...mockStatus(true), pid: 10, ...over });

test('slot health: crash loops keep running with the error, dead supervisors are lost, finished pods stop', () => {
  assert.deepEqual(slotHealth('always', [['a', cs({})]]), {
    phase: 'running',
    lastError: undefined,
    lost: false,
  });
  assert.deepEqual(
    slotHealth('always', [
      ['a', cs({ state: 'backoff', running: false, restarts: 3, lastError: 'exited with code 3' })],
    ]),
    { phase: 'running', lastError: 'container a: exited with code 3', lost: false },
  );
  const dead = cs({
    state: 'running',
    running: false,
    supervisorAlive: false,
    lastError: 'supervisor pid 7 died',
  });
  assert.deepEqual(slotHealth('always', [['a', dead]]), {
    phase: 'failed',
    lastError: 'container a: supervisor pid 7 died',
    lost: true,
  });
  assert.equal(slotHealth('never', [['a', dead]]).lost, false, 'never: nothing restarts it');
  const done = cs({ state: 'exited', running: false, supervisorAlive: false, exitCode: 0 });
  assert.deepEqual(slotHealth('on-failure', [['a', done]]), {
    phase: 'stopped',
    lastError: undefined,
    lost: false,
  });
  assert.equal(
    slotHealth('on-failure', [
      ['a', done],
      ['b', cs({})],
    ]).phase,
    'running',
  );
  const crashed = cs({
    state: 'exited',
    running: false,
    supervisorAlive: false,
    exitCode: 2,
    lastError: 'exited with code 2',
  });
  assert.deepEqual(slotHealth('never', [['a', crashed]]), {
    phase: 'failed',
    lastError: 'container a: exited with code 2',
    lost: false,
  });
});

test('pinned placement: slots of pods pinned here, and why the others are not', () => {
  const pod = (host: string | undefined, replicas = 1) =>
    parsePodSpec(
      `kind: Pod\nname: p\nspec:\n  replicas: ${replicas}\n${host === undefined ? '' : `  placement: { host: ${host} }\n`}  containers: [{ name: a, command: [x] }]\n`,
      'p.yaml',
    );
  const objects = (pods: ReturnType<typeof pod>[]) => ({
    list: () =>
      pods.map((p) => ({
        object: {
          kind: 'Pod',
          name: p.name,
          spec: { ...p.spec, containers: { a: { command: ['x'], order: 0 } } },
        },
      })) as never,
  });
  assert.deepEqual(pinnedSlots(objects([pod('Node-A', 2)]), 'node-a'), [
    { pod: 'p', slot: 0, leaseEpoch: 0 },
    { pod: 'p', slot: 1, leaseEpoch: 0 },
  ]);
  assert.deepEqual(pinnedSlots(objects([pod('nas'), pod(undefined)]), 'node-a'), []);
  const nodes = [{ name: 'node-a', reachable: true }];
  assert.equal(explainPinned(pod('node-a'), 'node-a', nodes), undefined);
  assert.equal(
    explainPinned(pod('nas'), 'node-a', nodes),
    'pinned to host nas, which is not a node of this mesh',
  );
  assert.equal(
    explainPinned(pod('nas'), 'node-a', [...nodes, { name: 'nas', reachable: false }]),
    'pinned to host nas, which is unreachable',
  );
  assert.equal(
    explainPinned(pod('nas'), 'node-a', [{ name: 'nas', reachable: true }]),
    'pinned to host nas; that node runs it and answers for it',
  );
  assert.match(explainPinned(pod(undefined), 'node-a', nodes) ?? '', /not pinned to a host/);
});

test('only what a running slot is made of restarts it: not replicas or placement', () => {
  const spec = (extra: string, command = 'x') =>
    parsePodSpec(
      `kind: Pod\nname: p\nspec:\n${extra}  containers: [{ name: a, command: [${command}] }]\n`,
      'p.yaml',
    ).spec;
  const base = runtimeSpecHash(spec(''));
  assert.equal(runtimeSpecHash(spec('  replicas: 3\n  placement: { host: nas }\n')), base);
  assert.notEqual(runtimeSpecHash(spec('', 'y')), base);
  assert.notEqual(runtimeSpecHash(spec('  restartPolicy: never\n')), base);
});

test('a pod pinned here runs sandboxed, answers HTTP, reports its slot, and restarts in place on an edit', async (t) => {
  const w = await world(t);
  const created = w.apply(webSpec());
  const agent = w.agent();
  await agent.start();

  const slot = await waitFor(() => running(w, 'web'), { timeoutMs: 20_000, what: 'slot 0 running' });
  const port = (slot.ports as Record<string, number>).http as number;
  const pid = slot.pid as number;
  assert.equal(slot.node, NODE);
  assert.equal(slot.runningRevision, String(created?.lamport));
  assert.equal(slot.restarts, 0);
  assert.equal(slot.lastError, undefined);
  assert.ok(
    port >= DEFAULT_PORT_RANGE.min && port <= DEFAULT_PORT_RANGE.max,
    `port ${port} in the node range`,
  );
  assert.equal(await httpOk(port), true);
  // Every status record is the runtime's, signed by this node.
  const system = w.store.get(podStatusKey('web'))?.history ?? [];
  assert.ok(system.length >= 1);
  // Status lives apart from the spec: the pod's own history holds the user's revisions only.
  assert.deepEqual(
    w.store.get('pod/web')?.history.map((h) => h.controller),
    ['user'],
  );
  for (const h of system)
    assert.deepEqual([h.kind, h.author.actor, h.author.host], ['system', 'runtime', NODE]);

  // The process as the host sees it: uid 65534, no capabilities, in a pid namespace of its own.
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  if (process.getuid?.() === 0) assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
  assert.match(status, /^CapEff:\s+0000000000000000$/m);
  assert.match(status, /^NSpid:\s+\d+\s+2$/m, 'pid 2 inside its own pid namespace');
  assert.notEqual(readlinkSync(`/proc/${pid}/ns/pid`), readlinkSync('/proc/self/ns/pid'));
  const env = new Map(
    readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .filter((l) => l !== '')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
  );
  assert.equal(env.get('MESHD_POD'), 'web');
  assert.equal(env.get('MESHD_NODE'), NODE);
  assert.equal(env.get('MESHD_LEASE_EPOCH'), '0');
  assert.equal(env.get('PORT_HTTP'), String(port));
  assert.equal(env.get('GREETING'), 'hi');

  const local = agent.describeLocal('web');
  assert.equal(local?.slots[0]?.containers[0]?.pid, pid);
  assert.deepEqual(local?.slots[0]?.ports, { http: port });
  const why = agent.why('web');
  assert.match(why?.summary ?? '', /^pod web\.0: running \(running\.target reached in .+, attempt 1\)$/);
  assert.equal(why?.placement, undefined);
  assert.equal(
    why?.slots[0]?.snapshot?.steps.find((s) => s.name === 'health.check')?.state,
    'done',
    'the HTTP probe passed before the pod counted as running',
  );
  const lines: string[] = [];
  for await (const l of agent.logs('web', { stream: 'stderr', tail: 20 })) lines.push(l);
  assert.ok(
    lines.some((l) => l.includes('"GET / HTTP/1.1" 200')),
    lines.join('\n'),
  );

  // An edit of the command: the same node restarts the slot, keeps its port, reports the new revision.
  const edited = w.apply(webSpec(', --directory, /tmp'));
  assert.ok(edited !== undefined);
  const after = await waitFor(
    () => {
      const s = running(w, 'web');
      return s?.runningRevision === String(edited.lamport) && s.pid !== pid ? s : undefined;
    },
    { timeoutMs: 20_000, what: 'the edited revision to run' },
  );
  assert.deepEqual(after.ports, { http: port }, 'the port survives an in-place restart');
  assert.equal(after.restarts, 0);
  assert.equal(await httpOk(port), true);
  assert.equal((await readProcStat(pid))?.comm === 'python3', false, 'the old process is gone');
  assert.match(readFileSync(`/proc/${after.pid}/cmdline`, 'utf8'), /--directory\0\/tmp/);
  const whyAfter = agent.why('web');
  assert.equal(whyAfter?.slots[0]?.snapshot?.attempt, 2);
  assert.equal(whyAfter?.slots[0]?.snapshot?.previousRuns[0]?.status, 'stopped');

  // Replicas change nothing for slot 0, but its revision label follows the spec.
  const scaled = w.apply(webSpec(', --directory, /tmp').replace('spec:\n', 'spec:\n  replicas: 2\n'));
  assert.ok(scaled !== undefined);
  const two = await waitFor(() => running(w, 'web', 1), { timeoutMs: 20_000, what: 'slot 1 running' });
  assert.notEqual((two.ports as Record<string, number>).http, port, 'each slot gets its own port');
  await waitFor(() => running(w, 'web')?.runningRevision === String(scaled.lamport), {
    what: 'slot 0 to report the new revision',
  });
  assert.equal(running(w, 'web')?.pid, after.pid, 'slot 0 did not restart for a replicas change');
  // Back to one replica: slot 1 stops and its entry leaves the status.
  w.apply(webSpec(', --directory, /tmp'));
  await waitFor(() => w.slot('web', 1) === undefined, { timeoutMs: 20_000, what: 'slot 1 to be removed' });
  assert.equal(await stillRuns(two.pid as number), false);
  assert.equal(running(w, 'web')?.pid, after.pid);

  // Delete: every slot stops, nothing of it is left running.
  w.store.delete('pod/web', { peer: w.signer.peer, host: NODE, actor: 'tester' });
  await waitFor(async () => !(await stillRuns(after.pid as number)), {
    timeoutMs: 20_000,
    what: 'the deleted pod to stop',
  });
  await agent.check();
  assert.equal(agent.describeLocal('web'), undefined);
  assert.equal(agent.why('web'), undefined);
});

test('a bad command fails process.start with the reason in why, and nothing runs', async (t) => {
  const w = await world(t);
  w.apply(podYaml('bad', '[python4, -c, "print(1)"]'));
  const agent = w.agent();
  await agent.start();
  const slot = await failedSlot(w, 'bad');
  assert.match(String(slot.lastError), /^process\.start: container app: exec: python4: not found/);
  assert.equal(slot.runningRevision, undefined);
  assert.equal(slot.pid, undefined);
  await agent.check();
  const why = agent.why('bad');
  const snap = why?.slots[0]?.snapshot;
  const step = snap?.steps.find((s) => s.name === 'process.start');
  assert.equal(step?.outcome, 'failed');
  assert.match(step?.error ?? '', /exec: python4: not found/);
  assert.equal(snap?.steps.find((s) => s.name === 'running.target')?.outcome, 'dependency-failed');
  assert.match(
    why?.summary ?? '',
    /last start stuck at process\.start \(failed: container app: exec: python4: not found/,
  );
  assert.match(why?.summary ?? '', /next attempt in \d+ s/);
  assert.equal(agent.describeLocal('bad')?.slots[0]?.containers.length, 0, 'nothing is left running');
});

test('a plugin hook that sleeps past its timeout shows timed-out, and its process is killed', async (t) => {
  const w = await world(t);
  const marker = join(w.dir, 'hook-ran');
  const hook = execHookStep(
    {
      name: 'slow.hook',
      exec: ['sh', '-c', `echo $$ > ${marker}; exec sleep 30`],
      timeout: '300ms',
      after: ['sandbox.target'],
      requiredBy: ['running.target'],
    },
    'lifecycle.hooks[0]',
    { clock: systemClock, killGraceMs: 500 },
  );
  w.apply(podYaml('hooked', '[sleep, "600"]'));
  const agent = w.agent({ pluginSteps: [hook] });
  await agent.start();
  const slot = await failedSlot(w, 'hooked');
  assert.equal(slot.lastError, 'slow.hook timed-out: timed out after 300 ms');
  const snap = agent.why('hooked')?.slots[0]?.snapshot;
  const step = snap?.steps.find((s) => s.name === 'slow.hook');
  assert.equal(step?.outcome, 'timed-out');
  assert.equal(step?.source, 'node config lifecycle.hooks[0]');
  assert.equal(snap?.steps.find((s) => s.name === 'process.start')?.outcome, 'done');
  assert.equal(snap?.status, 'stopped', 'what had started was stopped again');
  const hookPid = Number(readFileSync(marker, 'utf8'));
  await waitFor(() => !existsSync(`/proc/${hookPid}`), { timeoutMs: 5000, what: 'the hook to be killed' });
});

test('a new agent over the same data dir re-adopts: same pid, no restart, no new status record', async (t) => {
  const w = await world(t);
  w.apply(webSpec());
  const first = w.agent();
  await first.start();
  const slot = await waitFor(() => running(w, 'web'), { timeoutMs: 20_000, what: 'slot 0 running' });
  await first.check();
  // The daemon goes away without stopping anything (as after kill -9: pods outlive it).
  await first.stop();
  const records = historyLength(w, 'web');

  const second = w.agent();
  await second.start();
  await waitFor(() => second.describeLocal('web')?.slots[0]?.phase === 'running', {
    timeoutMs: 10_000,
    what: 'the slot to be taken over',
  });
  await second.check();
  await second.check();
  const view = second.describeLocal('web')?.slots[0];
  assert.equal(view?.adopted, true);
  assert.equal(view?.containers[0]?.pid, slot.pid, 'the same process');
  assert.equal(view?.restarts, 0);
  assert.deepEqual(view?.ports, slot.ports);
  assert.equal(historyLength(w, 'web'), records, 'nothing changed, so nothing was written');
  assert.equal(await httpOk((slot.ports as Record<string, number>).http as number), true);
  assert.match(second.why('web')?.summary ?? '', /taken over from the previous daemon/);

  // The taken-over slot is managed as if this agent had started it: an edit restarts it in place.
  const edited = w.apply(webSpec(', --directory, /tmp'));
  await waitFor(() => running(w, 'web')?.runningRevision === String(edited?.lamport), {
    timeoutMs: 20_000,
    what: 'the edit to run',
  });
  assert.equal(await stillRuns(slot.pid as number), false);
});

test('a new lease epoch for a slot it runs restarts it, so the pod holds the current fencing token', async (t) => {
  const w = await world(t);
  w.apply(podYaml('fenced', '[sleep, "3600"]', undefined));
  let desired = [{ pod: 'fenced', slot: 0, leaseEpoch: 1 }];
  const agent = w.agent({ desiredSlots: () => desired });
  await agent.start();
  const epochOf = (pid: number) =>
    /(?:^|\0)MESHD_LEASE_EPOCH=(\d+)/.exec(readFileSync(`/proc/${pid}/environ`, 'utf8'))?.[1];
  const first = await waitFor(() => running(w, 'fenced'), { timeoutMs: 20_000, what: 'slot 0 running' });
  assert.equal(epochOf(first.pid as number), '1');
  // This node claimed the slot again (say, after a heal settled a concurrent claim): epoch 3 now.
  desired = [{ pod: 'fenced', slot: 0, leaseEpoch: 3 }];
  const second = await runningAgain(w, 'fenced', first.pid, 'the slot to restart');
  assert.equal(epochOf(second.pid as number), '3');
  assert.equal(agent.describeLocal('fenced')?.slots[0]?.leaseEpoch, 3);
});

test('a slot claimed for this node starts at once, not at the next poll', async (t) => {
  const w = await world(t);
  w.apply(podYaml('claimed', '[sleep, "3600"]', undefined));
  let desired: { pod: string; slot: number; leaseEpoch: number }[] = [];
  const listeners = new Set<() => void>();
  // the poll is an hour away: only the desired-change notice can start the slot in time
  const agent = w.agent({
    desiredSlots: () => desired,
    onDesiredChange: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    tuning: { pollMs: 3_600_000 },
  });
  await agent.start();
  assert.equal(running(w, 'claimed'), undefined);
  const claimedAt = Date.now();
  desired = [{ pod: 'claimed', slot: 0, leaseEpoch: 1 }];
  for (const l of listeners) l();
  await waitFor(() => running(w, 'claimed'), { timeoutMs: 20_000, what: 'the claimed slot running' });
  t.diagnostic(`running ${Date.now() - claimedAt} ms after the claim`);
  await agent.stop();
  assert.equal(listeners.size, 0, 'stop unsubscribes');
});

test('after a host reboot (supervisors gone), a cold agent starts its pods again from local state', async (t) => {
  const w = await world(t);
  w.apply(webSpec());
  const first = w.agent();
  await first.start();
  const slot = await waitFor(() => running(w, 'web'), { timeoutMs: 20_000, what: 'slot 0 running' });
  await first.stop();
  await (await import('../../test/support/pod-world.ts')).killSupervisorsUnder(w.dir);

  const second = w.agent({ meshNodes: () => [] }); // no peers known yet: local state is all it has
  await second.start();
  const again = await runningAgain(w, 'web', slot.pid, 'the pod to run again');
  assert.deepEqual(again.ports, slot.ports, 'the port is kept');
  const snap = second.why('web')?.slots[0]?.snapshot;
  assert.match(snap?.previousRuns[0]?.blocker?.error ?? '', /no longer runs \(supervisor gone/);
});

test('a pod whose supervisor is killed is found lost, reported, and started again', async (t) => {
  const w = await world(t);
  w.apply(webSpec());
  const agent = w.agent({ tuning: { retryInitialMs: 300 } });
  await agent.start();
  const slot = await waitFor(() => running(w, 'web'), { timeoutMs: 20_000, what: 'slot 0 running' });
  const supervisor = agent.describeLocal('web')?.slots[0]?.containers[0]?.supervisorPid as number;
  process.kill(supervisor, 'SIGKILL');
  const lost = await failedSlot(w, 'web', 'the slot to be reported failed', 10_000);
  assert.match(
    String(lost.lastError),
    /^container app: supervisor pid \d+ died while the container was running$/,
  );
  const again = await runningAgain(w, 'web', slot.pid, 'the pod to run again');
  assert.deepEqual(again.ports, slot.ports);
  assert.equal(again.lastError, undefined);
  const snap = agent.why('web')?.slots[0]?.snapshot;
  assert.equal(snap?.attempt, 2);
});

test('a pod whose port another program took while it restarted moves to a free port', async (t) => {
  // A second backoff long enough for the test to take the port before the restart.
  const w = await world(t, { backoff: { initialMs: 1500, maxMs: 1500 } });
  w.apply(webSpec());
  const agent = w.agent();
  await agent.start();
  const slot = await waitFor(() => running(w, 'web'), { timeoutMs: 20_000, what: 'slot 0 running' });
  const port = (slot.ports as Record<string, number>).http as number;
  process.kill(slot.pid as number, 'SIGKILL');
  const squatter = createServer((_req, res) => res.end('not the pod'));
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        squatter.once('error', () => resolve(false));
        squatter.listen(port, '127.0.0.1', () => resolve(true));
      }),
    { timeoutMs: 5000, what: `port ${port} free for the squatter` },
  );
  t.after(() => squatter.close());
  const moved = await waitFor(
    () => {
      const s = running(w, 'web');
      const p = (s?.ports as Record<string, number> | undefined)?.http;
      return s !== undefined && p !== undefined && p !== port ? s : undefined;
    },
    { timeoutMs: 20_000, what: 'the pod running on another port' },
  );
  const next = (moved.ports as Record<string, number>).http as number;
  assert.equal(await httpOk(next), true);
  assert.equal(await stillRuns(moved.pid as number), true);
  // why says what happened to the run that lost its port.
  const earlier = agent.why('web')?.slots[0]?.snapshot?.previousRuns[0];
  assert.match(earlier?.stopReason ?? '', new RegExp(`port ${port} taken by another program`));
});

test('a crash loop shows in status (restarts, lastError) and in why', async (t) => {
  const w = await world(t);
  w.apply(podYaml('crash', '[sh, -c, "echo boom >&2; sleep 0.2; exit 3"]'));
  const agent = w.agent();
  await agent.start();
  const slot = await waitFor(
    () => {
      const s = w.slot('crash');
      return typeof s?.restarts === 'number' && s.restarts >= 2 ? s : undefined;
    },
    { timeoutMs: 20_000, what: 'two restarts in the status' },
  );
  assert.equal(slot.lastError, 'container app: exited with code 3');
  assert.match(
    agent.why('crash')?.summary ?? '',
    /container app restarted \d+ times? \(last: exited with code 3\)/,
  );
});

test('without bubblewrap the pod fails at sandbox.prepare with the install hint, and nothing runs', async (t) => {
  const w = await world(t, { bwrapPath: join(root, 'no-such-bwrap') });
  w.apply(podYaml('nobwrap', '[sleep, "600"]'));
  const agent = w.agent();
  await agent.start();
  const slot = await failedSlot(w, 'nobwrap');
  assert.match(
    String(slot.lastError),
    /^sandbox\.prepare: bubblewrap is not installed at \S+ — Install bubblewrap: `apt-get install bubblewrap`/,
  );
  const steps = agent.why('nobwrap')?.slots[0]?.snapshot?.steps ?? [];
  assert.equal(steps.find((s) => s.name === 'process.start')?.outcome, 'dependency-failed');
  const podDir = join(w.dir, 'agent', 'pods', 'nobwrap.0');
  assert.equal(existsSync(podDir) && readdirSync(podDir).length > 0, false, 'no container was laid out');
});

test('a data dir the sandbox user cannot traverse fails at sandbox.prepare and names the fix', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('only root runs the sandbox as another user (65534)');
    return;
  }
  const w = await world(t);
  chmodSync(w.dir, 0o700); // as a daemon data dir created 0700 would be
  w.apply(podYaml('closed', '[sleep, "600"]'));
  const agent = w.agent();
  await agent.start();
  const slot = await failedSlot(w, 'closed');
  assert.match(
    String(slot.lastError),
    new RegExp(
      `^sandbox\\.prepare: .* is not reachable by the sandbox user: ${w.dir} denies uid 65534 — .*chmod o\\+x ${w.dir}`,
    ),
  );
});

test('a pod pinned elsewhere is not run, and why says where it is pinned', async (t) => {
  const w = await world(t);
  w.apply(podYaml('far', '[sleep, "600"]', 'nas'));
  let nodes = [{ name: NODE, reachable: true }];
  const agent = w.agent({ meshNodes: () => nodes });
  await agent.start();
  await agent.check();
  assert.equal(agent.describeLocal('far'), undefined);
  assert.equal(w.slot('far'), undefined, 'no status written');
  assert.equal(agent.why('far')?.placement, 'pinned to host nas, which is not a node of this mesh');
  assert.match(agent.why('far')?.summary ?? '', /^pod far: not run by node node-a: pinned to host nas/);
  nodes = [...nodes, { name: 'nas', reachable: false }];
  assert.equal(agent.why('far')?.placement, 'pinned to host nas, which is unreachable');
  assert.throws(() => agent.logs('far'), /has no logs of pod far: pinned to host nas/);
  assert.equal(agent.why('ghost'), undefined);
});

test('double opt-in: a host path the node does not allow is refused with the message; once allowed the pod reads it and cannot write it', async (t) => {
  const w = await world(t);
  const data = join(w.dir, 'shared');
  mkdirSync(data, { mode: 0o755 });
  // World-writable on the host: only the read-only mount keeps the pod from writing it.
  writeFileSync(join(data, 'hello.txt'), 'from the host\n', { mode: 0o666 });
  chmodSync(join(data, 'hello.txt'), 0o666);
  w.apply(`kind: Pod
name: reader
spec:
  placement: { host: ${NODE} }
  security:
    hostPaths: [{ path: ${data}, readOnly: true }]
  containers:
    - name: app
      command: [sh, -c, "cat ${data}/hello.txt; echo changed > ${data}/hello.txt 2>/dev/null && echo WRITE=allowed || echo WRITE=denied; exec sleep 600"]
`);
  const policyFile = join(w.dir, 'policy.yaml');
  let policy: LoadedNodePolicy = emptyNodePolicy(policyFile);
  const agent = w.agent({ nodePolicy: () => policy });
  await agent.start();

  const failed = await failedSlot(w, 'reader', 'slot 0 refused');
  const refusal = `pod asks for hostPath ${data} (read-only) but this node's policy (none: ${policyFile} does not exist, so nothing is allowed) does not allow it; the node operator can create ${policyFile} with \`hostPaths: [{ path: ${data}, readOnly: true }]\``;
  assert.ok(String(failed.lastError).startsWith(`security.grant: ${refusal}`), String(failed.lastError));
  const why = agent.why('reader');
  assert.ok(why?.summary.includes(`stuck at security.grant (failed: ${refusal}`), why?.summary);
  assert.ok(
    why?.summary.includes(
      `— Either the node operator allows it in ${policyFile} and restarts meshd (or sends it SIGHUP), or the pod stops asking for it in spec.security.`,
    ),
  );
  const steps = why?.slots[0]?.snapshot?.steps ?? [];
  assert.equal(steps.find((s) => s.name === 'security.grant')?.outcome, 'failed');
  assert.equal(steps.find((s) => s.name === 'process.start')?.outcome, 'dependency-failed');
  const podDir = join(w.dir, 'agent', 'pods', 'reader.0');
  assert.equal(existsSync(podDir) && readdirSync(podDir).length > 0, false, 'no container was laid out');

  // The operator allows it; the agent reads the policy at its next reconcile (what SIGHUP reloads), and
  // the changed grant starts the slot at once rather than after the failed start's backoff.
  writeFileSync(policyFile, `hostPaths:\n  - { path: ${data}, readOnly: true }\n`);
  policy = loadNodePolicy({ dataDir: w.dir });
  await waitFor(() => running(w, 'reader'), { timeoutMs: 20_000, what: 'slot 0 running once allowed' });
  const out = await waitFor(
    async () => {
      const lines: string[] = [];
      for await (const l of agent.logs('reader')) lines.push(l);
      return lines.some((l) => l.startsWith('WRITE=')) ? lines : undefined;
    },
    { timeoutMs: 10_000, what: 'the pod to try writing' },
  );
  assert.deepEqual(out, ['from the host', 'WRITE=denied']);
  assert.equal(readFileSync(join(data, 'hello.txt'), 'utf8'), 'from the host\n');
  assert.equal(
    agent.why('reader')?.slots[0]?.snapshot?.steps.find((s) => s.name === 'security.grant')?.outcome,
    'done',
  );

  // Withdrawn again: the running slot is stopped, and its start refused.
  policy = emptyNodePolicy(policyFile);
  await failedSlot(w, 'reader', 'slot 0 stopped once the grant is withdrawn');
  assert.equal(agent.describeLocal('reader')?.slots[0]?.containers.length ?? 0, 0);
});

test('what a slot runs under includes its grant: the spec hash changes with it, not with its wording', () => {
  const spec = (security: string) =>
    parsePodSpec(
      `kind: Pod\nname: p\nspec:\n${security}  containers: [{ name: a, command: [x] }]\n`,
      'p.yaml',
    ).spec;
  const plain = spec('');
  assert.equal(runtimeSpecHash(plain), runtimeSpecHash(plain, undefined), 'no decision: the hash as before');
  const asks = spec('  security: { hostPaths: [{ path: /srv/data, readOnly: true }] }\n');
  const grantedBy = (prefix: string) =>
    runtimeSpecHash(asks, {
      granted: { hostPaths: [{ path: '/srv/data', readOnly: true, allowedBy: prefix }] },
    });
  const refused = runtimeSpecHash(asks, {
    refused: [{ what: 'hostPath /srv/data (read-only)' }],
    message: 'not allowed',
    hint: 'allow it',
  });
  assert.notEqual(grantedBy('/srv'), refused, 'granted ↔ refused restarts the slot');
  assert.equal(grantedBy('/srv'), grantedBy('/srv/data'), 'another rule granting the same changes nothing');
  assert.notEqual(runtimeSpecHash(asks), grantedBy('/srv'));
});
