// A daemon whose data dir (a small tmpfs) fills up: a clear error, no crash, no corruption, and recovery once space returns.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { PodEntry, StatusView } from '../src/api/types.ts';
import { DataDir, processStartTime } from '../src/daemon/data-dir.ts';
import { isAlive, loopback, MeshFixture } from './support/meshd-cli.ts';
import { sleeperPodYaml } from './support/pod-specs.ts';
import { killSupervisorsUnder } from './support/pod-world.ts';
import { assertSqliteIntact } from './support/sqlite-check.ts';
import { waitFor } from './support/wait-for.ts';

const podSpec = (name: string) => sleeperPodYaml(name, { PADDING: 'p'.repeat(2000) });

/** Takes every free byte of the file system holding `file`: big chunks first, then down to single bytes. */
function fill(file: string): number {
  const fd = openSync(file, 'a');
  let written = 0;
  try {
    for (let chunk = 1 << 20; chunk >= 1; chunk >>= 1) {
      const buf = Buffer.alloc(chunk, 0x46);
      for (;;) {
        try {
          written += writeSync(fd, buf);
        } catch {
          break;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return written;
}

/** A line of exactly `bytes` bytes (newline included): JSON when there is room for it, else blanks. */
function paddingLine(bytes: number): string {
  const json = '{"msg":"test padding","pad":""}';
  if (bytes < json.length + 1) return `${' '.repeat(bytes - 1)}\n`;
  return `{"msg":"test padding","pad":"${'x'.repeat(bytes - json.length - 1)}"}\n`;
}

/** Pids of the processes whose working dir, root, executable or an open file lies under `dir`. */
function processesUsing(dir: string): number[] {
  const inside = (link: string) => {
    try {
      const target = readlinkSync(link);
      return target === dir || target.startsWith(`${dir}/`);
    } catch {
      return false;
    }
  };
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const base = `/proc/${pid}`;
    let fds: string[] = [];
    try {
      fds = readdirSync(`${base}/fd`).map((fd) => `${base}/fd/${fd}`);
    } catch {
      // gone, or not ours to look into
    }
    if ([`${base}/cwd`, `${base}/root`, `${base}/exe`, ...fds].some(inside)) pids.push(pid);
  }
  return pids;
}

function freeBytes(dir: string): number {
  const out = execFileSync('df', ['--output=avail', '-B1', dir], { encoding: 'utf8' });
  return Number(out.trim().split('\n').at(-1));
}

test('a full disk: applies fail with a clear error, the daemon stays up, nothing is lost or corrupted, and it recovers', {
  timeout: 120_000,
}, async (t) => {
  const mesh = await MeshFixture.create('meshd-disk-full-');
  const dir = mesh.dataDir('a');
  let mounted = false;
  t.after(async () => {
    if (!mounted) return mesh.cleanup();
    const pid = new DataDir(dir).runningPid();
    if (pid !== undefined) {
      process.kill(pid, 'SIGKILL');
      await waitFor(() => processStartTime(pid) === undefined, {
        timeoutMs: 10_000,
        what: 'the daemon to die',
      });
    }
    await killSupervisorsUnder(dir);
    // Anything else still holding a file on the tmpfs was started by this test's daemon: end it too.
    const holders = processesUsing(dir);
    if (holders.length > 0) t.diagnostic(`still using the data dir at cleanup: ${holders.join(', ')}`);
    for (const p of holders) process.kill(p, 'SIGKILL');
    await waitFor(() => processesUsing(dir).length === 0, {
      timeoutMs: 10_000,
      what: 'the data dir to be free',
    });
    try {
      execFileSync('umount', [dir]);
    } catch {
      execFileSync('umount', ['-l', dir]); // something still holds a file there: detach it anyway
    }
    await mesh.cleanup();
  });
  mkdirSync(dir, { mode: 0o711 });
  // The whole data dir (store, log, pid file, socket, pod dirs) lives on a 24 MiB file system of its own.
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0711', 'tmpfs', dir], { stdio: 'pipe' });
    mounted = true;
  } catch (err) {
    t.skip(`needs to mount a tmpfs (root): ${String(err)}`);
    return;
  }
  const apply = (name: string, actor: string) => {
    const file = join(mesh.root, `${name}.yaml`);
    writeFileSync(file, podSpec(name));
    return mesh.run('a', ['apply', '-f', file, '--as', actor]);
  };
  const podNames = async () =>
    new Set((await mesh.json<PodEntry[]>('a', ['get', 'pods'])).map((p) => p.name));

  await mesh.ok('a', [
    'init',
    '--name',
    'full',
    '--node-name',
    'a',
    '--dashboard-port',
    'off',
    ...loopback,
    '--detach',
  ]);
  const { pid } = await mesh.json<StatusView>('a', ['status']);
  const before = await apply('before', 'tester');
  assert.equal(before.code, 0, before.stderr);
  // Settled first: a pod still starting writes files of its own, which would make the fill below uneven.
  await waitFor(
    async () =>
      (await mesh.json<PodEntry[]>('a', ['get', 'pods'])).some(
        (p) => p.name === 'before' && p.phase === 'running',
      ),
    { timeoutMs: 30_000, what: 'pod before running' },
  );

  // The disk fills up (another program's file takes the rest).
  const filler = join(dir, 'filler');
  fill(filler);
  assert.equal(freeBytes(dir), 0, 'the data dir has no free byte left');
  // The log's last page still has room for a few lines: fill it with one padding line of our own, so that
  // the daemon's very next log line already meets the full disk.
  const log = new DataDir(dir).logFile;
  const slack = (4096 - (statSync(log).size % 4096)) % 4096;
  if (slack > 0) appendFileSync(log, paddingLine(slack));

  const acknowledged = ['before'];
  const refused: string[] = [];
  for (let i = 1; i <= 4; i++) {
    const name = `during-${i}`;
    const res = await apply(name, 'tester');
    if (res.code === 0) {
      acknowledged.push(name);
      continue;
    }
    refused.push(name);
    if (refused.length === 1) t.diagnostic(`refused apply: ${res.stderr.trim()}`);
    assert.equal(res.code, 1, `a refused apply exits 1: ${res.stderr}`);
    assert.match(
      res.stderr,
      /^error: disk full: .*not saved to .*state\.db/m,
      'the error says the disk is full and where',
    );
    assert.match(
      res.stderr,
      /^ {2}hint: Free space on the disk holding /m,
      'with a hint naming the next step',
    );
    // the daemon is still there and answers while the disk is full
    assert.ok(isAlive(pid), `the daemon survived a refused apply (pid ${pid})`);
    assert.equal((await mesh.json<StatusView>('a', ['status'])).pid, pid);
  }
  t.diagnostic(`while full: acknowledged ${acknowledged.join(', ')}; refused ${refused.join(', ')}`);
  assert.ok(refused.length > 0, 'the full disk was noticed: at least one apply was refused');
  // What the user sees stays readable: the refused changes are kept in memory, not dropped.
  const whileFull = await podNames();
  for (const name of [...acknowledged, ...refused])
    assert.ok(whileFull.has(name), `${name} is listed while full`);

  // Space returns: the daemon writes what it kept by itself and takes new changes again.
  rmSync(filler);
  await waitFor(() => readFileSync(log, 'utf8').includes('store writable again'), {
    timeoutMs: 15_000,
    what: 'the daemon to write its pending changes once space returned',
  });
  // The lines it could not write meanwhile are reported, and every JSON line from then on parses (a line cut
  // short when the disk filled stays cut, but the next one starts on a line of its own).
  const lines = readFileSync(log, 'utf8').trimEnd().split('\n');
  const noticeAt = lines.findIndex((l) => l.includes('"msg":"log lines lost"'));
  assert.ok(noticeAt >= 0, 'the log says lines were lost while the disk was full');
  const notice = JSON.parse(lines[noticeAt] ?? '') as { lines?: number };
  assert.ok((notice.lines ?? 0) > 0, `lost lines are counted: ${lines[noticeAt]}`);
  for (const line of lines.slice(noticeAt).filter((l) => l.startsWith('{'))) JSON.parse(line);
  t.diagnostic(`log after the outage:\n${lines.slice(noticeAt).join('\n')}`);
  const after = await apply('after', 'tester');
  assert.equal(after.code, 0, after.stderr);
  acknowledged.push('after');
  assert.ok(isAlive(pid), 'the same daemon ran throughout');

  // A clean stop, an intact SQLite file, and a restart that has every change, acknowledged or kept.
  await mesh.ok('a', ['down']);
  assertSqliteIntact(new DataDir(dir).stateDb);
  await mesh.ok('a', ['up', '--detach']);
  const restartedAt = Date.now();
  const restarted = await podNames();
  for (const name of acknowledged)
    assert.ok(restarted.has(name), `acknowledged ${name} survived the restart`);
  for (const name of refused)
    assert.ok(restarted.has(name), `refused-but-kept ${name} was written once space returned`);
  // and the pods run: their directories, logs and supervisors need the disk too
  await waitFor(
    async () => (await mesh.json<PodEntry[]>('a', ['get', 'pods'])).every((p) => p.phase === 'running'),
    { timeoutMs: 30_000, intervalMs: 250, what: 'every pod to run once space returned' },
  );
  t.diagnostic(`pods running ${Math.round((Date.now() - restartedAt) / 1000)} s after the restart`);
});
