// Real sandboxes with granted relaxations: host paths (read-only really is), a device, a capability, and unsandboxed runs.

import assert from 'node:assert/strict';
import { chownSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, type TestContext, test } from 'node:test';
import {
  type DriverPod,
  driverPod,
  killSupervisorsUnder,
  podTestRoot,
} from '../../../test/support/pod-world.ts';
import { waitFor } from '../../../test/support/wait-for.ts';
import { type ContainerHandle, ProcessStartError, type SandboxRelaxations } from '../driver.ts';
import { isSameProcess } from './proc-stat.ts';

const root = podTestRoot('meshd-relax-');
after(async () => {
  await killSupervisorsUnder(root);
  rmSync(root, { recursive: true, force: true });
});

const asRoot = process.getuid?.() === 0;

const pod = (t: TestContext) => driverPod(t, root, { startTimeoutMs: 15_000 });

function startIn(
  p: DriverPod,
  name: string,
  command: string[],
  security: SandboxRelaxations,
): Promise<ContainerHandle> {
  return p.driver.start({
    podKey: p.podKey,
    podDir: p.podDir,
    logDir: p.logDir,
    container: { name, command, restart: 'never' },
    env: { GREETING: 'hi' },
    ports: { http: 8080 },
    limits: { memoryBytes: 64 * 1024 * 1024, pids: 32 },
    leaseEpoch: 3,
    security,
  });
}

async function output(p: DriverPod, h: ContainerHandle): Promise<string> {
  const out: string[] = [];
  for await (const l of p.driver.logs(h.logFiles.stdout, {})) out.push(l);
  return out.join('\n');
}

async function exited(p: DriverPod, h: ContainerHandle): Promise<void> {
  await waitFor(async () => (await p.driver.status(h)).state === 'exited', {
    timeoutMs: 15_000,
    what: `${h.container} to exit`,
  });
}

test('granted host paths, a device and a capability: read-only is read-only, the rest of the sandbox stays', async (t) => {
  const p = pod(t);
  const ro = join(root, `ro-${p.podKey}`);
  const rw = join(root, `rw-${p.podKey}`);
  mkdirSync(ro, { mode: 0o755 });
  mkdirSync(rw, { mode: 0o755 });
  writeFileSync(join(ro, 'hello.txt'), 'from the host\n', { mode: 0o666 });
  if (asRoot) chownSync(rw, 65534, 65534);
  const script = [
    'cat /srv/ro/hello.txt',
    'echo changed > /srv/ro/hello.txt 2>/dev/null && echo RO_FILE=writable || echo RO_FILE=readonly',
    'touch /srv/ro/new 2>/dev/null && echo RO_DIR=writable || echo RO_DIR=readonly',
    'echo from-the-pod > /srv/rw/out && echo RW=writable',
    'test -c /dev/fuse && echo FUSE=present',
    'test -e /dev/kmsg && echo KMSG=present || echo KMSG=absent',
    "grep -E '^(Uid|CapEff|CapAmb|NoNewPrivs):' /proc/self/status",
    'touch /usr/probe 2>/dev/null && echo USR=writable || echo USR=readonly',
  ].join('\n');
  const h = await startIn(p, 'app', ['sh', '-c', script], {
    hostPaths: [
      { path: '/srv/ro', source: ro, readOnly: true },
      { path: '/srv/rw', source: rw, readOnly: false },
    ],
    devices: ['/dev/fuse'],
    capabilities: ['CAP_NET_BIND_SERVICE'],
  });
  await exited(p, h);
  const out = await output(p, h);
  assert.match(out, /^from the host$/m);
  assert.match(out, /^RO_FILE=readonly$/m, 'a read-only host path cannot be written, even a 0666 file');
  assert.match(out, /^RO_DIR=readonly$/m);
  assert.match(out, /^RW=writable$/m);
  assert.match(out, /^FUSE=present$/m);
  assert.match(out, /^KMSG=absent$/m, 'only the granted device');
  assert.match(out, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m, 'never root inside the pod');
  assert.match(out, /^CapEff:\s+0000000000000400$/m, 'exactly CAP_NET_BIND_SERVICE (bit 10)');
  assert.match(out, /^CapAmb:\s+0000000000000400$/m);
  assert.match(out, /^NoNewPrivs:\s+1$/m);
  assert.match(out, /^USR=readonly$/m);
  assert.equal(readFileSync(join(ro, 'hello.txt'), 'utf8'), 'from the host\n');
  assert.equal(readFileSync(join(rw, 'out'), 'utf8'), 'from-the-pod\n');
});

test('unsandboxed: no bwrap, still the sandbox user, a cleared environment, the cgroup, and nothing left after stop', async (t) => {
  const p = pod(t);
  process.env.MESHD_TEST_HOST_MARKER = 'leaked';
  t.after(() => {
    delete process.env.MESHD_TEST_HOST_MARKER;
  });
  const script = [
    'echo "UID=$(id -u)"',
    'echo "PID1=$(cat /proc/1/comm)"',
    'echo "CWD=$(pwd)"',
    'echo "ENV=$(env | cut -d= -f1 | sort | tr "\\n" " ")"',
    'grep -q . /etc/hostname && echo HOST_ETC=visible',
    'setsid sleep 300 </dev/null >/dev/null 2>&1 &',
    'echo "ESCAPED=$!"',
    'exec sleep 300',
  ].join('\n');
  const h = await startIn(p, 'raw', ['sh', '-c', script], { unsandboxed: true });
  await waitFor(async () => /ESCAPED=\d+/.test(await output(p, h)), {
    timeoutMs: 10_000,
    what: 'the script output',
  });
  const out = await output(p, h);
  if (asRoot) assert.match(out, /^UID=65534$/m);
  assert.doesNotMatch(out, /^PID1=bwrap$/m, 'no pid namespace: not under bwrap');
  assert.match(out, /^HOST_ETC=visible$/m);
  assert.match(out, new RegExp(`^CWD=${join(p.podDir, 'raw', 'work')}$`, 'm'));
  const env = /^ENV=(.*)$/m.exec(out)?.[1]?.trim().split(' ') ?? [];
  assert.deepEqual(
    env.filter((k) => k !== 'PWD' && k !== 'SHLVL' && k !== '_'),
    ['GREETING', 'HOME', 'MESHD_CONTAINER', 'MESHD_LEASE_EPOCH', 'MESHD_POD', 'PATH', 'PORT_HTTP'],
  );

  const status = await p.driver.status(h);
  assert.equal(status.running, true);
  const main = status.pid as number;
  assert.equal(
    readFileSync(`/proc/${main}/cmdline`, 'utf8'),
    'sleep\u0000300\u0000',
    'the gate exec’d in place',
  );
  const escaped = Number(/ESCAPED=(\d+)/.exec(out)?.[1]);
  // Unsandboxed tasks do not die with a SIGKILLed supervisor (no --die-with-parent): end them if we fail early.
  t.after(() => {
    for (const pid of [main, escaped]) if (existsPid(pid)) process.kill(pid, 'SIGKILL');
  });
  if (status.cgroup?.applied.pids !== undefined) {
    assert.match(
      readFileSync(`/proc/${main}/cgroup`, 'utf8'),
      new RegExp(`pids:.*/meshd/${p.podKey}-[0-9a-f]{10}/raw$`, 'm'),
    );
  }
  const probe = await p.driver.exec?.(h, ['sh', '-c', 'id -u; pwd'], { timeoutMs: 5000 });
  assert.equal(probe?.exitCode, 0);
  if (asRoot) assert.equal(probe?.output.split('\n')[0], '65534');

  const stopped = await p.driver.stop(h, 2000);
  assert.equal(stopped.state, 'stopped');
  assert.equal(await isSameProcess(main, h.startTime), false);
  if (status.cgroup?.applied.pids !== undefined) {
    // A process that left the process group (setsid) is still found through the cgroup.
    await waitFor(() => !existsPid(escaped), {
      timeoutMs: 5000,
      what: `escaped pid ${escaped} to be killed`,
    });
  }
});

test('unsandboxed: a command that does not exist fails the start with the reason; a quick one just exits', async (t) => {
  const p = pod(t);
  const quick = await startIn(p, 'quick', ['sh', '-c', 'exit 3'], { unsandboxed: true });
  await exited(p, quick);
  const status = await p.driver.status(quick);
  assert.equal(status.exitCode, 3);
  assert.equal(status.lastError, 'exited with code 3');
  await assert.rejects(
    startIn(p, 'missing', ['no-such-command-here'], { unsandboxed: true }),
    (err: unknown) =>
      err instanceof ProcessStartError && /exec: no-such-command-here: not found/.test(err.message),
  );
});

function existsPid(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) Z /.test(stat);
  } catch {
    return false;
  }
}
