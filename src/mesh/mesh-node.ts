// One peer of the mesh: a libp2p node that keeps the cluster Y.Doc replicated with every peer and tracks presence.

import { createHash } from 'node:crypto';
import { type SubscriptionChangeData, TopicValidatorResult } from '@libp2p/gossipsub';
import type { Connection, PeerId, PrivateKey, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import * as Y from 'yjs';
import type { Clock } from '../shared/clock.ts';
import { describeError, MeshdError, PeerProtocolError, ValidationError } from '../shared/errors.ts';
import { LogThrottle } from '../shared/log-throttle.ts';
import type { Logger } from '../shared/logger.ts';
import { runDocSync, type SyncByteCounts, type SyncParty } from './doc-sync.ts';
import {
  applyPeerUpdate,
  decodeDocGossip,
  docDigest,
  encodeDocGossip,
  originTagBytes,
} from './doc-update.ts';
import {
  decodeKeyRotation,
  encodeKeyRotation,
  type KeyRotation,
  maxRotationBytes,
  maxRotationRemovals,
} from './key-rotation.ts';
import { createMeshLibp2p, type MeshLibp2p } from './libp2p-node.ts';
import { compareKeys, MAX_KEY_EPOCH, type MeshKey, MeshKeyring, newMeshKey } from './mesh-key.ts';
import { fullPeerAddr, type MeshProtocols, meshProtocols, peerIdOfAddr } from './mesh-protocols.ts';
import { answerPeer, askPeer, type PeerQuestion, type QuestionHandler } from './peer-query.ts';
import { PeerRedialer, type RedialTarget } from './peer-redial.ts';
import type { EpochMismatch } from './pnet-protector.ts';
import { peerTag } from './presence-frame.ts';
import { PresenceLinks } from './presence-links.ts';

/** A peer remembered in the cluster document. */
export interface KnownPeer {
  peerId: string;
  /** Multiaddrs with or without the trailing /p2p/<peerId>. */
  addrs: string[];
}

export interface MeshTuning {
  /** How often this node publishes its presence beacon. */
  presenceIntervalMs: number;
  /** Upper bound of every dial (connect, including the pnet/Noise handshake). */
  dialTimeoutMs: number;
  /** First redial delay after a failed dial; backoff doubles from here. */
  redialMinMs: number;
  /** Backoff ceiling for redials. */
  redialMaxMs: number;
  /** Largest presence (or other small protocol) message accepted. */
  maxMessageBytes: number;
  /** Largest sync frame (a whole state diff) accepted or sent. */
  maxSyncBytes: number;
  /**
   * @deprecated Ignored: RTT now comes from presence echoes and nothing pings periodically (see
   * docs/decisions/0005-mesh-traffic.md). Kept so existing tunings still type-check.
   */
  pingIntervalMs: number;
  /** A connected peer that sent no presence for this long is disconnected (and redialled if it is known). */
  silentPeerCloseMs: number;
  /** Largest doc update sent or accepted on gossip; bigger local updates reach peers by sync instead. */
  maxGossipBytes: number;
  /** Upper bound of one sync run, from opening the stream to applying the diff. */
  syncTimeoutMs: number;
  /** Least time between two digest-triggered (anti-entropy) syncs with one peer. */
  antiEntropyMinMs: number;
}

/** How far past its own epoch a node accepts a rotation (they come one epoch at a time). */
const maxEpochJump = 16;

/** Lines about refused messages logged per peer and kind of fault per minute; the rest are counted. */
const rejectLogBurst = 20;

export const defaultMeshTuning: Readonly<MeshTuning> = Object.freeze({
  presenceIntervalMs: 1000,
  dialTimeoutMs: 5000,
  redialMinMs: 1000,
  redialMaxMs: 60_000,
  maxMessageBytes: 1024 * 1024,
  maxSyncBytes: 64 * 1024 * 1024,
  pingIntervalMs: 5000,
  silentPeerCloseMs: 15_000,
  maxGossipBytes: 1024 * 1024,
  syncTimeoutMs: 60_000,
  antiEntropyMinMs: 2000,
});

export interface MeshNodeOptions {
  /** Ed25519 identity key, persisted by the daemon; the peer id derives from it. */
  privateKey: PrivateKey;
  /** The mesh pre-shared key and its epoch, as stored in the data dir. */
  key: MeshKey;
  /**
   * Stores a rotated key durably; called before this node switches to it (and before it passes the key on),
   * so a crash never leaves the node on a key it has not kept.
   */
  persistKey?: (key: MeshKey) => Promise<void> | void;
  /** Peers removed from the mesh according to the document: refused at connection time, never redialled. */
  isRemoved?: (peerId: string) => boolean;
  /** Told when a handshake fails because the two ends hold keys of different epochs. */
  onEpochMismatch?: (mismatch: EpochMismatch) => void;
  /** Told when a rotation names this node as removed (it keeps the old key and stays out). */
  onRemoved?: (rotation: KeyRotation) => void;
  /** Short id of the mesh; part of every topic and protocol name. */
  meshId: string;
  nodeName: string;
  /** Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/7946`. */
  listen: string[];
  /** The cluster document, kept in sync with every peer. */
  doc: Y.Doc;
  /** Multiaddrs ending in /p2p/<peerId>, from the join token. */
  bootstrap: string[];
  /** Peers remembered in the document; redialled with backoff whenever not connected. */
  knownPeers: () => KnownPeer[];
  logger: Logger;
  clock: Clock;
  tuning?: Partial<MeshTuning>;
}

export interface PeerView {
  peerId: string;
  /** Node name from its presence; null until a beacon arrived. */
  name: string | null;
  connected: boolean;
  /** Local clock time (ms) the last presence beacon of this peer arrived, directly or relayed. */
  lastSeenAt: number | null;
  rttMs: number | null;
  /** Dialable multiaddrs, each ending in /p2p/<peerId>. */
  addrs: string[];
}

export interface MeshStats {
  /** meshd payload bytes written: sync and presence frames, plus gossip data times the peers it was sent to. */
  bytesSent: number;
  /** meshd payload bytes read: sync and presence frames, plus each distinct gossip message once. */
  bytesReceived: number;
  /** Doc updates this node published on gossip (local edits and updates learned by sync). */
  gossipPublished: number;
  /** Gossiped doc updates applied but not forwarded, because every neighbour had them from their publisher. */
  gossipForwardsSkipped: number;
  /** Presence ticks on which this node's beacon went to at least one peer. */
  presencePublished: number;
  /** Other peers' beacons this node forwarded to neighbours that do not hear them directly. */
  presenceRelayed: number;
  /** Completed sync runs, as initiator or responder. */
  syncRuns: number;
  syncFailures: number;
  /** Sync runs started because a peer's digest differed from ours. */
  antiEntropySyncs: number;
  /** Messages from peers refused as malformed, oversized, unverifiable or unappliable. */
  rejectedMessages: number;
}

/** Detail of the 'synced' event. */
export interface SyncedDetail {
  peerId: string;
  role: 'initiator' | 'responder';
  reason: 'connect' | 'subscribe' | 'anti-entropy' | 'remote';
  bytesSent: number;
  bytesReceived: number;
}

/**
 * Transaction origin of every update applied from a peer (gossip or sync). Observers of the document use it
 * to tell remote changes from local ones; MeshNode publishes every update whose origin is anything else.
 */
export const remoteOrigin: unique symbol = Symbol('meshd.mesh.remote');

interface Deadline {
  signal: AbortSignal;
  cancel(): void;
}

export class MeshNode {
  readonly peerId: string;
  /**
   * Dispatches 'synced' (CustomEvent<SyncedDetail>) and 'peers' (Event) when what `peers()` lists changed: a
   * connection, a peer first seen or seen again after a silence, its name, addresses or first RTT. A beacon
   * that only renews `lastSeenAt` dispatches nothing (with 20 peers that was 19 events a second).
   */
  readonly events: EventTarget = new EventTarget();

  private readonly opts: MeshNodeOptions;
  private readonly keyring: MeshKeyring;
  /** Log lines about refused messages, per `peer code`, in the current minute (see `reject`). */
  private readonly rejectLog: LogThrottle;
  /** Every removed peer this node knows of: from rotations it saw and from the document (`refuse`). */
  private readonly denied = new Set<string>();
  /**
   * The removals the author of the current key knew when it made it, when this node saw that rotation;
   * undefined for a key read from disk. A removal outside it means the key may have reached that peer.
   */
  private keyRemoved: Set<string> | undefined;
  /** The tail of the key work queue (see `serialized`). */
  private keyWork: Promise<void> = Promise.resolve();
  private readonly tuning: MeshTuning;
  private readonly names: MeshProtocols;
  private readonly libp2p: MeshLibp2p;
  private readonly log: Logger;
  private readonly bootstrapTargets: RedialTarget[];
  private readonly redialer: PeerRedialer;
  private readonly presence: PresenceLinks;
  /** `peerTag` of this node, in front of every doc update it publishes. */
  private readonly selfTag: Uint8Array;
  /** Parsed peer ids by string: parsing one builds a public key, too dear for every redial tick. */
  private readonly peerIds = new Map<string, PeerId>();
  private readonly fullAddrs = new Map<string, string | undefined>();
  private readonly syncedPeers = new Set<string>();
  /** Sync runs in flight per peer (one we started plus any the peer started). */
  private readonly syncing = new Map<string, number>();
  /** Peers whose subscription arrived while a sync with them ran: checked again when it ends. */
  private readonly resyncWanted = new Set<string>();
  private readonly lastSyncAt = new Map<string, number>();
  /** Each peer's latest beacon digest, how many beacons in a row carried it, and our `docVersion` then. */
  private readonly peerDigests = new Map<string, { digest: string; repeats: number; ourVersion: number }>();
  /** `docVersion` when the last sync with each peer started. */
  private readonly syncedVersion = new Map<string, number>();
  private readonly syncWaiters = new Set<{ resolve(): void; reject(err: Error): void }>();
  private readonly lifetime = new AbortController();
  private readonly counters: MeshStats = {
    bytesSent: 0,
    bytesReceived: 0,
    gossipPublished: 0,
    gossipForwardsSkipped: 0,
    presencePublished: 0,
    presenceRelayed: 0,
    syncRuns: 0,
    syncFailures: 0,
    antiEntropySyncs: 0,
    rejectedMessages: 0,
  };
  private pendingUpdates: Uint8Array[] = [];
  /** True only while a sync-learned update is being applied: its 'update' event must be re-published. */
  private republishing = false;
  private digest: string | undefined;
  /** Counts document updates of any origin; tells whether a peer may have missed one since our last sync. */
  private docVersion = 0;
  private peersEventQueued = false;
  private stopped = false;

  private constructor(
    opts: MeshNodeOptions,
    tuning: MeshTuning,
    names: MeshProtocols,
    libp2p: MeshLibp2p,
    bootstrap: RedialTarget[],
    keyring: MeshKeyring,
  ) {
    this.opts = opts;
    this.keyring = keyring;
    this.rejectLog = new LogThrottle({ clock: opts.clock, burst: rejectLogBurst });
    this.tuning = tuning;
    this.names = names;
    this.libp2p = libp2p;
    this.peerId = libp2p.peerId.toString();
    this.log = opts.logger;
    this.bootstrapTargets = bootstrap;
    this.selfTag = Buffer.from(peerTag(this.peerId), 'hex');
    this.presence = new PresenceLinks({
      libp2p,
      selfId: this.peerId,
      protocol: names.presenceProtocol,
      meshId: opts.meshId,
      privateKey: opts.privateKey,
      nodeName: opts.nodeName,
      clock: opts.clock,
      logger: this.log,
      intervalMs: tuning.presenceIntervalMs,
      maxMessageBytes: tuning.maxMessageBytes,
      silentPeerCloseMs: tuning.silentPeerCloseMs,
      openTimeoutMs: tuning.dialTimeoutMs,
      addrs: () => this.addrs(),
      digest: () => this.currentDigest(),
      onBeacon: (peerId, svHash) => this.maybeAntiEntropy(peerId, svHash),
      onChange: () => this.peersChanged(),
      onReject: (peer, err) => this.reject(peer, err),
      lifetime: this.lifetime.signal,
      deadline: (ms) => this.deadline(ms),
    });
    this.redialer = new PeerRedialer({
      clock: opts.clock,
      logger: this.log,
      minMs: tuning.redialMinMs,
      maxMs: tuning.redialMaxMs,
      targets: () => this.redialTargets(),
      isConnected: (peerId) => this.isConnected(peerId),
      dial: (target) => this.dialTarget(target),
    });
  }

  /** Creates the node, starts it listening, dials the bootstrap peers and begins presence. */
  static async create(opts: MeshNodeOptions): Promise<MeshNode> {
    const tuning: MeshTuning = { ...defaultMeshTuning, ...opts.tuning };
    const names = meshProtocols(opts.meshId);
    const bootstrap = parseBootstrap(opts.bootstrap);
    const startError = (err: unknown): MeshdError =>
      new MeshdError(
        'E_MESH_START',
        `cannot start the mesh node on ${opts.listen.join(', ')}: ${describeError(err)}`,
        {
          hint: 'Check that the listen addresses are valid multiaddrs, free, and local to this machine (another meshd running?).',
          details: { listen: opts.listen },
          cause: err,
        },
      );
    const keyring = new MeshKeyring(opts.key);
    // the gater asks before the node exists; it answers through this late-bound reference
    let node: MeshNode | undefined;
    let libp2p: MeshLibp2p;
    try {
      libp2p = await createMeshLibp2p({
        privateKey: opts.privateKey,
        keyring,
        isDenied: (peerId) => node?.isDenied(peerId) ?? opts.isRemoved?.(peerId) ?? false,
        ...(opts.onEpochMismatch === undefined ? {} : { onEpochMismatch: opts.onEpochMismatch }),
        listen: opts.listen,
        dialTimeoutMs: tuning.dialTimeoutMs,
        topics: [names.docTopic],
        // an update's id is its content, not who published it: re-publishing after a sync stays a duplicate
        messageId: (data) => createHash('sha256').update(data.subarray(originTagBytes)).digest(),
        // one RPC may batch several messages (e.g. answers to IWANT), so allow well over one message
        maxGossipRpcBytes: Math.max(
          4 * 1024 * 1024,
          2 * Math.max(tuning.maxGossipBytes, tuning.maxMessageBytes) + 64 * 1024,
        ),
      });
    } catch (err) {
      throw startError(err);
    }
    const self = libp2p.peerId.toString();
    node = new MeshNode(
      opts,
      tuning,
      names,
      libp2p,
      bootstrap.filter((t) => t.peerId !== self),
      keyring,
    );
    try {
      await node.start();
    } catch (err) {
      await node.stop();
      throw startError(err);
    }
    return node;
  }

  /** Dialable multiaddrs of this node, each ending in /p2p/<peerId>. */
  addrs(): string[] {
    return this.libp2p.getMultiaddrs().map((ma) => ma.toString());
  }

  /** Every other peer seen by presence, connection, bootstrap or the known-peers list. */
  peers(): PeerView[] {
    const connected = this.connectedPeerIds();
    const addrs = new Map<string, Set<string>>();
    const addAddrs = (peerId: string, list: readonly string[]): void => {
      if (peerId === this.peerId) return;
      let set = addrs.get(peerId);
      if (set === undefined) {
        set = new Set();
        addrs.set(peerId, set);
      }
      for (const a of list) {
        const full = this.fullAddr(a, peerId);
        if (full !== undefined) set.add(full);
      }
    };
    const known = this.presence.known();
    for (const [peerId, rec] of known) addAddrs(peerId, rec.addrs);
    for (const peerId of connected) addAddrs(peerId, []);
    for (const t of this.bootstrapTargets) addAddrs(t.peerId, t.addrs);
    for (const k of this.safeKnownPeers()) addAddrs(k.peerId, k.addrs);
    return [...addrs].map(([peerId, set]) => {
      const rec = known.get(peerId);
      return {
        peerId,
        name: rec?.name ?? null,
        connected: connected.has(peerId),
        lastSeenAt: rec?.lastSeenAt ?? null,
        rttMs: connected.has(peerId) ? (rec?.rttMs ?? null) : null,
        addrs: [...set],
      };
    });
  }

  /**
   * When each peer's latest beacon arrived (local clock), directly or relayed. Far cheaper than `peers()`,
   * which also lists and normalises the addresses of every known peer: use this to poll liveness.
   */
  lastSeen(): Map<string, number> {
    const seen = new Map<string, number>();
    for (const [peerId, rec] of this.presence.known())
      if (rec.lastSeenAt !== null) seen.set(peerId, rec.lastSeenAt);
    return seen;
  }

  connectedCount(): number {
    return this.connectedPeerIds().size;
  }

  /** Connected peers that completed a doc sync with this node over their current connection. */
  syncedCount(): number {
    let n = 0;
    for (const p of this.syncedPeers) if (this.isConnected(p)) n++;
    return n;
  }

  /** Connects to `addr` (a multiaddr, ideally ending in /p2p/<peerId>); always bounded by `dialTimeoutMs`. */
  async dial(addr: string, signal?: AbortSignal): Promise<void> {
    let target: Multiaddr;
    try {
      target = multiaddr(addr);
    } catch (err) {
      throw new ValidationError(
        'E_ADDR_INVALID',
        `${JSON.stringify(addr)} is not a multiaddr (${describeError(err)})`,
        {
          hint: 'Write addresses like /ip4/192.0.2.7/tcp/7946/p2p/<peer id>.',
          details: { addr },
        },
      );
    }
    await this.dialMultiaddrs([target], addr, signal);
  }

  /** One dial over all of `targets` (addresses of one peer), bounded by `dialTimeoutMs`. */
  private async dialMultiaddrs(targets: Multiaddr[], label: string, signal?: AbortSignal): Promise<void> {
    const deadline = this.deadline(this.tuning.dialTimeoutMs, signal);
    try {
      await this.libp2p.dial(targets.length === 1 && targets[0] !== undefined ? targets[0] : targets, {
        signal: deadline.signal,
      });
    } catch (err) {
      throw new MeshdError('E_DIAL_FAILED', `cannot connect to ${label}: ${describeError(err)}`, {
        hint: 'Check that the peer runs, that the address is reachable from here, and that both sides joined with the same token (mesh key).',
        details: { addrs: targets.map((t) => t.toString()) },
        cause: err,
      });
    } finally {
      deadline.cancel();
    }
  }

  /** Resolves once some connected peer has completed a doc sync with this node; rejects after `timeoutMs`. */
  waitForPeer(timeoutMs: number): Promise<void> {
    if ([...this.syncedPeers].some((p) => this.isConnected(p))) return Promise.resolve();
    if (this.stopped) return Promise.reject(stoppedError());
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve: () => {
          timer.cancel();
          this.syncWaiters.delete(waiter);
          resolve();
        },
        reject: (err: Error) => {
          timer.cancel();
          this.syncWaiters.delete(waiter);
          reject(err);
        },
      };
      const timer = this.opts.clock.setTimeout(() => {
        const tried = this.bootstrapTargets.flatMap((t) => t.addrs);
        waiter.reject(
          new MeshdError(
            'E_JOIN_TIMEOUT',
            `no peer connected and synced the cluster document within ${timeoutMs} ms`,
            {
              hint: 'Check that a peer from the join token is running and reachable from this machine (address, firewall), and that the token is current.',
              details: { bootstrap: tried, connected: this.connectedCount() },
            },
          ),
        );
      }, timeoutMs);
      this.syncWaiters.add(waiter);
    });
  }

  stats(): MeshStats {
    const p = this.presence.stats();
    return {
      ...this.counters,
      bytesSent: this.counters.bytesSent + p.bytesSent,
      bytesReceived: this.counters.bytesReceived + p.bytesReceived,
      presencePublished: p.beaconsSent,
      presenceRelayed: p.beaconsRelayed,
    };
  }

  /** Stops presence, redials and syncs, closes every connection. Idempotent. */
  /**
   * Answers other peers' questions (`why`, `logs`) with `handler`. Malformed questions are refused and
   * logged with the peer id; an answer is bounded by the asker (it closes the stream when done).
   */
  async serveQuestions(handler: QuestionHandler): Promise<void> {
    await this.libp2p.handle(
      this.names.queryProtocol,
      (stream, connection) => {
        const peer = connection.remotePeer.toString();
        answerPeer(
          stream,
          handler,
          peer,
          { maxFrameBytes: this.tuning.maxMessageBytes },
          this.lifetime.signal,
        ).catch((err: unknown) => {
          if (err instanceof PeerProtocolError) this.reject(peer, err);
          else this.log.debug('query stream ended', { peer, err: describeError(err) });
        });
      },
      { maxInboundStreams: 8, maxOutboundStreams: 8 },
    );
  }

  /** Asks `peerId` a question; yields the bodies of its answer. Dials if needed, bounded by dialTimeoutMs. */
  async *ask(peerId: string, question: PeerQuestion, signal: AbortSignal): AsyncGenerator<unknown> {
    const dial = AbortSignal.any([
      signal,
      this.lifetime.signal,
      AbortSignal.timeout(this.tuning.dialTimeoutMs),
    ]);
    const stream = await this.libp2p.dialProtocol(peerIdFromString(peerId), this.names.queryProtocol, {
      signal: dial,
    });
    yield* askPeer(
      stream,
      question,
      peerId,
      { maxFrameBytes: this.tuning.maxMessageBytes },
      AbortSignal.any([signal, this.lifetime.signal]),
    );
  }

  /** The key new connections use. */
  currentKey(): MeshKey {
    return this.keyring.current();
  }

  /** Whether `peerId` is refused: removed by a rotation this node saw, or in the document. */
  isDenied(peerId: string): boolean {
    return this.denied.has(peerId) || (this.opts.isRemoved?.(peerId) ?? false);
  }

  /**
   * Refuses `peerIds` from now on and closes their connections (a removal learned from the document).
   * Never refuses this node itself.
   */
  async refuse(peerIds: Iterable<string>): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const id of peerIds) {
      if (id === this.peerId) continue;
      this.denied.add(id);
      const peer = this.parsePeerId(id);
      if (peer !== undefined && this.libp2p.getConnections(peer).length > 0) {
        this.log.info('closing connections of a removed peer', { peer: id });
        closing.push(this.libp2p.hangUp(peer).catch(() => {}));
      }
    }
    await Promise.all(closing);
  }

  /**
   * Removes `removed` from the mesh for good: refuses them, rotates to a fresh key of the next epoch, keeps
   * it (`persistKey`), and sends it, signed, to every connected peer that stays, which passes it on. Peers
   * not connected now get it from any neighbour that has it; one that is offline until after every
   * neighbour switched is refused as stale and must `meshd join` with a fresh token.
   */
  async rotateKey(removed: readonly string[]): Promise<{ key: MeshKey; sentTo: string[] }> {
    if (removed.includes(this.peerId)) {
      throw new MeshdError('E_REMOVE_SELF', 'a node cannot remove itself', {
        hint: 'Run `meshd node remove` on another member, about this node.',
      });
    }
    return this.serialized(() => this.rotateNow(removed));
  }

  /**
   * Runs key work one piece at a time: a rotation decides on the keyring, stores the key and switches, with
   * awaits in between; two of them interleaved could leave the losing key on disk and the winner in memory.
   */
  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const run = this.keyWork.then(work, work);
    this.keyWork = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  private async rotateNow(removed: readonly string[]): Promise<{ key: MeshKey; sentTo: string[] }> {
    await this.refuse(removed);
    const current = this.keyring.current();
    if (current.epoch >= MAX_KEY_EPOCH) {
      throw new MeshdError('E_KEY_EPOCH_EXHAUSTED', `the mesh key epoch is at its limit (${current.epoch})`, {
        hint: 'Create a new mesh (`meshd init`) and join the machines to it.',
      });
    }
    // every removal this node knows, not only the new ones: see `keyRemoved`
    const all = [...this.denied].sort();
    if (all.length > maxRotationRemovals) {
      throw new MeshdError(
        'E_TOO_MANY_REMOVALS',
        `this mesh has removed ${all.length} machines; a key rotation carries at most ${maxRotationRemovals}`,
        { hint: 'Create a new mesh (`meshd init`) and join the machines that remain to it.' },
      );
    }
    const rotation: KeyRotation = {
      key: newMeshKey(current.epoch + 1),
      removed: all,
      origin: this.peerId,
      at: this.opts.clock.now(),
    };
    const message = await encodeKeyRotation(rotation, this.opts.privateKey, this.opts.meshId);
    await this.opts.persistKey?.(rotation.key);
    this.keyring.adopt(rotation.key);
    this.keyRemoved = new Set(rotation.removed);
    this.log.info('mesh key rotated', { epoch: rotation.key.epoch, removed: rotation.removed });
    const sentTo = await this.sendRotation(message, undefined);
    return { key: rotation.key, sentTo };
  }

  /**
   * Sends an encoded rotation to every connected peer but `except` and the refused, retrying each a few
   * times (a neighbour that misses it keeps the old key and is cut off at its next reconnect). Returns
   * the peers that took it.
   */
  private async sendRotation(message: Uint8Array, except: string | undefined): Promise<string[]> {
    const targets = [...this.connectedPeerIds()].filter((id) => id !== except && !this.isDenied(id));
    const sendOnce = async (id: string): Promise<void> => {
      const peer = this.parsePeerId(id);
      if (peer === undefined) throw new Error(`bad peer id ${id}`);
      const deadline = this.deadline(this.tuning.dialTimeoutMs);
      try {
        const stream = await this.libp2p.dialProtocol(peer, this.names.rekeyProtocol, {
          signal: deadline.signal,
        });
        const lp = lpStream(stream, { maxDataLength: maxRotationBytes });
        await lp.write(message, { signal: deadline.signal });
        await stream.close({ signal: deadline.signal });
      } finally {
        deadline.cancel();
      }
    };
    const sent = await Promise.all(
      targets.map(async (id) => {
        for (let attempt = 1; ; attempt++) {
          try {
            await sendOnce(id);
            return id;
          } catch (err) {
            if (attempt >= 3 || this.stopped || !this.isConnected(id)) {
              this.log.warn('cannot send the rotated key to a peer', { peer: id, err: describeError(err) });
              return undefined;
            }
            await new Promise<void>((r) => this.opts.clock.setTimeout(r, 250 * attempt));
          }
        }
      }),
    );
    return sent.filter((id): id is string => id !== undefined);
  }

  /** A rotation from a neighbour: verify, refuse the removed, keep and switch to the key, pass it on. */
  private async onRotationStream(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    const deadline = this.deadline(this.tuning.dialTimeoutMs);
    let rotation: KeyRotation;
    let message: Uint8Array;
    try {
      const lp = lpStream(stream, { maxDataLength: maxRotationBytes });
      message = (await lp.read({ signal: deadline.signal })).subarray();
      await stream.close({ signal: deadline.signal }).catch(() => {});
      rotation = await decodeKeyRotation(message, from, this.opts.meshId);
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
      if (err instanceof PeerProtocolError) this.reject(from, err);
      else this.log.debug('key rotation stream ended', { peer: from, err: describeError(err) });
      return;
    } finally {
      deadline.cancel();
    }
    if (this.isDenied(from) || this.isDenied(rotation.origin)) {
      this.reject(
        from,
        new PeerProtocolError(
          'E_PEER_REMOVED',
          `peer ${from} sent a key rotation but is removed from the mesh`,
        ),
      );
      return;
    }
    if (rotation.removed.includes(this.peerId)) {
      this.log.error('this node was removed from the mesh', {
        by: rotation.origin,
        epoch: rotation.key.epoch,
      });
      this.opts.onRemoved?.(rotation);
      return;
    }
    if (rotation.key.epoch > this.keyring.current().epoch + maxEpochJump) {
      // Rotations travel only over live connections, one epoch at a time: a leap is a member trying to
      // push the epoch to its limit, after which the mesh could never rotate again.
      this.reject(
        from,
        new PeerProtocolError(
          'E_PEER_BAD_ROTATION',
          `peer ${from} sent a key rotation to epoch ${rotation.key.epoch}, far past this node's ${this.keyring.current().epoch}`,
        ),
      );
      return;
    }
    await this.serialized(() => this.takeRotation(rotation, message, from));
  }

  private async takeRotation(rotation: KeyRotation, message: Uint8Array, from: string): Promise<void> {
    await this.refuse(rotation.removed);
    if (compareKeys(rotation.key, this.keyring.current()) < 0) {
      try {
        await this.opts.persistKey?.(rotation.key);
      } catch (err) {
        // without the key on disk the node would come back on the old one: stay on it, say so loudly
        this.log.error('cannot store the rotated mesh key; staying on the old one', {
          err: describeError(err),
        });
        return;
      }
      this.keyring.adopt(rotation.key);
      this.keyRemoved = new Set(rotation.removed);
      this.log.info('mesh key rotated', {
        epoch: rotation.key.epoch,
        by: rotation.origin,
        via: from,
        removed: rotation.removed,
      });
      await this.sendRotation(message, from);
    } else {
      this.log.debug('key rotation already known or superseded', { peer: from, epoch: rotation.key.epoch });
    }
    // Two removals at once: each rotation was sent before its author knew of the other removal, so the
    // key that wins may have reached the other removed machine. Whoever sees that rotates once more, with
    // every removal it knows; concurrent re-rotations converge like any others and each knows them all.
    const covered = this.keyRemoved;
    const uncovered = covered === undefined ? [] : [...this.denied].filter((id) => !covered.has(id));
    if (uncovered.length > 0 && !this.stopped) {
      this.log.info('rotating again: the current key predates a removal', { removed: uncovered });
      await this.rotateNow([]);
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.redialer.stop();
    this.presence.stop();
    this.opts.doc.off('update', this.onDocUpdate);
    this.lifetime.abort(stoppedError());
    for (const w of [...this.syncWaiters]) w.reject(stoppedError());
    try {
      await this.libp2p.stop();
    } catch (err) {
      this.log.warn('libp2p did not stop cleanly', { err: describeError(err) });
    }
  }

  // ---- start-up ----

  private async start(): Promise<void> {
    const { pubsub } = this.libp2p.services;
    await this.libp2p.handle(
      this.names.syncProtocol,
      (stream, connection) => this.onSyncStream(stream, connection),
      {
        maxInboundStreams: 4,
        maxOutboundStreams: 4,
      },
    );
    await this.libp2p.handle(
      this.names.rekeyProtocol,
      (stream, connection) => {
        this.onRotationStream(stream, connection).catch((err: unknown) => {
          // a failure here (say, a full disk while re-rotating) must never take the daemon down
          this.log.error('key rotation failed', { err: describeError(err) });
        });
      },
      { maxInboundStreams: 8, maxOutboundStreams: 8 },
    );
    pubsub.topicValidators.set(this.names.docTopic, (peer, msg) => this.onDocGossip(peer, msg.data));
    await this.presence.start();
    this.libp2p.addEventListener('peer:connect', (evt) => this.onPeerConnect(evt.detail));
    this.libp2p.addEventListener('peer:disconnect', (evt) => this.onPeerDisconnect(evt.detail));
    this.libp2p.addEventListener('connection:open', (evt) => this.onConnectionOpen(evt.detail));
    pubsub.addEventListener('subscription-change', (evt) => this.onSubscriptionChange(evt.detail));
    this.opts.doc.on('update', this.onDocUpdate);
    await this.libp2p.start();
    pubsub.subscribe(this.names.docTopic);
    this.redialer.start();
    this.log.debug('mesh listening', {
      peer: this.peerId,
      addrs: this.addrs(),
      bootstrap: this.bootstrapTargets.length,
    });
  }

  // ---- connections and redial ----

  /**
   * Ids of the peers with an open connection. Not `libp2p.getPeers()`: that re-parses every peer id from
   * its string (a base58 decode and a public key each), and `peers()` is polled by the daemon.
   */
  private connectedPeerIds(): Set<string> {
    const ids = new Set<string>();
    for (const c of this.libp2p.getConnections()) if (c.status === 'open') ids.add(c.remotePeer.toString());
    return ids;
  }

  private isConnected(peerId: string): boolean {
    const peer = this.parsePeerId(peerId);
    return peer !== undefined && this.libp2p.getConnections(peer).some((c) => c.status === 'open');
  }

  /** `fullPeerAddr`, remembered: `peers()` is polled by the daemon and would otherwise parse every address. */
  private fullAddr(addr: string, peerId: string): string | undefined {
    const key = `${peerId} ${addr}`;
    if (this.fullAddrs.has(key)) return this.fullAddrs.get(key);
    const full = fullPeerAddr(addr, peerId);
    if (this.fullAddrs.size >= 4096) this.fullAddrs.clear();
    this.fullAddrs.set(key, full);
    return full;
  }

  private parsePeerId(peerId: string): PeerId | undefined {
    let peer = this.peerIds.get(peerId);
    if (peer === undefined) {
      try {
        peer = peerIdFromString(peerId);
      } catch {
        return undefined;
      }
      if (this.peerIds.size >= 4096) this.peerIds.clear();
      this.peerIds.set(peerId, peer);
    }
    return peer;
  }

  private safeKnownPeers(): KnownPeer[] {
    try {
      return this.opts.knownPeers();
    } catch (err) {
      this.log.warn('cannot read known peers', { err: describeError(err) });
      return [];
    }
  }

  private redialTargets(): RedialTarget[] {
    const targets = new Map<string, RedialTarget>();
    for (const t of this.bootstrapTargets) targets.set(t.peerId, t);
    for (const k of this.safeKnownPeers()) {
      // a connected peer is not redialled, so its addresses need no parsing (this runs twice a second)
      if (k.peerId === this.peerId || targets.has(k.peerId) || this.isConnected(k.peerId)) continue;
      if (this.isDenied(k.peerId)) continue;
      const addrs = k.addrs
        .map((a) => this.fullAddr(a, k.peerId))
        .filter((a): a is string => a !== undefined);
      targets.set(k.peerId, { peerId: k.peerId, addrs });
    }
    return [...targets.values()];
  }

  /** Dials a redial target on all its addresses at once. */
  private async dialTarget(target: RedialTarget): Promise<void> {
    const addrs: Multiaddr[] = [];
    for (const a of target.addrs) {
      try {
        addrs.push(multiaddr(a));
      } catch {
        // an unparsable remembered address is skipped; the others may still work
      }
    }
    if (addrs.length === 0) throw new Error(`no usable address for peer ${target.peerId}`);
    await this.dialMultiaddrs(addrs, target.peerId);
  }

  private onPeerConnect(peer: PeerId): void {
    const id = peer.toString();
    this.redialer.connected(id);
    this.presence.peerConnected(peer);
    this.log.debug('peer connected', { peer: id });
    this.peersChanged();
  }

  private onPeerDisconnect(peer: PeerId): void {
    const id = peer.toString();
    this.syncedPeers.delete(id);
    this.presence.peerDisconnected(id);
    this.log.debug('peer disconnected', { peer: id });
    this.peersChanged();
  }

  /** The dialling side of every new connection starts a sync; one run updates both ends. */
  private onConnectionOpen(connection: Connection): void {
    if (connection.direction !== 'outbound') return;
    void this.syncWith(connection.remotePeer.toString(), 'connect', connection);
  }

  /**
   * Gossip reaches a peer only once its subscription arrived, which is after the connection's first sync has
   * usually started. Anything that changed the doc in between would wait for anti-entropy; sync it now.
   */
  private onSubscriptionChange(change: SubscriptionChangeData): void {
    const subscribed = change.subscriptions.some((s) => s.subscribe && s.topic === this.names.docTopic);
    if (!subscribed) return;
    const peerId = change.peerId.toString();
    if (this.syncing.has(peerId)) this.resyncWanted.add(peerId);
    else if (this.syncedVersion.get(peerId) !== this.docVersion) void this.syncWith(peerId, 'subscribe');
  }

  private syncStarted(peerId: string): void {
    this.syncing.set(peerId, (this.syncing.get(peerId) ?? 0) + 1);
  }

  private syncEnded(peerId: string): void {
    const left = (this.syncing.get(peerId) ?? 1) - 1;
    if (left > 0) {
      this.syncing.set(peerId, left);
      return;
    }
    this.syncing.delete(peerId);
    if (!this.resyncWanted.delete(peerId) || this.stopped) return;
    if (this.syncedVersion.get(peerId) !== this.docVersion) void this.syncWith(peerId, 'subscribe');
  }

  // ---- doc replication ----

  private readonly onDocUpdate = (update: Uint8Array, origin: unknown): void => {
    this.digest = undefined;
    this.docVersion++;
    // gossip floods by itself: an update that arrived by gossip is never sent again; one learned by sync is,
    // so that edits made offline reach everyone, not only the sync partner
    if (origin === remoteOrigin && !this.republishing) return;
    this.pendingUpdates.push(update);
    if (this.pendingUpdates.length === 1) queueMicrotask(() => void this.flushUpdates());
  };

  /** Publishes the updates of one tick as one merged gossip message. */
  private async flushUpdates(): Promise<void> {
    const updates = this.pendingUpdates;
    this.pendingUpdates = [];
    if (this.stopped || updates.length === 0) return;
    let merged: Uint8Array;
    try {
      merged = updates.length === 1 && updates[0] !== undefined ? updates[0] : Y.mergeUpdates(updates);
    } catch (err) {
      this.log.error('cannot merge local doc updates for gossip', { err: describeError(err) });
      return;
    }
    if (merged.byteLength > this.tuning.maxGossipBytes) {
      // peers notice the digest change in our next presence beacon and pull the update by sync
      this.log.debug('doc update too large for gossip; peers will sync it', { bytes: merged.byteLength });
      return;
    }
    const data = encodeDocGossip(this.selfTag, merged);
    if ((await this.publish(this.names.docTopic, data)) > 0) this.counters.gossipPublished++;
  }

  /** Publishes and never throws; returns the number of peers the message went to. */
  private async publish(topic: string, data: Uint8Array): Promise<number> {
    try {
      const { recipients } = await this.libp2p.services.pubsub.publish(topic, data);
      this.counters.bytesSent += data.byteLength * recipients.length;
      return recipients.length;
    } catch (err) {
      // NoPeersSubscribedToTopic before the first peer (or after the last) is expected: sync covers it
      this.log.debug('gossip publish not delivered', { topic, err: describeError(err) });
      return 0;
    }
  }

  /** Applies a peer's update as `remoteOrigin`; throws `PeerProtocolError` for garbage. */
  private applyFromPeer(update: Uint8Array, peer: string, republish: boolean): void {
    this.republishing = republish;
    try {
      applyPeerUpdate(this.opts.doc, update, remoteOrigin, peer);
    } finally {
      this.republishing = false;
    }
  }

  /**
   * Applies a gossiped update, then tells gossipsub whether to forward it. The publisher floods its own
   * updates to every peer it is connected to, so an update that came straight from its publisher, while
   * every neighbour of ours says (by presence) that it hears that publisher directly, has already reached
   * them all: forwarding it would only make duplicates — in a full mesh of 20, ~5 per peer per edit, which
   * cost more CPU than the edit itself. Anywhere else (a partial mesh, a relayed copy, a neighbour that
   * has not said what it hears yet) gossip forwards as usual. `Ignore` after applying is not a penalty.
   */
  private onDocGossip(peer: PeerId, data: Uint8Array): TopicValidatorResult {
    const from = peer.toString();
    this.counters.bytesReceived += data.byteLength;
    if (data.byteLength > this.tuning.maxGossipBytes + originTagBytes) {
      this.reject(
        from,
        new PeerProtocolError(
          'E_PEER_OVERSIZED',
          `peer ${from} relayed a ${data.byteLength}-byte doc update over the ${this.tuning.maxGossipBytes}-byte limit`,
          {
            hint: 'Raise tuning.maxGossipBytes on every peer, or find why the peer sends such updates.',
            details: { peer: from },
          },
        ),
      );
      return TopicValidatorResult.Reject;
    }
    try {
      const { originTag, update } = decodeDocGossip(data, from);
      this.applyFromPeer(update, from, false);
      if (this.presence.mayLack(originTag, from)) return TopicValidatorResult.Accept;
      this.counters.gossipForwardsSkipped++;
      return TopicValidatorResult.Ignore;
    } catch (err) {
      this.reject(from, err);
      return TopicValidatorResult.Reject;
    }
  }

  /**
   * Counts and logs a message refused from `peer`. A member can send garbage as fast as it likes: per peer
   * and kind, at most `rejectLogBurst` lines a minute are written, and the next line says how many were not.
   */
  private reject(peer: string, err: unknown): void {
    this.counters.rejectedMessages++;
    const code = err instanceof MeshdError ? err.code : 'E_PEER_PROTOCOL';
    const turn = this.rejectLog.take(`${peer} ${code}`);
    if (!turn.log) return;
    this.log.warn('rejected message from peer', {
      peer,
      code,
      err: describeError(err),
      ...(turn.suppressed === 0 ? {} : { notLogged: turn.suppressed }),
    });
  }

  // ---- sync ----

  private syncParty(peer: string): SyncParty {
    const { doc } = this.opts;
    return {
      stateVector: () => Y.encodeStateVector(doc),
      missingFor: (remoteSv) => Y.encodeStateAsUpdate(doc, remoteSv),
      apply: (update) => this.applyFromPeer(update, peer, true),
    };
  }

  /** Opens a sync stream to `peerId` (on `connection` when given) and runs one sync; never throws. */
  private async syncWith(
    peerId: string,
    reason: SyncedDetail['reason'],
    connection?: Connection,
  ): Promise<void> {
    if (this.stopped || this.syncing.has(peerId)) return;
    this.syncStarted(peerId);
    const deadline = this.deadline(this.tuning.syncTimeoutMs);
    try {
      let stream: Stream;
      try {
        stream =
          connection === undefined
            ? await this.libp2p.dialProtocol(peerIdFromString(peerId), this.names.syncProtocol, {
                signal: deadline.signal,
              })
            : await connection.newStream(this.names.syncProtocol, { signal: deadline.signal });
      } catch (err) {
        this.counters.syncFailures++;
        if (!this.stopped)
          this.log.debug('cannot open sync stream', { peer: peerId, reason, err: describeError(err) });
        return;
      }
      await this.runSync(stream, peerId, 'initiator', reason, deadline.signal).catch(() => {
        this.counters.syncFailures++; // runSync logged it
      });
    } finally {
      deadline.cancel();
      this.syncEnded(peerId);
    }
  }

  private onSyncStream(stream: Stream, connection: Connection): void {
    const peerId = connection.remotePeer.toString();
    const deadline = this.deadline(this.tuning.syncTimeoutMs);
    this.syncStarted(peerId);
    void this.runSync(stream, peerId, 'responder', 'remote', deadline.signal)
      .catch(() => {
        this.counters.syncFailures++;
      })
      .finally(() => {
        deadline.cancel();
        this.syncEnded(peerId);
      });
  }

  /** Runs one sync on an open stream; logs, counts and rethrows failures. */
  private async runSync(
    stream: Stream,
    peerId: string,
    role: SyncedDetail['role'],
    reason: SyncedDetail['reason'],
    signal: AbortSignal,
  ): Promise<void> {
    const counts: SyncByteCounts = { bytesSent: 0, bytesReceived: 0 };
    this.syncedVersion.set(peerId, this.docVersion);
    try {
      await runDocSync(stream, this.syncParty(peerId), {
        maxFrameBytes: this.tuning.maxSyncBytes,
        signal,
        peer: peerId,
        counts,
      });
    } catch (err) {
      if (err instanceof PeerProtocolError) this.reject(peerId, err);
      else if (!this.stopped)
        this.log.info('doc sync failed', { peer: peerId, role, reason, err: describeError(err) });
      throw err;
    } finally {
      this.counters.bytesSent += counts.bytesSent;
      this.counters.bytesReceived += counts.bytesReceived;
    }
    this.counters.syncRuns++;
    this.lastSyncAt.set(peerId, this.opts.clock.now());
    this.log.debug('doc synced', { peer: peerId, role, reason, ...counts });
    if (this.isConnected(peerId)) {
      this.syncedPeers.add(peerId);
      for (const w of [...this.syncWaiters]) w.resolve();
    }
    this.events.dispatchEvent(
      new CustomEvent<SyncedDetail>('synced', { detail: { peerId, role, reason, ...counts } }),
    );
  }

  // ---- presence ----

  private currentDigest(): string {
    this.digest ??= docDigest(this.opts.doc);
    return this.digest;
  }

  /**
   * Pulls a sync from a connected peer whose digest differs from ours and has stopped moving, at most once
   * per `antiEntropyMinMs`.
   */
  private maybeAntiEntropy(peerId: string, theirDigest: string): void {
    const last = this.peerDigests.get(peerId);
    const repeats = last?.digest === theirDigest ? last.repeats + 1 : 1;
    const oursMoved = last === undefined || last.ourVersion !== this.docVersion;
    this.peerDigests.set(peerId, { digest: theirDigest, repeats, ourVersion: this.docVersion });
    if (this.stopped || theirDigest === this.currentDigest()) return;
    // While edits flow, beacons routinely carry a digest one update behind or ahead of ours; syncing on
    // that fired ~8 syncs per edit for 20 peers. A lost update leaves the peer's digest unchanged beacon
    // after beacon (Yjs parks later updates from the same writer as pending). So a sync needs a mismatch
    // that stood still on both sides for a beacon interval, or one on their side for three intervals
    // (our side may never be still during a long stream of edits; a peer merely slow to apply one is
    // not stuck that long).
    if (!(repeats >= 2 && !oursMoved) && repeats < 4) return;
    if (this.syncing.has(peerId) || !this.isConnected(peerId)) return;
    const now = this.opts.clock.now();
    if (now - (this.lastSyncAt.get(peerId) ?? Number.NEGATIVE_INFINITY) < this.tuning.antiEntropyMinMs)
      return;
    this.lastSyncAt.set(peerId, now);
    this.counters.antiEntropySyncs++;
    void this.syncWith(peerId, 'anti-entropy');
  }

  // ---- helpers ----

  /** Coalesces changes of one tick into one 'peers' event. */
  private peersChanged(): void {
    if (this.peersEventQueued || this.stopped) return;
    this.peersEventQueued = true;
    queueMicrotask(() => {
      this.peersEventQueued = false;
      this.events.dispatchEvent(new Event('peers'));
    });
  }

  /** An abort signal that fires after `ms` on the injected clock, on `stop()`, or with `outer`. */
  private deadline(ms: number, outer?: AbortSignal): Deadline {
    const controller = new AbortController();
    const timer = this.opts.clock.setTimeout(
      () =>
        controller.abort(
          new MeshdError('E_TIMEOUT', `timed out after ${ms} ms`, {
            hint: 'Check the network path to the peer.',
          }),
        ),
      ms,
    );
    const signals = [controller.signal, this.lifetime.signal];
    if (outer !== undefined) signals.push(outer);
    return { signal: AbortSignal.any(signals), cancel: () => timer.cancel() };
  }
}

function stoppedError(): MeshdError {
  return new MeshdError('E_MESH_STOPPED', 'the mesh node was stopped', { hint: 'Start the daemon again.' });
}

/** Groups bootstrap multiaddrs by peer id; every one must end in /p2p/<peerId>. */
function parseBootstrap(addrs: string[]): RedialTarget[] {
  const byPeer = new Map<string, string[]>();
  for (const addr of addrs) {
    let peerId: string | undefined;
    try {
      peerId = peerIdOfAddr(addr);
      if (peerId !== undefined) peerIdFromString(peerId);
    } catch {
      peerId = undefined;
    }
    if (peerId === undefined) {
      throw new ValidationError(
        'E_BOOTSTRAP_INVALID',
        `bootstrap address ${JSON.stringify(addr)} is not a multiaddr ending in /p2p/<peer id>`,
        {
          hint: 'Use the addresses from a join token made by `meshd init` or `meshd token`.',
          details: { path: 'bootstrap', addr },
        },
      );
    }
    const list = byPeer.get(peerId) ?? [];
    list.push(multiaddr(addr).toString());
    byPeer.set(peerId, list);
  }
  return [...byPeer].map(([peerId, list]) => ({ peerId, addrs: list }));
}
