// Process identity from /proc: a pid alone can be recycled, pid + start time (stat field 22) cannot.

import { readFile } from 'node:fs/promises';

export interface ProcStat {
  pid: number;
  comm: string;
  /** One letter: R, S, D, Z (zombie), T, X ... */
  state: string;
  ppid: number;
  /** Start time in clock ticks since boot (field 22 of /proc/PID/stat). */
  startTime: number;
}

/** Parses the text of /proc/PID/stat. `comm` may hold spaces and ')', so fields are split after the last ')'. */
export function parseProcStat(text: string): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open)
    throw new Error(`malformed /proc stat line: ${JSON.stringify(text.slice(0, 80))}`);
  const pid = Number(text.slice(0, open).trim());
  const comm = text.slice(open + 1, close);
  // Fields after comm start at field 3 (state); field N is rest[N - 3].
  const rest = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const state = rest[0];
  const ppid = Number(rest[1]);
  const startTime = Number(rest[19]);
  if (state === undefined || !Number.isSafeInteger(pid) || !Number.isSafeInteger(ppid)) {
    throw new Error(`malformed /proc stat line for pid ${pid}`);
  }
  if (!Number.isSafeInteger(startTime))
    throw new Error(`malformed start time in /proc stat line for pid ${pid}`);
  return { pid, comm, state, ppid, startTime };
}

/** The process's stat, or undefined when no such process exists (or it is only a zombie). */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const stat = parseProcStat(text);
  // A zombie has exited; only its exit status waits to be collected.
  if (stat.state === 'Z' || stat.state === 'X') return undefined;
  return stat;
}

/** True when `pid` is alive and is the very process that started at `startTime`. */
export async function isSameProcess(pid: number, startTime: number): Promise<boolean> {
  const stat = await readProcStat(pid);
  return stat !== undefined && stat.startTime === startTime;
}

/** The direct children of `pid` (its main thread's children), empty when it has none or is gone. */
export async function readChildren(pid: number): Promise<number[]> {
  try {
    const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8');
    return text
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/** Sends `signal` only if `pid` is still the process that started at `startTime`; returns whether it was sent. */
export async function signalIfSame(pid: number, startTime: number, signal: NodeJS.Signals): Promise<boolean> {
  if (!(await isSameProcess(pid, startTime))) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}
