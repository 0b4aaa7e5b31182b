// Tests of the node registry in the cluster document: convergence, minimal writes, validated reads.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import * as Y from 'yjs';
import { NotFoundError, ValidationError } from '../shared/errors.ts';
import { ClusterDoc, type NodeRecord, validateNodeName } from './cluster-doc.ts';

function record(peerId: string, name: string, over: Partial<NodeRecord> = {}): NodeRecord {
  return {
    peerId,
    name,
    addrs: [`/ip4/127.0.0.1/tcp/${4000 + name.length}`],
    labels: {},
    capacity: { cpu: 2, memoryBytes: 4 * 1024 ** 3 },
    joinedAt: 1_700_000_000_000,
    version: '0.1.0',
    ...over,
  };
}

function docWithId(clientID: number): Y.Doc {
  const doc = new Y.Doc();
  doc.clientID = clientID;
  return doc;
}

/** Applies every update each doc has that the other lacks, both ways. */
function exchange(a: Y.Doc, b: Y.Doc): void {
  const toB = Y.encodeStateAsUpdate(a, Y.encodeStateVector(b));
  const toA = Y.encodeStateAsUpdate(b, Y.encodeStateVector(a));
  Y.applyUpdate(b, toB);
  Y.applyUpdate(a, toA);
}

test('two peers converge: concurrent label edits of different keys both survive', () => {
  const a = new ClusterDoc(docWithId(1));
  const b = new ClusterDoc(docWithId(2));
  a.upsertNode(record('peerA', 'nas'));
  exchange(a.doc, b.doc);

  a.setLabels('nas', { disk: 'ssd' }, []);
  b.setLabels('nas', { zone: 'home' }, []);
  exchange(a.doc, b.doc);

  assert.deepEqual(a.nodeByName('nas')?.labels, { disk: 'ssd', zone: 'home' });
  assert.deepEqual(b.nodes(), a.nodes());
});

test('concurrent writes of the same label key end with one value on every peer', () => {
  for (const [ida, idb] of [
    [1, 2],
    [2, 1],
  ] as const) {
    const a = new ClusterDoc(docWithId(ida));
    const b = new ClusterDoc(docWithId(idb));
    a.upsertNode(record('peerA', 'nas'));
    exchange(a.doc, b.doc);
    a.setLabels('nas', { tier: 'gold' }, []);
    b.setLabels('nas', { tier: 'silver' }, []);
    exchange(a.doc, b.doc);
    const va = a.nodeByName('nas')?.labels.tier;
    assert.ok(va === 'gold' || va === 'silver');
    assert.equal(b.nodeByName('nas')?.labels.tier, va);
  }
  // A removal concurrent with another key's set: both take effect.
  const a = new ClusterDoc(docWithId(1));
  const b = new ClusterDoc(docWithId(2));
  a.upsertNode(record('peerA', 'nas', { labels: { old: 'x' } }));
  exchange(a.doc, b.doc);
  a.setLabels('nas', {}, ['old']);
  b.setLabels('nas', { fresh: 'y' }, []);
  exchange(a.doc, b.doc);
  assert.deepEqual(a.nodeByName('nas')?.labels, { fresh: 'y' });
  assert.deepEqual(b.nodeByName('nas')?.labels, { fresh: 'y' });
});

test('upsertNode writes only changed fields; an unchanged record makes no update', () => {
  const cd = new ClusterDoc(new Y.Doc());
  const updates: Uint8Array[] = [];
  cd.doc.on('update', (u: Uint8Array) => updates.push(u));
  const rec = record('peerA', 'nas', {
    addrs: ['/ip4/10.0.0.1/tcp/1', '/ip4/10.0.0.2/tcp/1'],
    labels: { disk: 'ssd' },
  });
  cd.upsertNode(rec);
  assert.equal(updates.length, 1, 'a new node is one transaction');

  cd.upsertNode(structuredClone(rec));
  cd.upsertNode({ ...rec, addrs: ['/ip4/10.0.0.2/tcp/1', '/ip4/10.0.0.1/tcp/1', '/ip4/10.0.0.2/tcp/1'] });
  cd.upsertNode({ ...rec, capacity: { ...rec.capacity }, labels: { disk: 'ssd' } });
  assert.equal(updates.length, 1, 'same values (addrs as a set) write nothing');

  const sizeBefore = Y.encodeStateAsUpdate(cd.doc).byteLength;
  cd.upsertNode({ ...rec, version: '0.2.0' });
  assert.equal(updates.length, 2);
  // Only the version item was written: the update is small and holds no other field's value.
  const update = updates[1];
  assert.ok(update !== undefined);
  const decoded = Y.decodeUpdate(update);
  assert.equal(decoded.structs.length, 1, 'one item written');
  assert.ok(Y.encodeStateAsUpdate(cd.doc).byteLength - sizeBefore < 40);

  cd.upsertNode({ ...rec, version: '0.2.0', labels: {} });
  assert.deepEqual(cd.nodeByName('nas')?.labels, {}, 'labels absent from the record are removed');
  assert.equal(updates.length, 3);
});

test('upsertNode validates its record and refuses a name another peer holds', () => {
  const cd = new ClusterDoc(new Y.Doc());
  cd.upsertNode(record('peerA', 'nas'));
  assert.throws(() => cd.upsertNode(record('peerB', 'nas')), { code: 'E_NODE_NAME_TAKEN', message: /peerA/ });
  assert.throws(() => cd.upsertNode(record('peerB', 'NAS')), ValidationError);
  assert.throws(() => cd.upsertNode(record('peerB', 'b', { capacity: { cpu: -1, memoryBytes: 1 } })), {
    code: 'E_NODE_RECORD',
    message: /capacity/,
  });
  assert.throws(() => cd.upsertNode(record('peerB', 'b', { labels: { 'bad key': 'x' } })), {
    code: 'E_LABEL',
  });
  // Renaming itself is fine.
  cd.upsertNode(record('peerA', 'nas-2'));
  assert.equal(cd.nodeByPeerId('peerA')?.name, 'nas-2');
});

test('garbage entries are rejected with a reason and do not hide valid nodes', () => {
  const cd = new ClusterDoc(new Y.Doc());
  cd.upsertNode(record('peerA', 'nas', { labels: { disk: 'ssd' } }));
  cd.upsertNode(record('peerB', 'vps'));
  const nodes = cd.doc.getMap<unknown>('nodes');
  // What a raw Yjs edit or a buggy peer could write.
  cd.doc.transact(() => {
    const bad = new Y.Map<unknown>();
    nodes.set('peerC', bad);
    bad.set('peerId', 'peerC');
    bad.set('name', 'pi');
    bad.set('addrs', []);
    bad.set('capacity', 'lots');
    bad.set('joinedAt', 1);
    bad.set('version', '0.1.0');
    nodes.set('peerD', 'just a string');
    const wrongKey = new Y.Map<unknown>();
    nodes.set('peerE', wrongKey);
    wrongKey.set('peerId', 'someoneElse');
    const vps = nodes.get('peerB') as Y.Map<unknown>;
    (vps.get('labels') as Y.Map<unknown>).set('gpu', 42);
  });
  const { nodes: valid, rejected } = cd.nodes();
  assert.deepEqual(
    valid.map((n) => n.name),
    ['nas', 'vps'],
  );
  assert.deepEqual(valid[1]?.labels, {}, 'the bad label is dropped, the node kept');
  const byKey = Object.fromEntries(rejected.map((r) => [r.key, r.reason]));
  assert.match(byKey['nodes/peerC'] ?? '', /capacity.*"lots"/);
  assert.match(byKey['nodes/peerD'] ?? '', /not a map/);
  assert.match(byKey['nodes/peerE'] ?? '', /peerId/);
  assert.match(byKey['nodes/peerB/labels/gpu'] ?? '', /not a string/);
  assert.equal(cd.nodeByName('pi'), undefined);
  // The node itself repairs its record by upserting it again.
  cd.upsertNode(record('peerC', 'pi'));
  assert.equal(cd.nodeByName('pi')?.capacity.cpu, 2);
});

test('two partitions that picked the same name resolve it the same way on every peer', () => {
  const a = new ClusterDoc(docWithId(1));
  const b = new ClusterDoc(docWithId(2));
  a.upsertNode(record('peerA', 'box', { joinedAt: 2000 }));
  b.upsertNode(record('peerB', 'box', { joinedAt: 1000 }));
  exchange(a.doc, b.doc);
  assert.equal(a.nodeByName('box')?.peerId, 'peerB', 'the earlier joiner keeps the name');
  assert.deepEqual(a.nodes(), b.nodes());
  assert.match(a.nodes().rejected[0]?.reason ?? '', /already used by peer peerB/);
  // Its own periodic refresh keeps working (it does not throw on the existing clash).
  a.upsertNode(record('peerA', 'box', { joinedAt: 2000, version: '0.2.0' }));
});

test('setLabels: unknown node lists known names; bad keys and values are refused', () => {
  const cd = new ClusterDoc(new Y.Doc());
  cd.upsertNode(record('peerA', 'nas'));
  cd.upsertNode(record('peerB', 'vps'));
  const err = (() => {
    try {
      cd.setLabels('nsa', { a: 'b' }, []);
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.ok(err instanceof NotFoundError);
  assert.equal(err.code, 'E_NODE_NOT_FOUND');
  assert.match(err.hint ?? '', /nas, vps/);

  const bad: Array<[string, string]> = [
    ['', 'x'],
    ['-lead', 'x'],
    ['a'.repeat(64), 'x'],
    ['Example.com/x', 'x'],
    ['/x', 'x'],
    ['ok', 'a'.repeat(64)],
    ['ok', 'has space'],
    ['ok', 'trailing-'],
  ];
  for (const [key, value] of bad) {
    assert.throws(() => cd.setLabels('nas', { [key]: value }, []), ValidationError, `${key}=${value}`);
  }
  assert.throws(() => cd.setLabels('nas', { a: 'b' }, ['a']), { code: 'E_LABEL' });
  assert.deepEqual(cd.nodeByName('nas')?.labels, {}, 'a refused edit changes nothing');

  const good = cd.setLabels(
    'nas',
    { 'example.com/disk': 'ssd', 'a.b_c-d': '', Zone: 'Home_1', ['x'.repeat(63)]: 'y'.repeat(63) },
    ['absent'],
  );
  assert.equal(good.labels['example.com/disk'], 'ssd');
  assert.equal(Object.keys(good.labels).length, 4);
  const after = cd.setLabels('nas', {}, ['Zone']);
  assert.equal(after.labels.Zone, undefined);
});

test('validateNodeName accepts DNS labels and explains the rest', () => {
  for (const ok of ['a', 'nas', 'vps-2', '0', 'a'.repeat(63)]) validateNodeName(ok);
  for (const bad of ['', 'Nas', '-a', 'a-', 'a_b', 'a.b', 'a'.repeat(64), 'ä']) {
    assert.throws(
      () => validateNodeName(bad),
      (e: unknown) => {
        assert.ok(e instanceof ValidationError);
        assert.equal(e.code, 'E_NODE_NAME');
        assert.match(e.hint ?? '', /lowercase/);
        return true;
      },
    );
  }
});

test('mesh info is stored once and reaches other peers', () => {
  const a = new ClusterDoc(docWithId(1));
  const b = new ClusterDoc(docWithId(2));
  assert.equal(a.meshInfo(), undefined);
  a.setMeshInfo({ id: 'm123', name: 'home' });
  a.setMeshInfo({ id: 'm123', name: 'home' });
  assert.throws(() => a.setMeshInfo({ id: 'm999', name: 'other' }), { code: 'E_MESH_MISMATCH' });
  exchange(a.doc, b.doc);
  assert.deepEqual(b.meshInfo(), { id: 'm123', name: 'home' });
});

test('onChange fires once per local or remote change of nodes or mesh info, and not for other maps', () => {
  const a = new ClusterDoc(docWithId(1));
  const b = new ClusterDoc(docWithId(2));
  let calls = 0;
  const off = b.onChange(() => {
    calls++;
  });
  b.upsertNode(record('peerB', 'vps'));
  assert.equal(calls, 1);
  b.upsertNode(record('peerB', 'vps'));
  assert.equal(calls, 1, 'no change, no call');
  b.setLabels('vps', { a: 'b' }, []);
  assert.equal(calls, 2, 'nested label edits count');
  a.upsertNode(record('peerA', 'nas'));
  a.setMeshInfo({ id: 'm1', name: 'home' });
  Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc));
  assert.equal(calls, 3, 'one remote update, one call');
  b.doc.getMap('pods').set('web', 1);
  assert.equal(calls, 3);
  off();
  b.setLabels('vps', { c: 'd' }, []);
  assert.equal(calls, 3);
});

test('node flags: cordon and drain from any peer, written only when changed, read with defaults', () => {
  const a = new ClusterDoc(docWithId(1));
  const b = new ClusterDoc(docWithId(2));
  a.upsertNode(record('peerA', 'nas'));
  exchange(a.doc, b.doc);
  assert.deepEqual(b.nodeControls('peerA'), { cordoned: false, draining: false, policy: {} });
  let calls = 0;
  a.onChange(() => {
    calls++;
  });
  const updates: Uint8Array[] = [];
  b.doc.on('update', (u: Uint8Array) => updates.push(u));
  assert.deepEqual(b.setNodeFlags('nas', { cordoned: true }), {
    cordoned: true,
    draining: false,
    policy: {},
  });
  b.setNodeFlags('nas', { cordoned: true });
  assert.equal(updates.length, 1, 'an unchanged flag writes nothing');
  exchange(a.doc, b.doc);
  assert.equal(calls, 1, 'a remote flag change is a node change');
  assert.equal(a.nodeControls('peerA').cordoned, true);
  a.setNodeFlags('nas', { draining: true });
  exchange(a.doc, b.doc);
  assert.deepEqual(b.nodeControls('peerA'), { cordoned: true, draining: true, policy: {} });
  b.setNodeFlags('nas', { cordoned: false, draining: false });
  assert.deepEqual(b.nodeControls('peerA'), { cordoned: false, draining: false, policy: {} });

  assert.throws(() => a.setNodeFlags('nsa', { cordoned: true }), { code: 'E_NODE_NOT_FOUND', hint: /nas/ });
  assert.throws(() => a.setNodeFlags('nas', { cordoned: 'yes' as unknown as boolean }), {
    code: 'E_NODE_FLAG',
  });

  // A raw edit with a wrong type reads as the default and is reported, without hiding the node.
  (a.doc.getMap<unknown>('nodes').get('peerA') as Y.Map<unknown>).set('cordoned', 'yes');
  assert.equal(a.nodeControls('peerA').cordoned, false);
  assert.equal(a.nodeByName('nas')?.peerId, 'peerA');
  assert.match(
    a.nodes().rejected.find((r) => r.key === 'nodes/peerA/cordoned')?.reason ?? '',
    /not true or false.*read as false/,
  );
});

test('node policy: validated, stored once per change, and a malformed one reads as nothing allowed', () => {
  const cd = new ClusterDoc(new Y.Doc());
  cd.upsertNode(record('peerA', 'nas'));
  const updates: Uint8Array[] = [];
  cd.doc.on('update', (u: Uint8Array) => updates.push(u));
  const policy = {
    hostNetwork: true,
    hostPaths: [{ path: '/srv/data', readOnly: true }, { path: '/tmp' }],
    capabilities: ['NET_BIND_SERVICE'],
  };
  cd.setNodePolicy('peerA', policy);
  cd.setNodePolicy('peerA', structuredClone(policy));
  assert.equal(updates.length, 1);
  assert.deepEqual(cd.nodeControls('peerA').policy, policy);
  assert.throws(() => cd.setNodePolicy('peerA', { hostPaths: [{ path: 'relative' }] }), {
    code: 'E_NODE_POLICY',
    message: /hostPaths\[0\]/,
  });
  assert.throws(() => cd.setNodePolicy('peerA', { devices: [1] as unknown as string[] }), {
    code: 'E_NODE_POLICY',
  });
  assert.throws(() => cd.setNodePolicy('peerZ', {}), { code: 'E_NODE_NOT_FOUND' });
  (cd.doc.getMap<unknown>('nodes').get('peerA') as Y.Map<unknown>).set('policy', { hostNetwork: 'sure' });
  assert.deepEqual(cd.nodeControls('peerA').policy, {});
  assert.match(
    cd.nodes().rejected.find((r) => r.key === 'nodes/peerA/policy')?.reason ?? '',
    /hostNetwork must be true or false.*nothing allowed/,
  );
});

test('forgetNode marks a node dead on every peer; forgetting again changes nothing; unforget takes it back', () => {
  const a = new ClusterDoc(docWithId(1));
  const b = new ClusterDoc(docWithId(2));
  a.upsertNode(record('peerA', 'nas'));
  a.upsertNode(record('peerB', 'vps'));
  exchange(a.doc, b.doc);
  let calls = 0;
  b.onChange(() => {
    calls++;
  });
  assert.deepEqual(a.forgetNode('vps', 1234), { peerId: 'peerB', name: 'vps', at: 1234 });
  const updates: Uint8Array[] = [];
  a.doc.on('update', (u: Uint8Array) => updates.push(u));
  assert.deepEqual(a.forgetNode('vps', 9999), { peerId: 'peerB', name: 'vps', at: 1234 });
  assert.equal(updates.length, 0);
  exchange(a.doc, b.doc);
  assert.equal(calls, 1);
  assert.deepEqual(b.forgotten(), [{ peerId: 'peerB', name: 'vps', at: 1234 }]);
  assert.equal(b.nodeByName('vps')?.peerId, 'peerB', 'the record stays: its name is still taken');
  assert.throws(() => b.forgetNode('pi', 1), { code: 'E_NODE_NOT_FOUND' });
  // A raw entry counts by its key, whatever its value.
  b.doc.getMap<unknown>('forgotten').set('peerA', 'garbage');
  assert.deepEqual(
    b.forgotten().map((f) => f.peerId),
    ['peerA', 'peerB'],
  );
  b.unforgetNode('nas');
  b.unforgetNode('vps');
  exchange(a.doc, b.doc);
  assert.deepEqual(a.forgotten(), []);
});

/** nodes() with label keys in a fixed order, so replicas compare byte for byte. */
function canonical(cd: ClusterDoc): string {
  return JSON.stringify(cd.nodes());
}

type Op =
  | { kind: 'upsert'; peer: number; addr: number; cpu: number }
  | { kind: 'label'; peer: number; node: number; key: number; value: number }
  | { kind: 'unlabel'; peer: number; node: number; key: number }
  | { kind: 'sync'; from: number; to: number };

test('property: any delivery order of the same updates gives the same nodes()', { timeout: 60_000 }, () => {
  const peers = 3;
  const names = ['nas', 'vps', 'pi'];
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({
      kind: fc.constant('upsert' as const),
      peer: fc.nat(peers - 1),
      addr: fc.nat(3),
      cpu: fc.nat(4),
    }),
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('label' as const),
        peer: fc.nat(peers - 1),
        node: fc.nat(names.length - 1),
        key: fc.nat(3),
        value: fc.nat(3),
      }),
    },
    fc.record({
      kind: fc.constant('unlabel' as const),
      peer: fc.nat(peers - 1),
      node: fc.nat(names.length - 1),
      key: fc.nat(3),
    }),
    fc.record({ kind: fc.constant('sync' as const), from: fc.nat(peers - 1), to: fc.nat(peers - 1) }),
  );
  const syncTo = (from: ClusterDoc, to: ClusterDoc): void => {
    Y.applyUpdate(to.doc, Y.encodeStateAsUpdate(from.doc, Y.encodeStateVector(to.doc)), 'sync');
  };
  fc.assert(
    fc.property(fc.array(op, { minLength: 1, maxLength: 40 }), fc.infiniteStream(fc.nat()), (ops, rand) => {
      const replicas = Array.from({ length: peers }, (_, i) => new ClusterDoc(docWithId(i + 1)));
      const updates: Uint8Array[] = [];
      for (const r of replicas)
        r.doc.on('update', (u: Uint8Array, origin: unknown) => {
          if (origin !== 'sync') updates.push(u);
        });
      // Start from a mesh where every peer has written its own node and everyone has seen it all.
      replicas.forEach((r, i) => {
        r.upsertNode(record(`peer${i}`, names[i] ?? 'nas'));
      });
      for (const from of replicas) for (const to of replicas) if (from !== to) syncTo(from, to);
      for (const o of ops) {
        if (o.kind === 'sync') {
          const [from, to] = [replicas[o.from], replicas[o.to]];
          if (from && to && from !== to) syncTo(from, to);
          continue;
        }
        const r = replicas[o.peer];
        if (r === undefined) continue;
        if (o.kind === 'upsert') {
          // A node's record is written by its own peer only (as the daemon does), read-modify-write.
          const prev = r.nodeByPeerId(`peer${o.peer}`);
          r.upsertNode(
            record(`peer${o.peer}`, names[o.peer] ?? 'nas', {
              addrs: [`/ip4/10.0.0.${o.addr}/tcp/1`],
              capacity: { cpu: o.cpu, memoryBytes: 1024 },
              labels: prev?.labels ?? {},
            }),
          );
          continue;
        }
        const name = names[o.node] ?? 'nas';
        if (r.nodeByName(name) !== undefined) {
          if (o.kind === 'label') r.setLabels(name, { [`k${o.key}`]: `v${o.value}` }, []);
          else r.setLabels(name, {}, [`k${o.key}`]);
        }
      }
      // Reference: every update, in the order it was made.
      const reference = new ClusterDoc(new Y.Doc());
      for (const u of updates) Y.applyUpdate(reference.doc, u);
      // Replicas that exchanged everything agree with it.
      for (const r of replicas) for (const u of updates) Y.applyUpdate(r.doc, u, 'sync');
      for (const r of replicas) assert.equal(canonical(r), canonical(reference));
      // And so does any shuffled delivery, one update at a time (Yjs holds ones whose causes are missing).
      const shuffled = [...updates];
      const it = rand[Symbol.iterator]();
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = (it.next().value as number) % (i + 1);
        [shuffled[i], shuffled[j]] = [shuffled[j] as Uint8Array, shuffled[i] as Uint8Array];
      }
      const other = new ClusterDoc(new Y.Doc());
      for (const u of shuffled) Y.applyUpdate(other.doc, u);
      assert.equal(canonical(other), canonical(reference));
      // Merged into one update, too.
      const merged = new ClusterDoc(new Y.Doc());
      Y.applyUpdate(merged.doc, Y.mergeUpdates(shuffled));
      assert.equal(canonical(merged), canonical(reference));
    }),
    { numRuns: 200 },
  );
});
