// The runtime driver contract the lifecycle steps call: prepare, start, stop, status, adopt, logs.

import { MeshdError } from '../shared/errors.ts';

export type RestartPolicy = 'always' | 'on-failure' | 'never';

/** What the driver needs of one container of a pod spec. */
export interface ContainerSpec {
  /** A path component: letters, digits, '.', '_' and '-', at most 63 characters. */
  name: string;
  /** argv; `command[0]` is looked up on PATH inside the sandbox (which sees /usr only). */
  command: readonly string[];
  restart?: RestartPolicy;
}

export interface ContainerLimits {
  memoryBytes?: number;
  /** CPU time as a number of cores (0.5 = half a core), enforced as a CFS quota. */
  cpuCores?: number;
  /** Maximum tasks (processes + threads); defaults to 256. */
  pids?: number;
  /** Size of the private /tmp; defaults to 64 MiB. */
  tmpBytes?: number;
}

/** A host path bound into the sandbox: a granted `security.hostPaths` entry. */
export interface HostPathMount {
  /** Where the pod sees it: the path it asked for. */
  readonly path: string;
  /** The host path bound there: `path` with symlinks resolved, as checked against the node policy. */
  readonly source: string;
  readonly readOnly: boolean;
}

/**
 * Relaxations of the default sandbox. Each one was asked for by the pod (`spec.security`) AND allowed by
 * the node operator's policy: the double opt-in is decided before the driver (src/daemon/security-grant.ts);
 * the driver applies what it is given. Absent or empty: the default sandbox, unchanged.
 */
export interface SandboxRelaxations {
  /** Recorded only: the sandbox shares the host network namespace today anyway (see sandbox-args.ts). */
  readonly hostNetwork?: boolean;
  readonly hostPaths?: readonly HostPathMount[];
  /** Device nodes bound at the same path (`/dev/fuse`). */
  readonly devices?: readonly string[];
  /** Canonical names (`CAP_NET_BIND_SERVICE`), kept by the sandbox user in the pod's own user namespace. */
  readonly capabilities?: readonly string[];
  /**
   * No bubblewrap at all: the command runs as the sandbox user under its supervisor, in its cgroup, with
   * the sandbox's cleared environment. Host paths and devices are then simply the host's own.
   */
  readonly unsandboxed?: boolean;
}

export interface StartRequest {
  podKey: string;
  /** The pod's data dir; each container gets `<podDir>/<name>/work` as its writable cwd. */
  podDir: string;
  logDir: string;
  container: ContainerSpec;
  /** The container's own variables (the sandbox adds PATH, HOME, MESHD_* and PORT_*). */
  env: Readonly<Record<string, string>>;
  /** Ports the node allocated, by name: passed as PORT_<NAME>. */
  ports: Readonly<Record<string, number>>;
  limits: ContainerLimits;
  leaseEpoch: number;
  /** MESHD_POD when `podKey` names one replica slot (`web.0`) rather than the pod; `podKey` otherwise. */
  podName?: string;
  /** MESHD_SLOT: the replica slot this container belongs to. */
  slot?: number;
  /** MESHD_NODE: the node running the container. */
  node?: string;
  /** Granted relaxations; absent for the default sandbox (the launch is then exactly as without it). */
  security?: SandboxRelaxations;
}

/** Enough to find, check and signal a running container after a daemon restart. */
export interface ContainerHandle {
  podKey: string;
  container: string;
  stateFile: string;
  /**
   * The container's main process (host pid) and its start time in clock ticks since boot; 0 when it had
   * already exited by the time start() looked (status() has its exit).
   */
  pid: number;
  startTime: number;
  supervisorPid: number;
  supervisorStartTime: number;
  leaseEpoch: number;
  specHash: string;
  logFiles: { stdout: string; stderr: string };
}

export type ContainerState =
  | 'starting'
  | 'running'
  | 'backoff'
  | 'stopping'
  | 'stopped'
  | 'exited'
  | 'failed';

export interface CgroupReport {
  mode: 'v1' | 'v2' | 'hybrid' | 'none';
  /** Limits in force, by controller. */
  applied: { memoryBytes?: number; cpuCores?: number; pids?: number };
  /** Controllers (or limits) that could not be applied, with the reason. */
  missing: { controller: string; reason: string }[];
}

export interface ContainerStatus {
  running: boolean;
  state: ContainerState | 'unknown';
  /** The current container process, when one runs. */
  pid: number | undefined;
  /** Exit code of the last run (128 + n when killed by signal n). */
  exitCode: number | undefined;
  signal: string | undefined;
  restarts: number;
  lastError: string | undefined;
  supervisorAlive: boolean;
  cgroup: CgroupReport | undefined;
  /** Sandbox spawn to the container's exec, for the current run. */
  startLatencyMs: number | undefined;
}

/** The status of a container nothing can be learned about (no state, or the driver failed), and why. */
export function unknownStatus(lastError: string): ContainerStatus {
  return {
    running: false,
    state: 'unknown',
    pid: undefined,
    exitCode: undefined,
    signal: undefined,
    restarts: 0,
    lastError,
    supervisorAlive: false,
    cgroup: undefined,
    startLatencyMs: undefined,
  };
}

export interface PrepareReport {
  bwrapPath: string;
  bwrapVersion: string;
  /** Host uid/gid the sandbox runs as (65534 when the daemon is root). */
  sandboxUser: { uid: number; gid: number };
  cgroup: { mode: CgroupReport['mode']; controllers: Record<string, string> };
  warnings: string[];
}

export interface LogReadOptions {
  /** Last N lines first (across rotated files); all lines when omitted. */
  tail?: number;
  /** Keep yielding new lines until `signal` aborts. */
  follow?: boolean;
  signal?: AbortSignal;
}

/** How a command run with `exec` ended; `output` is the tail of its stdout and stderr. */
export interface ExecResult {
  exitCode: number | null;
  signal: string | null;
  /** The command ran past `timeoutMs` (or `signal` aborted) and was killed. */
  timedOut: boolean;
  output: string;
}

export interface ExecOptions {
  timeoutMs: number;
  signal?: AbortSignal;
}

export interface RuntimeDriver {
  /** Checks the host can run the pod sandboxed (never falls back to an unsandboxed run). */
  prepare(pod: { podKey: string; podDir: string }): Promise<PrepareReport>;
  /** Starts a container under its own supervisor; resolves once the process runs, rejects with the reason. */
  start(req: StartRequest): Promise<ContainerHandle>;
  /** TERM, then KILL after `graceMs`; removes the cgroup. */
  stop(handle: ContainerHandle, graceMs: number): Promise<ContainerStatus>;
  status(handle: ContainerHandle): Promise<ContainerStatus>;
  /** A handle for a container still running under its supervisor, or undefined (gone, or a recycled pid). */
  adopt(stateFile: string): Promise<ContainerHandle | undefined>;
  logs(path: string, opts: LogReadOptions): AsyncIterable<string>;
  /**
   * Runs `command` once beside a running container (exec health probes): the same sandbox and
   * filesystem view, never an unsandboxed process. Rejects only when it cannot run at all.
   */
  exec?(handle: ContainerHandle, command: readonly string[], opts: ExecOptions): Promise<ExecResult>;
}

/** The host cannot sandbox: bubblewrap missing or broken, or an unsupported architecture. */
export class SandboxUnavailableError extends MeshdError {
  constructor(
    message: string,
    opts: { hint?: string; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super('E_SANDBOX_UNAVAILABLE', message, {
      hint: 'Install bubblewrap: `apt-get install bubblewrap`.',
      ...opts,
    });
  }
}

/** A path the sandbox must bind is not reachable by the sandbox user. */
export class SandboxPathError extends MeshdError {}

/** The container did not start; `message` is the reason (e.g. "exec: python4: not found"). */
export class ProcessStartError extends MeshdError {}
