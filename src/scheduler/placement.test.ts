// Tests for feasibility checkers and placement plans: reasons, summaries, determinism, distinct replicas.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { ClusterView, NodeInfo } from './cluster-view.ts';
import { FEASIBILITY_CHECKERS, rejectionsFor } from './feasibility.ts';
import { planPlacement, preferenceRank } from './placement.ts';
import { rendezvousOrder } from './rendezvous.ts';
import { slotKey, slotsOf } from './slots.ts';
import { toMillicores } from './units.ts';
import { GI, MI, node, nodeArb, peerOf, pod, podsArb, shuffled, T0, view } from './view-fixtures.ts';

describe('feasibility checkers', () => {
  const base = { now: T0, free: { cpuMillis: 4000, memoryBytes: 4 * GI } };
  const reasonsFor = (v: ClusterView, p = pod('web'), n: NodeInfo = node('a'), free = base.free) =>
    rejectionsFor({ view: v, now: T0, pod: p, node: n, free }).map((r) => `${r.checker}: ${r.reason}`);

  it('accepts a plain node for a plain pod', () => {
    assert.deepEqual(reasonsFor(view({ nodes: [node('a')] })), []);
  });

  it('names the missing label, and the value the node has instead', () => {
    const p = pod('web', { placement: { labels: { zone: 'eu', disk: 'ssd' } } });
    assert.deepEqual(reasonsFor(view({ nodes: [node('a')] }), p), [
      'labels: labels disk=ssd, zone=eu missing',
    ]);
    const us = node('a', { labels: { zone: 'us', disk: 'ssd' } });
    assert.deepEqual(reasonsFor(view({ nodes: [us] }), p, us), [
      'labels: label zone=eu missing (node has zone=us)',
    ]);
  });

  it('reports exhausted memory and cpu with free and asked amounts', () => {
    const p = pod('web', { resources: { cpu: 1, memoryBytes: 64 * MI } });
    const free = { cpuMillis: 500, memoryBytes: 60 * MI };
    assert.deepEqual(reasonsFor(view({ nodes: [node('a')] }), p, node('a'), free), [
      'cpu: cpu exhausted: 0.5 free, 1 asked',
      'memory: memory exhausted: 60Mi free, 64Mi asked',
    ]);
  });

  it('refuses cordoned and draining nodes, other hosts than the pinned one', () => {
    const v = view({ nodes: [node('a')] });
    assert.deepEqual(reasonsFor(v, pod('web'), node('a', { cordoned: true })), ['cordon: cordoned']);
    assert.deepEqual(reasonsFor(v, pod('web'), node('a', { draining: true })), ['cordon: draining']);
    assert.deepEqual(reasonsFor(v, pod('web', { placement: { host: 'nas' } })), ['host: pinned to host nas']);
  });

  it('refuses missing, dead and forgotten nodes', () => {
    const a = node('a');
    const missing = view({ nodes: [a], presence: new Map([[a.peerId, T0 - 12_000]]) });
    assert.deepEqual(reasonsFor(missing), ['alive: node missing for 12s (live within 5s)']);
    const dead = view({ nodes: [a], presence: new Map([[a.peerId, T0 - 8 * 86_400_000]]) });
    assert.deepEqual(reasonsFor(dead), ['alive: node dead: missing for 8d (dead after 7d)']);
    const forgotten = view({ nodes: [a], forgotten: new Set([a.peerId]) });
    assert.deepEqual(reasonsFor(forgotten), ['alive: node dead: forgotten (meshd node forget)']);
  });

  it('does not count absence before this peer started watching', () => {
    const a = node('a');
    const fresh = view({ nodes: [a], presence: new Map(), presenceSince: T0 - 2_000 });
    assert.deepEqual(reasonsFor(fresh), []);
  });

  it('requires the node policy to allow each relaxation the pod requests, naming what is missing', () => {
    const p = pod('web', {
      security: {
        hostNetwork: true,
        hostPaths: [
          { path: '/srv/data', readOnly: false },
          { path: '/srv/../etc', readOnly: true },
          { path: '/media/photos', readOnly: false },
        ],
        devices: ['/dev/kvm'],
        capabilities: ['NET_ADMIN'],
      },
    });
    const n = node('a', {
      policy: { hostPaths: [{ path: '/srv' }, { path: '/media', readOnly: true }], devices: [] },
    });
    assert.deepEqual(reasonsFor(view({ nodes: [n] }), p, n), [
      'policy: node policy does not allow hostNetwork, hostPath /srv/../etc (read-only), ' +
        'hostPath /media/photos (read-write), device /dev/kvm, capability NET_ADMIN ' +
        '(the pod requests it; the node operator must allow it)',
    ]);
    const open = node('a', {
      policy: {
        hostNetwork: true,
        hostPaths: [{ path: '/srv/' }, { path: '/media', readOnly: true }],
        devices: ['/dev/kvm'],
        capabilities: ['NET_ADMIN'],
      },
    });
    const fine = pod('web', {
      security: {
        hostNetwork: true,
        hostPaths: [
          { path: '/srv/data', readOnly: false },
          { path: '/media/photos', readOnly: true },
        ],
        devices: ['/dev/kvm'],
        capabilities: ['NET_ADMIN'],
      },
    });
    assert.deepEqual(reasonsFor(view({ nodes: [open] }), fine, open), []);
  });
});

describe('planPlacement', () => {
  it('summarises why nothing fits, grouping nodes per reason', () => {
    const nodes = [
      node('a', { labels: { zone: 'eu' }, capacity: { cpu: 4, memoryBytes: 60 * MI } }),
      node('b', { labels: { zone: 'eu' }, capacity: { cpu: 4, memoryBytes: 32 * MI } }),
      node('c', { labels: { zone: 'us' } }),
    ];
    const p = pod('web', {
      placement: { labels: { zone: 'eu' } },
      resources: { cpu: 0.5, memoryBytes: 64 * MI },
    });
    const plan = planPlacement(view({ nodes, pods: [p] }), T0);
    const slot = plan.bySlot.get('pod/web#0');
    assert.equal(slot?.assigned, undefined);
    assert.equal(slot?.summary, 'no feasible node: label zone=eu missing on c; memory exhausted on a, b');
    assert.deepEqual(slot?.metrics, { labels: 1, memory: 2 });
    assert.ok(slot?.rejections.some((r) => r.reason === 'memory exhausted: 60Mi free, 64Mi asked'));
  });

  it('says so when no node is known', () => {
    const plan = planPlacement(view({ pods: [pod('web')] }), T0);
    assert.equal(plan.bySlot.get('pod/web#0')?.summary, 'no feasible node: no nodes known');
  });

  it('ranks feasible nodes by rendezvous hashing of the slot', () => {
    const nodes = ['a', 'b', 'c', 'd'].map((n) => node(n));
    const plan = planPlacement(view({ nodes, pods: [pod('web')] }), T0);
    assert.deepEqual(
      plan.bySlot.get('pod/web#0')?.candidates,
      rendezvousOrder(
        'pod/web#0',
        nodes.map((n) => n.peerId),
      ),
    );
  });

  it('keeps held slots where they are and counts their load', () => {
    const nodes = [node('a', { capacity: { cpu: 1, memoryBytes: GI } }), node('b')];
    const pods = [
      pod('db', { resources: { cpu: 1, memoryBytes: 64 * MI } }),
      pod('web', { resources: { cpu: 1, memoryBytes: 64 * MI } }),
    ];
    const plan = planPlacement(view({ nodes, pods }), T0, new Map([['pod/db#0', peerOf('a')]]));
    assert.equal(plan.bySlot.get('pod/db#0')?.heldBy, peerOf('a'));
    assert.deepEqual(plan.bySlot.get('pod/web#0')?.candidates, [peerOf('b')]);
  });

  it('puts replicas on one node when it is the only feasible one', () => {
    const plan = planPlacement(view({ nodes: [node('a')], pods: [pod('web', { replicas: 3 })] }), T0);
    assert.deepEqual(
      plan.slots.map((s) => s.assigned),
      [peerOf('a'), peerOf('a'), peerOf('a')],
    );
  });

  it('property: every placement passes every checker, and no node is overcommitted', () => {
    const absence = fc.array(fc.constantFrom(0, 0, 3_000, 10_000, 8 * 86_400_000), {
      minLength: 7,
      maxLength: 7,
    });
    fc.assert(
      fc.property(nodeArb, podsArb, absence, (nodes, pods, away) => {
        const presence = new Map(nodes.map((n, i) => [n.peerId, T0 - (away[i] ?? 0)]));
        const v = view({ nodes, pods, presence });
        const plan = planPlacement(v, T0);
        const used = new Map<string, { cpu: number; mem: number }>();
        for (const s of plan.slots) {
          if (s.assigned === undefined) continue;
          const p = pods.find((x) => x.name === s.pod);
          assert.ok(p);
          const u = used.get(s.assigned) ?? { cpu: 0, mem: 0 };
          u.cpu += toMillicores(p.resources.cpu);
          u.mem += p.resources.memoryBytes;
          used.set(s.assigned, u);
        }
        for (const s of plan.slots) {
          const p = pods.find((x) => x.name === s.pod);
          assert.ok(p);
          if (s.assigned === undefined) {
            assert.match(s.summary ?? '', /^no feasible node: /);
            assert.equal(s.candidates.length, 0);
            continue;
          }
          const n = nodes.find((x) => x.peerId === s.assigned);
          assert.ok(n);
          const u = used.get(n.peerId) ?? { cpu: 0, mem: 0 };
          // Free as seen by this slot once every other placement on the node is counted.
          const free = {
            cpuMillis: toMillicores(n.capacity.cpu) - u.cpu + toMillicores(p.resources.cpu),
            memoryBytes: n.capacity.memoryBytes - u.mem + p.resources.memoryBytes,
          };
          for (const checker of FEASIBILITY_CHECKERS) {
            const refused = checker.check({ view: v, now: T0, pod: p, node: n, free });
            assert.equal(refused, undefined, `${s.slot} on ${n.name}: ${checker.name} ${refused?.reason}`);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('property: every refused node has a reason, and candidates plus refused nodes are all nodes', () => {
    fc.assert(
      fc.property(nodeArb, podsArb, (nodes, pods) => {
        const plan = planPlacement(view({ nodes, pods }), T0);
        for (const s of plan.slots) {
          const refused = new Set(s.rejections.map((r) => r.peerId));
          assert.ok(s.rejections.every((r) => r.reason.length > 0));
          assert.equal(refused.size + s.candidates.length, nodes.length);
          assert.ok(s.candidates.every((c) => !refused.has(c)));
          const counted = Object.values(s.metrics).reduce((a, b) => a + b, 0);
          assert.equal(counted, refused.size);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('property: same inputs give the same plan, whatever the order of nodes, pods and held map', () => {
    fc.assert(
      fc.property(
        nodeArb,
        podsArb,
        fc.array(fc.nat(), { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (nodes, pods, s1, s2, heldPicks) => {
          const slots = pods.flatMap(slotsOf);
          const picked = new Map<string, string>();
          heldPicks.forEach((k, i) => {
            const slot = slots[k % slots.length];
            const n = nodes[(k + i) % nodes.length];
            if (slot !== undefined && n !== undefined && !picked.has(slot)) picked.set(slot, n.peerId);
          });
          const held = [...picked];
          const a = planPlacement(view({ nodes, pods }), T0, new Map(held));
          const b = planPlacement(
            view({ nodes: shuffled(nodes, s1), pods: shuffled(pods, s2) }),
            T0,
            new Map(shuffled(held, s1)),
          );
          assert.deepEqual(a.slots, b.slots);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('property: replicas land on distinct nodes when enough nodes are feasible', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 7 }),
        fc.integer({ min: 1, max: 7 }),
        fc.constantFrom('web', 'api', 'x'),
        (nodeCount, replicas, name) => {
          const nodes = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].slice(0, nodeCount).map((n) => node(n));
          const plan = planPlacement(view({ nodes, pods: [pod(name, { replicas })] }), T0);
          const assigned = plan.slots.map((s) => s.assigned);
          assert.ok(assigned.every((x) => x !== undefined));
          assert.equal(new Set(assigned).size, Math.min(nodeCount, replicas));
        },
      ),
      { numRuns: 100 },
    );
  });

  it('ranks a node that holds a sibling replica after nodes that do not', () => {
    const nodes = ['a', 'b', 'c'].map((n) => node(n));
    const held = new Map([[slotKey('web', 0), peerOf('a')]]);
    const plan = planPlacement(view({ nodes, pods: [pod('web', { replicas: 2 })] }), T0, held);
    assert.equal(plan.bySlot.get('pod/web#1')?.candidates.at(-1), peerOf('a'));
  });

  it('preference rank ignores presence, load and cordon but honours labels', () => {
    const nodes = [
      node('a', { labels: { zone: 'eu' }, cordoned: true }),
      node('b', { labels: { zone: 'eu' } }),
      node('c'),
    ];
    const p = pod('web', { placement: { labels: { zone: 'eu' } } });
    const v = view({ nodes, pods: [p], presence: new Map() });
    const order = rendezvousOrder('pod/web#0', [peerOf('a'), peerOf('b')]);
    assert.equal(preferenceRank(v, p, 'pod/web#0', peerOf('a')), order.indexOf(peerOf('a')));
    assert.equal(preferenceRank(v, p, 'pod/web#0', peerOf('c')), undefined);
  });
});
