// Runs one pod's step graph: parallel start as ordering allows, per-step timeouts, reverse-order stop.
//
// Invariants:
// - A step starts only after every step ordered before it is in a final start state.
// - A step whose start was called is stopped exactly once, after the stops of every started step
//   ordered after it; steps that never started are never stopped.
// - Timers come from the injected Clock; each start/stop gets an AbortSignal that fires on timeout
//   or cancellation. A timed-out step is final at once: the runner does not wait for it to return.

import type { Clock, TimerHandle } from '../shared/clock.ts';
import { describeError } from '../shared/errors.ts';
import { type Logger, silentLogger } from '../shared/logger.ts';
import {
  type GraphStep,
  RUNNING_TARGET,
  type StepContext,
  type StepGraph,
  type StepOutput,
} from './step-graph.ts';

export const DEFAULT_STEP_TIMEOUT_MS = 30_000;

export type StepState =
  | 'waiting'
  | 'running'
  | 'done'
  | 'failed'
  | 'timed-out'
  | 'dependency-failed'
  | 'skipped'
  | 'stopping'
  | 'stopped';

/** States a step can end its start in. */
export const FINAL_START_STATES: readonly StepState[] = Object.freeze([
  'done',
  'failed',
  'timed-out',
  'dependency-failed',
  'skipped',
]);
/** Start outcomes that make the steps requiring this one `dependency-failed`. */
export const FAILED_STATES: readonly StepState[] = Object.freeze([
  'failed',
  'timed-out',
  'dependency-failed',
  'skipped',
]);

/** One state change of one step, as the journal records it. */
export interface StepTransition {
  readonly step: string;
  readonly state: StepState;
  readonly at: number;
  /** Start error (failed, timed-out), cancellation reason (skipped), or stop error (stopped). */
  readonly error?: string;
  /** For `waiting`: the ordering predecessors not yet finished. */
  readonly waitingOn?: readonly string[];
  /** For `dependency-failed`: the required step that failed, and the step where the failure began. */
  readonly failedDependency?: string;
  readonly rootCause?: string;
}

export interface StepFailure {
  readonly step: string;
  readonly state: StepState;
  readonly error: string;
  readonly rootCause?: string;
}

export interface StartResult {
  readonly goal: string;
  /** Whether the goal target (running.target by default) was reached. */
  readonly reachedGoal: boolean;
  readonly cancelled: boolean;
  readonly startedAt: number;
  readonly finishedAt: number;
  readonly durationMs: number;
  readonly states: Readonly<Record<string, StepState>>;
  /** Failed, timed-out, dependency-failed and skipped steps, in graph order. */
  readonly failures: readonly StepFailure[];
}

export interface StopResult {
  readonly startedAt: number;
  readonly finishedAt: number;
  readonly durationMs: number;
  /** Every started step (targets included), in the order it reached `stopped`. */
  readonly stopped: readonly string[];
  readonly errors: readonly { readonly step: string; readonly error: string }[];
}

/** Receives everything the runner does; the journal implements it. Must not throw. */
export interface RunObserver {
  transition(t: StepTransition): void;
  startFinished?(result: StartResult): void;
  /** `reason`: why the pod is stopped, as the caller of `stop` gave it. */
  stopStarted?(at: number, reason: string): void;
  stopFinished?(result: StopResult): void;
}

export interface PodRunContext {
  readonly pod: string;
  readonly node: string;
  readonly attempt: number;
  readonly spec?: unknown;
}

export interface GraphRunnerOptions {
  readonly clock: Clock;
  readonly pod: PodRunContext;
  readonly logger?: Logger;
  readonly defaultTimeoutMs?: number;
  /** The target whose reaching means "the pod is running". */
  readonly goal?: string;
  readonly observer?: RunObserver;
}

interface Slot {
  readonly step: GraphStep;
  state: StepState;
  /** Ordering predecessors not yet in a final start state. */
  readonly pending: Set<string>;
  started: boolean;
  controller: AbortController | undefined;
  timer: TimerHandle | undefined;
  startedAt: number | undefined;
  error: string | undefined;
  rootCause: string | undefined;
  /** A required step failed while this one was running: it ends `dependency-failed` once it returns. */
  doomedBy: Slot | undefined;
}

/** Runs one start attempt of one pod, then its stop. Create a new runner for every attempt. */
export class GraphRunner {
  private readonly clock: Clock;
  private readonly pod: PodRunContext;
  private readonly log: Logger;
  private readonly defaultTimeoutMs: number;
  private readonly goal: string;
  private readonly observer: RunObserver | undefined;
  private readonly slots = new Map<string, Slot>();
  private readonly outputs = new Map<string, StepOutput>();
  private startPromise: Promise<StartResult> | undefined;
  private resolveStart: ((r: StartResult) => void) | undefined;
  private stopPromise: Promise<StopResult> | undefined;
  private startedAt = 0;
  /** >0 while a state change is still spreading: the graph is not re-examined half-updated. */
  private settling = 0;
  private cancelReason: string | undefined;

  constructor(graph: StepGraph, opts: GraphRunnerOptions) {
    this.clock = opts.clock;
    this.pod = opts.pod;
    this.log = (opts.logger ?? silentLogger).child({ pod: opts.pod.pod, node: opts.pod.node });
    this.defaultTimeoutMs = opts.defaultTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS;
    this.goal = opts.goal ?? RUNNING_TARGET;
    this.observer = opts.observer;
    if (!graph.steps.has(this.goal)) throw new Error(`GraphRunner: goal ${this.goal} is not in the graph`);
    for (const step of graph.steps.values()) {
      this.slots.set(step.name, {
        step,
        state: 'waiting',
        pending: new Set(step.after),
        started: false,
        controller: undefined,
        timer: undefined,
        startedAt: undefined,
        error: undefined,
        rootCause: undefined,
        doomedBy: undefined,
      });
    }
  }

  /** Current state of every step, in graph order. */
  states(): Record<string, StepState> {
    return Object.fromEntries([...this.slots].map(([n, s]) => [n, s.state]));
  }

  /** Starts the graph; resolves once every step is in a final start state (never rejects). */
  start(): Promise<StartResult> {
    if (this.startPromise !== undefined) return this.startPromise;
    if (this.stopPromise !== undefined) throw new Error('GraphRunner: start after stop; use a new runner');
    this.startPromise = new Promise((resolve) => {
      this.resolveStart = resolve;
    });
    this.startedAt = this.clock.now();
    for (const slot of this.slots.values()) {
      this.setState(slot, 'waiting', { waitingOn: [...slot.pending] });
    }
    this.pump();
    return this.startPromise;
  }

  /**
   * Cancels a start in progress: steps not yet started become `skipped`, running steps are aborted.
   * The start promise still resolves, once running steps have returned or timed out.
   */
  cancel(reason = 'cancelled'): void {
    // Only while a start is in progress (resolveStart is cleared once it has finished).
    if (this.cancelReason !== undefined || this.resolveStart === undefined) return;
    this.cancelReason = reason;
    this.settling++;
    for (const slot of this.slots.values()) {
      if (slot.state === 'waiting') this.finishStart(slot, 'skipped', { error: `not started: ${reason}` });
      else if (slot.state === 'running') slot.controller?.abort(abortError(reason));
    }
    this.settling--;
    this.pump();
  }

  /**
   * Stops the pod: cancels a start in progress and waits for it, then runs `stop` of every started
   * step in reverse order (independent stops in parallel). A failing or timed-out stop is recorded
   * and does not hold back the others. Resolves once every started step is `stopped`.
   */
  stop(reason = 'pod stop requested'): Promise<StopResult> {
    if (this.stopPromise === undefined) this.stopPromise = this.runStop(reason);
    return this.stopPromise;
  }

  private async runStop(reason: string): Promise<StopResult> {
    if (this.startPromise !== undefined) {
      this.cancel(reason);
      await this.startPromise;
    }
    const startedAt = this.clock.now();
    this.observer?.stopStarted?.(startedAt, reason);
    const stopped: string[] = [];
    const errors: { step: string; error: string }[] = [];
    const toStop = [...this.slots.values()].filter((s) => s.started);
    // A step's stop waits for the stops of the started steps ordered after it.
    const blockers = new Map<string, Set<string>>(
      toStop.map((s) => [s.step.name, new Set(s.step.before.filter((n) => this.slots.get(n)?.started))]),
    );
    await new Promise<void>((resolveAll) => {
      let remaining = toStop.length;
      const launched = new Set<string>();
      const finished = (slot: Slot, error: string | undefined) => {
        stopped.push(slot.step.name);
        if (error !== undefined) errors.push({ step: slot.step.name, error });
        this.setState(slot, 'stopped', error === undefined ? {} : { error });
        for (const p of slot.step.after) blockers.get(p)?.delete(slot.step.name);
        remaining--;
        launchReady();
      };
      const launchReady = () => {
        if (remaining === 0) {
          resolveAll();
          return;
        }
        // Reverse graph order keeps launches deterministic.
        for (const slot of [...toStop].reverse()) {
          const name = slot.step.name;
          if (launched.has(name) || (blockers.get(name)?.size ?? 0) > 0) continue;
          launched.add(name);
          this.launchStop(slot, (error) => finished(slot, error));
        }
      };
      launchReady();
    });
    const finishedAt = this.clock.now();
    const result: StopResult = { startedAt, finishedAt, durationMs: finishedAt - startedAt, stopped, errors };
    this.observer?.stopFinished?.(result);
    return result;
  }

  private launchStop(slot: Slot, done: (error: string | undefined) => void): void {
    const stopFn = slot.step.definition.stop;
    if (stopFn === undefined) {
      done(undefined);
      return;
    }
    this.setState(slot, 'stopping', {});
    const controller = new AbortController();
    const timeoutMs = this.timeoutOf(slot);
    let settled = false;
    const settle = (error: string | undefined) => {
      if (settled) return;
      settled = true;
      timer.cancel();
      done(error);
    };
    const timer = this.clock.setTimeout(() => {
      controller.abort(timeoutError(`stop timed out after ${formatMs(timeoutMs)}`));
      settle(`stop timed out after ${formatMs(timeoutMs)}`);
    }, timeoutMs);
    this.invoke(() => stopFn(this.contextFor(slot), controller.signal)).then(
      () => settle(undefined),
      (err: unknown) => settle(`stop failed: ${describeError(err)}`),
    );
  }

  /** Starts every waiting step whose ordering predecessors are all final, in graph order. */
  private pump(): void {
    if (this.settling > 0) return;
    for (;;) {
      const ready = [...this.slots.values()].find((s) => s.state === 'waiting' && s.pending.size === 0);
      if (ready === undefined) break;
      this.launch(ready);
    }
    this.checkStartFinished();
  }

  private launch(slot: Slot): void {
    if (this.cancelReason !== undefined) {
      this.finishStart(slot, 'skipped', { error: `not started: ${this.cancelReason}` });
      return;
    }
    const failedDep = slot.step.requires
      .map((n) => this.slots.get(n))
      .find((d) => d !== undefined && FAILED_STATES.includes(d.state));
    if (failedDep !== undefined) {
      this.dependencyFailed(slot, failedDep);
      return;
    }
    const startFn = slot.step.definition.start;
    slot.startedAt = this.clock.now();
    slot.started = true;
    if (startFn === undefined) {
      // A target: reached as soon as it is ordered to run and its requirements hold.
      this.finishStart(slot, 'done', {});
      return;
    }
    const controller = new AbortController();
    slot.controller = controller;
    this.setState(slot, 'running', {});
    const timeoutMs = this.timeoutOf(slot);
    slot.timer = this.clock.setTimeout(() => {
      if (slot.state !== 'running') return;
      const message = `timed out after ${formatMs(timeoutMs)}`;
      controller.abort(timeoutError(message));
      if (slot.doomedBy !== undefined) this.dependencyFailed(slot, slot.doomedBy, true);
      else this.finishStart(slot, 'timed-out', { error: message });
    }, timeoutMs);
    const ctx = this.contextFor(slot);
    this.invoke(() => startFn(ctx, controller.signal)).then(
      (output) => {
        if (slot.state !== 'running') return;
        if (slot.doomedBy !== undefined) {
          this.dependencyFailed(slot, slot.doomedBy, true);
          return;
        }
        if (
          output !== undefined &&
          (typeof output !== 'object' || output === null || Array.isArray(output))
        ) {
          this.finishStart(slot, 'failed', {
            error: `start returned ${Array.isArray(output) ? 'an array' : typeof output}; return an object or nothing`,
          });
          return;
        }
        if (output !== undefined) this.outputs.set(slot.step.name, output);
        this.finishStart(slot, 'done', {});
      },
      (err: unknown) => {
        if (slot.state !== 'running') return;
        if (slot.doomedBy !== undefined) {
          this.dependencyFailed(slot, slot.doomedBy, true);
          return;
        }
        const error =
          this.cancelReason !== undefined && controller.signal.aborted
            ? `cancelled: ${this.cancelReason}`
            : describeError(err);
        this.finishStart(slot, 'failed', { error });
      },
    );
  }

  /**
   * Fails `slot` because `dep`, which it requires, failed. A running step is aborted first and only
   * becomes final once it returns (or times out), so steps ordered after it never overlap with it.
   */
  private dependencyFailed(slot: Slot, dep: Slot, returned = false): void {
    const rootCause = dep.rootCause ?? dep.step.name;
    if (slot.state === 'running' && !returned) {
      if (slot.doomedBy === undefined) {
        slot.doomedBy = dep;
        slot.controller?.abort(abortError(`required step ${dep.step.name} ${dep.state}`));
      }
      return;
    }
    this.finishStart(slot, 'dependency-failed', {
      error: `required step ${dep.step.name} ${dep.state}`,
      failedDependency: dep.step.name,
      rootCause,
    });
  }

  /** Moves a step to a final start state and lets the graph progress. */
  private finishStart(
    slot: Slot,
    state: StepState,
    extra: { error?: string; failedDependency?: string; rootCause?: string },
  ): void {
    slot.timer?.cancel();
    slot.timer = undefined;
    slot.error = extra.error;
    slot.rootCause = extra.rootCause;
    this.setState(slot, state, extra);
    this.settling++;
    if (FAILED_STATES.includes(state) && this.cancelReason === undefined) {
      // Steps requiring this one fail now, whether waiting, running or done (when they were
      // explicitly ordered before it); those that started are stopped with the rest of the pod.
      for (const name of slot.step.requiredBy) {
        const dependant = this.slots.get(name);
        if (
          dependant !== undefined &&
          (dependant.state === 'waiting' || dependant.state === 'running' || dependant.state === 'done')
        ) {
          this.dependencyFailed(dependant, slot);
        }
      }
    }
    for (const next of slot.step.before) this.slots.get(next)?.pending.delete(slot.step.name);
    this.settling--;
    this.pump();
  }

  private checkStartFinished(): void {
    if (this.resolveStart === undefined) return;
    const slots = [...this.slots.values()];
    if (slots.some((s) => !FINAL_START_STATES.includes(s.state))) return;
    const resolve = this.resolveStart;
    this.resolveStart = undefined;
    const finishedAt = this.clock.now();
    const failures: StepFailure[] = slots
      .filter((s) => FAILED_STATES.includes(s.state))
      .map((s) => ({
        step: s.step.name,
        state: s.state,
        error: s.error ?? s.state,
        ...(s.rootCause === undefined ? {} : { rootCause: s.rootCause }),
      }));
    const result: StartResult = {
      goal: this.goal,
      reachedGoal: this.slots.get(this.goal)?.state === 'done',
      cancelled: this.cancelReason !== undefined,
      startedAt: this.startedAt,
      finishedAt,
      durationMs: finishedAt - this.startedAt,
      states: this.states(),
      failures,
    };
    this.log.info(result.reachedGoal ? 'pod started' : 'pod start failed', {
      durationMs: result.durationMs,
      goal: this.goal,
      ...(failures[0] === undefined ? {} : { step: failures[0].rootCause ?? failures[0].step }),
    });
    this.observer?.startFinished?.(result);
    resolve(result);
  }

  private setState(
    slot: Slot,
    state: StepState,
    extra: { error?: string; waitingOn?: readonly string[]; failedDependency?: string; rootCause?: string },
  ): void {
    slot.state = state;
    const at = this.clock.now();
    this.observer?.transition({ step: slot.step.name, state, at, ...extra });
    const fields = {
      step: slot.step.name,
      state,
      ...(extra.error === undefined ? {} : { error: extra.error }),
      ...(slot.startedAt === undefined || !FINAL_START_STATES.includes(state)
        ? {}
        : { durationMs: at - slot.startedAt }),
    };
    if (state === 'failed' || state === 'timed-out' || (state === 'stopped' && extra.error !== undefined)) {
      this.log.warn(`step ${state}`, fields);
    } else {
      this.log.debug(`step ${state}`, fields);
    }
  }

  private contextFor(slot: Slot): StepContext {
    return {
      pod: this.pod.pod,
      node: this.pod.node,
      attempt: this.pod.attempt,
      step: slot.step.name,
      spec: this.pod.spec,
      outputs: Object.freeze(Object.fromEntries(this.outputs)),
      logger: this.log.child({ step: slot.step.name }),
    };
  }

  private timeoutOf(slot: Slot): number {
    return slot.step.definition.timeoutMs ?? this.defaultTimeoutMs;
  }

  /** Calls a step function, turning a synchronous throw or a non-promise into a promise. */
  private invoke<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err);
    }
  }
}

/** `850 ms`, `1.2 s`, `30 s`, `2 min 5 s`. */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) {
    const s = ms / 1000;
    return Number.isInteger(s) ? `${s} s` : `${s.toFixed(1)} s`;
  }
  const min = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return s === 0 ? `${min} min` : `${min} min ${s} s`;
}

function timeoutError(message: string): DOMException {
  return new DOMException(message, 'TimeoutError');
}

function abortError(message: string): DOMException {
  return new DOMException(message, 'AbortError');
}
