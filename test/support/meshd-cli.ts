// Drives the real `meshd` CLI in child processes, one data dir per node, and cleans up every daemon it started.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DataDir, processStartTime } from '../../src/daemon/data-dir.ts';
import { killSupervisorsUnder } from './pod-world.ts';
import { waitFor } from './wait-for.ts';

export const meshdBin = fileURLToPath(new URL('../../bin/meshd.js', import.meta.url));
export const loopback = ['--listen', '/ip4/127.0.0.1/tcp/0'];

/** The last line a command printed: where `init` prints the join token and `dashboard` its URL. */
export const lastLine = (text: string): string => text.trim().split('\n').at(-1) ?? '';

/** A TCP port on 127.0.0.1 that was free a moment ago: for nodes that must come back on the same address. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address !== null
          ? resolve(address.port)
          : reject(new Error('no port')),
      );
    });
  });
}

/** `--listen` flags for a fixed loopback port. */
export async function fixedLoopback(): Promise<string[]> {
  return ['--listen', `/ip4/127.0.0.1/tcp/${await freePort()}`];
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  input?: string;
  /**
   * Run inside this network namespace (`/run/netns/NAME`, made by the test), through `nsenter --net`: only
   * the network changes (mounts and cgroups stay the host's). A daemon started detached stays in it.
   */
  netns?: string;
}

/** Runs `meshd ARGS` to completion (bounded by timeoutMs; the process is killed past it). */
export function runMeshd(args: string[], opts: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const argv = [process.execPath, meshdBin, ...args];
    if (opts.netns !== undefined) argv.unshift('nsenter', `--net=/run/netns/${opts.netns}`, '--');
    const [command = process.execPath, ...rest] = argv;
    const child = spawn(command, rest, {
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `meshd ${args.join(' ')} did not finish in ${opts.timeoutMs ?? 60_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`,
        ),
      );
    }, opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** A set of data dirs under one temp root; `cleanup()` kills every daemon left and removes the files. */
export class MeshFixture {
  readonly root: string;
  private readonly dirs = new Set<string>();

  private constructor(root: string) {
    this.root = root;
  }

  static async create(prefix = 'meshd-e2e-'): Promise<MeshFixture> {
    const root = await mkdtemp(join(tmpdir(), prefix));
    // Sandboxed pods run as uid 65534 and must traverse down to their directories under each data dir.
    await chmod(root, 0o711);
    return new MeshFixture(root);
  }

  dataDir(name: string): string {
    const dir = join(this.root, name);
    this.dirs.add(dir);
    return dir;
  }

  /** Runs meshd against node `name`'s data dir and throws (with its output) unless it exits 0. */
  async ok(name: string, args: string[], opts: RunOptions = {}): Promise<string> {
    const res = await runMeshd([...args, '--data-dir', this.dataDir(name)], opts);
    if (res.code !== 0) {
      throw new Error(
        `meshd ${args.join(' ')} (${name}) exited ${res.code}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`,
      );
    }
    return res.stdout;
  }

  /**
   * Forms a mesh through the CLI: `meshd init` on the first of `nodes`, then `meshd join` on each other one in
   * turn, every daemon detached. `initFlags` go to `init` only (`--name`); `flags(node)` gives a node's own
   * (its `--listen`, say). Returns the join token `init` printed.
   */
  async form(
    nodes: readonly string[],
    opts: { initFlags?: string[]; flags?: (node: string) => string[] | Promise<string[]> } = {},
  ): Promise<string> {
    const [first, ...rest] = nodes;
    if (first === undefined) throw new Error('form: no nodes');
    const flags = async (node: string) => (opts.flags === undefined ? [] : await opts.flags(node));
    const token = lastLine(
      await this.ok(first, [
        'init',
        ...(opts.initFlags ?? []),
        '--node-name',
        first,
        ...(await flags(first)),
        '--detach',
      ]),
    );
    for (const node of rest)
      await this.ok(node, ['join', token, '--node-name', node, ...(await flags(node)), '--detach']);
    return token;
  }

  run(name: string, args: string[], opts: RunOptions = {}): Promise<CliResult> {
    return runMeshd([...args, '--data-dir', this.dataDir(name)], opts);
  }

  async json<T>(name: string, args: string[]): Promise<T> {
    return JSON.parse(await this.ok(name, [...args, '-o', 'json'])) as T;
  }

  /** The pid of node `name`'s daemon from its pid file, if the file exists. */
  daemonPid(name: string): number | undefined {
    try {
      const pid = Number(fs.readFileSync(join(this.dataDir(name), 'meshd.pid'), 'utf8').split('\n')[0]);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  killDaemon(name: string, signal: NodeJS.Signals = 'SIGKILL'): number {
    const pid = this.daemonPid(name);
    if (pid === undefined) throw new Error(`no daemon pid for ${name}`);
    process.kill(pid, signal);
    return pid;
  }

  /**
   * A node's machine dies: its daemon is killed with SIGKILL and so is every pod it started (their
   * supervisors outlive a daemon by design). Returns the daemon's pid.
   */
  async crash(name: string): Promise<number> {
    const pid = this.killDaemon(name, 'SIGKILL');
    await killSupervisorsUnder(this.dataDir(name));
    return pid;
  }

  async cleanup(): Promise<void> {
    const killed: number[] = [];
    for (const dir of this.dirs) {
      // runningPid() checks the recorded start time, so a recycled pid is never killed by mistake.
      const pid = new DataDir(dir).runningPid();
      if (pid !== undefined) {
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      }
    }
    // A daemon dies a moment after the signal: wait, so that none starts a pod or writes a file meanwhile.
    // (processStartTime is undefined for a zombie too: a dead daemon nobody has reaped yet counts as gone.)
    await waitFor(() => killed.every((pid) => processStartTime(pid) === undefined), {
      timeoutMs: 10_000,
      what: 'the daemons to die',
    });
    // Pods outlive their daemon by design: kill every supervisor (and so its container) the nodes started.
    await killSupervisorsUnder(this.root);
    await rm(this.root, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  }
}

/** Whether `pid` runs: a zombie waiting to be reaped (a detached daemon's parent is slow) counts as dead. */
export function isAlive(pid: number): boolean {
  return processStartTime(pid) !== undefined;
}
