// Starting the daemon in the background and waiting, with a deadline, until it is ready (or says why not).

import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ApiClient, type StatusView } from '../api/client.ts';
import type { DataDir } from '../daemon/data-dir.ts';
import { DaemonError, type ErrorBody, errorFromBody, isMeshdError } from '../shared/errors.ts';

const launcher = fileURLToPath(new URL('../../bin/meshd.js', import.meta.url));

export interface DetachOptions {
  timeoutMs: number;
  /** What "ready" means for the command: for `join`, synced with a peer. */
  until: (status: StatusView) => boolean;
  /** Said in the timeout error. */
  waitingFor: string;
  timeoutHint: string;
  /** An error that ends the wait at once (the daemon is stopped): for `join`, a stale token. */
  failFast?: (status: StatusView) => Error | undefined;
}

/** Spawns `meshd up` detached (logs to meshd.log) and resolves with its status once `until` holds. */
export async function startDetached(dir: DataDir, opts: DetachOptions): Promise<StatusView> {
  const running = dir.runningPid();
  if (running !== undefined) {
    throw new DaemonError('E_ALREADY_RUNNING', `meshd is already running on ${dir.path} (pid ${running})`, {
      hint: 'Use it as it is, or stop it first with `meshd down`.',
    });
  }
  dir.ensure();
  const logStart = fileSize(dir.logFile);
  const log = fs.openSync(dir.logFile, 'a', 0o600);
  // A small young generation: the daemon is long-lived and mostly idle (~30 MB less RSS).
  const child = spawn(process.execPath, ['--max-semi-space-size=1', launcher, 'up', '--data-dir', dir.path], {
    detached: true,
    stdio: ['ignore', log, log],
    env: process.env,
  });
  fs.closeSync(log);
  let exited: number | null | undefined;
  const gone = new Promise<void>((resolve) => {
    child.on('exit', (code) => {
      exited = code;
      resolve();
    });
    child.on('error', () => {
      exited = null; // could not be spawned: the log (or the generic error) says so
      resolve();
    });
  });
  child.unref();

  const client = new ApiClient({ socketPath: dir.socketPath, dataDir: dir.path, timeoutMs: 2000 });
  const deadline = Date.now() + opts.timeoutMs;
  let last: StatusView | undefined;
  while (Date.now() < deadline) {
    if (exited !== undefined) throw daemonDiedError(dir, logStart, exited);
    try {
      last = await client.status();
      if (opts.until(last)) return last;
      const fatal = opts.failFast?.(last);
      if (fatal !== undefined) {
        await stopChild(child, gone);
        throw fatal;
      }
    } catch (err) {
      if (!isMeshdError(err) || err.code !== 'E_NOT_RUNNING') throw err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  if (exited !== undefined) throw daemonDiedError(dir, logStart, exited);
  // Do not leave a half-started daemon behind a failed command.
  await stopChild(child, gone);
  throw new DaemonError(
    'E_START_TIMEOUT',
    `gave up after ${Math.round(opts.timeoutMs / 1000)} s waiting for ${opts.waitingFor}`,
    {
      hint: `${opts.timeoutHint} The daemon log is ${dir.logFile}.`,
    },
  );
}

/**
 * Stops the daemon this command started and waits until it has exited, so the data dir is free for the
 * next command the moment this one returns (SIGKILL if it has not ended within 15 s).
 */
async function stopChild(child: ChildProcess, gone: Promise<void>): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  // A ref'd timer keeps this process alive while it waits (the child itself is unref'd); cleared after.
  const within = async (ms: number) => {
    let timer: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      gone.then(() => true),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(false), ms);
      }),
    ]);
    clearTimeout(timer);
    return ended;
  };
  child.kill('SIGTERM');
  if (await within(15_000)) return;
  child.kill('SIGKILL');
  await within(5_000);
}

/** The fatal error the daemon wrote to its log before dying, or a generic one pointing at the log. */
function daemonDiedError(dir: DataDir, fromByte: number, code: number | null): Error {
  const lines = readFrom(dir.logFile, fromByte).split('\n').reverse();
  for (const line of lines) {
    try {
      const entry = JSON.parse(line) as { fatal?: ErrorBody };
      if (entry.fatal !== undefined) return errorFromBody(entry.fatal);
    } catch {
      // not a JSON log line
    }
  }
  return new DaemonError('E_DAEMON_DIED', `the daemon exited (code ${code}) before it was ready`, {
    hint: `Its log says why: ${dir.logFile}`,
  });
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function readFrom(file: string, offset: number): string {
  try {
    const buf = fs.readFileSync(file);
    return buf.subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}
