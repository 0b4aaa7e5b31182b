// The files the daemon and a container's supervisor exchange: launch spec, state, stop request.
//
// The daemon never holds a pipe to a supervisor (a pipe would tie their lives together); it writes the
// launch file, reads the state file (written atomically: tmp + rename) and signals the supervisor pid.

import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { CgroupReport, ContainerLimits, ContainerState, RestartPolicy } from '../driver.ts';
import type { BackoffPolicy } from './restart-policy.ts';
import type { RotationPolicy } from './rotating-log.ts';

export interface LaunchSpec {
  version: 1;
  podKey: string;
  container: string;
  leaseEpoch: number;
  specHash: string;
  bwrapPath: string;
  /** Host uid/gid bwrap runs as; undefined keeps the supervisor's own. */
  hostUid: number | undefined;
  hostGid: number | undefined;
  /** bubblewrap options (through `--args`) and the command after `--`. */
  sandboxOptions: string[];
  command: string[];
  /**
   * Only for an unsandboxed container (double opt-in): `command` is the gate argv (`gateArgv` of
   * sandbox-args.ts), run without bwrap in `cwd` with exactly `env`; `sandboxOptions` is empty.
   * Absent from every default launch, which stays byte-identical.
   */
  unsandboxed?: { cwd: string; env: Record<string, string> };
  limits: ContainerLimits;
  restart: RestartPolicy;
  backoff: BackoffPolicy;
  logRotation: RotationPolicy;
  stdoutLog: string;
  stderrLog: string;
  stateFile: string;
  stopFile: string;
  /** The supervisor's own log (JSON lines, rotated). */
  supervisorLog: string;
  defaultGraceMs: number;
}

export interface LastExit {
  code: number | null;
  signal: string | null;
  at: number;
}

export interface SupervisorState {
  version: 1;
  podKey: string;
  container: string;
  supervisorPid: number;
  supervisorStartTime: number;
  /** The container's main process (inside: pid 2, under bwrap's reaper), 0 before the first run. */
  containerPid: number;
  containerStartTime: number;
  /** bwrap's pid-namespace init (inside: pid 1); SIGKILL to it ends every process of the container. */
  sandboxInitPid: number;
  state: ContainerState;
  /** Completed restarts (the first run is not a restart). */
  restarts: number;
  lastExit: LastExit | null;
  lastError: string | null;
  specHash: string;
  leaseEpoch: number;
  cgroup: (CgroupReport & { dirs: string[] }) | null;
  startLatencyMs: number | null;
  nextRestartAt: number | null;
  updatedAt: number;
}

export interface StopRequest {
  graceMs: number;
  requestedAt: number;
}

/** Writes JSON so a reader sees the old or the new content, never half of one. */
export function writeJsonAtomic(path: string, value: unknown, mode = 0o600): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode });
  renameSync(tmp, path);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const states: readonly string[] = [
  'starting',
  'running',
  'backoff',
  'stopping',
  'stopped',
  'exited',
  'failed',
];

/** Parses a state file; undefined when it is not one (a reader must never trust a malformed file). */
export function parseState(text: string): SupervisorState | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(v) || v.version !== 1) return undefined;
  const ints = [
    'supervisorPid',
    'supervisorStartTime',
    'containerPid',
    'containerStartTime',
    'sandboxInitPid',
    'restarts',
  ];
  for (const k of ints) if (!Number.isSafeInteger(v[k])) return undefined;
  if (typeof v.podKey !== 'string' || typeof v.container !== 'string' || typeof v.specHash !== 'string')
    return undefined;
  if (typeof v.state !== 'string' || !states.includes(v.state)) return undefined;
  if (typeof v.leaseEpoch !== 'number') return undefined;
  return v as unknown as SupervisorState;
}

export async function readState(path: string): Promise<SupervisorState | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  return text === undefined ? undefined : parseState(text);
}

export function readLaunchSync(path: string): LaunchSpec {
  const v = JSON.parse(readFileSync(path, 'utf8')) as unknown;
  if (!isObject(v) || v.version !== 1) throw new Error(`${path} is not a meshd launch file (version 1)`);
  return v as unknown as LaunchSpec;
}

export function readStopRequestSync(path: string): StopRequest | undefined {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    if (isObject(v) && typeof v.graceMs === 'number' && v.graceMs >= 0) return v as unknown as StopRequest;
  } catch {}
  return undefined;
}
