// One peer of the mesh: a libp2p node that keeps the cluster Y.Doc replicated with every peer and tracks presence.

import { type SubscriptionChangeData, TopicValidatorResult } from '@libp2p/gossipsub';
import type { Connection, PeerId, PrivateKey, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import * as Y from 'yjs';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { describeError, MeshdError, PeerProtocolError, ValidationError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { runDocSync, type SyncByteCounts, type SyncParty } from './doc-sync.ts';
import { applyPeerUpdate, docDigest } from './doc-update.ts';
import { createMeshLibp2p, type MeshLibp2p } from './libp2p-node.ts';
import { fullPeerAddr, type MeshProtocols, meshProtocols, peerIdOfAddr } from './mesh-protocols.ts';
import { PeerRedialer, type RedialTarget } from './peer-redial.ts';
import { decodePresence, encodePresence, type Presence } from './presence.ts';

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
  /** How often connected peers are pinged for RTT. */
  pingIntervalMs: number;
  /** Largest doc update sent or accepted on gossip; bigger local updates reach peers by sync instead. */
  maxGossipBytes: number;
  /** Upper bound of one sync run, from opening the stream to applying the diff. */
  syncTimeoutMs: number;
  /** Least time between two digest-triggered (anti-entropy) syncs with one peer. */
  antiEntropyMinMs: number;
}

export const defaultMeshTuning: Readonly<MeshTuning> = Object.freeze({
  presenceIntervalMs: 1000,
  dialTimeoutMs: 5000,
  redialMinMs: 1000,
  redialMaxMs: 60_000,
  maxMessageBytes: 1024 * 1024,
  maxSyncBytes: 64 * 1024 * 1024,
  pingIntervalMs: 5000,
  maxGossipBytes: 1024 * 1024,
  syncTimeoutMs: 60_000,
  antiEntropyMinMs: 2000,
});

export interface MeshNodeOptions {
  /** Ed25519 identity key, persisted by the daemon; the peer id derives from it. */
  privateKey: PrivateKey;
  /** The 32 random bytes of the mesh pre-shared key. */
  psk: Uint8Array;
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
  /** Local clock time (ms) the last presence beacon of this peer arrived. */
  lastSeenAt: number | null;
  rttMs: number | null;
  /** Dialable multiaddrs, each ending in /p2p/<peerId>. */
  addrs: string[];
}

export interface MeshStats {
  /** meshd payload bytes written: sync frames, plus gossip data times the peers it was sent to. */
  bytesSent: number;
  /** meshd payload bytes read: sync frames, plus each distinct gossip message once. */
  bytesReceived: number;
  /** Doc updates this node published on gossip (local edits and updates learned by sync). */
  gossipPublished: number;
  presencePublished: number;
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

interface PeerRecord {
  name: string | null;
  lastSeenAt: number | null;
  rttMs: number | null;
  presenceAddrs: string[];
  /** Highest presence seq seen; older beacons are replays and are dropped. */
  lastSeq: number;
  svHash: string | null;
}

interface Deadline {
  signal: AbortSignal;
  cancel(): void;
}

export class MeshNode {
  readonly peerId: string;
  /** Dispatches 'peers' (Event) when presence or connections change and 'synced' (CustomEvent<SyncedDetail>). */
  readonly events: EventTarget = new EventTarget();

  private readonly opts: MeshNodeOptions;
  private readonly tuning: MeshTuning;
  private readonly names: MeshProtocols;
  private readonly libp2p: MeshLibp2p;
  private readonly log: Logger;
  private readonly bootstrapTargets: RedialTarget[];
  private readonly redialer: PeerRedialer;
  private readonly records = new Map<string, PeerRecord>();
  private readonly syncedPeers = new Set<string>();
  /** Sync runs in flight per peer (one we started plus any the peer started). */
  private readonly syncing = new Map<string, number>();
  /** Peers whose subscription arrived while a sync with them ran: checked again when it ends. */
  private readonly resyncWanted = new Set<string>();
  private readonly lastSyncAt = new Map<string, number>();
  /** `docVersion` when the last sync with each peer started. */
  private readonly syncedVersion = new Map<string, number>();
  private readonly syncWaiters = new Set<{ resolve(): void; reject(err: Error): void }>();
  private readonly lifetime = new AbortController();
  private readonly counters: MeshStats = {
    bytesSent: 0,
    bytesReceived: 0,
    gossipPublished: 0,
    presencePublished: 0,
    syncRuns: 0,
    syncFailures: 0,
    antiEntropySyncs: 0,
    rejectedMessages: 0,
  };
  private timers: TimerHandle[] = [];
  private pendingUpdates: Uint8Array[] = [];
  /** True only while a sync-learned update is being applied: its 'update' event must be re-published. */
  private republishing = false;
  private digest: string | undefined;
  /** Counts document updates of any origin; tells whether a peer may have missed one since our last sync. */
  private docVersion = 0;
  private seq: number;
  private peersEventQueued = false;
  private pingRunning = false;
  private stopped = false;

  private constructor(
    opts: MeshNodeOptions,
    tuning: MeshTuning,
    names: MeshProtocols,
    libp2p: MeshLibp2p,
    bootstrap: RedialTarget[],
  ) {
    this.opts = opts;
    this.tuning = tuning;
    this.names = names;
    this.libp2p = libp2p;
    this.peerId = libp2p.peerId.toString();
    this.log = opts.logger;
    this.bootstrapTargets = bootstrap;
    // starting from the clock keeps seq increasing across restarts, so replayed old beacons stay stale
    this.seq = Math.max(0, Math.floor(opts.clock.now()));
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
    let libp2p: MeshLibp2p;
    try {
      libp2p = await createMeshLibp2p({
        privateKey: opts.privateKey,
        psk: opts.psk,
        listen: opts.listen,
        dialTimeoutMs: tuning.dialTimeoutMs,
        topics: [names.docTopic, names.presenceTopic],
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
    const node = new MeshNode(
      opts,
      tuning,
      names,
      libp2p,
      bootstrap.filter((t) => t.peerId !== self),
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
    const connected = new Set(this.libp2p.getPeers().map((p) => p.toString()));
    const addrs = new Map<string, Set<string>>();
    const addAddrs = (peerId: string, list: readonly string[]): void => {
      if (peerId === this.peerId) return;
      let set = addrs.get(peerId);
      if (set === undefined) {
        set = new Set();
        addrs.set(peerId, set);
      }
      for (const a of list) {
        const full = fullPeerAddr(a, peerId);
        if (full !== undefined) set.add(full);
      }
    };
    for (const [peerId, rec] of this.records) addAddrs(peerId, rec.presenceAddrs);
    for (const peerId of connected) addAddrs(peerId, []);
    for (const t of this.bootstrapTargets) addAddrs(t.peerId, t.addrs);
    for (const k of this.safeKnownPeers()) addAddrs(k.peerId, k.addrs);
    return [...addrs].map(([peerId, set]) => {
      const rec = this.records.get(peerId);
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

  connectedCount(): number {
    return this.libp2p.getPeers().length;
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
    return { ...this.counters };
  }

  /** Stops presence, redials and syncs, closes every connection. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) t.cancel();
    this.timers = [];
    this.redialer.stop();
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
    pubsub.topicValidators.set(this.names.docTopic, (peer, msg) => this.onDocGossip(peer, msg.data));
    pubsub.topicValidators.set(this.names.presenceTopic, (peer, msg) =>
      this.onPresenceGossip(peer, msg.data),
    );
    this.libp2p.addEventListener('peer:connect', (evt) => this.onPeerConnect(evt.detail));
    this.libp2p.addEventListener('peer:disconnect', (evt) => this.onPeerDisconnect(evt.detail));
    this.libp2p.addEventListener('connection:open', (evt) => this.onConnectionOpen(evt.detail));
    pubsub.addEventListener('subscription-change', (evt) => this.onSubscriptionChange(evt.detail));
    this.opts.doc.on('update', this.onDocUpdate);
    await this.libp2p.start();
    pubsub.subscribe(this.names.docTopic);
    pubsub.subscribe(this.names.presenceTopic);
    const { clock } = this.opts;
    this.timers.push(clock.setInterval(() => void this.publishPresence(), this.tuning.presenceIntervalMs));
    this.timers.push(clock.setInterval(() => void this.pingPeers(), this.tuning.pingIntervalMs));
    this.redialer.start();
    this.log.debug('mesh listening', {
      peer: this.peerId,
      addrs: this.addrs(),
      bootstrap: this.bootstrapTargets.length,
    });
  }

  // ---- connections and redial ----

  private isConnected(peerId: string): boolean {
    try {
      return this.libp2p.getConnections(peerIdFromString(peerId)).some((c) => c.status === 'open');
    } catch {
      return false;
    }
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
      if (k.peerId === this.peerId || targets.has(k.peerId)) continue;
      const addrs = k.addrs.map((a) => fullPeerAddr(a, k.peerId)).filter((a): a is string => a !== undefined);
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
    this.log.debug('peer connected', { peer: id });
    this.peersChanged();
  }

  private onPeerDisconnect(peer: PeerId): void {
    const id = peer.toString();
    this.syncedPeers.delete(id);
    const rec = this.records.get(id);
    if (rec !== undefined) rec.rttMs = null;
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
    if ((await this.publish(this.names.docTopic, merged)) > 0) this.counters.gossipPublished++;
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

  private onDocGossip(peer: PeerId, data: Uint8Array): TopicValidatorResult {
    const from = peer.toString();
    this.counters.bytesReceived += data.byteLength;
    if (data.byteLength > this.tuning.maxGossipBytes) {
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
      this.applyFromPeer(data, from, false);
      return TopicValidatorResult.Accept;
    } catch (err) {
      this.reject(from, err);
      return TopicValidatorResult.Reject;
    }
  }

  private reject(peer: string, err: unknown): void {
    this.counters.rejectedMessages++;
    this.log.warn('rejected message from peer', {
      peer,
      code: err instanceof MeshdError ? err.code : 'E_PEER_PROTOCOL',
      err: describeError(err),
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

  private async publishPresence(): Promise<void> {
    if (this.stopped) return;
    try {
      const presence: Presence = {
        v: 1,
        peerId: this.peerId,
        name: this.opts.nodeName,
        seq: this.seq++,
        sentAt: this.opts.clock.now(),
        addrs: this.addrs(),
        svHash: this.currentDigest(),
      };
      const bytes = await encodePresence(presence, this.opts.privateKey, this.opts.meshId);
      if ((await this.publish(this.names.presenceTopic, bytes)) > 0) this.counters.presencePublished++;
    } catch (err) {
      this.log.warn('cannot publish presence', { err: describeError(err) });
    }
  }

  private async onPresenceGossip(peer: PeerId, data: Uint8Array): Promise<TopicValidatorResult> {
    const from = peer.toString();
    this.counters.bytesReceived += data.byteLength;
    let presence: Presence;
    try {
      presence = await decodePresence(data, this.opts.meshId, this.tuning.maxMessageBytes, from);
    } catch (err) {
      this.reject(from, err);
      return TopicValidatorResult.Reject;
    }
    if (presence.peerId === this.peerId) return TopicValidatorResult.Ignore;
    const rec = this.record(presence.peerId);
    // signatures stop forgery but not replay: only a beacon newer than the last one counts
    if (presence.seq <= rec.lastSeq) return TopicValidatorResult.Ignore;
    rec.lastSeq = presence.seq;
    rec.name = presence.name;
    rec.presenceAddrs = presence.addrs;
    rec.lastSeenAt = this.opts.clock.now();
    rec.svHash = presence.svHash;
    this.peersChanged();
    this.maybeAntiEntropy(presence.peerId, presence.svHash);
    return TopicValidatorResult.Accept;
  }

  /** Pulls a sync from a connected peer whose digest differs from ours, at most once per `antiEntropyMinMs`. */
  private maybeAntiEntropy(peerId: string, theirDigest: string): void {
    if (this.stopped || theirDigest === this.currentDigest()) return;
    if (this.syncing.has(peerId) || !this.isConnected(peerId)) return;
    const now = this.opts.clock.now();
    if (now - (this.lastSyncAt.get(peerId) ?? Number.NEGATIVE_INFINITY) < this.tuning.antiEntropyMinMs)
      return;
    this.lastSyncAt.set(peerId, now);
    this.counters.antiEntropySyncs++;
    void this.syncWith(peerId, 'anti-entropy');
  }

  private record(peerId: string): PeerRecord {
    let rec = this.records.get(peerId);
    if (rec === undefined) {
      rec = { name: null, lastSeenAt: null, rttMs: null, presenceAddrs: [], lastSeq: -1, svHash: null };
      this.records.set(peerId, rec);
    }
    return rec;
  }

  private async pingPeers(): Promise<void> {
    if (this.stopped || this.pingRunning) return;
    this.pingRunning = true;
    try {
      await Promise.all(
        this.libp2p.getPeers().map(async (peer) => {
          const deadline = this.deadline(Math.min(this.tuning.pingIntervalMs, this.tuning.dialTimeoutMs));
          const rec = this.record(peer.toString());
          try {
            rec.rttMs = await this.libp2p.services.ping.ping(peer, { signal: deadline.signal });
          } catch (err) {
            rec.rttMs = null;
            if (!this.stopped)
              this.log.debug('ping failed', { peer: peer.toString(), err: describeError(err) });
          } finally {
            deadline.cancel();
          }
        }),
      );
      this.peersChanged();
    } finally {
      this.pingRunning = false;
    }
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
