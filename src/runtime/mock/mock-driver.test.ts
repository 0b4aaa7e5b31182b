// The mock runtime: containers are "running" from start to stop, with no process behind them.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import type { StartRequest } from '../driver.ts';
import { MockDriver } from './mock-driver.ts';

const request = (name: string): StartRequest => ({
  podKey: 'web.0',
  podDir: '/nonexistent/pods/web.0',
  logDir: '/nonexistent/logs/web.0',
  container: { name, command: ['sleep', '3600'] },
  env: {},
  ports: {},
  limits: {},
  leaseEpoch: 3,
});

test('start → running without a pid; stop → stopped; adopt only what this driver runs; no files made', async () => {
  const driver = new MockDriver();
  assert.deepEqual((await driver.prepare()).warnings, []);
  const h = await driver.start(request('app'));
  assert.equal(h.pid, 0);
  assert.equal(h.leaseEpoch, 3);
  const s = await driver.status(h);
  assert.equal(s.state, 'running');
  assert.equal(s.pid, undefined);
  assert.equal(s.supervisorAlive, true, 'never counted as lost');
  assert.deepEqual(await driver.adopt(h.stateFile), h);
  assert.equal(await new MockDriver().adopt(h.stateFile), undefined, 'a new daemon adopts nothing');
  const lines: string[] = [];
  for await (const l of driver.logs(h.logFiles.stdout, {})) lines.push(l);
  assert.deepEqual(lines, []);
  assert.equal((await driver.stop(h)).state, 'stopped');
  assert.equal((await driver.status(h)).state, 'stopped');
  assert.equal(await driver.adopt(h.stateFile), undefined);
  assert.equal(existsSync('/nonexistent'), false);
});
