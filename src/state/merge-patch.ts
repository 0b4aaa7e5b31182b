// JSON values and RFC 7386 JSON merge patches: apply, generate (diff), compare — all pure, nothing mutated.

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** A key that would reach the prototype when assigned to a plain object; refused everywhere. */
const forbiddenKey = '__proto__';

export function isPlainObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Why `value` is not plain JSON (undefined, functions, binary, NaN, cycles, `__proto__` keys, too deep),
 * with the path of the first offender; undefined when it is JSON. Used on anything read from the
 * replicated document, which any peer can write.
 */
export function jsonProblem(value: unknown, maxDepth = 64): string | undefined {
  const walk = (v: unknown, path: string, depth: number): string | undefined => {
    if (depth > maxDepth) return `${path || 'value'} is nested deeper than ${maxDepth} levels`;
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return undefined;
    if (typeof v === 'number')
      return Number.isFinite(v) ? undefined : `${path || 'value'} is not a finite number`;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const p = walk(v[i], `${path}[${i}]`, depth + 1);
        if (p !== undefined) return p;
      }
      return undefined;
    }
    if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
      for (const [k, child] of Object.entries(v)) {
        if (k === forbiddenKey) return `${path || 'value'} has a key named ${forbiddenKey}`;
        const p = walk(child, path === '' ? k : `${path}.${k}`, depth + 1);
        if (p !== undefined) return p;
      }
      return undefined;
    }
    return `${path || 'value'} is not JSON (${v === undefined ? 'undefined' : typeof v})`;
  };
  return walk(value, '', 0);
}

export function deepEqual(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  if (a === b) return true;
  if (a === null || b === null || a === undefined || b === undefined) return false;
  if (typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => deepEqual(x, b[i]));
  }
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
}

export function cloneJson<T extends JsonValue>(value: T): T {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => cloneJson(v)) as T;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(value)) out[k] = cloneJson(v);
  return out as T;
}

/** RFC 7386 §2: the result of applying `patch` to `target` (`undefined` = no target). Returns fresh values. */
export function applyMergePatch(target: JsonValue | undefined, patch: JsonValue): JsonValue {
  if (!isPlainObject(patch)) return cloneJson(patch);
  const out: JsonObject = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyMergePatch(out[k], v);
  }
  return out;
}

/**
 * Why `value` cannot be the result of a merge patch, or undefined. A merge patch cannot set a member
 * to `null` (null means "remove"), so a target holding null inside an object is not reachable.
 * Nulls inside arrays are fine: arrays are replaced whole.
 */
export function unrepresentableInPatch(value: JsonValue, path = ''): string | undefined {
  if (!isPlainObject(value)) return undefined;
  for (const [k, v] of Object.entries(value)) {
    const p = path === '' ? k : `${path}.${k}`;
    if (v === null) return `${p} is null, which a merge patch cannot express (null removes a field)`;
    const inner = unrepresentableInPatch(v, p);
    if (inner !== undefined) return inner;
  }
  return undefined;
}

/**
 * A merge patch turning `from` into exactly `to` (undefined when they are equal). `to` must not hold
 * null members inside objects (see `unrepresentableInPatch`); a null or absent `to` yields `null`.
 */
export function diffMergePatch(
  from: JsonValue | undefined,
  to: JsonValue | undefined,
): JsonValue | undefined {
  if (to === undefined || to === null) return from === undefined || from === null ? undefined : null;
  const bad = unrepresentableInPatch(to);
  if (bad !== undefined) throw new TypeError(`cannot build a merge patch: ${bad}`);
  return diffInner(from, to);
}

function diffInner(from: JsonValue | undefined, to: JsonValue): JsonValue | undefined {
  if (!isPlainObject(to) || !isPlainObject(from)) {
    if (from !== undefined && deepEqual(from, to)) return undefined;
    // An object patch over a non-object target starts from {}, so `to` itself is the exact patch.
    return cloneJson(to);
  }
  const patch: JsonObject = {};
  for (const k of Object.keys(from)) if (!Object.hasOwn(to, k)) patch[k] = null;
  for (const [k, v] of Object.entries(to)) {
    const d = diffInner(from[k], v);
    if (d !== undefined) patch[k] = d;
  }
  return Object.keys(patch).length === 0 ? undefined : patch;
}

/**
 * Every path a merge patch writes: a null (removal), a non-object value, or an empty object (which
 * creates the object if absent). A `null` patch writes the root (path `[]`).
 */
export function writtenPaths(patch: JsonValue): string[][] {
  if (!isPlainObject(patch)) return [[]];
  const out: string[][] = [];
  const walk = (p: JsonObject, prefix: string[]) => {
    const entries = Object.entries(p);
    if (entries.length === 0 && prefix.length > 0) out.push(prefix);
    for (const [k, v] of entries) {
      if (isPlainObject(v)) walk(v, [...prefix, k]);
      else out.push([...prefix, k]);
    }
  };
  walk(patch, []);
  return out;
}

/** Renders a path for people: `spec.containers[0].ports[0].name`, `labels["example.com/zone"]`. */
export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}
