// The node's pod agent: runs the pod slots this node should run and reports each slot's status.
//
// It starts desired slots, restarts them in place on spec changes, stops the rest, and re-adopts what
// survived a daemon restart.
//
// Invariants:
// - One operation at a time per slot (start, stop, restart); slots are independent of each other.
// - The agent writes only `status.slots.<i>` of pods, as controller `runtime`, and only when what it
//   reports changed (phase, revision, ports, pid, restarts, error): a re-adopted pod writes nothing.
// - Slot `i` is written only by the node running it, so replicas on different nodes never write
//   the same field; a node that stopped a slot leaves it alone once another node reported it.
// - Pods outlive the agent: `stop()` leaves them running; a new agent takes them over from `slots/`.
// - A slot runs with the epoch of the lease it holds (MESHD_LEASE_EPOCH): a new epoch restarts it.

import { createHash } from 'node:crypto';
import { FAILED_STATES, GraphRunner, type StartResult } from '../lifecycle/graph-runner.ts';
import { PodJournal, type WhySnapshot } from '../lifecycle/journal.ts';
import { buildStepGraph, type StepDefinition, type StepOutput } from '../lifecycle/step-graph.ts';
import { renderSummary } from '../lifecycle/why-report.ts';
import {
  type ContainerHandle,
  type ContainerStatus,
  type RuntimeDriver,
  unknownStatus,
} from '../runtime/driver.ts';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { describeError, NotFoundError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { Materialized } from '../state/materialize.ts';
import { diffMergePatch, isPlainObject, type JsonObject, type JsonValue } from '../state/merge-patch.ts';
import type { AppendInput } from '../state/object-store.ts';
import {
  type Pod,
  type PodSpec,
  podFromStored,
  podStatusKey,
  type RestartPolicy,
} from '../state/pod-spec.ts';
import { canonicalJson } from '../state/revision-records.ts';
import { emptyNodePolicy, type LoadedNodePolicy } from './node-policy-file.ts';
import { PodSlotFiles, SLOT_RECORD_VERSION, type SlotRecord, unitName } from './pod-slot-files.ts';
import {
  BUILTIN_POD_STEPS,
  builtinPodSteps,
  newRunState,
  type PodRunInput,
  type PodRunState,
  type PodStepsOptions,
  type RestoreInput,
} from './pod-steps.ts';
import { DEFAULT_PORT_COOLDOWN_MS, firstPortFor, PortAllocator, type PortRange } from './port-allocator.ts';
import { decideSecurity, decisionEssence, grantsNothing, type SecurityDecision } from './security-grant.ts';

/** A slot this node should run: slot `slot` of pod `pod`, under lease epoch `leaseEpoch` (0 when pinned). */
export interface DesiredSlot {
  readonly pod: string;
  readonly slot: number;
  readonly leaseEpoch: number;
}

/** What the agent needs of the ObjectStore. */
export interface PodObjects {
  get(key: string): Materialized | undefined;
  list(kind: string): Materialized[];
  append(key: string, input: AppendInput): unknown;
  onChange(listener: (keys: string[]) => void): () => void;
}

/** A node of the mesh as the agent sees it, for placement explanations. */
export interface MeshNodeView {
  readonly name: string;
  readonly reachable: boolean;
}

export type SlotPhase = 'pending' | 'starting' | 'running' | 'failed' | 'stopped';

/** `status.slots.<i>` of a pod, as the runtime controller writes it. */
export interface SlotStatus {
  node: string;
  phase: SlotPhase;
  runningRevision?: string;
  ports: Record<string, number>;
  pid?: number;
  restarts: number;
  lastError?: string;
  updatedAt: number;
}

export interface PodAgentTuning {
  /** How often running containers are checked (crash loops, exits) and desired slots re-read. */
  pollMs: number;
  /** Status changes within this window are written as one record. */
  statusDelayMs: number;
  /** Doc changes within this window are reconciled once. */
  reconcileDelayMs: number;
  /** A failed start is tried again after this, doubling up to `retryMaxMs`. */
  retryInitialMs: number;
  retryMaxMs: number;
  stopGraceMs: number;
  healthTimeoutMs: number;
  /** Timeout of steps that set none (plugin steps). */
  stepTimeoutMs: number;
  portCooldownMs: number;
  /** How long `stop()` waits for operations in flight before it returns anyway. */
  stopWaitMs: number;
}

export const defaultPodAgentTuning: PodAgentTuning = Object.freeze({
  pollMs: 2000,
  statusDelayMs: 200,
  reconcileDelayMs: 20,
  retryInitialMs: 5000,
  retryMaxMs: 300_000,
  stopGraceMs: 10_000,
  healthTimeoutMs: 60_000,
  stepTimeoutMs: 30_000,
  portCooldownMs: DEFAULT_PORT_COOLDOWN_MS,
  stopWaitMs: 5000,
});

export interface PodAgentOptions {
  readonly objects: PodObjects;
  readonly driver: RuntimeDriver;
  readonly node: { readonly name: string; readonly peerId: string };
  readonly clock: Clock;
  readonly logger: Logger;
  /** Where pod dirs, logs, slot records and journals live (must be traversable by uid 65534). */
  readonly dataDir: string;
  readonly pluginSteps?: readonly StepDefinition[];
  /** The slots this node should run now; called on every reconcile. */
  readonly desiredSlots: () => DesiredSlot[];
  /**
   * Tells the agent when `desiredSlots()` changed (a claim, a lost lease), so a slot starts or stops at
   * once rather than at the next poll. Returns an unsubscribe.
   */
  readonly onDesiredChange?: (listener: () => void) => () => void;
  /** Nodes of the mesh, for "pinned to host X, which is not a node of this mesh". */
  readonly meshNodes?: () => readonly MeshNodeView[];
  /** Why a pod does not run here (undefined when it should); defaults to the pinned-host explanation. */
  readonly explainPlacement?: (pod: Pod) => string | undefined;
  readonly portRange?: PortRange;
  readonly tuning?: Partial<PodAgentTuning>;
  /**
   * This node's policy, as read from its file (the operator's half of the double opt-in); read at every
   * reconcile, so a reloaded policy applies to the next one. Default: no policy, nothing allowed.
   */
  readonly nodePolicy?: () => LoadedNodePolicy;
}

export interface ContainerView {
  name: string;
  state: ContainerStatus['state'];
  pid?: number;
  supervisorPid?: number;
  restarts: number;
  lastError?: string;
  exitCode?: number;
}

export interface SlotView {
  slot: number;
  unit: string;
  phase: SlotPhase;
  runningRevision?: string;
  leaseEpoch?: number;
  ports: Record<string, number>;
  containers: ContainerView[];
  restarts: number;
  lastError?: string;
  startedAt?: number;
  /** Taken over from a previous daemon rather than started by this one. */
  adopted: boolean;
  /** When a failed start is tried again. */
  nextAttemptAt?: number;
}

/** `describeLocal`: what this node runs of a pod. */
export interface LocalPodView {
  pod: string;
  node: string;
  slots: SlotView[];
}

export interface SlotWhy extends SlotView {
  /** One line: the journal's summary plus runtime facts (crash loop, next attempt). */
  summary: string;
  snapshot?: WhySnapshot;
}

/** `meshd why pod X` as this node answers it. */
export interface WhyReport {
  pod: string;
  node: string;
  /** One line per slot here, or why the pod is not here. */
  summary: string;
  /** Why the pod is not run by this node, when it is not. */
  placement?: string;
  slots: SlotWhy[];
}

export interface LogsOptions {
  container?: string;
  /** Which replica slot on this node (the lowest by default). */
  slot?: number;
  stream?: 'stdout' | 'stderr';
  tail?: number;
  follow?: boolean;
  signal?: AbortSignal;
}

interface Target {
  pod: string;
  slot: number;
  leaseEpoch: number;
  revision: string;
  spec: PodSpec;
  specHash: string;
  /** Absent when the pod asks for nothing beyond the default sandbox. */
  security?: SecurityDecision;
}

interface ActiveRun {
  input: PodRunInput;
  specHash: string;
  state: PodRunState;
  runner: GraphRunner;
  outputs: Record<string, StepOutput>;
  reached: boolean;
  startedAt: number;
  adopted: boolean;
}

interface Unit {
  readonly key: string;
  readonly pod: string;
  readonly slot: number;
  readonly journal: PodJournal;
  target: Target | undefined;
  active: ActiveRun | undefined;
  /** A record found at agent start: taken over before anything else happens to the slot. */
  restoreFrom: SlotRecord | undefined;
  phase: SlotPhase;
  lastError: string | undefined;
  /** Ports of the last run, kept by the next one (in-place restart, retry). */
  lastPorts: Record<string, number>;
  containers: Map<string, ContainerStatus>;
  logFiles: Record<string, { stdout: string; stderr: string }>;
  /** The last failure of this spec here and the next attempt; the streak doubles the wait. */
  retry: { specHash: string; streak: number; failedAt: number; at: number; timer: TimerHandle } | undefined;
  op: Promise<void> | undefined;
  dirty: boolean;
  statusTimer: TimerHandle | undefined;
  /**
   * Set by the poll when that run is to be replaced, and why: nothing of it is left and nothing will
   * restart it (started again after a failure backoff), or, with `now`, another program took one of its
   * ports (started again at once: the new start moves the port).
   */
  lost: { run: ActiveRun; why: string; now?: boolean } | undefined;
}

export class PodAgent {
  private readonly opts: PodAgentOptions;
  private readonly tuning: PodAgentTuning;
  private readonly log: Logger;
  private readonly files: PodSlotFiles;
  private readonly ports: PortAllocator;
  private readonly units = new Map<string, Unit>();
  private readonly timers: TimerHandle[] = [];
  private unsubscribe: (() => void) | undefined;
  private reconcileTimer: TimerHandle | undefined;
  private polling: Promise<void> | undefined;
  private started = false;
  /** No new operations (agent stopping). */
  private stopping = false;
  /** Nothing is written to the document any more. */
  private closed = false;

  constructor(opts: PodAgentOptions) {
    this.opts = opts;
    this.tuning = { ...defaultPodAgentTuning, ...opts.tuning };
    this.log = opts.logger.child({ node: opts.node.name });
    this.files = new PodSlotFiles(opts.dataDir, this.log);
    this.ports = new PortAllocator({
      clock: opts.clock,
      ...(opts.portRange === undefined ? {} : { range: opts.portRange }),
      firstPort: firstPortFor(opts.node.peerId, opts.portRange),
      cooldownMs: this.tuning.portCooldownMs,
    });
  }

  /** Takes over the slots recorded on disk and starts reconciling. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.files.ensureDirs();
    for (const rec of this.files.loadRecords()) {
      const u = this.unit(rec.input.pod, rec.input.slot);
      u.restoreFrom = rec;
      u.lastPorts = { ...rec.ports };
      u.logFiles = { ...rec.logFiles };
    }
    const offObjects = this.opts.objects.onChange(() => this.scheduleReconcile());
    const offDesired = this.opts.onDesiredChange?.(() => this.scheduleReconcile());
    this.unsubscribe = () => {
      offObjects();
      offDesired?.();
    };
    this.timers.push(this.opts.clock.setInterval(() => void this.poll(), this.tuning.pollMs));
    this.reconcile();
  }

  /**
   * Stops reconciling and leaves every pod running (pods outlive the daemon). Waits a bounded time
   * for operations in flight, writes pending status changes, and saves the journals.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.unsubscribe?.();
    for (const t of this.timers.splice(0)) t.cancel();
    this.reconcileTimer?.cancel();
    for (const u of this.units.values()) u.retry?.timer.cancel();
    const inFlight = [...this.units.values()].flatMap((u) => (u.op === undefined ? [] : [u.op]));
    if (inFlight.length > 0) {
      let timer: TimerHandle | undefined;
      await Promise.race([
        Promise.allSettled(inFlight),
        new Promise<void>((resolve) => {
          timer = this.opts.clock.setTimeout(resolve, this.tuning.stopWaitMs);
        }),
      ]);
      timer?.cancel();
    }
    for (const u of this.units.values()) {
      if (u.statusTimer !== undefined) {
        u.statusTimer.cancel();
        u.statusTimer = undefined;
        this.flushStatus(u);
      }
      u.journal.flush();
    }
    this.closed = true;
    await this.files.flush();
  }

  /**
   * Re-reads the desired slots and every container's state now, waits for the operations that sets
   * going, and writes pending status changes. For callers that need fresh facts (tests, `describe`).
   */
  async check(): Promise<void> {
    if (this.stopping) return;
    this.reconcileTimer?.cancel();
    this.reconcileTimer = undefined;
    await this.poll();
    // Bounded: the periodic poll may set new (short) operations going meanwhile.
    for (let round = 0; round < 20; round++) {
      const ops = [...this.units.values()].flatMap((u) => (u.op === undefined ? [] : [u.op]));
      if (ops.length === 0) break;
      await Promise.allSettled(ops);
    }
    for (const u of [...this.units.values()]) {
      if (u.statusTimer !== undefined) {
        u.statusTimer.cancel();
        u.statusTimer = undefined;
        this.flushStatus(u);
      }
      if (u.op === undefined) this.forgetIfGone(u);
    }
  }

  /** Why pod `name` is (not) running on this node; undefined if neither the document nor this node knows it. */
  why(name: string): WhyReport | undefined {
    const m = this.opts.objects.get(`pod/${name}`);
    const units = this.unitsOf(name);
    if ((m === undefined || m.object === null) && units.length === 0) return undefined;
    const placement = this.placementOf(name, m);
    const slots: SlotWhy[] = units.map((u) => {
      const view = this.view(u);
      const snapshot = u.journal.snapshot();
      return {
        ...view,
        summary: this.slotSummary(u, view, snapshot),
        ...(snapshot === undefined ? {} : { snapshot }),
      };
    });
    const lines = slots.map((s) => s.summary);
    if (placement !== undefined)
      lines.unshift(`pod ${name}: not run by node ${this.opts.node.name}: ${placement}`);
    return {
      pod: name,
      node: this.opts.node.name,
      summary: lines.join('\n'),
      ...(placement === undefined ? {} : { placement }),
      slots,
    };
  }

  /** What this node runs of pod `name` (revision, pids, ports per slot); undefined if nothing. */
  describeLocal(name: string): LocalPodView | undefined {
    const units = this.unitsOf(name).filter((u) => u.active !== undefined || u.phase !== 'stopped');
    if (units.length === 0) return undefined;
    return { pod: name, node: this.opts.node.name, slots: units.map((u) => this.view(u)) };
  }

  /** Every slot this node runs or tried to run, by pod. */
  listLocal(): LocalPodView[] {
    const names = [...new Set([...this.units.values()].map((u) => u.pod))].sort();
    return names.flatMap((n) => {
      const v = this.describeLocal(n);
      return v === undefined ? [] : [v];
    });
  }

  /**
   * Lines of a container's log on this node. Throws NotFoundError at once (not on iteration) when
   * this node has no such pod, slot or container.
   */
  logs(name: string, opts: LogsOptions = {}): AsyncIterable<string> {
    const units = this.unitsOf(name).filter((u) => Object.keys(u.logFiles).length > 0);
    const u = opts.slot === undefined ? units[0] : units.find((x) => x.slot === opts.slot);
    if (u === undefined) {
      const placement = this.placementOf(name, this.opts.objects.get(`pod/${name}`));
      throw new NotFoundError(
        'E_NO_LOGS',
        `node ${this.opts.node.name} has no logs of pod ${name}${opts.slot === undefined ? '' : ` slot ${opts.slot}`}${placement === undefined ? '' : `: ${placement}`}`,
        {
          hint: `Run \`meshd why pod ${name}\` to see where it runs and whether it started.`,
          details: { pod: name, node: this.opts.node.name },
        },
      );
    }
    const spec = u.active?.input.spec ?? u.target?.spec;
    const container = opts.container ?? spec?.containers[0]?.name ?? Object.keys(u.logFiles)[0] ?? '';
    const files = u.logFiles[container];
    if (files === undefined) {
      const known = Object.keys(u.logFiles).sort().join(', ');
      throw new NotFoundError(
        'E_NO_LOGS',
        `pod ${name} has no container ${container} on node ${this.opts.node.name}`,
        {
          hint: `Name one of its containers: ${known}.`,
          details: { pod: name, container },
        },
      );
    }
    return this.opts.driver.logs(opts.stream === 'stderr' ? files.stderr : files.stdout, {
      ...(opts.tail === undefined ? {} : { tail: opts.tail }),
      ...(opts.follow === undefined ? {} : { follow: opts.follow }),
      ...(opts.signal === undefined ? {} : { signal: opts.signal }),
    });
  }

  // ---- reconciling ---------------------------------------------------------------------------------

  private scheduleReconcile(): void {
    if (this.stopping || this.reconcileTimer !== undefined) return;
    this.reconcileTimer = this.opts.clock.setTimeout(() => {
      this.reconcileTimer = undefined;
      this.reconcile();
    }, this.tuning.reconcileDelayMs);
  }

  /** Computes every slot's target from the desired slots and the document, and sets slots converging. */
  private reconcile(): void {
    if (this.stopping) return;
    const targets = new Map<string, Target>();
    let desired: DesiredSlot[] = [];
    try {
      desired = this.opts.desiredSlots();
    } catch (err) {
      this.log.error('desired slots unavailable', { error: describeError(err) });
      return;
    }
    for (const d of desired) {
      const t = this.targetOf(d);
      if (t !== undefined) targets.set(unitName(d.pod, d.slot), t);
    }
    for (const [key, t] of targets) {
      const u = this.units.get(key) ?? this.unit(t.pod, t.slot);
      u.target = t;
    }
    for (const u of this.units.values()) {
      if (!targets.has(u.key)) u.target = undefined;
      this.kick(u);
    }
  }

  private targetOf(d: DesiredSlot): Target | undefined {
    const m = this.opts.objects.get(`pod/${d.pod}`);
    if (m?.object == null) return undefined;
    let pod: Pod;
    try {
      pod = podFromStored(m.object);
    } catch (err) {
      this.log.error('stored pod unreadable', { pod: d.pod, error: describeError(err) });
      return undefined;
    }
    const security = this.securityOf(pod.spec);
    return {
      pod: d.pod,
      slot: d.slot,
      leaseEpoch: d.leaseEpoch,
      revision: specRevision(m) ?? m.revision ?? '?',
      spec: pod.spec,
      specHash: runtimeSpecHash(pod.spec, security),
      ...(security === undefined ? {} : { security }),
    };
  }

  /** The double opt-in for the pod on this node; undefined when it asks for nothing (the default sandbox). */
  private securityOf(spec: PodSpec): SecurityDecision | undefined {
    if (spec.security === undefined) return undefined;
    const policy = this.opts.nodePolicy?.() ?? emptyNodePolicy('(no node policy configured)');
    const decision = decideSecurity(spec.security, policy);
    return 'granted' in decision && grantsNothing(decision.granted) ? undefined : decision;
  }

  private unit(pod: string, slot: number): Unit {
    const key = unitName(pod, slot);
    const known = this.units.get(key);
    if (known !== undefined) return known;
    const journalOpts = { clock: this.opts.clock, sink: this.files.journalSink(), logger: this.log };
    const stored = this.files.loadJournal(key);
    let journal: PodJournal;
    try {
      journal =
        stored === undefined
          ? new PodJournal(key, journalOpts)
          : PodJournal.fromJSON(key, stored, journalOpts);
    } catch (err) {
      this.log.warn('journal unreadable; starting a new one', { pod, slot, error: describeError(err) });
      journal = new PodJournal(key, journalOpts);
    }
    const u: Unit = {
      key,
      pod,
      slot,
      journal,
      target: undefined,
      active: undefined,
      restoreFrom: undefined,
      phase: 'pending',
      lastError: undefined,
      lastPorts: {},
      containers: new Map(),
      logFiles: {},
      retry: undefined,
      op: undefined,
      dirty: false,
      statusTimer: undefined,
      lost: undefined,
    };
    this.units.set(key, u);
    return u;
  }

  /** Runs `converge` for the slot unless an operation is in flight (which converges again after). */
  private kick(u: Unit): void {
    if (this.stopping) return;
    if (u.op !== undefined) {
      u.dirty = true;
      return;
    }
    u.dirty = false;
    u.op = this.converge(u)
      .catch((err: unknown) => {
        this.log.error('slot operation failed', { pod: u.pod, slot: u.slot, error: describeError(err) });
      })
      .finally(() => {
        u.op = undefined;
        if (u.dirty) this.kick(u);
        else this.forgetIfGone(u);
      });
  }

  private async converge(u: Unit): Promise<void> {
    while (!this.stopping) {
      u.dirty = false;
      const rec = u.restoreFrom;
      if (rec !== undefined) {
        u.restoreFrom = undefined;
        await this.restore(u, rec);
        continue;
      }
      const t = u.target;
      const a = u.active;
      const lost = u.lost;
      u.lost = undefined;
      if (a !== undefined && lost?.run === a) {
        await this.stopRun(u, `containers lost: ${lost.why}`);
        if (t !== undefined && lost.now !== true) this.failed(u, t, lost.why);
        continue;
      }
      if (a !== undefined) {
        if (t === undefined) {
          await this.stopRun(u, 'the pod is no longer to run on this node');
          u.phase = 'stopped';
          u.lastError = undefined;
          this.scheduleStatus(u);
          continue;
        }
        if (t.specHash !== a.specHash) {
          await this.stopRun(u, `spec changed (revision ${t.revision}): restarting in place`);
          continue;
        }
        if (t.leaseEpoch !== a.input.leaseEpoch) {
          // The environment cannot change under a running process: a copy left on an older epoch would
          // hand stale fencing tokens to what it writes, so it restarts with the lease it holds now.
          await this.stopRun(
            u,
            `lease epoch changed (${a.input.leaseEpoch} → ${t.leaseEpoch}): restarting with the new MESHD_LEASE_EPOCH`,
          );
          continue;
        }
        if (t.revision !== a.input.revision) {
          // Same runtime spec under a newer revision (replicas, placement...): nothing restarts.
          a.input.revision = t.revision;
          if (a.reached) this.saveRecord(u, a);
          this.scheduleStatus(u);
        }
        return;
      }
      if (t === undefined) {
        // Not to run here any more: a failed slot stops failing (and retrying) here.
        u.retry?.timer.cancel();
        u.retry = undefined;
        if (u.phase === 'failed' || u.phase === 'starting') {
          u.phase = 'stopped';
          u.lastError = undefined;
          this.scheduleStatus(u);
        }
        return;
      }
      if (u.retry !== undefined && u.retry.specHash === t.specHash && this.opts.clock.now() < u.retry.at)
        return;
      await this.startRun(u, t);
    }
  }

  /** Takes over a run recorded by a previous agent; falls back to a fresh start when it is gone. */
  private async restore(u: Unit, rec: SlotRecord): Promise<void> {
    const target: Target = {
      pod: rec.input.pod,
      slot: rec.input.slot,
      leaseEpoch: rec.input.leaseEpoch,
      revision: rec.input.revision,
      spec: rec.input.spec,
      specHash: rec.specHash,
    };
    const restore: RestoreInput = {
      ports: rec.ports,
      stateFiles: rec.stateFiles,
      outputs: rec.outputs,
      complete: rec.reached,
    };
    const ok = await this.startRun(u, target, { restore, input: rec.input, startedAt: rec.startedAt });
    if (!ok)
      this.log.info('recorded pod slot no longer runs; starting it again', { pod: u.pod, slot: u.slot });
  }

  /** One run of the slot's graph. Returns whether it reached running.target. */
  private async startRun(
    u: Unit,
    t: Target,
    restoring?: { restore: RestoreInput; input: PodRunInput; startedAt: number },
  ): Promise<boolean> {
    const input: PodRunInput = restoring?.input ?? {
      pod: t.pod,
      slot: t.slot,
      unit: u.key,
      node: this.opts.node.name,
      revision: t.revision,
      leaseEpoch: t.leaseEpoch,
      spec: t.spec,
      podDir: this.files.podDir(u.key),
      logDir: this.files.logDir(u.key),
      ...(t.security === undefined ? {} : { security: t.security }),
    };
    const outputs: Record<string, StepOutput> = {};
    let active: ActiveRun | undefined;
    const state = newRunState(u.lastPorts, {
      ...(restoring === undefined ? {} : { restore: restoring.restore }),
      onHandle: (name, h) => {
        u.logFiles[name] = { ...h.logFiles };
        if (active !== undefined) this.saveRecord(u, active);
      },
    });
    const stepOpts: PodStepsOptions = {
      driver: this.opts.driver,
      ports: this.ports,
      clock: this.opts.clock,
      stopGraceMs: this.tuning.stopGraceMs,
      healthTimeoutMs: this.tuning.healthTimeoutMs,
    };
    const defs = [...builtinPodSteps(stepOpts, state), ...(this.opts.pluginSteps ?? [])].map((d) =>
      recordingStep(d, outputs, restoring?.restore),
    );
    let graph: ReturnType<typeof buildStepGraph>;
    try {
      graph = buildStepGraph(defs);
    } catch (err) {
      // A plugin step that does not fit the graph: no run can start until node config is fixed.
      this.failed(u, t, `the lifecycle graph is invalid: ${describeError(err)}`);
      return false;
    }
    const recorder = u.journal.beginRun(graph, { node: this.opts.node.name });
    const runner = new GraphRunner(graph, {
      clock: this.opts.clock,
      pod: { pod: t.pod, node: this.opts.node.name, attempt: recorder.attempt, spec: input },
      logger: this.log.child({ slot: t.slot }),
      defaultTimeoutMs: this.tuning.stepTimeoutMs,
      observer: recorder,
    });
    active = {
      input,
      specHash: t.specHash,
      state,
      runner,
      outputs,
      // A run being re-adopted keeps its record complete: a kill -9 during adoption must not turn it
      // into an interrupted start (which would restart a pod that never stopped).
      reached: restoring?.restore.complete === true,
      startedAt: restoring?.startedAt ?? this.opts.clock.now(),
      adopted: restoring !== undefined,
    };
    u.active = active;
    u.containers.clear();
    if (restoring === undefined) {
      u.phase = 'starting';
      u.lastError = undefined;
      this.scheduleStatus(u);
    }
    const result = await runner.start();
    if (result.reachedGoal) {
      active.reached = true;
      u.lastPorts = { ...state.ports };
      if (u.retry?.specHash !== t.specHash) u.retry = undefined;
      this.saveRecord(u, active);
      u.phase = 'running';
      u.lastError = undefined;
      await this.refresh(u, active);
      this.scheduleStatus(u);
      if (restoring === undefined)
        this.log.info('pod slot running', { pod: u.pod, slot: u.slot, revision: t.revision });
      return true;
    }
    const reason = startFailure(result);
    await this.stopRun(u, `start failed: ${reason}`);
    if (restoring === undefined) this.failed(u, t, reason);
    return false;
  }

  /** Marks the slot failed and schedules another attempt with capped doubling backoff. */
  private failed(u: Unit, t: Target, reason: string): void {
    const now = this.opts.clock.now();
    // A failure long after the previous one starts a new streak.
    const recent =
      u.retry?.specHash === t.specHash &&
      now - u.retry.failedAt < 2 * this.tuning.retryMaxMs + this.tuning.retryInitialMs;
    const streak = recent && u.retry !== undefined ? u.retry.streak + 1 : 0;
    const delay = Math.min(this.tuning.retryMaxMs, this.tuning.retryInitialMs * 2 ** Math.min(streak, 20));
    u.retry?.timer.cancel();
    const at = now + delay;
    const timer = this.opts.clock.setTimeout(() => this.kick(u), delay);
    u.retry = { specHash: t.specHash, streak, failedAt: now, at, timer };
    u.phase = 'failed';
    u.lastError = reason;
    this.scheduleStatus(u);
    this.log.warn('pod slot failed', { pod: u.pod, slot: u.slot, error: reason, retryInMs: delay });
  }

  /** Stops the slot's current run (the graph in reverse) and forgets it. */
  private async stopRun(u: Unit, reason: string): Promise<void> {
    const a = u.active;
    if (a === undefined) return;
    const result = await a.runner.stop(reason);
    if (result.errors.length > 0) {
      const text = result.errors.map((e) => `${e.step}: ${e.error}`).join('; ');
      this.log.warn('pod slot stop had errors', { pod: u.pod, slot: u.slot, error: text });
      u.lastError = `stop: ${text}`;
    }
    if (Object.keys(a.state.ports).length > 0) u.lastPorts = { ...a.state.ports };
    u.active = undefined;
    u.containers.clear();
    this.files.removeRecord(u.key);
  }

  /** Drops a slot that has nothing to do and whose pod no longer exists (with its journal). */
  private forgetIfGone(u: Unit): void {
    if (u.active !== undefined || u.target !== undefined || u.restoreFrom !== undefined) return;
    if (u.statusTimer !== undefined) return;
    if (this.opts.objects.get(`pod/${u.pod}`)?.object != null) return;
    u.retry?.timer.cancel();
    u.journal.flush();
    this.units.delete(u.key);
    void this.files.flush().then(() => this.files.removeJournal(u.key));
  }

  private saveRecord(u: Unit, a: ActiveRun): void {
    const rec: SlotRecord = {
      version: SLOT_RECORD_VERSION,
      unit: u.key,
      input: a.input,
      specHash: a.specHash,
      reached: a.reached,
      ports: { ...a.state.ports },
      stateFiles: Object.fromEntries([...a.state.handles].map(([n, h]) => [n, h.stateFile])),
      logFiles: { ...u.logFiles },
      outputs: a.outputs,
      startedAt: a.startedAt,
    };
    try {
      this.files.saveRecord(rec);
    } catch (err) {
      this.log.error('slot record not saved: the pod will not be re-adopted after a restart', {
        pod: u.pod,
        slot: u.slot,
        error: describeError(err),
      });
    }
  }

  // ---- watching running containers ---------------------------------------------------------------

  /** Periodic: re-reads desired slots and checks every running container. */
  private async poll(): Promise<void> {
    if (this.stopping) return;
    if (this.polling !== undefined) return this.polling;
    this.polling = this.pollOnce().finally(() => {
      this.polling = undefined;
    });
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    await Promise.all(
      [...this.units.values()].map(async (u) => {
        const a = u.active;
        if (a === undefined || !a.reached || u.op !== undefined) return;
        await this.refresh(u, a);
      }),
    );
    this.reconcile();
  }

  /** Reads the containers' status and derives the slot's phase; a lost run is stopped and retried. */
  private async refresh(u: Unit, a: ActiveRun): Promise<void> {
    const statuses = await Promise.all(
      [...a.state.handles].map(async ([name, h]) => [name, await this.statusOf(h)] as const),
    );
    if (u.active !== a) return;
    u.containers = new Map(statuses);
    const health = slotHealth(a.input.spec.restartPolicy, statuses);
    u.phase = health.phase;
    u.lastError = health.lastError;
    this.scheduleStatus(u);
    if (health.lost) {
      // Nothing of the pod runs any more and nothing will restart it: start it again (with backoff).
      u.lost = { run: a, why: health.lastError ?? 'the containers are gone' };
      this.kick(u);
      return;
    }
    const taken = await this.portsTakenWhileDown(u, statuses);
    if (taken !== undefined && u.active === a && u.op === undefined) {
      this.log.warn('pod port taken by another program; moving the pod to a free port', {
        pod: u.pod,
        slot: u.slot,
        ports: taken,
      });
      u.lost = {
        run: a,
        why: `port ${taken.join(', ')} taken by another program while the pod restarted`,
        now: true,
      };
      this.kick(u);
    }
  }

  /**
   * The slot's ports that something else listens on while none of its containers runs and one waits
   * to restart: a pod that lost its port in a race with another program (or another node on this host)
   * would otherwise restart into "address in use" forever. Undefined when there is nothing to move.
   */
  private async portsTakenWhileDown(
    u: Unit,
    statuses: readonly (readonly [string, ContainerStatus])[],
  ): Promise<number[] | undefined> {
    if (statuses.length === 0) return undefined;
    // 'backoff': its supervisor means to start it again (a container that exited for good stays so).
    const down = statuses.every(([, s]) => !s.running && (s.state === 'backoff' || s.state === 'exited'));
    if (!down || !statuses.some(([, s]) => s.state === 'backoff')) return undefined;
    const taken = await this.ports.takenByOthers(u.key);
    return taken.length > 0 ? taken : undefined;
  }

  private async statusOf(h: ContainerHandle): Promise<ContainerStatus> {
    try {
      return await this.opts.driver.status(h);
    } catch (err) {
      return unknownStatus(`status unavailable: ${describeError(err)}`);
    }
  }

  // ---- status in the document --------------------------------------------------------------------

  private scheduleStatus(u: Unit): void {
    if (this.closed || u.statusTimer !== undefined) return;
    u.statusTimer = this.opts.clock.setTimeout(() => {
      u.statusTimer = undefined;
      this.flushStatus(u);
      if (u.op === undefined) this.forgetIfGone(u);
    }, this.tuning.statusDelayMs);
  }

  /** Writes the slot's status if it differs from the document's (updatedAt aside). */
  private flushStatus(u: Unit): void {
    if (this.closed) return;
    const m = this.opts.objects.get(`pod/${u.pod}`);
    if (m?.object == null) return; // deleted: nothing to report on
    // Status has its own object, so the pod's revision numbers count spec changes only.
    const key = podStatusKey(u.pod);
    const st = this.opts.objects.get(key)?.object;
    const slots = isPlainObject(st?.status) && isPlainObject(st.status.slots) ? st.status.slots : {};
    const current = slots[String(u.slot)];
    const currentNode = isPlainObject(current) ? current.node : undefined;
    const ours = u.active !== undefined || u.target !== undefined;
    // A slot this node gave up and another node reported since is that node's to write.
    if (!ours && currentNode !== this.opts.node.name) return;
    const next = this.statusFor(u, m);
    let patch: JsonValue | undefined;
    if (next === null) {
      patch = current === undefined ? undefined : null;
    } else {
      const same =
        isPlainObject(current) &&
        diffMergePatch({ ...current, updatedAt: 0 }, { ...(next as unknown as JsonObject), updatedAt: 0 }) ===
          undefined;
      patch = same ? undefined : diffMergePatch(current, next as unknown as JsonObject);
    }
    if (patch === undefined) return;
    try {
      this.opts.objects.append(key, {
        controller: 'runtime',
        kind: 'system',
        author: { peer: this.opts.node.peerId, host: this.opts.node.name, actor: 'runtime' },
        message: next === null ? `slot ${u.slot} removed` : `slot ${u.slot} ${next.phase}`,
        patch: { status: { slots: { [String(u.slot)]: patch } } },
      });
    } catch (err) {
      this.log.warn('status not written', { pod: u.pod, slot: u.slot, error: describeError(err) });
    }
  }

  /** The slot's status to report; null to remove the slot's entry (the pod has fewer replicas now). */
  private statusFor(u: Unit, m: Materialized): SlotStatus | null {
    const a = u.active;
    if (a === undefined && u.phase === 'stopped') {
      const replicas = (() => {
        try {
          return podFromStored(m.object as JsonObject).spec.replicas;
        } catch {
          return 0;
        }
      })();
      if (u.slot >= replicas) return null;
    }
    const containers = inSpecOrder(a, u.containers);
    const pid = u.containers.size > 0 ? containers.find((c) => c.pid !== undefined)?.pid : firstPid(a);
    const restarts = containers.reduce((n, c) => n + c.restarts, 0);
    const status: SlotStatus = {
      node: this.opts.node.name,
      phase: u.phase,
      ports: a === undefined ? {} : { ...a.state.ports },
      restarts,
      updatedAt: this.opts.clock.now(),
    };
    if (a?.reached) status.runningRevision = a.input.revision;
    if (a !== undefined && pid !== undefined && pid > 0) status.pid = pid;
    if (u.lastError !== undefined) status.lastError = clip(u.lastError);
    return status;
  }

  // ---- views -------------------------------------------------------------------------------------

  private unitsOf(pod: string): Unit[] {
    return [...this.units.values()].filter((u) => u.pod === pod).sort((a, b) => a.slot - b.slot);
  }

  private view(u: Unit): SlotView {
    const a = u.active;
    const containers: ContainerView[] = [];
    for (const spec of a?.input.spec.containers ?? []) {
      const name = spec.name;
      const h = a?.state.handles.get(name);
      if (h === undefined) continue;
      const s = u.containers.get(name);
      const pid = s?.pid ?? (s === undefined ? h.pid : undefined);
      containers.push({
        name,
        state: s?.state ?? 'unknown',
        ...(pid === undefined || pid === 0 ? {} : { pid }),
        ...(s?.supervisorAlive === false ? {} : { supervisorPid: h.supervisorPid }),
        restarts: s?.restarts ?? 0,
        ...(s?.lastError === undefined ? {} : { lastError: s.lastError }),
        ...(s?.exitCode === undefined ? {} : { exitCode: s.exitCode }),
      });
    }
    return {
      slot: u.slot,
      unit: u.key,
      phase: u.phase,
      ...(a?.reached === true ? { runningRevision: a.input.revision } : {}),
      ...(a === undefined ? {} : { leaseEpoch: a.input.leaseEpoch, startedAt: a.startedAt }),
      ports: a === undefined ? {} : { ...a.state.ports },
      containers,
      restarts: containers.reduce((n, c) => n + c.restarts, 0),
      ...(u.lastError === undefined ? {} : { lastError: u.lastError }),
      adopted: a?.adopted ?? false,
      ...(u.retry === undefined || u.active !== undefined || u.phase !== 'failed'
        ? {}
        : { nextAttemptAt: u.retry.at }),
    };
  }

  private slotSummary(u: Unit, view: SlotView, snapshot: WhySnapshot | undefined): string {
    const parts = [snapshot === undefined ? `pod ${u.key}: ${view.phase}` : renderSummary(snapshot)];
    if (view.adopted) parts.push('taken over from the previous daemon');
    const looping = view.containers.filter((c) => c.restarts > 0);
    for (const c of looping) {
      parts.push(
        `container ${c.name} restarted ${c.restarts} time${c.restarts === 1 ? '' : 's'}${c.lastError === undefined ? '' : ` (last: ${c.lastError})`}${c.state === 'backoff' ? ', waiting to restart' : ''}`,
      );
    }
    if (view.phase === 'failed' && view.lastError !== undefined && snapshot?.status !== 'stopped') {
      parts.push(`failed: ${view.lastError}`);
    }
    for (const c of view.containers) {
      if (c.restarts === 0 && (c.state === 'exited' || c.state === 'failed')) {
        parts.push(`container ${c.name} ${c.state}${c.lastError === undefined ? '' : `: ${c.lastError}`}`);
      }
    }
    if (view.nextAttemptAt !== undefined) {
      const inMs = Math.max(0, view.nextAttemptAt - this.opts.clock.now());
      parts.push(`next attempt in ${Math.ceil(inMs / 1000)} s`);
    }
    return parts.join('; ');
  }

  private placementOf(name: string, m: Materialized | undefined): string | undefined {
    if (m === undefined || m.object === null)
      return m?.deleted === true ? 'the pod was deleted' : 'no such pod';
    let wanted = false;
    try {
      wanted = this.opts.desiredSlots().some((d) => d.pod === name);
    } catch {
      // Desired slots unavailable: explain from the spec alone.
    }
    if (wanted) return undefined;
    let pod: Pod;
    try {
      pod = podFromStored(m.object);
    } catch (err) {
      return `the stored pod is unreadable: ${describeError(err)}`;
    }
    if (this.opts.explainPlacement !== undefined) return this.opts.explainPlacement(pod);
    return explainPinned(pod, this.opts.node.name, this.opts.meshNodes?.());
  }
}

// ---- pure parts ------------------------------------------------------------------------------------

/** For this issue's placement: every pod pinned to `nodeName` (spec.placement.host), slots 0..replicas-1. */
export function pinnedSlots(objects: Pick<PodObjects, 'list'>, nodeName: string): DesiredSlot[] {
  const out: DesiredSlot[] = [];
  for (const m of objects.list('pod')) {
    if (m.object === null) continue;
    let pod: Pod;
    try {
      pod = podFromStored(m.object);
    } catch {
      continue;
    }
    const host = pod.spec.placement?.host;
    if (host === undefined || host.toLowerCase() !== nodeName.toLowerCase()) continue;
    for (let slot = 0; slot < pod.spec.replicas; slot++) out.push({ pod: pod.name, slot, leaseEpoch: 0 });
  }
  return out;
}

/** Why a pod does not run on `here` under pinned placement; undefined if it should. */
export function explainPinned(
  pod: Pod,
  here: string,
  nodes: readonly MeshNodeView[] | undefined,
): string | undefined {
  const host = pod.spec.placement?.host;
  if (host === undefined)
    return 'it is not pinned to a host (spec.placement.host), and only pinned pods are placed so far';
  if (host.toLowerCase() === here.toLowerCase()) return undefined;
  const node = nodes?.find((n) => n.name.toLowerCase() === host.toLowerCase());
  if (nodes !== undefined && node === undefined)
    return `pinned to host ${host}, which is not a node of this mesh`;
  if (node !== undefined && !node.reachable) return `pinned to host ${host}, which is unreachable`;
  return `pinned to host ${host}; that node runs it and answers for it`;
}

/** Label of the last user revision that took effect: the spec revision a slot runs. */
export function specRevision(m: Materialized): string | undefined {
  for (let i = m.history.length - 1; i >= 0; i--) {
    const h = m.history[i];
    if (h !== undefined && h.controller === 'user' && h.rejected === undefined && h.pending !== true)
      return h.revision;
  }
  return undefined;
}

/**
 * Hash of what a running slot is made of: a change restarts it; replicas or placement do not. With a
 * security decision (the pod asks for a relaxation), what the node grants or refuses is part of it: a
 * policy change that grants or withdraws something restarts the slot (a refused one starts at once).
 */
export function runtimeSpecHash(spec: PodSpec, security?: SecurityDecision): string {
  const relevant = {
    containers: spec.containers,
    restartPolicy: spec.restartPolicy,
    ...(spec.security === undefined ? {} : { security: spec.security }),
    ...(security === undefined ? {} : { grant: decisionEssence(security) }),
  };
  return createHash('sha256')
    .update(canonicalJson(relevant as unknown as JsonValue))
    .digest('hex')
    .slice(0, 16);
}

/** A slot's phase from its containers' status. `lost`: nothing runs and nothing will restart it by itself. */
export function slotHealth(
  policy: RestartPolicy,
  containers: readonly (readonly [string, ContainerStatus])[],
): { phase: SlotPhase; lastError: string | undefined; lost: boolean } {
  let lastError: string | undefined;
  const note = (name: string, s: ContainerStatus) => {
    if (s.lastError !== undefined) lastError = `container ${name}: ${s.lastError}`;
  };
  const dead = containers.filter(
    ([, s]) =>
      s.state === 'failed' ||
      s.state === 'unknown' ||
      (!s.supervisorAlive && s.state !== 'exited' && s.state !== 'stopped'),
  );
  if (dead.length > 0) {
    for (const [n, s] of dead) note(n, s);
    return { phase: 'failed', lastError: lastError ?? 'a container is gone', lost: policy !== 'never' };
  }
  for (const [n, s] of containers) if (s.restarts > 0 || s.state === 'exited') note(n, s);
  const exited = containers.filter(([, s]) => s.state === 'exited' || s.state === 'stopped');
  if (exited.length > 0) {
    const failedExit = exited.some(([, s]) => s.exitCode !== 0 || s.signal !== undefined);
    if (failedExit) return { phase: 'failed', lastError, lost: false };
    if (exited.length === containers.length) return { phase: 'stopped', lastError: undefined, lost: false };
  }
  return { phase: 'running', lastError, lost: false };
}

/** The step and reason that kept a run from its goal: `process.start: exec: python4: not found`. */
function startFailure(result: StartResult): string {
  const root =
    result.failures.find((f) => f.state !== 'dependency-failed' && f.state !== 'skipped') ??
    result.failures[0];
  if (root === undefined) return `${result.goal} not reached`;
  const step = root.rootCause ?? root.step;
  const state = FAILED_STATES.includes(root.state) && root.state !== 'failed' ? ` ${root.state}` : '';
  return `${step}${state}: ${root.error}`;
}

/** Records what each step returns (restore runs hand it back), and lets plugin steps skip on restore. */
function recordingStep(
  def: StepDefinition,
  outputs: Record<string, StepOutput>,
  restore: RestoreInput | undefined,
): StepDefinition {
  const start = def.start;
  if (start === undefined) return def;
  return {
    ...def,
    start: async (ctx, signal) => {
      if (restore !== undefined && !BUILTIN_POD_STEPS.includes(def.name)) {
        // A plugin step already ran when the pod started: its output is handed back, it does not run again.
        const saved = restore.outputs[def.name];
        if (saved !== undefined) outputs[def.name] = saved;
        return saved;
      }
      const out = await start(ctx, signal);
      if (out !== undefined && typeof out === 'object' && out !== null) outputs[def.name] = out;
      return out;
    },
  };
}

function firstPid(a: ActiveRun | undefined): number | undefined {
  for (const c of a?.input.spec.containers ?? []) {
    const pid = a?.state.handles.get(c.name)?.pid;
    if (pid !== undefined && pid > 0) return pid;
  }
  return undefined;
}

/** Container statuses in the order the spec lists the containers. */
function inSpecOrder(
  a: ActiveRun | undefined,
  statuses: ReadonlyMap<string, ContainerStatus>,
): ContainerStatus[] {
  const order = a?.input.spec.containers.map((c) => c.name) ?? [];
  return [...statuses]
    .sort(([x], [y]) => order.indexOf(x) - order.indexOf(y) || (x < y ? -1 : 1))
    .map(([, s]) => s);
}

function clip(text: string): string {
  return text.length <= 500 ? text : `${text.slice(0, 499)}…`;
}
