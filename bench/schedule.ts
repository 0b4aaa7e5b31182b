// Benchmark: apply many pods on a mesh of real daemons — apply → leased per pod, and until every slot is leased and visible on every peer.
//
//   npm run bench:schedule -- [--pods 1000] [--peers 10]
//
// N `meshd` processes on loopback, every one with `"runtime": "mock"` in its meshd.json: each node
// schedules like any other (claims the slots it is the best candidate for, as signed leases in the
// document; its pod agent runs the lifecycle graph and reports the slot running) but starts no process
// — a thousand real sandboxes with a ~55 MB supervisor each do not fit a small machine, and this bench
// measures scheduling, not process start (bench:podstart does). Pods are best-effort, one replica, no
// resource requests. They are applied one after another through n0's local API (as `meshd apply`).
//
// Figures:
// - apply → leased, per pod: from the apply request to the `slot claimed` line of the node whose claim
//   won (the claimer's log; every process shares this machine's clock);
// - all leased: first apply → the last winning claim;
// - visible everywhere: first apply → every peer's `get pods` shows every slot running on its holder.
// Also: how many slots were claimed by more than one node (concurrent claims settled by the lease rule).
// Prints figures; never passes or fails on time. Every daemon is stopped and every file removed.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { waitFor } from '../test/support/wait-for.ts';
import { log, spread, startProcessMesh } from './process-mesh.ts';

const { values } = parseArgs({
  options: {
    pods: { type: 'string', default: '1000' },
    peers: { type: 'string', default: '10' },
  },
});
const podCount = Number(values.pods);
const peerCount = Number(values.peers);
if (!(podCount >= 1) || !(peerCount >= 1)) throw new Error('--pods and --peers must be at least 1');

const name = (i: number) => `s${String(i).padStart(4, '0')}`;
const spec = (pod: string) => `kind: Pod
name: ${pod}
spec:
  containers:
    - name: app
      command: [sleep, "3600"]
`;

interface Claim {
  node: string;
  epoch: number;
  at: number;
}

/** Every `slot claimed` line of every node's log, by pod (slot 0). */
function claims(dirs: ReadonlyMap<string, string>): Map<string, Claim[]> {
  const out = new Map<string, Claim[]>();
  for (const [node, dir] of dirs) {
    for (const line of readFileSync(join(dir, 'meshd.log'), 'utf8').split('\n')) {
      if (!line.includes('"slot claimed"')) continue;
      try {
        const e = JSON.parse(line) as { t: string; pod?: string; epoch?: number };
        if (e.pod === undefined || e.epoch === undefined) continue;
        const list = out.get(e.pod) ?? [];
        list.push({ node, epoch: e.epoch, at: Date.parse(e.t) });
        out.set(e.pod, list);
      } catch {
        // not a JSON line
      }
    }
  }
  return out;
}

/** CPU time (user + system, ms) a process has used so far, from /proc/<pid>/stat (USER_HZ = 100). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) / 1024);
}

async function main(): Promise<void> {
  const setupStarted = Date.now();
  const mesh = await startProcessMesh(peerCount, {
    prefix: 'meshd-bench-schedule-',
    config: { runtime: 'mock' },
  });
  const { fixture, names } = mesh;
  try {
    log(`${peerCount} peers (mock runtime) ready in ${Date.now() - setupStarted} ms`);
    const origin = mesh.api(names[0] as string);
    const pods = Array.from({ length: podCount }, (_, i) => name(i));
    const appliedAt = new Map<string, number>();

    // Each peer's progress: when its `get pods` first showed every slot running.
    const seenAllAt = new Map<string, number>();
    let watching = true;
    const watchers = names.map(async (n) => {
      while (watching && !seenAllAt.has(n)) {
        if (appliedAt.size < podCount) {
          // Nothing can be complete before the last apply: do not load the daemons meanwhile.
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
        const view = await mesh
          .api(n)
          .pods()
          .catch(() => []);
        const running = view.filter((e) => e.phase === 'running' && e.node !== null).length;
        if (running >= podCount) seenAllAt.set(n, Date.now());
        else await new Promise((r) => setTimeout(r, 250));
      }
    });

    const pids = await Promise.all(names.map(async (n) => (await mesh.api(n).status()).pid));
    const cpuBefore = pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
    const firstApply = Date.now();
    for (const pod of pods) {
      appliedAt.set(pod, Date.now());
      await origin.apply({ text: spec(pod), file: `${pod}.yaml`, actor: 'bench' });
    }
    const applyWallMs = Date.now() - firstApply;
    log(`${podCount} applies through n0's API in ${applyWallMs} ms`);

    try {
      await waitFor(() => seenAllAt.size === names.length, {
        timeoutMs: 30 * 60_000,
        intervalMs: 100,
        what: `every peer to show ${podCount} slots running`,
      });
    } finally {
      watching = false;
      await Promise.all(watchers);
    }
    const visibleEverywhereMs = Math.max(...seenAllAt.values()) - firstApply;
    // CPU all daemons spent, per pod: unlike the times above, barely moved by other load on the machine.
    const cpuPerPodMs = (pids.reduce((sum, pid) => sum + cpuMs(pid), 0) - cpuBefore) / podCount;

    const dirs = new Map(names.map((n) => [n, fixture.dataDir(n)]));
    const byPod = claims(dirs);
    // The holder each peer reports, from n0's view (every peer agreed, or it would not have shown all running).
    const holders = new Map((await origin.pods()).map((e) => [e.name, e.node ?? '']));
    const leasedMs: number[] = [];
    let contested = 0;
    let lastClaim = 0;
    for (const pod of pods) {
      const list = byPod.get(pod) ?? [];
      if (new Set(list.map((c) => c.node)).size > 1) contested++;
      const won = list.filter((c) => c.node === holders.get(pod)).sort((a, b) => b.epoch - a.epoch)[0];
      if (won === undefined) throw new Error(`no claim by ${holders.get(pod)} for ${pod} in the logs`);
      leasedMs.push(won.at - (appliedAt.get(pod) ?? Number.NaN));
      lastClaim = Math.max(lastClaim, won.at);
    }
    const perNode = new Map<string, number>();
    for (const h of holders.values()) perNode.set(h, (perNode.get(h) ?? 0) + 1);
    const rss = pids.map(rssMb);
    const storeBytes = (await origin.stats()).store.fileBytes;

    const applyToLeased = spread(leasedMs);
    const figures = {
      bench: 'schedule',
      runtime: 'mock',
      pods: podCount,
      peers: peerCount,
      applyWallMs,
      applyToLeasedMs: applyToLeased,
      allLeasedMs: lastClaim - firstApply,
      visibleOnEveryPeerMs: visibleEverywhereMs,
      contestedSlots: contested,
      daemonsCpuPerPodMs: Math.round(cpuPerPodMs),
      slotsPerNode: spread([...perNode.values()]),
      rssPerDaemonMb: spread(rss),
      storeFileBytes: storeBytes,
      targetApplyToLeasedP99Ms: 1000,
    };
    log(
      `apply → leased: p50 ${applyToLeased.p50} ms, p99 ${applyToLeased.p99} ms, max ${applyToLeased.max} ms`,
    );
    log(`all ${podCount} leased ${figures.allLeasedMs} ms after the first apply`);
    log(
      `all leased and shown running by every peer's get pods: ${visibleEverywhereMs} ms after the first apply`,
    );
    log(
      `slots claimed by more than one node: ${contested}; slots per node ${JSON.stringify(figures.slotsPerNode)}`,
    );
    log(`CPU of all ${peerCount} daemons per pod: ${figures.daemonsCpuPerPodMs} ms`);
    log(`RSS per daemon: p50 ${figures.rssPerDaemonMb.p50} MB, max ${figures.rssPerDaemonMb.max} MB`);
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  } finally {
    await fixture.cleanup();
  }
}

await main();
