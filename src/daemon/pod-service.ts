// Pods through the local API: apply, read, history, diff, rollback and delete over the object store.

import { parse as parseYaml, stringify as toYaml } from 'yaml';
import type {
  ApplyRequest,
  ApplyResult,
  ControllersView,
  HistoryQuery,
  PodDescription,
  PodDiff,
  PodEntry,
  RevisionView,
  WriteRequest,
} from '../api/types.ts';
import { NotFoundError, OwnershipError, ValidationError } from '../shared/errors.ts';
import type { FieldOwnership } from '../state/field-ownership.ts';
import type { HistoryEntry, Materialized } from '../state/materialize.ts';
import type { JsonObject } from '../state/merge-patch.ts';
import type { ObjectStore } from '../state/object-store.ts';
import { parsePodSpec, podFromStored, podStatusKey, type StoredPod } from '../state/pod-spec.ts';
import type { Author, DroppedSummaries } from '../state/revision-records.ts';

export interface PodServiceDeps {
  store: ObjectStore;
  ownership: FieldOwnership;
  /** This peer and host, for the author of every record written here. */
  peerId: string;
  host: string;
  /** Called after every write: throws if the write is not on disk (nothing is reported done before it is). */
  assertDurable: () => void;
}

const maxActorLength = 128;

export class PodService {
  private readonly deps: PodServiceDeps;

  constructor(deps: PodServiceDeps) {
    this.deps = deps;
  }

  apply(req: ApplyRequest): ApplyResult {
    this.refuseForeignFields(req.text, req.file);
    const pod = parsePodSpec(req.text, req.file);
    if (req.expectName !== undefined && pod.name !== req.expectName) {
      throw new ValidationError(
        'E_NAME_CHANGED',
        `${req.file}: name: the name cannot change from "${req.expectName}" to "${pod.name}" in an edit`,
        {
          hint: 'Keep the name; to make a pod with another name, use `meshd apply -f FILE`.',
          details: { file: req.file, path: 'name' },
        },
      );
    }
    const record = this.deps.store.applyPod(pod, this.author(req.actor), req.message);
    this.deps.assertDurable();
    const current = this.mustGet(pod.name);
    return { name: pod.name, revision: current.revision ?? '', changed: record !== undefined };
  }

  list(): PodEntry[] {
    return this.deps.store.list('pod').flatMap((m) => entriesOf(m, this.statusOf(m)));
  }

  /** `status.slots` from the pod's status object (`podstatus/<name>`). */
  private statusOf(m: Materialized): Record<string, SlotStatus> {
    const name = m.key.slice(m.key.indexOf('/') + 1);
    const status = this.deps.store.get(podStatusKey(name))?.object?.status as { slots?: unknown } | undefined;
    const slots = status?.slots;
    return typeof slots === 'object' && slots !== null ? (slots as Record<string, SlotStatus>) : {};
  }

  describe(name: string): PodDescription {
    const m = this.mustGet(name);
    const stored = m.object as unknown as StoredPod;
    return {
      name,
      revision: m.revision ?? '',
      spec: userSpecText(m.object),
      status: { ...((stored.status ?? {}) as JsonObject), slots: this.statusOf(m) as unknown as JsonObject },
      slots: entriesOf(m, this.statusOf(m)),
      revisions: m.history.slice(-10).map(revisionView),
    };
  }

  /** The live spec as YAML, for `meshd edit`. */
  spec(name: string): { revision: string; text: string } {
    const m = this.mustGet(name);
    return { revision: m.revision ?? '', text: userSpecText(m.object) };
  }

  delete(name: string, req: WriteRequest): { name: string; revision: string } {
    this.deps.store.delete(podKey(name), this.author(req.actor), req.message);
    this.deps.assertDurable();
    const m = this.deps.store.get(podKey(name));
    return { name, revision: m?.revision ?? '' };
  }

  history(name: string, q: HistoryQuery): RevisionView[] {
    const m = this.deps.store.get(podKey(name));
    if (m === undefined) throw notFound(name);
    // What meshd changed (status, kind system) lives in the status object; merged here by time.
    const status = this.deps.store.get(podStatusKey(name));
    const system = (status?.history ?? []).map((h) => ({ ...h, revision: `s${h.revision}` }));
    const rows = [...m.history, ...system]
      .sort((a, b) => a.at - b.at)
      .filter((h) => q.author === undefined || h.author.actor === q.author || h.author.host === q.author)
      .filter(
        (h) =>
          q.excludeAuthor === undefined ||
          (h.author.actor !== q.excludeAuthor && h.author.host !== q.excludeAuthor),
      )
      .filter((h) => q.kind === undefined || h.kind === q.kind)
      .map(revisionView);
    const filtered = q.author !== undefined || q.excludeAuthor !== undefined || q.kind !== undefined;
    return m.dropped === undefined || filtered ? rows : [droppedView(m.dropped), ...rows];
  }

  diff(name: string, from: string | undefined, to: string | undefined): PodDiff {
    const m = this.deps.store.get(podKey(name));
    if (m === undefined) throw notFound(name);
    const effective = m.history.filter((h) => h.rejected === undefined && !h.compacted && h.pending !== true);
    const toRef = to ?? effective.at(-1)?.revision;
    const fromRef = from ?? effective.at(-2)?.revision;
    if (toRef === undefined || fromRef === undefined) {
      throw new ValidationError('E_NOTHING_TO_DIFF', `pod ${name} has only one revision`, {
        hint: 'Name two revisions with --from and --to, as `meshd history pod NAME` lists them.',
      });
    }
    const a = this.deps.store.objectAt(podKey(name), fromRef);
    const b = this.deps.store.objectAt(podKey(name), toRef);
    return {
      name,
      from: { revision: a.entry.revision, text: userSpecText(a.object) },
      to: { revision: b.entry.revision, text: userSpecText(b.object) },
    };
  }

  rollback(
    name: string,
    to: string | undefined,
    req: WriteRequest,
  ): { name: string; revision: string; changed: boolean } {
    const m = this.mustGet(name);
    const target = to ?? previousRevision(m);
    const record = this.deps.store.rollback(podKey(name), target, this.author(req.actor), req.message);
    this.deps.assertDurable();
    return { name, revision: this.mustGet(name).revision ?? '', changed: record !== undefined };
  }

  controllers(): ControllersView {
    const list = this.deps.ownership
      .list()
      .map((c) => ({ name: c.name, owns: [...c.owns], reads: [...(c.reads ?? [])] }));
    return { controllers: list, cycles: this.deps.ownership.check().map((c) => c.text) };
  }

  /** A spec may carry only what `user` owns; a `status` (owned by other controllers) is refused naming its owner. */
  private refuseForeignFields(text: string, file: string): void {
    let top: unknown;
    try {
      top = parseYaml(text);
    } catch {
      return; // parsePodSpec reports syntax errors with line and column
    }
    if (typeof top !== 'object' || top === null || !('status' in top)) return;
    const status = (top as { status: unknown }).status;
    try {
      this.deps.ownership.assertMayWrite('user', { status: status as JsonObject });
    } catch (err) {
      if (err instanceof OwnershipError) {
        throw new OwnershipError(err.code, `${file}: ${err.message}`, {
          ...(err.hint === undefined ? {} : { hint: err.hint }),
          details: { file, path: 'status' },
        });
      }
      throw err;
    }
  }

  private mustGet(name: string): Materialized & { object: JsonObject } {
    const m = this.deps.store.get(podKey(name));
    if (m?.object === null || m === undefined) throw notFound(name, m?.deleted === true);
    return m as Materialized & { object: JsonObject };
  }

  private author(actor: string | undefined): Author {
    const a = (actor ?? '').trim();
    if (a === '' || a.length > maxActorLength || [...a].some((ch) => ch.charCodeAt(0) < 0x20)) {
      throw new ValidationError('E_BAD_ACTOR', `actor ${JSON.stringify(actor)} is not a usable name`, {
        hint: `Pass --as NAME (1–${maxActorLength} printable characters).`,
      });
    }
    return { peer: this.deps.peerId, host: this.deps.host, actor: a };
  }
}

function podKey(name: string): string {
  return `pod/${name}`;
}

function notFound(name: string, deleted = false): NotFoundError {
  return new NotFoundError('E_POD_NOT_FOUND', `pod ${name} ${deleted ? 'was deleted' : 'does not exist'}`, {
    hint: deleted
      ? `Its history is still there: \`meshd history pod ${name}\`; apply it again to re-create it.`
      : 'Run `meshd get pods` to list pods.',
  });
}

function previousRevision(m: Materialized): string {
  const effective = m.history.filter(
    (h) => h.rejected === undefined && h.pending !== true && h.kind !== 'system',
  );
  const prev = effective.at(-2);
  if (prev === undefined) {
    throw new ValidationError(
      'E_NO_PREVIOUS',
      `pod ${m.key.slice(4)} has no earlier revision to roll back to`,
      {
        hint: 'Name one with --to N, as `meshd history pod NAME` lists them.',
      },
    );
  }
  return prev.revision;
}

function revisionView(h: HistoryEntry): RevisionView {
  return {
    revision: h.revision,
    id: h.id,
    author: h.author,
    kind: h.kind,
    at: new Date(h.at).toISOString(),
    message: h.message ?? null,
    concurrent: h.concurrent,
    ...(h.rejected === undefined ? {} : { rejected: h.rejected }),
    ...(h.compacted ? { compacted: true } : {}),
    ...(h.restorable === true ? { restorable: true } : {}),
  };
}

/** The row for revisions compacted so long ago that only their count, time span and main authors remain. */
function droppedView(d: DroppedSummaries): RevisionView {
  return {
    revision: `1..${d.upTo[0]}`,
    id: '',
    author: { peer: '', host: '', actor: '' },
    kind: 'user',
    at: new Date(d.firstAt).toISOString(),
    message: `${d.count} older revisions, compacted; only their count and authors are kept`,
    concurrent: false,
    compacted: true,
    dropped: {
      count: d.count,
      lastAt: new Date(d.lastAt).toISOString(),
      by: (d.by ?? []).map((b) => ({ actor: b.author.actor, host: b.author.host, count: b.count })),
    },
  };
}

/** The spec as a user wrote it (containers as a list, no status), as YAML. */
function userSpecText(object: JsonObject | null): string {
  if (object === null) return '# (deleted)\n';
  const pod = podFromStored(object);
  return toYaml({ kind: pod.kind, name: pod.name, spec: pod.spec });
}

interface SlotStatus {
  node?: string;
  phase?: string;
  runningRevision?: string | number;
  ports?: Record<string, number>;
  pid?: number;
  restarts?: number;
  lastError?: string;
}

/** One entry per slot (`replicas: 3` → three entries with the same name). */
function entriesOf(m: Materialized, slots: Record<string, SlotStatus>): PodEntry[] {
  if (m.object === null) return [];
  const stored = m.object as unknown as StoredPod;
  const spec = stored.spec;
  const replicas = spec.replicas ?? 1;
  return Array.from({ length: replicas }, (_, i) => {
    const s = slots[String(i)] ?? {};
    return {
      name: stored.name,
      slot: i,
      revision: m.revision ?? '',
      runningRevision: s.runningRevision === undefined ? null : String(s.runningRevision),
      phase: s.phase ?? 'pending',
      node: s.node ?? null,
      availability: spec.availability ?? 'best-effort',
      replicas,
      pid: s.pid ?? null,
      ports: s.ports ?? {},
      restarts: s.restarts ?? 0,
      lastError: s.lastError ?? null,
    };
  });
}
