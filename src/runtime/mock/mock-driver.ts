// A runtime driver that runs nothing: every container counts as running at once. For scheduling benchmarks and tests (node config `runtime: "mock"`).
//
// A node on this driver claims, holds, reports and releases pod slots like any other node (the whole
// lifecycle graph runs, status reaches every peer), but no process, sandbox, cgroup or log file is made:
// `get pods` shows its slots running without a pid, logs are empty and exec health probes cannot run.
// Containers live in this object only, so a restarted daemon adopts none and "starts" its slots again.

import { join } from 'node:path';
import type {
  ContainerHandle,
  ContainerStatus,
  LogReadOptions,
  PrepareReport,
  RuntimeDriver,
  StartRequest,
} from '../driver.ts';

export function status(running: boolean): ContainerStatus {
  return {
    running,
    state: running ? 'running' : 'stopped',
    pid: undefined,
    exitCode: running ? undefined : 0,
    signal: undefined,
    restarts: 0,
    lastError: undefined,
    // No supervisor exists; "alive" keeps the agent from treating the container as lost.
    supervisorAlive: true,
    cgroup: undefined,
    startLatencyMs: undefined,
  };
}

export class MockDriver implements RuntimeDriver {
  /** State file path (the container's identity) → its handle, while "running". */
  private readonly running = new Map<string, ContainerHandle>();

  async prepare(): Promise<PrepareReport> {
    return {
      bwrapPath: '',
      bwrapVersion: 'none (mock runtime)',
      sandboxUser: { uid: 65534, gid: 65534 },
      cgroup: { mode: 'none', controllers: {} },
      warnings: [],
    };
  }

  async start(req: StartRequest): Promise<ContainerHandle> {
    const handle: ContainerHandle = {
      podKey: req.podKey,
      container: req.container.name,
      stateFile: join(req.podDir, req.container.name, 'mock-state'),
      pid: 0,
      startTime: 0,
      supervisorPid: 0,
      supervisorStartTime: 0,
      leaseEpoch: req.leaseEpoch,
      specHash: '',
      logFiles: {
        stdout: join(req.logDir, `${req.container.name}.stdout.log`),
        stderr: join(req.logDir, `${req.container.name}.stderr.log`),
      },
    };
    this.running.set(handle.stateFile, handle);
    return handle;
  }

  async stop(handle: ContainerHandle): Promise<ContainerStatus> {
    this.running.delete(handle.stateFile);
    return status(false);
  }

  async status(handle: ContainerHandle): Promise<ContainerStatus> {
    return status(this.running.has(handle.stateFile));
  }

  async adopt(stateFile: string): Promise<ContainerHandle | undefined> {
    return this.running.get(stateFile);
  }

  async *logs(_path: string, _opts: LogReadOptions): AsyncIterable<string> {
    // Nothing ever wrote to it.
  }
}
