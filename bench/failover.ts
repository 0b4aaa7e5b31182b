// Benchmark: kill the node that runs an `ha` pod (daemon and pods, as a dead machine) — how long until the pod runs on a survivor.
//
//   npm run bench:failover -- [--peers 4] [--trials 10] [--grace SECONDS]
//
// N `meshd` processes on loopback run one `ha` pod (`sleep 3600`, a real sandboxed process). Each trial
// SIGKILLs the daemon of the node running it and every supervisor under that node's data dir, then polls
// the survivors' `get pods` (their local API, every 25 ms) until one of them reports the pod `running` on a
// survivor with a live pid. Also taken: when the new holder claimed the slot (the `slot claimed` line of its
// log), so the time splits into detection (the ha grace and presence) and start. The killed node is then
// started again (`meshd up`) and the mesh settles before the next trial. `--grace` sets the pod's
// `haGraceSeconds` (default: none, so the 5 s default applies — the failover can then not be under 5 s).
// Prints figures; never passes or fails on time. Every daemon and pod is killed and every file removed.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { isAlive } from '../test/support/meshd-cli.ts';
import { waitFor } from '../test/support/wait-for.ts';
import { log, spread, startProcessMesh } from './process-mesh.ts';

const { values } = parseArgs({
  options: {
    peers: { type: 'string', default: '4' },
    trials: { type: 'string', default: '10' },
    grace: { type: 'string' },
  },
});
const peerCount = Number(values.peers);
const trialCount = Number(values.trials);
const graceSeconds = values.grace === undefined ? undefined : Number(values.grace);
if (!(peerCount >= 2) || !(trialCount >= 1) || (graceSeconds !== undefined && !(graceSeconds >= 1))) {
  throw new Error('--peers must be at least 2, --trials at least 1, --grace at least 1 (seconds)');
}
const pod = 'failover';

const spec = `kind: Pod
name: ${pod}
spec:
  availability: ha
${graceSeconds === undefined ? '' : `  haGraceSeconds: ${graceSeconds}\n`}  containers:
    - name: app
      command: [sleep, "3600"]
`;

interface Trial {
  victim: string;
  successor: string;
  epoch: number;
  /** Kill → the successor's `slot claimed` log line. */
  claimMs: number;
  /** Kill → `get pods` on a survivor says running there, with a live pid. */
  runningMs: number;
}

/** When `node`'s log says it claimed `pod`'s slot 0 with `epoch` (ms since the epoch), if it does. */
function claimedAt(dataDir: string, epoch: number): number | undefined {
  for (const line of readFileSync(join(dataDir, 'meshd.log'), 'utf8').split('\n')) {
    if (!line.includes('"slot claimed"')) continue;
    try {
      const e = JSON.parse(line) as { t: string; slot?: string; epoch?: number };
      if (e.slot === `pod/${pod}#0` && e.epoch === epoch) return Date.parse(e.t);
    } catch {
      // not a JSON line
    }
  }
  return undefined;
}

async function main(): Promise<void> {
  const setupStarted = Date.now();
  const mesh = await startProcessMesh(peerCount, { prefix: 'meshd-bench-failover-' });
  const { fixture, names } = mesh;
  try {
    log(`${peerCount} peers ready in ${Date.now() - setupStarted} ms`);
    const file = join(fixture.root, `${pod}.yaml`);
    writeFileSync(file, spec);
    await fixture.ok(names[0] as string, ['apply', '-f', file, '--as', 'bench']);

    /** Where `get pods` on any of `on` says the pod runs (with a live pid), skipping `not`. */
    const runningOn = async (on: readonly string[], not?: string) => {
      const views = await Promise.all(
        on.map((n) =>
          mesh
            .api(n)
            .pods()
            .catch(() => []),
        ),
      );
      for (const view of views) {
        const e = view.find((x) => x.name === pod && x.slot === 0);
        if (e?.phase === 'running' && e.node !== null && e.node !== not && e.pid !== null && isAlive(e.pid))
          return e.node;
      }
      return undefined;
    };

    const trials: Trial[] = [];
    for (let i = 0; i < trialCount; i++) {
      const victim = await waitFor(() => runningOn(names), {
        timeoutMs: 60_000,
        intervalMs: 50,
        what: `${pod} running before trial ${i + 1}`,
      });
      const survivors = names.filter((n) => n !== victim);
      const killedAt = Date.now();
      await fixture.crash(victim);
      const successor = await waitFor(() => runningOn(survivors, victim), {
        timeoutMs: 120_000,
        intervalMs: 25,
        what: `${pod} running on a survivor (trial ${i + 1})`,
      });
      const runningMs = Date.now() - killedAt;
      const epoch = i + 2;
      const claimed = await waitFor(() => claimedAt(fixture.dataDir(successor), epoch), {
        timeoutMs: 10_000,
        what: `${successor}'s claim with epoch ${epoch} in its log`,
      });
      const t: Trial = { victim, successor, epoch, claimMs: claimed - killedAt, runningMs };
      trials.push(t);
      log(
        `trial ${i + 1}: killed ${victim}; ${successor} claimed after ${t.claimMs} ms (epoch ${epoch}), running after ${runningMs} ms`,
      );
      // The dead machine comes back (its pods are not to run there any more) and the mesh settles.
      await fixture.ok(victim, ['up', '--detach']);
      await mesh.settle(names, names.length);
    }

    const running = spread(trials.map((t) => t.runningMs));
    const claim = spread(trials.map((t) => t.claimMs));
    const startAfterClaim = spread(trials.map((t) => t.runningMs - t.claimMs));
    const grace = (graceSeconds ?? 5) * 1000;
    log(`kill → running on a survivor: p50 ${running.p50} ms, p99 ${running.p99} ms (max ${running.max} ms)`);
    log(`kill → claimed: p50 ${claim.p50} ms, p99 ${claim.p99} ms (ha grace ${grace} ms)`);
    log(`claimed → running (start + status): p50 ${startAfterClaim.p50} ms, p99 ${startAfterClaim.p99} ms`);
    process.stdout.write(
      `${JSON.stringify({
        bench: 'failover',
        peers: peerCount,
        trials: trialCount,
        haGraceMs: grace,
        killToRunningMs: running,
        killToClaimMs: claim,
        claimToRunningMs: startAfterClaim,
        targetP99Ms: 5000,
        trialsDetail: trials,
      })}\n`,
    );
  } finally {
    await fixture.cleanup();
  }
}

await main();
