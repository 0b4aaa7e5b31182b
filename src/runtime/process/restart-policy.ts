// Restart decisions and capped exponential backoff for a container that exited (pure).

import type { RestartPolicy } from '../driver.ts';

export interface BackoffPolicy {
  /** Delay before the first restart of a streak. */
  initialMs: number;
  /** The delay never grows beyond this. */
  maxMs: number;
  /** A run that lasted this long ends the streak: the next crash restarts after `initialMs` again. */
  resetAfterMs: number;
}

export const defaultBackoff: BackoffPolicy = { initialMs: 500, maxMs: 30_000, resetAfterMs: 10_000 };

export interface ExitInfo {
  /** Exit code as bwrap reports it: the container's code, or 128 + n when signal n killed it. */
  code: number | null;
  signal: string | null;
}

export function isCleanExit(exit: ExitInfo): boolean {
  return exit.code === 0 && exit.signal === null;
}

export function shouldRestart(policy: RestartPolicy, exit: ExitInfo): boolean {
  if (policy === 'always') return true;
  if (policy === 'on-failure') return !isCleanExit(exit);
  return false;
}

/** Delay before restart number `streak` (0-based) of a crash streak: initial × 2^streak, capped. */
export function backoffDelayMs(streak: number, backoff: BackoffPolicy): number {
  const exp = Math.min(Math.max(0, streak), 30);
  return Math.min(backoff.maxMs, backoff.initialMs * 2 ** exp);
}

/** The streak after a run of `ranMs`: a long enough run resets it, a short one extends it. */
export function nextStreak(streak: number, ranMs: number, backoff: BackoffPolicy): number {
  return ranMs >= backoff.resetAfterMs ? 0 : streak + 1;
}
