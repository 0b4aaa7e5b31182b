// Commands that read and edit the mesh: peers, get nodes, label node.

import { ApiClient, type NodeEntry, type PeerEntry } from '../api/client.ts';
import type { NodePolicyView, PodEntry } from '../api/types.ts';
import { DataDir } from '../daemon/data-dir.ts';
import { NotFoundError, UsageError } from '../shared/errors.ts';
import { boolFlag, expectPositionals, type Parsed, parseCommand } from './args.ts';
import { type Command, type CommandContext, emit } from './main.ts';
import { podsTable } from './pod-commands.ts';
import { formatAgo, formatBytes, renderTable } from './table.ts';

function client(p: Parsed): ApiClient {
  const dir = new DataDir(p.dataDir);
  return new ApiClient({ socketPath: dir.socketPath, dataDir: dir.path });
}

/** Pod slots per node name, as `web/0 running`. */
async function podsByNode(api: ApiClient): Promise<Map<string, string[]>> {
  const byNode = new Map<string, string[]>();
  for (const e of await api.pods()) {
    if (e.node === null) continue;
    byNode.set(e.node, [...(byNode.get(e.node) ?? []), `${e.name}/${e.slot} ${e.phase}`]);
  }
  return byNode;
}

function peersTable(peers: PeerEntry[], pods?: Map<string, string[]>): string {
  if (peers.length === 0) return 'no other peers known yet';
  return renderTable(
    ['NAME', 'STATE', 'RTT', 'LAST SEEN', 'PEER ID', ...(pods === undefined ? [] : ['PODS']), 'ADDRESSES'],
    peers.map((p) => [
      p.name ?? '?',
      p.connected ? 'connected' : 'disconnected',
      p.rttMs === null ? '-' : `${p.rttMs.toFixed(1)}ms`,
      formatAgo(p.lastSeenMs),
      `${p.peerId.slice(0, 8)}…${p.peerId.slice(-6)}`,
      ...(pods === undefined ? [] : [(pods.get(p.name ?? '') ?? []).join(', ') || '-']),
      p.addrs[0] === undefined
        ? '-'
        : `${p.addrs[0]}${p.addrs.length > 1 ? ` (+${p.addrs.length - 1})` : ''}`,
    ]),
  );
}

const peers: Command = {
  words: ['peers'],
  usage: 'peers [--watch] [-o json]',
  summary: 'every known peer: connected, last seen, round-trip time, addresses',
  async run(argv, ctx) {
    const p = parseCommand('peers', argv, { watch: { type: 'boolean', short: 'w' } });
    expectPositionals('peers', p, []);
    const api = client(p);
    if (!boolFlag(p, 'watch')) {
      const list = await api.peers();
      emit(ctx, p.output, list, () => peersTable(list));
      return 0;
    }
    return watch(
      ctx,
      api,
      async () => {
        const list = await api.peers();
        return p.output === 'json' ? JSON.stringify(list) : peersTable(list, await podsByNode(api));
      },
      p.output !== 'json',
    );
  },
};

/** Redraws `render()` on every mesh event and at least once a second, until Ctrl-C. */
async function watch(
  ctx: CommandContext,
  api: ApiClient,
  render: () => Promise<string>,
  clear: boolean,
): Promise<number> {
  const abort = new AbortController();
  const stop = () => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let dirty = true;
  const draw = async () => {
    if (!dirty || abort.signal.aborted) return;
    dirty = false;
    const text = await render();
    ctx.out(clear && process.stdout.isTTY ? `\x1b[H\x1b[2J${text}` : text);
  };
  const timer = setInterval(() => {
    dirty = true;
    void draw().catch(stop);
  }, 1000);
  try {
    await draw();
    await api.follow(() => {
      dirty = true;
      void draw().catch(stop);
    }, abort.signal);
  } finally {
    clearInterval(timer);
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  return 0;
}

const getNodes: Command = {
  words: ['get', 'nodes'],
  usage: 'get nodes [-o json]',
  summary: 'every node of the mesh with its state, labels and capacity',
  async run(argv, ctx) {
    const p = parseCommand('get nodes', argv, {});
    expectPositionals('get nodes', p, []);
    const nodes = await client(p).nodes();
    emit(ctx, p.output, nodes, () =>
      renderTable(
        ['NAME', 'STATE', 'CPU', 'MEMORY', 'LABELS', 'VERSION'],
        nodes.map((n) => [
          n.self ? `${n.name} (this)` : n.name,
          [n.state, ...nodeFlags(n)].join(','),
          String(n.capacity.cpu),
          formatBytes(n.capacity.memoryBytes),
          labelsText(n, ','),
          n.version,
        ]),
      ),
    );
    return 0;
  },
};

const describeNode: Command = {
  words: ['describe', 'node'],
  usage: 'describe node NAME [-o json]',
  summary: 'a node: its state, labels, capacity, what its policy allows, and the pod slots it runs',
  async run(argv, ctx) {
    const p = parseCommand('describe node', argv, {});
    const [name] = expectPositionals('describe node', p, ['NAME']);
    const api = client(p);
    const [nodes, pods] = await Promise.all([api.nodes(), api.pods()]);
    const node = nodes.find((n) => n.name === name);
    if (node === undefined) {
      const known = nodes.map((n) => n.name);
      throw new NotFoundError('E_NODE_NOT_FOUND', `no node named "${name}"`, {
        hint:
          known.length === 0
            ? 'No node is known yet.'
            : `Known nodes: ${known.join(', ')} (meshd get nodes).`,
        details: { node: name, known },
      });
    }
    const slots = pods.filter((e) => e.node === node.name);
    emit(ctx, p.output, { node, pods: slots }, () => describeNodeText(node, slots));
    return 0;
  },
};

function describeNodeText(n: NodeEntry, slots: PodEntry[]): string {
  return [
    `Name:      ${n.name}${n.self ? ' (this node)' : ''}`,
    `Peer:      ${n.peerId}`,
    `State:     ${[n.state, ...nodeFlags(n)].join(', ')}`,
    `Version:   ${n.version}`,
    `Joined:    ${n.joinedAt}`,
    `Capacity:  ${n.capacity.cpu} CPU, ${formatBytes(n.capacity.memoryBytes)}`,
    `Labels:    ${labelsText(n, ', ')}`,
    `Addresses: ${n.addrs.join(' ') || '-'}`,
    '',
    "Policy (what this node's operator lets pods ask for):",
    ...policyLines(n.policy).map((l) => `  ${l}`),
    '',
    'Pods:',
    podsTable(slots).replace(/^/gm, '  '),
  ].join('\n');
}

/** `k=v` pairs joined by `sep`; `-` for none. */
function labelsText(n: NodeEntry, sep: string): string {
  return (
    Object.entries(n.labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(sep) || '-'
  );
}

/** The node half of the double opt-in, one line per kind of relaxation; one line when nothing is allowed. */
function policyLines(policy: NodePolicyView): string[] {
  const lines: string[] = [];
  if (policy.hostNetwork) lines.push('hostNetwork: allowed');
  if (policy.unsandboxed) lines.push('unsandboxed: allowed');
  for (const r of policy.hostPaths)
    lines.push(`host path ${r.path} and below: ${r.readOnly ? 'read-only' : 'read-write'}`);
  if (policy.devices.length > 0) lines.push(`devices: ${policy.devices.join(', ')}`);
  if (policy.capabilities.length > 0) lines.push(`capabilities: ${policy.capabilities.join(', ')}`);
  return lines.length > 0 ? lines : ['nothing beyond the sandbox defaults'];
}

const labelNode: Command = {
  words: ['label', 'node'],
  usage: 'label node NAME key=value... key-...',
  summary: "set (key=value) or remove (key-) a node's labels, from any peer",
  async run(argv, ctx) {
    const p = parseCommand('label node', argv, {});
    const [name, ...edits] = p.positionals;
    if (name === undefined || edits.length === 0) {
      throw new UsageError(
        'label node: give a node name and at least one key=value or key-',
        'Example: meshd label node nas zone=home disk-',
      );
    }
    const set: Record<string, string> = {};
    const remove: string[] = [];
    for (const edit of edits) {
      const eq = edit.indexOf('=');
      if (eq > 0) set[edit.slice(0, eq)] = edit.slice(eq + 1);
      else if (edit.endsWith('-') && edit.length > 1) remove.push(edit.slice(0, -1));
      else
        throw new UsageError(
          `label node: ${JSON.stringify(edit)} is neither key=value nor key-`,
          'Example: meshd label node nas zone=home disk-',
        );
    }
    const node = await client(p).labelNode(name, { set, remove });
    emit(ctx, p.output, node, () => {
      const labels = Object.entries(node.labels).map(([k, v]) => `${k}=${v}`);
      return `node "${node.name}" labelled: ${labels.length === 0 ? '(no labels)' : labels.join(', ')}`;
    });
    return 0;
  },
};

const nodeActionSummaries = {
  cordon: 'take no new pods on this node (it keeps what it runs)',
  uncordon: 'let the node take pods again',
  drain: 'stop the pods on this node and release them so they start elsewhere',
  forget: 'declare a node dead: its best-effort pods may move (ha pods move on their own)',
} as const;

const nodeActions: Command[] = (Object.keys(nodeActionSummaries) as (keyof typeof nodeActionSummaries)[]).map(
  (action) => ({
    words: ['node', action],
    usage: `node ${action} NAME`,
    summary: nodeActionSummaries[action],
    async run(argv, ctx) {
      const p = parseCommand(`node ${action}`, argv, {});
      const [name] = expectPositionals(`node ${action}`, p, ['NAME']);
      const node = await client(p).nodeAction(name ?? '', action);
      emit(ctx, p.output, node, () => `node "${node.name}": ${nodeFlags(node).join(', ') || 'schedulable'}`);
      return 0;
    },
  }),
);

const nodeRemove: Command = {
  words: ['node', 'remove'],
  usage: 'node remove NAME',
  summary:
    'remove a machine for good: peers refuse it, and the mesh key is rotated so its token stops working',
  async run(argv, ctx) {
    const p = parseCommand('node remove', argv, {});
    const [name] = expectPositionals('node remove', p, ['NAME']);
    const r = await client(p).removeNode(name ?? '');
    emit(ctx, p.output, r, () =>
      [
        `node "${r.node}" removed (peer ${r.peerId}); every member refuses it from now on.`,
        `mesh key rotated to epoch ${r.keyEpoch}; sent to ${r.sentTo.length === 0 ? 'no peer (none connected)' : r.sentTo.join(', ')}.`,
        ...(r.notReached.length === 0
          ? []
          : [
              `not connected here: ${r.notReached.join(', ')}. They get the key from any member that has it; one that`,
              'stays offline until every member switched must rejoin: `meshd token` here, then `meshd join TOKEN` there.',
            ]),
        'Join tokens printed before now are stale; `meshd token` prints a current one.',
      ].join('\n'),
    );
    return 0;
  },
};

function nodeFlags(n: NodeEntry): string[] {
  return [
    n.cordoned && !n.draining ? 'cordoned' : '',
    n.draining ? 'draining' : '',
    n.removed ? 'removed' : n.forgotten ? 'forgotten' : '',
  ].filter((f) => f !== '');
}

export const meshCommands: Command[] = [peers, getNodes, describeNode, labelNode, ...nodeActions, nodeRemove];
