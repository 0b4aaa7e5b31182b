// Tests for the log throttle: a burst per key and window, and a count of what was left out.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock } from './clock.ts';
import { LogThrottle } from './log-throttle.ts';

test('a burst per key and window; the next line written says how many were left out', () => {
  const clock = new ManualClock();
  const t = new LogThrottle({ clock, burst: 2, windowMs: 1000 });
  assert.deepEqual(
    [1, 2, 3, 4].map(() => t.take('p E_X').log),
    [true, true, false, false],
  );
  assert.deepEqual(t.take('p E_Y'), { log: true, suppressed: 0 }, 'keys are counted apart');
  clock.advance(1001);
  assert.deepEqual(t.take('p E_X'), { log: true, suppressed: 2 });
  assert.deepEqual(t.take('p E_X'), { log: true, suppressed: 0 });
});

test('a flood of distinct keys resets the table instead of growing it', () => {
  const t = new LogThrottle({ clock: new ManualClock(), burst: 1, maxKeys: 3 });
  for (const k of ['a', 'b', 'c']) t.take(k);
  assert.equal(t.take('a').log, false, 'a is still in its window');
  t.take('d'); // a fourth key: the table starts over
  assert.equal(t.take('a').log, true);
});
