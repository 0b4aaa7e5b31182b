// Tests of cgroup detection (v1, v2, hybrid, none) and of creating, limiting and removing a real cgroup.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { waitFor } from '../../../test/support/wait-for.ts';
import {
  attachToCgroup,
  cgroupDirs,
  cgroupSegment,
  createContainerCgroup,
  detectCgroupLayout,
  parseMountInfo,
  pidsCurrent,
  probeCgroupLayout,
  removeContainerCgroup,
} from './cgroup-limits.ts';
import { liveClock } from './live-clock.ts';

// Captured on the project's Debian 12 machines: hybrid, memory nested under the session's cgroup.
const hybridMountInfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const hybridProcCgroup = `9:name=systemd:/
8:pids:/
4:memory:/process_api/df8ac234
2:cpuacct:/
1:cpu:/
0::/
`;

test('a hybrid host: memory, cpu and pids come from v1, each under this process own cgroup', () => {
  const layout = detectCgroupLayout({
    mountInfo: hybridMountInfo,
    procCgroup: hybridProcCgroup,
    readV2Controllers: () => '',
  });
  assert.equal(layout.mode, 'hybrid');
  assert.deepEqual(layout.homes.memory, { version: 1, ownDir: '/sys/fs/cgroup/memory/process_api/df8ac234' });
  assert.deepEqual(layout.homes.cpu, { version: 1, ownDir: '/sys/fs/cgroup/cpu' });
  assert.deepEqual(layout.homes.pids, { version: 1, ownDir: '/sys/fs/cgroup/pids' });
  assert.deepEqual(layout.missing, []);
});

test('a pure v2 host uses the controllers its cgroup offers and reports the others missing', () => {
  const layout = detectCgroupLayout({
    mountInfo: '30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n',
    procCgroup: '0::/system.slice/meshd.service\n',
    readV2Controllers: (dir) =>
      dir === '/sys/fs/cgroup/system.slice/meshd.service' ? 'cpuset cpu io pids' : undefined,
  });
  assert.equal(layout.mode, 'v2');
  assert.deepEqual(layout.homes.cpu, { version: 2, ownDir: '/sys/fs/cgroup/system.slice/meshd.service' });
  assert.equal(layout.homes.pids?.version, 2);
  assert.equal(layout.homes.memory, undefined);
  assert.equal(layout.missing[0]?.controller, 'memory');
});

test('no cgroup mounts at all: mode none, every controller missing with a reason', () => {
  const layout = detectCgroupLayout({ mountInfo: '', procCgroup: '', readV2Controllers: () => undefined });
  assert.equal(layout.mode, 'none');
  assert.deepEqual(
    layout.missing.map((m) => m.controller),
    ['memory', 'cpu', 'pids'],
  );
  assert.ok(layout.missing.every((m) => m.reason.length > 0));
});

test('a cgroup mounted from a sub-tree (inside a container) maps paths relative to its root', () => {
  const layout = detectCgroupLayout({
    mountInfo: '50 40 0:36 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n',
    procCgroup: '8:pids:/docker/abc/inner\n',
    readV2Controllers: () => undefined,
  });
  assert.deepEqual(layout.homes.pids, { version: 1, ownDir: '/sys/fs/cgroup/pids/inner' });
  const [m] = parseMountInfo('1 0 0:1 /a\\040b /mnt/x\\040y rw - cgroup cgroup rw,cpu\n');
  assert.equal(m?.root, '/a b');
  assert.equal(m?.mountPoint, '/mnt/x y');
});

test('cgroup path segments are safe and distinct names stay distinct', () => {
  fc.assert(
    fc.property(
      fc.string({ minLength: 1, maxLength: 80 }),
      fc.string({ minLength: 1, maxLength: 80 }),
      (a, b) => {
        const sa = cgroupSegment(a);
        if (!/^[A-Za-z0-9_.+-]+$/.test(sa) || sa === '.' || sa === '..') return false;
        return a === b || sa !== cgroupSegment(b);
      },
    ),
  );
  assert.equal(cgroupSegment('web'), 'web');
  assert.notEqual(cgroupSegment('a/b'), cgroupSegment('a_b'));
  // A literal name can never equal the hashed form of another: '+' is never kept as-is.
  assert.notEqual(cgroupSegment(cgroupSegment('a/b')), cgroupSegment('a/b'));
});

test('on this host: a container cgroup gets its limits, holds a process, and is removed', async (t) => {
  const layout = await probeCgroupLayout();
  if (process.getuid?.() !== 0 || layout.homes.pids === undefined) {
    t.skip('needs root and a pids controller');
    return;
  }
  const pod = `test-${process.pid}-${Date.now()}`;
  const cg = await createContainerCgroup(
    layout,
    { pod, container: 'c' },
    { pids: 17, memoryBytes: 32 << 20, cpuCores: 0.25 },
  );
  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(async () => {
    sleeper.kill('SIGKILL');
    await removeContainerCgroup(cgroupDirs(cg), liveClock);
  });
  assert.equal(cg.applied.pids, 17);
  assert.equal(readFileSync(posix.join(cg.dirs.pids as string, 'pids.max'), 'utf8').trim(), '17');
  if (cg.dirs.memory !== undefined && layout.homes.memory?.version === 1) {
    assert.equal(
      readFileSync(posix.join(cg.dirs.memory, 'memory.limit_in_bytes'), 'utf8').trim(),
      String(32 << 20),
    );
  }
  if (cg.dirs.cpu !== undefined && layout.homes.cpu?.version === 1) {
    assert.equal(readFileSync(posix.join(cg.dirs.cpu, 'cpu.cfs_quota_us'), 'utf8').trim(), '25000');
  }
  assert.deepEqual(await attachToCgroup(cg, sleeper.pid as number), []);
  assert.equal(await pidsCurrent(cg), 1);
  sleeper.kill('SIGKILL');
  await waitFor(async () => (await pidsCurrent(cg)) === 0, { timeoutMs: 5000, what: 'the sleeper to leave' });
  assert.deepEqual(await removeContainerCgroup(cgroupDirs(cg), liveClock), []);
  for (const dir of cgroupDirs(cg)) {
    assert.equal(existsSync(dir), false, dir);
    assert.equal(existsSync(posix.dirname(dir)), false, 'the pod level goes with its last container');
  }
});
