// The node's data directory: where it is, what is in it, and the lock that keeps one daemon per dir.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import type { MeshKey } from '../mesh/mesh-key.ts';
import { DataDirError } from '../shared/errors.ts';

/** What `meshd.json` holds: the node's settings and the mesh it belongs to. Secrets live in their own 0600 files. */
export interface NodeConfig {
  format: 1;
  meshId: string;
  meshName: string;
  nodeName: string;
  listen: string[];
  /** Bootstrap multiaddrs from the token this node joined with (empty for the founding node). */
  bootstrap: string[];
  /** Epoch of the key this node joined with; after a rotation the key file (`mesh.psk`) has the current one. */
  keyEpoch: number;
  createdAt: string;
  /**
   * Operator plugin steps that join every pod's lifecycle graph: executable hooks
   * (`{name, after, before, requires, exec, timeout}`, pod context as JSON on stdin) and ES modules.
   */
  lifecycle?: { hooks?: unknown[]; modules?: string[] };
  /** A node missing this long counts as dead: its best-effort pods may move (default 7 days). */
  deadAfterMs?: number;
  /**
   * How pods run: `process` (the default: bubblewrap sandboxes) or `mock`, for scheduling benchmarks and
   * tests — the node claims, holds and reports slots like any other but starts no process at all.
   */
  runtime?: 'process' | 'mock';
  /**
   * The node policy file (absolute; recorded by `--policy FILE`). Absent: the data dir's `policy.yaml`
   * (or `.yml`/`.json`) if there is one, else no policy — pods get nothing beyond the default sandbox.
   */
  policyFile?: string;
}

export const defaultListen = ['/ip4/0.0.0.0/tcp/7946'];

/** `--data-dir`, else `MESHD_DATA_DIR`, else /var/lib/meshd as root, else the XDG state dir. */
export function resolveDataDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag !== undefined && flag !== '') return resolve(flag);
  const fromEnv = env.MESHD_DATA_DIR;
  if (fromEnv !== undefined && fromEnv !== '') return resolve(fromEnv);
  if (process.getuid?.() === 0) return '/var/lib/meshd';
  const xdg = env.XDG_STATE_HOME;
  return join(xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.local', 'state'), 'meshd');
}

export class DataDir {
  readonly path: string;

  constructor(path: string) {
    this.path = path;
  }

  get configFile(): string {
    return join(this.path, 'meshd.json');
  }
  get identityFile(): string {
    return join(this.path, 'identity.key');
  }
  get pskFile(): string {
    return join(this.path, 'mesh.psk');
  }
  get stateDb(): string {
    return join(this.path, 'state.db');
  }
  get socketPath(): string {
    return join(this.path, 'meshd.sock');
  }
  get pidFile(): string {
    return join(this.path, 'meshd.pid');
  }
  get logFile(): string {
    return join(this.path, 'meshd.log');
  }

  hasMesh(): boolean {
    return fs.existsSync(this.configFile);
  }

  readConfig(): NodeConfig {
    let raw: string;
    try {
      raw = fs.readFileSync(this.configFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new DataDirError('E_NO_MESH', `no mesh in ${this.path}`, {
          hint: 'Create one with `meshd init`, or join one with `meshd join TOKEN` (use --data-dir to pick another directory).',
        });
      }
      throw this.ioError('read', this.configFile, err);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      throw new DataDirError('E_CONFIG_CORRUPT', `${this.configFile} is not valid JSON`, {
        hint: 'Restore it from a backup, or move the data dir away and join the mesh again.',
      });
    }
    return validateConfig(parsed, this.configFile);
  }

  writeConfig(config: NodeConfig): void {
    this.writeFileAtomic(this.configFile, `${JSON.stringify(config, null, 2)}\n`, 0o644);
  }

  /**
   * Creates the directory if needed, mode 0711: others may traverse it (the sandboxed pods, uid 65534,
   * reach their own directories under pods/) but not list it; secrets are 0600 files.
   */
  ensure(): void {
    try {
      fs.mkdirSync(this.path, { recursive: true, mode: 0o711 });
      fs.chmodSync(this.path, 0o711);
    } catch (err) {
      throw this.ioError('create', this.path, err);
    }
  }

  async createIdentity(): Promise<PrivateKey> {
    const key = await generateKeyPair('Ed25519');
    this.writeFileAtomic(this.identityFile, privateKeyToProtobuf(key), 0o600);
    return key;
  }

  readIdentity(): PrivateKey {
    try {
      return privateKeyFromProtobuf(fs.readFileSync(this.identityFile));
    } catch (err) {
      throw new DataDirError('E_IDENTITY', `cannot read this node's identity key ${this.identityFile}`, {
        hint: 'The key file is missing or damaged; restore it from a backup or join the mesh again with a new data dir.',
        cause: err,
      });
    }
  }

  /**
   * Stores the mesh key and its epoch in one atomic write (`mesh.psk`: the 32 key bytes, then the epoch as
   * 4 big-endian bytes), so a crash during a rotation leaves either the old key or the new one, never a mix.
   */
  writeMeshKey(key: MeshKey): void {
    if (key.psk.byteLength !== 32) throw new Error('mesh key must be 32 bytes');
    const bytes = new Uint8Array(36);
    bytes.set(key.psk, 0);
    new DataView(bytes.buffer).setUint32(32, key.epoch);
    this.writeFileAtomic(this.pskFile, bytes, 0o600);
  }

  /** The stored mesh key; a 32-byte file (written before key rotation existed) takes its epoch from meshd.json. */
  readMeshKey(): MeshKey {
    try {
      const bytes = new Uint8Array(fs.readFileSync(this.pskFile));
      if (bytes.byteLength === 32) return { psk: bytes, epoch: this.readConfig().keyEpoch };
      if (bytes.byteLength !== 36) throw new Error(`expected 36 bytes, found ${bytes.byteLength}`);
      return { psk: bytes.slice(0, 32), epoch: new DataView(bytes.buffer).getUint32(32) };
    } catch (err) {
      throw new DataDirError('E_PSK', `cannot read the mesh key ${this.pskFile}`, {
        hint: 'Restore it from a backup, or join the mesh again with a fresh token (`meshd token` on a member).',
        cause: err,
      });
    }
  }

  /**
   * Takes the one-daemon-per-dir lock: the pid file is created atomically (link of a temp file);
   * a pid file left by a dead process (kill -9, reboot) is recognised and replaced.
   */
  acquireLock(pid: number = process.pid): () => void {
    const tmp = `${this.pidFile}.${pid}.${randomBytes(4).toString('hex')}`;
    fs.writeFileSync(tmp, `${pid}\n${processStartTime(pid) ?? ''}\n`, { mode: 0o644 });
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          fs.linkSync(tmp, this.pidFile);
          return () => this.releaseLock(pid);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw this.ioError('lock', this.pidFile, err);
          const holder = this.runningPid();
          if (holder !== undefined) {
            throw new DataDirError(
              'E_ALREADY_RUNNING',
              `meshd is already running on ${this.path} (pid ${holder})`,
              {
                hint: 'Use that daemon, stop it with `meshd down`, or pick another --data-dir.',
              },
            );
          }
          fs.rmSync(this.pidFile, { force: true });
        }
      }
      throw new DataDirError('E_LOCK', `could not take the lock ${this.pidFile}`, {
        hint: 'Another meshd is starting on the same data dir; try again.',
      });
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }

  /** The pid of the live daemon holding this dir, or undefined (no pid file, or its process is gone). */
  runningPid(): number | undefined {
    let text: string;
    try {
      text = fs.readFileSync(this.pidFile, 'utf8');
    } catch {
      return undefined;
    }
    const [pidLine, startLine] = text.split('\n');
    const pid = Number(pidLine);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    const start = processStartTime(pid);
    if (start === undefined) return undefined;
    // A recycled pid belongs to another process: the start time recorded at lock time must match.
    if (startLine !== undefined && startLine !== '' && startLine !== start) return undefined;
    return pid;
  }

  private releaseLock(pid: number): void {
    try {
      const [pidLine] = fs.readFileSync(this.pidFile, 'utf8').split('\n');
      if (Number(pidLine) === pid) fs.rmSync(this.pidFile, { force: true });
    } catch {
      // already gone
    }
  }

  private writeFileAtomic(file: string, data: string | Uint8Array, mode: number): void {
    const tmp = `${file}.tmp-${process.pid}`;
    try {
      fs.writeFileSync(tmp, data, { mode });
      const fd = fs.openSync(tmp, 'r');
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, file);
      // the rename is durable only once the directory is: a node must not come back on an old key after
      // it passed the new one on
      const dirFd = fs.openSync(dirname(file), 'r');
      try {
        fs.fsyncSync(dirFd);
      } finally {
        fs.closeSync(dirFd);
      }
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw this.ioError('write', file, err);
    }
  }

  private ioError(what: string, file: string, err: unknown): DataDirError {
    const code = (err as NodeJS.ErrnoException).code;
    const hint =
      code === 'ENOSPC'
        ? 'The disk is full: free some space and try again.'
        : code === 'EACCES' || code === 'EPERM'
          ? `Check the permissions of ${file}, or pick another --data-dir.`
          : code === 'ENOTDIR' || code === 'EEXIST'
            ? `${this.path} must be a directory; pick another --data-dir.`
            : 'Check the data dir and try again.';
    return new DataDirError(
      code === 'ENOSPC' ? 'E_DISK_FULL' : 'E_DATA_DIR',
      `cannot ${what} ${file}: ${(err as Error).message}`,
      { hint, cause: err },
    );
  }
}

/** Field 22 of /proc/PID/stat (start time in clock ticks since boot), or undefined if no such process. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = rest[0];
    if (state === 'Z' || state === 'X') return undefined;
    return rest[19];
  } catch {
    return undefined;
  }
}

function validateConfig(raw: unknown, file: string): NodeConfig {
  const fail = (field: string, expected: string): never => {
    throw new DataDirError('E_CONFIG_INVALID', `${file}: field "${field}" must be ${expected}`, {
      hint: 'Fix the field by hand, or move the data dir away and join the mesh again.',
      details: { file, path: field },
    });
  };
  if (typeof raw !== 'object' || raw === null) return fail('(root)', 'an object');
  const c = raw as Record<string, unknown>;
  if (c.format !== 1) fail('format', '1');
  for (const f of ['meshId', 'meshName', 'nodeName', 'createdAt'] as const) {
    if (typeof c[f] !== 'string') fail(f, 'a string');
  }
  for (const f of ['listen', 'bootstrap'] as const) {
    const v = c[f];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) fail(f, 'a list of multiaddr strings');
  }
  if (typeof c.keyEpoch !== 'number') fail('keyEpoch', 'a number');
  if (c.deadAfterMs !== undefined && (typeof c.deadAfterMs !== 'number' || c.deadAfterMs <= 0)) {
    fail('deadAfterMs', 'a positive number of milliseconds');
  }
  if (c.runtime !== undefined && c.runtime !== 'process' && c.runtime !== 'mock') {
    fail('runtime', '"process" or "mock"');
  }
  if (c.policyFile !== undefined && (typeof c.policyFile !== 'string' || !c.policyFile.startsWith('/'))) {
    fail('policyFile', 'an absolute path to the node policy file');
  }
  if (c.lifecycle !== undefined) {
    const l = c.lifecycle as Record<string, unknown> | null;
    if (typeof l !== 'object' || l === null) fail('lifecycle', 'an object with "hooks" and/or "modules"');
    else {
      if (l.hooks !== undefined && !Array.isArray(l.hooks)) fail('lifecycle.hooks', 'a list of hook objects');
      const mods = l.modules;
      if (mods !== undefined && (!Array.isArray(mods) || !mods.every((m) => typeof m === 'string'))) {
        fail('lifecycle.modules', 'a list of module paths');
      }
    }
  }
  return c as unknown as NodeConfig;
}
