// End to end through the CLI: where pods run across four peers — ha failover, best-effort waiting for `node forget`, pinned pods, replicas, an isolated reboot, the fencing epoch.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { NodeEntry, PodEntry, StatusView } from '../src/api/types.ts';
import { processStartTime } from '../src/daemon/data-dir.ts';
import { fixedLoopback, isAlive, MeshFixture } from './support/meshd-cli.ts';
import { liveCopies } from './support/pod-processes.ts';
import { waitFor } from './support/wait-for.ts';

const lastLine = (text: string) => text.trim().split('\n').at(-1) ?? '';
const nodes = ['a', 'b', 'c', 'd'] as const;
/** The default ha grace (DEFAULT_HA_GRACE_MS): how long an ha holder may be missing before its pod moves. */
const haGraceMs = 5_000;
/** What the test accepts for "runs elsewhere" after a kill: the grace, plus detection, claim and start, on a busy 2-core machine. */
const failoverBoundMs = 20_000;

interface PodOptions {
  availability?: 'ha' | 'best-effort';
  replicas?: number;
  host?: string;
  labels?: Record<string, string>;
  command?: string[];
}

function podSpec(name: string, o: PodOptions = {}): string {
  const command = o.command ?? ['sleep', '3600'];
  const placement =
    o.host !== undefined
      ? `  placement: { host: ${o.host} }\n`
      : o.labels !== undefined
        ? `  placement: { labels: ${JSON.stringify(o.labels)} }\n`
        : '';
  return `kind: Pod
name: ${name}
spec:
  availability: ${o.availability ?? 'best-effort'}
  replicas: ${o.replicas ?? 1}
${placement}  containers:
    - name: app
      command: ${JSON.stringify(command)}
`;
}

describe('scheduling across four peers, through the CLI', { timeout: 200_000 }, () => {
  let mesh: MeshFixture;
  const listen: Record<string, string[]> = {};

  const apply = async (node: string, name: string, o: PodOptions = {}) => {
    const file = join(mesh.root, `${name}.yaml`);
    writeFileSync(file, podSpec(name, o));
    await mesh.ok(node, ['apply', '-f', file, '--as', 'tester']);
  };
  const pods = (node: string) => mesh.json<PodEntry[]>(node, ['get', 'pods']);
  const slotsOf = (entries: PodEntry[], name: string) => entries.filter((e) => e.name === name);
  /** Slot `slot` of pod `name`, once `get pods` on `node` shows it running (on any node but those in `not`). */
  const runningSlot = (node: string, name: string, what: string, not: string[] = [], slot = 0) =>
    waitFor(
      async () => {
        const e = slotsOf(await pods(node), name).find((s) => s.slot === slot);
        return e?.phase === 'running' && e.node !== null && !not.includes(e.node) ? e : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what },
    );
  /** The `n` slots of pod `name`, once `get pods` on `node` shows every one running. */
  const allRunning = (node: string, name: string, n: number) =>
    waitFor(
      async () => {
        const s = slotsOf(await pods(node), name);
        return s.length === n && s.every((e) => e.phase === 'running') ? s : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: `${n} ${name} slots running, seen from ${node}` },
    );
  /** Deletes pod `name` and waits until no node runs a copy of it. */
  const deleteAndWait = async (name: string) => {
    await mesh.ok('a', ['delete', 'pod', name, '--as', 'tester']);
    await waitFor(async () => (await copiesOn(name, nodes)).length === 0, {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: `every ${name} copy stopped`,
    });
  };
  /** Live copies of pod `name` on every node given, by node. */
  const copiesOn = async (name: string, on: readonly string[]) => {
    const out: { node: string; slot: number; epoch: number; pid: number }[] = [];
    for (const n of on) {
      for (const c of await liveCopies(mesh.dataDir(n)))
        if (c.pod === name) out.push({ node: n, slot: c.slot, epoch: c.leaseEpoch, pid: c.pid });
    }
    return out;
  };
  /** Waits until the logs of pod `name`, asked of `node`, match `pattern` (a running pod may not have written yet). */
  const logsMatch = (node: string, name: string, pattern: RegExp) =>
    waitFor(
      async () => {
        const text = await mesh.ok(node, ['logs', 'pod', name]);
        return pattern.test(text) ? text : undefined;
      },
      { timeoutMs: 10_000, what: `logs of ${name} on ${node} to match ${pattern}` },
    );

  before(async () => {
    mesh = await MeshFixture.create('meshd-sched-');
    for (const n of nodes) listen[n] = await fixedLoopback();
    const common = ['--dashboard-port', 'off', '--detach'];
    const token = lastLine(
      await mesh.ok('a', ['init', '--name', 'sched', '--node-name', 'a', ...(listen.a ?? []), ...common]),
    );
    await Promise.all(
      nodes
        .slice(1)
        .map((n) => mesh.ok(n, ['join', token, '--node-name', n, ...(listen[n] ?? []), ...common])),
    );
    for (const n of nodes) {
      await waitFor(
        async () =>
          (await mesh.json<NodeEntry[]>(n, ['get', 'nodes'])).filter((x) => x.state === 'ready').length ===
          nodes.length,
        { timeoutMs: 30_000, intervalMs: 200, what: `${n} to see all four nodes ready` },
      );
    }
  });

  after(async () => {
    await mesh?.cleanup();
  });

  test('replicas: 3 lands on three distinct nodes', async () => {
    await apply('b', 'trio', { replicas: 3 });
    const placed = await allRunning('c', 'trio', 3);
    const where = placed.map((e) => e.node);
    assert.equal(new Set(where).size, 3, `slots on distinct nodes, got ${where.join(', ')}`);
    // The document agrees with the machine: exactly one live copy per slot, where get pods says.
    const copies = await copiesOn('trio', nodes);
    assert.deepEqual(
      copies.map((c) => `${c.slot}@${c.node}`).sort(),
      placed.map((e) => `${e.slot}@${e.node}`).sort(),
    );
    await deleteAndWait('trio');
  });

  test('drain: the node stops its slot, which runs where no copy ran, under a higher epoch; uncordon ends it', async () => {
    await apply('c', 'spread', { replicas: 3 });
    const placed = await allRunning('d', 'spread', 3);
    const victim = placed.find((e) => e.slot === 0)?.node ?? '';
    const free = nodes.filter((n) => !placed.some((e) => e.node === n));
    assert.equal(free.length, 1, 'three slots on four nodes leave one free');
    const [epochBefore] = (await copiesOn('spread', [victim]))
      .filter((c) => c.slot === 0)
      .map((c) => c.epoch);
    assert.ok(epochBefore !== undefined, `slot 0 runs on ${victim}`);

    await mesh.ok('b', ['node', 'drain', victim]);
    const moved = await runningSlot('c', 'spread', 'spread#0 running off the drained node', [victim], 0);
    assert.equal(moved.node, free[0], 'replicas keep to distinct nodes: the free one takes it');
    await waitFor(async () => (await copiesOn('spread', [victim])).length === 0, {
      timeoutMs: 15_000,
      what: `the drained node ${victim} to stop its copy`,
    });
    const [after] = (await copiesOn('spread', [moved.node ?? ''])).filter((c) => c.slot === 0);
    assert.ok(
      after !== undefined && after.epoch > epochBefore,
      `a higher epoch (${epochBefore} → ${after?.epoch})`,
    );
    const flags = (await mesh.json<NodeEntry[]>('d', ['get', 'nodes'])).find((n) => n.name === victim);
    assert.deepEqual([flags?.cordoned, flags?.draining], [true, true], 'get nodes says it drains');

    await mesh.ok('b', ['node', 'uncordon', victim]);
    await waitFor(
      async () => {
        const n = (await mesh.json<NodeEntry[]>('d', ['get', 'nodes'])).find((x) => x.name === victim);
        return n?.cordoned === false && n.draining === false;
      },
      { timeoutMs: 10_000, what: `${victim} schedulable again everywhere` },
    );
    await deleteAndWait('spread');
  });

  test('a killed node: ha moves within the bound with a higher epoch, best-effort waits for `node forget`, pinned never moves', async (t) => {
    // Everything starts on a: the others are cordoned while the pods are placed.
    for (const n of ['b', 'c', 'd']) await mesh.ok('a', ['node', 'cordon', n]);
    await waitFor(
      async () => {
        for (const n of ['b', 'c', 'd']) {
          const view = await mesh.json<NodeEntry[]>(n, ['get', 'nodes']);
          if (view.filter((x) => x.cordoned).length !== 3) return false;
        }
        return true;
      },
      { timeoutMs: 20_000, intervalMs: 200, what: 'the cordons on every node' },
    );
    await apply('a', 'guard', {
      availability: 'ha',
      command: ['sh', '-c', 'echo "epoch=$MESHD_LEASE_EPOCH"; exec sleep 3600'],
    });
    await apply('a', 'cache', { availability: 'best-effort' });
    await apply('a', 'pinned', { host: 'a' });
    for (const name of ['guard', 'cache', 'pinned']) {
      const e = await runningSlot('a', name, `${name} running`);
      assert.equal(e.node, 'a', `${name} placed on a (the others are cordoned)`);
    }
    await logsMatch('a', 'guard', /^epoch=1$/m); // the pod sees its lease epoch
    for (const n of ['b', 'c', 'd']) await mesh.ok('b', ['node', 'uncordon', n]);
    await waitFor(
      async () => {
        for (const n of ['b', 'c', 'd']) {
          const view = await mesh.json<NodeEntry[]>(n, ['get', 'nodes']);
          if (view.some((x) => x.cordoned)) return false;
        }
        return true;
      },
      { timeoutMs: 20_000, intervalMs: 200, what: 'the uncordons on every survivor' },
    );

    const killedAt = Date.now();
    await mesh.crash('a');
    const survivors = ['b', 'c', 'd'];

    // Watch from a survivor until the ha pod has moved AND twice the ha grace has passed: meanwhile the
    // best-effort and pinned pods stay assigned to a, and no survivor runs a copy of them.
    let failover: { node: string; ms: number } | undefined;
    const violations: string[] = [];
    let looks = 0;
    await waitFor(
      async () => {
        const view = await pods('b');
        const now = Date.now();
        const guard = slotsOf(view, 'guard')[0];
        if (failover === undefined && guard?.phase === 'running' && guard.node !== 'a' && guard.node !== null)
          failover = { node: guard.node, ms: now - killedAt };
        for (const name of ['cache', 'pinned']) {
          const node = slotsOf(view, name)[0]?.node;
          if (node !== 'a')
            violations.push(`${name} assigned to ${node} ${now - killedAt} ms after the kill`);
          const elsewhere = await copiesOn(name, survivors);
          if (elsewhere.length > 0)
            violations.push(
              `${name} runs on ${elsewhere.map((c) => c.node).join(', ')} ${now - killedAt} ms after the kill`,
            );
        }
        looks++;
        return failover !== undefined && now - killedAt >= 2 * haGraceMs;
      },
      { timeoutMs: failoverBoundMs + 10_000, intervalMs: 200, what: 'the ha pod to move (and 2× ha grace)' },
    );
    assert.deepEqual(violations, [], 'best-effort and pinned pods stay with the dead node');
    assert.ok(looks >= 3, `looked ${looks} times`);
    assert.ok(failover !== undefined);
    t.diagnostic(`ha pod running on ${failover.node} ${failover.ms} ms after a was killed (${looks} looks)`);
    assert.ok(
      failover.ms < failoverBoundMs,
      `ha pod ran on ${failover.node} ${failover.ms} ms after the kill (bound ${failoverBoundMs} ms)`,
    );
    // The copy that runs is the survivor's, under a higher fencing epoch, and it is the only one.
    await logsMatch(failover.node, 'guard', /^epoch=2$/m);
    assert.deepEqual(
      (await copiesOn('guard', survivors)).map((c) => [c.node, c.epoch]),
      [[failover.node, 2]],
    );
    const why = await mesh.ok('c', ['why', 'pod', 'cache']);
    assert.match(why, /best-effort waits/, 'why says the best-effort pod waits for its node');

    // Declared dead: the best-effort pod moves; the pinned one still runs nowhere else.
    await mesh.ok('c', ['node', 'forget', 'a']);
    const moved = await runningSlot('d', 'cache', 'cache to move after forget', ['a']);
    assert.ok(survivors.includes(moved.node ?? ''));
    assert.deepEqual(
      (await copiesOn('cache', survivors)).map((c) => c.node),
      [moved.node],
    );
    const pinned = slotsOf(await pods('b'), 'pinned')[0];
    assert.equal(pinned?.node, 'a', 'the pinned pod is still a’s');
    assert.deepEqual(await copiesOn('pinned', survivors), [], 'the pinned pod never runs elsewhere');
    assert.match(await mesh.ok('b', ['why', 'pod', 'pinned']), /pinned to host a/);
  });

  test('a node rebooted with every peer down brings its pods back on its own', async () => {
    await mesh.ok('b', ['label', 'node', 'd', 'disk=ssd']);
    await apply('b', 'solo-pinned', { host: 'd' });
    await apply('b', 'solo-cache', { labels: { disk: 'ssd' } });
    await apply('b', 'solo-guard', { availability: 'ha', labels: { disk: 'ssd' } });
    const solo = ['solo-pinned', 'solo-cache', 'solo-guard'];
    for (const name of solo) assert.equal((await runningSlot('d', name, `${name} running on d`)).node, 'd');
    // Every slot d runs now (the earlier tests may have left it more), with its pid.
    const ranOnD = new Map(
      (await pods('d'))
        .filter((e) => e.node === 'd' && e.phase === 'running' && e.pid !== null)
        .map((e) => [`${e.name}#${e.slot}`, e.pid]),
    );
    for (const name of solo) assert.ok(ranOnD.has(`${name}#0`));

    await mesh.ok('b', ['down']);
    await mesh.ok('c', ['down']);
    await mesh.crash('d');
    // The containers die with their supervisors (a zombie not yet reaped counts as dead).
    await waitFor(() => [...ranOnD.values()].every((pid) => processStartTime(pid ?? 0) === undefined), {
      timeoutMs: 10_000,
      what: `d's pods (${[...ranOnD.keys()].join(', ')}) to die with it`,
    });

    await mesh.ok('d', ['up', '--detach']);
    assert.equal((await mesh.json<StatusView>('d', ['status'])).connectedPeers, 0, 'no peer is reachable');
    await waitFor(
      async () => {
        const view = await pods('d');
        return [...ranOnD].every(([key, old]) => {
          const e = view.find((x) => `${x.name}#${x.slot}` === key);
          return (
            e?.node === 'd' && e.phase === 'running' && e.pid !== null && e.pid !== old && isAlive(e.pid)
          );
        });
      },
      {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: `d's pods running again (${[...ranOnD.keys()].join(', ')})`,
      },
    );
    const live = await liveCopies(mesh.dataDir('d'));
    for (const key of ranOnD.keys())
      assert.equal(
        live.filter((c) => `${c.pod}#${c.slot}` === key).length,
        1,
        `one live copy of ${key} on d`,
      );
    assert.equal((await mesh.json<StatusView>('d', ['status'])).connectedPeers, 0);
  });
});
