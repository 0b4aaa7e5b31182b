// End-to-end tests of the process driver: real bwrap sandboxes, real supervisors, real cgroups.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, type TestContext, test } from 'node:test';
import { type DriverPod, driverPod, killSupervisorsUnder } from '../../../test/support/pod-world.ts';
import { waitFor } from '../../../test/support/wait-for.ts';
import {
  type ContainerHandle,
  type ContainerLimits,
  ProcessStartError,
  type RestartPolicy,
  SandboxUnavailableError,
} from '../driver.ts';
import { isSameProcess, readProcStat } from './proc-stat.ts';
import { ProcessDriver, type ProcessDriverOptions } from './process-driver.ts';
import { readState, writeJsonAtomic } from './supervisor-files.ts';

const root = mkdtempSync(join(tmpdir(), 'meshd-driver-'));
// The sandbox runs as uid 65534 on the host too: it must be able to traverse to its work dir.
chmodSync(root, 0o711);
const cacheDir = join(root, 'compile-cache');

after(async () => {
  await killSupervisorsUnder(root);
  rmSync(root, { recursive: true, force: true });
});

/** A fresh pod directory and driver; everything it starts is stopped and removed after the test. */
const pod = (t: TestContext, opts: ProcessDriverOptions = {}) => driverPod(t, root, opts);

function startIn(
  p: DriverPod,
  name: string,
  command: string[],
  extra: {
    env?: Record<string, string>;
    ports?: Record<string, number>;
    limits?: ContainerLimits;
    restart?: RestartPolicy;
  } = {},
): Promise<ContainerHandle> {
  return p.driver.start({
    podKey: p.podKey,
    podDir: p.podDir,
    logDir: p.logDir,
    container: { name, command, restart: extra.restart ?? 'never' },
    env: extra.env ?? {},
    ports: extra.ports ?? {},
    limits: extra.limits ?? {},
    leaseEpoch: 7,
  });
}

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return addr.port;
}

async function lines(p: DriverPod, path: string, tail?: number): Promise<string[]> {
  const out: string[] = [];
  for await (const l of p.driver.logs(path, tail === undefined ? {} : { tail })) out.push(l);
  return out;
}

async function httpOk(port: number): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  return res.ok;
}

test('a python http.server container answers on 127.0.0.1:PORT and runs with every security default', async (t) => {
  const p = pod(t);
  const port = await freePort();
  const report = [
    `grep -E '^(Uid|Gid|CapPrm|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status`,
    'echo "PID1=$(cat /proc/1/comm) SELF=$$"',
    // Listed from a child so the list is the shell's own (a $(...) would add its pipe).
    'echo FDS-BEGIN; ls /proc/$$/fd; echo FDS-END',
    'touch /usr/meshd-probe 2>/dev/null && echo USR=writable || echo USR=readonly',
    'touch /meshd-probe 2>/dev/null && echo ROOT=writable || echo ROOT=readonly',
    'echo hello > /work/probe && echo WORK=writable',
    'echo "MARKER=[$MESHD_TEST_HOST_MARKER] POD=$MESHD_POD EPOCH=$MESHD_LEASE_EPOCH GREETING=$GREETING"',
    'echo "HOSTPATHS=$(ls -d /home /root /var /opt /srv /etc/shadow /etc/ssh 2>/dev/null | wc -l)"',
    'echo "DEV=$(ls /dev | tr "\\n" " ")"',
    'unshare -U true 2>/dev/null && echo USERNS=allowed || echo USERNS=denied',
    'echo "WHO=$(id -un)"',
    'exec python3 -m http.server "$PORT_HTTP" --bind 127.0.0.1',
  ].join('\n');
  process.env.MESHD_TEST_HOST_MARKER = 'leaked';
  t.after(() => {
    delete process.env.MESHD_TEST_HOST_MARKER;
  });
  const h = await startIn(p, 'web', ['sh', '-c', report], { ports: { http: port }, env: { GREETING: 'hi' } });
  await waitFor(() => httpOk(port), { timeoutMs: 10_000, what: 'http.server to answer' });

  const out = (await lines(p, h.logFiles.stdout)).join('\n');
  assert.match(out, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
  assert.match(out, /^Gid:\s+65534\s+65534\s+65534\s+65534$/m);
  assert.match(out, /^CapEff:\s+0000000000000000$/m);
  assert.match(out, /^CapPrm:\s+0000000000000000$/m);
  assert.match(out, /^CapBnd:\s+0000000000000000$/m);
  assert.match(out, /^NoNewPrivs:\s+1$/m);
  assert.match(out, /^Seccomp:\s+2$/m);
  // Pid namespace: the container is pid 2 under bwrap's init, not the host's pid 1.
  const hostInit = readFileSync('/proc/1/comm', 'utf8').trim();
  assert.match(out, /^PID1=bwrap SELF=2$/m);
  assert.notEqual(hostInit, 'bwrap');
  assert.match(out, /^FDS-BEGIN\n0\n1\n2\nFDS-END$/m, 'no descriptor of the daemon or supervisor leaks in');
  assert.match(out, /^USR=readonly$/m);
  assert.match(out, /^ROOT=readonly$/m);
  assert.match(out, /^WORK=writable$/m);
  assert.match(out, /^MARKER=\[\] POD=\S+ EPOCH=7 GREETING=hi$/m);
  assert.match(out, /^HOSTPATHS=0$/m);
  assert.match(out, /^USERNS=denied$/m);
  assert.match(out, /^WHO=nobody$/m);
  assert.doesNotMatch(out, /DEV=.*\b(sda|vda|mem|kmsg|kvm)\b/);

  // Outside: the container runs as host uid 65534 (when we are root) inside its own cgroups.
  const status = await p.driver.status(h);
  assert.equal(status.running, true);
  assert.equal(status.pid, h.pid);
  if (process.getuid?.() === 0) {
    const hostUid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${h.pid}/status`, 'utf8'))?.[1];
    assert.equal(hostUid, '65534');
    assert.equal(statSync(join(p.podDir, 'web', 'work', 'probe')).uid, 65534);
    if (status.cgroup?.applied.pids !== undefined) {
      assert.match(
        readFileSync(`/proc/${h.pid}/cgroup`, 'utf8'),
        new RegExp(`pids:.*/meshd/${p.podKey}-[0-9a-f]{10}/web$`, 'm'),
      );
    }
  }
  t.diagnostic(`start latency (bwrap spawn -> exec): ${status.startLatencyMs} ms`);

  const stopped = await p.driver.stop(h, 5000);
  assert.equal(stopped.state, 'stopped');
  assert.equal(stopped.signal, 'SIGTERM');
  assert.equal(await isSameProcess(h.pid, h.startTime), false);
});

/** A stand-in daemon: a separate node process that starts a container, prints the handle, then waits. */
function startFakeDaemon(
  p: DriverPod,
  port: number,
): { child: ChildProcess; handle: Promise<ContainerHandle> } {
  const driverUrl = new URL('./process-driver.ts', import.meta.url).href;
  const req = {
    podKey: p.podKey,
    podDir: p.podDir,
    logDir: p.logDir,
    container: {
      name: 'svc',
      command: ['python3', '-m', 'http.server', String(port), '--bind', '127.0.0.1'],
      restart: 'always',
    },
    env: {},
    ports: { http: port },
    limits: { pids: 64 },
    leaseEpoch: 3,
  };
  const script = `
    import { ProcessDriver } from ${JSON.stringify(driverUrl)};
    const d = new ProcessDriver({ compileCacheDir: ${JSON.stringify(cacheDir)} });
    const h = await d.start(${JSON.stringify(req)});
    process.stdout.write(JSON.stringify(h) + '\\n');
    setInterval(() => {}, 60_000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const handle = new Promise<ContainerHandle>((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (c: Buffer) => {
      buf += c.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)) as ContainerHandle);
    });
    child.once('exit', (code) =>
      reject(new Error(`fake daemon exited with ${code} before starting the pod`)),
    );
  });
  return { child, handle };
}

test('the pod outlives a SIGKILLed daemon with the same pid and no restart, and is re-adopted', async (t) => {
  const p = pod(t);
  const port = await freePort();
  const daemon = startFakeDaemon(p, port);
  t.after(() => daemon.child.kill('SIGKILL'));
  const h = await daemon.handle;
  await waitFor(() => httpOk(port), { timeoutMs: 10_000, what: 'the pod to serve' });
  assert.equal(
    (await readProcStat(h.supervisorPid))?.ppid,
    daemon.child.pid,
    'the daemon started the supervisor',
  );

  daemon.child.kill('SIGKILL');
  await once(daemon.child, 'exit');
  await waitFor(async () => (await readProcStat(h.supervisorPid))?.ppid !== daemon.child.pid, {
    timeoutMs: 5000,
    what: 'the supervisor to be re-parented',
  });
  assert.equal(await httpOk(port), true, 'still serving after the daemon died');

  // A restarted daemon: a new driver with no memory of the pod, only its state file.
  const restarted = new ProcessDriver({ compileCacheDir: cacheDir });
  const adopted = await restarted.adopt(h.stateFile);
  assert.ok(adopted !== undefined, 'adopt recognises the running pod');
  assert.equal(adopted.pid, h.pid);
  assert.equal(adopted.startTime, h.startTime);
  assert.equal(adopted.supervisorPid, h.supervisorPid);
  assert.equal(adopted.leaseEpoch, 3);
  const status = await restarted.status(adopted);
  assert.equal(status.running, true);
  assert.equal(status.restarts, 0);
  assert.equal(status.pid, h.pid);

  // The same pids with other start times are other processes (a recycled pid): refused.
  const state = await readState(h.stateFile);
  assert.ok(state !== undefined);
  for (const [i, forged] of [
    { ...state, supervisorStartTime: state.supervisorStartTime + 1 },
    { ...state, containerStartTime: state.containerStartTime + 1 },
  ].entries()) {
    const dir = join(p.podDir, `fake${i}`, 'run');
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(p.podDir, 'svc', 'run', 'launch.json'), join(dir, 'launch.json'));
    writeJsonAtomic(join(dir, 'state.json'), forged);
    assert.equal(await restarted.adopt(join(dir, 'state.json')), undefined, `forged state ${i} refused`);
  }
  writeFileSync(join(p.podDir, 'garbage.json'), '{"version":1,');
  assert.equal(await restarted.adopt(join(p.podDir, 'garbage.json')), undefined);

  const stopped = await restarted.stop(adopted, 5000);
  assert.equal(stopped.state, 'stopped');
  assert.equal(stopped.supervisorAlive, false);
  assert.equal(await isSameProcess(h.pid, h.startTime), false);
});

test('two nodes on one host run the same pod slot: stopping one copy leaves the other running', async (t) => {
  // As in a partition that heals: the losing node stops its copy of `guard.0` while the winner's runs on.
  const one = pod(t);
  const other = { ...pod(t), podKey: one.podKey };
  const a = await startIn(one, 'app', ['sleep', '600'], { limits: { pids: 16 } });
  const b = await startIn(other, 'app', ['sleep', '600'], { limits: { pids: 16 } });
  const dirsOf = async (h: ContainerHandle) => (await readState(h.stateFile))?.cgroup?.dirs ?? [];
  const theirs = new Set(await dirsOf(b));
  const shared = (await dirsOf(a)).filter((d) => theirs.has(d));
  assert.deepEqual(shared, [], 'each copy has cgroups of its own');
  await one.driver.stop(a, 1000);
  assert.equal(await isSameProcess(b.pid, b.startTime), true, "the other node's copy still runs");
  assert.equal((await other.driver.status(b)).running, true);
});

test('a supervisor that dies takes its container with it: nothing runs unsupervised', async (t) => {
  const p = pod(t);
  const h = await startIn(p, 'orphan', ['sleep', '600'], { limits: { pids: 16 } });
  process.kill(h.supervisorPid, 'SIGKILL');
  await waitFor(async () => !(await isSameProcess(h.pid, h.startTime)), {
    timeoutMs: 5000,
    what: 'the container to die with its supervisor',
  });
  const s = await p.driver.status(h);
  assert.equal(s.running, false);
  assert.equal(s.supervisorAlive, false);
  assert.match(s.lastError ?? '', /^supervisor pid \d+ died while the container was running$/);
  const dirs = (await readState(h.stateFile))?.cgroup?.dirs ?? [];
  await p.driver.stop(h, 0);
  for (const dir of dirs) assert.equal(existsSync(dir), false, `stop removes the leftover cgroup ${dir}`);
});

test('restart policy: on-failure restarts with doubling backoff up to the cap; never and clean exits stay down', async (t) => {
  const p = pod(t, { backoff: { initialMs: 100, maxMs: 300, resetAfterMs: 60_000 } });
  const crash = await startIn(p, 'crash', ['sh', '-c', 'date +%s%3N; exit 3'], { restart: 'on-failure' });
  const [never, clean] = await Promise.all([
    startIn(p, 'never', ['sh', '-c', 'exit 3'], { restart: 'never' }),
    startIn(p, 'clean', ['sh', '-c', 'exit 0'], { restart: 'on-failure' }),
  ]);
  await waitFor(async () => (await lines(p, crash.logFiles.stdout)).length >= 5, {
    timeoutMs: 15_000,
    what: '5 runs',
  });
  assert.ok((await p.driver.status(crash)).restarts >= 4);
  await p.driver.stop(crash, 1000);

  const delays = readFileSync(join(p.podDir, 'crash', 'run', 'supervisor.log'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('restarting'))
    .map((l) => (JSON.parse(l) as { inMs: number }).inMs);
  assert.deepEqual(delays.slice(0, 4), [100, 200, 300, 300]);
  const starts = (await lines(p, crash.logFiles.stdout)).map(Number);
  assert.ok(starts.length >= 5);
  for (let i = 1; i < 5; i++) {
    const gap = (starts[i] as number) - (starts[i - 1] as number);
    assert.ok(gap >= (delays[i - 1] as number), `run ${i} came ${gap} ms after the previous one`);
  }

  for (const h of [never, clean]) {
    await waitFor(async () => (await p.driver.status(h)).state === 'exited', {
      timeoutMs: 10_000,
      what: `${h.container} to exit`,
    });
  }
  const n = await p.driver.status(never);
  assert.equal(n.exitCode, 3);
  assert.equal(n.restarts, 0);
  assert.equal(n.lastError, 'exited with code 3');
  const c = await p.driver.status(clean);
  assert.equal(c.exitCode, 0);
  assert.equal(c.restarts, 0);
  assert.equal(c.lastError, undefined);
});

test('log rotation bounds what a chatty container leaves on disk', async (t) => {
  const p = pod(t, { logRotation: { maxBytes: 4096, keep: 3 } });
  const script =
    'i=0; while [ $i -lt 3000 ]; do echo "line $i and some padding"; i=$((i+1)); done; echo DONE';
  const h = await startIn(p, 'chatty', ['sh', '-c', script]);
  await waitFor(async () => (await p.driver.status(h)).state === 'exited', {
    timeoutMs: 10_000,
    what: 'the writer to finish',
  });
  const files = readdirSync(p.logDir).filter((f) => f.startsWith('chatty.stdout.log'));
  assert.deepEqual(files.sort(), ['chatty.stdout.log', 'chatty.stdout.log.1', 'chatty.stdout.log.2']);
  for (const f of files) assert.ok(statSync(join(p.logDir, f)).size <= 4096, f);
  assert.deepEqual(await lines(p, h.logFiles.stdout, 2), ['line 2999 and some padding', 'DONE']);
});

test('a command that does not exist fails start quickly with a clear reason', async (t) => {
  const p = pod(t);
  const began = Date.now();
  const err = await startIn(p, 'bad', ['python4', '-c', 'print(1)'], { restart: 'always' }).catch(
    (e: unknown) => e,
  );
  const tookMs = Date.now() - began;
  assert.ok(err instanceof ProcessStartError, String(err));
  assert.equal(err.message, 'exec: python4: not found');
  assert.equal(err.code, 'E_PROCESS_START');
  assert.ok(tookMs < 5000, `took ${tookMs} ms`);
  const state = await readState(join(p.podDir, 'bad', 'run', 'state.json'));
  assert.equal(state?.state, 'failed');
  assert.equal(state?.lastError, 'exec: python4: not found');
  assert.equal(state?.restarts, 0, 'an exec failure is not retried: the same spec fails the same way');
  await waitFor(async () => !(await isSameProcess(state.supervisorPid, state.supervisorStartTime)), {
    timeoutMs: 5000,
    what: 'the supervisor to exit',
  });
});

test('exec runs a command beside the container in the same sandbox, and kills it at its timeout', async (t) => {
  const p = pod(t);
  const h = await startIn(p, 'probe', ['sh', '-c', 'echo ready > /work/ready; exec sleep 600'], {
    env: { GREETING: 'hi' },
  });
  await waitFor(() => existsSync(join(p.podDir, 'probe', 'work', 'ready')), {
    timeoutMs: 20_000,
    what: 'the container to write /work/ready',
  });
  const ok = await p.driver.exec(
    h,
    ['sh', '-c', 'cat /work/ready; id -u; echo "$GREETING"; grep CapEff /proc/self/status'],
    {
      timeoutMs: 20_000,
    },
  );
  assert.equal(ok.exitCode, 0, ok.output);
  assert.equal(ok.timedOut, false);
  assert.match(ok.output, /^ready\n65534\nhi\nCapEff:\s+0+$/);
  const failed = await p.driver.exec(h, ['sh', '-c', 'echo nope >&2; exit 4'], { timeoutMs: 20_000 });
  assert.deepEqual([failed.exitCode, failed.output], [4, 'nope']);
  const missing = await p.driver.exec(h, ['no-such-probe'], { timeoutMs: 20_000 });
  assert.notEqual(missing.exitCode, 0);
  assert.match(missing.output, /no-such-probe/);

  const began = Date.now();
  const slow = await p.driver.exec(h, ['sh', '-c', 'echo $$ > /work/slow.pid; exec sleep 30'], {
    // long enough for the probe sandbox to start and write its pid on a loaded machine; far below 30 s
    timeoutMs: 2000,
  });
  assert.equal(slow.timedOut, true);
  assert.ok(Date.now() - began < 10_000);
  const slowPid = readFileSync(join(p.podDir, 'probe', 'work', 'slow.pid'), 'utf8').trim();
  assert.equal(slowPid, '2', 'the probe has a pid namespace of its own');
  // Nothing of the probe sandbox is left: no `sleep 30` owned by the sandbox user besides the container's.
  await waitFor(
    () =>
      readdirSync('/proc')
        .filter((d) => /^\d+$/.test(d))
        .every((d) => {
          try {
            return !readFileSync(`/proc/${d}/cmdline`, 'utf8').startsWith('sleep\u000030');
          } catch {
            return true;
          }
        }),
    { timeoutMs: 5000, what: 'the timed-out probe to be killed' },
  );
  assert.equal((await p.driver.status(h)).running, true, 'the container itself is untouched');
});

test('without bubblewrap nothing runs: prepare and start fail and name the package', async (t) => {
  const p = pod(t, { bwrapPath: join(root, 'no-such-bwrap') });
  for (const attempt of [
    () => p.driver.prepare({ podKey: p.podKey, podDir: p.podDir }),
    () => startIn(p, 'x', ['true']),
  ]) {
    const err = await attempt().catch((e: unknown) => e);
    assert.ok(err instanceof SandboxUnavailableError, String(err));
    assert.equal(err.code, 'E_SANDBOX_UNAVAILABLE');
    assert.match(err.hint ?? '', /apt-get install bubblewrap/);
  }
  assert.equal(existsSync(join(p.podDir, 'x', 'run', 'state.json')), false, 'no supervisor was started');
});

test('a fork bomb stops at the pids limit and the host carries on', async (t) => {
  const p = pod(t);
  const report = await p.driver.prepare({ podKey: p.podKey, podDir: p.podDir });
  if (process.getuid?.() !== 0 || report.cgroup.controllers.pids?.startsWith('missing') !== false) {
    t.skip(`needs root and a pids controller (${report.cgroup.controllers.pids})`);
    return;
  }
  // Bounded: 400 forks, each child sleeps; the parent counts what the kernel refused, then stays up.
  const bomb = [
    'import os, time',
    'kids = errs = 0',
    'for _ in range(400):',
    '    try:',
    '        if os.fork() == 0:',
    '            time.sleep(600)',
    '            os._exit(0)',
    '        kids += 1',
    '    except OSError:',
    '        errs += 1',
    'print(f"kids={kids} refused={errs}", flush=True)',
    'time.sleep(600)',
  ].join('\n');
  const h = await startIn(p, 'bomb', ['python3', '-c', bomb], { limits: { pids: 40 } });
  const summary = await waitFor(
    async () => (await lines(p, h.logFiles.stdout)).find((l) => l.startsWith('kids=')),
    {
      timeoutMs: 15_000,
      what: 'the fork loop to finish',
    },
  );
  const [kids, refused] = (/^kids=(\d+) refused=(\d+)$/.exec(summary) ?? []).slice(1).map(Number);
  assert.ok((kids ?? 400) < 40, summary);
  assert.ok((refused ?? 0) > 360, summary);
  const state = await readState(h.stateFile);
  const pidsDir = state?.cgroup?.dirs.find((d) => d.includes('/pids/'));
  assert.ok(pidsDir !== undefined);
  const current = Number(readFileSync(join(pidsDir, 'pids.current'), 'utf8'));
  assert.ok(current <= 40, `pids.current ${current}`);
  if (existsSync(join(pidsDir, 'pids.peak'))) {
    const peak = Number(readFileSync(join(pidsDir, 'pids.peak'), 'utf8'));
    assert.ok(peak <= 40, `pids.peak ${peak}`);
    t.diagnostic(`fork bomb: ${summary}, pids.peak ${peak} of 40`);
  }
  assert.equal(spawnSync('true').status, 0, 'the host can still fork');
  const stopped = await p.driver.stop(h, 1000);
  assert.equal(stopped.running, false);
  assert.equal(existsSync(pidsDir), false, 'the cgroup is removed on stop');
});

test('a container over its memory limit is OOM-killed and says so', async (t) => {
  const p = pod(t);
  const report = await p.driver.prepare({ podKey: p.podKey, podDir: p.podDir });
  if (process.getuid?.() !== 0 || report.cgroup.controllers.memory?.startsWith('missing') !== false) {
    t.skip(`needs root and a memory controller (${report.cgroup.controllers.memory})`);
    return;
  }
  const h = await startIn(p, 'hog', ['python3', '-c', 'b = b"x" * (512 << 20); print(len(b))'], {
    limits: { memoryBytes: 64 << 20 },
  });
  await waitFor(async () => (await p.driver.status(h)).state === 'exited', {
    timeoutMs: 15_000,
    what: 'the hog to die',
  });
  const s = await p.driver.status(h);
  assert.equal(s.signal, 'SIGKILL');
  assert.match(s.lastError ?? '', /^out of memory: killed at the memory limit of 67108864 bytes$/);
});

test('stop sends TERM, then KILL once the grace period ends', async (t) => {
  const p = pod(t);
  const h = await startIn(p, 'stubborn', [
    'sh',
    '-c',
    'trap "" TERM; echo ready; while :; do sleep 0.2; done',
  ]);
  await waitFor(async () => (await lines(p, h.logFiles.stdout)).includes('ready'), {
    timeoutMs: 5000,
    what: 'ready',
  });
  const began = Date.now();
  const s = await p.driver.stop(h, 400);
  const took = Date.now() - began;
  assert.ok(took >= 400, `stopped after ${took} ms, before the grace period ended`);
  assert.ok(took < 5000, `stopped after ${took} ms`);
  assert.equal(s.state, 'stopped');
  assert.equal(s.signal, 'SIGKILL');
  assert.equal(await isSameProcess(h.pid, h.startTime), false);
});

test('start latency over several runs (figures only)', async (t) => {
  const p = pod(t);
  const spawnToExec: number[] = [];
  const startCall: number[] = [];
  for (let i = 0; i < 5; i++) {
    const began = Date.now();
    const h = await startIn(p, `lat${i}`, ['sleep', '600']);
    startCall.push(Date.now() - began);
    const s = await p.driver.status(h);
    assert.equal(s.running, true);
    spawnToExec.push(s.startLatencyMs ?? Number.NaN);
    await p.driver.stop(h, 1000);
  }
  const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  t.diagnostic(`bwrap spawn -> exec ms: ${spawnToExec.join(' ')} (p50 ${p50(spawnToExec)})`);
  t.diagnostic(
    `driver.start() ms (supervisor boot included): ${startCall.join(' ')} (p50 ${p50(startCall)})`,
  );
});
