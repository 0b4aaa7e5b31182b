// A one-node pod world for tests and benchmarks: a signed ObjectStore on a Y.Doc, a real process driver, and cleanup of every supervisor.

import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys';
import * as Y from 'yjs';
import { PodAgent, type PodAgentOptions, pinnedSlots } from '../../src/daemon/pod-agent.ts';
import { removeContainerCgroup } from '../../src/runtime/process/cgroup-limits.ts';
import { liveClock } from '../../src/runtime/process/live-clock.ts';
import { isSameProcess } from '../../src/runtime/process/proc-stat.ts';
import { ProcessDriver, type ProcessDriverOptions } from '../../src/runtime/process/process-driver.ts';
import { readState } from '../../src/runtime/process/supervisor-files.ts';
import { systemClock } from '../../src/shared/clock.ts';
import { createLogger, type Logger, silentLogger } from '../../src/shared/logger.ts';
import { FieldOwnership } from '../../src/state/field-ownership.ts';
import { isPlainObject } from '../../src/state/merge-patch.ts';
import { ObjectStore } from '../../src/state/object-store.ts';
import { parsePodSpec, podStatusKey, podValidators } from '../../src/state/pod-spec.ts';
import { ed25519Signer, peerIdVerifier, type Signer } from '../../src/state/revision-records.ts';
import { waitFor } from './wait-for.ts';

export const NODE = 'node-a';

/** Every supervisor state file (`state.json`) below `dir`; none when `dir` does not exist. */
export function stateFilesUnder(dir: string): string[] {
  const states: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name === 'state.json') states.push(p);
    }
  };
  if (existsSync(dir)) walk(dir);
  return states;
}

/** Kills every supervisor whose state file lies under `dir` and removes their cgroups. */
export async function killSupervisorsUnder(dir: string): Promise<number> {
  const states = stateFilesUnder(dir);
  let killed = 0;
  for (const file of states) {
    const s = await readState(file);
    if (s === undefined) continue;
    if (await isSameProcess(s.supervisorPid, s.supervisorStartTime)) {
      process.kill(s.supervisorPid, 'SIGKILL');
      killed++;
    }
    await waitFor(async () => !(await isSameProcess(s.supervisorPid, s.supervisorStartTime)), {
      timeoutMs: 5000,
      what: `supervisor ${s.supervisorPid} to die`,
    });
    if (s.cgroup !== null) await removeContainerCgroup(s.cgroup.dirs, liveClock);
  }
  return killed;
}

export interface PodWorld {
  readonly dir: string;
  readonly doc: Y.Doc;
  readonly store: ObjectStore;
  readonly signer: Signer;
  readonly driver: ProcessDriver;
  readonly logger: Logger;
  /** A new agent over the world's data dir (a daemon (re)start); `tuning` is merged over quick test tuning. */
  agent(extra?: Partial<PodAgentOptions>): PodAgent;
  /** Applies a pod spec written as YAML. */
  apply(yaml: string): ReturnType<ObjectStore['applyPod']>;
  /** `status.slots.<slot>` of a pod, as the document has it. */
  slot(pod: string, slot?: number): Record<string, unknown> | undefined;
  /** Stops every agent (pods keep running), kills every supervisor, removes the data dir. */
  close(): Promise<void>;
}

const signerSeed = 21;

export async function createPodWorld(
  opts: { root?: string; driver?: ProcessDriverOptions; logLevel?: 'debug' | 'info' } = {},
): Promise<PodWorld> {
  const root = opts.root ?? tmpdir();
  const dir = join(root, `pods-${process.pid}-${randomBytes(3).toString('hex')}`);
  // The sandbox runs as uid 65534 on the host: it must be able to traverse to its work dirs.
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  chmodSync(dir, 0o711);
  const signer = ed25519Signer(await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(signerSeed)));
  const doc = new Y.Doc();
  const store = new ObjectStore(doc, {
    signer,
    verifier: peerIdVerifier(),
    ownership: FieldOwnership.withBuiltins(),
    clock: systemClock,
    host: NODE,
    compaction: false,
    validators: podValidators,
  });
  const logger =
    opts.logLevel === undefined
      ? silentLogger
      : createLogger({ level: opts.logLevel, write: (l) => process.stderr.write(l) });
  const driver = new ProcessDriver({
    compileCacheDir: join(dir, 'compile-cache'),
    backoff: { initialMs: 100, maxMs: 400, resetAfterMs: 60_000 },
    ...opts.driver,
  });
  const agents: PodAgent[] = [];
  const author = { peer: signer.peer, host: NODE, actor: 'tester' };
  return {
    dir,
    doc,
    store,
    signer,
    driver,
    logger,
    agent(extra = {}) {
      const a = new PodAgent({
        objects: store,
        driver,
        node: { name: NODE, peerId: signer.peer },
        clock: systemClock,
        logger,
        dataDir: join(dir, 'agent'),
        desiredSlots: () => pinnedSlots(store, NODE),
        meshNodes: () => [{ name: NODE, reachable: true }],
        ...extra,
        // Quick polls and status writes; a failed start waits (tests ask for retries explicitly).
        tuning: {
          pollMs: 200,
          statusDelayMs: 50,
          retryInitialMs: 60_000,
          stopGraceMs: 3000,
          healthTimeoutMs: 10_000,
          ...extra.tuning,
        },
      });
      agents.push(a);
      return a;
    },
    apply(yaml) {
      return store.applyPod(parsePodSpec(yaml, 'pod.yaml'), author);
    },
    slot(pod, slot = 0) {
      const status = store.get(podStatusKey(pod))?.object?.status;
      if (!isPlainObject(status) || !isPlainObject(status.slots)) return undefined;
      const s = status.slots[String(slot)];
      return isPlainObject(s) ? s : undefined;
    },
    async close() {
      for (const a of agents) await a.stop();
      await killSupervisorsUnder(dir);
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A temp root for a test file's worlds (0711 so the sandbox user can traverse it). */
export function podTestRoot(prefix: string): string {
  const root = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(root, 0o711);
  return root;
}

/** A pod directory and a process driver for driver-level tests. */
export interface DriverPod {
  podKey: string;
  podDir: string;
  logDir: string;
  driver: ProcessDriver;
}

/**
 * A fresh pod directory under `root` (a `podTestRoot`) with its own driver; every supervisor it starts
 * is killed and the directory removed after the test.
 */
export function driverPod(t: TestContext, root: string, opts: ProcessDriverOptions = {}): DriverPod {
  const podKey = `t${process.pid}-${randomBytes(3).toString('hex')}`;
  const dir = join(root, podKey);
  mkdirSync(dir, { mode: 0o711 });
  const driver = new ProcessDriver({ compileCacheDir: join(root, 'compile-cache'), ...opts });
  t.after(async () => {
    await killSupervisorsUnder(dir);
    rmSync(dir, { recursive: true, force: true });
  });
  return { podKey, podDir: join(dir, 'data'), logDir: join(dir, 'logs'), driver };
}
