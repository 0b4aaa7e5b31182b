// Scheduling with no control plane, end to end in one process: peers with real keys claim, fail over, partition, heal and restart.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import * as Y from 'yjs';
import { seededKey } from '../../test/support/test-keys.ts';
import { leaseValid, resolveAll } from '../scheduler/lease-claims.ts';
import { slotsOf } from '../scheduler/slots.ts';
import { fakeVerifier, lease, nodeArb, podsArb, T0, view } from '../scheduler/view-fixtures.ts';
import { ManualClock } from '../shared/clock.ts';
import { ClaimLoop, formatExplanation } from './claim-loop.ts';
import { ClaimWorld, DAY, GI, HOUR, testPod } from './claim-world.ts';
import { ed25519LeaseSigner, LeaseStore, leaseKey, leasesMapName, signLeaseNow } from './lease-store.ts';

/** The single runner of a slot, asserting there is exactly one. */
function soleRunner(world: ClaimWorld, pod: string, slot = 0): string {
  const runners = world.runners(pod).get(`pod/${pod}#${slot}`) ?? [];
  assert.equal(
    runners.length,
    1,
    `pod/${pod}#${slot} runs on exactly one node (runs on: ${runners.join(', ') || 'none'})`,
  );
  return runners[0] as string;
}

function epochOn(world: ClaimWorld, name: string, pod: string, slot = 0): number | undefined {
  return world.desired(name, pod).find((d) => d.slot === slot)?.leaseEpoch;
}

/** Every peer names the same holder for the slot (from its own document and presence). */
function holderEverywhere(world: ClaimWorld, pod: string, slot = 0): string {
  const seen = world.peers.map((p) => {
    const s = p.loop.explain(pod).slots.find((x) => x.index === slot);
    return s?.holder?.valid === true ? s.holder.node : '-';
  });
  assert.equal(
    new Set(seen).size,
    1,
    `every peer agrees on the holder of pod/${pod}#${slot}: ${seen.join(', ')}`,
  );
  return seen[0] as string;
}

/**
 * Cuts the node that runs `pod` off from all others, and says who it is, who the others are, and when
 * it was last heard by them.
 */
function isolateRunner(world: ClaimWorld, pod: string): { old: string; others: string[]; at: number } {
  const old = soleRunner(world, pod);
  const others = world.peers.map((p) => p.name).filter((n) => n !== old);
  const at = world.clock.now();
  world.partition([old], others);
  return { old, others, at };
}

/** Steps the clock by `stepMs` until one of `candidates` runs `pod` or `limitMs` have passed since `since`. */
function stepUntilSuccessor(
  world: ClaimWorld,
  pod: string,
  candidates: readonly string[],
  opts: { since: number; stepMs: number; limitMs: number },
): string | undefined {
  let successor: string | undefined;
  while (successor === undefined && world.clock.now() - opts.since < opts.limitMs) {
    world.clock.advance(opts.stepMs);
    successor = candidates.find((n) => world.desired(n, pod).length > 0);
  }
  return successor;
}

test('replicas: 3 land on 3 distinct nodes within a few ms of the apply, and every peer agrees', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('web', { replicas: 3 }));
  world.clock.advance(10);
  const runners = world.runners('web');
  assert.equal(runners.size, 3);
  const nodes = [0, 1, 2].map((i) => soleRunner(world, 'web', i));
  assert.equal(new Set(nodes).size, 3, `three distinct nodes: ${nodes.join(', ')}`);
  for (let i = 0; i < 3; i++) assert.equal(holderEverywhere(world, 'web', i), nodes[i]);
  for (const n of nodes) assert.equal(world.desired(n, 'web')[0]?.leaseEpoch, 1);
  // Nothing changes afterwards: the decision is stable.
  world.clock.advance(5000);
  assert.deepEqual(
    [0, 1, 2].map((i) => soleRunner(world, 'web', i)),
    nodes,
  );
});

test('ha: a silent holder is replaced as its haGrace ends, with epoch + 1; back, it sees it lost and stops', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('db', { availability: 'ha', haGraceSeconds: 5 }));
  world.clock.advance(10);
  const { old, others, at: silentAt } = isolateRunner(world, 'db');

  const successor = stepUntilSuccessor(world, 'db', others, {
    since: silentAt,
    stepMs: 100,
    limitMs: 20_000,
  });
  assert.ok(successor !== undefined, 'another node took the slot');
  const took = world.clock.now() - silentAt;
  // the grace counts from the last heartbeat, up to one period (1 s) before the silence began
  assert.ok(took > 5000 - 1000, `not before the grace ran out (${took} ms)`);
  assert.ok(took <= 5000 + 100, `as the grace ends, not a tick later (${took} ms)`);
  assert.equal(epochOn(world, successor, 'db'), 2);
  // AP: the isolated holder keeps running its copy meanwhile; it cannot know.
  assert.equal(epochOn(world, old, 'db'), 1);

  const changes: number[] = [];
  world.peer(old).loop.onDesiredChange((slots) => changes.push(slots.length));
  world.heal();
  world.clock.advance(10);
  assert.deepEqual(world.desired(old, 'db'), [], 'the old holder dropped the slot');
  assert.deepEqual(changes, [0], 'and said so once');
  assert.equal(soleRunner(world, 'db'), successor);
  assert.match(world.peer(old).loop.explain('db').slots[0]?.decision ?? '', /held by|stop/);
});

test('ha: the successor claims the moment the grace ends, not at the next periodic tick', async (t) => {
  // The periodic tick is an hour away: only the wake-up at the end of the grace can explain a claim.
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }], {
    loopIntervalMs: HOUR,
  });
  t.after(() => world.stop());
  world.apply('a', testPod('db', { availability: 'ha', haGraceSeconds: 3 }));
  world.clock.advance(10);
  const { others, at: lastHeard } = isolateRunner(world, 'db');
  const successor = stepUntilSuccessor(world, 'db', others, {
    since: lastHeard,
    stepMs: 10,
    limitMs: 60_000,
  });
  const took = world.clock.now() - lastHeard;
  assert.ok(successor !== undefined, 'another node took the slot');
  // presence is heard once a second here, so the grace counts from up to 1 s before the partition
  assert.ok(took > 2000 && took <= 3000 + 20, `claimed ${took} ms after the holder was last heard`);
});

test('best-effort: the holder may be away three weeks and keep its slot; after forget it moves', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }], {
    intervalMs: HOUR,
    deadAfterMs: 60 * DAY,
  });
  t.after(() => world.stop());
  world.apply('a', testPod('files', { availability: 'best-effort' }));
  world.clock.advance(10);
  const { old, others } = isolateRunner(world, 'files');
  for (let day = 0; day < 21; day++) {
    world.clock.advance(DAY);
    assert.equal(soleRunner(world, 'files'), old, `day ${day + 1}: still on ${old} only`);
  }
  const survivor = others[0] as string;
  const why = world.peer(survivor).loop.explain('files').slots[0];
  assert.equal(why?.holder?.valid, true);
  assert.match(why?.holder?.reason ?? '', /unreachable for 21d \(best-effort waits\)/);

  world.peer(survivor).cluster.forgetNode(old, world.clock.now());
  world.clock.advance(10);
  const moved = others.find((n) => world.desired(n, 'files').length > 0);
  assert.ok(moved !== undefined, 'forget moves it at once');
  assert.equal(epochOn(world, moved, 'files'), 2);
  // The forgotten node, back, learns it was forgotten and stops.
  world.heal();
  world.clock.advance(10);
  assert.deepEqual(world.desired(old), []);
  assert.equal(soleRunner(world, 'files'), moved);
});

test('best-effort: without forget the slot moves once the holder is missing longer than deadAfter', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }], { intervalMs: HOUR });
  t.after(() => world.stop());
  world.apply('a', testPod('files', { availability: 'best-effort' }));
  world.clock.advance(10);
  const {
    others: [other = ''],
  } = isolateRunner(world, 'files');
  world.clock.advance(6 * DAY);
  assert.deepEqual(world.desired(other), [], 'not after 6 days');
  world.clock.advance(DAY + HOUR);
  assert.equal(epochOn(world, other, 'files'), 2, 'after 7 days (the default deadAfter) plus a tick');
});

test('a pinned pod never moves, however long its host is away, and nobody else claims it', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }], {
    intervalMs: 60_000,
  });
  t.after(() => world.stop());
  world.apply('a', testPod('nas', { availability: 'ha', host: 'b', haGraceSeconds: 5 }));
  world.clock.advance(10);
  assert.equal(soleRunner(world, 'nas'), 'b');
  world.partition(['b'], ['a', 'c']);
  world.clock.advance(3 * DAY);
  assert.equal(soleRunner(world, 'nas'), 'b');
  const why = world.peer('a').loop.explain('nas').slots[0];
  assert.equal(why?.holder?.valid, true);
  assert.match(why?.holder?.reason ?? '', /pinned to host b/);
  world.heal();
  world.clock.advance(10 * 60_000);
  assert.equal(soleRunner(world, 'nas'), 'b');
  assert.equal(epochOn(world, 'b', 'nas'), 1, 'never re-claimed');
});

test('partition: both sides run the ha singleton; after the heal exactly one holder per slot, on every peer', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('db', { availability: 'ha', haGraceSeconds: 3 }));
  world.apply('a', testPod('web', { availability: 'ha', replicas: 2, haGraceSeconds: 3 }));
  world.apply('a', testPod('files', { availability: 'best-effort' }));
  world.clock.advance(10);
  const before = soleRunner(world, 'db');
  const side1 = before === 'a' || before === 'b' ? ['a', 'b'] : ['c', 'd'];
  const side2 = ['a', 'b', 'c', 'd'].filter((n) => !side1.includes(n));
  world.partition(side1, side2);
  world.clock.advance(10_000);
  const during = world.runners('db').get('pod/db#0') ?? [];
  assert.equal(during.length, 2, `both sides run db: ${during.join(', ')}`);
  assert.ok(side1.some((n) => during.includes(n)) && side2.some((n) => during.includes(n)));
  assert.ok((world.runners('files').get('pod/files#0') ?? []).length === 1, 'best-effort is not doubled');

  world.heal();
  world.clock.advance(10);
  for (const [pod, replicas] of [
    ['db', 1],
    ['web', 2],
    ['files', 1],
  ] as const) {
    for (let i = 0; i < replicas; i++) {
      const runner = soleRunner(world, pod, i);
      assert.equal(holderEverywhere(world, pod, i), runner);
    }
  }
  // The side that claimed later (epoch 2) keeps db; the decision then stays put.
  const winner = soleRunner(world, 'db');
  assert.ok(side2.includes(winner));
  assert.equal(epochOn(world, winner, 'db'), 2);
  world.clock.advance(10_000);
  assert.equal(soleRunner(world, 'db'), winner);
});

test('a heal whose document lands before the first heartbeat settles on the later claim, with no extra epoch', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('db', { availability: 'ha', haGraceSeconds: 3 }));
  world.clock.advance(10);
  const before = soleRunner(world, 'db');
  const side1 = before === 'a' || before === 'b' ? ['a', 'b'] : ['c', 'd'];
  const side2 = ['a', 'b', 'c', 'd'].filter((n) => !side1.includes(n));
  world.partition(side1, side2);
  world.clock.advance(10_000);
  const successor = side2.find((n) => world.desired(n, 'db').length > 0);
  assert.ok(successor !== undefined);
  assert.equal(epochOn(world, successor, 'db'), 2);

  // The state-vector sync on reconnect: documents merge now, heartbeats only arrive at the next period.
  for (const p of world.peers) p.group = 0;
  for (const a of world.peers)
    for (const b of world.peers)
      if (a !== b) Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc, Y.encodeStateVector(b.doc)), 'sync');
  world.clock.advance(10);
  const epochs = () =>
    world.peers[0]?.leases
      .all()
      .filter((l) => l.slot === 'pod/db#0')
      .map((l) => l.epoch)
      .sort() ?? [];
  assert.deepEqual(epochs(), [1, 2], 'nobody claimed over a claim it has just received');
  assert.equal(soleRunner(world, 'db'), successor, 'the old holder stopped at once');
  world.clock.advance(10_000);
  assert.deepEqual(epochs(), [1, 2]);
  assert.equal(soleRunner(world, 'db'), successor);
  assert.equal(epochOn(world, successor, 'db'), 2);
});

test('an unplaceable pod stays pending and explain() says why, per node, Nomad-style', async (t) => {
  const world = await ClaimWorld.create([
    { name: 'a', labels: { zone: 'eu' }, memoryBytes: 1 * GI },
    { name: 'b', labels: { zone: 'eu' }, memoryBytes: 2 * GI },
    { name: 'c', memoryBytes: 8 * GI },
  ]);
  t.after(() => world.stop());
  world.apply('a', testPod('big', { labels: { zone: 'eu' }, memory: '3Gi' }));
  world.clock.advance(2000);
  assert.equal(world.runners('big').size, 0);
  const e = world.peer('c').loop.explain('big');
  const slot = e.slots[0];
  assert.equal(slot?.holder, undefined);
  assert.equal(slot?.summary, 'no feasible node: label zone=eu missing on c; memory exhausted on a, b');
  assert.match(slot?.decision ?? '', /no lease; no feasible node/);
  assert.deepEqual(
    slot?.rejections.map((r) => r.node),
    ['a', 'b', 'c'],
  );
  assert.match(slot?.rejections[0]?.reason ?? '', /memory exhausted: 1Gi free, 3Gi asked/);
  const text = formatExplanation(e).join('\n');
  assert.match(text, /pod\/big#0: no lease/);
  assert.match(text, /label zone=eu missing on c/);
  assert.match(formatExplanation(world.peer('a').loop.explain('nope')).join('\n'), /no such pod/);
});

test('a forged or malformed lease written raw into the document is ignored, with the reason', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('web'));
  world.clock.advance(10);
  const holder = soleRunner(world, 'web');
  const [forger, third] = world.peers.filter((p) => p.name !== holder);
  assert.ok(forger !== undefined && third !== undefined);
  const slot = 'pod/web#0';
  const forgerSigner = ed25519LeaseSigner(forger.key);
  // A claim in a third node's name, under that node's proper key, with a winning epoch: signed by the forger.
  const forged = {
    ...signLeaseNow(
      { slot, holder: forger.peerId, epoch: 99, claimedAt: world.clock.now(), rank: 0 },
      forgerSigner,
    ),
    holder: third.peerId,
  };
  // The forger's own valid claim, but filed under another node's key; and a value that is no lease at all.
  const misfiled = signLeaseNow(
    { slot, holder: forger.peerId, epoch: 50, claimedAt: 0, rank: 0 },
    forgerSigner,
  );
  forger.doc.transact(() => {
    const map = forger.doc.getMap<unknown>(leasesMapName);
    map.set(leaseKey(slot, third.peerId), forged);
    map.set(leaseKey('pod/web#1', third.peerId), misfiled);
    map.set('junk', 'not a lease');
  });
  world.clock.advance(2000);
  assert.equal(soleRunner(world, 'web'), holder, 'the real holder keeps the slot');
  assert.equal(epochOn(world, holder, 'web'), 1);
  for (const p of world.peers) {
    const problems = p.loop.problems();
    const reasons = problems.rejectedLeases.map((r) => `${r.key}: ${r.reason}`).join('; ');
    assert.match(reasons, /leases\/junk: not a lease object/);
    assert.match(reasons, /wrong key/);
    assert.match(problems.ignoredLeases[0]?.reason ?? '', /signature does not verify for holder/);
    const e = p.loop.explain('web');
    assert.equal(e.ignored.length, 1);
    assert.equal(e.ignored[0]?.holder, third.peerId);
    assert.equal(e.slots[0]?.holder?.node, holder);
  }

  // Overwriting the holder's own entry with a forged release does not take the slot away for good:
  // the holder's claim is gone from the document, and the holder (still the best node) claims again.
  const victim = world.peer(holder);
  const fakeRelease = {
    ...signLeaseNow({ slot, holder: forger.peerId, epoch: 1, claimedAt: 0, releasedAt: 1 }, forgerSigner),
    holder: victim.peerId,
  };
  forger.doc.transact(() =>
    forger.doc.getMap<unknown>(leasesMapName).set(leaseKey(slot, victim.peerId), fakeRelease),
  );
  world.clock.advance(10);
  assert.equal(soleRunner(world, 'web'), holder);
  assert.equal(victim.leases.own(slot)?.releasedAt, undefined, 'its real lease is back');
});

test("a lease forged in a silent holder's name is no sign of its life: the slot moves on time", async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('db', { availability: 'ha', haGraceSeconds: 5 }));
  world.clock.advance(10);
  const holder = soleRunner(world, 'db');
  const others = world.peers.filter((p) => p.name !== holder);
  const [forger] = others;
  assert.ok(forger !== undefined);
  const silentAt = world.clock.now();
  world.partition(
    [holder],
    others.map((p) => p.name),
  );
  world.clock.advance(4000);
  const victim = world.peer(holder);
  const forged = {
    ...signLeaseNow(
      { slot: 'pod/ghost#0', holder: forger.peerId, epoch: 1, claimedAt: world.clock.now() },
      ed25519LeaseSigner(forger.key),
    ),
    holder: victim.peerId,
  };
  forger.doc.transact(() =>
    forger.doc.getMap<unknown>(leasesMapName).set(leaseKey('pod/ghost#0', victim.peerId), forged),
  );
  const successor = stepUntilSuccessor(
    world,
    'db',
    others.map((p) => p.name),
    { since: silentAt, stepMs: 100, limitMs: 20_000 },
  );
  const took = world.clock.now() - silentAt;
  assert.ok(
    successor !== undefined && took <= 5000 + 1000 + 100,
    `moved ${took} ms after the holder fell silent`,
  );
});

test('cold start from the persisted document with nobody reachable: desiredSlots at once, and kept', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('web', { availability: 'ha', replicas: 3 }));
  world.apply('a', testPod('files', { availability: 'best-effort', replicas: 3 }));
  world.clock.advance(10);
  assert.equal(world.desired('b').length, 2, 'b runs one replica of each');
  world.partition(['b'], ['a', 'c']);
  world.clock.advance(60_000);
  // Alone, b also took the other ha replicas (AP); it keeps all it holds across the restart.
  const before = world.desired('b');
  assert.equal(before.length, 4);
  const b = world.restart('b');
  // No clock tick, no peer: the decision ran in start().
  assert.deepEqual(b.loop.desiredSlots(), before);
  world.clock.advance(60_000);
  for (const d of before)
    assert.ok(
      world.desired('b').some((x) => x.pod === d.pod && x.slot === d.slot),
      `${d.pod}#${d.slot} kept`,
    );
});

test('drain releases every lease of the node, and others claim them with the next epoch', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('web', { replicas: 3 }));
  world.apply('a', testPod('files', { availability: 'best-effort', replicas: 2 }));
  world.clock.advance(10);
  const victim = world.peers.find((p) => p.loop.desiredSlots().length > 0);
  assert.ok(victim !== undefined);
  const held = victim.loop.desiredSlots();
  world
    .peer(world.peers.find((p) => p !== victim)?.name ?? 'a')
    .cluster.setNodeFlags(victim.name, { draining: true });
  world.clock.advance(20);
  assert.deepEqual(victim.loop.desiredSlots(), []);
  for (const d of held) {
    assert.ok(
      victim.leases.own(`pod/${d.pod}#${d.slot}`)?.releasedAt !== undefined,
      'released, not just dropped',
    );
    const runner = soleRunner(world, d.pod, d.slot);
    assert.notEqual(runner, victim.name);
    assert.equal(epochOn(world, runner, d.pod, d.slot), d.leaseEpoch + 1);
  }
});

test('cordon stops new claims on the node; what it holds stays', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('web', { replicas: 3 }));
  world.clock.advance(10);
  const kept = world.desired('b');
  assert.equal(kept.length, 1);
  world.peer('a').cluster.setNodeFlags('b', { cordoned: true });
  world.clock.advance(10);
  world.apply('c', testPod('api', { replicas: 3 }));
  world.apply('c', testPod('web', { replicas: 5 }));
  world.clock.advance(2000);
  assert.deepEqual(world.desired('b'), kept, 'b keeps its web replica and takes nothing new');
  assert.equal(world.runners('api').size, 3);
  assert.equal(world.runners('web').size, 5);
  // Even a pod pinned to b waits: a cordoned node claims nothing new.
  world.apply('a', testPod('local', { host: 'b' }));
  world.clock.advance(2000);
  assert.equal(world.runners('local').size, 0);
  const slot = world.peer('a').loop.explain('local').slots[0];
  assert.equal(slot?.summary, 'no feasible node: pinned to host b on a, c; cordoned on b');
  world.peer('c').cluster.setNodeFlags('b', { cordoned: false });
  world.apply('a', testPod('more', { replicas: 3 }));
  world.clock.advance(10);
  assert.ok(world.desired('b', 'more').length > 0, 'uncordoned, b takes new slots again');
  assert.equal(soleRunner(world, 'local'), 'b');
});

test('deleting a pod releases its slots everywhere', async (t) => {
  const world = await ClaimWorld.create([{ name: 'a' }, { name: 'b' }]);
  t.after(() => world.stop());
  world.apply('a', testPod('web', { replicas: 2 }));
  world.clock.advance(10);
  assert.equal(world.runners('web').size, 2);
  const a = world.peer('a');
  a.objects.delete('pod/web', { peer: a.peerId, host: 'a', actor: 'test' });
  world.clock.advance(10);
  assert.equal(world.runners('web').size, 0);
  for (const p of world.peers)
    for (const l of p.leases.all())
      if (l.holder === p.peerId) assert.ok(l.releasedAt !== undefined, `${l.slot} released`);
});

test('property: explain() judges every holder exactly as leaseValid does against the whole view', async (t) => {
  const leases = new LeaseStore(new Y.Doc(), ed25519LeaseSigner(await seededKey(99)), fakeVerifier);
  const clock = new ManualClock(T0);
  fc.assert(
    fc.property(
      nodeArb,
      podsArb,
      fc.array(fc.tuple(fc.nat(20), fc.nat(6), fc.integer({ min: 1, max: 3 }), fc.nat(5), fc.boolean())),
      (nodes, pods, raw) => {
        const slots = pods.flatMap((p) => slotsOf(p));
        const ls = raw.flatMap(([s, n, epoch, at, released]) => {
          const slot = slots[s % Math.max(1, slots.length)];
          const holder = nodes[n % nodes.length];
          if (slot === undefined || holder === undefined) return [];
          return [
            lease(slot, holder.name, epoch, {
              claimedAt: T0 + at,
              ...(released && at === 0 ? { releasedAt: T0 } : {}),
            }),
          ];
        });
        const v = view({ nodes, pods, leases: ls, now: T0 });
        const loop = new ClaimLoop({
          source: { read: () => ({ view: v, skipped: [] }) },
          leases,
          verifier: fakeVerifier,
          clock,
        });
        const winners = resolveAll(ls);
        for (const p of pods) {
          for (const s of loop.explain(p.name).slots) {
            const w = winners.get(s.slot);
            if (w === undefined) {
              assert.equal(s.holder, undefined);
              continue;
            }
            const expected = leaseValid(
              w,
              { ...v, presence: new Map([...v.presence, [leases.self, T0]]) },
              p,
              T0,
            );
            assert.equal(s.holder?.valid, expected.valid, s.slot);
            assert.equal(s.holder?.reason, expected.reason, s.slot);
          }
        }
      },
    ),
    { numRuns: 100 },
  );
  t.diagnostic('explain agrees with leaseValid');
});
