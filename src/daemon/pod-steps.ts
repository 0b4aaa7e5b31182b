// Built-in pod lifecycle steps over a RuntimeDriver: host ports, security grant, sandbox check, container start, health probe.
//
// Each run of a pod slot gets fresh step definitions bound to its PodRunState (no state outlives a
// run here). A run can also *restore* instead of start: after a daemon restart the steps take over
// the ports and containers that still run, so stopping them later runs the same graph in reverse.

import { connect } from 'node:net';
import type { StepDefinition, StepOutput } from '../lifecycle/step-graph.ts';
import { NETWORK_TARGET, RUNNING_TARGET, SANDBOX_TARGET } from '../lifecycle/step-graph.ts';
import type {
  ContainerHandle,
  ContainerLimits,
  ContainerStatus,
  RuntimeDriver,
  SandboxRelaxations,
} from '../runtime/driver.ts';
import type { Clock } from '../shared/clock.ts';
import { describeError, MeshdError } from '../shared/errors.ts';
import { type ContainerSpec, type PodSpec, parseCpu, parseMemory, portEnvName } from '../state/pod-spec.ts';
import type { PortAllocator } from './port-allocator.ts';
import { describeGrant, refusalError, resolveGrant, type SecurityDecision } from './security-grant.ts';

export const PORTS_ALLOCATE = 'ports.allocate';
export const SECURITY_GRANT = 'security.grant';
export const SANDBOX_PREPARE = 'sandbox.prepare';
export const PROCESS_START = 'process.start';
export const HEALTH_CHECK = 'health.check';
export const BUILTIN_POD_STEPS: readonly string[] = Object.freeze([
  PORTS_ALLOCATE,
  SECURITY_GRANT,
  SANDBOX_PREPARE,
  PROCESS_START,
  HEALTH_CHECK,
]);

export const DEFAULT_STOP_GRACE_MS = 10_000;
export const DEFAULT_HEALTH_TIMEOUT_MS = 60_000;
export const DEFAULT_PROCESS_START_TIMEOUT_MS = 45_000;

/** What every step of a pod slot's run sees as `ctx.spec` (exec hooks read it on stdin). JSON only. */
export interface PodRunInput {
  /** Pod name, e.g. `web`. */
  pod: string;
  slot: number;
  /** The slot's unit name, `web.0`: names its directories, cgroups and journal. */
  unit: string;
  node: string;
  /** Revision label of the spec being run. */
  revision: string;
  leaseEpoch: number;
  spec: PodSpec;
  podDir: string;
  logDir: string;
  /**
   * The double opt-in for `spec.security` on this node (security-grant.ts), decided when the run was
   * planned; absent when the pod asks for nothing beyond the default sandbox.
   */
  security?: SecurityDecision;
}

/** What a restore run takes over instead of starting. */
export interface RestoreInput {
  readonly ports: Readonly<Record<string, number>>;
  /** Container name → its supervisor state file. */
  readonly stateFiles: Readonly<Record<string, string>>;
  /** Outputs the steps returned when the run was started. */
  readonly outputs: Readonly<Record<string, StepOutput>>;
  /** The run had reached its goal. If not, the daemon died mid-start: what runs is stopped and started again. */
  readonly complete: boolean;
}

/** The mutable facts of one run, shared by its steps and read by the pod agent. */
export interface PodRunState {
  /** Ports the slot had before (an in-place restart keeps them when still free). */
  readonly preferredPorts: Readonly<Record<string, number>>;
  ports: Record<string, number>;
  /** Started (or adopted) containers, by name. */
  readonly handles: Map<string, ContainerHandle>;
  /** What security.grant granted, checked against the host; undefined: the default sandbox. */
  relax: SandboxRelaxations | undefined;
  /** Starts not yet returned: a stop waits for them so nothing they start is left behind. */
  readonly pending: Set<Promise<unknown>>;
  /** Set for a re-adoption run. */
  readonly restore?: RestoreInput;
  /** Called whenever a container is started or adopted (the agent records it at once). */
  readonly onHandle?: (container: string, handle: ContainerHandle) => void;
}

export interface PodStepsOptions {
  readonly driver: RuntimeDriver;
  readonly ports: PortAllocator;
  readonly clock: Clock;
  /** TERM → KILL grace when a container is stopped. */
  readonly stopGraceMs?: number;
  /** How long health.check keeps probing before it fails. */
  readonly healthTimeoutMs?: number;
  readonly processStartTimeoutMs?: number;
}

export function newRunState(
  preferredPorts: Readonly<Record<string, number>>,
  extra: { restore?: RestoreInput; onHandle?: (container: string, handle: ContainerHandle) => void } = {},
): PodRunState {
  return {
    preferredPorts,
    ports: {},
    handles: new Map(),
    relax: undefined,
    pending: new Set(),
    ...(extra.restore === undefined ? {} : { restore: extra.restore }),
    ...(extra.onHandle === undefined ? {} : { onHandle: extra.onHandle }),
  };
}

/** The built-in steps of one run, ordered under the standard targets. */
export function builtinPodSteps(opts: PodStepsOptions, run: PodRunState): StepDefinition[] {
  const { driver, clock } = opts;
  const graceMs = opts.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
  const healthTimeoutMs = opts.healthTimeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
  return [
    {
      name: PORTS_ALLOCATE,
      source: 'built-in',
      description: 'allocate a host port for each named port (PORT_<NAME>)',
      requiredBy: [NETWORK_TARGET],
      start: async (ctx) => {
        const input = ctx.spec as PodRunInput;
        if (run.restore !== undefined) {
          opts.ports.claim(input.unit, run.restore.ports);
          run.ports = { ...run.restore.ports };
          return { ports: { ...run.ports } };
        }
        const names = podPortNames(input.spec);
        const got = await opts.ports.allocate(input.unit, names, run.preferredPorts);
        run.ports = Object.fromEntries(Object.entries(got).map(([n, a]) => [n, a.port]));
        for (const [name, a] of Object.entries(got)) {
          if (a.movedFrom !== undefined)
            ctx.logger.warn('port moved', { port: name, from: a.movedFrom, to: a.port });
        }
        return { ports: { ...run.ports } };
      },
      stop: async (ctx) => {
        opts.ports.release((ctx.spec as PodRunInput).unit);
      },
    },
    {
      name: SECURITY_GRANT,
      source: 'built-in',
      description: "grant what spec.security asks for if this node's policy allows it (double opt-in)",
      requiredBy: [SANDBOX_TARGET],
      start: async (ctx) => {
        const input = ctx.spec as PodRunInput;
        if (run.restore !== undefined) return run.restore.outputs[SECURITY_GRANT];
        const decision = input.security;
        if (decision === undefined) return { granted: 'nothing (the default sandbox)' };
        if ('refused' in decision) throw withHint(refusalError(decision));
        try {
          const relax = await resolveGrant(decision.granted);
          run.relax = Object.keys(relax).length === 0 ? undefined : relax;
        } catch (err) {
          throw withHint(err);
        }
        return { granted: describeGrant(decision.granted) };
      },
    },
    {
      name: SANDBOX_PREPARE,
      source: 'built-in',
      description: 'check the host can sandbox the pod (bubblewrap, cgroups, paths)',
      requiredBy: [SANDBOX_TARGET],
      start: async (ctx) => {
        const input = ctx.spec as PodRunInput;
        if (run.restore !== undefined) return run.restore.outputs[SANDBOX_PREPARE];
        try {
          const report = await driver.prepare({ podKey: input.unit, podDir: input.podDir });
          for (const w of report.warnings) ctx.logger.warn('sandbox warning', { warning: w });
          return {
            bwrap: report.bwrapVersion,
            uid: report.sandboxUser.uid,
            cgroup: report.cgroup.mode,
            warnings: [...report.warnings],
          };
        } catch (err) {
          throw withHint(err);
        }
      },
    },
    {
      name: PROCESS_START,
      source: 'built-in',
      description: 'start every container under its own supervisor',
      requires: [SANDBOX_TARGET],
      requiredBy: [RUNNING_TARGET],
      timeoutMs: Math.max(opts.processStartTimeoutMs ?? DEFAULT_PROCESS_START_TIMEOUT_MS, graceMs + 20_000),
      start: async (ctx) => {
        const input = ctx.spec as PodRunInput;
        if (run.restore !== undefined) return restoreContainers(driver, input, run);
        const starts = input.spec.containers.map((c) => {
          const p = driver
            .start({
              podKey: input.unit,
              podDir: input.podDir,
              logDir: input.logDir,
              container: {
                name: c.name,
                command: containerArgv(c, run.ports),
                restart: input.spec.restartPolicy,
              },
              env: c.env ?? {},
              ports: run.ports,
              limits: containerLimits(c),
              leaseEpoch: input.leaseEpoch,
              podName: input.pod,
              slot: input.slot,
              node: input.node,
              ...(run.relax === undefined ? {} : { security: run.relax }),
            })
            .then((h) => {
              run.handles.set(c.name, h);
              run.onHandle?.(c.name, h);
              return h;
            });
          run.pending.add(p);
          void p.then(
            () => run.pending.delete(p),
            () => run.pending.delete(p),
          );
          return p.catch((err: unknown) => {
            throw new Error(`container ${c.name}: ${describeError(withHint(err))}`, { cause: err });
          });
        });
        const results = await Promise.allSettled(starts);
        const failed = results.find((r) => r.status === 'rejected');
        if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
        return { containers: containersOutput(run) };
      },
      stop: async () => {
        await Promise.allSettled([...run.pending]);
        const errors: string[] = [];
        await Promise.all(
          [...run.handles].map(async ([name, h]) => {
            try {
              await driver.stop(h, graceMs);
            } catch (err) {
              errors.push(`container ${name}: ${describeError(err)}`);
            }
          }),
        );
        if (errors.length > 0) throw new Error(errors.join('; '));
      },
    },
    {
      name: HEALTH_CHECK,
      source: 'built-in',
      description: 'wait until every container with a health probe passes it',
      requires: [PROCESS_START],
      requiredBy: [RUNNING_TARGET],
      timeoutMs: healthTimeoutMs + 5000,
      start: async (ctx, signal) => {
        const input = ctx.spec as PodRunInput;
        if (run.restore !== undefined) return run.restore.outputs[HEALTH_CHECK];
        const probed = input.spec.containers.filter((c) => c.health !== undefined);
        if (probed.length === 0) return { probes: {} };
        const results = await Promise.all(
          probed.map(async (c) => {
            const handle = run.handles.get(c.name);
            if (handle === undefined) throw new Error(`container ${c.name} was not started`);
            const text = await waitHealthy(
              { driver, clock, timeoutMs: healthTimeoutMs, signal },
              c,
              handle,
              run.ports,
            );
            return [c.name, text] as const;
          }),
        );
        return { probes: Object.fromEntries(results) };
      },
    },
  ];
}

/** Every port name the pod declares, in container order (names are unique in a pod). */
export function podPortNames(spec: PodSpec): string[] {
  return spec.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name));
}

/** `command` + `args`, with `${PORT_<NAME>}` replaced by the allocated port. */
export function containerArgv(c: ContainerSpec, ports: Readonly<Record<string, number>>): string[] {
  const byEnv = new Map(Object.entries(ports).map(([name, port]) => [portEnvName(name), String(port)]));
  return [...c.command, ...(c.args ?? [])].map((arg) =>
    arg.replace(/\$\{(PORT_[A-Za-z0-9_]*)\}/g, (whole, ref: string) => byEnv.get(ref) ?? whole),
  );
}

/** cgroup limits from the container's resources (memory bytes, CPU cores). */
export function containerLimits(c: ContainerSpec): ContainerLimits {
  const limits: ContainerLimits = {};
  const memory = c.resources?.memory === undefined ? undefined : parseMemory(c.resources.memory);
  const milli = c.resources?.cpu === undefined ? undefined : parseCpu(c.resources.cpu);
  if (memory !== undefined) limits.memoryBytes = memory;
  if (milli !== undefined) limits.cpuCores = milli / 1000;
  return limits;
}

function containersOutput(run: PodRunState): StepOutput {
  return Object.fromEntries(
    [...run.handles].map(([name, h]) => [
      name,
      { pid: h.pid, supervisorPid: h.supervisorPid, stateFile: h.stateFile },
    ]),
  );
}

async function restoreContainers(
  driver: RuntimeDriver,
  input: PodRunInput,
  run: PodRunState,
): Promise<StepOutput> {
  const restore = run.restore as RestoreInput;
  const gone: string[] = [];
  await Promise.all(
    input.spec.containers.map(async (c) => {
      const file = restore.stateFiles[c.name];
      const handle = file === undefined ? undefined : await driver.adopt(file);
      if (handle === undefined) gone.push(c.name);
      else {
        run.handles.set(c.name, handle);
        run.onHandle?.(c.name, handle);
      }
    }),
  );
  if (!restore.complete) {
    throw new MeshdError(
      'E_ADOPT',
      'the daemon stopped while the pod was starting; what had started is stopped and the pod started again',
      { hint: 'Nothing to do: the pod agent starts the slot afresh.' },
    );
  }
  if (gone.length > 0) {
    gone.sort();
    throw new MeshdError(
      'E_ADOPT',
      `container${gone.length > 1 ? 's' : ''} ${gone.join(', ')} no longer run${gone.length > 1 ? '' : 's'} (supervisor gone, e.g. after a host reboot); the pod is started again`,
      { hint: 'Nothing to do: the pod agent starts the slot afresh.' },
    );
  }
  return { containers: containersOutput(run), adopted: true };
}

/** A MeshdError's hint becomes part of the message, so the journal (which keeps messages) shows it. */
export function withHint(err: unknown): Error {
  if (err instanceof MeshdError && err.hint !== undefined && !err.message.includes(err.hint)) {
    return new Error(`${err.message} — ${err.hint}`, { cause: err });
  }
  return err instanceof Error ? err : new Error(String(err));
}

interface ProbeDeps {
  readonly driver: RuntimeDriver;
  readonly clock: Clock;
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
}

/**
 * Probes one container until it passes, it dies, or `timeoutMs` passes. Retries start fast (a server
 * that binds within 100 ms is seen at once) and slow down to the probe's interval, at most 1 s.
 */
async function waitHealthy(
  deps: ProbeDeps,
  c: ContainerSpec,
  handle: ContainerHandle,
  ports: Readonly<Record<string, number>>,
): Promise<string> {
  const probe = c.health as NonNullable<ContainerSpec['health']>;
  if ('exec' in probe && deps.driver.exec === undefined) {
    throw new Error(
      `container ${c.name}: this runtime driver cannot run exec probes; use a tcp or http probe`,
    );
  }
  const began = deps.clock.now();
  const deadline = began + deps.timeoutMs;
  const perProbeMs = probe.timeoutSeconds * 1000;
  let wait = 100;
  let tries = 0;
  let last = 'not probed yet';
  for (;;) {
    deps.signal.throwIfAborted();
    const status = await deps.driver.status(handle);
    if (!status.running && status.state !== 'backoff' && status.state !== 'starting') {
      throw new Error(
        `container ${c.name} is not running (${describeContainer(status)}) while waiting for its health probe`,
      );
    }
    tries++;
    const problem = status.running
      ? await probeOnce(deps, probe, handle, ports, perProbeMs)
      : describeContainer(status);
    if (problem === undefined)
      return `${describeProbe(probe, ports)} passed after ${tries} probe${tries > 1 ? 's' : ''}`;
    last = problem;
    const left = deadline - deps.clock.now();
    if (left <= 0) {
      throw new Error(
        `container ${c.name} not healthy after ${Math.round((deps.clock.now() - began) / 100) / 10} s: ${describeProbe(probe, ports)}: ${last} (${tries} probes)`,
      );
    }
    await sleep(deps.clock, Math.min(wait, left), deps.signal);
    wait = Math.min(wait * 2, probe.intervalSeconds * 1000, 1000);
  }
}

/** `tcp 127.0.0.1:30001 (http)`. */
function describeProbe(
  probe: NonNullable<ContainerSpec['health']>,
  ports: Readonly<Record<string, number>>,
): string {
  if ('tcp' in probe) return `tcp 127.0.0.1:${ports[probe.tcp.port]} (${probe.tcp.port})`;
  if ('http' in probe) return `http://127.0.0.1:${ports[probe.http.port]}${probe.http.path}`;
  return `exec ${probe.exec.command.join(' ')}`;
}

function describeContainer(s: ContainerStatus): string {
  return `${s.state}${s.lastError === undefined ? '' : `: ${s.lastError}`}`;
}

/** One probe; undefined when it passed, else why not. */
async function probeOnce(
  deps: ProbeDeps,
  probe: NonNullable<ContainerSpec['health']>,
  handle: ContainerHandle,
  ports: Readonly<Record<string, number>>,
  timeoutMs: number,
): Promise<string | undefined> {
  if ('exec' in probe) {
    if (deps.driver.exec === undefined) return 'this runtime driver cannot run exec probes';
    try {
      const r = await deps.driver.exec(handle, probe.exec.command, { timeoutMs, signal: deps.signal });
      if (r.timedOut) return `no answer within ${timeoutMs} ms`;
      if (r.exitCode === 0) return undefined;
      const how =
        r.exitCode === null ? `killed by ${r.signal ?? 'a signal'}` : `exited with code ${r.exitCode}`;
      return `${how}${r.output === '' ? '' : `: ${r.output.split('\n').slice(-3).join(' | ')}`}`;
    } catch (err) {
      return describeError(err);
    }
  }
  const name = 'tcp' in probe ? probe.tcp.port : probe.http.port;
  const port = ports[name];
  if (port === undefined) return `port ${name} has no host port`;
  const controller = new AbortController();
  const timer = deps.clock.setTimeout(
    () => controller.abort(new Error(`no answer within ${timeoutMs} ms`)),
    timeoutMs,
  );
  const onAbort = () => controller.abort(deps.signal.reason);
  deps.signal.addEventListener('abort', onAbort, { once: true });
  try {
    if ('tcp' in probe) return await tcpProbe(port, controller.signal);
    const res = await fetch(`http://127.0.0.1:${port}${probe.http.path}`, {
      signal: controller.signal,
      redirect: 'manual',
    });
    await res.body?.cancel();
    return res.status >= 200 && res.status < 400 ? undefined : `HTTP ${res.status}`;
  } catch (err) {
    if (controller.signal.aborted) return describeError(controller.signal.reason);
    const cause = (err as { cause?: unknown }).cause;
    if ((cause as NodeJS.ErrnoException | undefined)?.code === 'ECONNREFUSED') return 'connection refused';
    return describeError(cause ?? err);
  } finally {
    timer.cancel();
    deps.signal.removeEventListener('abort', onAbort);
  }
}

function tcpProbe(port: number, signal: AbortSignal): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    const done = (result: string | undefined) => {
      signal.removeEventListener('abort', onAbort);
      sock.destroy();
      resolve(result);
    };
    const onAbort = () => done(describeError(signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', () => done(undefined));
    sock.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'ECONNREFUSED' ? 'connection refused' : err.message),
    );
  });
}

/** Resolves after `ms` on `clock`; rejects with the signal's reason if it aborts first. */
function sleep(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      timer.cancel();
      reject(signal.reason);
    };
    const timer = clock.setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
