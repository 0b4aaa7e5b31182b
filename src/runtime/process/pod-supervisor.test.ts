// Tests of the supervisor's pure parts: reading bwrap's failure lines and exit codes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeSandboxFailure, exitFromBwrap } from './pod-supervisor.ts';

test('bwrap exec failures become short reasons a user can act on', () => {
  assert.equal(
    describeSandboxFailure('bwrap: execvp python4: No such file or directory\n'),
    'exec: python4: not found',
  );
  assert.equal(
    describeSandboxFailure('bwrap: execvp /work/run.sh: Permission denied\n'),
    'exec: /work/run.sh: permission denied',
  );
  assert.equal(
    describeSandboxFailure("bwrap: Can't find source path /x: No such file or directory\n"),
    "sandbox: Can't find source path /x: No such file or directory",
  );
  assert.equal(describeSandboxFailure('Traceback (most recent call last):\n'), undefined);
});

test('exit codes above 128 name the signal that ended the container', () => {
  assert.deepEqual(exitFromBwrap(143, null), { code: 143, signal: 'SIGTERM' });
  assert.deepEqual(exitFromBwrap(137, null), { code: 137, signal: 'SIGKILL' });
  assert.deepEqual(exitFromBwrap(3, null), { code: 3, signal: null });
  assert.deepEqual(exitFromBwrap(null, 'SIGKILL'), { code: null, signal: 'SIGKILL' });
});
