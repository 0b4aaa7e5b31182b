// Presence over direct streams: a signed beacon per tick to each connected peer, relays for the peers a neighbour cannot hear, RTT from echoes.

import type { Connection, PeerId, PrivateKey, Stream } from '@libp2p/interface';
import {
  InvalidDataLengthError,
  InvalidDataLengthLengthError,
  InvalidMessageLengthError,
  lpStream,
} from '@libp2p/utils';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { describeError, PeerProtocolError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { MeshLibp2p } from './libp2p-node.ts';
import {
  encodePresence,
  type OpenedPresence,
  openPresence,
  type Presence,
  PresenceVerifier,
} from './presence.ts';
import { decodePresenceFrame, encodePresenceFrame, type PresenceFrame, peerTag } from './presence-frame.ts';

/** What this node knows of one peer from its beacons. */
export interface PeerPresence {
  /** Node name from its presence; null until a beacon arrived. */
  name: string | null;
  /** Local clock time (ms) the last beacon of this peer arrived (directly or relayed). */
  lastSeenAt: number | null;
  /** Round trip on the direct link, from presence echoes; null while unknown or not connected. */
  rttMs: number | null;
  /** Addresses from its latest beacon that carried them. */
  addrs: string[];
  /** Highest beacon seq accepted; older beacons are replays and are dropped. */
  lastSeq: number;
  svHash: string | null;
}

export interface PresenceLinksOptions {
  libp2p: MeshLibp2p;
  /** This node's peer id. */
  selfId: string;
  /** Stream protocol of the presence link. */
  protocol: string;
  meshId: string;
  privateKey: PrivateKey;
  nodeName: string;
  clock: Clock;
  logger: Logger;
  /** One beacon per tick to every connected peer. */
  intervalMs: number;
  /** Largest beacon accepted; frames may hold this many bytes per relayed beacon. */
  maxMessageBytes: number;
  /** A connected peer from which no frame arrived for this long is disconnected (dead or wedged). */
  silentPeerCloseMs: number;
  /** Bound of opening a link stream. */
  openTimeoutMs: number;
  /** Dialable addresses of this node, for its beacons. */
  addrs(): string[];
  /** `docDigest` of this node's document, for its beacons. */
  digest(): string;
  /** A beacon newer than any before arrived for `peerId`, directly or relayed. */
  onBeacon(peerId: string, svHash: string): void;
  /** Something a peer listing shows changed: a first or renewed sighting, a name, addresses or an RTT. */
  onChange(): void;
  /** A peer sent something malformed or forged. */
  onReject(peer: string, err: unknown): void;
  /** Aborts every read and write when the node stops. */
  lifetime: AbortSignal;
  /** An abort signal that fires after `ms` on the injected clock (or when the node stops). */
  deadline(ms: number): { signal: AbortSignal; cancel(): void };
}

export interface PresenceLinkStats {
  bytesSent: number;
  bytesReceived: number;
  /** Ticks on which this node's beacon went to at least one peer. */
  beaconsSent: number;
  /** Beacons of other peers forwarded to neighbours that do not hear them directly. */
  beaconsRelayed: number;
}

/** One received beacon waiting to be relayed at the next tick; only the newest per origin is kept. */
export interface PendingRelay {
  origin: string;
  /** The neighbour it came from (the origin itself when it came directly). */
  via: string;
}

/** What a neighbour told us about itself: the peers it hears directly (undefined until it said). */
export interface NeighbourView {
  peerId: string;
  hearsDirectly: ReadonlySet<string> | undefined;
}

/**
 * Which pending beacons go to `neighbour`: never its own, never back where one came from, and never one of a
 * peer it hears directly. While a neighbour has not yet told what it hears, it gets everything.
 */
export function relaysFor<T extends PendingRelay>(
  pending: Iterable<T>,
  neighbour: NeighbourView,
  tagOf: (peerId: string) => string,
): T[] {
  const out: T[] = [];
  for (const r of pending) {
    if (r.origin === neighbour.peerId || r.via === neighbour.peerId) continue;
    if (neighbour.hearsDirectly?.has(tagOf(r.origin)) === true) continue;
    out.push(r);
  }
  return out;
}

interface OutLink {
  stream: Stream;
  write(bytes: Uint8Array): Promise<void>;
  writing: boolean;
  framesSent: number;
  directVersionSent: number;
}

interface Neighbour {
  peer: PeerId;
  connectedAt: number;
  out: OutLink | undefined;
  opening: boolean;
  openRetryAt: number;
  /** Open inbound link streams from this peer. */
  inbound: number;
  /** One of this peer's own beacons arrived on an inbound link (so it is in our `direct` set). */
  hearsDirect: boolean;
  lastFrameAt: number | undefined;
  /** This peer's latest own beacon and when it arrived, to echo in our next frame. */
  echo: { seq: number; at: number } | undefined;
  hearsDirectly: Set<string> | undefined;
}

interface Pending extends PendingRelay {
  bytes: Uint8Array;
  opened: OpenedPresence;
  /** Beacons that came directly were not verified (Noise authenticated the sender); relays must be. */
  verified: boolean;
}

/** Addresses go in every beacon where they changed, and at least every this many beacons. */
const addrsEveryBeacons = 10;
/** The `direct` set goes in every frame where it changed, and at least every this many frames on a link. */
const directEveryFrames = 10;
/** Own beacon send times kept for RTT echoes. */
const sentAtKept = 16;

/**
 * Presence travels on one long-lived stream per connected peer instead of gossip: with the full mesh of
 * connections meshd keeps, each beacon then crosses each link exactly once (gossip sent it ~D times per
 * node). The link is authenticated by Noise, so a beacon that comes straight from its origin is taken
 * without checking its signature; a relayed one is verified before it is used or passed on.
 */
export class PresenceLinks {
  private readonly opts: PresenceLinksOptions;
  private readonly log: Logger;
  private readonly verifier: PresenceVerifier;
  private readonly records = new Map<string, PeerPresence>();
  private readonly neighbours = new Map<string, Neighbour>();
  private readonly pending = new Map<string, Pending>();
  private readonly tags = new Map<string, string>();
  private readonly sentAt = new Map<number, number>();
  private readonly counters: PresenceLinkStats = {
    bytesSent: 0,
    bytesReceived: 0,
    beaconsSent: 0,
    beaconsRelayed: 0,
  };
  private readonly selfId: string;
  private seq: number;
  private timer: TimerHandle | undefined;
  private ticking = false;
  private stopped = false;
  private lastAddrs = '';
  private beaconsSinceAddrs = 0;
  private directKey = '';
  private directTags: string[] = [];
  private directVersion = 0;
  private lastTickAt: number;
  /** When this node's own ticks last ran late (its event loop was starved), so peers' silence proves nothing. */
  private lastStallAt = Number.NEGATIVE_INFINITY;

  constructor(opts: PresenceLinksOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.selfId = opts.selfId;
    this.verifier = new PresenceVerifier(opts.meshId);
    // starting from the clock keeps seq increasing across restarts, so replayed old beacons stay stale
    this.seq = Math.max(0, Math.floor(opts.clock.now()));
    this.lastTickAt = opts.clock.now();
  }

  async start(): Promise<void> {
    await this.opts.libp2p.handle(
      this.opts.protocol,
      (stream, connection) => this.onStream(stream, connection),
      {
        // one link per direction, plus room for a replacement while the old one closes
        maxInboundStreams: 2,
        maxOutboundStreams: 2,
      },
    );
    this.timer = this.opts.clock.setInterval(() => void this.tick(), this.opts.intervalMs);
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  stats(): PresenceLinkStats {
    return { ...this.counters };
  }

  /** Every peer heard of by presence. */
  known(): ReadonlyMap<string, Readonly<PeerPresence>> {
    return this.records;
  }

  /**
   * Whether a neighbour other than `source` might not have the message first published by the peer with
   * tag `originTag` and handed to us by `source`: false only when `source` is that publisher and every
   * other neighbour has said it hears the publisher directly (so the publisher's flood reached it too).
   */
  mayLack(originTag: string, source: string): boolean {
    if (this.tagOf(source) !== originTag) return true;
    for (const [peerId, n] of this.neighbours) {
      if (peerId === source) continue;
      if (n.hearsDirectly?.has(originTag) !== true) return true;
    }
    return false;
  }

  peerConnected(peer: PeerId): void {
    const id = peer.toString();
    if (this.neighbours.has(id)) return;
    const n: Neighbour = {
      peer,
      connectedAt: this.opts.clock.now(),
      out: undefined,
      opening: false,
      openRetryAt: 0,
      inbound: 0,
      hearsDirect: false,
      lastFrameAt: undefined,
      echo: undefined,
      hearsDirectly: undefined,
    };
    this.neighbours.set(id, n);
    this.openLink(id, n);
  }

  peerDisconnected(peerId: string): void {
    const n = this.neighbours.get(peerId);
    if (n === undefined) return;
    this.neighbours.delete(peerId);
    n.out?.stream.abort(new Error('peer disconnected'));
    const rec = this.records.get(peerId);
    if (rec !== undefined) rec.rttMs = null;
  }

  // ---- sending ----

  private async tick(): Promise<void> {
    if (this.stopped || this.ticking) return;
    this.ticking = true;
    try {
      const now = this.opts.clock.now();
      if (now - this.lastTickAt > 2 * this.opts.intervalMs) this.lastStallAt = now;
      this.lastTickAt = now;
      this.closeSilentPeers(now);
      if (this.neighbours.size === 0) return;
      const own = await this.ownBeacon(now);
      const direct = this.currentDirect();
      const relays = await this.verifiedRelays();
      let sent = false;
      for (const [peerId, n] of this.neighbours) {
        const out = n.out;
        if (out === undefined) {
          this.openLink(peerId, n);
          continue;
        }
        if (out.writing) continue; // a link that cannot keep up skips a beat rather than queueing stale beacons
        const relayed = relaysFor(relays, { peerId, hearsDirectly: n.hearsDirectly }, (p) => this.tagOf(p));
        const frame: PresenceFrame = { beacons: [own, ...relayed.map((r) => r.bytes)] };
        if (n.echo !== undefined) {
          frame.echo = { seq: n.echo.seq, holdMs: Math.max(0, now - n.echo.at) };
          n.echo = undefined;
        }
        if (out.directVersionSent !== this.directVersion || out.framesSent % directEveryFrames === 0) {
          frame.direct = direct;
          out.directVersionSent = this.directVersion;
        }
        this.counters.beaconsRelayed += relayed.length;
        this.send(peerId, n, out, encodePresenceFrame(frame));
        sent = true;
      }
      if (sent) this.counters.beaconsSent++;
    } catch (err) {
      this.log.warn('cannot send presence', { err: describeError(err) });
    } finally {
      this.ticking = false;
    }
  }

  private async ownBeacon(now: number): Promise<Uint8Array> {
    const seq = this.seq++;
    const presence: Presence = {
      v: 2,
      peerId: this.selfId,
      name: this.opts.nodeName,
      seq,
      sentAt: now,
      svHash: this.opts.digest(),
    };
    const addrs = this.opts.addrs();
    const addrsKey = addrs.join(' ');
    if (addrsKey !== this.lastAddrs || this.beaconsSinceAddrs >= addrsEveryBeacons - 1) {
      presence.addrs = addrs;
      this.lastAddrs = addrsKey;
      this.beaconsSinceAddrs = 0;
    } else {
      this.beaconsSinceAddrs++;
    }
    this.sentAt.set(seq, now);
    if (this.sentAt.size > sentAtKept) this.sentAt.delete(seq - sentAtKept);
    return encodePresence(presence, this.opts.privateKey, this.opts.meshId);
  }

  /** Tags of the peers whose own beacons reach us directly; bumps `directVersion` when the set changed. */
  private currentDirect(): string[] {
    const tags: string[] = [];
    for (const [peerId, n] of this.neighbours)
      if (n.hearsDirect && n.inbound > 0) tags.push(this.tagOf(peerId));
    tags.sort();
    const key = tags.join('');
    if (key !== this.directKey) {
      this.directKey = key;
      this.directTags = tags;
      this.directVersion++;
    }
    return this.directTags;
  }

  /** Takes the beacons received since the last tick that some neighbour needs, verifying each once. */
  private async verifiedRelays(): Promise<Pending[]> {
    const pending = [...this.pending.values()];
    this.pending.clear();
    const needed = new Set<Pending>();
    for (const [peerId, n] of this.neighbours) {
      for (const r of relaysFor(pending, { peerId, hearsDirectly: n.hearsDirectly }, (p) => this.tagOf(p)))
        needed.add(r);
    }
    const out: Pending[] = [];
    for (const r of needed) {
      if (!r.verified) {
        try {
          await this.verifier.verify(r.opened, r.via);
        } catch (err) {
          this.opts.onReject(r.via, err);
          continue;
        }
      }
      out.push(r);
    }
    return out;
  }

  private send(peerId: string, n: Neighbour, out: OutLink, bytes: Uint8Array): void {
    out.writing = true;
    out.framesSent++;
    out.write(bytes).then(
      () => {
        out.writing = false;
        this.counters.bytesSent += bytes.byteLength;
      },
      (err: unknown) => {
        out.writing = false;
        if (n.out === out) n.out = undefined;
        out.stream.abort(err instanceof Error ? err : new Error(String(err)));
        if (!this.stopped)
          this.log.debug('presence link write failed', { peer: peerId, err: describeError(err) });
      },
    );
  }

  private openLink(peerId: string, n: Neighbour): void {
    if (this.stopped || n.out !== undefined || n.opening || this.opts.clock.now() < n.openRetryAt) return;
    const connection = this.opts.libp2p.getConnections(n.peer).find((c) => c.status === 'open');
    if (connection === undefined) return;
    n.opening = true;
    const deadline = this.opts.deadline(this.opts.openTimeoutMs);
    connection.newStream(this.opts.protocol, { signal: deadline.signal }).then(
      (stream) => {
        deadline.cancel();
        n.opening = false;
        if (this.stopped || this.neighbours.get(peerId) !== n) {
          stream.abort(new Error('peer gone'));
          return;
        }
        const lp = lpStream(stream);
        const out: OutLink = {
          stream,
          write: (bytes) => lp.write(bytes, { signal: this.opts.lifetime }),
          writing: false,
          framesSent: 0,
          directVersionSent: -1,
        };
        n.out = out;
        stream.addEventListener('close', () => {
          if (n.out === out) n.out = undefined;
        });
      },
      (err: unknown) => {
        deadline.cancel();
        n.opening = false;
        // e.g. a peer without the protocol: try again after a few ticks, not on every one
        n.openRetryAt = this.opts.clock.now() + 5 * this.opts.intervalMs;
        if (!this.stopped)
          this.log.debug('cannot open presence link', { peer: peerId, err: describeError(err) });
      },
    );
  }

  /**
   * libp2p's connection monitor (a ping stream per connection every 10 s) is off: the presence link does
   * its job. A peer that sent nothing for `silentPeerCloseMs` is disconnected (unless this node itself was
   * stalled meanwhile); the redialer reconnects it if it is alive after all.
   */
  private closeSilentPeers(now: number): void {
    // a node whose own loop stalled has not read its sockets either: it must not blame its peers for that
    if (now - this.lastStallAt < this.opts.silentPeerCloseMs) return;
    for (const [peerId, n] of this.neighbours) {
      const since = n.lastFrameAt ?? n.connectedAt;
      if (now - since <= this.opts.silentPeerCloseMs) continue;
      this.log.info('closing connection to silent peer', { peer: peerId, silentMs: now - since });
      n.lastFrameAt = now; // one close per silence, not one per tick while it completes
      for (const c of this.opts.libp2p.getConnections(n.peer)) {
        c.close().catch((err: unknown) => c.abort(err instanceof Error ? err : new Error(String(err))));
      }
    }
  }

  // ---- receiving ----

  private onStream(stream: Stream, connection: Connection): void {
    const peerId = connection.remotePeer.toString();
    if (!this.neighbours.has(peerId)) this.peerConnected(connection.remotePeer);
    const n = this.neighbours.get(peerId);
    if (n === undefined) return;
    n.inbound++;
    void this.readLink(stream, peerId, n).finally(() => {
      n.inbound--;
      if (n.inbound === 0) n.hearsDirect = false;
    });
  }

  private async readLink(stream: Stream, peerId: string, n: Neighbour): Promise<void> {
    // a frame holds the sender's beacon and at most one relayed beacon per other peer
    const lp = lpStream(stream, { maxDataLength: this.opts.maxMessageBytes * 4 + 64 * 1024 });
    while (!this.stopped) {
      let bytes: Uint8Array;
      try {
        bytes = (await lp.read({ signal: this.opts.lifetime })).subarray();
      } catch (err) {
        if (
          err instanceof InvalidDataLengthError ||
          err instanceof InvalidDataLengthLengthError ||
          err instanceof InvalidMessageLengthError
        ) {
          this.opts.onReject(
            peerId,
            new PeerProtocolError(
              'E_PEER_FRAME_TOO_LARGE',
              `peer ${peerId} sent an oversized or malformed presence frame length (${err.message})`,
              {
                hint: 'The peer runs an incompatible or broken meshd; upgrade it or `meshd node forget` it.',
                details: { peer: peerId },
              },
            ),
          );
        }
        stream.abort(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      this.counters.bytesReceived += bytes.byteLength;
      await this.onFrame(peerId, n, bytes);
    }
  }

  private async onFrame(peerId: string, n: Neighbour, bytes: Uint8Array): Promise<void> {
    let frame: PresenceFrame;
    try {
      frame = decodePresenceFrame(bytes, peerId);
    } catch (err) {
      this.opts.onReject(peerId, err);
      return;
    }
    const now = this.opts.clock.now();
    n.lastFrameAt = now;
    if (frame.direct !== undefined) n.hearsDirectly = new Set(frame.direct);
    let changed = false;
    if (frame.echo !== undefined) {
      const sentAt = this.sentAt.get(frame.echo.seq);
      if (sentAt !== undefined) {
        const rec = this.record(peerId);
        const rtt = Math.max(0, now - sentAt - frame.echo.holdMs);
        changed ||= rec.rttMs === null;
        rec.rttMs = rtt;
      }
    }
    for (const beacon of frame.beacons) changed = (await this.onBeacon(beacon, peerId, n, now)) || changed;
    if (changed) this.opts.onChange();
  }

  /** Takes one beacon from neighbour `via`; returns whether a peer listing would now look different. */
  private async onBeacon(bytes: Uint8Array, via: string, n: Neighbour, now: number): Promise<boolean> {
    let opened: OpenedPresence;
    try {
      opened = openPresence(bytes, this.opts.maxMessageBytes, via);
    } catch (err) {
      this.opts.onReject(via, err);
      return false;
    }
    const p = opened.presence;
    if (p.peerId === this.selfId) return false;
    const rec = this.record(p.peerId);
    // signatures stop forgery but not replay: only a beacon newer than the last one counts
    if (p.seq <= rec.lastSeq) return false;
    const direct = p.peerId === via;
    if (!direct) {
      try {
        await this.verifier.verify(opened, via);
      } catch (err) {
        this.opts.onReject(via, err);
        return false;
      }
      if (p.seq <= rec.lastSeq) return false; // a newer one arrived while this one was checked
    } else {
      n.echo = { seq: p.seq, at: now };
      n.hearsDirect = true;
    }
    const changed =
      rec.lastSeenAt === null ||
      now - rec.lastSeenAt > 3 * this.opts.intervalMs ||
      rec.name !== p.name ||
      (p.addrs !== undefined && p.addrs.join(' ') !== rec.addrs.join(' '));
    rec.lastSeq = p.seq;
    rec.name = p.name;
    if (p.addrs !== undefined) rec.addrs = p.addrs;
    rec.lastSeenAt = now;
    rec.svHash = p.svHash;
    this.pending.set(p.peerId, { origin: p.peerId, via, bytes, opened, verified: !direct });
    this.opts.onBeacon(p.peerId, p.svHash);
    return changed;
  }

  private record(peerId: string): PeerPresence {
    let rec = this.records.get(peerId);
    if (rec === undefined) {
      rec = { name: null, lastSeenAt: null, rttMs: null, addrs: [], lastSeq: -1, svHash: null };
      this.records.set(peerId, rec);
    }
    return rec;
  }

  private tagOf(peerId: string): string {
    let tag = this.tags.get(peerId);
    if (tag === undefined) {
      if (this.tags.size >= 4096) this.tags.clear();
      tag = peerTag(peerId);
      this.tags.set(peerId, tag);
    }
    return tag;
  }
}
