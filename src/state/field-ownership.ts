// Field ownership: which controller may write which fields of an object, and read→write cycles between them.

import { OwnershipError } from '../shared/errors.ts';
import {
  diffMergePatch,
  isPlainObject,
  type JsonObject,
  type JsonValue,
  writtenPaths,
} from './merge-patch.ts';

/**
 * A controller's contract. Patterns are dotted field paths (`spec`, `status.placement`); the last
 * segment may end in `*` to match by prefix (`status.lease*` covers `status.lease`, `status.leaseEpoch`).
 * Owning a path owns everything below it.
 */
export interface ControllerDeclaration {
  name: string;
  owns: readonly string[];
  reads?: readonly string[];
}

/** The built-in controllers. `user` owns kind and name too: they are written once, at creation. */
export const builtinControllers: readonly ControllerDeclaration[] = Object.freeze([
  { name: 'user', owns: ['kind', 'name', 'spec'], reads: [] },
  { name: 'scheduler', owns: ['status.placement', 'status.lease*'], reads: ['spec'] },
  {
    name: 'runtime',
    owns: [
      'status.phase',
      'status.node',
      'status.runningRevision',
      'status.ports',
      'status.pid',
      'status.restarts',
      'status.lastError',
      // Per-replica status (`status.slots.<n>`): replicas of one pod run on different nodes.
      'status.slots',
    ],
    reads: ['spec', 'status.placement', 'status.ip'],
  },
  { name: 'ipam', owns: ['status.ip'], reads: ['status.placement'] },
  { name: 'rollout', owns: ['status.rollout'], reads: ['spec', 'status.runningRevision', 'status.phase'] },
]);

/** One read→write cycle: `controllers[0]` reads what `controllers[1]` owns, ... back to `controllers[0]`. */
export interface ControllerCycle {
  controllers: string[];
  edges: { reader: string; owner: string; field: string }[];
  /** e.g. `a reads status.x (owned by b) → b reads status.y (owned by a) → a` */
  text: string;
}

/** What materialize needs from ownership: why a controller may not write a patch. */
export interface WriteRules {
  writeProblem(controller: string, patch: JsonValue): string | undefined;
}

type Pattern = readonly string[];

const segmentPattern = /^[A-Za-z0-9_-]+\*?$|^[A-Za-z0-9_-]*\*$/;

function parsePattern(text: string): Pattern | undefined {
  const segs = text.split('.');
  if (segs.some((s) => !segmentPattern.test(s))) return undefined;
  if (segs.slice(0, -1).some((s) => s.endsWith('*'))) return undefined;
  return segs;
}

function segOverlap(a: string, b: string): boolean {
  const ga = a.endsWith('*');
  const gb = b.endsWith('*');
  const pa = ga ? a.slice(0, -1) : a;
  const pb = gb ? b.slice(0, -1) : b;
  if (ga && gb) return pa.startsWith(pb) || pb.startsWith(pa);
  if (ga) return pb.startsWith(pa);
  if (gb) return pa.startsWith(pb);
  return a === b;
}

/** Two patterns overlap when some concrete path is covered by both, or one is an ancestor of the other. */
function overlaps(a: Pattern, b: Pattern): boolean {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (!segOverlap(a[i] as string, b[i] as string)) return false;
  return true;
}

function segMatches(pattern: string, seg: string): boolean {
  return pattern.endsWith('*') ? seg.startsWith(pattern.slice(0, -1)) : pattern === seg;
}

/** `pattern` covers `path` when it equals it or is one of its ancestors. */
function covers(pattern: Pattern, path: readonly string[]): boolean {
  if (pattern.length > path.length) return false;
  return pattern.every((p, i) => segMatches(p, path[i] as string));
}

/** `path` is a proper ancestor of fields `pattern` covers. */
function contains(path: readonly string[], pattern: Pattern): boolean {
  if (path.length >= pattern.length) return false;
  return path.every((seg, i) => segMatches(pattern[i] as string, seg));
}

function toPath(path: string | readonly string[]): readonly string[] {
  return typeof path === 'string' ? (path === '' ? [] : path.split('.')) : path;
}

function show(path: readonly string[]): string {
  return path.length === 0 ? 'the whole object' : path.join('.');
}

interface Entry {
  decl: ControllerDeclaration;
  owns: Pattern[];
  reads: Pattern[];
}

/** The controller registry. One per daemon; every peer must register the same controllers. */
export class FieldOwnership implements WriteRules {
  private readonly entries = new Map<string, Entry>();

  /** A registry holding the built-in controllers. */
  static withBuiltins(): FieldOwnership {
    const o = new FieldOwnership();
    for (const c of builtinControllers) o.register(c);
    return o;
  }

  /** Adds a controller; throws OwnershipError if it claims a field another controller owns (or a parent/child of one). */
  register(decl: ControllerDeclaration): void {
    if (!/^[a-z][a-z0-9-]{0,62}$/.test(decl.name)) {
      throw new OwnershipError(
        'E_CONTROLLER_NAME',
        `controller name "${decl.name}" is not a lowercase name`,
        {
          hint: 'Use lowercase letters, digits and dashes, starting with a letter.',
          details: { controller: decl.name },
        },
      );
    }
    if (this.entries.has(decl.name)) {
      throw new OwnershipError('E_CONTROLLER_EXISTS', `controller "${decl.name}" is already registered`, {
        hint: 'Give the plugin controller a name of its own.',
        details: { controller: decl.name },
      });
    }
    const parse = (text: string, role: string): Pattern => {
      const p = parsePattern(text);
      if (p === undefined) {
        throw new OwnershipError(
          'E_FIELD_PATTERN',
          `controller "${decl.name}" ${role} "${text}", which is not a field path`,
          {
            hint: 'Write dotted field names such as status.backup or status.lease*; `*` only at the end.',
            details: { controller: decl.name, field: text },
          },
        );
      }
      return p;
    };
    const owns = decl.owns.map((t) => parse(t, 'owns'));
    const reads = (decl.reads ?? []).map((t) => parse(t, 'reads'));
    for (const [i, p] of owns.entries()) {
      for (const [j, q] of owns.entries()) {
        if (i < j && overlaps(p, q)) {
          throw new OwnershipError(
            'E_OWNERSHIP_CONFLICT',
            `controller "${decl.name}" claims ${p.join('.')} twice (overlaps ${q.join('.')})`,
            {
              hint: 'List each owned field once.',
              details: { controller: decl.name, field: p.join('.') },
            },
          );
        }
      }
      for (const other of this.entries.values()) {
        const clash = other.owns.find((q) => overlaps(p, q));
        if (clash !== undefined) {
          const field = p.join('.');
          const held = clash.join('.');
          const rel =
            field === held
              ? ''
              : held.length < field.length
                ? ` (inside ${held})`
                : ` (which contains ${held})`;
          throw new OwnershipError(
            'E_OWNERSHIP_CONFLICT',
            `controller "${decl.name}" claims ${field}${rel}, which controller "${other.decl.name}" owns`,
            {
              hint: `Each field has one owner: have "${decl.name}" own a field of its own (e.g. status.${decl.name}) and read ${held} instead.`,
              details: { controller: decl.name, owner: other.decl.name, field, owned: held },
            },
          );
        }
      }
    }
    this.entries.set(decl.name, {
      decl: { ...decl, owns: [...decl.owns], reads: [...(decl.reads ?? [])] },
      owns,
      reads,
    });
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  list(): ControllerDeclaration[] {
    return [...this.entries.values()].map((e) => e.decl);
  }

  /** The owned patterns of `controller` (empty if unknown). */
  ownedBy(controller: string): readonly string[] {
    return this.entries.get(controller)?.decl.owns ?? [];
  }

  /** The controller owning `path` (dotted string or segments), or undefined if none owns it. */
  ownerOf(path: string | readonly string[]): string | undefined {
    const p = toPath(path);
    for (const e of this.entries.values()) if (e.owns.some((o) => covers(o, p))) return e.decl.name;
    return undefined;
  }

  private ownersInside(path: readonly string[]): string[] {
    const out: string[] = [];
    for (const e of this.entries.values()) if (e.owns.some((o) => contains(path, o))) out.push(e.decl.name);
    return out;
  }

  private problems(controller: string, patch: JsonValue): { text: string; field: string; owner?: string }[] {
    if (!this.entries.has(controller)) {
      return [
        {
          text: `unknown controller "${controller}" (known: ${[...this.entries.keys()].join(', ')})`,
          field: '',
        },
      ];
    }
    if (patch === null) {
      // Deleting an object rewrites its identity, so it is the identity owner's act.
      const owner = this.ownerOf(['kind']);
      return owner === controller
        ? []
        : [
            {
              text: `controller "${controller}" may not delete the object: only "${owner ?? 'nobody'}" may`,
              field: '',
              ...(owner === undefined ? {} : { owner }),
            },
          ];
    }
    if (!isPlainObject(patch))
      return [{ text: 'a patch must be a JSON object (or null to delete)', field: '' }];
    const out: { text: string; field: string; owner?: string }[] = [];
    for (const path of writtenPaths(patch)) {
      const field = show(path);
      const owner = this.ownerOf(path);
      if (owner === controller) continue;
      if (owner !== undefined) {
        out.push({
          text: `controller "${controller}" may not write ${field}: it is owned by "${owner}"`,
          field,
          owner,
        });
        continue;
      }
      const inside = this.ownersInside(path);
      out.push({
        text:
          inside.length > 0
            ? `controller "${controller}" may not write ${field} as a whole: its fields are owned by ${inside.map((n) => `"${n}"`).join(', ')}`
            : `no controller owns ${field}`,
        field,
      });
    }
    return out;
  }

  /** Why `controller` may not write `patch` (`null` = delete the object), or undefined if it may. */
  writeProblem(controller: string, patch: JsonValue): string | undefined {
    const ps = this.problems(controller, patch);
    if (ps.length === 0) return undefined;
    const shown = ps.slice(0, 3).map((p) => p.text);
    if (ps.length > 3) shown.push(`and ${ps.length - 3} more`);
    return shown.join('; ');
  }

  /** Throws OwnershipError, naming the owner, if `controller` may not write `patch`. The API calls this. */
  assertMayWrite(controller: string, patch: JsonValue): void {
    const ps = this.problems(controller, patch);
    const first = ps[0];
    if (first === undefined) return;
    const message = this.writeProblem(controller, patch) ?? first.text;
    const hint =
      first.owner === undefined
        ? 'Write only fields your controller owns; `meshd controllers` lists who owns what.'
        : first.owner === 'user'
          ? `${first.field} belongs to the user: change it with \`meshd apply\` or \`meshd edit\`.`
          : `${first.field} is written by controller "${first.owner}"; let it change the field.`;
    throw new OwnershipError('E_NOT_OWNER', message, {
      hint,
      details: {
        controller,
        field: first.field,
        ...(first.owner === undefined ? {} : { owner: first.owner }),
      },
    });
  }

  /**
   * Every read→write cycle between controllers: A reads a field B owns and B (maybe through others)
   * reads a field A owns. One cycle is reported per strongly connected group, deterministically.
   */
  check(): ControllerCycle[] {
    const names = [...this.entries.keys()].sort();
    const edges = new Map<string, Map<string, string>>();
    for (const a of names) {
      const out = new Map<string, string>();
      const ea = this.entries.get(a) as Entry;
      for (const b of names) {
        if (a === b) continue;
        const eb = this.entries.get(b) as Entry;
        for (const r of ea.reads) {
          const o = eb.owns.find((q) => overlaps(r, q));
          if (o !== undefined && !out.has(b)) out.set(b, r.join('.'));
        }
      }
      edges.set(a, out);
    }
    const cycles: ControllerCycle[] = [];
    for (const scc of stronglyConnected(names, (n) => [...(edges.get(n)?.keys() ?? [])].sort())) {
      if (scc.length < 2) continue;
      const members = new Set(scc);
      const start = [...scc].sort()[0] as string;
      const path = cycleFrom(start, (n) =>
        [...(edges.get(n)?.keys() ?? [])].filter((m) => members.has(m)).sort(),
      );
      const cycleEdges = path.map((reader, i) => {
        const owner = path[(i + 1) % path.length] as string;
        return { reader, owner, field: edges.get(reader)?.get(owner) ?? '' };
      });
      const text = `${cycleEdges.map((e) => `${e.reader} reads ${e.field} (owned by ${e.owner})`).join(' → ')} → ${start}`;
      cycles.push({ controllers: path, edges: cycleEdges, text });
    }
    return cycles;
  }
}

/** The part of `object` covered by `patterns` (e.g. `kind`, `name`, `spec` for the user). */
export function projectFields(object: JsonObject, patterns: readonly string[]): JsonObject {
  const out: JsonObject = {};
  const put = (src: JsonObject, dst: JsonObject, segs: readonly string[]) => {
    const [head, ...rest] = segs;
    if (head === undefined) return;
    const keys = head.endsWith('*')
      ? Object.keys(src).filter((k) => k.startsWith(head.slice(0, -1)))
      : [head];
    for (const k of keys) {
      if (!Object.hasOwn(src, k)) continue;
      const v = src[k] as JsonValue;
      if (rest.length === 0) dst[k] = v;
      else if (isPlainObject(v)) {
        const child = isPlainObject(dst[k]) ? (dst[k] as JsonObject) : {};
        put(v, child, rest);
        if (Object.keys(child).length > 0) dst[k] = child;
      }
    }
  };
  for (const p of patterns) put(object, out, p.split('.'));
  return out;
}

/**
 * The merge patch that makes the fields `patterns` cover equal in `current` and `desired`, touching
 * nothing else (status stays with its owners); undefined when they are equal already. A missing
 * `current` (never created, or deleted) yields the whole covered part of `desired`.
 */
export function ownedFieldsPatch(
  current: JsonObject | null,
  desired: JsonObject,
  patterns: readonly string[],
): JsonValue | undefined {
  const to = projectFields(desired, patterns);
  if (current === null) return to;
  return diffMergePatch(projectFields(current, patterns), to);
}

/** Tarjan's algorithm; components come out in a deterministic order for sorted input. */
function stronglyConnected(nodes: readonly string[], next: (n: string) => string[]): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let counter = 0;
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of next(v)) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
      }
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      for (;;) {
        const w = stack.pop() as string;
        onStack.delete(w);
        comp.push(w);
        if (w === v) break;
      }
      out.push(comp);
    }
  };
  for (const n of nodes) if (!index.has(n)) visit(n);
  return out;
}

/** A shortest cycle through `start` (breadth-first), as the list of nodes visited before returning. */
function cycleFrom(start: string, next: (n: string) => string[]): string[] {
  const prev = new Map<string, string>();
  const queue = [start];
  const seen = new Set([start]);
  while (queue.length > 0) {
    const v = queue.shift() as string;
    for (const w of next(v)) {
      if (w === start) {
        const path = [v];
        while (path[0] !== start) path.unshift(prev.get(path[0] as string) as string);
        return path;
      }
      if (!seen.has(w)) {
        seen.add(w);
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start];
}
