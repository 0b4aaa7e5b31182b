// Keeps dialling the peers this node should be connected to, with per-peer exponential backoff on the injected clock.

import type { Clock, TimerHandle } from '../shared/clock.ts';
import { describeError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';

export interface RedialTarget {
  peerId: string;
  /** Full multiaddrs, each ending in /p2p/<peerId>. */
  addrs: string[];
}

export interface PeerRedialOptions {
  clock: Clock;
  logger: Logger;
  /** First retry delay after a failure; also the delay after a success is lost again. */
  minMs: number;
  /** Backoff ceiling. */
  maxMs: number;
  /** Who should be connected right now (read on every tick). */
  targets: () => RedialTarget[];
  isConnected: (peerId: string) => boolean;
  /** Dials one peer; must be bounded in time by the caller. Rejects when no connection was made. */
  dial: (target: RedialTarget) => Promise<void>;
  /** At most this many dials in flight at once. */
  maxParallel?: number;
  /** Source of jitter in [0, 1); defaults to Math.random. Tests pass a constant. */
  random?: () => number;
}

interface Backoff {
  /** Clock time before which this peer is not dialled again. */
  nextAt: number;
  /** Delay to apply after the next failure. */
  delayMs: number;
  failures: number;
  dialling: boolean;
}

export interface RedialState {
  failures: number;
  nextAt: number;
  delayMs: number;
  dialling: boolean;
}

/**
 * Each tick dials every target that is not connected and whose backoff has run out. A failure doubles the
 * peer's delay (up to `maxMs`, with ±10% jitter so a restarted hub is not hit by everyone at once);
 * a connection, however it came about, resets it.
 */
export class PeerRedialer {
  private readonly opts: PeerRedialOptions;
  private readonly backoff = new Map<string, Backoff>();
  private timer: TimerHandle | undefined;
  private inFlight = 0;
  private stopped = false;

  constructor(opts: PeerRedialOptions) {
    this.opts = opts;
  }

  /** Dials every target now, then keeps ticking. */
  start(): void {
    const tickMs = Math.min(1000, Math.max(50, Math.floor(this.opts.minMs / 2)));
    this.timer = this.opts.clock.setInterval(() => this.tick(), tickMs);
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** A connection to `peerId` exists (dialled by us or by them): forget its failures. */
  connected(peerId: string): void {
    this.backoff.delete(peerId);
  }

  /** Backoff state of one peer, for diagnostics and tests; undefined when it has not failed. */
  state(peerId: string): RedialState | undefined {
    const b = this.backoff.get(peerId);
    return b === undefined
      ? undefined
      : { failures: b.failures, nextAt: b.nextAt, delayMs: b.delayMs, dialling: b.dialling };
  }

  /** One pass over the targets; public so a caller can trigger it (e.g. right after start-up). */
  tick(): void {
    if (this.stopped) return;
    const now = this.opts.clock.now();
    const maxParallel = this.opts.maxParallel ?? 8;
    let targets: RedialTarget[];
    try {
      targets = this.opts.targets();
    } catch (err) {
      this.opts.logger.warn('cannot list peers to redial', { err: describeError(err) });
      return;
    }
    for (const target of targets) {
      if (this.inFlight >= maxParallel) break;
      if (target.addrs.length === 0 || this.opts.isConnected(target.peerId)) continue;
      const b = this.backoff.get(target.peerId);
      if (b !== undefined && (b.dialling || now < b.nextAt)) continue;
      this.dialOne(target, b);
    }
  }

  private dialOne(target: RedialTarget, previous: Backoff | undefined): void {
    const b: Backoff = previous ?? { nextAt: 0, delayMs: this.opts.minMs, failures: 0, dialling: false };
    b.dialling = true;
    this.backoff.set(target.peerId, b);
    this.inFlight++;
    this.opts.dial(target).then(
      () => {
        this.inFlight--;
        this.backoff.delete(target.peerId);
      },
      (err: unknown) => {
        this.inFlight--;
        if (this.stopped) return;
        const jitter = 0.9 + 0.2 * (this.opts.random ?? Math.random)();
        const waitMs = Math.min(this.opts.maxMs, Math.max(this.opts.minMs, Math.round(b.delayMs * jitter)));
        b.dialling = false;
        b.failures++;
        b.nextAt = this.opts.clock.now() + waitMs;
        b.delayMs = Math.min(this.opts.maxMs, b.delayMs * 2);
        this.opts.logger.debug('redial failed', {
          peer: target.peerId,
          failures: b.failures,
          retryInMs: waitMs,
          err: describeError(err),
        });
      },
    );
  }
}
