// Commands to watch the mesh: `dashboard` (the dashboard's link, with its token) and `top` (pods per node with CPU and memory).

import { ApiClient, type NodeEntry, type PodEntry, type StatusView } from '../api/client.ts';
import { DataDir } from '../daemon/data-dir.ts';
import { DaemonError } from '../shared/errors.ts';
import {
  boolFlag,
  expectPositionals,
  type Parsed,
  parseCommand,
  parseDurationFlag,
  stringFlag,
} from './args.ts';
import { type Command, emit } from './main.ts';
import { cpuPercent, readParents, readTreeUsage, type TreeUsage } from './process-usage.ts';
import { formatBytes, renderTable } from './table.ts';

function client(p: Parsed): ApiClient {
  const dir = new DataDir(p.dataDir);
  return new ApiClient({ socketPath: dir.socketPath, dataDir: dir.path });
}

const dashboard: Command = {
  words: ['dashboard'],
  usage: 'dashboard [-o json]',
  summary:
    "the link to this node's dashboard (live peer map, pods, history, rollback); it carries a secret token",
  async run(argv, ctx) {
    const p = parseCommand('dashboard', argv, {});
    expectPositionals('dashboard', p, []);
    const view = await client(p).dashboard();
    if (!view.listening || view.url === null) {
      throw new DaemonError(
        'E_NO_DASHBOARD',
        `the dashboard is not running: ${view.problem ?? 'unknown reason'}`,
        {
          hint: view.problem?.includes('turned off')
            ? 'Turn it on: `meshd down && meshd up --detach --dashboard-port 7947`.'
            : 'Restart the node on another port: `meshd down && meshd up --detach --dashboard-port 0` (0 picks a free one).',
        },
      );
    }
    emit(ctx, p.output, view, () => view.url ?? '');
    if (p.output === 'text') {
      ctx.err('Open it in a browser on this machine. The link carries the dashboard token: do not share it.');
      ctx.err(`(To revoke every link: delete ${view.tokenFile} and restart the node.)`);
    }
    return 0;
  },
};

interface Sample {
  at: number;
  status: StatusView;
  nodes: NodeEntry[];
  pods: PodEntry[];
  /** Per local pod slot with a pid: its process tree's usage. */
  usage: Map<string, TreeUsage>;
}

export interface TopRow {
  node: string;
  state: string;
  pod: string | null;
  slot: number | null;
  replicas: number | null;
  phase: string | null;
  pid: number | null;
  /** Measured only for the pods this node runs; null elsewhere or before a second sample. */
  cpuPercent: number | null;
  rssBytes: number | null;
}

const slotKey = (e: PodEntry) => `${e.name}/${e.slot}/${e.pid}`;

async function sample(api: ApiClient): Promise<Sample> {
  const [status, nodes, pods] = await Promise.all([api.status(), api.nodes(), api.pods()]);
  const parents = readParents();
  const usage = new Map<string, TreeUsage>();
  for (const e of pods) {
    if (e.node !== status.name || e.pid === null) continue;
    const u = readTreeUsage(e.pid, parents);
    if (u !== undefined) usage.set(slotKey(e), u);
  }
  return { at: Date.now(), status, nodes, pods, usage };
}

/** One row per pod slot, grouped by node (nodes without pods get one empty row); unplaced slots last. */
export function topRows(now: Sample, before: Sample | undefined): TopRow[] {
  const rows: TopRow[] = [];
  const slotRow = (e: PodEntry, node: string, state: string): TopRow => {
    const u = now.usage.get(slotKey(e));
    const prev = before?.usage.get(slotKey(e));
    return {
      node,
      state,
      pod: e.name,
      slot: e.slot,
      replicas: e.replicas,
      phase: e.phase,
      pid: e.pid,
      cpuPercent:
        u === undefined || prev === undefined || before === undefined
          ? null
          : Math.round(cpuPercent(prev.cpuTicks, u.cpuTicks, now.at - before.at) * 10) / 10,
      rssBytes: u?.rssBytes ?? null,
    };
  };
  const nodes = [...now.nodes].sort((a, b) => (a.self ? -1 : b.self ? 1 : a.name.localeCompare(b.name)));
  for (const n of nodes) {
    const here = now.pods.filter((e) => e.node === n.name);
    if (here.length === 0) {
      rows.push({
        node: n.name,
        state: n.state,
        pod: null,
        slot: null,
        replicas: null,
        phase: null,
        pid: null,
        cpuPercent: null,
        rssBytes: null,
      });
    }
    for (const e of here) rows.push(slotRow(e, n.name, n.state));
  }
  for (const e of now.pods.filter((x) => x.node === null || !now.nodes.some((n) => n.name === x.node))) {
    rows.push(slotRow(e, e.node ?? '-', e.node === null ? 'not placed' : 'unknown node'));
  }
  return rows;
}

function topText(now: Sample, rows: TopRow[], intervalMs: number): string {
  const self = now.status.name;
  const dash = (v: string | null) => v ?? '-';
  const table = renderTable(
    ['NODE', 'STATE', 'POD', 'SLOT', 'PHASE', 'PID', 'CPU', 'MEMORY'],
    rows.map((r) => [
      r.node === self ? `${r.node} (this)` : r.node,
      r.state,
      r.pod ?? '(no pods)',
      r.slot === null ? '-' : `${r.slot}/${r.replicas}`,
      dash(r.phase),
      r.pid === null ? '-' : String(r.pid),
      r.cpuPercent === null ? '-' : `${r.cpuPercent.toFixed(1)}%`,
      r.rssBytes === null ? '-' : formatBytes(r.rssBytes),
    ]),
  );
  const notes: string[] = [];
  const measured = rows.filter((r) => r.node === self && r.rssBytes !== null).length;
  if (measured === 0) notes.push(`no pod process runs on node ${self} yet: CPU and memory show '-'.`);
  if (rows.some((r) => r.node !== self && r.pod !== null)) {
    notes.push('CPU and memory are measured only for pods this node runs; run `meshd top` on the others.');
  }
  return [
    `node ${self} · ${new Date(now.at)
      .toISOString()
      .replace('T', ' ')
      .replace(/\.\d+Z$/, 'Z')} · CPU over ${(intervalMs / 1000).toFixed(1)} s`,
    table,
    ...notes,
  ].join('\n');
}

const top: Command = {
  words: ['top'],
  usage: 'top [--once] [--interval 2s] [-o json]',
  summary: 'pods per node, live: phase, pid, CPU and memory of the pods this node runs (Ctrl-C stops)',
  async run(argv, ctx) {
    const p = parseCommand('top', argv, { once: { type: 'boolean' }, interval: { type: 'string' } });
    expectPositionals('top', p, []);
    const intervalMs = Math.max(200, parseDurationFlag('interval', stringFlag(p, 'interval'), 2000));
    const once = boolFlag(p, 'once');
    const api = client(p);
    const abort = new AbortController();
    const stop = () => abort.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      let before = await sample(api);
      while (!abort.signal.aborted) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, intervalMs);
          abort.signal.addEventListener('abort', () => {
            clearTimeout(t);
            resolve();
          });
        });
        if (abort.signal.aborted) break;
        const now = await sample(api);
        const rows = topRows(now, before);
        before = now;
        const value = { node: now.status.name, at: new Date(now.at).toISOString(), intervalMs, rows };
        if (once) {
          emit(ctx, p.output, value, () => topText(now, rows, intervalMs));
          break;
        }
        if (p.output === 'json') ctx.out(JSON.stringify(value));
        else
          emit(
            ctx,
            p.output,
            value,
            () => `${process.stdout.isTTY ? '\x1b[H\x1b[2J' : ''}${topText(now, rows, intervalMs)}`,
          );
      }
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
    return 0;
  },
};

export const dashboardCommands: Command[] = [dashboard, top];
