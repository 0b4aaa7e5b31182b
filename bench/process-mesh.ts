// A mesh of real `meshd` processes for benchmarks: set up through the CLI on fixed loopback ports, read through each node's local API.

import { ApiClient } from '../src/api/client.ts';
import { DataDir } from '../src/daemon/data-dir.ts';
import { initMesh, joinMesh } from '../src/daemon/mesh-setup.ts';
import { freePort, MeshFixture } from '../test/support/meshd-cli.ts';
import { waitFor } from '../test/support/wait-for.ts';

/** A fixed loopback listen address (a port free a moment ago). */
async function loopbackAddr(): Promise<string> {
  return `/ip4/127.0.0.1/tcp/${await freePort()}`;
}

export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

export interface Spread {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export function spread(values: readonly number[]): Spread {
  const s = [...values].sort((a, b) => a - b);
  return {
    p50: Math.round(percentile(s, 50)),
    p90: Math.round(percentile(s, 90)),
    p99: Math.round(percentile(s, 99)),
    max: Math.round(s.at(-1) ?? Number.NaN),
  };
}

export interface ProcessMesh {
  readonly fixture: MeshFixture;
  /** Node names, `n0` (the founder) first. */
  readonly names: readonly string[];
  api(name: string): ApiClient;
  /** Waits until every running node sees `expected` nodes ready. */
  settle(running: readonly string[], expected: number, timeoutMs?: number): Promise<void>;
}

/**
 * Starts `count` daemons with `meshd up --detach` (data dirs made as `init` and `join` make them, joiners
 * with the founder's token), each on a fixed loopback port so that a restarted node comes back at the
 * address its peers remember. Fields of `config` are merged into every node's meshd.json first.
 */
export async function startProcessMesh(
  count: number,
  opts: { prefix: string; config?: Record<string, unknown> },
): Promise<ProcessMesh> {
  const fixture = await MeshFixture.create(opts.prefix);
  const names = Array.from({ length: count }, (_, i) => `n${i}`);
  const apis = new Map(
    names.map((n) => {
      const dir = new DataDir(fixture.dataDir(n));
      return [n, new ApiClient({ socketPath: dir.socketPath, dataDir: dir.path, timeoutMs: 30_000 })];
    }),
  );
  const mesh: ProcessMesh = {
    fixture,
    names,
    api(name) {
      const a = apis.get(name);
      if (a === undefined) throw new Error(`no node ${name}`);
      return a;
    },
    async settle(running, expected, timeoutMs = 120_000) {
      for (const n of running) {
        await waitFor(
          async () => (await mesh.api(n).nodes()).filter((x) => x.state === 'ready').length === expected,
          { timeoutMs, intervalMs: 100, what: `${n} to see ${expected} ready nodes` },
        );
      }
    },
  };
  try {
    // Data dirs are made as `meshd init` / `meshd join` make them, then configured, then started with `meshd up`.
    const start = async (name: string) => {
      const dir = new DataDir(fixture.dataDir(name));
      if (opts.config !== undefined) dir.writeConfig({ ...dir.readConfig(), ...opts.config });
      await fixture.ok(name, ['up', '--detach', '--dashboard-port', 'off']);
    };
    const founder = names[0] as string;
    await initMesh(new DataDir(fixture.dataDir(founder)), {
      meshName: 'bench',
      nodeName: founder,
      listen: [await loopbackAddr()],
    });
    await start(founder);
    const token = await mesh.api(founder).token();
    for (const n of names.slice(1)) {
      await joinMesh(new DataDir(fixture.dataDir(n)), token, { nodeName: n, listen: [await loopbackAddr()] });
      await start(n);
    }
    await mesh.settle(names, count);
  } catch (err) {
    await fixture.cleanup();
    throw err;
  }
  return mesh;
}
