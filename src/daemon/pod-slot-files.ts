// The pod agent's local state on disk: per slot a record of what runs (for re-adoption) and its journal.
//
// Layout under the agent's directory:
//   pods/<unit>/      the slot's pod dir (driver data; 0711 so the sandbox user can reach its work dirs)
//   logs/<unit>/      container logs
//   slots/<unit>.json what this node runs for the slot: written atomically, read at agent start
//   journals/<unit>.json  the slot's lifecycle journal (`meshd why`)
// A unit is `<pod>.<slot>`: pod names never contain a dot, so units never collide.

import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JournalSink, PodJournalData } from '../lifecycle/journal.ts';
import type { StepOutput } from '../lifecycle/step-graph.ts';
import { describeError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { PodRunInput } from './pod-steps.ts';

export const SLOT_RECORD_VERSION = 1;

/** What this node runs for one slot, enough to take it over after a daemon restart. */
export interface SlotRecord {
  version: number;
  unit: string;
  /** The run's input: the spec it runs, its revision, dirs, lease epoch. */
  input: PodRunInput;
  /** Hash of the fields whose change restarts the pod (see `runtimeSpecHash`). */
  specHash: string;
  /** The run reached running.target; false while it was starting. */
  reached: boolean;
  ports: Record<string, number>;
  /** Container name → supervisor state file. */
  stateFiles: Record<string, string>;
  logFiles: Record<string, { stdout: string; stderr: string }>;
  outputs: Record<string, StepOutput>;
  startedAt: number;
}

/** `web` slot 0 → `web.0`. */
export function unitName(pod: string, slot: number): string {
  return `${pod}.${slot}`;
}

/** `web.0` → { pod: 'web', slot: 0 }; undefined for anything else. */
export function parseUnitName(unit: string): { pod: string; slot: number } | undefined {
  const m = /^([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.(\d{1,4})$/.exec(unit);
  return m === null ? undefined : { pod: m[1] as string, slot: Number(m[2]) };
}

export class PodSlotFiles {
  readonly root: string;
  private readonly log: Logger;
  /** Journal writes in flight, per unit, chained so they land in order. */
  private readonly writes = new Map<string, Promise<void>>();

  constructor(root: string, log: Logger) {
    this.root = root;
    this.log = log;
  }

  get podsDir(): string {
    return join(this.root, 'pods');
  }

  podDir(unit: string): string {
    return join(this.root, 'pods', unit);
  }

  logDir(unit: string): string {
    return join(this.root, 'logs', unit);
  }

  /** Creates the directories. `pods` is 0711: the sandbox user (65534) must traverse it, not list it. */
  ensureDirs(): void {
    mkdirSync(this.root, { recursive: true, mode: 0o711 });
    for (const [dir, mode] of [
      ['pods', 0o711],
      ['logs', 0o750],
      ['slots', 0o700],
      ['journals', 0o700],
    ] as const) {
      mkdirSync(join(this.root, dir), { recursive: true, mode });
      chmodSync(join(this.root, dir), mode);
    }
  }

  /** Every readable slot record; unreadable ones are logged and skipped. */
  loadRecords(): SlotRecord[] {
    const out: SlotRecord[] = [];
    let names: string[];
    try {
      names = readdirSync(join(this.root, 'slots'));
    } catch {
      return out;
    }
    for (const name of names.sort()) {
      if (!name.endsWith('.json')) continue;
      const file = join(this.root, 'slots', name);
      try {
        const rec = JSON.parse(readFileSync(file, 'utf8')) as SlotRecord;
        if (rec.version !== SLOT_RECORD_VERSION || parseUnitName(rec.unit) === undefined)
          throw new Error(`not a version ${SLOT_RECORD_VERSION} slot record`);
        out.push(rec);
      } catch (err) {
        this.log.warn('unreadable slot record skipped', { file, error: describeError(err) });
      }
    }
    return out;
  }

  /** Written atomically and synced: a kill -9 right after leaves the old or the new record, whole. */
  saveRecord(rec: SlotRecord): void {
    writeFileAtomicSync(join(this.root, 'slots', `${rec.unit}.json`), `${JSON.stringify(rec)}\n`);
  }

  removeRecord(unit: string): void {
    rmSync(join(this.root, 'slots', `${unit}.json`), { force: true });
  }

  loadJournal(unit: string): unknown {
    try {
      return JSON.parse(readFileSync(join(this.root, 'journals', `${unit}.json`), 'utf8')) as unknown;
    } catch {
      return undefined;
    }
  }

  /** A JournalSink writing `journals/<unit>.json` (async, atomic, in order). */
  journalSink(): JournalSink {
    return {
      save: (unit: string, data: PodJournalData) => {
        const file = join(this.root, 'journals', `${unit}.json`);
        const text = `${JSON.stringify(data)}\n`;
        const previous = this.writes.get(unit) ?? Promise.resolve();
        const next = previous.then(async () => {
          const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
          try {
            await writeFile(tmp, text, { mode: 0o600 });
            await rename(tmp, file);
          } catch (err) {
            await rm(tmp, { force: true });
            throw err;
          }
        });
        const settled = next.catch(() => {});
        this.writes.set(unit, settled);
        void settled.then(() => {
          if (this.writes.get(unit) === settled) this.writes.delete(unit);
        });
        return next;
      },
    };
  }

  removeJournal(unit: string): void {
    rmSync(join(this.root, 'journals', `${unit}.json`), { force: true });
  }

  /** Waits for journal writes in flight. */
  async flush(): Promise<void> {
    await Promise.all([...this.writes.values()]);
  }
}

function writeFileAtomicSync(file: string, text: string): void {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
