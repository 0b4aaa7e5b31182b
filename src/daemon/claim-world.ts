// Test-only world of in-process peers: one Y.Doc, ClusterDoc, ObjectStore, LeaseStore and ClaimLoop each, real Ed25519 keys, simulated presence and partitions.

import { generateKeyPairFromSeed } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import * as Y from 'yjs';
import { DEFAULT_DEAD_AFTER_MS } from '../scheduler/cluster-view.ts';
import { ManualClock } from '../shared/clock.ts';
import { ClusterDoc } from '../state/cluster-doc.ts';
import { FieldOwnership } from '../state/field-ownership.ts';
import { ObjectStore } from '../state/object-store.ts';
import { type Pod, validatePod } from '../state/pod-spec.ts';
import { ed25519Signer, peerIdVerifier } from '../state/revision-records.ts';
import { ClaimLoop, type DesiredSlot } from './claim-loop.ts';
import { ClusterViewSource } from './cluster-view-source.ts';
import { ed25519LeaseSigner, LeaseStore, peerIdLeaseVerifier } from './lease-store.ts';

export const GI = 1024 ** 3;
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
export const T0 = Date.UTC(2026, 0, 1);

/** Transaction origin of updates delivered from another simulated peer. */
const REMOTE = Symbol('sim-remote');

export interface NodeSpec {
  readonly name: string;
  readonly cpu?: number;
  readonly memoryBytes?: number;
  readonly labels?: Record<string, string>;
}

export interface WorldOptions {
  /** Claim loop period (and presence heartbeat period). Default 1000 ms. */
  readonly intervalMs?: number;
  /** Claim loop period alone, when it should differ from the heartbeat's. */
  readonly loopIntervalMs?: number;
  readonly deadAfterMs?: number;
}

export interface SimPeer {
  readonly name: string;
  readonly peerId: string;
  readonly key: PrivateKey;
  doc: Y.Doc;
  cluster: ClusterDoc;
  objects: ObjectStore;
  leases: LeaseStore;
  loop: ClaimLoop;
  /** Peer id → when this peer last heard it (what MeshNode.peers().lastSeenAt would say). */
  lastSeen: Map<string, number>;
  /** Partition group: peers hear each other (presence and document) only within one group. */
  group: number;
}

export interface PodOptions {
  readonly replicas?: number;
  readonly availability?: 'ha' | 'best-effort';
  readonly host?: string;
  readonly labels?: Record<string, string>;
  readonly cpu?: number | string;
  readonly memory?: string;
  readonly haGraceSeconds?: number;
}

/** A valid user pod with one container. */
export function testPod(name: string, o: PodOptions = {}): Pod {
  const placement = {
    ...(o.host === undefined ? {} : { host: o.host }),
    ...(o.labels === undefined ? {} : { labels: o.labels }),
  };
  const raw = {
    kind: 'Pod',
    name,
    spec: {
      containers: [
        {
          name: 'app',
          command: ['sleep', 'infinity'],
          resources: { cpu: o.cpu ?? 0.5, memory: o.memory ?? '256Mi' },
        },
      ],
      replicas: o.replicas ?? 1,
      availability: o.availability ?? 'ha',
      ...(Object.keys(placement).length === 0 ? {} : { placement }),
      ...(o.haGraceSeconds === undefined ? {} : { haGraceSeconds: o.haGraceSeconds }),
    },
  };
  const v = validatePod(raw);
  if (v.pod === undefined) throw new Error(`test pod ${name} is invalid: ${JSON.stringify(v.issues)}`);
  return v.pod;
}

/** Peers in one process on one ManualClock. Updates travel synchronously within a partition group. */
export class ClaimWorld {
  readonly clock = new ManualClock(T0);
  readonly peers: SimPeer[] = [];
  private readonly opts: WorldOptions;
  private readonly specs: Map<string, NodeSpec>;

  private constructor(opts: WorldOptions, specs: readonly NodeSpec[]) {
    this.opts = opts;
    this.specs = new Map(specs.map((s) => [s.name, s]));
    // Heartbeats are set up before any loop, so each period's presence is fresh when the loops decide.
    this.clock.setInterval(() => this.heartbeat(), opts.intervalMs ?? 1000);
  }

  static async create(specs: readonly NodeSpec[], opts: WorldOptions = {}): Promise<ClaimWorld> {
    const world = new ClaimWorld(opts, specs);
    let seed = 1;
    for (const spec of specs) {
      const key = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(seed++));
      world.peers.push(world.makePeer(spec, key, new Y.Doc(), 0));
    }
    for (const p of world.peers) world.writeNode(p);
    world.heartbeat();
    for (const p of world.peers) p.loop.start();
    return world;
  }

  private makePeer(spec: NodeSpec, key: PrivateKey, doc: Y.Doc, group: number): SimPeer {
    const signer = ed25519LeaseSigner(key);
    const cluster = new ClusterDoc(doc);
    const objects = new ObjectStore(doc, {
      signer: ed25519Signer(key),
      verifier: peerIdVerifier(),
      ownership: FieldOwnership.withBuiltins(),
      clock: this.clock,
      host: spec.name,
      compaction: false,
    });
    const verifier = peerIdLeaseVerifier();
    const leases = new LeaseStore(doc, signer, verifier);
    const lastSeen = new Map<string, number>();
    const source = new ClusterViewSource({
      cluster,
      pods: objects,
      leases,
      presence: { lastSeen: () => lastSeen },
      presenceSince: this.clock.now(),
      deadAfterMs: this.opts.deadAfterMs ?? DEFAULT_DEAD_AFTER_MS,
    });
    const loop = new ClaimLoop({
      source,
      leases,
      verifier,
      clock: this.clock,
      feeds: [(l) => cluster.onChange(l), (l) => objects.onChange(() => l())],
      intervalMs: this.opts.loopIntervalMs ?? this.opts.intervalMs ?? 1000,
    });
    const peer: SimPeer = {
      name: spec.name,
      peerId: signer.peerId,
      key,
      doc,
      cluster,
      objects,
      leases,
      loop,
      lastSeen,
      group,
    };
    doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin === REMOTE) return;
      // Within a group everyone is connected to everyone, so direct delivery reaches every peer.
      for (const other of this.peers) {
        if (other !== peer && other.group === peer.group) Y.applyUpdate(other.doc, update, REMOTE);
      }
    });
    return peer;
  }

  private writeNode(p: SimPeer): void {
    const spec = this.specs.get(p.name);
    p.cluster.upsertNode({
      peerId: p.peerId,
      name: p.name,
      addrs: [],
      labels: spec?.labels ?? {},
      capacity: { cpu: spec?.cpu ?? 4, memoryBytes: spec?.memoryBytes ?? 4 * GI },
      joinedAt: T0,
      version: '0.1.0',
    });
  }

  peer(name: string): SimPeer {
    const p = this.peers.find((x) => x.name === name);
    if (p === undefined) throw new Error(`no peer ${name}`);
    return p;
  }

  /** Every peer hears every other peer of its group now. */
  heartbeat(): void {
    const now = this.clock.now();
    for (const a of this.peers)
      for (const b of this.peers) if (a !== b && a.group === b.group) a.lastSeen.set(b.peerId, now);
  }

  /** Splits the peers into groups that no longer hear each other. */
  partition(...groups: readonly (readonly string[])[]): void {
    groups.forEach((names, i) => {
      for (const n of names) this.peer(n).group = i + 1;
    });
  }

  /** One group again: every pair exchanges what the other lacks, as the state-vector sync on reconnect does. */
  heal(): void {
    for (const p of this.peers) p.group = 0;
    for (const a of this.peers) {
      for (const b of this.peers) {
        if (a !== b) Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc, Y.encodeStateVector(b.doc)), REMOTE);
      }
    }
    this.heartbeat();
  }

  /** Applies a pod through `via`'s ObjectStore, as `meshd apply` on that node does. */
  apply(via: string, pod: Pod): void {
    const p = this.peer(via);
    p.objects.applyPod(pod, { peer: p.peerId, host: p.name, actor: 'test' });
  }

  /**
   * Restarts `name` from its persisted document (its current state, encoded and loaded into a fresh Y.Doc)
   * with fresh presence: the daemon after a reboot. It hears nobody until `heal()` or its group says so.
   */
  restart(name: string): SimPeer {
    const old = this.peer(name);
    old.loop.stop();
    old.objects.close();
    const persisted = Y.encodeStateAsUpdate(old.doc);
    old.doc.destroy();
    const doc = new Y.Doc();
    Y.applyUpdate(doc, persisted, 'load');
    const spec = this.specs.get(name) ?? { name };
    const fresh = this.makePeer(spec, old.key, doc, old.group);
    this.peers[this.peers.indexOf(old)] = fresh;
    fresh.loop.start();
    return fresh;
  }

  /** Slot key → names of the peers whose desiredSlots() include it, for one pod. */
  runners(pod: string): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const p of this.peers) {
      for (const d of p.loop.desiredSlots()) {
        if (d.pod !== pod) continue;
        const key = `pod/${d.pod}#${d.slot}`;
        out.set(key, [...(out.get(key) ?? []), p.name].sort());
      }
    }
    return out;
  }

  desired(name: string, pod?: string): DesiredSlot[] {
    return this.peer(name)
      .loop.desiredSlots()
      .filter((d) => pod === undefined || d.pod === pod);
  }

  stop(): void {
    for (const p of this.peers) {
      p.loop.stop();
      p.objects.close();
      p.doc.destroy();
    }
  }
}
