// The scheduler's inputs: the small read-only shapes the daemon adapts the cluster document and presence to.

/** Default time an `ha` holder may be missing from presence before another peer takes its slots. */
export const DEFAULT_HA_GRACE_MS = 5_000;

/** Default absence after which a node counts as dead without `meshd node forget` (node config). */
export const DEFAULT_DEAD_AFTER_MS = 7 * 24 * 60 * 60 * 1000;

/** Per replica. `cpu` is in cores (0.25 = a quarter core); it is accounted in whole millicores. */
export interface Resources {
  readonly cpu: number;
  readonly memoryBytes: number;
}

/** A host path a pod mounts, or a prefix a node allows (`readOnly` on a node: only read-only mounts). */
export interface HostPathRule {
  readonly path: string;
  readonly readOnly?: boolean;
}

/** What a node's operator allows pods to relax (the node half of the double opt-in). */
export interface NodePolicy {
  readonly hostNetwork?: boolean;
  readonly unsandboxed?: boolean;
  /** Allowed path prefixes. */
  readonly hostPaths?: readonly HostPathRule[];
  /** Allowed device paths, exactly. */
  readonly devices?: readonly string[];
  /** Allowed Linux capabilities, exactly (`NET_BIND_SERVICE`). */
  readonly capabilities?: readonly string[];
}

/** What a pod asks to relax (the pod half of the double opt-in). */
export interface SecurityRequests {
  readonly hostNetwork?: boolean;
  readonly unsandboxed?: boolean;
  readonly hostPaths?: readonly HostPathRule[];
  readonly devices?: readonly string[];
  readonly capabilities?: readonly string[];
}

export interface NodeInfo {
  /** Human name (`nas`), what `placement.host` refers to. */
  readonly name: string;
  /** libp2p peer id: the identity that signs leases and that presence is keyed by. */
  readonly peerId: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly capacity: Resources;
  /** A cordoned node takes no new slots and keeps the ones it holds. */
  readonly cordoned: boolean;
  /** A draining node takes no new slots and releases the ones it holds. */
  readonly draining?: boolean;
  readonly policy: NodePolicy;
}

export type Availability = 'ha' | 'best-effort';

export interface Placement {
  /** Pins every replica to the node with this name: it runs there and nowhere else. */
  readonly host?: string;
  /** Every label must be present on the node with exactly this value. */
  readonly labels?: Readonly<Record<string, string>>;
}

export interface PodInfo {
  readonly name: string;
  readonly replicas: number;
  readonly availability: Availability;
  readonly placement: Placement;
  /** Per replica. */
  readonly resources: Resources;
  /**
   * How long the holder of an `ha` slot may be missing before the slot moves; also the window in which
   * a node counts as a live candidate for this pod's slots. Default `DEFAULT_HA_GRACE_MS`.
   */
  readonly haGraceMs?: number;
  readonly security: SecurityRequests;
}

/**
 * One claim record as stored in the document. The store keeps one entry per (slot, holder) — each peer
 * only ever overwrites its own entry — so concurrent claims all survive the merge and `resolveLease`
 * picks the winner (see docs/decisions/0004-lease-resolution.md).
 */
export interface Lease {
  /** `pod/NAME#i`. */
  readonly slot: string;
  /** Peer id of the claimer. */
  readonly holder: string;
  /** Fencing token: previous highest epoch seen for the slot + 1. Given to the pod as MESHD_LEASE_EPOCH. */
  readonly epoch: number;
  /** Claimer's clock at claim time (ms since the epoch). */
  readonly claimedAt: number;
  /** The claimer's rendezvous position for the slot at claim time; 0 is the most preferred node. */
  readonly rank?: number;
  /** Set when the holder gave the slot up (drain, scale-down, no longer fits); never valid again. */
  readonly releasedAt?: number;
  /** base64url signature by `holder` over `leaseSigningPayload(lease)`. */
  readonly sig: string;
}

/**
 * Everything the scheduler reads. The document parts (nodes, pods, leases, forgotten) are eventually
 * identical on every peer; presence is this peer's own observation.
 */
export interface ClusterView {
  /** One entry per peer id (the adapter deduplicates; the scheduler keeps the first by peer id, name). */
  readonly nodes: readonly NodeInfo[];
  /** One entry per pod name (the adapter deduplicates; the scheduler keeps the first by name). */
  readonly pods: readonly PodInfo[];
  /** Every lease entry as stored (all claimers of every slot). */
  readonly leases: readonly Lease[];
  /** Peer id → last time this peer heard from it (ms). */
  readonly presence: ReadonlyMap<string, number>;
  /**
   * Since when this peer has been observing presence (normally daemon start). Nobody counts as missing
   * for longer than this peer has been watching, so a freshly restarted peer never takes over slots
   * merely because it has not heard anyone yet.
   */
  readonly presenceSince: number;
  /** Peer ids declared dead with `meshd node forget`. */
  readonly forgotten: ReadonlySet<string>;
  /** Absence after which a node counts as dead. Default `DEFAULT_DEAD_AFTER_MS`. */
  readonly deadAfterMs?: number;
}
