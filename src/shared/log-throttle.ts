// At most a burst of log lines per key and window, for messages anyone on the network can trigger.

import type { Clock } from './clock.ts';

export interface LogThrottleOptions {
  readonly clock: Pick<Clock, 'now'>;
  /** Lines per key per window. */
  readonly burst: number;
  readonly windowMs?: number;
  /** Keys kept at most (a flood of distinct keys resets the table rather than growing it). */
  readonly maxKeys?: number;
}

/**
 * `take(key)` says whether to write the line, and how many lines of that key were left out since the
 * last one written (to be said in it). Invariant: every call is either written or counted.
 */
export class LogThrottle {
  private readonly windows = new Map<string, { since: number; logged: number; suppressed: number }>();
  private readonly opts: Required<LogThrottleOptions>;

  constructor(opts: LogThrottleOptions) {
    this.opts = { windowMs: 60_000, maxKeys: 1024, ...opts };
  }

  take(key: string): { log: false } | { log: true; suppressed: number } {
    const now = this.opts.clock.now();
    let w = this.windows.get(key);
    if (w === undefined || now - w.since > this.opts.windowMs) {
      if (w === undefined && this.windows.size >= this.opts.maxKeys) this.windows.clear();
      w = { since: now, logged: 0, suppressed: w?.suppressed ?? 0 };
      this.windows.set(key, w);
    }
    if (w.logged >= this.opts.burst) {
      w.suppressed++;
      return { log: false };
    }
    w.logged++;
    const suppressed = w.suppressed;
    w.suppressed = 0;
    return { log: true, suppressed };
  }
}
