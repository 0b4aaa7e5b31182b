// End to end through the CLI: a network partition between four peers, each in its own network namespace — both sides keep their pods, the heal leaves one copy per slot and every edit.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { NodeEntry, PeerEntry, PodEntry, RevisionView } from '../src/api/types.ts';
import { MeshFixture } from './support/meshd-cli.ts';
import { NetnsLan, netnsUnavailable } from './support/netns-lan.ts';
import { type LiveCopy, liveCopies } from './support/pod-processes.ts';
import { waitFor } from './support/wait-for.ts';

const lastLine = (text: string) => text.trim().split('\n').at(-1) ?? '';
const nodes = ['p1', 'p2', 'p3', 'p4'] as const;
const left = ['p1', 'p2'];
const right = ['p3', 'p4'];
/** Heal → one copy per slot: reconnection (redial backoff after the partition) + sync + the losers' stop. */
const healBoundMs = 60_000;

const spec = (
  name: string,
  o: { availability: 'ha' | 'best-effort'; replicas?: number; env?: string },
) => `kind: Pod
name: ${name}
spec:
  availability: ${o.availability}
  replicas: ${o.replicas ?? 1}
  containers:
    - name: app
      command: [sleep, "3600"]
${o.env === undefined ? '' : `      env: ${o.env}\n`}`;

describe('a partition between network namespaces', { timeout: 200_000 }, () => {
  let mesh: MeshFixture | undefined;
  let lan: NetnsLan | undefined;

  const m = () => {
    if (mesh === undefined) throw new Error('no mesh');
    return mesh;
  };
  const apply = async (node: string, name: string, text: string, actor: string) => {
    const file = join(m().root, `${name}-${actor}.yaml`);
    writeFileSync(file, text);
    await m().ok(node, ['apply', '-f', file, '--as', actor]);
  };
  const pods = (node: string) => m().json<PodEntry[]>(node, ['get', 'pods']);
  const readyOn = async (node: string) =>
    (await m().json<NodeEntry[]>(node, ['get', 'nodes']))
      .filter((n) => n.state === 'ready')
      .map((n) => n.name)
      .sort();
  /** Every live pod process on the given nodes, tagged with the node whose data dir holds it. */
  const copies = async (on: readonly string[] = nodes) => {
    const out: (LiveCopy & { node: string })[] = [];
    for (const n of on) for (const c of await liveCopies(m().dataDir(n))) out.push({ ...c, node: n });
    return out;
  };
  const key = (c: { pod: string; slot: number }) => `${c.pod}#${c.slot}`;

  before(async () => {
    const why = netnsUnavailable();
    if (why !== undefined) throw new Error(`partition tests need network namespaces: ${why}`);
    lan = NetnsLan.create(nodes);
    mesh = await MeshFixture.create('meshd-partition-');
    const net = lan;
    const common = ['--dashboard-port', 'off', '--detach'];
    const token = lastLine(
      await mesh.ok('p1', ['init', '--name', 'split', '--node-name', 'p1', ...net.listen('p1'), ...common], {
        netns: net.ns('p1'),
      }),
    );
    await Promise.all(
      nodes
        .slice(1)
        .map((n) =>
          m().ok(n, ['join', token, '--node-name', n, ...net.listen(n), ...common], { netns: net.ns(n) }),
        ),
    );
    for (const n of nodes) {
      await waitFor(async () => (await readyOn(n)).length === nodes.length, {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: `${n} to see all four nodes ready`,
      });
    }
  });

  after(async () => {
    // Processes first (a namespace lives on while a process is in it), then the namespaces.
    await mesh?.cleanup();
    lan?.destroy();
    assert.deepEqual(lan?.existing() ?? [], [], 'every namespace removed');
  });

  test('both sides keep their pods (ha on both: AP); the heal leaves one copy per slot and both edits', async (t) => {
    const net = lan;
    assert.ok(net !== undefined);
    await apply('p1', 'guard', spec('guard', { availability: 'ha' }), 'setup');
    await apply('p1', 'spread', spec('spread', { availability: 'best-effort', replicas: 4 }), 'setup');
    await apply('p1', 'notes', spec('notes', { availability: 'best-effort', env: '{ BASE: "1" }' }), 'setup');
    const placed = await waitFor(
      async () => {
        const view = await pods('p2');
        const all = view.filter((e) => ['guard', 'spread', 'notes'].includes(e.name));
        return all.length === 6 && all.every((e) => e.phase === 'running') ? all : undefined;
      },
      { timeoutMs: 40_000, intervalMs: 200, what: 'every slot running' },
    );
    const nodeOf = new Map(placed.map((e) => [key({ pod: e.name, slot: e.slot }), e.node ?? '']));
    const beforeCopies = await copies();
    assert.deepEqual(
      beforeCopies.map((c) => `${key(c)}@${c.node}`).sort(),
      [...nodeOf].map(([k, n]) => `${k}@${n}`).sort(),
      'one copy per slot, where get pods says',
    );
    const guardSide = left.includes(nodeOf.get('guard#0') ?? '') ? left : right;
    const otherSide = guardSide === left ? right : left;

    const cutAt = Date.now();
    net.partition(right);
    for (const [side, far] of [
      [left, right],
      [right, left],
    ] as const) {
      for (const n of side) {
        await waitFor(async () => (await readyOn(n)).join() === [...side].sort().join(), {
          timeoutMs: 30_000,
          intervalMs: 200,
          what: `${n} to see only ${side.join(', ')} (the far side ${far.join(', ')} unreachable)`,
        });
      }
    }
    // The side without the ha holder claims it after the grace: it now runs on both sides.
    const doubled = await waitFor(
      async () => {
        const g = (await copies()).filter((c) => c.pod === 'guard');
        return g.some((c) => guardSide.includes(c.node)) && g.some((c) => otherSide.includes(c.node))
          ? g
          : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'guard running on both sides' },
    );
    assert.equal(doubled.length, 2);
    t.diagnostic(
      `guard held on ${nodeOf.get('guard#0')}; running on both sides ${Date.now() - cutAt} ms after the cut`,
    );
    assert.deepEqual(doubled.map((c) => c.leaseEpoch).sort(), [1, 2], 'the far side claimed with epoch 2');
    // Best-effort slots stay where they were on both sides: same processes, none doubled.
    const during = await copies();
    for (const c of beforeCopies.filter((x) => x.pod !== 'guard')) {
      assert.ok(
        during.some((d) => d.node === c.node && d.pid === c.pid),
        `${key(c)} still runs on ${c.node} (pid ${c.pid})`,
      );
    }
    assert.equal(during.filter((c) => c.pod !== 'guard').length, beforeCopies.length - 1);

    // An edit on each side, of different fields of one pod.
    await apply(
      'p1',
      'notes',
      spec('notes', { availability: 'best-effort', env: '{ BASE: "1", LEFT: "yes" }' }),
      'lefty',
    );
    await apply(
      'p3',
      'notes',
      spec('notes', { availability: 'best-effort', env: '{ BASE: "1", RIGHT: "yes" }' }),
      'righty',
    );

    // Long enough for each side to close its silent connections to the other: the heal must redial.
    for (const [n, far] of [
      ['p1', right],
      ['p3', left],
    ] as const) {
      await waitFor(
        async () =>
          (await m().json<PeerEntry[]>(n, ['peers']))
            .filter((p) => far.includes(p.name ?? ''))
            .every((p) => !p.connected),
        { timeoutMs: 40_000, intervalMs: 500, what: `${n} to drop its connections to ${far.join(', ')}` },
      );
    }

    const healedAt = Date.now();
    net.heal();
    const settled = await waitFor(
      async () => {
        const live = await copies();
        const perSlot = new Map<string, number>();
        for (const c of live) perSlot.set(key(c), (perSlot.get(key(c)) ?? 0) + 1);
        const one = nodeOf.size === perSlot.size && [...perSlot.values()].every((n) => n === 1);
        return one ? live : undefined;
      },
      { timeoutMs: healBoundMs, intervalMs: 200, what: 'exactly one copy per slot after the heal' },
    );
    const healMs = Date.now() - healedAt;
    t.diagnostic(`one copy per slot ${healMs} ms after the heal (partition lasted ${healedAt - cutAt} ms)`);
    const guard = settled.filter((c) => c.pod === 'guard');
    assert.equal(guard.length, 1);
    assert.equal(guard[0]?.leaseEpoch, 2, 'the higher epoch survives');
    assert.ok(healMs < healBoundMs, `one copy per slot ${healMs} ms after the heal`);

    // Every peer agrees on where each slot runs, and has both edits, in its history and its spec.
    for (const n of nodes) {
      await waitFor(
        async () => {
          const view = await pods(n);
          return settled.every((c) =>
            view.some(
              (e) => e.name === c.pod && e.slot === c.slot && e.node === c.node && e.phase === 'running',
            ),
          );
        },
        { timeoutMs: 30_000, intervalMs: 200, what: `${n} to agree on where every slot runs` },
      );
      const history = await waitFor(
        async () => {
          const h = (await m().json<RevisionView[]>(n, ['history', 'pod', 'notes'])).filter(
            (r) => r.kind === 'user',
          );
          return h.some((r) => r.author.actor === 'lefty') && h.some((r) => r.author.actor === 'righty')
            ? h
            : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 200, what: `both edits in ${n}'s history` },
      );
      assert.deepEqual(
        history
          .filter((r) => r.concurrent)
          .map((r) => r.author.actor)
          .sort(),
        ['lefty', 'righty'],
        `${n} marks the partition edits concurrent`,
      );
      const text = await m().ok(n, ['describe', 'pod', 'notes']);
      assert.match(text, /LEFT: "?yes"?/);
      assert.match(text, /RIGHT: "?yes"?/);
    }
    // And it stays settled: the same processes still run (notes restarts in place for the merged spec).
    const stable = (list: (LiveCopy & { node: string })[]) =>
      list
        .filter((c) => c.pod !== 'notes')
        .map((c) => `${key(c)}@${c.node}:${c.pid}`)
        .sort();
    assert.deepEqual(stable(await copies()), stable(settled));
  });
});
