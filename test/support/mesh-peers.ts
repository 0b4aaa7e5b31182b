// Many MeshNodes in one process on loopback for tests: keys, a shared mesh key, captured logs, canonical doc state.

import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import * as Y from 'yjs';
import { type KnownPeer, MeshNode, type MeshNodeOptions, type MeshTuning } from '../../src/mesh/mesh-node.ts';
import { systemClock } from '../../src/shared/clock.ts';
import { createLogger, type Logger } from '../../src/shared/logger.ts';

export interface CapturedLog {
  level: string;
  msg: string;
  peer?: string;
  [key: string]: unknown;
}

export interface TestPeer {
  name: string;
  node: MeshNode;
  doc: Y.Doc;
  key: PrivateKey;
  logs: CapturedLog[];
}

export interface StartPeerOptions {
  name: string;
  psk: Uint8Array;
  meshId: string;
  key?: PrivateKey;
  doc?: Y.Doc;
  bootstrap?: string[];
  knownPeers?: () => KnownPeer[];
  tuning?: Partial<MeshTuning>;
  /** Defaults to an ephemeral loopback port. */
  listen?: string[];
  /** Epoch of `psk`; defaults to 0. */
  keyEpoch?: number;
  /** Membership hooks (removal, key rotation) passed to the node as they are. */
  membership?: Partial<Pick<MeshNodeOptions, 'persistKey' | 'isRemoved' | 'onEpochMismatch' | 'onRemoved'>>;
}

/** Presence and redial fast enough for tests that wait on them; everything else at production defaults. */
export const fastTuning: Partial<MeshTuning> = {
  presenceIntervalMs: 250,
  redialMinMs: 200,
  redialMaxMs: 2000,
  antiEntropyMinMs: 500,
  pingIntervalMs: 1000,
};

export function newPsk(): Uint8Array {
  return new Uint8Array(randomBytes(32));
}

/** A logger that keeps every line (debug and up) in memory, so tests can look for warnings. */
export function capturingLogger(): { logger: Logger; logs: CapturedLog[] } {
  const logs: CapturedLog[] = [];
  const logger = createLogger({
    level: 'debug',
    write: (line) => logs.push(JSON.parse(line) as CapturedLog),
  });
  return { logger, logs };
}

/** Starts one MeshNode listening on an ephemeral loopback port. The caller stops it (see `stopAll`). */
export async function startPeer(opts: StartPeerOptions): Promise<TestPeer> {
  const key = opts.key ?? (await generateKeyPair('Ed25519'));
  const doc = opts.doc ?? new Y.Doc();
  const { logger, logs } = capturingLogger();
  const node = await MeshNode.create({
    privateKey: key,
    key: { psk: opts.psk, epoch: opts.keyEpoch ?? 0 },
    ...opts.membership,
    meshId: opts.meshId,
    nodeName: opts.name,
    listen: opts.listen ?? ['/ip4/127.0.0.1/tcp/0'],
    doc,
    bootstrap: opts.bootstrap ?? [],
    knownPeers: opts.knownPeers ?? (() => []),
    logger,
    clock: systemClock,
    tuning: { ...fastTuning, ...opts.tuning },
  });
  return { name: opts.name, node, doc, key, logs };
}

export async function stopAll(peers: Iterable<TestPeer>): Promise<void> {
  await Promise.all([...peers].map((p) => p.node.stop()));
}

/** Peers of one test: each is stopped in `t.after`, even when a later start fails. */
export function peerGroup(t: { after(fn: () => Promise<void>): void }): {
  peers: TestPeer[];
  start(opts: StartPeerOptions): Promise<TestPeer>;
} {
  const peers: TestPeer[] = [];
  t.after(() => stopAll(peers));
  return {
    peers,
    async start(opts) {
      const peer = await startPeer(opts);
      peers.push(peer);
      return peer;
    },
  };
}

/** JSON with object keys sorted at every level: Yjs map key order differs between replicas. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    return Object.fromEntries(
      Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    );
  });
}

/** Canonical content of the root map `m` (the map tests edit). */
export function docState(doc: Y.Doc): string {
  return canonicalJson(doc.getMap('m').toJSON());
}

/** A Y.Doc loaded from another doc's full state, as a restarted daemon would load it from disk. */
export function copyDoc(doc: Y.Doc): Y.Doc {
  const copy = new Y.Doc();
  Y.applyUpdate(copy, Y.encodeStateAsUpdate(doc));
  return copy;
}
