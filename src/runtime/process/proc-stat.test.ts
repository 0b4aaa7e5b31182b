// Tests of process identity from /proc: pid + start time.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { isSameProcess, parseProcStat, readChildren, readProcStat } from './proc-stat.ts';

test('parses stat lines whose command name holds spaces and parentheses', () => {
  const line =
    '4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n';
  assert.deepEqual(parseProcStat(line), {
    pid: 4242,
    comm: 'my (odd) name',
    state: 'S',
    ppid: 1,
    startTime: 987654,
  });
  assert.throws(() => parseProcStat('garbage'));
});

test('a live process matches its own start time and nothing else; an exited one matches nothing', async (t) => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  const pid = child.pid as number;
  const stat = await readProcStat(pid);
  assert.ok(stat !== undefined);
  assert.equal(await isSameProcess(pid, stat.startTime), true);
  assert.equal(await isSameProcess(pid, stat.startTime + 1), false, 'a recycled pid has another start time');
  assert.ok((await readChildren(process.pid)).includes(pid));
  child.kill('SIGKILL');
  await once(child, 'exit');
  assert.equal(await isSameProcess(pid, stat.startTime), false);
  assert.equal(await readProcStat(-1), undefined);
});
