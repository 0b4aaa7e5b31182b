// Benchmark: apply → running for N trivial pinned pods (real sandboxes and supervisors); time per lifecycle step.
//
//   npx node bench/podstart.ts [--pods 50]
//
// Two rounds over one pod agent with the daemon's default tuning: `sequential` applies one pod at a
// time and waits for it (latency without contention), `burst` applies all N at once (the node under
// load). "Running" is when the document shows the slot's status running, as every peer would see it.
// Step times come from each pod's lifecycle journal. One warm-up pod runs first (see main). Every pod is deleted and every process it started
// is gone before the next round and at the end. Prints figures; never passes or fails on time.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { defaultPodAgentTuning, type PodAgent } from '../src/daemon/pod-agent.ts';
import { createPodWorld, killSupervisorsUnder, NODE, type PodWorld } from '../test/support/pod-world.ts';
import { waitFor } from '../test/support/wait-for.ts';

const { values } = parseArgs({ options: { pods: { type: 'string', default: '50' } } });
const podCount = Number(values.pods);

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

function stats(values: number[]): { p50: number; p99: number; max: number } {
  const s = [...values].sort((a, b) => a - b);
  return {
    p50: Math.round(percentile(s, 50)),
    p99: Math.round(percentile(s, 99)),
    max: Math.round(s.at(-1) ?? Number.NaN),
  };
}

const spec = (name: string) => `kind: Pod
name: ${name}
spec:
  placement: { host: ${NODE} }
  containers:
    - name: app
      command: [sleep, "3600"]
`;

interface Round {
  applyToRunningMs: ReturnType<typeof stats>;
  /** Graph start (first step) → running.target, from the journal. */
  graphStartMs: ReturnType<typeof stats>;
  stepMs: Record<string, ReturnType<typeof stats>>;
  deleteToStoppedMs: ReturnType<typeof stats>;
  wallMs: number;
  supervisorRssMb: { p50: number; max: number };
  /** What one more supervisor really costs: its private pages (RSS counts the shared Node binary too). */
  supervisorPrivateMb: { p50: number; max: number };
  supervisorPssMb: { p50: number; max: number };
}

/** Watches the document: when each pod's slot 0 first shows `running`. */
function watchRunning(w: PodWorld, names: readonly string[]): { at: Map<string, number>; stop: () => void } {
  const at = new Map<string, number>();
  const wanted = new Set(names);
  const stop = w.store.onChange((keys) => {
    const now = performance.now();
    for (const key of keys) {
      // the runtime reports into the pod's status object (`podstatus/NAME`), not the spec (`pod/NAME`)
      const name = key.slice(key.indexOf('/') + 1);
      if (wanted.has(name) && !at.has(name) && w.slot(name)?.phase === 'running') at.set(name, now);
    }
  });
  return { at, stop };
}

async function round(
  w: PodWorld,
  agent: PodAgent,
  mode: 'sequential' | 'burst',
  prefix: string,
): Promise<Round> {
  const names = Array.from({ length: podCount }, (_, i) => `${prefix}-${i}`);
  const applied = new Map<string, number>();
  const watch = watchRunning(w, names);
  const began = performance.now();
  try {
    if (mode === 'sequential') {
      for (const n of names) {
        applied.set(n, performance.now());
        w.apply(spec(n));
        await waitFor(() => watch.at.has(n), { timeoutMs: 60_000, what: `${n} running` });
      }
    } else {
      for (const n of names) {
        applied.set(n, performance.now());
        w.apply(spec(n));
      }
      await waitFor(() => watch.at.size === names.length, {
        timeoutMs: 300_000,
        intervalMs: 50,
        what: `${names.length} pods running (${watch.at.size} so far)`,
      });
    }
  } finally {
    watch.stop();
  }
  const wallMs = performance.now() - began;
  const latencies = names.map((n) => (watch.at.get(n) ?? Number.NaN) - (applied.get(n) ?? Number.NaN));

  const steps = new Map<string, number[]>();
  const graph: number[] = [];
  const rss: number[] = [];
  const priv: number[] = [];
  const pss: number[] = [];
  for (const n of names) {
    const snap = agent.why(n)?.slots[0]?.snapshot;
    if (snap?.finishedAt !== undefined) graph.push(snap.finishedAt - snap.startedAt);
    for (const s of snap?.steps ?? []) {
      if (s.kind !== 'step' || s.durationMs === undefined) continue;
      steps.set(s.name, [...(steps.get(s.name) ?? []), s.durationMs]);
    }
    const sup = agent.describeLocal(n)?.slots[0]?.containers[0]?.supervisorPid;
    if (sup !== undefined) {
      const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${sup}/status`, 'utf8'))?.[1];
      if (kb !== undefined) rss.push(Number(kb) / 1024);
      const rollup = readFileSync(`/proc/${sup}/smaps_rollup`, 'utf8');
      const field = (name: string) =>
        Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(rollup)?.[1] ?? Number.NaN);
      priv.push((field('Private_Clean') + field('Private_Dirty')) / 1024);
      pss.push(field('Pss') / 1024);
    }
  }

  // Delete every pod; each is stopped (graph in reverse) by the agent.
  const deleted = new Map<string, number>();
  const author = { peer: w.signer.peer, host: NODE, actor: 'bench' };
  for (const n of names) {
    deleted.set(n, performance.now());
    w.store.delete(`pod/${n}`, author);
  }
  const stoppedAt = new Map<string, number>();
  await waitFor(
    () => {
      for (const n of names)
        if (!stoppedAt.has(n) && agent.describeLocal(n) === undefined) stoppedAt.set(n, performance.now());
      return stoppedAt.size === names.length;
    },
    { timeoutMs: 300_000, intervalMs: 20, what: 'every pod to stop' },
  );
  const leftovers = await killSupervisorsUnder(w.dir);
  if (leftovers > 0) log(`warning: ${leftovers} supervisors were still running after the pods were deleted`);

  const mb = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    return {
      p50: Math.round(percentile(sorted, 50) * 10) / 10,
      max: Math.round((sorted.at(-1) ?? Number.NaN) * 10) / 10,
    };
  };
  const sortedRss = [...rss].sort((a, b) => a - b);
  return {
    applyToRunningMs: stats(latencies),
    graphStartMs: stats(graph),
    stepMs: Object.fromEntries(
      [...steps].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, stats(v)]),
    ),
    deleteToStoppedMs: stats(
      names.map((n) => (stoppedAt.get(n) ?? Number.NaN) - (deleted.get(n) ?? Number.NaN)),
    ),
    wallMs: Math.round(wallMs),
    supervisorRssMb: {
      p50: Math.round(percentile(sortedRss, 50)),
      max: Math.round(sortedRss.at(-1) ?? Number.NaN),
    },
    supervisorPrivateMb: mb(priv),
    supervisorPssMb: mb(pss),
  };
}

async function main(): Promise<void> {
  const w = await createPodWorld();
  try {
    // The daemon's default tuning (status writes coalesced over 200 ms, polls every 2 s).
    const agent = w.agent({ tuning: defaultPodAgentTuning });
    await agent.start();
    // Warm-up: Node writes a supervisor's compile cache when it exits, so one pod is started and
    // deleted first (a daemon that has run before starts with a warm cache).
    w.apply(spec('warmup'));
    await waitFor(() => w.slot('warmup')?.phase === 'running', {
      timeoutMs: 60_000,
      what: 'warm-up pod running',
    });
    w.store.delete('pod/warmup', { peer: w.signer.peer, host: NODE, actor: 'bench' });
    await waitFor(() => agent.describeLocal('warmup') === undefined, {
      timeoutMs: 60_000,
      what: 'warm-up pod gone',
    });
    const sequential = await round(w, agent, 'sequential', 'seq');
    log(
      `sequential: apply → running p50 ${sequential.applyToRunningMs.p50} ms, p99 ${sequential.applyToRunningMs.p99} ms (graph p50 ${sequential.graphStartMs.p50} ms)`,
    );
    const burst = await round(w, agent, 'burst', 'burst');
    log(
      `burst of ${podCount}: apply → running p50 ${burst.applyToRunningMs.p50} ms, p99 ${burst.applyToRunningMs.p99} ms, all running after ${burst.wallMs} ms`,
    );
    for (const [name, s] of Object.entries(burst.stepMs))
      log(`  burst ${name}: p50 ${s.p50} ms, p99 ${s.p99} ms`);
    log(
      `supervisor: RSS p50 ${burst.supervisorRssMb.p50} MB; private p50 ${burst.supervisorPrivateMb.p50} MB (max ${burst.supervisorPrivateMb.max}); PSS p50 ${burst.supervisorPssMb.p50} MB`,
    );
    await agent.stop();
    process.stdout.write(
      `${JSON.stringify({ bench: 'podstart', pods: podCount, container: 'sleep 3600', sequential, burst })}\n`,
    );
  } finally {
    await w.close();
  }
}

await main();
