// Benchmark: a long-lived cluster's revision history — document size, heap, cold load, rollback and apply-to-visible latency.
//
//   npm run bench:revisions -- [--revisions 100000] [--pods 50] [--peers 3] [--rollbacks 200] [--edits 100]
//                              [--mesh] [--save FILE | --from FILE] [--keep N --threshold N --max-summaries N]
//
// Build: `--peers` replicas (Y.Doc + ObjectStore each, default compaction policy) write `--revisions`
// records over `--pods` pods the way a cluster accumulates them: one record at a time through
// ObjectStore.append (signed, judged, compacted by the store past its threshold; no batching), pods
// picked at random (seeded), each pod in turn getting a user spec edit from a random peer and two
// status writes (`slot 0 starting`, `slot 0 running`) from its host's runtime. Every update reaches the
// other replicas synchronously, inside the append call, so `appendMs` includes applying it twice more.
// Then every pod is compacted once more (forced) and:
//
// - document size: Y.encodeStateAsUpdateV2 / V1 bytes before and after that compaction, and how much
//   is Yjs history (tombstones of deleted items, client ids of compactions) rather than live content;
// - heap growth after GC of the replica that wrote everything, and of a process that just loaded it;
// - cold load: a fresh process decodes the V2 state into a new Y.Doc and materializes every pod
//   (ObjectStore.list), as a daemon does at start (wall and CPU time); warm repeats in this process;
// - rollback latency: `--rollbacks` rollbacks, pod after pod, to its oldest restorable user revision,
//   then its second oldest, and so on;
// - apply-to-visible: `--edits` spec edits on one peer until every peer's store shows them; replicas
//   exchange updates through the event loop (one macrotask per hop), or with `--mesh` over real
//   MeshNodes on loopback.
//
// `--save FILE` keeps the built document; `--from FILE` measures a saved one without building (the
// build of 100k revisions takes 15-30 minutes). `--keep`, `--threshold`, `--max-summaries` override
// the compaction policy. Human lines go to stderr; the last stdout line is one JSON object of figures.
// Never passes or fails on time. Node is re-executed with --expose-gc when it is missing.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import * as Y from 'yjs';
import { ManualClock } from '../src/shared/clock.ts';
import { createLogger } from '../src/shared/logger.ts';
import { FieldOwnership } from '../src/state/field-ownership.ts';
import {
  ObjectStore,
  objectArrayName,
  objectBaseMapName,
  objectLogPrefix,
} from '../src/state/object-store.ts';
import { type Pod, parsePodSpec } from '../src/state/pod-spec.ts';
import { type CompactionPolicy, defaultCompactionPolicy } from '../src/state/revision-compaction.ts';
import { canonicalJson, ed25519Signer, peerIdVerifier, type Signer } from '../src/state/revision-records.ts';

const self = fileURLToPath(import.meta.url);
if (typeof globalThis.gc !== 'function') {
  // Heap figures need a real collection before each reading.
  const r = spawnSync(
    process.execPath,
    ['--expose-gc', ...process.execArgv, self, ...process.argv.slice(2)],
    {
      stdio: 'inherit',
    },
  );
  process.exit(r.status ?? 1);
}
const gc = globalThis.gc as () => void;

const { values } = parseArgs({
  options: {
    revisions: { type: 'string', default: '100000' },
    pods: { type: 'string', default: '50' },
    peers: { type: 'string', default: '3' },
    rollbacks: { type: 'string', default: '200' },
    edits: { type: 'string', default: '100' },
    mesh: { type: 'boolean', default: false },
    keep: { type: 'string' },
    threshold: { type: 'string' },
    'max-summaries': { type: 'string' },
    /** Write the built document (V2) here, to measure it again later with --from. */
    save: { type: 'string' },
    /** Measure this saved document instead of building one. */
    from: { type: 'string' },
    /** Internal: the cold-load child process reads this V2 file and prints its figures. */
    load: { type: 'string' },
  },
});

const policy: CompactionPolicy = {
  ...defaultCompactionPolicy,
  ...(values.keep === undefined ? {} : { keep: Number(values.keep) }),
  ...(values.threshold === undefined ? {} : { threshold: Number(values.threshold) }),
  ...(values['max-summaries'] === undefined ? {} : { maxSummaries: Number(values['max-summaries']) }),
};

const log = (line: string) => process.stderr.write(`${line}\n`);
const round1 = (n: number) => Math.round(n * 10) / 10;
const round2 = (n: number) => Math.round(n * 100) / 100;
const mb = (bytes: number) => round1(bytes / (1024 * 1024));

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

function latency(values: readonly number[]): { p50: number; p99: number; max: number; n: number } {
  const s = [...values].sort((a, b) => a - b);
  return {
    p50: round2(percentile(s, 50)),
    p99: round2(percentile(s, 99)),
    max: round1(s.at(-1) ?? Number.NaN),
    n: s.length,
  };
}

function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

async function keyOf(n: number): Promise<PrivateKey> {
  return generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(n + 1));
}

/** Compactions the stores ran by themselves (counted from their log lines). */
let compactions = 0;
const countingLogger = createLogger({
  write: (line) => {
    if (line.includes('"object compacted"')) compactions++;
  },
});

function openStore(doc: Y.Doc, signer: Signer, clock: ManualClock, host: string): ObjectStore {
  return new ObjectStore(doc, {
    signer,
    verifier: peerIdVerifier(),
    ownership: FieldOwnership.withBuiltins(),
    clock,
    host,
    logger: countingLogger,
    compaction: policy,
  });
}

const podName = (i: number) => `web-${String(i).padStart(3, '0')}`;

/** A realistic small pod: one container with env, a port and resources. */
function podSpec(name: string, replicas: number, greeting: string): Pod {
  return parsePodSpec(
    `kind: Pod
name: ${name}
spec:
  containers:
    - name: app
      command: [python3, -m, http.server, "\${PORT_HTTP}"]
      env: { GREETING: ${greeting}, MODE: production }
      ports: [{ name: http }]
      resources: { cpu: 0.25, memory: 64Mi }
  replicas: ${replicas}
`,
    `${name}.yaml`,
  );
}

interface Peer {
  name: string;
  signer: Signer;
  doc: Y.Doc;
  store: ObjectStore;
}

/** Where Yjs spends the bytes: live content re-encoded without history, the delete set, client ids. */
function docFigures(doc: Y.Doc): {
  v2: number;
  v1: number;
  liveV2: number;
  deleteSetV2: number;
  clients: number;
  arrayEntries: number;
  bases: number;
} {
  const v2 = Y.encodeStateAsUpdateV2(doc).byteLength;
  const v1 = Y.encodeStateAsUpdate(doc).byteLength;
  const fresh = new Y.Doc();
  let arrayEntries = 0;
  let bases = 0;
  fresh.transact(() => {
    for (const name of doc.share.keys()) {
      if (name.startsWith(objectLogPrefix) || name.startsWith('obj:')) {
        const items = doc.getArray<unknown>(name).toArray();
        arrayEntries += items.length;
        fresh.getArray<unknown>(name).push(items);
      } else if (name.startsWith('objbase:')) {
        const m = fresh.getMap<unknown>(name);
        for (const [k, v] of doc.getMap<unknown>(name)) {
          m.set(k, v);
          bases++;
        }
      }
    }
  });
  return {
    v2,
    v1,
    liveV2: Y.encodeStateAsUpdateV2(fresh).byteLength,
    deleteSetV2: Y.encodeStateAsUpdateV2(doc, Y.encodeStateVector(doc)).byteLength,
    clients: Y.decodeStateVector(Y.encodeStateVector(doc)).size,
    arrayEntries,
    bases,
  };
}

/** Bytes of one pod's share of the document: its kept records and its bases, as canonical JSON. */
function podJsonBytes(doc: Y.Doc, key: string): { records: number; base: number } {
  const records: unknown[] = [];
  for (const name of doc.share.keys()) {
    if (!name.startsWith(objectLogPrefix) && name !== objectArrayName(key)) continue;
    for (const e of doc.getArray<unknown>(name).toArray())
      if ((e as { object?: string }).object === key) records.push(e);
  }
  const bases = [...doc.getMap<unknown>(objectBaseMapName(key)).values()];
  const size = (xs: unknown[]) => xs.reduce<number>((n, x) => n + canonicalJson(x as never).length, 0);
  return { records: size(records), base: size(bases) };
}

// ---- cold load (child process) --------------------------------------------------------------------

interface LoadFigures {
  loadMs: number;
  /** CPU time of the load (user + system): less sensitive than wall time to other load on the machine. */
  cpuMs: number;
  decodeMs: number;
  materializeMs: number;
  heapGrowthBytes: number;
  pods: number;
}

async function coldLoad(file: string): Promise<LoadFigures> {
  const bytes = new Uint8Array(await readFile(file));
  const signer = ed25519Signer(await keyOf(0));
  const clock = new ManualClock();
  const before = heapAfterGc();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const doc = new Y.Doc();
  Y.applyUpdateV2(doc, bytes);
  const t1 = performance.now();
  const store = openStore(doc, signer, clock, 'p0');
  const pods = store.list('pod').length;
  const t2 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const heapGrowthBytes = heapAfterGc() - before;
  // Keep the loaded state alive until measured.
  if (store.keys().length < 0) log('unreachable');
  return {
    loadMs: t2 - t0,
    cpuMs: (cpu.user + cpu.system) / 1000,
    decodeMs: t1 - t0,
    materializeMs: t2 - t1,
    heapGrowthBytes,
    pods,
  };
}

if (values.load !== undefined) {
  process.stdout.write(`${JSON.stringify(await coldLoad(values.load))}\n`);
  process.exit(0);
}

async function coldLoadInChild(file: string): Promise<LoadFigures> {
  const args = ['--expose-gc', self, '--load', file];
  for (const k of ['keep', 'threshold', 'max-summaries'] as const) {
    const v = values[k];
    if (v !== undefined) args.push(`--${k}`, v);
  }
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`cold-load child exited with ${code}`);
  return JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as LoadFigures;
}

// ---- the benchmark ---------------------------------------------------------------------------------

/** Writes the history (see the header), compacts every pod once more and returns the document with its figures. */
async function build(clock: ManualClock): Promise<{ encoded: Uint8Array; figures: Record<string, unknown> }> {
  const revisions = Number(values.revisions);
  const podCount = Number(values.pods);
  const peerCount = Math.max(1, Number(values.peers));
  const heapAtStart = heapAfterGc();

  const peers: Peer[] = [];
  for (let i = 0; i < peerCount; i++) {
    const signer = ed25519Signer(await keyOf(i));
    const doc = new Y.Doc();
    peers.push({ name: `p${i}`, signer, doc, store: openStore(doc, signer, clock, `p${i}`) });
  }
  // Every replica receives every update at once, as a well-connected mesh nearly does.
  for (const p of peers) {
    p.doc.on('update', (u: Uint8Array, origin: unknown) => {
      if (origin === 'remote') return;
      for (const q of peers) if (q !== p) Y.applyUpdate(q.doc, u, 'remote');
    });
  }
  const appendMs: number[] = [];
  const built = performance.now();
  log(
    `writing ${revisions} revisions over ${podCount} pods from ${peerCount} peers ` +
      `(policy threshold ${policy.threshold}, keep ${policy.keep}, maxSummaries ${policy.maxSummaries})`,
  );
  let lastProgress = built;
  // Seeded, so runs compare; irregular, as a real cluster's writes are (a fixed round-robin lets Yjs
  // run-length encode its history far better than real traffic would).
  const rand = mulberry32(1);
  const turns = new Array<number>(podCount).fill(0);
  for (let r = 0; r < revisions; r++) {
    // Every pod is created first; then any pod, at random.
    const pod = r < podCount ? r : Math.floor(rand() * podCount);
    const turn = turns[pod] ?? 0;
    turns[pod] = turn + 1;
    const key = `pod/${podName(pod)}`;
    const user = peers[Math.floor(rand() * peerCount)] as Peer;
    const runtime = peers[pod % peerCount] as Peer;
    clock.advance(60_000 / podCount);
    const t0 = performance.now();
    if (turn % 3 === 0) {
      const edit = Math.floor(turn / 3);
      user.store.applyPod(
        podSpec(podName(pod), 1 + (edit % 3), `g${edit}`),
        { peer: user.signer.peer, host: user.name, actor: edit % 2 === 0 ? 'alice' : 'bob' },
        edit === 0 ? 'create' : edit % 5 === 0 ? `scale to ${1 + (edit % 3)}` : undefined,
      );
    } else {
      const running = turn % 3 === 2;
      runtime.store.append(key, {
        controller: 'runtime',
        kind: 'system',
        author: { peer: runtime.signer.peer, host: runtime.name, actor: 'runtime' },
        message: `slot 0 ${running ? 'running' : 'starting'}`,
        patch: {
          status: {
            slots: {
              '0': {
                node: runtime.name,
                phase: running ? 'running' : 'starting',
                ports: running ? { http: 20000 + pod } : {},
                restarts: Math.floor(turn / 30),
                updatedAt: clock.now(),
                ...(running ? { runningRevision: String(turn - 1), pid: 1000 + turn } : {}),
              },
            },
          },
        },
      });
    }
    appendMs.push(performance.now() - t0);
    if (performance.now() - lastProgress > 10_000) {
      lastProgress = performance.now();
      const v2 = Y.encodeStateAsUpdateV2(peers[0]?.doc as Y.Doc).byteLength;
      log(
        `  ${r + 1}/${revisions} after ${Math.round((lastProgress - built) / 1000)} s, ` +
          `document ${Math.round(v2 / 1024)} kB (V2)`,
      );
    }
  }
  const buildMs = performance.now() - built;
  const builtCompactions = compactions;
  const first = peers[0] as Peer;
  log(
    `wrote ${revisions} revisions in ${Math.round(buildMs / 1000)} s; append ${JSON.stringify(latency(appendMs))} ms`,
  );

  // Every replica must show the same pods before anything is measured.
  for (const p of peers.slice(1)) {
    for (const key of first.store.keys('pod')) {
      const a = first.store.get(key);
      const b = p.store.get(key);
      if (
        canonicalJson(a?.object ?? null) !== canonicalJson(b?.object ?? null) ||
        a?.revision !== b?.revision
      )
        throw new Error(`${p.name} differs from p0 on ${key}`);
    }
  }

  const before = docFigures(first.doc);
  const compactStarted = performance.now();
  for (const key of first.store.keys('pod')) first.store.compact(key, policy, true);
  const finalCompactMs = performance.now() - compactStarted;
  log(
    `document before the final compaction: V2 ${Math.round(before.v2 / 1024)} kB, V1 ${Math.round(before.v1 / 1024)} kB ` +
      `(live content ${Math.round(before.liveV2 / 1024)} kB, ${before.arrayEntries} records kept, ${before.clients} Yjs clients)`,
  );
  const encoded = Y.encodeStateAsUpdateV2(first.doc);
  // Heap of the replica that lived through every write (the others dropped first).
  for (const p of peers.slice(1)) {
    p.store.close();
    p.doc.destroy();
  }
  peers.length = 1;
  const longLivedHeap = heapAfterGc() - heapAtStart;
  first.store.close();
  first.doc.destroy();
  peers.length = 0;
  return {
    encoded,
    figures: {
      revisions,
      buildSeconds: Math.round(buildMs / 1000),
      appendMs: latency(appendMs),
      compactions: builtCompactions,
      finalCompactionMs: Math.round(finalCompactMs),
      beforeFinalCompaction: {
        v2Bytes: before.v2,
        v1Bytes: before.v1,
        liveV2Bytes: before.liveV2,
        records: before.arrayEntries,
        yjsClients: before.clients,
      },
      longLivedWriterHeapGrowthMb: mb(longLivedHeap),
    },
  };
}

/** Sizes of the document, cold load, rollbacks and apply-to-visible, from its encoded state. */
async function measure(encoded: Uint8Array, clock: ManualClock): Promise<Record<string, unknown>> {
  const podCount = Number(values.pods);
  const peerCount = Math.max(1, Number(values.peers));
  const sample = `pod/${podName(0)}`;
  const loaded = await loadPeer(encoded, 0, clock);
  const after = docFigures(loaded.doc);
  const m = loaded.store.get(sample);
  const perPod = podJsonBytes(loaded.doc, sample);
  loaded.store.close();
  loaded.doc.destroy();
  log(
    `document: V2 ${Math.round(after.v2 / 1024)} kB, V1 ${Math.round(after.v1 / 1024)} kB ` +
      `(live content ${Math.round(after.liveV2 / 1024)} kB, Yjs history ${Math.round((after.v2 - after.liveV2) / 1024)} kB, ` +
      `delete set ${Math.round(after.deleteSetV2 / 1024)} kB, ${after.clients} clients)`,
  );
  log(
    `${sample}: ${m?.history.length} history entries, ${m?.history.filter((h) => !h.compacted).length} full, ` +
      `${m?.history.filter((h) => (h as { restorable?: boolean }).restorable === true).length ?? 0} restore points, ` +
      `dropped ${m?.dropped?.count ?? 0}; JSON bytes: records ${perPod.records}, base ${perPod.base}`,
  );
  const dir = await mkdtemp(join(tmpdir(), 'meshd-bench-revisions-'));
  try {
    const file = join(dir, 'doc.v2');
    await writeFile(file, encoded);
    const cold = await coldLoadInChild(file);
    log(
      `cold load in a fresh process: ${round1(cold.loadMs)} ms, CPU ${round1(cold.cpuMs)} ms (decode ${round1(cold.decodeMs)}, ` +
        `materialize ${cold.pods} pods ${round1(cold.materializeMs)}); heap +${mb(cold.heapGrowthBytes)} MB`,
    );
    const warm: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const doc = new Y.Doc();
      Y.applyUpdateV2(doc, encoded);
      const s = openStore(doc, ed25519Signer(await keyOf(0)), clock, 'p0');
      s.list('pod');
      warm.push(performance.now() - t0);
      s.close();
      doc.destroy();
    }

    // Rollback of each pod in turn to a restorable user revision (a full record, or a restore point of
    // the base), oldest first, on a freshly loaded replica.
    const rollbackMs: number[] = [];
    const rollbackCpuMs: number[] = [];
    const rollbackPeer = await loadPeer(encoded, 0, clock);
    const me = { peer: rollbackPeer.signer.peer, host: 'p0', actor: 'alice' };
    let restored = 0;
    let fromRestorePoint = 0;
    const rollbacks = Number(values.rollbacks);
    for (let i = 0; i < rollbacks; i++) {
      const key = `pod/${podName(i % podCount)}`;
      const h = rollbackPeer.store.get(key)?.history ?? [];
      const targets = h.filter(
        (e) =>
          e.rejected === undefined &&
          (e.kind === 'user' || e.kind === 'rollback') &&
          (!e.compacted || (e as { restorable?: boolean }).restorable === true),
      );
      // The oldest first, then the next one, and so on: each rollback of a pod changes its spec.
      const target = targets[Math.floor(i / podCount) % Math.max(1, targets.length)];
      if (target === undefined) throw new Error(`${key} has no revision to roll back to`);
      if (target.compacted) fromRestorePoint++;
      clock.advance(1000);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const rec = rollbackPeer.store.rollback(key, target.revision, me);
      rollbackMs.push(performance.now() - t0);
      const cpu = process.cpuUsage(cpu0);
      rollbackCpuMs.push((cpu.user + cpu.system) / 1000);
      if (rec !== undefined) restored++;
    }
    log(
      `rollback to restorable user revisions: ${JSON.stringify(latency(rollbackMs))} ms ` +
        `(CPU ${JSON.stringify(latency(rollbackCpuMs))} ms) ` +
        `(${restored} wrote a record, ${fromRestorePoint} from a restore point)`,
    );
    // Rolling back to a compacted revision without a restore point is refused with the reason.
    let compactedRefusal = '';
    const gone = rollbackPeer.store
      .get(sample)
      ?.history.find((h) => h.compacted && (h as { restorable?: boolean }).restorable !== true);
    if (gone !== undefined) {
      try {
        rollbackPeer.store.rollback(sample, gone.revision, me);
      } catch (err) {
        compactedRefusal = `${(err as { code?: string }).code}: ${(err as Error).message}`;
      }
    }
    log(`rollback to compacted revision ${gone?.revision}: ${compactedRefusal}`);
    rollbackPeer.store.close();
    rollbackPeer.doc.destroy();

    const visible = values.mesh
      ? await applyToVisibleMesh(encoded, peerCount, Number(values.edits), clock)
      : await applyToVisibleInProcess(encoded, peerCount, Number(values.edits), clock);
    log(
      `apply-to-visible on all ${peerCount} peers (${values.mesh ? 'MeshNodes on loopback' : 'in-process, one macrotask per hop'}): ` +
        `${JSON.stringify(visible)} ms`,
    );

    return {
      pods: podCount,
      peers: peerCount,
      policy,
      encodedV2Bytes: after.v2,
      encodedV1Bytes: after.v1,
      liveContentV2Bytes: after.liveV2,
      yjsHistoryV2Bytes: after.v2 - after.liveV2,
      deleteSetV2Bytes: after.deleteSetV2,
      yjsClients: after.clients,
      recordsKept: after.arrayEntries,
      samplePod: {
        history: m?.history.length ?? 0,
        full: m?.history.filter((h) => !h.compacted).length ?? 0,
        restorePoints:
          m?.history.filter((h) => (h as { restorable?: boolean }).restorable === true).length ?? 0,
        dropped: m?.dropped?.count ?? 0,
        recordJsonBytes: perPod.records,
        baseJsonBytes: perPod.base,
      },
      coldLoadedHeapGrowthMb: mb(cold.heapGrowthBytes),
      coldLoadMs: round1(cold.loadMs),
      coldLoadCpuMs: round1(cold.cpuMs),
      coldLoad: {
        decodeMs: round1(cold.decodeMs),
        materializeMs: round1(cold.materializeMs),
        warmMs: latency(warm),
      },
      rollbackMs: latency(rollbackMs),
      rollbackCpuMs: latency(rollbackCpuMs),
      rollbacksFromRestorePoint: fromRestorePoint,
      rollbackToCompacted: compactedRefusal,
      applyToVisibleMs: { ...visible, transport: values.mesh ? 'meshnode-loopback' : 'in-process' },
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const clock = new ManualClock();
  let built: Awaited<ReturnType<typeof build>>;
  if (values.from !== undefined) {
    built = { encoded: new Uint8Array(await readFile(values.from)), figures: { from: values.from } };
    log(`measuring the document in ${values.from} (no build)`);
  } else {
    built = await build(clock);
    if (values.save !== undefined) await writeFile(values.save, built.encoded);
  }
  const measured = await measure(built.encoded, clock);
  process.stdout.write(`${JSON.stringify({ ...built.figures, ...measured })}\n`);
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function loadPeer(encoded: Uint8Array, i: number, clock: ManualClock): Promise<Peer> {
  const signer = ed25519Signer(await keyOf(i));
  const doc = new Y.Doc();
  Y.applyUpdateV2(doc, encoded);
  return { name: `p${i}`, signer, doc, store: openStore(doc, signer, clock, `p${i}`) };
}

/** Resolves when every peer's store shows revision `lamport` (or later) of `key`. */
function visibleOnAll(peers: readonly Peer[], key: string, lamport: number, t0: number): Promise<number> {
  return new Promise((resolve) => {
    const pending = new Set(peers);
    const offs: (() => void)[] = [];
    const check = (p: Peer) => {
      if (!pending.has(p) || (p.store.get(key)?.revisionNumber ?? 0) < lamport) return;
      pending.delete(p);
      if (pending.size === 0) {
        for (const off of offs) off();
        resolve(performance.now() - t0);
      }
    };
    for (const p of peers) offs.push(p.store.onChange((keys) => keys.includes(key) && check(p)));
    for (const p of peers) check(p);
  });
}

async function measureEdits(
  peers: readonly Peer[],
  edits: number,
  clock: ManualClock,
): Promise<ReturnType<typeof latency>> {
  const origin = peers[0] as Peer;
  const ms: number[] = [];
  for (let e = 0; e < edits; e++) {
    const name = podName(e % Number(values.pods));
    const key = `pod/${name}`;
    clock.advance(1000);
    const t0 = performance.now();
    const lamport = (origin.store.get(key)?.maxLamport ?? 0) + 1;
    const done = visibleOnAll(peers, key, lamport, t0);
    origin.store.applyPod(podSpec(name, 1 + (e % 3), `edit${e}`), {
      peer: origin.signer.peer,
      host: origin.name,
      actor: 'alice',
    });
    ms.push(await done);
  }
  return latency(ms);
}

async function applyToVisibleInProcess(
  encoded: Uint8Array,
  peerCount: number,
  edits: number,
  clock: ManualClock,
): Promise<ReturnType<typeof latency>> {
  const peers = await Promise.all(Array.from({ length: peerCount }, (_, i) => loadPeer(encoded, i, clock)));
  for (const p of peers) {
    p.doc.on('update', (u: Uint8Array, origin: unknown) => {
      if (origin === 'remote') return;
      // One macrotask per hop, as a network delivery would be.
      for (const q of peers) if (q !== p) setImmediate(() => Y.applyUpdate(q.doc, u, 'remote'));
    });
  }
  try {
    return await measureEdits(peers, edits, clock);
  } finally {
    for (const p of peers) {
      p.store.close();
      p.doc.destroy();
    }
  }
}

async function applyToVisibleMesh(
  encoded: Uint8Array,
  peerCount: number,
  edits: number,
  clock: ManualClock,
): Promise<ReturnType<typeof latency>> {
  const { newPsk, startPeer, stopAll } = await import('../test/support/mesh-peers.ts');
  const psk = newPsk();
  const nodes: Awaited<ReturnType<typeof startPeer>>[] = [];
  const peers: Peer[] = [];
  try {
    for (let i = 0; i < peerCount; i++) {
      const p = await loadPeer(encoded, i, clock);
      const first = nodes[0];
      nodes.push(
        await startPeer({
          name: p.name,
          psk,
          meshId: 'bench-revisions',
          key: await keyOf(i),
          doc: p.doc,
          bootstrap: first === undefined ? [] : first.node.addrs(),
        }),
      );
      peers.push(p);
    }
    await Promise.all(nodes.slice(1).map((n) => n.node.waitForPeer(30_000)));
    return await measureEdits(peers, edits, clock);
  } finally {
    await stopAll(nodes);
    for (const p of peers) {
      p.store.close();
      p.doc.destroy();
    }
  }
}

await main();
