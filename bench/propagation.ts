// Benchmark: an edit made on one peer — how long until every peer has applied it; bytes per edit; RSS per daemon.
//
//   npm run bench:propagation -- --peers 20 [--processes] [--edits 100]
//
// In-process mode runs N real Daemons (store, mesh, API) in this process; --processes runs N `meshd`
// processes through the CLI. Either way each peer's arrival time is taken from its own /v1/events
// stream, so both modes measure the same thing. Prints figures; never passes or fails on time.

import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ApiClient } from '../src/api/client.ts';
import { Daemon } from '../src/daemon/daemon.ts';
import { DataDir } from '../src/daemon/data-dir.ts';
import { initMesh, joinMesh } from '../src/daemon/mesh-setup.ts';
import { systemClock } from '../src/shared/clock.ts';
import { silentLogger } from '../src/shared/logger.ts';
import { meshdBin } from '../test/support/meshd-cli.ts';
import { waitFor } from '../test/support/wait-for.ts';

const { values } = parseArgs({
  options: {
    peers: { type: 'string', default: '10' },
    edits: { type: 'string', default: '100' },
    processes: { type: 'boolean', default: false },
  },
});
const peerCount = Number(values.peers);
const editCount = Number(values.edits);
const mode = values.processes ? 'processes' : 'in-process';
const listen = ['/ip4/127.0.0.1/tcp/0'];

interface Peer {
  name: string;
  dir: DataDir;
  api: ApiClient;
  pid: number;
  stop(): Promise<void>;
}

const log = (line: string) => process.stderr.write(`${line}\n`);

async function startInProcess(dir: DataDir, name: string): Promise<Peer> {
  const daemon = await Daemon.start({ dataDir: dir, logger: silentLogger, clock: systemClock });
  return { name, dir, api: apiOf(dir), pid: process.pid, stop: () => daemon.stop() };
}

async function startProcess(dir: DataDir, name: string): Promise<Peer> {
  const child = spawn(process.execPath, [meshdBin, 'up', '--detach', '--data-dir', dir.path], {
    stdio: 'inherit',
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`meshd up failed for ${name}`);
  const api = apiOf(dir);
  const { pid } = await api.status();
  return {
    name,
    dir,
    api,
    pid,
    stop: async () => {
      await api.shutdown().catch(() => {});
      await waitFor(() => dir.runningPid() === undefined, { timeoutMs: 15_000, what: `${name} to stop` });
    },
  };
}

function apiOf(dir: DataDir): ApiClient {
  return new ApiClient({ socketPath: dir.socketPath, dataDir: dir.path });
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

/** CPU time (user + system, ms) a process has used so far, from /proc/<pid>/stat. */
async function cpuMsOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // fields after the parenthesised command name; utime and stime are the 12th and 13th of those
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicksPerSecond;
}

/** CPU time used by all the daemons: this process in-process, else the sum over the daemon processes. */
async function daemonsCpuMs(peers: Peer[]): Promise<number> {
  if (!values.processes) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  }
  const each = await Promise.all(peers.map((p) => cpuMsOf(p.pid).catch(() => 0)));
  return each.reduce((a, b) => a + b, 0);
}

async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
  return kb * 1024;
}

/**
 * Bytes sent on the loopback interface: the real wire cost (TCP/IP, Noise, yamux, gossip relays included).
 * The CLI and event streams use unix sockets, so on a quiet machine only the mesh uses loopback.
 */
async function loopbackBytes(): Promise<number> {
  const dev = await readFile('/proc/net/dev', 'utf8');
  const lo = dev.split('\n').find((l) => l.trim().startsWith('lo:'));
  const fields = lo?.split(':')[1]?.trim().split(/\s+/) ?? [];
  return Number(fields[8] ?? Number.NaN);
}

const round = (n: number) => Math.round(n * 10) / 10;
// USER_HZ on Linux; /proc/<pid>/stat counts CPU time in these ticks
const clockTicksPerSecond = 100;

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'meshd-bench-'));
  const peers: Peer[] = [];
  const abort = new AbortController();
  try {
    const start = values.processes ? startProcess : startInProcess;
    const setupStarted = performance.now();
    const first = new DataDir(join(root, 'p0'));
    await initMesh(first, { meshName: 'bench', nodeName: 'p0', listen });
    peers.push(await start(first, 'p0'));
    const token = await peers[0]?.api.token();
    if (token === undefined) throw new Error('no token');
    for (let i = 1; i < peerCount; i++) {
      const dir = new DataDir(join(root, `p${i}`));
      await joinMesh(dir, token, { nodeName: `p${i}`, listen });
      peers.push(await start(dir, `p${i}`));
    }
    for (const p of peers) {
      await waitFor(
        async () => (await p.api.nodes()).filter((n) => n.state === 'ready').length === peerCount,
        {
          timeoutMs: 120_000,
          what: `${p.name} to see ${peerCount} ready nodes`,
        },
      );
    }
    // Measure the steady state: every daemon dials every node it knows, so wait for the full mesh.
    await waitFor(
      async () =>
        (await Promise.all(peers.map((p) => p.api.status()))).every(
          (s) => s.connectedPeers === peerCount - 1,
        ),
      {
        timeoutMs: 120_000,
        intervalMs: 250,
        what: 'a full mesh of connections',
      },
    );
    const setupMs = performance.now() - setupStarted;
    log(`${mode}: ${peerCount} peers ready in ${Math.round(setupMs)} ms`);

    // Idle figures first: RSS of a settled daemon and the background (presence) traffic rate.
    const idleWindowMs = 5000;
    const idleBytesBefore = await loopbackBytes();
    const idleCpuBefore = await daemonsCpuMs(peers);
    const idleStarted = performance.now();
    await new Promise((r) => setTimeout(r, idleWindowMs));
    const idleCpuMs = (await daemonsCpuMs(peers)) - idleCpuBefore;
    const idleElapsedMs = performance.now() - idleStarted;
    const idleBytesPerMs = ((await loopbackBytes()) - idleBytesBefore) / idleElapsedMs;
    const rss = values.processes
      ? await Promise.all(peers.map((p) => rssOf(p.pid)))
      : [(await rssOf(process.pid)) / peerCount];

    // Each peer's latest document-event arrival time, from its own event stream.
    const lastDocAt = peers.map(() => 0);
    await Promise.all(
      peers.map(async (p, i) => {
        let hello = false;
        const followed = p.api.follow((e) => {
          if (e.type === 'doc') lastDocAt[i] = performance.now();
          hello = true;
        }, abort.signal);
        followed.catch(() => {});
        await waitFor(() => hello, { timeoutMs: 10_000, what: `${p.name}'s event stream` });
      }),
    );

    const origin = peers[0];
    if (origin === undefined) throw new Error('no origin');
    const latencies: number[] = [];
    let lost = 0;
    const bytesBefore = await loopbackBytes();
    const cpuBefore = await daemonsCpuMs(peers);
    const editsStarted = performance.now();
    for (let e = 0; e < editCount; e++) {
      const t0 = performance.now();
      await origin.api.labelNode('p0', { set: { seq: String(e) }, remove: [] });
      try {
        await waitFor(() => lastDocAt.every((t) => t >= t0), {
          timeoutMs: 10_000,
          intervalMs: 1,
          what: `edit ${e} on all peers`,
        });
        latencies.push(Math.max(...lastDocAt) - t0);
      } catch {
        lost++;
      }
    }
    const editsMs = performance.now() - editsStarted;
    // CPU the daemons spent per edit, idle work removed: unlike latency, barely moved by other load on the machine
    const cpuPerEditMs =
      Math.max(0, (await daemonsCpuMs(peers)) - cpuBefore - (idleCpuMs / idleElapsedMs) * editsMs) /
      editCount;
    const bytesRaw = (await loopbackBytes()) - bytesBefore;
    const bytesPerEdit = Math.max(0, bytesRaw - idleBytesPerMs * editsMs) / editCount;

    latencies.sort((a, b) => a - b);
    const figures = {
      bench: 'propagation',
      mode,
      peers: peerCount,
      edits: editCount,
      lost,
      p50Ms: round(percentile(latencies, 50)),
      p90Ms: round(percentile(latencies, 90)),
      p99Ms: round(percentile(latencies, 99)),
      maxMs: round(latencies.at(-1) ?? Number.NaN),
      wireBytesPerEdit: Math.round(bytesPerEdit),
      cpuPerEditMs: round(cpuPerEditMs),
      idleWireBytesPerSecond: Math.round(idleBytesPerMs * 1000),
      /** CPU used by all daemons together while idle, in % of one core. */
      idleCpuPercent: round((100 * idleCpuMs) / idleElapsedMs),
      rssPerDaemonMb: {
        p50: round(
          percentile(
            [...rss].sort((a, b) => a - b),
            50,
          ) /
            2 ** 20,
        ),
        max: round(Math.max(...rss) / 2 ** 20),
      },
      setupMs: Math.round(setupMs),
    };
    log(
      `edit → applied on all ${peerCount} peers: p50 ${figures.p50Ms} ms, p99 ${figures.p99Ms} ms (${lost} lost)`,
    );
    log(`wire bytes per edit, all peers, idle presence traffic removed: ${figures.wireBytesPerEdit}`);
    log(
      `idle: ${figures.idleCpuPercent}% of one core for all daemons, ${figures.idleWireBytesPerSecond} B/s on loopback`,
    );
    log(`RSS per daemon: p50 ${figures.rssPerDaemonMb.p50} MB, max ${figures.rssPerDaemonMb.max} MB`);
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  } finally {
    abort.abort();
    await Promise.all(peers.map((p) => p.stop().catch(() => {})));
    await rm(root, { recursive: true, force: true });
  }
}

await main();
