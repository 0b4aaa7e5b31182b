// Per-container cgroup limits (memory, cpu, pids), on cgroup v1, v2 or hybrid hosts, detected at run time.
//
// Each container gets `<own cgroup>/meshd/<pod>/<container>` in every hierarchy that carries a wanted
// controller, where <own cgroup> is the supervisor's cgroup in that hierarchy: limits nest inside whatever
// limits the daemon itself runs under. A controller the host lacks (or refuses) is reported, not fatal.

import { createHash } from 'node:crypto';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Clock } from '../../shared/clock.ts';
import type { CgroupReport, ContainerLimits } from '../driver.ts';

export type CgroupController = 'memory' | 'cpu' | 'pids';
export const cgroupControllers: readonly CgroupController[] = ['memory', 'cpu', 'pids'];
export const DEFAULT_PIDS_LIMIT = 256;
const CPU_PERIOD_US = 100_000;

export interface ControllerHome {
  version: 1 | 2;
  /** The directory of this process's own cgroup in the hierarchy that carries the controller. */
  ownDir: string;
}

export interface CgroupLayout {
  mode: CgroupReport['mode'];
  homes: Partial<Record<CgroupController, ControllerHome>>;
  missing: { controller: string; reason: string }[];
}

export interface MountInfoEntry {
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

/** Parses /proc/self/mountinfo: `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const out: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const l = left.split(' ');
    const r = right.split(' ');
    const root = l[3];
    const mountPoint = l[4];
    const fsType = r[0];
    if (root === undefined || mountPoint === undefined || fsType === undefined) continue;
    out.push({
      root: unescapeMount(root),
      mountPoint: unescapeMount(mountPoint),
      fsType,
      superOptions: (r[2] ?? '').split(','),
    });
  }
  return out;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

export interface ProcCgroupEntry {
  hierarchyId: number;
  controllers: string[];
  path: string;
}

/** Parses /proc/self/cgroup: `id:controllers:path`; the v2 line is `0::path`. */
export function parseProcCgroup(text: string): ProcCgroupEntry[] {
  const out: ProcCgroupEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (m === null) continue;
    out.push({
      hierarchyId: Number(m[1]),
      controllers: (m[2] ?? '').split(',').filter((c) => c !== ''),
      path: m[3] ?? '/',
    });
  }
  return out;
}

/** The directory of cgroup `path` under a mount whose root is `mountRoot`, or undefined if outside it. */
function dirUnder(mount: MountInfoEntry, path: string): string | undefined {
  const rel = posix.relative(mount.root, path);
  if (rel.startsWith('..')) return undefined;
  return rel === '' ? mount.mountPoint : posix.join(mount.mountPoint, rel);
}

export interface LayoutInput {
  mountInfo: string;
  procCgroup: string;
  /** Contents of `cgroup.controllers` in this process's v2 cgroup, if there is a v2 mount. */
  readV2Controllers: (ownDir: string) => string | undefined;
}

/** Decides, per controller, which hierarchy carries it and where this process sits in it. */
export function detectCgroupLayout(input: LayoutInput): CgroupLayout {
  const mounts = parseMountInfo(input.mountInfo);
  const own = parseProcCgroup(input.procCgroup);
  const homes: CgroupLayout['homes'] = {};
  const missing: CgroupLayout['missing'] = [];
  const v1Mounts = mounts.filter((m) => m.fsType === 'cgroup');
  const v2Mount = mounts.find((m) => m.fsType === 'cgroup2');
  const v2Own = own.find((e) => e.hierarchyId === 0 && e.controllers.length === 0);
  const v2Dir = v2Mount !== undefined && v2Own !== undefined ? dirUnder(v2Mount, v2Own.path) : undefined;
  const v2Available = v2Dir === undefined ? [] : (input.readV2Controllers(v2Dir) ?? '').trim().split(/\s+/);

  for (const controller of cgroupControllers) {
    const v1 = v1Mounts.find((m) => m.superOptions.includes(controller));
    if (v1 !== undefined) {
      const entry = own.find((e) => e.controllers.includes(controller));
      const dir = entry === undefined ? undefined : dirUnder(v1, entry.path);
      if (dir === undefined) {
        missing.push({
          controller,
          reason: `this process's ${controller} cgroup is outside the mount at ${v1.mountPoint}`,
        });
      } else {
        homes[controller] = { version: 1, ownDir: dir };
      }
      continue;
    }
    if (v2Dir !== undefined && v2Available.includes(controller)) {
      homes[controller] = { version: 2, ownDir: v2Dir };
      continue;
    }
    missing.push({
      controller,
      reason: `no cgroup v1 hierarchy or v2 controller for ${controller} on this host`,
    });
  }
  const mode: CgroupLayout['mode'] =
    v1Mounts.length > 0 && v2Mount !== undefined
      ? 'hybrid'
      : v1Mounts.length > 0
        ? 'v1'
        : v2Mount !== undefined
          ? 'v2'
          : 'none';
  return { mode, homes, missing };
}

/** Reads this process's cgroup layout from /proc. */
export async function probeCgroupLayout(): Promise<CgroupLayout> {
  const [mountInfo, procCgroup] = await Promise.all([
    readFile('/proc/self/mountinfo', 'utf8').catch(() => ''),
    readFile('/proc/self/cgroup', 'utf8').catch(() => ''),
  ]);
  const v2Controllers = new Map<string, string | undefined>();
  const mounts = parseMountInfo(mountInfo);
  const v2Mount = mounts.find((m) => m.fsType === 'cgroup2');
  const v2Own = parseProcCgroup(procCgroup).find((e) => e.hierarchyId === 0);
  if (v2Mount !== undefined && v2Own !== undefined) {
    const dir = dirUnder(v2Mount, v2Own.path);
    if (dir !== undefined) {
      v2Controllers.set(
        dir,
        await readFile(posix.join(dir, 'cgroup.controllers'), 'utf8').catch(() => undefined),
      );
    }
  }
  return detectCgroupLayout({ mountInfo, procCgroup, readV2Controllers: (dir) => v2Controllers.get(dir) });
}

/**
 * A path component for a pod or container name; distinct names stay distinct. A name that is not
 * already safe gets a hash after '+', a character no name kept as-is contains.
 */
export function cgroupSegment(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 60);
  if (safe === name && safe !== '.' && safe !== '..') return safe;
  return `${safe}+${createHash('sha256').update(name).digest('hex').slice(0, 16)}`;
}

export interface ContainerCgroup {
  mode: CgroupReport['mode'];
  /** Leaf directory per controller (several controllers may share one v1 or v2 directory). */
  dirs: Partial<Record<CgroupController, string>>;
  applied: CgroupReport['applied'];
  missing: CgroupReport['missing'];
}

/** Every distinct leaf directory of `cg`. */
export function cgroupDirs(cg: Pick<ContainerCgroup, 'dirs'>): string[] {
  return [...new Set(Object.values(cg.dirs))];
}

function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code !== undefined ? `${e.code} ${e.path ?? ''}`.trim() : String(err);
}

async function mkdirWithRetry(dir: string): Promise<void> {
  // A sibling container's cleanup may rmdir the pod level between our mkdirs: try again.
  for (let i = 0; ; i++) {
    try {
      await mkdir(dir, { recursive: true });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || i >= 3) throw err;
    }
  }
}

/** v2 only: a child can use a controller once every ancestor below our own cgroup delegates it. */
async function enableV2(ownDir: string, leaf: string, controller: CgroupController): Promise<void> {
  const rel = posix.relative(ownDir, posix.dirname(leaf)).split('/');
  let dir = ownDir;
  await writeFile(posix.join(dir, 'cgroup.subtree_control'), `+${controller}`);
  for (const seg of rel) {
    dir = posix.join(dir, seg);
    await writeFile(posix.join(dir, 'cgroup.subtree_control'), `+${controller}`);
  }
}

async function applyLimit(
  controller: CgroupController,
  version: 1 | 2,
  dir: string,
  limits: ContainerLimits,
  applied: CgroupReport['applied'],
): Promise<void> {
  if (controller === 'memory' && limits.memoryBytes !== undefined) {
    const bytes = String(Math.floor(limits.memoryBytes));
    if (version === 1) {
      await writeFile(posix.join(dir, 'memory.limit_in_bytes'), bytes);
      // Without this, swap extends the limit where swap exists. Absent without swap accounting.
      await writeFile(posix.join(dir, 'memory.memsw.limit_in_bytes'), bytes).catch(() => {});
    } else {
      await writeFile(posix.join(dir, 'memory.max'), bytes);
      await writeFile(posix.join(dir, 'memory.swap.max'), '0').catch(() => {});
    }
    applied.memoryBytes = Math.floor(limits.memoryBytes);
  }
  if (controller === 'cpu' && limits.cpuCores !== undefined) {
    const quota = Math.max(1000, Math.round(limits.cpuCores * CPU_PERIOD_US));
    if (version === 1) {
      await writeFile(posix.join(dir, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
      await writeFile(posix.join(dir, 'cpu.cfs_quota_us'), String(quota));
    } else {
      await writeFile(posix.join(dir, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
    }
    applied.cpuCores = quota / CPU_PERIOD_US;
  }
  if (controller === 'pids') {
    const max = limits.pids ?? DEFAULT_PIDS_LIMIT;
    await writeFile(posix.join(dir, 'pids.max'), String(max));
    applied.pids = max;
  }
}

function wanted(controller: CgroupController, limits: ContainerLimits): boolean {
  if (controller === 'memory') return limits.memoryBytes !== undefined;
  if (controller === 'cpu') return limits.cpuCores !== undefined;
  return true; // pids always: a fork bomb must not take the host down
}

/** Creates the container's cgroups and writes the limits; what fails is reported in `missing`. */
export async function createContainerCgroup(
  layout: CgroupLayout,
  names: { pod: string; container: string },
  limits: ContainerLimits,
): Promise<ContainerCgroup> {
  const dirs: ContainerCgroup['dirs'] = {};
  const applied: CgroupReport['applied'] = {};
  const missing: CgroupReport['missing'] = [];
  for (const controller of cgroupControllers) {
    if (!wanted(controller, limits)) continue;
    const home = layout.homes[controller];
    if (home === undefined) {
      const known = layout.missing.find((m) => m.controller === controller);
      missing.push({ controller, reason: known?.reason ?? 'not available' });
      continue;
    }
    const leaf = posix.join(home.ownDir, 'meshd', cgroupSegment(names.pod), cgroupSegment(names.container));
    try {
      await mkdirWithRetry(leaf);
      if (home.version === 2) await enableV2(home.ownDir, leaf, controller);
      await applyLimit(controller, home.version, leaf, limits, applied);
      dirs[controller] = leaf;
    } catch (err) {
      missing.push({ controller, reason: `cannot set up ${leaf}: ${reason(err)}` });
    }
  }
  return { mode: layout.mode, dirs, applied, missing };
}

/** Moves `pid` into every leaf; returns the controllers where that failed (their limits do not apply). */
export async function attachToCgroup(
  cg: ContainerCgroup,
  pid: number,
): Promise<{ controller: string; reason: string }[]> {
  const failed: { controller: string; reason: string }[] = [];
  const done = new Set<string>();
  for (const [controller, dir] of Object.entries(cg.dirs)) {
    if (done.has(dir)) continue;
    done.add(dir);
    try {
      await writeFile(posix.join(dir, 'cgroup.procs'), String(pid));
    } catch (err) {
      failed.push({ controller, reason: `cannot move pid ${pid} into ${dir}: ${reason(err)}` });
    }
  }
  return failed;
}

/** How many times the kernel OOM-killed inside the memory cgroup, when it says. */
export async function oomKillCount(cg: ContainerCgroup): Promise<number | undefined> {
  const dir = cg.dirs.memory;
  if (dir === undefined) return undefined;
  for (const file of ['memory.oom_control', 'memory.events']) {
    const text = await readFile(posix.join(dir, file), 'utf8').catch(() => undefined);
    const m = text === undefined ? null : /^oom_kill (\d+)$/m.exec(text);
    if (m !== null) return Number(m[1]);
  }
  return undefined;
}

/** Current task count in the pids cgroup, when there is one. */
export async function pidsCurrent(cg: Pick<ContainerCgroup, 'dirs'>): Promise<number | undefined> {
  const dir = cg.dirs.pids;
  if (dir === undefined) return undefined;
  const text = await readFile(posix.join(dir, 'pids.current'), 'utf8').catch(() => undefined);
  return text === undefined ? undefined : Number(text.trim());
}

/**
 * SIGKILLs every task still in the container's cgroup leaves, in a few rounds (a fork in flight shows up
 * in the next one); `exclude` (the caller) is never signalled. Returns how many were signalled. This is
 * how an unsandboxed container — without a pid namespace to end it — is ended whole.
 */
export async function killCgroupTasks(
  dirs: readonly string[],
  clock: Clock,
  exclude: number = process.pid,
): Promise<number> {
  let killed = 0;
  for (let round = 0; round < 5; round++) {
    const pids = new Set<number>();
    for (const dir of new Set(dirs)) {
      const text = await readFile(posix.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const line of text.split('\n')) if (line.trim() !== '') pids.add(Number(line));
    }
    pids.delete(exclude);
    if (pids.size === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killed++;
      } catch {}
    }
    await new Promise<void>((r) => clock.setTimeout(r, 20));
  }
  return killed;
}

/**
 * Removes the container's leaves (retrying while exiting tasks drain) and then the pod level if it is
 * empty. Returns the leaves that could not be removed.
 */
export async function removeContainerCgroup(
  dirs: readonly string[],
  clock: Clock,
  opts: { attempts?: number; delayMs?: number } = {},
): Promise<string[]> {
  const attempts = opts.attempts ?? 40;
  const delayMs = opts.delayMs ?? 50;
  const left: string[] = [];
  for (const dir of dirs) {
    let removed = false;
    for (let i = 0; i < attempts && !removed; i++) {
      try {
        await rmdir(dir);
        removed = true;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') removed = true;
        else if (code === 'EBUSY') await new Promise<void>((r) => clock.setTimeout(r, delayMs));
        else break;
      }
    }
    if (!removed) left.push(dir);
    // The pod level goes when its last container goes; a sibling still running keeps it (ENOTEMPTY).
    await rmdir(posix.dirname(dir)).catch(() => {});
  }
  return left;
}
