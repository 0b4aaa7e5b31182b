// The composition root: reads the data dir, wires store, document, mesh and API, and owns start/stop order.

import { getCompileCacheDir } from 'node:module';
import { availableParallelism, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import * as Y from 'yjs';
import { DashboardServer } from '../api/dashboard-server.ts';
import type { ApiHandlers } from '../api/server.ts';
import { ApiServer } from '../api/server.ts';
import type {
  KeyProblem,
  LabelRequest,
  LogsQuery,
  MeshEvent,
  NodeAction,
  NodeEntry,
  PeerEntry,
  RemoveNodeResult,
  StatsView,
  StatusView,
  WhyView,
} from '../api/types.ts';
import { loadPluginSteps } from '../lifecycle/plugin-steps.ts';
import { encodeJoinToken } from '../mesh/join-token.ts';
import type { MeshKey } from '../mesh/mesh-key.ts';
import { type MeshNode, MeshNode as MeshNodeImpl, type MeshTuning, remoteOrigin } from '../mesh/mesh-node.ts';
import type { PeerQuestion } from '../mesh/peer-query.ts';
import { type EpochMismatch, epochMismatchError } from '../mesh/pnet-protector.ts';
import type { RuntimeDriver } from '../runtime/driver.ts';
import { MockDriver } from '../runtime/mock/mock-driver.ts';
import { createProcessDriver } from '../runtime/process/process-driver.ts';
import type { Clock } from '../shared/clock.ts';
import { describeError, MeshdError, NotFoundError } from '../shared/errors.ts';
import { LogThrottle } from '../shared/log-throttle.ts';
import type { Logger } from '../shared/logger.ts';
import { meshdVersion } from '../shared/version.ts';
import { ClusterDoc, type NodeRecord } from '../state/cluster-doc.ts';
import { DocStore } from '../state/doc-store.ts';
import { FieldOwnership } from '../state/field-ownership.ts';
import { ObjectStore } from '../state/object-store.ts';
import { podValidators } from '../state/pod-spec.ts';
import { ed25519Signer, peerIdVerifier } from '../state/revision-records.ts';
import { ClaimLoop, formatExplanation } from './claim-loop.ts';
import { ClusterViewSource } from './cluster-view-source.ts';
import type { DataDir, NodeConfig } from './data-dir.ts';
import { ed25519LeaseSigner, LeaseStore, leaseWriteOrigin, peerIdLeaseVerifier } from './lease-store.ts';
import { type LoadedNodePolicy, loadNodePolicy } from './node-policy-file.ts';
import { PodAgent, type WhyReport } from './pod-agent.ts';
import { PodService } from './pod-service.ts';
import { whyView } from './why-view.ts';

export interface DaemonOptions {
  dataDir: DataDir;
  logger: Logger;
  clock: Clock;
  tuning?: Partial<MeshTuning>;
  /** A peer is shown `unreachable` once its last presence heartbeat is older than this. */
  unreachableAfterMs?: number;
}

const selfRefreshMs = 30_000;
const maxTokenPeers = 3;

export class Daemon {
  readonly config: NodeConfig;
  readonly stopped: Promise<void>;
  private readonly opts: DaemonOptions;
  private readonly logger: Logger;
  private readonly doc: Y.Doc;
  private readonly cluster: ClusterDoc;
  private readonly store: DocStore;
  /** The latest handshake refused for a key epoch mismatch, or this node's removal, for `meshd status`. */
  private keyProblem: KeyProblem | undefined;
  private mesh: MeshNode | undefined;
  private objects: ObjectStore | undefined;
  private pods: PodService | undefined;
  private agent: PodAgent | undefined;
  /** This node's policy file, read at start and on SIGHUP: the operator's half of the double opt-in. */
  private nodePolicy: LoadedNodePolicy;
  private claims: ClaimLoop | undefined;
  private api: ApiServer | undefined;
  private dashboard: DashboardServer | undefined;
  private releaseLock: (() => void) | undefined;
  private joining: boolean;
  /** Per mismatch code: when it was last logged and how many were left out since. */
  /** Anyone can open a connection and claim an epoch: one line per kind a minute. */
  private readonly mismatchLog: LogThrottle;
  private stopping: Promise<void> | undefined;
  private resolveStopped: () => void = () => {};
  private readonly cleanups: Array<() => void> = [];

  private constructor(
    opts: DaemonOptions,
    config: NodeConfig,
    store: DocStore,
    doc: Y.Doc,
    nodePolicy: LoadedNodePolicy,
  ) {
    this.opts = opts;
    this.config = config;
    this.store = store;
    this.doc = doc;
    this.nodePolicy = nodePolicy;
    this.mismatchLog = new LogThrottle({ clock: opts.clock, burst: 1 });
    this.cluster = new ClusterDoc(doc);
    this.logger = opts.logger.child({ node: config.nodeName });
    this.joining = false;
    this.stopped = new Promise((resolve) => {
      this.resolveStopped = resolve;
    });
  }

  /** Starts every part in order; on failure, stops what was started and rethrows. */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    const dir = opts.dataDir;
    const config = dir.readConfig();
    // A bad policy file stops the start here: it is never read as "nothing" or "everything" allowed.
    const nodePolicy = loadNodePolicy({ dataDir: dir.path, file: config.policyFile });
    dir.ensure();
    const privateKey = dir.readIdentity();
    const key = dir.readMeshKey();
    const releaseLock = dir.acquireLock();
    let daemon: Daemon | undefined;
    try {
      const store = DocStore.open(dir.stateDb, {
        logger: opts.logger,
        clock: opts.clock,
        // what peers sent (they still hold it) and this node's lease writes (re-decided after a crash) may
        // share one fsync; an edit made here is on disk before the API answers
        groupCommit: (origin) => origin === remoteOrigin || origin === leaseWriteOrigin,
      });
      const doc = new Y.Doc();
      const loaded = store.load(doc);
      store.attach(doc);
      daemon = new Daemon(opts, config, store, doc, nodePolicy);
      daemon.releaseLock = releaseLock;
      daemon.logger.info('node policy', { file: nodePolicy.file, exists: nodePolicy.exists });
      daemon.logger.info('document loaded', { ...loaded });
      await daemon.startParts(privateKey, key);
      return daemon;
    } catch (err) {
      if (daemon !== undefined) await daemon.stop();
      else releaseLock();
      throw err;
    }
  }

  private async startParts(
    privateKey: Parameters<typeof MeshNodeImpl.create>[0]['privateKey'],
    key: MeshKey,
  ): Promise<void> {
    const { config, cluster } = this;
    if (cluster.meshInfo() === undefined && config.bootstrap.length === 0) {
      // The founding node writes the mesh identity once; joiners learn it by sync.
      cluster.setMeshInfo({ id: config.meshId, name: config.meshName });
    }
    const peerId = (await import('@libp2p/peer-id')).peerIdFromPrivateKey(privateKey).toString();
    this.joining = cluster.nodeByPeerId(peerId) === undefined && config.bootstrap.length > 0;

    this.mesh = await MeshNodeImpl.create({
      privateKey,
      key,
      persistKey: (key) => this.persistKey(key),
      isRemoved: (id) => cluster.isRemoved(id),
      onEpochMismatch: (m) => this.onEpochMismatch(m),
      onRemoved: (rotation) => {
        this.keyProblem = removedProblem(`peer ${rotation.origin}`, this.opts.clock.now());
      },
      meshId: config.meshId,
      nodeName: config.nodeName,
      listen: config.listen,
      doc: this.doc,
      bootstrap: config.bootstrap,
      knownPeers: () =>
        cluster
          .nodes()
          .nodes.filter((n) => n.peerId !== peerId)
          .map((n) => ({ peerId: n.peerId, addrs: n.addrs })),
      logger: this.logger,
      clock: this.opts.clock,
      ...(this.opts.tuning === undefined ? {} : { tuning: this.opts.tuning }),
    });
    const mesh = this.mesh;
    // A removal learned from the document (made elsewhere, or while this node was away) closes the removed
    // peer's connections here too; the gater refuses it from then on.
    let removedSeen = 0;
    const refuseRemoved = () => {
      const removed = cluster.removedPeerIds();
      // entries are never deleted: only a longer list is news (this runs on every node-level change)
      if (removed.length === removedSeen) return;
      removedSeen = removed.length;
      if (removed.includes(mesh.peerId) && this.keyProblem?.code !== 'E_NODE_REMOVED')
        this.keyProblem = removedProblem('another member', this.opts.clock.now());
      void mesh.refuse(removed);
    };
    refuseRemoved();
    this.cleanups.push(cluster.onChange(refuseRemoved));

    if (this.joining) {
      // Our node record is written only after the first sync, so a name clash is seen before it happens.
      const onSynced = () => {
        if (!this.joining) return;
        const clash = cluster.nodeByName(config.nodeName);
        if (clash !== undefined && clash.peerId !== mesh.peerId) {
          this.logger.error('node name already taken', { name: config.nodeName, holder: clash.peerId });
          this.fatal(
            new MeshdError(
              'E_NAME_TAKEN',
              `node name "${config.nodeName}" is already used by peer ${clash.peerId}`,
              {
                hint: 'Join again with another name: `meshd join TOKEN --node-name NAME` (and a fresh --data-dir).',
              },
            ),
          );
          return;
        }
        this.joining = false;
        this.refreshSelf();
        this.logger.info('joined mesh', { mesh: config.meshId });
      };
      mesh.events.addEventListener('synced', onSynced);
      this.cleanups.push(() => mesh.events.removeEventListener('synced', onSynced));
    } else {
      this.refreshSelf();
    }
    const refresh = this.opts.clock.setInterval(() => {
      if (!this.joining) this.refreshSelf();
    }, selfRefreshMs);
    this.cleanups.push(() => refresh.cancel());

    const ownership = FieldOwnership.withBuiltins();
    this.objects = new ObjectStore(this.doc, {
      signer: ed25519Signer(privateKey),
      verifier: peerIdVerifier(),
      ownership,
      clock: this.opts.clock,
      host: config.nodeName,
      validators: podValidators,
    });
    this.pods = new PodService({
      store: this.objects,
      ownership,
      peerId: mesh.peerId,
      host: config.nodeName,
      assertDurable: () => this.store.assertDurable(),
    });
    // Scheduling: every peer claims the slots it is the best live candidate for (no leader, no quorum).
    const leaseVerifier = peerIdLeaseVerifier();
    const leases = new LeaseStore(this.doc, ed25519LeaseSigner(privateKey), leaseVerifier);
    const objects = this.objects;
    this.claims = new ClaimLoop({
      source: new ClusterViewSource({
        cluster,
        pods: objects,
        leases,
        presenceSince: this.opts.clock.now(),
        presence: { lastSeen: () => mesh.lastSeen() },
        ...(config.deadAfterMs === undefined ? {} : { deadAfterMs: config.deadAfterMs }),
      }),
      leases,
      verifier: leaseVerifier,
      clock: this.opts.clock,
      logger: this.logger,
      feeds: [(l) => cluster.onChange(l), (l) => objects.onChange(() => l())],
    });
    const claims = this.claims;
    const poke = () => claims.poke();
    mesh.events.addEventListener('peers', poke);
    this.cleanups.push(() => mesh.events.removeEventListener('peers', poke));
    claims.start();

    const podsDir = join(this.opts.dataDir.path, 'pods');
    // A malformed plugin is refused at start, naming the config field (not at the first pod).
    const pluginSteps = await loadPluginSteps(
      { hooks: config.lifecycle?.hooks ?? [], modules: config.lifecycle?.modules ?? [] },
      { clock: this.opts.clock, configPath: `${this.opts.dataDir.configFile}: lifecycle` },
    );
    this.agent = new PodAgent({
      objects: this.objects,
      driver: this.runtimeDriver(),
      node: { name: config.nodeName, peerId: mesh.peerId },
      clock: this.opts.clock,
      logger: this.logger,
      dataDir: podsDir,
      desiredSlots: () => claims.desiredSlots(),
      onDesiredChange: (listener) => claims.onDesiredChange(listener),
      explainPlacement: (pod) => formatExplanation(claims.explain(pod.name)).join('\n'),
      pluginSteps,
      meshNodes: () => this.nodes().map((n) => ({ name: n.name, reachable: n.state === 'ready' })),
      nodePolicy: () => this.nodePolicy,
    });
    const onHangup = () => this.reloadNodePolicy();
    process.on('SIGHUP', onHangup);
    this.cleanups.push(() => process.off('SIGHUP', onHangup));
    await this.agent.start();
    await mesh.serveQuestions((question, peer, signal) => this.answer(question, peer, signal));
    this.api = await ApiServer.listen(this.opts.dataDir.socketPath, this.handlers(), this.logger);
    this.dashboard = await DashboardServer.start({
      dataDir: this.opts.dataDir.path,
      handlers: this.handlers(),
      logger: this.logger,
      clock: this.opts.clock,
    });
    this.logger.info('api listening', { socket: this.opts.dataDir.socketPath });
  }

  /** The node config's runtime: bubblewrap processes, or (benchmarks, tests) the mock that runs nothing. */
  private runtimeDriver(): RuntimeDriver {
    if (this.config.runtime === 'mock') {
      this.logger.warn('runtime is mock: pods are scheduled and reported running, but no process runs', {
        config: this.opts.dataDir.configFile,
      });
      return new MockDriver();
    }
    return createProcessDriver({
      clock: this.opts.clock,
      log: this.logger,
      compileCacheDir: sharedCompileCache() ?? join(this.opts.dataDir.path, 'cache'),
    });
  }

  /** Writes this node's record; only changed fields become document updates. */
  private refreshSelf(): void {
    const mesh = this.mesh;
    if (mesh === undefined) return;
    const previous = this.cluster.nodeByPeerId(mesh.peerId);
    const record: NodeRecord = {
      peerId: mesh.peerId,
      name: this.config.nodeName,
      addrs: mesh.addrs(),
      labels: previous?.labels ?? {},
      capacity: { cpu: availableParallelism(), memoryBytes: totalmem() },
      joinedAt: previous?.joinedAt ?? this.opts.clock.now(),
      version: meshdVersion,
    };
    this.cluster.upsertNode(record);
    this.publishNodePolicy(mesh.peerId);
  }

  /** Puts the node policy into this node's record, for every peer's scheduler (written only when changed). */
  private publishNodePolicy(peerId: string): void {
    try {
      this.cluster.setNodePolicy(peerId, this.nodePolicy.policy);
    } catch (err) {
      this.logger.warn('node policy not published', { error: describeError(err) });
    }
  }

  /** SIGHUP: reads the policy file again; a bad file is logged and the policy in force stays. */
  private reloadNodePolicy(): void {
    try {
      this.nodePolicy = loadNodePolicy({ dataDir: this.opts.dataDir.path, file: this.config.policyFile });
    } catch (err) {
      this.logger.error('node policy not reloaded; the previous one stays in force', {
        error: describeError(err),
      });
      return;
    }
    this.logger.info('node policy reloaded', { file: this.nodePolicy.file, exists: this.nodePolicy.exists });
    if (this.mesh !== undefined && !this.joining) this.publishNodePolicy(this.mesh.peerId);
    this.claims?.poke();
  }

  private handlers(): ApiHandlers {
    return {
      status: () => this.status(),
      peers: () => this.peers(),
      nodes: () => this.nodes(),
      labelNode: (name, req) => this.labelNode(name, req),
      nodeAction: (name, action) => this.nodeAction(name, action),
      removeNode: (name) => this.removeNode(name),
      token: () => this.token(),
      stats: () => this.stats(),
      dashboard: () => DashboardServer.infoOf(this.dashboard, this.opts.dataDir.path),
      shutdown: () => {
        void this.stop();
      },
      subscribe: (listener) => this.subscribe(listener),
      pods: {
        apply: (req) => this.requirePods().apply(req),
        list: () => this.requirePods().list(),
        describe: (name) => this.requirePods().describe(name),
        spec: (name) => this.requirePods().spec(name),
        delete: (name, req) => this.requirePods().delete(name, req),
        history: (name, q) => this.requirePods().history(name, q),
        diff: (name, from, to) => this.requirePods().diff(name, from, to),
        rollback: (name, to, req) => this.requirePods().rollback(name, to, req),
        controllers: () => this.requirePods().controllers(),
        why: async (name) => this.why(name),
        logs: (name, q, signal) => this.logs(name, q, signal),
      },
    };
  }

  status(): StatusView {
    const mesh = this.requireMesh();
    return {
      name: this.config.nodeName,
      peerId: mesh.peerId,
      mesh: { id: this.config.meshId, name: this.config.meshName },
      addrs: mesh.addrs(),
      version: meshdVersion,
      dataDir: this.opts.dataDir.path,
      pid: process.pid,
      connectedPeers: mesh.connectedCount(),
      syncedPeers: mesh.syncedCount(),
      ready: !this.joining,
      joining: this.joining,
      keyEpoch: mesh.currentKey().epoch,
      ...(this.keyProblem === undefined ? {} : { keyProblem: this.keyProblem }),
    };
  }

  private peers(): PeerEntry[] {
    const mesh = this.requireMesh();
    const now = this.opts.clock.now();
    const names = new Map(this.cluster.nodes().nodes.map((n) => [n.peerId, n.name]));
    return mesh
      .peers()
      .map((p) => ({
        name: p.name ?? names.get(p.peerId) ?? null,
        peerId: p.peerId,
        connected: p.connected,
        lastSeenMs: p.lastSeenAt === null ? null : Math.max(0, now - p.lastSeenAt),
        rttMs: p.rttMs,
        addrs: p.addrs,
      }))
      .sort((a, b) => (a.name ?? a.peerId).localeCompare(b.name ?? b.peerId));
  }

  private nodes(): NodeEntry[] {
    const mesh = this.requireMesh();
    const now = this.opts.clock.now();
    const window = this.opts.unreachableAfterMs ?? 5_000;
    const seen = new Map(mesh.peers().map((p) => [p.peerId, p.lastSeenAt]));
    const forgotten = new Set(this.cluster.forgotten().map((f) => f.peerId));
    return this.cluster.nodes().nodes.map((n) => {
      const self = n.peerId === mesh.peerId;
      const lastSeen = seen.get(n.peerId);
      const alive = self || (lastSeen !== undefined && lastSeen !== null && now - lastSeen <= window);
      const controls = this.cluster.nodeControls(n.peerId);
      return {
        name: n.name,
        peerId: n.peerId,
        state: alive ? 'ready' : 'unreachable',
        self,
        labels: n.labels,
        capacity: n.capacity,
        addrs: n.addrs,
        version: n.version,
        joinedAt: new Date(n.joinedAt).toISOString(),
        cordoned: controls.cordoned,
        draining: controls.draining,
        forgotten: forgotten.has(n.peerId),
        removed: this.cluster.isRemoved(n.peerId),
        policy: {
          hostNetwork: controls.policy.hostNetwork === true,
          unsandboxed: controls.policy.unsandboxed === true,
          hostPaths: (controls.policy.hostPaths ?? []).map((r) => ({
            path: r.path,
            readOnly: r.readOnly === true,
          })),
          devices: [...(controls.policy.devices ?? [])],
          capabilities: [...(controls.policy.capabilities ?? [])],
        },
      };
    });
  }

  private labelNode(name: string, req: LabelRequest): NodeEntry {
    this.cluster.setLabels(name, req.set, req.remove);
    // Durable before we say so: a kill -9 right after this answer loses nothing.
    this.store.assertDurable();
    const entry = this.nodes().find((n) => n.name === name);
    if (entry === undefined) throw new Error(`node ${name} vanished after labelling`);
    return entry;
  }

  /** cordon: no new slots; drain: also release held ones; uncordon: both off; forget: declare it dead. */
  private nodeAction(name: string, action: NodeAction): NodeEntry {
    if (action === 'forget') {
      if (name === this.config.nodeName) {
        throw new MeshdError('E_FORGET_SELF', 'a node cannot forget itself', {
          hint: 'Run `meshd node forget` on another member, about this node.',
        });
      }
      this.cluster.forgetNode(name, this.opts.clock.now());
    } else {
      this.cluster.setNodeFlags(
        name,
        action === 'cordon'
          ? { cordoned: true }
          : action === 'drain'
            ? { cordoned: true, draining: true }
            : { cordoned: false, draining: false },
      );
    }
    this.store.assertDurable();
    this.claims?.poke();
    const entry = this.nodes().find((n) => n.name === name);
    if (entry === undefined) throw new Error(`node ${name} vanished after ${action}`);
    return entry;
  }

  /** Keeps a rotated key (key and epoch in one atomic write) before the mesh switches to it. */
  private persistKey(key: MeshKey): void {
    this.opts.dataDir.writeMeshKey(key);
    if (this.keyProblem?.code === 'E_MESH_KEY_STALE') this.keyProblem = undefined;
    this.logger.info('mesh key stored', { epoch: key.epoch });
  }

  /** Remembers this node's own staleness for `status`; logs each kind of mismatch once a minute at most. */
  private onEpochMismatch(m: EpochMismatch): void {
    const err = epochMismatchError(m);
    const turn = this.mismatchLog.take(err.code);
    if (turn.log) {
      this.logger.warn('peer refused: mesh key epochs differ', {
        code: err.code,
        localEpoch: m.localEpoch,
        remoteEpoch: m.remoteEpoch,
        addr: m.remoteAddr,
        ...(turn.suppressed === 0 ? {} : { alsoRefusedSinceLastLine: turn.suppressed }),
      });
    }
    // Only what this node saw dialling a member it knows says its own key is stale: an inbound stranger
    // could claim any epoch. A stale remote is that peer's problem.
    if (err.code !== 'E_MESH_KEY_STALE' || m.direction !== 'outbound') return;
    if (this.keyProblem?.code === 'E_NODE_REMOVED') return;
    this.keyProblem = {
      code: err.code,
      message: err.message,
      hint: err.hint ?? '',
      at: new Date(this.opts.clock.now()).toISOString(),
    };
  }

  /**
   * `meshd node remove`: the node is forgotten and listed as removed in the document, and the mesh key is
   * rotated and sent to every connected member, so the removed machine can neither connect by peer id nor
   * with the key it holds.
   */
  private async removeNode(name: string): Promise<RemoveNodeResult> {
    const mesh = this.requireMesh();
    if (name === this.config.nodeName) {
      throw new MeshdError('E_REMOVE_SELF', 'a node cannot remove itself', {
        hint: 'Run `meshd node remove` on another member, about this node.',
      });
    }
    const removed = this.cluster.removeNode(name, this.opts.clock.now(), mesh.peerId);
    this.store.assertDurable();
    this.claims?.poke();
    let rotated: Awaited<ReturnType<MeshNode['rotateKey']>>;
    try {
      rotated = await mesh.rotateKey([removed.peerId]);
    } catch (err) {
      // The removal is in the document (every member refuses the peer id), but the machine still holds a
      // working key until a rotation: say so, and how to finish. Running the command again is safe.
      throw new MeshdError(
        'E_ROTATION_FAILED',
        `node "${name}" is removed, but the mesh key could not be rotated: ${describeError(err)}`,
        {
          hint: `Fix the cause, then run \`meshd node remove ${name}\` again: it rotates the key without removing anything twice.`,
          cause: err,
        },
      );
    }
    const { key, sentTo } = rotated;
    const nodes = this.cluster.nodes().nodes;
    const names = new Map(nodes.map((n) => [n.peerId, n.name]));
    const reached = new Set(sentTo);
    const others = nodes.filter((n) => n.peerId !== mesh.peerId && !this.cluster.isRemoved(n.peerId));
    return {
      node: name,
      peerId: removed.peerId,
      keyEpoch: key.epoch,
      sentTo: sentTo.map((id) => names.get(id) ?? id),
      notReached: others.filter((n) => !reached.has(n.peerId)).map((n) => n.name),
    };
  }

  token(): string {
    const mesh = this.requireMesh();
    const others = this.nodes()
      .filter((n) => !n.self && n.state === 'ready')
      .slice(0, maxTokenPeers - 1)
      .flatMap((n) => n.addrs.map((a) => withPeerId(a, n.peerId)));
    return encodeJoinToken({
      meshId: this.config.meshId,
      meshName: this.config.meshName,
      psk: mesh.currentKey().psk,
      keyEpoch: mesh.currentKey().epoch,
      bootstrap: [...mesh.addrs(), ...others],
    });
  }

  private stats(): StatsView {
    const mem = process.memoryUsage();
    const m = this.requireMesh().stats();
    const s = this.store.stats();
    return {
      mesh: {
        bytesSent: m.bytesSent,
        bytesReceived: m.bytesReceived,
        gossipPublished: m.gossipPublished,
        syncRuns: m.syncRuns,
        rejectedMessages: m.rejectedMessages,
      },
      store: {
        logUpdates: s.logUpdates,
        logBytes: s.logBytes,
        snapshotBytes: s.snapshotBytes,
        fileBytes: s.fileBytes,
      },
      process: {
        rssBytes: mem.rss,
        heapUsedBytes: mem.heapUsed,
        uptimeMs: Math.round(process.uptime() * 1000),
      },
    };
  }

  private subscribe(listener: (event: MeshEvent) => void): () => void {
    const mesh = this.requireMesh();
    const onDoc = () => listener({ type: 'doc', at: Date.now() });
    const onPeers = () => listener({ type: 'peers', at: Date.now() });
    this.doc.on('update', onDoc);
    mesh.events.addEventListener('peers', onPeers);
    return () => {
      this.doc.off('update', onDoc);
      mesh.events.removeEventListener('peers', onPeers);
    };
  }

  /** Asked of this node's agent; the node running the pod is asked over the mesh once that protocol exists. */
  /**
   * Asked of the node that runs the pod (over the mesh); answered here when this node runs it, when it
   * runs nowhere yet (placement reasons), or — with what the document last said — when that node is down.
   */
  private async why(name: string): Promise<WhyView> {
    const desc = this.requirePods().describe(name); // a clear "no such pod" first
    const remote = this.remoteNodeOf(desc.slots.map((s) => s.node));
    if (remote !== undefined) {
      const signal = AbortSignal.timeout(10_000);
      try {
        for await (const body of this.requireMesh().ask(
          remote.peerId,
          { kind: 'why', pod: name, opts: {} },
          signal,
        )) {
          return whyView(body as WhyReport);
        }
      } catch (err) {
        const last = desc.slots
          .filter((s) => s.node === remote.name)
          .map((s) => `slot ${s.slot}: ${s.phase}${s.lastError === null ? '' : ` (${s.lastError})`}`)
          .join('; ');
        const local = this.requireAgent().why(name);
        if (local === undefined) throw err;
        return whyView(local, {
          unreachable: `node ${remote.name} runs it and could not be asked (${describeError(err)}); the document last said: ${last}`,
        });
      }
    }
    const report = this.requireAgent().why(name);
    if (report === undefined) throw new Error(`agent has no why report for ${name}`);
    return whyView(report);
  }

  private async *logs(name: string, q: LogsQuery, signal: AbortSignal): AsyncGenerator<string> {
    const desc = this.requirePods().describe(name);
    const slots = q.slot === undefined ? desc.slots : desc.slots.filter((s) => s.slot === q.slot);
    const remote = this.remoteNodeOf(slots.slice(0, 1).map((s) => s.node));
    if (remote === undefined) {
      yield* this.requireAgent().logs(name, { ...q, signal });
      return;
    }
    for await (const line of this.requireMesh().ask(
      remote.peerId,
      { kind: 'logs', pod: name, opts: { ...q } },
      signal,
    )) {
      if (typeof line === 'string') yield line;
    }
  }

  /** The first node among `nodes` that is not this one, with its peer id: who to ask about a pod. */
  private remoteNodeOf(nodes: (string | null)[]): { name: string; peerId: string } | undefined {
    for (const n of nodes) {
      if (n === null || n === this.config.nodeName) continue;
      const node = this.cluster.nodeByName(n);
      if (node !== undefined) return { name: n, peerId: node.peerId };
    }
    return undefined;
  }

  /** What this node answers when a peer asks about a pod it runs. */
  private async *answer(question: PeerQuestion, _peer: string, signal: AbortSignal): AsyncGenerator<unknown> {
    const agent = this.requireAgent();
    if (question.kind === 'why') {
      const report = agent.why(question.pod);
      if (report === undefined) {
        throw new NotFoundError(
          'E_POD_NOT_FOUND',
          `node ${this.config.nodeName} knows no pod ${question.pod}`,
        );
      }
      yield report;
      return;
    }
    const o = question.opts;
    const q: LogsQuery = {
      ...(typeof o.container === 'string' ? { container: o.container } : {}),
      ...(typeof o.slot === 'number' ? { slot: o.slot } : {}),
      ...(o.stream === 'stdout' || o.stream === 'stderr' ? { stream: o.stream } : {}),
      ...(typeof o.tail === 'number' ? { tail: o.tail } : {}),
      ...(o.follow === true ? { follow: true } : {}),
    };
    yield* agent.logs(question.pod, { ...q, signal });
  }

  private requireAgent(): PodAgent {
    if (this.agent === undefined) {
      throw new MeshdError('E_STARTING', 'the daemon is still starting', { hint: 'Try again in a moment.' });
    }
    return this.agent;
  }

  private requirePods(): PodService {
    if (this.pods === undefined) {
      throw new MeshdError('E_STARTING', 'the daemon is still starting', { hint: 'Try again in a moment.' });
    }
    return this.pods;
  }

  private requireMesh(): MeshNode {
    if (this.mesh === undefined)
      throw new MeshdError('E_STARTING', 'the daemon is still starting', { hint: 'Try again in a moment.' });
    return this.mesh;
  }

  private fatal(err: MeshdError): void {
    this.fatalError = err;
    void this.stop();
  }

  /** Set when the daemon stopped itself because it cannot go on (e.g. its name is taken). */
  fatalError: MeshdError | undefined;

  /** Stops in reverse start order. Safe to call more than once. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.logger.info('stopping');
      for (const c of this.cleanups.splice(0)) c();
      this.claims?.stop();
      // Pods outlive the daemon: the agent stops reconciling and leaves them running.
      await this.agent
        ?.stop()
        .catch((err: unknown) => this.logger.warn('pod agent stop failed', { err: String(err) }));
      await this.dashboard
        ?.close()
        .catch((err: unknown) => this.logger.warn('dashboard close failed', { err: String(err) }));
      await this.api
        ?.close()
        .catch((err: unknown) => this.logger.warn('api close failed', { err: String(err) }));
      this.objects?.close();
      await this.mesh
        ?.stop()
        .catch((err: unknown) => this.logger.warn('mesh stop failed', { err: String(err) }));
      try {
        this.store.close();
      } catch (err) {
        this.logger.warn('store close failed', { err: String(err) });
      }
      this.releaseLock?.();
      this.logger.info('stopped');
      this.resolveStopped();
    })();
    return this.stopping;
  }
}

function withPeerId(addr: string, peerId: string): string {
  return addr.includes('/p2p/') ? addr : `${addr}/p2p/${peerId}`;
}

/** What `status` says once this node learned it was removed from the mesh. */
function removedProblem(by: string, now: number): KeyProblem {
  return {
    code: 'E_NODE_REMOVED',
    message: `this node was removed from the mesh by ${by} (\`meshd node remove\`)`,
    hint: 'A removed machine comes back only as a new node: a fresh data dir and `meshd join` with a current token.',
    at: new Date(now).toISOString(),
  };
}

/**
 * The launcher's private per-user compile cache, when it enabled one (bin/meshd.js checks who may write
 * it), for the supervisors: every node on this host then shares one warm cache, so a node's first pod
 * does not pay for loading the type stripper. Node reports its versioned subdirectory and adds that
 * subdirectory itself under whatever NODE_COMPILE_CACHE names: hence the parent.
 */
function sharedCompileCache(): string | undefined {
  const dir = getCompileCacheDir();
  return dir === undefined ? undefined : dirname(dir);
}
