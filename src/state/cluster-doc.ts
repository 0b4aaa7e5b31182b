// Typed, validated access to the cluster document's node registry and mesh identity.

import * as Y from 'yjs';
import { NotFoundError, ValidationError } from '../shared/errors.ts';

export interface NodeCapacity {
  /** Cores (may be fractional). */
  cpu: number;
  memoryBytes: number;
}

export interface NodeRecord {
  /** libp2p peer id; the key of the node in the document. */
  peerId: string;
  /** Human name (`nas`): a DNS label, unique in the mesh. */
  name: string;
  addrs: string[];
  labels: Record<string, string>;
  capacity: NodeCapacity;
  /** Milliseconds since the epoch. */
  joinedAt: number;
  /** meshd version the node runs. */
  version: string;
}

/** An entry of the document that reads skip, with the reason `meshd why` prints. */
export interface RejectedEntry {
  /** Where it is: `nodes/<peerId>`, `nodes/<peerId>/labels/<key>`, `mesh`. */
  key: string;
  reason: string;
}

export interface MeshInfo {
  id: string;
  name: string;
}

/** A host path prefix a node allows pods to mount (`readOnly`: only read-only mounts of it). */
export interface HostPathRule {
  path: string;
  readOnly?: boolean;
}

/** What a node's operator allows pods to relax: the node half of the double opt-in (node config). */
export interface NodePolicyRecord {
  hostNetwork?: boolean;
  unsandboxed?: boolean;
  /** Allowed absolute path prefixes. */
  hostPaths?: HostPathRule[];
  /** Allowed device paths, exactly. */
  devices?: string[];
  /** Allowed Linux capabilities (`NET_BIND_SERVICE`). */
  capabilities?: string[];
}

/** Scheduling controls of a node. Absent or malformed fields read as the defaults below. */
export interface NodeControls {
  /** Takes no new slots and keeps those it holds (`meshd node cordon`). Default false. */
  cordoned: boolean;
  /** Takes no new slots and releases those it holds (`meshd node drain`). Default false. */
  draining: boolean;
  /** Written by the node itself from its config. Default `{}`: nothing relaxed. */
  policy: NodePolicyRecord;
}

/** A node declared dead with `meshd node forget`: its slots move, whatever their availability. */
export interface ForgottenNode {
  peerId: string;
  /** Its name when it was forgotten ('' if the entry does not say). */
  name: string;
  /** When it was forgotten (ms since the epoch; 0 if the entry does not say). */
  at: number;
}

/*
 * Layout (the wire format every peer shares):
 *   doc.getMap('mesh')  : id, name                       (written once, at `meshd init`)
 *   doc.getMap('nodes') : peerId -> Y.Map {
 *     peerId, name, version: string; joinedAt: number; addrs: string[] (plain value);
 *     capacity: { cpu, memoryBytes } (plain value); labels: Y.Map<string> (so that two peers editing
 *     different labels concurrently both win);
 *     cordoned?, draining?: boolean (any peer, `meshd node cordon|drain`); policy?: NodePolicyRecord
 *     (plain value, written by the node itself) }
 *   doc.getMap('forgotten') : peerId -> { name, at }  (`meshd node forget`; the key's presence is what counts)
 *   doc.getMap('removed')   : peerId -> { name, at, by } (`meshd node remove`; for good: never deleted, and
 *                             every peer refuses the peer id at connection time)
 * Yjs keeps a tombstone per overwritten map value, so writers only set values that changed.
 */
const nodesKey = 'nodes';
const meshKey = 'mesh';
const forgottenKey = 'forgotten';
const removedKey = 'removed';

const nodeNamePattern = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const labelNamePattern = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;
const labelPrefixPattern = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;
const labelValuePattern = /^([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$/;

/** Node names are DNS labels: 1-63 of lowercase letters, digits and '-', not starting or ending with '-'. */
export function validateNodeName(name: string): void {
  const problem = nodeNameProblem(name);
  if (problem === undefined) return;
  throw new ValidationError('E_NODE_NAME', `invalid node name ${JSON.stringify(name)}: ${problem}`, {
    hint: 'Use 1-63 lowercase letters, digits and "-", starting and ending with a letter or digit (e.g. "nas", "vps-2").',
    details: { path: 'name', value: name },
  });
}

export class ClusterDoc {
  readonly doc: Y.Doc;
  private readonly nodesMap: Y.Map<unknown>;
  private readonly meshMap: Y.Map<unknown>;
  private readonly forgottenMap: Y.Map<unknown>;
  private readonly removedMap: Y.Map<unknown>;

  constructor(doc: Y.Doc) {
    this.doc = doc;
    this.nodesMap = doc.getMap<unknown>(nodesKey);
    this.meshMap = doc.getMap<unknown>(meshKey);
    this.forgottenMap = doc.getMap<unknown>(forgottenKey);
    this.removedMap = doc.getMap<unknown>(removedKey);
  }

  /** The mesh identity, or undefined before it is known (a joiner before its first sync). */
  meshInfo(): MeshInfo | undefined {
    const id = this.meshMap.get('id');
    const name = this.meshMap.get('name');
    if (typeof id !== 'string' || typeof name !== 'string' || id === '' || name === '') return undefined;
    return { id, name };
  }

  /** Stores the mesh identity once, at init. Writing the same value again is a no-op; another one is refused. */
  setMeshInfo(info: MeshInfo): void {
    for (const field of ['id', 'name'] as const) {
      const value: unknown = info[field];
      if (typeof value !== 'string' || value === '') {
        throw new ValidationError('E_MESH_INFO', `mesh ${field} must be a non-empty string`, {
          hint: 'This is a bug in the caller: the mesh id and name come from `meshd init`.',
          details: { path: `mesh.${field}`, value },
        });
      }
    }
    const current = this.meshInfo();
    if (current !== undefined) {
      if (current.id === info.id && current.name === info.name) return;
      throw new ValidationError(
        'E_MESH_MISMATCH',
        `this document already belongs to mesh "${current.name}" (${current.id}), not "${info.name}" (${info.id})`,
        {
          hint: 'A data directory holds one mesh: use another --data-dir for the other mesh.',
          details: { current, requested: { id: info.id, name: info.name } },
        },
      );
    }
    this.doc.transact(() => {
      this.meshMap.set('id', info.id);
      this.meshMap.set('name', info.name);
    });
  }

  /**
   * Creates or updates a node's record in one transaction, writing only the fields whose value changed
   * (`addrs` compare as sets). `labels` is the full desired label set: keys absent from it are removed,
   * so callers read-modify-write (`{ ...fresh, labels: previous?.labels ?? {} }`). Refuses a name another
   * peer already holds (a clash made concurrently in two partitions is resolved by `nodes()` instead).
   */
  upsertNode(rec: NodeRecord): void {
    validateRecord(rec);
    const holder = this.nodeByName(rec.name);
    const existing = this.nodesMap.get(rec.peerId);
    const existingName = existing instanceof Y.Map ? existing.get('name') : undefined;
    if (holder !== undefined && holder.peerId !== rec.peerId && existingName !== rec.name) {
      throw new ValidationError(
        'E_NODE_NAME_TAKEN',
        `node name "${rec.name}" is already used by peer ${holder.peerId}`,
        {
          hint: 'Pick another node name (`--node-name`), or run `meshd node forget` on the old node first.',
          details: { path: 'name', value: rec.name, peer: holder.peerId },
        },
      );
    }
    const addrs = unique(rec.addrs);
    this.doc.transact(() => {
      if (!(existing instanceof Y.Map)) {
        this.nodesMap.set(rec.peerId, newNodeMap(rec, addrs));
        return;
      }
      const node = existing as Y.Map<unknown>;
      setIfChanged(node, 'peerId', rec.peerId);
      setIfChanged(node, 'name', rec.name);
      setIfChanged(node, 'version', rec.version);
      setIfChanged(node, 'joinedAt', rec.joinedAt);
      const oldAddrs = node.get('addrs');
      if (!isStringArray(oldAddrs) || !sameSet(oldAddrs, addrs)) node.set('addrs', addrs);
      const cap = node.get('capacity');
      if (!isCapacity(cap) || cap.cpu !== rec.capacity.cpu || cap.memoryBytes !== rec.capacity.memoryBytes) {
        node.set('capacity', { cpu: rec.capacity.cpu, memoryBytes: rec.capacity.memoryBytes });
      }
      const labels = node.get('labels');
      if (!(labels instanceof Y.Map)) {
        node.set('labels', new Y.Map<string>(Object.entries(rec.labels)));
        return;
      }
      for (const key of [...labels.keys()]) if (!Object.hasOwn(rec.labels, key)) labels.delete(key);
      for (const [key, value] of Object.entries(rec.labels)) setIfChanged(labels, key, value);
    });
  }

  /**
   * Every valid node, sorted by name. Entries a raw Yjs edit or a buggy peer made invalid are skipped and listed
   * in `rejected` with the reason; so is a node whose name another node took first (earlier joinedAt, then peer id).
   */
  nodes(): { nodes: NodeRecord[]; rejected: RejectedEntry[] } {
    const valid: NodeRecord[] = [];
    const rejected: RejectedEntry[] = [];
    for (const [peerId, value] of this.nodesMap.entries()) {
      const read = readNode(peerId, value, rejected);
      if (read !== undefined) valid.push(read);
    }
    valid.sort((a, b) => compare(a.name, b.name) || a.joinedAt - b.joinedAt || compare(a.peerId, b.peerId));
    const nodes: NodeRecord[] = [];
    for (const node of valid) {
      const winner = nodes.at(-1);
      if (winner !== undefined && winner.name === node.name) {
        rejected.push({
          key: `nodes/${node.peerId}`,
          reason: `name "${node.name}" is already used by peer ${winner.peerId}, which joined first`,
        });
      } else {
        nodes.push(node);
      }
    }
    rejected.sort((a, b) => compare(a.key, b.key));
    return { nodes, rejected };
  }

  nodeByName(name: string): NodeRecord | undefined {
    return this.nodes().nodes.find((n) => n.name === name);
  }

  nodeByPeerId(peerId: string): NodeRecord | undefined {
    return this.nodes().nodes.find((n) => n.peerId === peerId);
  }

  /**
   * Sets and removes labels of the node named `nodeName`, in one transaction, touching only keys that change.
   * Each key is its own map entry, so concurrent edits of different keys from two peers all survive; concurrent
   * writes of the same key end with one value on every peer.
   */
  setLabels(nodeName: string, set: Record<string, string>, remove: string[]): NodeRecord {
    const node = this.requireNode(nodeName);
    for (const [key, value] of Object.entries(set)) {
      assertLabel(key, value, `labels.${key}`);
      if (remove.includes(key)) {
        throw new ValidationError('E_LABEL', `label "${key}" is both set and removed`, {
          hint: 'Give each label key once: `key=value` to set it, `key-` to remove it.',
          details: { path: `labels.${key}` },
        });
      }
    }
    // Removal takes any key, valid or not, so that a bad label a buggy peer wrote can be cleaned up.
    const entry = this.nodesMap.get(node.peerId);
    if (!(entry instanceof Y.Map)) throw new Error(`node ${node.peerId} vanished while labelling`);
    this.doc.transact(() => {
      let labels = entry.get('labels');
      if (!(labels instanceof Y.Map)) {
        labels = new Y.Map<string>(Object.entries(node.labels));
        entry.set('labels', labels);
      }
      const map = labels as Y.Map<unknown>;
      for (const [key, value] of Object.entries(set)) setIfChanged(map, key, value);
      for (const key of remove) if (map.has(key)) map.delete(key);
    });
    const updated = this.nodeByPeerId(node.peerId);
    if (updated === undefined) throw new Error(`node ${node.peerId} became invalid while labelling`);
    return updated;
  }

  /**
   * Sets the cordoned and/or draining flag of the node named `nodeName` (fields left out stay as they are),
   * writing only what changes. Any peer may: `meshd node cordon|uncordon|drain` run anywhere in the mesh.
   */
  setNodeFlags(nodeName: string, flags: { cordoned?: boolean; draining?: boolean }): NodeControls {
    const node = this.requireNode(nodeName);
    for (const field of ['cordoned', 'draining'] as const) {
      const value: unknown = flags[field];
      if (value !== undefined && typeof value !== 'boolean') {
        throw new ValidationError('E_NODE_FLAG', `${field} must be true or false, not ${describe(value)}`, {
          hint: 'This is a bug in the caller: node flags come from `meshd node cordon|uncordon|drain`.',
          details: { path: field, value, node: nodeName },
        });
      }
    }
    const entry = this.nodesMap.get(node.peerId);
    if (!(entry instanceof Y.Map)) throw new Error(`node ${node.peerId} vanished while setting flags`);
    this.doc.transact(() => {
      const map = entry as Y.Map<unknown>;
      if (flags.cordoned !== undefined && map.get('cordoned') !== flags.cordoned)
        map.set('cordoned', flags.cordoned);
      if (flags.draining !== undefined && map.get('draining') !== flags.draining)
        map.set('draining', flags.draining);
    });
    return this.nodeControls(node.peerId);
  }

  /**
   * Stores what the node `peerId` allows pods to relax. Written by that node from its own config (the
   * operator's half of the double opt-in); only a changed policy is written.
   */
  setNodePolicy(peerId: string, policy: NodePolicyRecord): void {
    const problem = policyProblem(policy);
    if (problem !== undefined) {
      throw new ValidationError(
        'E_NODE_POLICY',
        `node policy of ${peerId}: ${problem.path} ${problem.problem}`,
        {
          hint: 'Fix the policy in the node config: hostNetwork/unsandboxed are booleans, hostPaths a list of { path: absolute, readOnly? }, devices and capabilities lists of strings.',
          details: { path: `policy.${problem.path}`, peer: peerId },
        },
      );
    }
    const entry = this.nodesMap.get(peerId);
    if (!(entry instanceof Y.Map)) {
      throw new NotFoundError('E_NODE_NOT_FOUND', `no node record for peer ${peerId}`, {
        hint: 'Write the node record (upsertNode) before its policy.',
        details: { peer: peerId },
      });
    }
    const plain = normalizePolicy(policy);
    const current = (entry as Y.Map<unknown>).get('policy');
    if (JSON.stringify(current) === JSON.stringify(plain)) return;
    this.doc.transact(() => (entry as Y.Map<unknown>).set('policy', plain));
  }

  /** The scheduling controls of node `peerId`; defaults (not cordoned, nothing allowed) for what is absent. */
  nodeControls(peerId: string): NodeControls {
    const entry = this.nodesMap.get(peerId);
    const map = entry instanceof Y.Map ? (entry as Y.Map<unknown>) : undefined;
    const cordoned = map?.get('cordoned');
    const draining = map?.get('draining');
    const policy = map?.get('policy');
    return {
      cordoned: cordoned === true,
      draining: draining === true,
      policy:
        policy !== undefined && policyProblem(policy) === undefined
          ? normalizePolicy(policy as NodePolicyRecord)
          : {},
    };
  }

  /**
   * Declares the node named `nodeName` dead (`meshd node forget`): every peer stops counting on it, and
   * its slots move at once, best-effort ones included. Forgetting a forgotten node changes nothing.
   */
  forgetNode(nodeName: string, at: number): ForgottenNode {
    const node = this.requireNode(nodeName);
    const existing = this.forgotten().find((f) => f.peerId === node.peerId);
    if (existing !== undefined) return existing;
    const entry: ForgottenNode = { peerId: node.peerId, name: node.name, at };
    this.doc.transact(() => this.forgottenMap.set(node.peerId, { name: node.name, at }));
    return entry;
  }

  /** Takes back `forgetNode` for the node named `nodeName` (a node declared dead by mistake). */
  unforgetNode(nodeName: string): void {
    const node = this.requireNode(nodeName);
    if (this.removedMap.has(node.peerId)) {
      throw new ValidationError('E_NODE_REMOVED', `node "${nodeName}" was removed from the mesh for good`, {
        hint: 'A removed machine comes back only as a new node: a fresh data dir and `meshd join` with a current token.',
        details: { node: nodeName, peer: node.peerId },
      });
    }
    if (this.forgottenMap.has(node.peerId)) this.doc.transact(() => this.forgottenMap.delete(node.peerId));
  }

  /**
   * Removes the node named `nodeName` for good (`meshd node remove`): forgotten (its slots move) and
   * listed as removed, so every peer refuses its peer id. `by` is the peer id of the member removing it.
   */
  removeNode(nodeName: string, at: number, by: string): ForgottenNode {
    const node = this.requireNode(nodeName);
    this.doc.transact(() => {
      if (!this.forgottenMap.has(node.peerId)) this.forgottenMap.set(node.peerId, { name: node.name, at });
      if (!this.removedMap.has(node.peerId)) this.removedMap.set(node.peerId, { name: node.name, at, by });
    });
    return { peerId: node.peerId, name: node.name, at };
  }

  /** Whether `peerId` was removed from the mesh. A key counts even when its value is malformed. */
  isRemoved(peerId: string): boolean {
    return this.removedMap.has(peerId);
  }

  /** Peer ids of every removed node. */
  removedPeerIds(): string[] {
    return [...this.removedMap.keys()].sort(compare);
  }

  /** Every forgotten peer, sorted by peer id. A key counts even when its value is malformed. */
  forgotten(): ForgottenNode[] {
    const out: ForgottenNode[] = [];
    for (const [peerId, value] of this.forgottenMap.entries()) {
      const v =
        typeof value === 'object' && value !== null && !Array.isArray(value)
          ? (value as Record<string, unknown>)
          : {};
      out.push({
        peerId,
        name: typeof v.name === 'string' ? v.name : '',
        at: typeof v.at === 'number' && Number.isFinite(v.at) ? v.at : 0,
      });
    }
    return out.sort((a, b) => compare(a.peerId, b.peerId));
  }

  /** The node named `nodeName`, or a NotFoundError listing the known names. */
  private requireNode(nodeName: string): NodeRecord {
    const node = this.nodeByName(nodeName);
    if (node !== undefined) return node;
    const known = this.nodes().nodes.map((n) => n.name);
    throw new NotFoundError('E_NODE_NOT_FOUND', `no node named "${nodeName}"`, {
      hint:
        known.length === 0
          ? 'No node is known yet: is the daemon synced with the mesh?'
          : `Known nodes: ${known.join(', ')}.`,
      details: { node: nodeName, known },
    });
  }

  /** Calls `listener` once after every transaction (local or remote) that changed nodes, mesh info or forgotten nodes. */
  onChange(listener: () => void): () => void {
    const watched: ReadonlySet<unknown> = new Set<unknown>([
      this.nodesMap,
      this.meshMap,
      this.forgottenMap,
      this.removedMap,
    ]);
    const handler = (tr: Y.Transaction): void => {
      // changedParentTypes holds every type a change bubbled up to, so nested label edits count too.
      if (![...tr.changedParentTypes.keys()].some((type) => watched.has(type))) return;
      try {
        listener();
      } catch (err) {
        // Throwing inside a Yjs event would abort the rest of the transaction's cleanup: surface it later instead.
        queueMicrotask(() => {
          throw err;
        });
      }
    };
    this.doc.on('afterTransaction', handler);
    return () => this.doc.off('afterTransaction', handler);
  }
}

function nodeNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return 'not a string';
  if (name.length === 0) return 'empty';
  if (name.length > 63) return `${name.length} characters (at most 63)`;
  if (!nodeNamePattern.test(name)) {
    return /[A-Z]/.test(name)
      ? 'has uppercase letters'
      : 'only lowercase letters, digits and "-" are allowed, and it must start and end with a letter or digit';
  }
  return undefined;
}

function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf('/');
  const prefix = slash === -1 ? undefined : key.slice(0, slash);
  const name = slash === -1 ? key : key.slice(slash + 1);
  if (prefix !== undefined) {
    if (prefix.length === 0 || prefix.length > 253) return 'the prefix before "/" must be 1-253 characters';
    if (!labelPrefixPattern.test(prefix))
      return 'the prefix before "/" must be a DNS subdomain (e.g. "example.com")';
  }
  if (name.length === 0) return 'the name is empty';
  if (name.length > 63) return `the name has ${name.length} characters (at most 63)`;
  if (!labelNamePattern.test(name)) {
    return 'the name may hold letters, digits, ".", "_" and "-", and must start and end with a letter or digit';
  }
  return undefined;
}

function labelValueProblem(value: unknown): string | undefined {
  if (typeof value !== 'string') return 'the value is not a string';
  if (value.length > 63) return `the value has ${value.length} characters (at most 63)`;
  if (!labelValuePattern.test(value)) {
    return 'the value may hold letters, digits, ".", "_" and "-", and must start and end with a letter or digit';
  }
  return undefined;
}

function assertLabel(key: string, value: unknown, path: string): void {
  const problem = labelKeyProblem(key) ?? labelValueProblem(value);
  if (problem === undefined) return;
  throw new ValidationError('E_LABEL', `invalid label ${JSON.stringify(key)}: ${problem}`, {
    hint: 'Label keys are [prefix/]name (name: 1-63 of letters, digits, "._-"; prefix: a DNS subdomain); values are at most 63 of the same characters, or empty.',
    details: { path, key, value },
  });
}

function validateRecord(rec: NodeRecord): void {
  const fail = (path: string, problem: string, value: unknown): never => {
    throw new ValidationError('E_NODE_RECORD', `node record ${rec.peerId}: ${path} ${problem}`, {
      hint: 'This is a bug in the caller: node records are written by the daemon from its own facts.',
      details: { path, value, peer: rec.peerId },
    });
  };
  if (typeof rec.peerId !== 'string' || rec.peerId === '' || /[\s/]/.test(rec.peerId)) {
    fail('peerId', 'must be a non-empty string without spaces or "/"', rec.peerId);
  }
  validateNodeName(rec.name);
  const problem = recordProblem(rec);
  if (problem !== undefined) fail(problem.path, problem.problem, problem.value);
  for (const [key, value] of Object.entries(rec.labels)) assertLabel(key, value, `labels.${key}`);
}

/** The first field of a plain record that has the wrong type or range (labels excepted). */
function recordProblem(rec: {
  addrs: unknown;
  capacity: unknown;
  joinedAt: unknown;
  version: unknown;
}): { path: string; problem: string; value: unknown } | undefined {
  if (!isStringArray(rec.addrs))
    return { path: 'addrs', problem: 'must be a list of strings', value: rec.addrs };
  if (!isCapacity(rec.capacity)) {
    return {
      path: 'capacity',
      problem: 'must be { cpu: number >= 0, memoryBytes: integer >= 0 }',
      value: rec.capacity,
    };
  }
  if (typeof rec.joinedAt !== 'number' || !Number.isFinite(rec.joinedAt) || rec.joinedAt < 0) {
    return { path: 'joinedAt', problem: 'must be a time in ms since the epoch', value: rec.joinedAt };
  }
  if (typeof rec.version !== 'string' || rec.version === '') {
    return { path: 'version', problem: 'must be a non-empty string', value: rec.version };
  }
  return undefined;
}

/** Reads and checks one entry of the nodes map; pushes the reason to `rejected` when it is not a valid node. */
function readNode(peerId: string, value: unknown, rejected: RejectedEntry[]): NodeRecord | undefined {
  const key = `nodes/${peerId}`;
  if (!(value instanceof Y.Map)) {
    rejected.push({ key, reason: `not a map of node fields (found ${describe(value)})` });
    return undefined;
  }
  const map = value as Y.Map<unknown>;
  const storedPeerId = map.get('peerId');
  if (storedPeerId !== peerId) {
    rejected.push({ key, reason: `peerId field ${describe(storedPeerId)} does not match its key` });
    return undefined;
  }
  const name = map.get('name');
  const nameProblem = nodeNameProblem(name);
  if (nameProblem !== undefined) {
    rejected.push({ key, reason: `name ${describe(name)}: ${nameProblem}` });
    return undefined;
  }
  const fields = {
    addrs: map.get('addrs'),
    capacity: map.get('capacity'),
    joinedAt: map.get('joinedAt'),
    version: map.get('version'),
  };
  const problem = recordProblem(fields);
  if (problem !== undefined) {
    rejected.push({ key, reason: `${problem.path} ${problem.problem} (found ${describe(problem.value)})` });
    return undefined;
  }
  const labelsValue = map.get('labels');
  const labels: Record<string, string> = {};
  if (labelsValue instanceof Y.Map) {
    const entries = [...(labelsValue as Y.Map<unknown>).entries()].sort(([a], [b]) => compare(a, b));
    for (const [labelKey, labelValue] of entries) {
      const labelProblem = labelKeyProblem(labelKey) ?? labelValueProblem(labelValue);
      if (labelProblem === undefined && typeof labelValue === 'string') labels[labelKey] = labelValue;
      else rejected.push({ key: `${key}/labels/${labelKey}`, reason: labelProblem ?? 'not a string' });
    }
  } else if (labelsValue !== undefined) {
    // A bad label set does not hide the node from scheduling: it just has no labels.
    rejected.push({ key: `${key}/labels`, reason: `not a map of labels (found ${describe(labelsValue)})` });
  }
  // Malformed controls read as their defaults (see nodeControls) and do not hide the node either.
  for (const flag of ['cordoned', 'draining']) {
    const v = map.get(flag);
    if (v !== undefined && typeof v !== 'boolean')
      rejected.push({
        key: `${key}/${flag}`,
        reason: `not true or false (found ${describe(v)}); read as false`,
      });
  }
  const policy = map.get('policy');
  const badPolicy = policy === undefined ? undefined : policyProblem(policy);
  if (badPolicy !== undefined) {
    rejected.push({
      key: `${key}/policy`,
      reason: `${badPolicy.path} ${badPolicy.problem}; read as an empty policy (nothing allowed)`,
    });
  }
  const capacity = fields.capacity as NodeCapacity;
  return {
    peerId,
    name: name as string,
    addrs: [...(fields.addrs as string[])],
    labels,
    capacity: { cpu: capacity.cpu, memoryBytes: capacity.memoryBytes },
    joinedAt: fields.joinedAt as number,
    version: fields.version as string,
  };
}

/** The first problem of a node policy value, or undefined when it is a valid NodePolicyRecord. */
function policyProblem(value: unknown): { path: string; problem: string } | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Y.AbstractType)
    return { path: '(policy)', problem: `must be a mapping (found ${describe(value)})` };
  const p = value as Record<string, unknown>;
  const known = ['hostNetwork', 'unsandboxed', 'hostPaths', 'devices', 'capabilities'];
  const unknown = Object.keys(p).find((k) => !known.includes(k));
  if (unknown !== undefined) return { path: unknown, problem: `is not a policy field (${known.join(', ')})` };
  for (const k of ['hostNetwork', 'unsandboxed']) {
    if (p[k] !== undefined && typeof p[k] !== 'boolean')
      return { path: k, problem: `must be true or false (found ${describe(p[k])})` };
  }
  if (p.hostPaths !== undefined) {
    if (!Array.isArray(p.hostPaths)) return { path: 'hostPaths', problem: 'must be a list' };
    for (const [i, rule] of p.hostPaths.entries()) {
      const r = rule as Record<string, unknown> | null;
      if (typeof r !== 'object' || r === null || typeof r.path !== 'string' || !r.path.startsWith('/'))
        return { path: `hostPaths[${i}]`, problem: 'must be { path: an absolute path, readOnly?: boolean }' };
      if (r.readOnly !== undefined && typeof r.readOnly !== 'boolean')
        return { path: `hostPaths[${i}].readOnly`, problem: 'must be true or false' };
    }
  }
  for (const k of ['devices', 'capabilities']) {
    if (p[k] !== undefined && !isStringArray(p[k])) return { path: k, problem: 'must be a list of strings' };
  }
  return undefined;
}

/** A fresh plain copy of a valid policy, with only the fields that are set, in a fixed order. */
function normalizePolicy(p: NodePolicyRecord): NodePolicyRecord {
  const out: NodePolicyRecord = {};
  if (p.hostNetwork !== undefined) out.hostNetwork = p.hostNetwork;
  if (p.unsandboxed !== undefined) out.unsandboxed = p.unsandboxed;
  if (p.hostPaths !== undefined)
    out.hostPaths = p.hostPaths.map((r) =>
      r.readOnly === undefined ? { path: r.path } : { path: r.path, readOnly: r.readOnly },
    );
  if (p.devices !== undefined) out.devices = [...p.devices];
  if (p.capabilities !== undefined) out.capabilities = [...p.capabilities];
  return out;
}

function newNodeMap(rec: NodeRecord, addrs: string[]): Y.Map<unknown> {
  return new Y.Map<unknown>([
    ['peerId', rec.peerId],
    ['name', rec.name],
    ['addrs', addrs],
    ['labels', new Y.Map<string>(Object.entries(rec.labels))],
    ['capacity', { cpu: rec.capacity.cpu, memoryBytes: rec.capacity.memoryBytes }],
    ['joinedAt', rec.joinedAt],
    ['version', rec.version],
  ]);
}

/** Sets a primitive value only when it differs: an unchanged write would still cost a tombstone. */
function setIfChanged(map: Y.Map<unknown>, key: string, value: string | number): void {
  if (map.get(key) !== value) map.set(key, value);
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

function isCapacity(value: unknown): value is NodeCapacity {
  if (
    typeof value !== 'object' ||
    value === null ||
    Array.isArray(value) ||
    value instanceof Y.AbstractType
  ) {
    return false;
  }
  const { cpu, memoryBytes } = value as Record<string, unknown>;
  return (
    typeof cpu === 'number' &&
    Number.isFinite(cpu) &&
    cpu >= 0 &&
    typeof memoryBytes === 'number' &&
    Number.isSafeInteger(memoryBytes) &&
    memoryBytes >= 0
  );
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

function sameSet(a: string[], b: string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every((v) => sb.has(v));
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value instanceof Y.AbstractType) return `a ${value.constructor.name}`;
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
