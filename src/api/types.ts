// Shapes of the local API: what the daemon answers and the CLI prints (the `-o json` contract).

export interface StatusView {
  name: string;
  peerId: string;
  mesh: { id: string; name: string };
  addrs: string[];
  version: string;
  dataDir: string;
  pid: number;
  connectedPeers: number;
  /** True once the daemon serves requests; for a joining node, also once it has synced with a peer. */
  ready: boolean;
  /** Set while the node has never reached a peer after `meshd join`. */
  joining: boolean;
}

export interface PeerEntry {
  name: string | null;
  peerId: string;
  connected: boolean;
  /** Milliseconds since the last presence heartbeat, or null if never heard. */
  lastSeenMs: number | null;
  rttMs: number | null;
  addrs: string[];
}

export type NodeState = 'ready' | 'unreachable';

export interface NodeEntry {
  name: string;
  peerId: string;
  state: NodeState;
  self: boolean;
  labels: Record<string, string>;
  capacity: { cpu: number; memoryBytes: number };
  addrs: string[];
  version: string;
  joinedAt: string;
}

export interface LabelRequest {
  set: Record<string, string>;
  remove: string[];
}

/** Counters for benchmarks and troubleshooting (`GET /v1/stats`). */
export interface StatsView {
  mesh: {
    bytesSent: number;
    bytesReceived: number;
    gossipPublished: number;
    syncRuns: number;
    rejectedMessages: number;
  };
  store: { logUpdates: number; logBytes: number; snapshotBytes: number; fileBytes: number };
  process: { rssBytes: number; heapUsedBytes: number; uptimeMs: number };
}

/** One line of the `/v1/events` stream. */
export interface MeshEvent {
  type: 'doc' | 'peers';
  at: number;
}
