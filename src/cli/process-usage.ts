// CPU time and resident memory of a process and its descendants, read from /proc: what `meshd top` shows per pod.

import * as fs from 'node:fs';
import { join } from 'node:path';

/** Linux reports CPU times in USER_HZ ticks, fixed at 100 per second for user space. */
const ticksPerSecond = 100;

export interface ProcStat {
  ppid: number;
  /** utime + stime, in ticks. */
  cpuTicks: number;
}

/** Fields of /proc/PID/stat; the command name (field 2) may hold spaces and parentheses. */
export function parseStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  // After ") " come field 3 (state), 4 (ppid) ... 14 (utime), 15 (stime).
  const rest = text.slice(close + 2).split(' ');
  const ppid = Number(rest[1]);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (![ppid, utime, stime].every(Number.isFinite)) return undefined;
  return { ppid, cpuTicks: utime + stime };
}

/** `VmRSS:  1234 kB` of /proc/PID/status in bytes (0 for a kernel thread or a zombie without one). */
export function parseRssBytes(status: string): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  return m === null ? 0 : Number(m[1]) * 1024;
}

export interface TreeUsage {
  /** The root and every descendant that was alive when read. */
  pids: number[];
  cpuTicks: number;
  rssBytes: number;
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Every live process's parent, read once per sample. */
export function readParents(procDir = '/proc'): Map<number, number> {
  const parents = new Map<number, number>();
  let names: string[];
  try {
    names = fs.readdirSync(procDir);
  } catch {
    return parents;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readText(join(procDir, name, 'stat'));
    const parsed = stat === undefined ? undefined : parseStat(stat);
    if (parsed !== undefined) parents.set(Number(name), parsed.ppid);
  }
  return parents;
}

/** CPU ticks and RSS summed over `root` and its descendants; undefined when `root` is gone. */
export function readTreeUsage(
  root: number,
  parents: Map<number, number>,
  procDir = '/proc',
): TreeUsage | undefined {
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of parents) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  const usage: TreeUsage = { pids: [], cpuTicks: 0, rssBytes: 0 };
  const queue = [root];
  const seen = new Set<number>();
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    if (seen.has(pid)) continue;
    seen.add(pid);
    const stat = readText(join(procDir, String(pid), 'stat'));
    const parsed = stat === undefined ? undefined : parseStat(stat);
    if (parsed === undefined) {
      if (pid === root) return undefined;
      continue;
    }
    usage.pids.push(pid);
    usage.cpuTicks += parsed.cpuTicks;
    usage.rssBytes += parseRssBytes(readText(join(procDir, String(pid), 'status')) ?? '');
    queue.push(...(children.get(pid) ?? []));
  }
  return usage;
}

/** Share of one CPU used between two samples, in percent (can exceed 100 on several cores). */
export function cpuPercent(beforeTicks: number, afterTicks: number, elapsedMs: number): number {
  if (elapsedMs <= 0) return 0;
  return Math.max(0, ((afterTicks - beforeTicks) / ticksPerSecond / (elapsedMs / 1000)) * 100);
}
