// Tests of restart decisions and backoff growth.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { backoffDelayMs, defaultBackoff, nextStreak, shouldRestart } from './restart-policy.ts';

test('always restarts; on-failure only after a failure; never does not', () => {
  const clean = { code: 0, signal: null };
  const failed = { code: 3, signal: null };
  const killed = { code: 137, signal: 'SIGKILL' };
  assert.deepEqual(
    [clean, failed, killed].map((e) => shouldRestart('always', e)),
    [true, true, true],
  );
  assert.deepEqual(
    [clean, failed, killed].map((e) => shouldRestart('on-failure', e)),
    [false, true, true],
  );
  assert.deepEqual(
    [clean, failed, killed].map((e) => shouldRestart('never', e)),
    [false, false, false],
  );
});

test('backoff doubles from the initial delay and never passes the cap', () => {
  const b = { initialMs: 100, maxMs: 1000, resetAfterMs: 5000 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5].map((n) => backoffDelayMs(n, b)),
    [100, 200, 400, 800, 1000, 1000],
  );
  fc.assert(
    fc.property(
      fc.nat(10_000),
      fc.integer({ min: 1, max: 10_000 }),
      fc.integer({ min: 1, max: 600_000 }),
      (n, init, max) => {
        const p = { initialMs: init, maxMs: max, resetAfterMs: 1 };
        const d = backoffDelayMs(n, p);
        return d <= max && d >= Math.min(init, max) && backoffDelayMs(n + 1, p) >= d;
      },
    ),
  );
});

test('a run longer than resetAfterMs ends the crash streak', () => {
  assert.equal(nextStreak(4, defaultBackoff.resetAfterMs, defaultBackoff), 0);
  assert.equal(nextStreak(4, defaultBackoff.resetAfterMs - 1, defaultBackoff), 5);
});
