// The supervisor of one container: a detached process (own session, not the daemon's child for long)
// that runs the bubblewrap sandbox, restarts it by policy with capped backoff, writes its rotated logs
// and its state file, and outlives the daemon. The daemon talks to it only through files and signals:
// SIGTERM = stop (TERM the container, KILL after the grace period, remove the cgroup, exit).
//
// One supervisor per container (a pod of three containers has three): a crash stays with its container.
// Run as `node pod-supervisor.ts <launch.json>`.
//
// An unsandboxed container (double opt-in only) runs without bwrap: a small `sh` gate (its own session
// and process group) waits until the supervisor has put it into the cgroup, then execs the command.
// With no pid namespace to end it, the supervisor kills the process group and every task left in the
// cgroup when the main process ends, as the sandbox's pid namespace would.

import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { dirname } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import { describeError } from '../../shared/errors.ts';
import { createLogger, type Logger } from '../../shared/logger.ts';
import {
  attachToCgroup,
  type ContainerCgroup,
  cgroupDirs,
  createContainerCgroup,
  killCgroupTasks,
  oomKillCount,
  probeCgroupLayout,
  removeContainerCgroup,
} from './cgroup-limits.ts';
import { delay, liveClock } from './live-clock.ts';
import { readChildren, readProcStat, signalIfSame } from './proc-stat.ts';
import { backoffDelayMs, type ExitInfo, isCleanExit, shouldRestart } from './restart-policy.ts';
import { RotatingLog } from './rotating-log.ts';
import { bwrapArgv, encodeArgs, GATE_NAME, type SupervisorFds } from './sandbox-args.ts';
import { buildSeccompProgram } from './seccomp-filter.ts';
import {
  type LaunchSpec,
  readLaunchSync,
  readStopRequestSync,
  type SupervisorState,
  writeJsonAtomic,
} from './supervisor-files.ts';

/** Where bwrap finds its inputs: fixed positions of the spawn stdio array. */
const FDS: SupervisorFds = { args: 3, seccomp: 4, status: 5, block: 6 };
/** How long the container may take from sandbox spawn to its exec before we stop looking. */
const EXEC_WATCH_MS = 10_000;
const EARLY_STDERR_MAX = 8192;
const SUPERVISOR_LOG_MAX_BYTES = 1024 * 1024;
/** O_CLOEXEC as /proc/PID/fdinfo prints flags (octal 02000000). */
const O_CLOEXEC = 0o2000000;

/** The reason a run that never reached its exec failed, from bwrap's own stderr lines. */
export function describeSandboxFailure(stderr: string): string | undefined {
  for (const line of stderr.split('\n')) {
    const exec = /^bwrap: execvp (.+?): (.+)$/.exec(line);
    if (exec !== null) {
      const [, cmd, why] = exec;
      if (why === 'No such file or directory') return `exec: ${cmd}: not found`;
      if (why === 'Permission denied') return `exec: ${cmd}: permission denied`;
      return `exec: ${cmd}: ${why}`;
    }
    if (line.startsWith('bwrap: ')) return `sandbox: ${line.slice('bwrap: '.length)}`;
  }
  return undefined;
}

/** The reason an unsandboxed container's gate could not exec the command, from the gate's stderr. */
export function describeGateFailure(stderr: string): string | undefined {
  for (const line of stderr.split('\n')) {
    const m = new RegExp(`^${GATE_NAME}: \\d+: exec: (.+): (.+)$`).exec(line);
    if (m === null) continue;
    const [, cmd, why] = m;
    return why === 'not found' ? `exec: ${cmd}: not found` : `exec: ${cmd}: ${why?.toLowerCase()}`;
  }
  return undefined;
}

/** Exit code as bwrap reports it (128 + n for signal n) to {code, signal}. */
export function exitFromBwrap(code: number | null, signal: NodeJS.Signals | null): ExitInfo {
  if (signal !== null) return { code, signal };
  if (code !== null && code > 128 && code < 128 + 65) {
    const name = Object.entries(osConstants.signals).find(([, n]) => n === code - 128)?.[0];
    return { code, signal: name ?? null };
  }
  return { code, signal: null };
}

interface Run {
  child: ChildProcess;
  /** bwrap's pid; for an unsandboxed run, the gate's (then the command's: exec keeps the pid). */
  bwrapPid: number;
  /** Unsandboxed: no pid namespace, so the process group and the cgroup are what is killed. */
  gated: boolean;
  initPid: number;
  initStartTime: number;
  containerPid: number;
  containerStartTime: number;
  execConfirmed: boolean;
  spawnedAt: number;
  earlyStderr: string;
  done: boolean;
  exited: Promise<ExitInfo & { spawnError?: string }>;
}

interface RunResult {
  exit: ExitInfo;
  ranMs: number;
  failure: string | undefined;
}

export interface SupervisorDeps {
  clock: Clock;
  log: Logger;
  self: { pid: number; startTime: number };
}

export class ContainerSupervisor {
  private readonly launch: LaunchSpec;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly state: SupervisorState;
  private readonly stdoutLog: RotatingLog;
  private readonly stderrLog: RotatingLog;
  private stopRequested = false;
  private run: Run | undefined;
  private cgroup: ContainerCgroup | undefined;
  private wakeBackoff: (() => void) | undefined;
  private killTimer: TimerHandle | undefined;
  /** OOM kills counted in the memory cgroup before the current run. */
  private oomSeen = 0;
  private droppedLogBytes = 0;

  constructor(launch: LaunchSpec, deps: SupervisorDeps) {
    this.launch = launch;
    this.clock = deps.clock;
    this.log = deps.log;
    this.stdoutLog = new RotatingLog(launch.stdoutLog, launch.logRotation);
    this.stderrLog = new RotatingLog(launch.stderrLog, launch.logRotation);
    this.state = {
      version: 1,
      podKey: launch.podKey,
      container: launch.container,
      supervisorPid: deps.self.pid,
      supervisorStartTime: deps.self.startTime,
      containerPid: 0,
      containerStartTime: 0,
      sandboxInitPid: 0,
      state: 'starting',
      restarts: 0,
      lastExit: null,
      lastError: null,
      specHash: launch.specHash,
      leaseEpoch: launch.leaseEpoch,
      cgroup: null,
      startLatencyMs: null,
      nextRestartAt: null,
      updatedAt: deps.clock.now(),
    };
  }

  /** Best effort: a full disk must not take a running container down with its state file. */
  private save(): void {
    this.state.updatedAt = this.clock.now();
    try {
      writeJsonAtomic(this.launch.stateFile, this.state);
    } catch (err) {
      this.log.error('cannot write state file', { file: this.launch.stateFile, err: describeError(err) });
    }
  }

  /** Log writes never throw: on a full disk the container keeps running and the bytes are counted. */
  private writeLog(log: RotatingLog, chunk: Buffer): void {
    try {
      log.write(chunk);
    } catch (err) {
      if (this.droppedLogBytes === 0)
        this.log.error('cannot write container log', { err: describeError(err) });
      this.droppedLogBytes += chunk.byteLength;
    }
  }

  /** Runs until stopped, or until the policy says not to restart. */
  async main(): Promise<void> {
    this.save();
    try {
      await this.setupCgroup();
      const seccomp = buildSeccompProgram();
      let streak = 0;
      while (!this.stopRequested) {
        this.state.state = 'starting';
        this.state.nextRestartAt = null;
        this.save();
        const result = await this.runOnce(seccomp);
        this.state.lastExit = { code: result.exit.code, signal: result.exit.signal, at: this.clock.now() };
        this.state.containerPid = 0;
        this.state.containerStartTime = 0;
        this.state.sandboxInitPid = 0;
        if (this.stopRequested) break;
        if (result.failure !== undefined) {
          // The sandbox or the exec failed: the same spec fails the same way, so retrying only hides it.
          this.state.state = 'failed';
          this.state.lastError = result.failure;
          this.log.warn('container cannot start', { reason: result.failure });
          break;
        }
        this.state.lastError = isCleanExit(result.exit) ? null : await this.describeExit(result.exit);
        if (!shouldRestart(this.launch.restart, result.exit)) {
          this.state.state = 'exited';
          break;
        }
        if (result.ranMs >= this.launch.backoff.resetAfterMs) streak = 0;
        const wait = backoffDelayMs(streak, this.launch.backoff);
        streak++;
        this.state.state = 'backoff';
        this.state.nextRestartAt = this.clock.now() + wait;
        this.save();
        this.log.info('container exited; restarting', { exit: result.exit, inMs: wait });
        await this.sleep(wait);
        if (this.stopRequested) break;
        this.state.restarts++;
      }
    } catch (err) {
      this.state.state = 'failed';
      this.state.lastError = `supervisor: ${describeError(err)}`;
      this.log.error('supervisor failed', { err });
    } finally {
      await this.teardown();
    }
  }

  /** SIGTERM handler: TERM the container, KILL it after the grace period. */
  requestStop(): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    const graceMs = readStopRequestSync(this.launch.stopFile)?.graceMs ?? this.launch.defaultGraceMs;
    this.state.state = 'stopping';
    this.save();
    this.log.info('stopping', { graceMs });
    this.wakeBackoff?.();
    const run = this.run;
    if (run === undefined || run.done) return;
    void (async () => {
      const termed =
        run.execConfirmed && (await signalIfSame(run.containerPid, run.containerStartTime, 'SIGTERM'));
      if (!termed) return this.killRun(run);
      this.killTimer = this.clock.setTimeout(() => void this.killRun(run), graceMs);
    })();
  }

  private async killRun(run: Run): Promise<void> {
    if (run.gated) return this.killGated(run);
    if (run.done) return;
    // SIGKILL to the pid namespace's init makes the kernel kill every process in the namespace.
    if (run.initPid > 0) await signalIfSame(run.initPid, run.initStartTime, 'SIGKILL');
    // bwrap is our own child and not yet reaped (run.done is false), so its pid is still ours.
    if (!run.done) run.child.kill('SIGKILL');
  }

  /** Makes `child` the current run; it is marked done (and a pending kill cancelled) once it exits. */
  private track(child: ChildProcess, gated: boolean, spawnedAt: number, exited: Run['exited']): Run {
    const run: Run = {
      child,
      bwrapPid: child.pid ?? 0,
      gated,
      initPid: 0,
      initStartTime: 0,
      containerPid: 0,
      containerStartTime: 0,
      execConfirmed: false,
      spawnedAt,
      earlyStderr: '',
      done: false,
      exited,
    };
    this.run = run;
    void exited.then(() => {
      run.done = true;
      this.killTimer?.cancel();
    });
    return run;
  }

  /** Kills an unsandboxed run: its process group (the gate called setsid), then every task of its cgroup. */
  private async killGated(run: Run): Promise<void> {
    // Once the gate is reaped its pid (and so the group id) may belong to someone else: leave what is
    // left of the group to the cgroup sweep below.
    if (run.bwrapPid > 0 && !run.done) {
      try {
        process.kill(-run.bwrapPid, 'SIGKILL');
      } catch {}
    }
    // A task that left the group (its own setsid) is still in the cgroup.
    if (this.cgroup !== undefined) await killCgroupTasks(cgroupDirs(this.cgroup), this.clock);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(done, ms);
      function done() {
        timer.cancel();
        resolve();
      }
      this.wakeBackoff = done;
    });
  }

  private async setupCgroup(): Promise<void> {
    const layout = await probeCgroupLayout();
    // Several nodes may share one host (tests, benchmarks, a second mesh): the pod's cgroup is named
    // after its directory too, so stopping one node's copy can never touch another node's.
    const owner = createHash('sha256').update(dirname(this.launch.stateFile)).digest('hex').slice(0, 10);
    const cg = await createContainerCgroup(
      layout,
      { pod: `${this.launch.podKey}-${owner}`, container: this.launch.container },
      this.launch.limits,
    );
    this.cgroup = cg;
    this.state.cgroup = { mode: cg.mode, applied: cg.applied, missing: cg.missing, dirs: cgroupDirs(cg) };
    for (const m of cg.missing)
      this.log.warn('cgroup limit not applied', { controller: m.controller, reason: m.reason });
    this.save();
  }

  private async describeExit(exit: ExitInfo): Promise<string> {
    const cg = this.cgroup;
    if (cg !== undefined && exit.signal === 'SIGKILL') {
      const ooms = await oomKillCount(cg);
      if (ooms !== undefined && ooms > this.oomSeen) {
        this.oomSeen = ooms;
        return `out of memory: killed at the memory limit of ${cg.applied.memoryBytes} bytes`;
      }
    }
    if (exit.signal !== null) return `killed by ${exit.signal}`;
    return `exited with code ${exit.code}`;
  }

  private async runOnce(seccomp: Buffer): Promise<RunResult> {
    const launch = this.launch;
    if (launch.unsandboxed !== undefined) return this.runGatedOnce(launch.unsandboxed);
    if (this.cgroup !== undefined) this.oomSeen = (await oomKillCount(this.cgroup)) ?? 0;
    const spawnedAt = this.clock.now();
    const child = spawn(launch.bwrapPath, bwrapArgv(FDS, launch.command), {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'],
      env: {},
      cwd: '/',
      ...(launch.hostUid === undefined ? {} : { uid: launch.hostUid }),
      ...(launch.hostGid === undefined ? {} : { gid: launch.hostGid }),
    });
    const exited = new Promise<ExitInfo & { spawnError?: string }>((resolve) => {
      child.once('error', (err) => resolve({ code: null, signal: null, spawnError: describeError(err) }));
      child.once('close', (code, signal) => resolve(exitFromBwrap(code, signal)));
    });
    const run = this.track(child, false, spawnedAt, exited);

    const [, out, err, argsFd, seccompFd, statusFd, blockFd] = child.stdio as unknown as [
      null,
      Readable,
      Readable,
      Writable,
      Writable,
      Readable,
      Writable,
    ];
    for (const s of [out, err, argsFd, seccompFd, statusFd, blockFd]) s?.on('error', () => {});
    out?.on('data', (chunk: Buffer) => this.writeLog(this.stdoutLog, chunk));
    err?.on('data', (chunk: Buffer) => {
      this.writeLog(this.stderrLog, chunk);
      if (!run.execConfirmed && run.earlyStderr.length < EARLY_STDERR_MAX)
        run.earlyStderr += chunk.toString('utf8');
    });
    argsFd?.end(encodeArgs(launch.sandboxOptions));
    seccompFd?.end(seccomp);

    // bwrap reports its pid-namespace init, then waits on the block fd: nothing of the container runs yet.
    const initPid = await new Promise<number>((resolve) => {
      let text = '';
      statusFd?.on('data', (chunk: Buffer) => {
        if (text.length > 4096) return;
        text += chunk.toString('utf8');
        const m = /"child-pid"\s*:\s*(\d+)/.exec(text);
        if (m !== null) resolve(Number(m[1]));
      });
      void exited.then(() => resolve(0));
    });
    statusFd?.resume();

    if (initPid > 0 && !run.done) {
      run.initPid = initPid;
      run.initStartTime = (await readProcStat(initPid))?.startTime ?? 0;
      if (this.cgroup !== undefined) await this.attach(run);
      this.state.sandboxInitPid = initPid;
      blockFd?.end(Buffer.from('g'));
      await this.watchExec(run);
    } else {
      blockFd?.destroy();
    }
    const exit = await exited;
    const ranMs = this.clock.now() - spawnedAt;
    if (exit.spawnError !== undefined) {
      return { exit, ranMs, failure: `sandbox: cannot run ${launch.bwrapPath}: ${exit.spawnError}` };
    }
    const failure = run.execConfirmed ? undefined : describeSandboxFailure(run.earlyStderr);
    return { exit, ranMs, failure };
  }

  /**
   * One run of an unsandboxed container: the gate, in its own session, joins the cgroup while it waits
   * on fd 3, then execs the command in place. Ends when the command exits; what it left behind is killed.
   */
  private async runGatedOnce(gate: NonNullable<LaunchSpec['unsandboxed']>): Promise<RunResult> {
    const launch = this.launch;
    if (this.cgroup !== undefined) this.oomSeen = (await oomKillCount(this.cgroup)) ?? 0;
    const spawnedAt = this.clock.now();
    const [program, ...args] = launch.command;
    const child = spawn(program ?? '/bin/sh', args, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env: gate.env,
      cwd: gate.cwd,
      detached: true,
      ...(launch.hostUid === undefined ? {} : { uid: launch.hostUid }),
      ...(launch.hostGid === undefined ? {} : { gid: launch.hostGid }),
    });
    // 'exit', not 'close': a process the command left in the background may hold its stdout open.
    const exited = new Promise<ExitInfo & { spawnError?: string }>((resolve) => {
      child.once('error', (err) => resolve({ code: null, signal: null, spawnError: describeError(err) }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const run = this.track(child, true, spawnedAt, exited);
    const [, out, err, goFd] = child.stdio as unknown as [null, Readable, Readable, Writable];
    for (const s of [out, err, goFd]) s?.on('error', () => {});
    out?.on('data', (chunk: Buffer) => this.writeLog(this.stdoutLog, chunk));
    err?.on('data', (chunk: Buffer) => {
      this.writeLog(this.stderrLog, chunk);
      if (!run.execConfirmed && run.earlyStderr.length < EARLY_STDERR_MAX)
        run.earlyStderr += chunk.toString('utf8');
    });
    const stat = run.bwrapPid > 0 ? await readProcStat(run.bwrapPid) : undefined;
    if (stat !== undefined && !run.done) {
      run.containerPid = stat.pid;
      run.containerStartTime = stat.startTime;
      if (this.cgroup !== undefined) {
        const failed = await attachToCgroup(this.cgroup, stat.pid);
        for (const f of failed) {
          this.log.warn('cgroup attach failed', f);
          if (!this.cgroup.missing.some((m) => m.controller === f.controller)) this.cgroup.missing.push(f);
        }
        if (failed.length > 0 && this.state.cgroup !== null) this.state.cgroup.missing = this.cgroup.missing;
      }
      goFd?.end(Buffer.from('go\n'));
      await this.watchGateExec(run);
    } else {
      goFd?.destroy();
    }
    const exit = await exited;
    await this.killGated(run);
    const ranMs = this.clock.now() - spawnedAt;
    if (exit.spawnError !== undefined) {
      return { exit, ranMs, failure: `cannot run ${program}: ${exit.spawnError}` };
    }
    const failure = run.execConfirmed ? undefined : describeGateFailure(run.earlyStderr);
    return { exit, ranMs, failure };
  }

  /** Waits until the gate has exec'd the command: its /proc cmdline is no longer the gate's. */
  private async watchGateExec(run: Run): Promise<void> {
    const gateCmdline = `${this.launch.command.join('\0')}\0`;
    const deadline = this.clock.now() + EXEC_WATCH_MS;
    while (!run.done && this.clock.now() < deadline) {
      const cmdline = await readFile(`/proc/${run.containerPid}/cmdline`, 'utf8').catch(() => undefined);
      // Gone already (a zombie's cmdline is empty): the exit and the gate's stderr tell the rest.
      if (cmdline === undefined || cmdline === '') return;
      if (cmdline !== gateCmdline) {
        run.execConfirmed = true;
        break;
      }
      await delay(this.clock, 2);
    }
    if (run.done) return;
    this.running(run, 'container running unsandboxed');
  }

  /** Moves bwrap and its pid-namespace init into the cgroup while both wait on the block fd. */
  private async attach(run: Run): Promise<void> {
    const cg = this.cgroup;
    if (cg === undefined) return;
    const failed = (
      await Promise.all([attachToCgroup(cg, run.bwrapPid), attachToCgroup(cg, run.initPid)])
    ).flat();
    for (const f of failed) {
      this.log.warn('cgroup attach failed', f);
      if (!cg.missing.some((m) => m.controller === f.controller)) cg.missing.push(f);
    }
    if (failed.length > 0 && this.state.cgroup !== null) this.state.cgroup.missing = cg.missing;
  }

  /** Finds the container process (the child of bwrap's init) and waits for it to exec its command. */
  private async watchExec(run: Run): Promise<void> {
    const deadline = this.clock.now() + EXEC_WATCH_MS;
    while (!run.done && this.clock.now() < deadline) {
      if (run.containerPid === 0) {
        const [pid] = await readChildren(run.initPid);
        const stat = pid === undefined ? undefined : await readProcStat(pid);
        if (stat !== undefined) {
          run.containerPid = stat.pid;
          run.containerStartTime = stat.startTime;
        }
      }
      if (run.containerPid !== 0) {
        const stat = await readProcStat(run.containerPid);
        if (stat === undefined) return; // gone already: the exit tells the rest
        // Before its exec the process is still a bwrap fork, named "bwrap".
        if (stat.comm !== 'bwrap') {
          run.execConfirmed = true;
          break;
        }
      }
      await delay(this.clock, 2);
    }
    if (run.done || run.containerPid === 0) return;
    this.running(run, 'container running');
  }

  /** Records that the run's container has exec'd its command (or is taken to have, past the watch). */
  private running(run: Run, message: string): void {
    if (!run.execConfirmed) this.log.warn('container exec not confirmed in time', { pid: run.containerPid });
    run.execConfirmed = true;
    this.state.state = this.stopRequested ? 'stopping' : 'running';
    this.state.containerPid = run.containerPid;
    this.state.containerStartTime = run.containerStartTime;
    this.state.startLatencyMs = this.clock.now() - run.spawnedAt;
    this.save();
    this.log.info(message, { pid: run.containerPid, startLatencyMs: this.state.startLatencyMs });
  }

  private async teardown(): Promise<void> {
    const run = this.run;
    if (run !== undefined && !run.done) {
      await this.killRun(run);
      await run.exited;
    }
    if (this.cgroup !== undefined) {
      const left = await removeContainerCgroup(cgroupDirs(this.cgroup), this.clock);
      for (const dir of left) this.log.warn('cgroup not removed', { dir });
    }
    if (this.stopRequested) this.state.state = 'stopped';
    this.state.nextRestartAt = null;
    this.save();
    this.stdoutLog.close();
    this.stderrLog.close();
  }
}

/**
 * Closes descriptors inherited without close-on-exec (from the daemon, or whatever started it): bwrap
 * passes every open descriptor into the sandbox. Node opens all of its own with O_CLOEXEC.
 */
export function closeInheritedFds(): number[] {
  const closed: number[] = [];
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd <= 2) continue;
    let flags: number;
    try {
      const m = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      if (m === null) continue;
      flags = Number.parseInt(m[1] as string, 8);
    } catch {
      continue; // the directory listing's own descriptor, already closed
    }
    if ((flags & O_CLOEXEC) !== 0) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {}
  }
  return closed;
}

async function supervisorMain(): Promise<void> {
  const launchFile = process.argv[2];
  if (launchFile === undefined) {
    process.stderr.write('usage: pod-supervisor <launch.json>\n');
    process.exit(2);
  }
  const inherited = closeInheritedFds();
  const launch = readLaunchSync(launchFile);
  const ownLog = new RotatingLog(launch.supervisorLog, { maxBytes: SUPERVISOR_LOG_MAX_BYTES, keep: 2 });
  const log = createLogger({
    fields: { pod: launch.podKey, container: launch.container },
    write: (line) => {
      try {
        ownLog.write(Buffer.from(line));
      } catch {}
    },
  });
  const self = await readProcStat(process.pid);
  if (self === undefined) throw new Error('cannot read /proc/self/stat');
  log.info('supervisor starts', { pid: self.pid, node: process.version, execArgv: process.execArgv });
  if (inherited.length > 0) log.info('closed inherited descriptors', { fds: inherited });
  process.title = `meshd-supervisor ${launch.podKey}/${launch.container}`;
  const sup = new ContainerSupervisor(launch, {
    clock: liveClock,
    log,
    self: { pid: self.pid, startTime: self.startTime },
  });
  process.on('SIGTERM', () => sup.requestStop());
  process.on('SIGINT', () => sup.requestStop());
  process.on('SIGHUP', () => {});
  await sup.main();
  log.info('supervisor exits');
}

if (import.meta.main) {
  supervisorMain().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`meshd-supervisor: ${describeError(err)}\n`);
      process.exit(1);
    },
  );
}
