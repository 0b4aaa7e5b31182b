// Tests of the document → ClusterView adapter: resources, grace, policy, flags, forgotten, presence, skipped pods.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys';
import * as Y from 'yjs';
import { DEFAULT_DEAD_AFTER_MS } from '../scheduler/cluster-view.ts';
import { ManualClock } from '../shared/clock.ts';
import { ClusterDoc } from '../state/cluster-doc.ts';
import { FieldOwnership } from '../state/field-ownership.ts';
import type { Materialized } from '../state/materialize.ts';
import { ObjectStore } from '../state/object-store.ts';
import { type Pod, toStoredPod, validatePod } from '../state/pod-spec.ts';
import { ed25519Signer, peerIdVerifier } from '../state/revision-records.ts';
import { ClusterViewSource, podInfoOf } from './cluster-view-source.ts';
import { ed25519LeaseSigner, LeaseStore, peerIdLeaseVerifier } from './lease-store.ts';

const key = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(7));
const MI = 1024 * 1024;

function pod(raw: unknown): Pod {
  const v = validatePod(raw);
  if (v.pod === undefined) throw new Error(JSON.stringify(v.issues));
  return v.pod;
}

const two = pod({
  kind: 'Pod',
  name: 'two',
  spec: {
    availability: 'ha',
    replicas: 2,
    haGraceSeconds: 7,
    placement: { host: 'nas' },
    security: {
      hostNetwork: true,
      capabilities: ['CAP_NET_ADMIN'],
      hostPaths: [{ path: '/srv', readOnly: true }],
    },
    containers: [
      { name: 'app', command: ['x'], resources: { cpu: '250m', memory: '64Mi' } },
      { name: 'side', command: ['y'], resources: { cpu: 0.5, memory: '1Gi' } },
      { name: 'bare', command: ['z'] },
    ],
  },
});

test('podInfoOf: per-replica resources are the sum over containers; grace in ms; capabilities without CAP_', () => {
  const info = podInfoOf(two);
  assert.deepEqual(info, {
    name: 'two',
    replicas: 2,
    availability: 'ha',
    placement: { host: 'nas' },
    resources: { cpu: 0.75, memoryBytes: 64 * MI + 1024 * MI },
    security: {
      hostNetwork: true,
      capabilities: ['NET_ADMIN'],
      hostPaths: [{ path: '/srv', readOnly: true }],
    },
    haGraceMs: 7000,
  });
  const plain = podInfoOf(
    pod({ kind: 'Pod', name: 'p', spec: { containers: [{ name: 'a', command: ['x'] }] } }),
  );
  assert.equal(plain.haGraceMs, undefined, 'no grace given: the scheduler default applies');
  assert.equal(plain.availability, 'best-effort');
  assert.deepEqual(plain.resources, { cpu: 0, memoryBytes: 0 });
});

test('read(): nodes with flags and policy, live pods only, leases, forgotten, presence and deadAfter', () => {
  const clock = new ManualClock();
  const doc = new Y.Doc();
  const cluster = new ClusterDoc(doc);
  const objects = new ObjectStore(doc, {
    signer: ed25519Signer(key),
    verifier: peerIdVerifier(),
    ownership: FieldOwnership.withBuiltins(),
    clock,
    compaction: false,
  });
  const signer = ed25519LeaseSigner(key);
  const leases = new LeaseStore(doc, signer, peerIdLeaseVerifier());
  for (const [peerId, name] of [
    ['peerA', 'nas'],
    ['peerB', 'vps'],
  ] as const) {
    cluster.upsertNode({
      peerId,
      name,
      addrs: [],
      labels: name === 'nas' ? { zone: 'eu' } : {},
      capacity: { cpu: 2, memoryBytes: 4096 * MI },
      joinedAt: 1,
      version: '0.1.0',
    });
  }
  cluster.setNodeFlags('vps', { cordoned: true, draining: true });
  cluster.setNodePolicy('peerA', { hostNetwork: true, capabilities: ['CAP_NET_ADMIN', 'CHOWN'] });
  cluster.forgetNode('vps', 5);
  const author = { peer: signer.peerId, host: 'nas', actor: 'test' };
  objects.applyPod(two, author);
  objects.applyPod(
    pod({ kind: 'Pod', name: 'gone', spec: { containers: [{ name: 'a', command: ['x'] }] } }),
    author,
  );
  objects.delete('pod/gone', author);
  leases.write(leases.sign({ slot: 'pod/two#0', holder: signer.peerId, epoch: 1, claimedAt: 3 }));
  const seen = new Map([['peerB', 42]]);
  const source = new ClusterViewSource({
    cluster,
    pods: objects,
    leases,
    presence: { lastSeen: () => seen },
    presenceSince: 10,
  });
  const { view, skipped } = source.read();
  assert.deepEqual(skipped, []);
  assert.deepEqual(view.nodes, [
    {
      name: 'nas',
      peerId: 'peerA',
      labels: { zone: 'eu' },
      capacity: { cpu: 2, memoryBytes: 4096 * MI },
      cordoned: false,
      draining: false,
      policy: { hostNetwork: true, capabilities: ['NET_ADMIN', 'CHOWN'] },
    },
    {
      name: 'vps',
      peerId: 'peerB',
      labels: {},
      capacity: { cpu: 2, memoryBytes: 4096 * MI },
      cordoned: true,
      draining: true,
      policy: {},
    },
  ]);
  assert.deepEqual(
    view.pods.map((p) => p.name),
    ['two'],
    'deleted pods are not scheduled',
  );
  assert.equal(view.leases.length, 1);
  assert.deepEqual([...view.forgotten], ['peerB']);
  assert.deepEqual([...view.presence], [['peerB', 42]]);
  seen.set('peerA', 50);
  assert.equal(view.presence.get('peerA'), undefined, 'the view is a snapshot');
  assert.equal(view.presenceSince, 10);
  assert.equal(view.deadAfterMs, DEFAULT_DEAD_AFTER_MS);
  objects.close();
});

test('read(): a stored pod that cannot be read is skipped with the reason, the rest still scheduled', () => {
  const cluster = new ClusterDoc(new Y.Doc());
  const broken = { key: 'pod/bad', object: { kind: 'Pod', name: 'bad', spec: { containers: [] } } };
  const good = { key: 'pod/two', object: toStoredPod(two) };
  const source = new ClusterViewSource({
    cluster,
    pods: { list: () => [broken, good] as unknown as Materialized[] },
    leases: { all: () => [] },
    presence: { lastSeen: () => new Map() },
    presenceSince: 0,
    deadAfterMs: 1000,
  });
  const { view, skipped } = source.read();
  assert.deepEqual(
    view.pods.map((p) => p.name),
    ['two'],
  );
  assert.deepEqual(
    skipped.map((s) => s.key),
    ['pod/bad'],
  );
  assert.match(skipped[0]?.reason ?? '', /stored pod bad is invalid/);
  assert.equal(view.deadAfterMs, 1000);
  // Read again with the same materialized objects: the same views and the same reasons, without parsing.
  const again = source.read();
  assert.equal(again.view.pods[0], view.pods[0], 'an unchanged pod is not parsed again');
  assert.deepEqual(again.skipped, skipped);
});

test('read(): a pod whose records changed (a new materialized object) is read afresh', () => {
  const cluster = new ClusterDoc(new Y.Doc());
  let current = { key: 'pod/two', object: toStoredPod(two) };
  const source = new ClusterViewSource({
    cluster,
    pods: { list: () => [current] as unknown as Materialized[] },
    leases: { all: () => [] },
    presence: { lastSeen: () => new Map() },
    presenceSince: 0,
  });
  assert.equal(source.read().view.pods[0]?.replicas, two.spec.replicas);
  const edited = { ...two, spec: { ...two.spec, replicas: two.spec.replicas + 2 } };
  current = { key: 'pod/two', object: toStoredPod(edited) };
  assert.equal(source.read().view.pods[0]?.replicas, two.spec.replicas + 2);
});
