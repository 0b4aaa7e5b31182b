// Tests of the state file format: atomic replacement and refusal of anything malformed.

import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseState, type SupervisorState, writeJsonAtomic } from './supervisor-files.ts';

const good: SupervisorState = {
  version: 1,
  podKey: 'web',
  container: 'app',
  supervisorPid: 10,
  supervisorStartTime: 100,
  containerPid: 12,
  containerStartTime: 101,
  sandboxInitPid: 11,
  state: 'running',
  restarts: 0,
  lastExit: null,
  lastError: null,
  specHash: 'abc',
  leaseEpoch: 3,
  cgroup: null,
  startLatencyMs: 50,
  nextRestartAt: null,
  updatedAt: 1,
};

test('a state file round-trips and is replaced whole, leaving no temp file', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-state-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'state.json');
  writeJsonAtomic(file, good);
  writeJsonAtomic(file, { ...good, restarts: 2 });
  assert.equal(parseState(readFileSync(file, 'utf8'))?.restarts, 2);
  assert.deepEqual(readdirSync(dir), ['state.json']);
});

test('malformed or foreign state is refused, never half-trusted', () => {
  assert.equal(parseState('{'), undefined);
  assert.equal(parseState('[]'), undefined);
  assert.equal(parseState(JSON.stringify({ ...good, version: 2 })), undefined);
  assert.equal(parseState(JSON.stringify({ ...good, supervisorPid: '10' })), undefined);
  assert.equal(parseState(JSON.stringify({ ...good, supervisorStartTime: 1.5 })), undefined);
  assert.equal(parseState(JSON.stringify({ ...good, state: 'dancing' })), undefined);
  assert.deepEqual(parseState(JSON.stringify(good)), good);
});
