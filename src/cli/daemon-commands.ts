// Commands that create, join, start and stop the local daemon: init, join, start, up, down, token, status.

import { resolve } from 'node:path';
import { ApiClient } from '../api/client.ts';
import { DataDir } from '../daemon/data-dir.ts';
import { initMesh, joinMesh } from '../daemon/mesh-setup.ts';
import { loadNodePolicy } from '../daemon/node-policy-file.ts';
import { DaemonError, TokenError } from '../shared/errors.ts';
import {
  boolFlag,
  expectPositionals,
  listFlag,
  type Parsed,
  parseCommand,
  parseDurationFlag,
  stringFlag,
} from './args.ts';
import { dashboardPortFlag, dashboardPortFlags } from './dashboard-port-flag.ts';
import { startDetached } from './detach.ts';
import { type Command, emit } from './main.ts';
import { renderTable } from './table.ts';

const policyFlags = { policy: { type: 'string' } } as const;

const setupFlags = {
  'node-name': { type: 'string' },
  listen: { type: 'string', multiple: true },
  detach: { type: 'boolean', short: 'd' },
  timeout: { type: 'string' },
  ...dashboardPortFlags,
  ...policyFlags,
} as const;

/**
 * `--policy FILE` of init/join/up/start: the node policy file is read and validated now, before anything
 * is written; returns what records it (absolute) in meshd.json once that exists, where every later start
 * (`up`, `--detach`, a restart) finds it. A no-op without the flag.
 */
function policyFlag(p: Parsed): (dir: DataDir) => void {
  const value = stringFlag(p, 'policy');
  if (value === undefined) return () => {};
  const file = resolve(value);
  loadNodePolicy({ dataDir: p.dataDir, file });
  return (dir) => {
    const config = dir.readConfig();
    if (config.policyFile !== file) dir.writeConfig({ ...config, policyFile: file });
  };
}

/** Runs the daemon in this process (lazy import: only daemon-running commands load the mesh stack). */
async function runHere(dir: DataDir, printToken: boolean): Promise<number> {
  const { runForeground } = await import('../daemon/run-foreground.ts');
  return runForeground(dir, { printToken });
}

function client(dir: DataDir, timeoutMs?: number): ApiClient {
  return new ApiClient({
    socketPath: dir.socketPath,
    dataDir: dir.path,
    ...(timeoutMs ? { timeoutMs } : {}),
  });
}

const init: Command = {
  words: ['init'],
  usage:
    'init [--name MESH] [--node-name NAME] [--listen ADDR]... [--dashboard-port PORT|0|off] [--policy FILE] [--detach]',
  summary: 'create a new mesh with this machine as its first node; prints the join token',
  async run(argv, ctx) {
    const p = parseCommand('init', argv, { ...setupFlags, name: { type: 'string' } });
    expectPositionals('init', p, []);
    const dir = new DataDir(p.dataDir);
    const rememberDashboardPort = dashboardPortFlag(p);
    const rememberPolicy = policyFlag(p);
    await initMesh(dir, {
      meshName: stringFlag(p, 'name'),
      nodeName: stringFlag(p, 'node-name'),
      listen: listFlag(p, 'listen'),
    });
    rememberDashboardPort(dir.path);
    rememberPolicy(dir);
    if (!boolFlag(p, 'detach')) return runHere(dir, true);
    const status = await startDetached(dir, {
      timeoutMs: parseDurationFlag('timeout', stringFlag(p, 'timeout'), 30_000),
      until: (s) => s.ready,
      waitingFor: 'the daemon to start',
      timeoutHint: 'The machine may be overloaded, or the listen address unusable.',
    });
    ctx.out(`mesh "${status.mesh.name}" created; node "${status.name}" is up (pid ${status.pid}).`);
    ctx.out('join token (run `meshd join TOKEN` on another machine):');
    ctx.out(await client(dir).token());
    return 0;
  },
};

const join: Command = {
  words: ['join'],
  usage:
    'join TOKEN [--node-name NAME] [--listen ADDR]... [--dashboard-port PORT|0|off] [--policy FILE] [--detach] [--timeout 30s]',
  summary: 'join an existing mesh with a token from any member and run the daemon',
  async run(argv, ctx) {
    const p = parseCommand('join', argv, setupFlags);
    const [token] = expectPositionals('join', p, ['TOKEN']);
    const dir = new DataDir(p.dataDir);
    const rememberDashboardPort = dashboardPortFlag(p);
    const rememberPolicy = policyFlag(p);
    const config = await joinMesh(dir, token ?? '', {
      nodeName: stringFlag(p, 'node-name'),
      listen: listFlag(p, 'listen'),
    });
    rememberDashboardPort(dir.path);
    rememberPolicy(dir);
    if (!boolFlag(p, 'detach')) return runHere(dir, false);
    const status = await startDetached(dir, {
      timeoutMs: parseDurationFlag('timeout', stringFlag(p, 'timeout'), 30_000),
      // synced, not merely connected: a member that refuses us (we were removed) accepts the handshake first
      until: (s) => s.ready && s.syncedPeers > 0,
      waitingFor: `a peer of mesh "${config.meshName}" (tried ${config.bootstrap.length} address(es) from the token)`,
      timeoutHint:
        'Check that a member is running (`meshd status` there) and reachable from here, or get a fresh token with `meshd token` on a member.',
      failFast: (s) =>
        s.keyProblem?.code === 'E_MESH_KEY_STALE'
          ? new TokenError('E_TOKEN_STALE', `the join token is stale: ${s.keyProblem.message}`, {
              hint: 'Run `meshd token` on a current member and join again with that token (the same command, same data dir).',
            })
          : s.keyProblem?.code === 'E_NODE_REMOVED'
            ? new TokenError('E_NODE_REMOVED', s.keyProblem.message, { hint: s.keyProblem.hint })
            : undefined,
    });
    ctx.out(
      `joined mesh "${status.mesh.name}" as node "${status.name}" (pid ${status.pid}); ${status.connectedPeers} peer(s) connected.`,
    );
    return 0;
  },
};

const up: Command = {
  words: ['up'],
  usage: 'up [--detach] [--dashboard-port PORT|0|off] [--policy FILE]',
  summary: 'run the daemon from an existing data dir (no peers needed)',
  async run(argv, ctx) {
    const p = parseCommand('up', argv, {
      detach: { type: 'boolean', short: 'd' },
      timeout: { type: 'string' },
      ...dashboardPortFlags,
      ...policyFlags,
    });
    expectPositionals('up', p, []);
    const dir = new DataDir(p.dataDir);
    const rememberDashboardPort = dashboardPortFlag(p);
    const rememberPolicy = policyFlag(p);
    dir.readConfig(); // a clear "no mesh here" error before anything starts
    rememberDashboardPort(dir.path);
    rememberPolicy(dir);
    if (!boolFlag(p, 'detach')) return runHere(dir, false);
    const status = await startDetached(dir, {
      timeoutMs: parseDurationFlag('timeout', stringFlag(p, 'timeout'), 30_000),
      until: () => true,
      waitingFor: 'the daemon to start',
      timeoutHint: 'The machine may be overloaded.',
    });
    ctx.out(`node "${status.name}" is up (pid ${status.pid}).`);
    return 0;
  },
};

const start: Command = {
  words: ['start'],
  usage: 'start [--dashboard-port PORT|0|off] [--policy FILE]',
  summary: 'run the daemon here, creating a new mesh first if the data dir has none (what `npm start` does)',
  async run(argv) {
    const p = parseCommand('start', argv, {
      'node-name': { type: 'string' },
      listen: { type: 'string', multiple: true },
      ...dashboardPortFlags,
      ...policyFlags,
    });
    expectPositionals('start', p, []);
    const dir = new DataDir(p.dataDir);
    const rememberDashboardPort = dashboardPortFlag(p);
    const rememberPolicy = policyFlag(p);
    if (!dir.hasMesh())
      await initMesh(dir, { nodeName: stringFlag(p, 'node-name'), listen: listFlag(p, 'listen') });
    rememberDashboardPort(dir.path);
    rememberPolicy(dir);
    return runHere(dir, true);
  },
};

const down: Command = {
  words: ['down'],
  usage: 'down [--timeout 15s]',
  summary: 'stop the daemon gracefully (pods keep running)',
  async run(argv, ctx) {
    const p = parseCommand('down', argv, { timeout: { type: 'string' } });
    expectPositionals('down', p, []);
    const dir = new DataDir(p.dataDir);
    const pid = dir.runningPid();
    if (pid === undefined) {
      ctx.err(`meshd is not running for data dir ${dir.path}`);
      return 0;
    }
    await client(dir).shutdown();
    const deadline = Date.now() + parseDurationFlag('timeout', stringFlag(p, 'timeout'), 15_000);
    while (dir.runningPid() !== undefined) {
      if (Date.now() > deadline) {
        throw new DaemonError('E_STOP_TIMEOUT', `meshd (pid ${pid}) did not stop in time`, {
          hint: `Look at ${dir.logFile}; as a last resort, kill ${pid}.`,
        });
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    ctx.out(`meshd stopped (pid ${pid}).`);
    return 0;
  },
};

const token: Command = {
  words: ['token'],
  usage: 'token',
  summary: 'print a join token for this mesh',
  async run(argv, ctx) {
    const p = parseCommand('token', argv, {});
    expectPositionals('token', p, []);
    ctx.out(await client(new DataDir(p.dataDir)).token());
    return 0;
  },
};

const status: Command = {
  words: ['status'],
  usage: 'status [-o json]',
  summary: "this node's name, peer id, mesh, addresses and version",
  async run(argv, ctx) {
    const p = parseCommand('status', argv, {});
    expectPositionals('status', p, []);
    const s = await client(new DataDir(p.dataDir)).status();
    emit(ctx, p.output, s, () =>
      renderTable(
        ['FIELD', 'VALUE'],
        [
          ['name', s.name],
          ['peer id', s.peerId],
          ['mesh', `${s.mesh.name} (${s.mesh.id})`],
          ['version', s.version],
          ['state', s.joining ? 'joining' : 'ready'],
          ['peers', String(s.connectedPeers)],
          ['key epoch', String(s.keyEpoch)],
          ...(s.keyProblem === undefined
            ? []
            : [['problem', `${s.keyProblem.message}\n${s.keyProblem.hint}`]]),
          ['addrs', s.addrs.join('\n')],
        ].flatMap(([k, v]) => (v ?? '').split('\n').map((line, i) => [i === 0 ? (k ?? '') : '', line])),
      ),
    );
    return 0;
  },
};

export const daemonCommands: Command[] = [init, join, start, up, down, token, status];
