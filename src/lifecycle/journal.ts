// Per-pod journal of lifecycle runs: bounded step history, JSON persistence, and the `meshd why` snapshot.
//
// Each run (one start attempt and its stop) keeps a current record per step, which is always complete,
// and a log of transitions capped at `maxEntriesPerRun` (oldest dropped, and counted). Only the last
// `maxRuns` runs are kept. Saving goes through a JournalSink the daemon backs with SQLite; saves are
// coalesced (at most one per `saveDelayMs`), and forced when a start or a stop finishes.

import type { Clock, TimerHandle } from '../shared/clock.ts';
import { describeError, ValidationError } from '../shared/errors.ts';
import { type Logger, silentLogger } from '../shared/logger.ts';
import {
  FINAL_START_STATES,
  type RunObserver,
  type StartResult,
  type StepState,
  type StepTransition,
  type StopResult,
} from './graph-runner.ts';
import { describeGraph, type GraphEdge, type GraphShape, type StepGraph } from './step-graph.ts';

export const JOURNAL_VERSION = 1;
export const DEFAULT_MAX_RUNS = 20;
export const DEFAULT_MAX_ENTRIES_PER_RUN = 256;
/** Errors longer than this are cut (a hook's stderr can be large). */
const MAX_ERROR_CHARS = 1000;

/** Where a pod's journal is persisted. Called with the whole (bounded) journal; may be async. */
export interface JournalSink {
  save(podKey: string, data: PodJournalData): void | Promise<void>;
}

export interface JournalEntry {
  at: number;
  step: string;
  state: StepState;
  error?: string;
  failedDependency?: string;
}

export interface StepRecord {
  name: string;
  kind: 'step' | 'target';
  /** Current state. */
  state: StepState;
  /** How the start ended; kept once the step is stopped, so a stopped run still says what failed. */
  outcome?: StepState;
  attempt: number;
  startedAt?: number;
  finishedAt?: number;
  durationMs?: number;
  error?: string;
  /** While waiting: ordering predecessors still waiting or running. */
  waitingOn: string[];
  failedDependency?: string;
  rootCause?: string;
  stopStartedAt?: number;
  stopFinishedAt?: number;
  stopDurationMs?: number;
  stopError?: string;
}

export type RunStatus = 'starting' | 'running' | 'failed' | 'cancelled' | 'stopping' | 'stopped';
export type StartOutcome = 'running' | 'failed' | 'cancelled';

export interface RunRecord {
  attempt: number;
  node: string;
  goal: string;
  status: RunStatus;
  startOutcome?: StartOutcome;
  reachedGoal: boolean;
  startedAt: number;
  finishedAt?: number;
  stopStartedAt?: number;
  stoppedAt?: number;
  /** Why the run was stopped (a spec change, a lost lease, a port taken...). */
  stopReason?: string;
  graph: GraphShape;
  /** One record per step, in graph order. */
  steps: StepRecord[];
  entries: JournalEntry[];
  droppedEntries: number;
}

export interface PodJournalData {
  version: number;
  pod: string;
  lastAttempt: number;
  runs: RunRecord[];
}

/** What holds the pod back, as `meshd why` reports it. */
export interface Blocker {
  step: string;
  /** The step's start state (`failed`, `timed-out`, `running`, `skipped`, ...). */
  state: StepState;
  error?: string;
  /** For a running step: how long it has been running at snapshot time. */
  runningForMs?: number;
}

export interface WhyStep {
  name: string;
  kind: 'step' | 'target';
  source: string;
  description?: string;
  timeoutMs?: number;
  state: StepState;
  outcome?: StepState;
  startedAt?: number;
  finishedAt?: number;
  /** Final for finished steps; so far for a running one. */
  durationMs?: number;
  error?: string;
  waitingOn: string[];
  failedDependency?: string;
  rootCause?: string;
  stopDurationMs?: number;
  stopError?: string;
  after: string[];
  requires: string[];
  wants: string[];
}

export interface WhySnapshot {
  pod: string;
  node: string;
  attempt: number;
  goal: string;
  status: RunStatus;
  startOutcome?: StartOutcome;
  reachedGoal: boolean;
  /** When the snapshot was taken. */
  at: number;
  startedAt: number;
  finishedAt?: number;
  stoppedAt?: number;
  stopReason?: string;
  /** Why the goal is not reached (undefined once it is). */
  blocker?: Blocker;
  /** Steps whose start failed or timed out, including wanted ones that did not stop the pod. */
  failedSteps: string[];
  steps: WhyStep[];
  edges: GraphEdge[];
  droppedEntries: number;
  /** Older runs, newest first. */
  previousRuns: {
    attempt: number;
    status: RunStatus;
    startOutcome?: StartOutcome;
    startedAt: number;
    blocker?: Blocker;
    stopReason?: string;
  }[];
}

export interface PodJournalOptions {
  readonly clock: Clock;
  readonly sink?: JournalSink;
  readonly logger?: Logger;
  readonly maxRuns?: number;
  readonly maxEntriesPerRun?: number;
  /** Coalescing delay of saves during a run; 0 saves on every transition. */
  readonly saveDelayMs?: number;
}

/** The runner's observer for one run, with the attempt number the journal gave it. */
export interface RunRecorder extends RunObserver {
  readonly attempt: number;
}

/** The lifecycle journal of one pod on this node. */
export class PodJournal {
  readonly pod: string;
  private readonly clock: Clock;
  private readonly sink: JournalSink | undefined;
  private readonly log: Logger;
  private readonly maxRuns: number;
  private readonly maxEntries: number;
  private readonly saveDelayMs: number;
  private lastAttempt: number;
  private runList: RunRecord[];
  private saveTimer: TimerHandle | undefined;

  constructor(pod: string, opts: PodJournalOptions, data?: PodJournalData) {
    this.pod = pod;
    this.clock = opts.clock;
    this.sink = opts.sink;
    this.log = (opts.logger ?? silentLogger).child({ pod });
    this.maxRuns = Math.max(1, opts.maxRuns ?? DEFAULT_MAX_RUNS);
    this.maxEntries = Math.max(1, opts.maxEntriesPerRun ?? DEFAULT_MAX_ENTRIES_PER_RUN);
    this.saveDelayMs = opts.saveDelayMs ?? 250;
    this.lastAttempt = data?.lastAttempt ?? 0;
    this.runList = (data === undefined ? [] : structuredClone(data.runs)).slice(-this.maxRuns);
    for (const run of this.runList) {
      if (run.entries.length > this.maxEntries) {
        run.droppedEntries += run.entries.length - this.maxEntries;
        run.entries = run.entries.slice(-this.maxEntries);
      }
    }
  }

  /** Rebuilds a journal from what a JournalSink saved; throws ValidationError if it is not one. */
  static fromJSON(pod: string, data: unknown, opts: PodJournalOptions): PodJournal {
    return new PodJournal(pod, opts, checkJournalData(pod, data));
  }

  /** Opens the record of a new start attempt; pass the result as the runner's observer. */
  beginRun(graph: StepGraph, info: { node: string; goal?: string }): RunRecorder {
    const attempt = ++this.lastAttempt;
    const shape = describeGraph(graph);
    const run: RunRecord = {
      attempt,
      node: info.node,
      goal: info.goal ?? 'running.target',
      status: 'starting',
      reachedGoal: false,
      startedAt: this.clock.now(),
      graph: shape,
      steps: shape.steps.map((s) => ({
        name: s.name,
        kind: s.kind,
        state: 'waiting',
        attempt,
        waitingOn: [...s.after],
      })),
      entries: [],
      droppedEntries: 0,
    };
    this.runList.push(run);
    if (this.runList.length > this.maxRuns) this.runList = this.runList.slice(-this.maxRuns);
    this.scheduleSave();
    return {
      attempt,
      transition: (t) => this.record(run, t),
      startFinished: (r) => this.startFinished(run, r),
      stopStarted: (at, reason) => {
        run.status = 'stopping';
        run.stopStartedAt = at;
        run.stopReason = reason;
        this.scheduleSave();
      },
      stopFinished: (r) => this.stopFinished(run, r),
    };
  }

  /** All kept runs, oldest first (copies). */
  runs(): RunRecord[] {
    return structuredClone(this.runList);
  }

  /** The JSON the sink stores. */
  toJSON(): PodJournalData {
    return { version: JOURNAL_VERSION, pod: this.pod, lastAttempt: this.lastAttempt, runs: this.runs() };
  }

  /** The current view of a run (the latest by default) for `meshd why`. */
  snapshot(attempt?: number): WhySnapshot | undefined {
    const index =
      attempt === undefined ? this.runList.length - 1 : this.runList.findIndex((r) => r.attempt === attempt);
    const run = this.runList[index];
    if (run === undefined) return undefined;
    const at = this.clock.now();
    const shapes = new Map(run.graph.steps.map((s) => [s.name, s]));
    const steps: WhyStep[] = run.steps.map((rec) => {
      const shape = shapes.get(rec.name);
      const running = rec.state === 'running' && rec.startedAt !== undefined;
      return {
        ...structuredClone(rec),
        source: shape?.source ?? 'unknown',
        ...(shape?.description === undefined ? {} : { description: shape.description }),
        ...(shape?.timeoutMs === undefined ? {} : { timeoutMs: shape.timeoutMs }),
        ...(running ? { durationMs: at - (rec.startedAt ?? at) } : {}),
        ...(rec.state === 'stopping' && rec.stopStartedAt !== undefined
          ? { stopDurationMs: at - rec.stopStartedAt }
          : {}),
        after: [...(shape?.after ?? [])],
        requires: [...(shape?.requires ?? [])],
        wants: [...(shape?.wants ?? [])],
      };
    }) as WhyStep[];
    const blocker = findBlocker(run, at);
    return {
      pod: this.pod,
      node: run.node,
      attempt: run.attempt,
      goal: run.goal,
      status: run.status,
      ...(run.startOutcome === undefined ? {} : { startOutcome: run.startOutcome }),
      reachedGoal: run.reachedGoal,
      at,
      startedAt: run.startedAt,
      ...(run.finishedAt === undefined ? {} : { finishedAt: run.finishedAt }),
      ...(run.stoppedAt === undefined ? {} : { stoppedAt: run.stoppedAt }),
      ...(run.stopReason === undefined ? {} : { stopReason: run.stopReason }),
      ...(blocker === undefined ? {} : { blocker }),
      failedSteps: run.steps
        .filter((s) => startState(s) === 'failed' || startState(s) === 'timed-out')
        .map((s) => s.name),
      steps,
      edges: structuredClone([...run.graph.edges]),
      droppedEntries: run.droppedEntries,
      previousRuns: this.runList
        .slice(0, index)
        .reverse()
        .map((r) => {
          const b = findBlocker(r, at);
          return {
            attempt: r.attempt,
            status: r.status,
            ...(r.startOutcome === undefined ? {} : { startOutcome: r.startOutcome }),
            startedAt: r.startedAt,
            ...(b === undefined ? {} : { blocker: b }),
            ...(r.stopReason === undefined ? {} : { stopReason: r.stopReason }),
          };
        }),
    };
  }

  /** Saves now if anything changed since the last save. */
  flush(): void {
    if (this.saveTimer === undefined) return;
    this.saveTimer.cancel();
    this.saveTimer = undefined;
    this.save();
  }

  private record(run: RunRecord, t: StepTransition): void {
    const rec = run.steps.find((s) => s.name === t.step);
    if (rec === undefined) return;
    const error = t.error === undefined ? undefined : clip(t.error);
    run.entries.push({
      at: t.at,
      step: t.step,
      state: t.state,
      ...(error === undefined ? {} : { error }),
      ...(t.failedDependency === undefined ? {} : { failedDependency: t.failedDependency }),
    });
    if (run.entries.length > this.maxEntries) {
      run.droppedEntries += run.entries.length - this.maxEntries;
      run.entries.splice(0, run.entries.length - this.maxEntries);
    }
    const wasDone = rec.outcome === 'done';
    rec.state = t.state;
    switch (t.state) {
      case 'waiting':
        break;
      case 'running':
        rec.startedAt = t.at;
        break;
      case 'stopping':
        rec.stopStartedAt = t.at;
        break;
      case 'stopped':
        rec.stopFinishedAt = t.at;
        if (rec.stopStartedAt !== undefined) rec.stopDurationMs = t.at - rec.stopStartedAt;
        if (error !== undefined) rec.stopError = error;
        break;
      default:
        // A final start state. A done step that later loses a requirement keeps its timings.
        rec.outcome = t.state;
        if (!wasDone) {
          if (rec.startedAt === undefined && t.state === 'done') rec.startedAt = t.at;
          rec.finishedAt = t.at;
          if (rec.startedAt !== undefined) rec.durationMs = t.at - rec.startedAt;
        }
        if (error !== undefined) rec.error = error;
        if (t.failedDependency !== undefined) rec.failedDependency = t.failedDependency;
        if (t.rootCause !== undefined) rec.rootCause = t.rootCause;
    }
    const states = new Map(run.steps.map((s) => [s.name, s.state]));
    for (const [i, shape] of run.graph.steps.entries()) {
      const r = run.steps[i];
      if (r === undefined) continue;
      r.waitingOn =
        r.state === 'waiting'
          ? shape.after.filter((p) => {
              const s = states.get(p);
              return s === 'waiting' || s === 'running';
            })
          : [];
    }
    this.scheduleSave();
  }

  private startFinished(run: RunRecord, r: StartResult): void {
    run.finishedAt = r.finishedAt;
    run.reachedGoal = r.reachedGoal;
    run.startOutcome = r.reachedGoal ? 'running' : r.cancelled ? 'cancelled' : 'failed';
    if (run.status === 'starting') run.status = run.startOutcome;
    this.saveNow();
  }

  private stopFinished(run: RunRecord, r: StopResult): void {
    run.status = 'stopped';
    run.stoppedAt = r.finishedAt;
    this.saveNow();
  }

  private scheduleSave(): void {
    if (this.sink === undefined || this.saveTimer !== undefined) return;
    if (this.saveDelayMs <= 0) {
      this.save();
      return;
    }
    this.saveTimer = this.clock.setTimeout(() => {
      this.saveTimer = undefined;
      this.save();
    }, this.saveDelayMs);
  }

  private saveNow(): void {
    this.saveTimer?.cancel();
    this.saveTimer = undefined;
    this.save();
  }

  private save(): void {
    if (this.sink === undefined) return;
    const warn = (err: unknown) => this.log.warn('journal save failed', { error: describeError(err) });
    try {
      const pending = this.sink.save(this.pod, this.toJSON());
      if (pending !== undefined) pending.catch(warn);
    } catch (err) {
      warn(err);
    }
  }
}

/** The start state of a step, also once it has been stopped. */
function startState(rec: StepRecord): StepState {
  return rec.state === 'stopping' || rec.state === 'stopped' ? (rec.outcome ?? rec.state) : rec.state;
}

/**
 * Follows the goal back to what holds it: the root cause of a dependency failure, the step a waiting
 * chain ends at, or the goal itself when it was skipped.
 */
function findBlocker(run: RunRecord, at: number): Blocker | undefined {
  const byName = new Map(run.steps.map((s) => [s.name, s]));
  const after = new Map(run.graph.steps.map((s) => [s.name, s.after]));
  const describe = (rec: StepRecord): Blocker => {
    const state = startState(rec);
    return {
      step: rec.name,
      state,
      ...(rec.error === undefined ? {} : { error: rec.error }),
      ...(state === 'running' && rec.startedAt !== undefined ? { runningForMs: at - rec.startedAt } : {}),
    };
  };
  const visit = (name: string, seen: Set<string>): Blocker | undefined => {
    const rec = byName.get(name);
    if (rec === undefined || seen.has(name)) return undefined;
    seen.add(name);
    const state = startState(rec);
    if (state === 'done') return undefined;
    if (state === 'dependency-failed') {
      const root = byName.get(rec.rootCause ?? rec.failedDependency ?? '');
      return root === undefined ? describe(rec) : describe(root);
    }
    if (state === 'waiting') {
      // Blame the earliest unfinished predecessor (graph order), following waiting chains.
      for (const p of after.get(name) ?? []) {
        const pred = byName.get(p);
        if (pred === undefined || FINAL_START_STATES.includes(startState(pred))) continue;
        const found = visit(p, seen);
        if (found !== undefined) return found;
      }
    }
    return describe(rec);
  };
  return visit(run.goal, new Set());
}

function clip(text: string): string {
  return text.length <= MAX_ERROR_CHARS ? text : `${text.slice(0, MAX_ERROR_CHARS - 1)}…`;
}

function checkJournalData(pod: string, data: unknown): PodJournalData {
  const bad = (what: string): never => {
    throw new ValidationError(
      'E_JOURNAL_INVALID',
      `stored lifecycle journal of pod ${pod} is unreadable: ${what}`,
      {
        hint: 'The journal is rebuilt from the next start; delete the stored copy to silence this.',
        details: { pod },
      },
    );
  };
  if (typeof data !== 'object' || data === null) return bad('not an object');
  const d = data as Partial<PodJournalData>;
  if (d.version !== JOURNAL_VERSION) return bad(`version ${String(d.version)} (expected ${JOURNAL_VERSION})`);
  if (typeof d.lastAttempt !== 'number' || !Array.isArray(d.runs)) return bad('lastAttempt or runs missing');
  d.runs.forEach((r: unknown, i) => {
    const run = r as Partial<RunRecord> | null;
    if (
      typeof run !== 'object' ||
      run === null ||
      typeof run.attempt !== 'number' ||
      typeof run.startedAt !== 'number' ||
      !Array.isArray(run.steps) ||
      !Array.isArray(run.entries) ||
      typeof run.graph !== 'object' ||
      run.graph === null ||
      !Array.isArray(run.graph.steps) ||
      !Array.isArray(run.graph.edges) ||
      run.graph.steps.length !== run.steps.length
    ) {
      bad(`runs[${i}] is malformed`);
    }
  });
  return d as PodJournalData;
}
