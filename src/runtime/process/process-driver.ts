// The process driver: runs each container in a bubblewrap sandbox under its own detached supervisor,
// and finds it again after a daemon restart by pid + process start time. Relaxations granted by the double
// opt-in (`StartRequest.security`) widen that sandbox, or for `unsandboxed` replace it by a cgroup-only gate.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { access, chmod, chown, mkdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Clock } from '../../shared/clock.ts';
import { describeError } from '../../shared/errors.ts';
import { type Logger, silentLogger } from '../../shared/logger.ts';
import {
  type ContainerHandle,
  type ContainerStatus,
  type ExecOptions,
  type ExecResult,
  type LogReadOptions,
  type PrepareReport,
  ProcessStartError,
  type RuntimeDriver,
  SandboxPathError,
  SandboxUnavailableError,
  type StartRequest,
  unknownStatus,
} from '../driver.ts';
import { killCgroupTasks, probeCgroupLayout, removeContainerCgroup } from './cgroup-limits.ts';
import { delay, liveClock } from './live-clock.ts';
import { readLogLines } from './log-reader.ts';
import { isSameProcess } from './proc-stat.ts';
import { type BackoffPolicy, defaultBackoff } from './restart-policy.ts';
import { DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, type RotationPolicy } from './rotating-log.ts';
import {
  buildSandboxArgs,
  checkContainerName,
  DEFAULT_TMP_BYTES,
  encodeArgs,
  gateArgv,
  SANDBOX_GID,
  SANDBOX_UID,
  sandboxEnv,
  sandboxIdentityFiles,
} from './sandbox-args.ts';
import { buildSeccompProgram } from './seccomp-filter.ts';
import {
  type LaunchSpec,
  readState,
  type StopRequest,
  type SupervisorState,
  writeJsonAtomic,
} from './supervisor-files.ts';

export interface ProcessDriverOptions {
  bwrapPath?: string;
  clock?: Clock;
  log?: Logger;
  /** Node binary that runs the supervisor (default: this process's). */
  nodePath?: string;
  backoff?: Partial<BackoffPolicy>;
  logRotation?: Partial<RotationPolicy>;
  /** How long start() waits for the container's exec. */
  startTimeoutMs?: number;
  /** Grace period when a supervisor is stopped without a stop request (e.g. by `kill`). */
  defaultGraceMs?: number;
  /**
   * A root-only directory for Node's compile cache: supervisors start ~2x faster from it. Never a shared
   * world-writable path (the cache holds code the root supervisor runs). Off when undefined.
   */
  compileCacheDir?: string;
}

export interface ContainerPaths {
  containerDir: string;
  workDir: string;
  runDir: string;
  launchFile: string;
  stateFile: string;
  stopFile: string;
  /** The supervisor's own JSON-line log (rotated, 1 MiB x 2). */
  supervisorLog: string;
  /** The supervisor's raw stderr: only a crash of the supervisor itself writes here. */
  supervisorStderr: string;
  passwdFile: string;
  groupFile: string;
  stdoutLog: string;
  stderrLog: string;
}

/** Where a container's files live; the daemon finds state files for `adopt` here. */
export function containerPaths(podDir: string, logDir: string, name: string): ContainerPaths {
  const containerDir = join(resolve(podDir), name);
  const runDir = join(containerDir, 'run');
  return {
    containerDir,
    workDir: join(containerDir, 'work'),
    runDir,
    launchFile: join(runDir, 'launch.json'),
    stateFile: join(runDir, 'state.json'),
    stopFile: join(runDir, 'stop.json'),
    supervisorLog: join(runDir, 'supervisor.log'),
    supervisorStderr: join(runDir, 'supervisor.stderr'),
    passwdFile: join(containerDir, 'passwd'),
    groupFile: join(containerDir, 'group'),
    stdoutLog: join(resolve(logDir), `${name}.stdout.log`),
    stderrLog: join(resolve(logDir), `${name}.stderr.log`),
  };
}

/** How much of an exec'd command's output is kept (its tail). */
const EXEC_OUTPUT_CHARS = 2000;

function supervisorScript(): string {
  // Source runs as .ts (Node strips types); the compiled build ships .js beside this file.
  const ext = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
  return fileURLToPath(new URL(`./pod-supervisor.${ext}`, import.meta.url));
}

/** The first directory on the way to `path` that `uid`/`gid` cannot traverse, if any. */
export async function untraversableDir(path: string, uid: number, gid: number): Promise<string | undefined> {
  const parts = resolve(path)
    .split('/')
    .filter((p) => p !== '');
  let dir = '/';
  for (let i = 0; i <= parts.length; i++) {
    const st = await stat(dir).catch(() => undefined);
    if (st === undefined) return undefined; // not created yet: mkdir will make it with our modes
    const bit = st.uid === uid ? 0o100 : st.gid === gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) return dir;
    const next = parts[i];
    if (next !== undefined) dir = join(dir, next);
  }
  return undefined;
}

function specHash(
  launch: Pick<LaunchSpec, 'sandboxOptions' | 'command' | 'limits' | 'restart' | 'unsandboxed'>,
): string {
  const parts: unknown[] = [launch.sandboxOptions, launch.command, launch.limits, launch.restart];
  // Only an unsandboxed launch adds a part: every default launch keeps the hash it always had.
  if (launch.unsandboxed !== undefined) parts.push(launch.unsandboxed);
  const json = JSON.stringify(parts);
  return createHash('sha256').update(json).digest('hex').slice(0, 16);
}

function handleFrom(state: SupervisorState, launch: LaunchSpec, stateFile: string): ContainerHandle {
  return {
    podKey: state.podKey,
    container: state.container,
    stateFile,
    pid: state.containerPid,
    startTime: state.containerStartTime,
    supervisorPid: state.supervisorPid,
    supervisorStartTime: state.supervisorStartTime,
    leaseEpoch: state.leaseEpoch,
    specHash: state.specHash,
    logFiles: { stdout: launch.stdoutLog, stderr: launch.stderrLog },
  };
}

/** process.kill without the throw when the process has just gone. */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolveRun) => {
    execFile(file, args, { timeout: 10_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolveRun({ code, stdout, stderr: stderr || (err?.message ?? '') });
    });
  });
}

export class ProcessDriver implements RuntimeDriver {
  private readonly bwrapPath: string;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly nodePath: string;
  private readonly backoff: BackoffPolicy;
  private readonly logRotation: RotationPolicy;
  private readonly startTimeoutMs: number;
  private readonly defaultGraceMs: number;
  private readonly sandboxUser: { uid: number; gid: number };
  private readonly compileCacheDir: string | undefined;
  /** bwrap works on this host (probed once per driver). */
  private probe: Promise<{ version: string }> | undefined;

  constructor(opts: ProcessDriverOptions = {}) {
    this.bwrapPath = opts.bwrapPath ?? '/usr/bin/bwrap';
    this.clock = opts.clock ?? liveClock;
    this.log = opts.log ?? silentLogger;
    this.nodePath = opts.nodePath ?? process.execPath;
    this.backoff = { ...defaultBackoff, ...opts.backoff };
    this.logRotation = { maxBytes: DEFAULT_LOG_MAX_BYTES, keep: DEFAULT_LOG_KEEP, ...opts.logRotation };
    this.startTimeoutMs = opts.startTimeoutMs ?? 15_000;
    this.defaultGraceMs = opts.defaultGraceMs ?? 10_000;
    this.compileCacheDir = opts.compileCacheDir;
    // As root, bwrap itself runs as nobody: the container is uid 65534 inside AND outside its user
    // namespace, so nothing it does (files, abstract sockets, peer credentials) carries host root.
    const root = process.getuid?.() === 0;
    this.sandboxUser = root
      ? { uid: SANDBOX_UID, gid: SANDBOX_GID }
      : { uid: process.getuid?.() ?? SANDBOX_UID, gid: process.getgid?.() ?? SANDBOX_GID };
  }

  private get root(): boolean {
    return process.getuid?.() === 0;
  }

  /** Fails with a clear error unless bwrap exists and can build the sandbox, seccomp filter included. */
  private checkSandbox(): Promise<{ version: string }> {
    this.probe ??= (async () => {
      try {
        await access(this.bwrapPath, fsConstants.X_OK);
      } catch (err) {
        throw new SandboxUnavailableError(`bubblewrap is not installed at ${this.bwrapPath}`, { cause: err });
      }
      const version = await run(this.bwrapPath, ['--version']);
      if (version.code !== 0) {
        throw new SandboxUnavailableError(`${this.bwrapPath} --version failed: ${version.stderr.trim()}`);
      }
      await this.probeRun();
      return { version: version.stdout.trim() };
    })();
    this.probe.catch(() => {
      this.probe = undefined; // let a later call (after `apt-get install`) try again
    });
    return this.probe;
  }

  /** One throwaway sandbox with the production namespaces and seccomp filter. */
  private probeRun(): Promise<void> {
    return new Promise((resolveProbe, reject) => {
      const child = spawn(
        this.bwrapPath,
        [
          '--unshare-user',
          '--unshare-pid',
          '--disable-userns',
          '--uid',
          String(SANDBOX_UID),
          '--gid',
          String(SANDBOX_GID),
          '--ro-bind',
          '/usr',
          '/usr',
          '--symlink',
          'usr/bin',
          '/bin',
          '--symlink',
          'usr/lib',
          '/lib',
          '--symlink',
          'usr/lib64',
          '/lib64',
          '--cap-drop',
          'ALL',
          '--seccomp',
          '3',
          '--',
          'true',
        ],
        {
          stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
          env: {},
          cwd: '/',
          ...(this.root ? { uid: this.sandboxUser.uid, gid: this.sandboxUser.gid } : {}),
        },
      );
      let stderr = '';
      child.stderr?.on('data', (c: Buffer) => {
        stderr += c.toString();
      });
      child.stdio[3]?.on('error', () => {});
      (child.stdio[3] as NodeJS.WritableStream | null)?.end(buildSeccompProgram());
      child.once('error', (err) =>
        reject(new SandboxUnavailableError(`cannot run ${this.bwrapPath}: ${err.message}`, { cause: err })),
      );
      child.once('close', (code) => {
        if (code === 0) return resolveProbe();
        reject(
          new SandboxUnavailableError(
            `bubblewrap cannot build the sandbox here: ${stderr.trim() || `exit ${code}`}`,
            {
              hint: 'Check that user namespaces are enabled (sysctl kernel.unprivileged_userns_clone=1) and bubblewrap >= 0.8 is installed (`apt-get install bubblewrap`).',
            },
          ),
        );
      });
    });
  }

  async prepare(pod: { podKey: string; podDir: string }): Promise<PrepareReport> {
    const { version } = await this.checkSandbox();
    const warnings: string[] = [];
    const layout = await probeCgroupLayout();
    const controllers: Record<string, string> = {};
    for (const [name, home] of Object.entries(layout.homes))
      controllers[name] = `v${home.version} ${home.ownDir}`;
    for (const m of layout.missing) {
      controllers[m.controller] = `missing: ${m.reason}`;
      warnings.push(`cgroup ${m.controller} limits will not apply: ${m.reason}`);
    }
    // The sandbox recreates /bin, /lib... as symlinks into /usr: right only on a merged-/usr host.
    const bin = await readlink('/bin').catch(() => undefined);
    if (bin !== 'usr/bin' && bin !== '/usr/bin') {
      warnings.push('/bin is not a symlink to usr/bin: programs outside /usr are not visible in the sandbox');
    }
    if (this.root) await this.checkReachable(pod.podDir);
    return {
      bwrapPath: this.bwrapPath,
      bwrapVersion: version,
      sandboxUser: this.sandboxUser,
      cgroup: { mode: layout.mode, controllers },
      warnings,
    };
  }

  private async checkReachable(dir: string): Promise<void> {
    const blocked = await untraversableDir(dir, this.sandboxUser.uid, this.sandboxUser.gid);
    if (blocked !== undefined) {
      throw new SandboxPathError(
        'E_SANDBOX_PATH',
        `${dir} is not reachable by the sandbox user: ${blocked} denies uid ${this.sandboxUser.uid}`,
        {
          hint: `Let others traverse it (\`chmod o+x ${blocked}\`, listing stays private), or keep pod data under a directory with mode 0711.`,
          details: { path: dir, blocked, uid: this.sandboxUser.uid },
        },
      );
    }
  }

  async start(req: StartRequest): Promise<ContainerHandle> {
    const name = req.container.name;
    checkContainerName(name);
    const env = sandboxEnv({
      env: req.env,
      podKey: req.podKey,
      container: name,
      leaseEpoch: req.leaseEpoch,
      ports: req.ports,
      ...(req.podName === undefined ? {} : { podName: req.podName }),
      ...(req.slot === undefined ? {} : { slot: req.slot }),
      ...(req.node === undefined ? {} : { node: req.node }),
    });
    const paths = containerPaths(req.podDir, req.logDir, name);
    const relax = req.security;
    const unsandboxed = relax?.unsandboxed === true;
    if (unsandboxed && !this.root) {
      // Not root, meshd cannot switch the pod to the sandbox user: it would run as meshd's own user, which
      // can read the mesh key and the node's identity and talk to its API socket.
      throw new ProcessStartError(
        'E_UNSANDBOXED_NEEDS_ROOT',
        `container ${req.podKey}/${name} may run unsandboxed only when meshd runs as root`,
        {
          hint: 'Run meshd as root on this node, or drop `unsandboxed` from the pod (and from the node policy).',
          details: { container: name },
        },
      );
    }
    // Unsandboxed, the host's /tmp is shared: HOME is the container's own work dir instead.
    if (unsandboxed) env.HOME = paths.workDir;
    const args = unsandboxed
      ? { options: [], command: gateArgv(req.container.command) }
      : buildSandboxArgs({
          command: req.container.command,
          env,
          hostname: name,
          workDir: paths.workDir,
          passwdFile: paths.passwdFile,
          groupFile: paths.groupFile,
          tmpBytes: req.limits.tmpBytes ?? DEFAULT_TMP_BYTES,
          ...(relax === undefined ? {} : { relax }),
        });
    if (!unsandboxed) await this.checkSandbox();
    if (this.root && !unsandboxed) {
      // bwrap runs as the sandbox user: a host path it cannot reach would fail inside bwrap, less clearly.
      for (const m of relax?.hostPaths ?? []) await this.checkReachable(dirname(m.source));
    }

    const previous = await readState(paths.stateFile);
    if (
      previous !== undefined &&
      (await isSameProcess(previous.supervisorPid, previous.supervisorStartTime))
    ) {
      throw new ProcessStartError(
        'E_ALREADY_RUNNING',
        `container ${req.podKey}/${name} already runs (supervisor pid ${previous.supervisorPid})`,
        {
          hint: 'Stop it first, or adopt it with its state file.',
          details: { stateFile: paths.stateFile },
        },
      );
    }
    if (previous?.cgroup != null) {
      // Left by a supervisor that died without its teardown: an unsandboxed container's tasks outlive it.
      await killCgroupTasks(previous.cgroup.dirs, this.clock);
      await removeContainerCgroup(previous.cgroup.dirs, this.clock, { attempts: 1 });
    }

    await this.layOut(req, paths);
    const launch: LaunchSpec = {
      version: 1,
      podKey: req.podKey,
      container: name,
      leaseEpoch: req.leaseEpoch,
      specHash: '',
      bwrapPath: this.bwrapPath,
      hostUid: this.root ? this.sandboxUser.uid : undefined,
      hostGid: this.root ? this.sandboxUser.gid : undefined,
      sandboxOptions: args.options,
      command: args.command,
      ...(unsandboxed ? { unsandboxed: { cwd: paths.workDir, env } } : {}),
      limits: req.limits,
      restart: req.container.restart ?? 'always',
      backoff: this.backoff,
      logRotation: this.logRotation,
      stdoutLog: paths.stdoutLog,
      stderrLog: paths.stderrLog,
      stateFile: paths.stateFile,
      stopFile: paths.stopFile,
      supervisorLog: paths.supervisorLog,
      defaultGraceMs: this.defaultGraceMs,
    };
    launch.specHash = specHash(launch);
    await rm(paths.stateFile, { force: true });
    await rm(paths.stopFile, { force: true });
    writeJsonAtomic(paths.launchFile, launch); // 0600: it holds the container's environment

    if (this.compileCacheDir !== undefined)
      await mkdir(this.compileCacheDir, { recursive: true, mode: 0o700 });
    const child = this.spawnSupervisor(paths);
    try {
      return await this.awaitStart(child, paths, launch);
    } catch (err) {
      if (err instanceof ProcessStartError)
        this.log.warn('process start failed', { pod: req.podKey, container: name, reason: err.message });
      throw err;
    }
  }

  /** Directories and modes: the sandbox user may traverse the container dir and own only its work dir. */
  private async layOut(req: StartRequest, paths: ContainerPaths): Promise<void> {
    await mkdir(req.podDir, { recursive: true, mode: 0o711 });
    await mkdir(paths.containerDir, { recursive: true });
    await mkdir(paths.workDir, { recursive: true });
    await mkdir(paths.runDir, { recursive: true });
    await mkdir(req.logDir, { recursive: true, mode: 0o750 });
    await chmod(paths.runDir, 0o700);
    await chmod(paths.workDir, 0o700);
    const ids = sandboxIdentityFiles();
    await writeFile(paths.passwdFile, ids.passwd, { mode: 0o644 });
    await writeFile(paths.groupFile, ids.group, { mode: 0o644 });
    if (this.root) {
      await chmod(paths.containerDir, 0o711);
      await chown(paths.workDir, this.sandboxUser.uid, this.sandboxUser.gid);
      await this.checkReachable(paths.workDir);
    }
  }

  private spawnSupervisor(paths: ContainerPaths): ChildProcess {
    const logFd = openSync(paths.supervisorStderr, 'a', 0o600);
    try {
      // detached: setsid, so the supervisor is in its own session and process group; the daemon's
      // death (or a ^C to its group) does not reach it. Its stdio are files, never pipes to us.
      // A small young generation roughly halves the supervisor's RSS (~85 -> ~55 MB); the old-space
      // cap bounds a leak. The supervisor only moves small log chunks and JSON.
      const flags = ['--max-semi-space-size=1', '--max-old-space-size=64'];
      const child = spawn(this.nodePath, [...flags, supervisorScript(), paths.launchFile], {
        detached: true,
        stdio: ['ignore', logFd, logFd],
        env: {
          PATH: '/usr/bin:/bin',
          ...(this.compileCacheDir === undefined ? {} : { NODE_COMPILE_CACHE: this.compileCacheDir }),
        },
        cwd: '/',
      });
      child.unref();
      return child;
    } finally {
      closeSync(logFd);
    }
  }

  private async awaitStart(
    child: ChildProcess,
    paths: ContainerPaths,
    launch: LaunchSpec,
  ): Promise<ContainerHandle> {
    let exited: string | undefined;
    child.once('error', (err) => {
      exited = `cannot run ${this.nodePath}: ${err.message}`;
    });
    child.once('exit', (code, signal) => {
      exited = `supervisor exited (${signal ?? `code ${code}`})`;
    });
    const deadline = this.clock.now() + this.startTimeoutMs;
    for (;;) {
      // Noted before reading the state: if the supervisor was already gone, the state read is its last.
      const gone = exited;
      const state = await readState(paths.stateFile);
      if (state !== undefined) {
        if (state.state === 'failed') {
          const reason = state.lastError ?? 'the container failed to start';
          throw new ProcessStartError('E_PROCESS_START', reason, {
            hint: reason.startsWith('exec:')
              ? 'The sandbox sees /usr, a few files of /etc and /work only; use a command installed under /usr.'
              : `See ${paths.supervisorLog}.`,
            details: { pod: launch.podKey, container: launch.container, stateFile: paths.stateFile },
          });
        }
        const ran = state.lastExit !== null || (state.state === 'running' && state.containerPid > 0);
        if (ran) return handleFrom(state, launch, paths.stateFile);
      }
      if (gone !== undefined) {
        const logs = await Promise.all(
          [paths.supervisorLog, paths.supervisorStderr].map((f) => readFile(f, 'utf8').catch(() => '')),
        );
        const tail = logs.join('\n');
        throw new ProcessStartError(
          'E_PROCESS_START',
          `${gone}: ${tail.trim().split('\n').slice(-3).join(' | ')}`,
          {
            hint: `See ${paths.supervisorLog} and ${paths.supervisorStderr}.`,
            details: { pod: launch.podKey, container: launch.container },
          },
        );
      }
      if (this.clock.now() > deadline) {
        // Killing the supervisor kills bwrap (parent-death signal) and with it the whole sandbox.
        if (child.pid !== undefined) signal(child.pid, 'SIGKILL');
        const last = await readState(paths.stateFile);
        if (last?.cgroup != null) await removeContainerCgroup(last.cgroup.dirs, this.clock, { attempts: 20 });
        throw new ProcessStartError(
          'E_PROCESS_START',
          `container did not start within ${this.startTimeoutMs} ms`,
          {
            hint: `See ${paths.supervisorLog} and ${launch.stderrLog}.`,
            details: { pod: launch.podKey, container: launch.container },
          },
        );
      }
      await delay(this.clock, 10);
    }
  }

  async status(handle: ContainerHandle): Promise<ContainerStatus> {
    const state = await readState(handle.stateFile);
    if (state === undefined) {
      return unknownStatus(`no readable state file at ${handle.stateFile}`);
    }
    const supervisorAlive = await isSameProcess(state.supervisorPid, state.supervisorStartTime);
    const containerAlive =
      state.containerPid > 0 && (await isSameProcess(state.containerPid, state.containerStartTime));
    const terminal = state.state === 'stopped' || state.state === 'exited' || state.state === 'failed';
    const lastError =
      !supervisorAlive && !terminal
        ? `supervisor pid ${state.supervisorPid} died while the container was ${state.state}`
        : (state.lastError ?? undefined);
    return {
      running: supervisorAlive && state.state === 'running' && containerAlive,
      state: state.state,
      pid: containerAlive ? state.containerPid : undefined,
      exitCode: state.lastExit?.code ?? undefined,
      signal: state.lastExit?.signal ?? undefined,
      restarts: state.restarts,
      lastError,
      supervisorAlive,
      cgroup:
        state.cgroup === null
          ? undefined
          : { mode: state.cgroup.mode, applied: state.cgroup.applied, missing: state.cgroup.missing },
      startLatencyMs: state.startLatencyMs ?? undefined,
    };
  }

  async stop(handle: ContainerHandle, graceMs: number): Promise<ContainerStatus> {
    const state = await readState(handle.stateFile);
    if (state === undefined) return this.status(handle);
    const sup = { pid: state.supervisorPid, startTime: state.supervisorStartTime };
    if (await isSameProcess(sup.pid, sup.startTime)) {
      const req: StopRequest = { graceMs, requestedAt: this.clock.now() };
      writeJsonAtomic(join(dirname(handle.stateFile), 'stop.json'), req);
      signal(sup.pid, 'SIGTERM');
      const deadline = this.clock.now() + graceMs + 10_000;
      while ((await isSameProcess(sup.pid, sup.startTime)) && this.clock.now() < deadline)
        await delay(this.clock, 20);
      if (await isSameProcess(sup.pid, sup.startTime)) {
        // The supervisor hangs: killing it kills bwrap (parent-death signal), hence the whole pid namespace.
        this.log.warn('supervisor ignored SIGTERM; killing it', {
          pod: state.podKey,
          container: state.container,
        });
        signal(sup.pid, 'SIGKILL');
        while ((await isSameProcess(sup.pid, sup.startTime)) && this.clock.now() < deadline + 5000) {
          await delay(this.clock, 20);
        }
      }
    }
    const after = await readState(handle.stateFile);
    if (after?.cgroup != null) {
      // Nothing of a stopped container may run on: what a dead supervisor could not end is ended here.
      await killCgroupTasks(after.cgroup.dirs, this.clock);
      await removeContainerCgroup(after.cgroup.dirs, this.clock, { attempts: 20 });
    }
    return this.status(handle);
  }

  async adopt(stateFile: string): Promise<ContainerHandle | undefined> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const state = await readState(stateFile);
      if (state === undefined) return undefined;
      if (!(await isSameProcess(state.supervisorPid, state.supervisorStartTime))) return undefined;
      const containerOk =
        state.containerPid === 0 || (await isSameProcess(state.containerPid, state.containerStartTime));
      if (containerOk) {
        const launchText = await readFile(join(dirname(stateFile), 'launch.json'), 'utf8').catch(
          () => undefined,
        );
        if (launchText === undefined) return undefined;
        let launch: LaunchSpec;
        try {
          launch = JSON.parse(launchText) as LaunchSpec;
        } catch (err) {
          this.log.warn('unreadable launch file', { stateFile, err: describeError(err) });
          return undefined;
        }
        return handleFrom(state, launch, stateFile);
      }
      // The container may have just been restarted and the state not yet rewritten: look once more.
      await delay(this.clock, 150);
    }
    return undefined;
  }

  /**
   * Runs `command` in a fresh sandbox built from the container's own launch options (same user,
   * namespaces, seccomp filter, /work bind and environment; its own pid namespace and /tmp). The
   * sandbox dies with the daemon (--die-with-parent) and is killed at `timeoutMs`.
   */
  async exec(handle: ContainerHandle, command: readonly string[], opts: ExecOptions): Promise<ExecResult> {
    const launchFile = join(dirname(handle.stateFile), 'launch.json');
    let launch: LaunchSpec;
    try {
      launch = JSON.parse(await readFile(launchFile, 'utf8')) as LaunchSpec;
    } catch (err) {
      throw new ProcessStartError(
        'E_EXEC',
        `cannot run a command beside ${handle.podKey}/${handle.container}: ${describeError(err)}`,
        { hint: 'The container was not started by this driver, or its run directory was removed.' },
      );
    }
    if (command.length === 0 || command.some((a) => a.includes('\0'))) {
      throw new ProcessStartError('E_EXEC', 'exec command is empty or contains a NUL byte', {
        hint: 'Give the program and its arguments, e.g. ["cat", "/work/ready"].',
      });
    }
    if (launch.unsandboxed !== undefined) return this.execUnsandboxed(launch, command, opts);
    await this.checkSandbox();
    const child = spawn(launch.bwrapPath, ['--seccomp', '3', '--args', '4', '--', ...command], {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
      env: {},
      cwd: '/',
      ...(launch.hostUid === undefined ? {} : { uid: launch.hostUid }),
      ...(launch.hostGid === undefined ? {} : { gid: launch.hostGid }),
    });
    const [, , , seccompFd, argsFd] = child.stdio as unknown as [
      null,
      null,
      null,
      NodeJS.WritableStream & { on(e: 'error', f: () => void): void },
      NodeJS.WritableStream & { on(e: 'error', f: () => void): void },
    ];
    seccompFd?.on('error', () => {});
    argsFd?.on('error', () => {});
    seccompFd?.end(buildSeccompProgram());
    argsFd?.end(encodeArgs(launch.sandboxOptions));
    // Killing bwrap kills the sandbox's init through its parent-death signal, hence everything in it.
    return this.collectExec(
      child,
      (pid) => pid,
      opts,
      (err) => {
        throw new SandboxUnavailableError(`cannot run ${launch.bwrapPath}: ${err.message}`, { cause: err });
      },
    );
  }

  /**
   * `exec` beside an unsandboxed container: as unsandboxed as the container itself (same user, cwd and
   * environment), in its own process group, which is killed at `timeoutMs`.
   */
  private execUnsandboxed(
    launch: LaunchSpec,
    command: readonly string[],
    opts: ExecOptions,
  ): Promise<ExecResult> {
    const gate = launch.unsandboxed as NonNullable<LaunchSpec['unsandboxed']>;
    const [program, ...args] = command;
    const child = spawn(program ?? '', args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: gate.env,
      cwd: gate.cwd,
      detached: true,
      ...(launch.hostUid === undefined ? {} : { uid: launch.hostUid }),
      ...(launch.hostGid === undefined ? {} : { gid: launch.hostGid }),
    });
    return this.collectExec(
      child,
      (pid) => -pid,
      opts,
      (err) => {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT')
          return { exitCode: 127, signal: null, timedOut: false, output: `exec: ${program}: not found` };
        throw new ProcessStartError('E_EXEC', `cannot run ${program}: ${err.message}`, { cause: err });
      },
    );
  }

  /**
   * Waits for an exec'd `child`: keeps the tail of its output, SIGKILLs `target(pid)` (the process, or its
   * group) at `timeoutMs` or on abort, and settles with how it ended. `onSpawnError` turns a failed spawn
   * into a result, or throws the error the caller should see.
   */
  private collectExec(
    child: ChildProcess,
    target: (pid: number) => number,
    opts: ExecOptions,
    onSpawnError: (err: Error) => ExecResult,
  ): Promise<ExecResult> {
    return new Promise((resolveExec, reject) => {
      let output = '';
      const keep = (chunk: Buffer) => {
        output = (output + chunk.toString('utf8')).slice(-EXEC_OUTPUT_CHARS);
      };
      child.stdout?.on('data', keep);
      child.stderr?.on('data', keep);
      let timedOut = false;
      const kill = () => {
        timedOut = true;
        if (child.pid !== undefined) signal(target(child.pid), 'SIGKILL');
      };
      const timer = this.clock.setTimeout(kill, opts.timeoutMs);
      opts.signal?.addEventListener('abort', kill, { once: true });
      const done = () => {
        timer.cancel();
        opts.signal?.removeEventListener('abort', kill);
      };
      child.once('error', (err) => {
        done();
        try {
          resolveExec(onSpawnError(err));
        } catch (e) {
          reject(e);
        }
      });
      child.once('close', (code, sig) => {
        done();
        resolveExec({ exitCode: code, signal: sig, timedOut, output: output.trim() });
      });
    });
  }

  logs(path: string, opts: LogReadOptions): AsyncIterable<string> {
    return readLogLines(path, {
      clock: this.clock,
      keep: this.logRotation.keep,
      ...(opts.tail === undefined ? {} : { tail: opts.tail }),
      ...(opts.follow === undefined ? {} : { follow: opts.follow }),
      ...(opts.signal === undefined ? {} : { signal: opts.signal }),
    });
  }
}

export function createProcessDriver(opts: ProcessDriverOptions = {}): RuntimeDriver {
  return new ProcessDriver(opts);
}
