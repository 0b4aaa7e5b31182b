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
  /** Connected peers this node has completed a document sync with (a refused connection never gets here). */
  syncedPeers: number;
  /** True once the daemon serves requests; for a joining node, also once it has synced with a peer. */
  ready: boolean;
  /** Set while the node has never reached a peer after `meshd join`. */
  joining: boolean;
  /** Epoch of the mesh key this node uses; `meshd node remove` rotates to the next one. */
  keyEpoch: number;
  /** Why this node cannot reach the mesh, when it knows: its key is stale, or it was removed. */
  keyProblem?: KeyProblem;
}

export interface KeyProblem {
  code: 'E_MESH_KEY_STALE' | 'E_NODE_REMOVED';
  message: string;
  hint: string;
  /** When it was last seen (ISO 8601). */
  at: string;
}

/** What `meshd node remove` did. */
export interface RemoveNodeResult {
  node: string;
  peerId: string;
  /** The epoch of the new mesh key. */
  keyEpoch: number;
  /** Members that received the new key from this node directly (they pass it on). */
  sentTo: string[];
  /** Members not connected to this node now: they get the key from a neighbour, or rejoin with a fresh token. */
  notReached: string[];
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
  cordoned: boolean;
  draining: boolean;
  /** Declared dead with `meshd node forget`: its best-effort pods may move. */
  forgotten: boolean;
  /** Removed for good with `meshd node remove`: every member refuses its peer id. */
  removed: boolean;
  /** What the node's operator permits pods there beyond the defaults (its policy file, as published). */
  policy: NodePolicyView;
}

/** A node's policy: the operator's half of the double opt-in. Empty lists and false allow nothing. */
export interface NodePolicyView {
  hostNetwork: boolean;
  unsandboxed: boolean;
  hostPaths: { path: string; readOnly: boolean }[];
  devices: string[];
  capabilities: string[];
}

export type NodeAction = 'cordon' | 'uncordon' | 'drain' | 'forget';

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

/** `meshd why pod NAME`: the pod's lifecycle graph as the node that runs it sees it. */
export interface WhyView {
  pod: string;
  /** The node that answered (the one running the pod, or this one). */
  node: string;
  /** One line per slot, or why the pod is not running. */
  summary: string;
  placement?: string;
  /** Set when the running node could not be asked: what the document last said. */
  unreachable?: string;
  slots: Array<{ slot: number; phase: string; summary: string; text: string; blame: string; dot: string }>;
  /** The marker of every step state, as the text report uses them (the dashboard draws the same). */
  markers: Readonly<Record<string, string>>;
  /** The raw report (journal snapshots) for `-o json`. */
  report: unknown;
}

export interface LogsQuery {
  container?: string;
  slot?: number;
  stream?: 'stdout' | 'stderr';
  tail?: number;
  follow?: boolean;
}

/** One line of the `/v1/events` stream. */
export interface MeshEvent {
  type: 'doc' | 'peers';
  at: number;
}

export interface ApplyRequest {
  /** The spec as the user wrote it (YAML or JSON). */
  text: string;
  /** Where it came from, for error messages (`web.yaml`, `<stdin>`). */
  file: string;
  actor: string;
  message?: string;
  /** Set by `meshd edit`: the spec must keep this name. */
  expectName?: string;
}

export interface ApplyResult {
  name: string;
  revision: string;
  /** False when the spec was identical: no revision was made. */
  changed: boolean;
}

export interface WriteRequest {
  actor: string;
  message?: string;
}

/** One slot of a pod (`replicas: 3` → three entries with the same name). */
export interface PodEntry {
  name: string;
  slot: number;
  /** The latest revision of the spec. */
  revision: string;
  /** The revision the node actually runs, once it runs. */
  runningRevision: string | null;
  phase: string;
  node: string | null;
  availability: string;
  replicas: number;
  pid: number | null;
  ports: Record<string, number>;
  restarts: number;
  lastError: string | null;
}

export interface RevisionView {
  revision: string;
  id: string;
  author: { peer: string; host: string; actor: string };
  kind: 'user' | 'system' | 'rollback' | 'delete';
  at: string;
  message: string | null;
  concurrent: boolean;
  rejected?: string;
  /** Its content was folded into a compaction base; `restorable` when rollback to it still works. */
  compacted?: boolean;
  restorable?: boolean;
  /**
   * Only on the one row that stands for revisions compacted so long ago that only their count is kept:
   * how many, and who made most of them (`revision` is then the span, e.g. `1..4200`).
   */
  dropped?: { count: number; lastAt: string; by: { actor: string; host: string; count: number }[] };
}

export interface PodDescription {
  name: string;
  revision: string;
  /** The user spec as YAML. */
  spec: string;
  status: Record<string, unknown>;
  slots: PodEntry[];
  /** The last revisions, oldest first. */
  revisions: RevisionView[];
}

export interface HistoryQuery {
  author?: string;
  excludeAuthor?: string;
  kind?: 'user' | 'system' | 'rollback' | 'delete';
}

export interface PodDiff {
  name: string;
  from: { revision: string; text: string };
  to: { revision: string; text: string };
}

export interface ControllersView {
  controllers: Array<{ name: string; owns: string[]; reads: string[] }>;
  /** Read→write cycles, as text (`a reads x (owned by b) → b reads y (owned by a) → a`). */
  cycles: string[];
}

/** `meshd dashboard`: where this node's dashboard listens; the URL carries its token (owner-only socket). */
export interface DashboardView {
  listening: boolean;
  /** `http://127.0.0.1:PORT/#token=…`, or null when not listening. */
  url: string | null;
  port: number | null;
  /** Why it is not listening (port taken, turned off). */
  problem: string | null;
  tokenFile: string;
}
