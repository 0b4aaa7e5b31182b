// /proc parsing for `meshd top`: odd command names, process trees, and CPU share arithmetic.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { waitFor } from '../../test/support/wait-for.ts';
import { cpuPercent, parseRssBytes, parseStat, readParents, readTreeUsage } from './process-usage.ts';

const stat = (pid: number, name: string, ppid: number, utime: number, stime: number) =>
  `${pid} (${name}) S ${ppid} ${pid} ${pid} 0 -1 4194560 100 0 0 0 ${utime} ${stime} 0 0 20 0 1 0 12345 1000 200\n`;

test('stat fields are read after the last parenthesis, whatever the command name holds', () => {
  assert.deepEqual(parseStat(stat(7, 'a b) (c', 1, 30, 12)), { ppid: 1, cpuTicks: 42 });
  assert.equal(parseStat('garbage'), undefined);
  assert.equal(parseRssBytes('Name:\tx\nVmRSS:\t    2048 kB\n'), 2048 * 1024);
  assert.equal(parseRssBytes('Name:\tkthreadd\n'), 0);
});

test('a tree sums its root and every descendant, and is gone when its root is', () => {
  const proc = fs.mkdtempSync(join(tmpdir(), 'meshd-proc-'));
  try {
    const add = (pid: number, ppid: number, ticks: number, rssKb: number) => {
      fs.mkdirSync(join(proc, String(pid)));
      fs.writeFileSync(join(proc, String(pid), 'stat'), stat(pid, 'p', ppid, ticks, 0));
      fs.writeFileSync(join(proc, String(pid), 'status'), `VmRSS:\t${rssKb} kB\n`);
    };
    add(10, 1, 5, 100);
    add(11, 10, 7, 200);
    add(12, 11, 1, 300);
    add(20, 1, 1000, 999);
    fs.mkdirSync(join(proc, 'self'));
    const parents = readParents(proc);
    assert.deepEqual(readTreeUsage(10, parents, proc), {
      pids: [10, 11, 12],
      cpuTicks: 13,
      rssBytes: 600 * 1024,
    });
    assert.equal(readTreeUsage(99, parents, proc), undefined);
  } finally {
    fs.rmSync(proc, { recursive: true, force: true });
  }
});

test('the real /proc: this process tree includes a child it spawned', async (t) => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  const pid = child.pid ?? -1;
  const usage = await waitFor(
    () => {
      const u = readTreeUsage(process.pid, readParents());
      return u?.pids.includes(pid) ? u : undefined;
    },
    { timeoutMs: 5000, what: 'the child in /proc' },
  );
  assert.ok(usage.rssBytes > 10 * 1024 * 1024, 'node itself holds more than 10 MiB');
});

test('CPU share: ticks are hundredths of a second', () => {
  assert.equal(cpuPercent(100, 150, 1000), 50);
  assert.equal(cpuPercent(0, 400, 2000), 200);
  assert.equal(cpuPercent(150, 100, 1000), 0, 'a child that exited makes the sum drop: never negative');
  assert.equal(cpuPercent(0, 10, 0), 0);
});
