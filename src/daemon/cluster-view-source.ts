// Adapts the cluster document (nodes, pods, leases, forgotten) and this peer's presence to the scheduler's ClusterView.

import {
  type ClusterView,
  DEFAULT_DEAD_AFTER_MS,
  type Lease,
  type NodeInfo,
  type NodePolicy,
  type PodInfo,
  type SecurityRequests,
} from '../scheduler/cluster-view.ts';
import type { ClusterDoc, NodePolicyRecord } from '../state/cluster-doc.ts';
import type { Materialized } from '../state/materialize.ts';
import { type Pod, parseCpu, parseMemory, podFromStored } from '../state/pod-spec.ts';

/** This peer's presence observations: peer id → local time (ms) it was last heard from. */
export interface PresenceSource {
  lastSeen(): ReadonlyMap<string, number>;
}

/** The pods of the document (the ObjectStore). */
export interface PodSource {
  list(kind: string): Materialized[];
}

/** The lease entries of the document (the LeaseStore). */
export interface LeaseSource {
  all(): Lease[];
}

/** A document entry the view leaves out, and why (`meshd why` prints it). */
export interface SkippedEntry {
  /** `pod/web`, `nodes/<peerId>/policy`. */
  readonly key: string;
  readonly reason: string;
}

export interface ClusterViewSourceDeps {
  readonly cluster: ClusterDoc;
  readonly pods: PodSource;
  readonly leases: LeaseSource;
  readonly presence: PresenceSource;
  /** Since when this peer has been observing presence: the daemon's start time. */
  readonly presenceSince: number;
  /** Absence after which a node counts as dead (node config). Default 7 days. */
  readonly deadAfterMs?: number;
}

/** `CAP_NET_ADMIN` and `NET_ADMIN` name the same capability; the scheduler compares them exactly. */
function capabilityName(c: string): string {
  return c.startsWith('CAP_') ? c.slice(4) : c;
}

/** The scheduler's node policy of a stored one (capabilities without the `CAP_` prefix). */
export function nodePolicyOf(p: NodePolicyRecord): NodePolicy {
  const out: {
    -readonly [K in keyof NodePolicy]: NodePolicy[K];
  } = {};
  if (p.hostNetwork !== undefined) out.hostNetwork = p.hostNetwork;
  if (p.unsandboxed !== undefined) out.unsandboxed = p.unsandboxed;
  if (p.hostPaths !== undefined) out.hostPaths = p.hostPaths;
  if (p.devices !== undefined) out.devices = p.devices;
  if (p.capabilities !== undefined) out.capabilities = p.capabilities.map(capabilityName);
  return out;
}

/**
 * The scheduler's view of a valid user pod: resources per replica are the sum over its containers (cpu in
 * cores, memory in bytes; a container without requests asks for nothing), `haGraceSeconds` in ms.
 */
export function podInfoOf(pod: Pod): PodInfo {
  let cpuMillis = 0;
  let memoryBytes = 0;
  for (const c of pod.spec.containers) {
    cpuMillis += c.resources?.cpu === undefined ? 0 : (parseCpu(c.resources.cpu) ?? 0);
    memoryBytes += c.resources?.memory === undefined ? 0 : (parseMemory(c.resources.memory) ?? 0);
  }
  const sec = pod.spec.security ?? {};
  const security: {
    -readonly [K in keyof SecurityRequests]: SecurityRequests[K];
  } = {};
  if (sec.hostNetwork !== undefined) security.hostNetwork = sec.hostNetwork;
  if (sec.unsandboxed !== undefined) security.unsandboxed = sec.unsandboxed;
  if (sec.hostPaths !== undefined)
    security.hostPaths = sec.hostPaths.map((h) => ({ path: h.path, readOnly: h.readOnly }));
  if (sec.devices !== undefined) security.devices = sec.devices;
  if (sec.capabilities !== undefined) security.capabilities = sec.capabilities.map(capabilityName);
  const placement = pod.spec.placement ?? {};
  const info: PodInfo = {
    name: pod.name,
    replicas: pod.spec.replicas,
    availability: pod.spec.availability,
    placement: {
      ...(placement.host === undefined ? {} : { host: placement.host }),
      ...(placement.labels === undefined ? {} : { labels: placement.labels }),
    },
    resources: { cpu: cpuMillis / 1000, memoryBytes },
    security,
  };
  const grace = pod.spec.haGraceSeconds;
  return grace === undefined ? info : { ...info, haGraceMs: grace * 1000 };
}

/** Builds the scheduler's ClusterView from the document and presence, on demand (nothing is cached here). */
export class ClusterViewSource {
  private readonly deps: ClusterViewSourceDeps;
  /**
   * The scheduler's view of each pod by materialized object: the ObjectStore shares one object until the
   * pod's records change, so an unchanged pod is not parsed and validated again at every decision.
   */
  private readonly podViews = new WeakMap<Materialized, { info: PodInfo } | { error: string }>();

  constructor(deps: ClusterViewSourceDeps) {
    this.deps = deps;
  }

  get presenceSince(): number {
    return this.deps.presenceSince;
  }

  /** The current view, and the document entries it had to leave out (invalid pods, bad node fields). */
  read(): { view: ClusterView; skipped: SkippedEntry[] } {
    const { cluster, pods, leases, presence } = this.deps;
    const skipped: SkippedEntry[] = [];
    const { nodes: records, rejected } = cluster.nodes();
    for (const r of rejected) skipped.push({ key: r.key, reason: r.reason });
    const nodes: NodeInfo[] = records.map((rec) => {
      const controls = cluster.nodeControls(rec.peerId);
      return {
        name: rec.name,
        peerId: rec.peerId,
        labels: rec.labels,
        capacity: { cpu: rec.capacity.cpu, memoryBytes: rec.capacity.memoryBytes },
        cordoned: controls.cordoned,
        draining: controls.draining,
        policy: nodePolicyOf(controls.policy),
      };
    });
    const podInfos: PodInfo[] = [];
    for (const m of pods.list('pod')) {
      // Deleted pods are not listed; materialize only yields valid objects, but a schema change between
      // versions could still make one unreadable here: skip it rather than schedule a guess.
      if (m.object === null) continue;
      let v = this.podViews.get(m);
      if (v === undefined) {
        try {
          v = { info: podInfoOf(podFromStored(m.object)) };
        } catch (err) {
          v = { error: err instanceof Error ? err.message : String(err) };
        }
        this.podViews.set(m, v);
      }
      if ('info' in v) podInfos.push(v.info);
      else skipped.push({ key: m.key, reason: v.error });
    }
    const view: ClusterView = {
      nodes,
      pods: podInfos,
      leases: leases.all(),
      presence: new Map(presence.lastSeen()),
      presenceSince: this.deps.presenceSince,
      forgotten: new Set(cluster.forgotten().map((f) => f.peerId)),
      deadAfterMs: this.deps.deadAfterMs ?? DEFAULT_DEAD_AFTER_MS,
    };
    return { view, skipped };
  }

  view(): ClusterView {
    return this.read().view;
  }
}
