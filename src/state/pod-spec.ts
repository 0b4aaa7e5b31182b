// Pod specs: strict validation of YAML/JSON files (every problem, with field path and line:col) and the stored form.

import { isMap, isPair, isScalar, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { ValidationError } from '../shared/errors.ts';
import { formatPath, isPlainObject, type JsonObject, type JsonValue } from './merge-patch.ts';

export type RestartPolicy = 'always' | 'on-failure' | 'never';
export type Availability = 'ha' | 'best-effort';

export interface PortSpec {
  name: string;
}

export interface Resources {
  /** Cores as a number (0.25) or millicores as a string ("250m"). */
  cpu?: number | string;
  /** Bytes as a number, or a quantity string ("64Mi", "1Gi", "500M"). */
  memory?: number | string;
}

export type HealthProbe = (
  | { tcp: { port: string } }
  | { http: { port: string; path: string } }
  | { exec: { command: string[] } }
) & { intervalSeconds: number; timeoutSeconds: number };

export interface ContainerSpec {
  name: string;
  command: string[];
  args?: string[];
  env?: Record<string, string>;
  ports?: PortSpec[];
  resources?: Resources;
  health?: HealthProbe;
}

export interface HostPath {
  path: string;
  readOnly: boolean;
}

/** Requests for less isolation. Validated here; a node's policy must also allow each (double opt-in). */
export interface SecuritySpec {
  hostNetwork?: boolean;
  hostPaths?: HostPath[];
  devices?: string[];
  capabilities?: string[];
  unsandboxed?: boolean;
}

export interface Placement {
  host?: string;
  labels?: Record<string, string>;
}

export interface PodSpec {
  containers: ContainerSpec[];
  restartPolicy: RestartPolicy;
  availability: Availability;
  replicas: number;
  placement?: Placement;
  haGraceSeconds?: number;
  security?: SecuritySpec;
}

/** A pod as the user writes it, with defaults filled in (restartPolicy, availability, replicas, probe timings). */
export interface Pod {
  kind: 'Pod';
  name: string;
  spec: PodSpec;
}

/** One problem in a spec: where (field path) and what. `at: 'key'` points at the field name itself. */
export interface SpecIssue {
  path: (string | number)[];
  message: string;
  at?: 'key';
}

/** Files larger than this are refused before parsing. */
export const maxSpecBytes = 64 * 1024;

const dnsLabel = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const portName = /^[a-z]([a-z0-9-]{0,13}[a-z0-9])?$/;
const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;
const hostName = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;
const labelKey = /^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;
const capabilityName = /^(CAP_)?[A-Z][A-Z0-9_]*$/;

// ---- did you mean ----------------------------------------------------------------------------------

/** Optimal-string-alignment edit distance (insert, delete, substitute, swap neighbours). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number) => (d[i] as number[])[j] as number;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, at(i - 2, j - 2) + 1);
      (d[i] as number[])[j] = v;
    }
  }
  return at(a.length, b.length);
}

/** The candidate closest to `word` if it is close enough to be a likely typo (case is ignored). */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  const w = word.toLowerCase();
  for (const c of candidates) {
    const dist = editDistance(w, c.toLowerCase());
    if (dist < bestD) {
      best = c;
      bestD = dist;
    }
  }
  if (best === undefined) return undefined;
  const limit = Math.max(1, Math.min(3, Math.floor(Math.max(word.length, best.length) / 3)));
  return bestD <= limit ? best : undefined;
}

// ---- quantities -------------------------------------------------------------------------------------

const memoryUnits: Record<string, number> = {
  '': 1,
  k: 1e3,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

/** Bytes of a memory quantity: 67108864, "64Mi", "1Gi", "500M", "1.5Gi" (rounded up); undefined if invalid. */
export function parseMemory(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$/.exec(value.trim());
  if (m === null) return undefined;
  const bytes = Math.ceil(Number(m[1]) * (memoryUnits[m[2] ?? ''] as number));
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}

/** Millicores of a cpu quantity: 0.25 → 250, "250m" → 250, "2" → 2000; undefined if invalid. */
export function parseCpu(value: unknown): number | undefined {
  let milli: number;
  if (typeof value === 'number') milli = value * 1000;
  else if (typeof value === 'string' && /^\d+m$/.test(value.trim()))
    milli = Number(value.trim().slice(0, -1));
  else if (typeof value === 'string' && /^\d+(\.\d+)?$/.test(value.trim()))
    milli = Number(value.trim()) * 1000;
  else return undefined;
  const rounded = Math.round(milli);
  if (!Number.isFinite(milli) || Math.abs(milli - rounded) > 1e-6 || rounded <= 0 || rounded > 1024 * 1000)
    return undefined;
  return rounded;
}

/** The environment variable carrying a port's number: `http` → `PORT_HTTP`, `web-ui` → `PORT_WEB_UI`. */
export function portEnvName(name: string): string {
  return `PORT_${name.toUpperCase().replaceAll('-', '_')}`;
}

// ---- validation -------------------------------------------------------------------------------------

type Path = (string | number)[];

function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return v.length === 0 ? 'an empty list' : 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return `${typeof v} ${String(v)}`;
}

/** Collects issues; one per validation run (never shared). Other strict file formats reuse it. */
export class Issues {
  readonly list: SpecIssue[] = [];
  add(path: Path, message: string, at?: 'key'): undefined {
    this.list.push(at === undefined ? { path, message } : { path, message, at });
    return undefined;
  }
}

/**
 * Checks that `v` is a mapping with only `known` fields and every `required` one. Unknown fields are
 * reported at their key with a suggestion. Returns the mapping, or undefined if it is not one.
 */
function mapping(
  v: unknown,
  path: Path,
  is: Issues,
  known: readonly string[],
  required: readonly string[] = [],
  extraHint: Record<string, string> = {},
): JsonObject | undefined {
  if (!isPlainObject(v))
    return is.add(path, `expected a mapping with fields ${known.join(', ')}, got ${describe(v)}`);
  const suggested = new Set<string>();
  for (const k of Object.keys(v)) {
    if (known.includes(k)) continue;
    const near = didYouMean(k, known);
    if (near !== undefined) suggested.add(near);
    const hint =
      extraHint[k] ?? (near === undefined ? `known fields: ${known.join(', ')}` : `did you mean "${near}"?`);
    is.add([...path, k], `unknown field "${k}" (${hint})`, 'key');
  }
  // A misspelt required field is reported once, at the misspelling.
  for (const r of required) {
    if (!Object.hasOwn(v, r) && !suggested.has(r)) is.add([...path, r], `missing required field "${r}"`);
  }
  return v;
}

function str(v: unknown, path: Path, is: Issues, what = 'a string'): string | undefined {
  if (typeof v === 'string') return v;
  const quote = typeof v === 'number' || typeof v === 'boolean' ? ` (quote it: "${String(v)}")` : '';
  return is.add(path, `expected ${what}, got ${describe(v)}${quote}`);
}

function matching(v: unknown, path: Path, is: Issues, re: RegExp, what: string): string | undefined {
  const s = str(v, path, is, what);
  if (s === undefined) return undefined;
  if (!re.test(s)) return is.add(path, `expected ${what}, got ${describe(s)}`);
  return s;
}

function int(v: unknown, path: Path, is: Issues, min: number, max: number): number | undefined {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    return is.add(path, `expected a whole number from ${min} to ${max}, got ${describe(v)}`);
  }
  return v;
}

function bool(v: unknown, path: Path, is: Issues): boolean | undefined {
  if (typeof v !== 'boolean') return is.add(path, `expected true or false, got ${describe(v)}`);
  return v;
}

function oneOf<T extends string>(v: unknown, path: Path, is: Issues, values: readonly T[]): T | undefined {
  if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
  const near = typeof v === 'string' ? didYouMean(v, values) : undefined;
  return is.add(
    path,
    `expected one of ${values.join(' | ')}, got ${describe(v)}${near === undefined ? '' : ` (did you mean "${near}"?)`}`,
  );
}

function strings(v: unknown, path: Path, is: Issues, minItems: number): string[] | undefined {
  if (!Array.isArray(v)) return is.add(path, `expected a list of strings, got ${describe(v)}`);
  if (v.length < minItems)
    return is.add(path, `expected at least ${minItems} item${minItems === 1 ? '' : 's'}, got none`);
  let ok = true;
  v.forEach((x, i) => {
    if (typeof x !== 'string') {
      ok = false;
      str(x, [...path, i], is);
    }
  });
  return ok ? (v as string[]) : undefined;
}

function stringMap(
  v: unknown,
  path: Path,
  is: Issues,
  keyRe: RegExp,
  keyWhat: string,
): Record<string, string> | undefined {
  if (!isPlainObject(v)) return is.add(path, `expected a mapping of names to strings, got ${describe(v)}`);
  const out: Record<string, string> = {};
  let ok = true;
  for (const [k, x] of Object.entries(v)) {
    if (!keyRe.test(k)) {
      ok = false;
      is.add([...path, k], `"${k}" is not ${keyWhat}`, 'key');
    }
    const s = str(x, [...path, k], is);
    if (s === undefined) ok = false;
    else out[k] = s;
  }
  return ok ? out : undefined;
}

function has(o: JsonObject, k: string): boolean {
  return Object.hasOwn(o, k) && o[k] !== undefined;
}

function checkResources(v: unknown, path: Path, is: Issues): Resources | undefined {
  const o = mapping(v, path, is, ['cpu', 'memory']);
  if (o === undefined) return undefined;
  const out: Resources = {};
  if (has(o, 'cpu')) {
    const c = o.cpu;
    if ((typeof c === 'number' || typeof c === 'string') && parseCpu(c) !== undefined) out.cpu = c;
    else
      is.add(
        [...path, 'cpu'],
        `expected cores (0.25) or millicores ("250m"), more than 0 and at most 1024 cores, got ${describe(c)}`,
      );
  }
  if (has(o, 'memory')) {
    const m = o.memory;
    const bytes = parseMemory(m);
    if ((typeof m === 'number' || typeof m === 'string') && bytes !== undefined) {
      if (bytes < 2 ** 20)
        is.add([...path, 'memory'], `expected at least 1Mi of memory, got ${describe(m)} (${bytes} bytes)`);
      else out.memory = m;
    } else {
      is.add([...path, 'memory'], `expected bytes or a quantity such as 64Mi, 1Gi, 500M, got ${describe(m)}`);
    }
  }
  return out;
}

function checkHealth(v: unknown, path: Path, is: Issues, ports: readonly string[]): HealthProbe | undefined {
  const o = mapping(v, path, is, ['tcp', 'http', 'exec', 'intervalSeconds', 'timeoutSeconds']);
  if (o === undefined) return undefined;
  const kinds = (['tcp', 'http', 'exec'] as const).filter((k) => has(o, k));
  if (kinds.length !== 1) {
    return is.add(
      path,
      `expected exactly one probe (tcp, http or exec), got ${kinds.length === 0 ? 'none' : kinds.join(' and ')}`,
    );
  }
  const interval = has(o, 'intervalSeconds')
    ? int(o.intervalSeconds, [...path, 'intervalSeconds'], is, 1, 3600)
    : 10;
  const timeout = has(o, 'timeoutSeconds')
    ? int(o.timeoutSeconds, [...path, 'timeoutSeconds'], is, 1, 3600)
    : 2;
  if (interval !== undefined && timeout !== undefined && timeout > interval) {
    is.add([...path, 'timeoutSeconds'], `expected at most intervalSeconds (${interval}), got ${timeout}`);
  }
  const portRef = (pv: unknown, pp: Path): string | undefined => {
    const p = str(pv, pp, is, 'a port name');
    if (p === undefined || ports.includes(p)) return p;
    const near = didYouMean(p, ports);
    const known = ports.length === 0 ? 'the container declares no ports' : `declared: ${ports.join(', ')}`;
    return is.add(
      pp,
      `port "${p}" is not declared by this container (${near === undefined ? known : `did you mean "${near}"?`})`,
    );
  };
  const kind = kinds[0];
  const kp = [...path, kind as string];
  let probe: HealthProbe | undefined;
  if (kind === 'tcp') {
    const t = mapping(o.tcp, kp, is, ['port'], ['port']);
    const port = t === undefined ? undefined : portRef(t.port, [...kp, 'port']);
    if (port !== undefined) probe = { tcp: { port }, intervalSeconds: 0, timeoutSeconds: 0 };
  } else if (kind === 'http') {
    const h = mapping(o.http, kp, is, ['port', 'path'], ['port']);
    const port = h === undefined ? undefined : portRef(h.port, [...kp, 'port']);
    const p =
      h === undefined || !has(h, 'path')
        ? '/'
        : matching(h.path, [...kp, 'path'], is, /^\/\S*$/, 'a URL path starting with /');
    if (port !== undefined && p !== undefined)
      probe = { http: { port, path: p }, intervalSeconds: 0, timeoutSeconds: 0 };
  } else {
    const e = mapping(o.exec, kp, is, ['command'], ['command']);
    const command = e === undefined ? undefined : strings(e.command, [...kp, 'command'], is, 1);
    if (command !== undefined) probe = { exec: { command }, intervalSeconds: 0, timeoutSeconds: 0 };
  }
  if (probe === undefined || interval === undefined || timeout === undefined) return undefined;
  probe.intervalSeconds = interval;
  probe.timeoutSeconds = timeout;
  return probe;
}

function checkContainer(v: unknown, path: Path, is: Issues): ContainerSpec | undefined {
  const o = mapping(
    v,
    path,
    is,
    ['name', 'command', 'args', 'env', 'ports', 'resources', 'health'],
    ['name', 'command'],
    {
      image: 'meshd runs processes, not images: give the program in "command"',
    },
  );
  if (o === undefined) return undefined;
  const name = has(o, 'name')
    ? matching(
        o.name,
        [...path, 'name'],
        is,
        dnsLabel,
        'a lowercase name (letters, digits, dashes; at most 63)',
      )
    : undefined;
  const command = has(o, 'command') ? strings(o.command, [...path, 'command'], is, 1) : undefined;
  const c: Partial<ContainerSpec> = {};
  let ok = name !== undefined && command !== undefined;
  if (has(o, 'args')) {
    const args = strings(o.args, [...path, 'args'], is, 0);
    if (args === undefined) ok = false;
    else c.args = args;
  }
  if (has(o, 'env')) {
    const env = stringMap(o.env, [...path, 'env'], is, envName, 'a variable name (letters, digits, _)');
    if (env === undefined) ok = false;
    else {
      for (const k of Object.keys(env)) {
        if (k.startsWith('MESHD_')) {
          ok = false;
          is.add([...path, 'env', k], `${k}: variables starting with MESHD_ are set by meshd`, 'key');
        }
      }
      c.env = env;
    }
  }
  const portNames: string[] = [];
  if (has(o, 'ports')) {
    if (!Array.isArray(o.ports)) {
      ok = false;
      is.add([...path, 'ports'], `expected a list of ports like [{ name: http }], got ${describe(o.ports)}`);
    } else {
      const ports: PortSpec[] = [];
      o.ports.forEach((p, i) => {
        const pp = [...path, 'ports', i];
        const po = mapping(p, pp, is, ['name'], ['name']);
        const n =
          po === undefined || !has(po, 'name')
            ? undefined
            : matching(
                po.name,
                [...pp, 'name'],
                is,
                portName,
                'a port name (lowercase letters, digits, dashes; at most 15; starts with a letter)',
              );
        if (n === undefined) ok = false;
        else {
          ports.push({ name: n });
          portNames.push(n);
        }
      });
      c.ports = ports;
    }
  }
  if (has(o, 'resources')) {
    const r = checkResources(o.resources, [...path, 'resources'], is);
    if (r === undefined) ok = false;
    else c.resources = r;
  }
  if (has(o, 'health')) {
    const h = checkHealth(o.health, [...path, 'health'], is, portNames);
    if (h === undefined) ok = false;
    else c.health = h;
  }
  if (!ok || name === undefined || command === undefined) return undefined;
  return { name, command, ...c };
}

/**
 * The security fields (`hostNetwork`, `hostPaths`, `devices`, `capabilities`, `unsandboxed`) at `path`.
 * A pod's `spec.security` and a node's policy file share this shape: one asks, the other allows.
 */
export function checkSecurity(v: unknown, path: Path, is: Issues): SecuritySpec | undefined {
  const o = mapping(v, path, is, ['hostNetwork', 'hostPaths', 'devices', 'capabilities', 'unsandboxed']);
  if (o === undefined) return undefined;
  const out: SecuritySpec = {};
  let ok = true;
  for (const k of ['hostNetwork', 'unsandboxed'] as const) {
    if (!has(o, k)) continue;
    const b = bool(o[k], [...path, k], is);
    if (b === undefined) ok = false;
    else out[k] = b;
  }
  const absPath = (x: unknown, p: Path, what: string): string | undefined => {
    const s = str(x, p, is, what);
    if (s === undefined) return undefined;
    if (!s.startsWith('/') || s.split('/').some((seg) => seg === '..' || seg === '.')) {
      return is.add(p, `expected ${what}, got ${describe(s)}`);
    }
    return s;
  };
  if (has(o, 'hostPaths')) {
    if (!Array.isArray(o.hostPaths)) {
      ok = false;
      is.add(
        [...path, 'hostPaths'],
        `expected a list like [{ path: /srv/data, readOnly: true }], got ${describe(o.hostPaths)}`,
      );
    } else {
      const list: HostPath[] = [];
      o.hostPaths.forEach((h, i) => {
        const hp = [...path, 'hostPaths', i];
        const ho = mapping(h, hp, is, ['path', 'readOnly'], ['path']);
        if (ho === undefined) {
          ok = false;
          return;
        }
        const p = has(ho, 'path')
          ? absPath(ho.path, [...hp, 'path'], 'an absolute path without . or ..')
          : undefined;
        const ro = has(ho, 'readOnly') ? bool(ho.readOnly, [...hp, 'readOnly'], is) : false;
        if (p === undefined || ro === undefined) ok = false;
        else list.push({ path: p, readOnly: ro });
      });
      out.hostPaths = list;
    }
  }
  if (has(o, 'devices')) {
    const ds = strings(o.devices, [...path, 'devices'], is, 0);
    if (ds === undefined) ok = false;
    else {
      ds.forEach((d, i) => {
        if (!/^\/dev\/[A-Za-z0-9_./-]+$/.test(d) || d.includes('..')) {
          ok = false;
          is.add([...path, 'devices', i], `expected a device path under /dev, got ${describe(d)}`);
        }
      });
      out.devices = ds;
    }
  }
  if (has(o, 'capabilities')) {
    const cs = strings(o.capabilities, [...path, 'capabilities'], is, 0);
    if (cs === undefined) ok = false;
    else {
      cs.forEach((c, i) => {
        if (!capabilityName.test(c)) {
          ok = false;
          is.add(
            [...path, 'capabilities', i],
            `expected a capability name such as NET_BIND_SERVICE, got ${describe(c)}`,
          );
        }
      });
      out.capabilities = cs;
    }
  }
  return ok ? out : undefined;
}

function checkPlacement(v: unknown, path: Path, is: Issues): Placement | undefined {
  const o = mapping(v, path, is, ['host', 'labels']);
  if (o === undefined) return undefined;
  if (has(o, 'host') && has(o, 'labels')) {
    return is.add(path, 'expected either host or labels, not both (a pinned host already decides placement)');
  }
  const out: Placement = {};
  if (has(o, 'host')) {
    const h = matching(o.host, [...path, 'host'], is, hostName, 'a host name');
    if (h === undefined) return undefined;
    out.host = h;
  }
  if (has(o, 'labels')) {
    const l = stringMap(o.labels, [...path, 'labels'], is, labelKey, 'a label key (name or prefix/name)');
    if (l === undefined) return undefined;
    out.labels = l;
  }
  return out;
}

const podFields = ['kind', 'name', 'spec'] as const;
const specFields = [
  'containers',
  'restartPolicy',
  'availability',
  'replicas',
  'placement',
  'haGraceSeconds',
  'security',
];

/** Validates a parsed pod (user form). Returns the pod with defaults filled in, or every issue found. */
export function validatePod(
  value: unknown,
): { pod: Pod; issues: [] } | { pod?: undefined; issues: SpecIssue[] } {
  const is = new Issues();
  const pod = checkPod(value, is);
  if (pod !== undefined && is.list.length === 0) return { pod, issues: [] };
  return { issues: is.list.length > 0 ? is.list : [{ path: [], message: 'invalid pod' }] };
}

function checkPod(value: unknown, is: Issues): Pod | undefined {
  const top = mapping(value, [], is, podFields, podFields, {
    metadata: 'meshd has no metadata: put "name" at the top level',
    apiVersion: 'meshd specs have no apiVersion: remove it',
  });
  if (top === undefined) return undefined;
  if (has(top, 'kind') && top.kind !== 'Pod') {
    const hint =
      typeof top.kind === 'string' && top.kind.toLowerCase() === 'pod' ? ' (did you mean "Pod"?)' : '';
    is.add(['kind'], `expected "Pod", got ${describe(top.kind)}${hint}`);
  }
  const name = has(top, 'name')
    ? matching(top.name, ['name'], is, dnsLabel, 'a lowercase name (letters, digits, dashes; at most 63)')
    : undefined;
  if (!has(top, 'spec')) return undefined;
  const s = mapping(top.spec, ['spec'], is, specFields, ['containers']);
  if (s === undefined) return undefined;

  let containers: ContainerSpec[] | undefined;
  if (has(s, 'containers')) {
    if (!Array.isArray(s.containers) || s.containers.length === 0) {
      is.add(
        ['spec', 'containers'],
        `expected a list of at least one container, got ${describe(s.containers)}`,
      );
    } else {
      const list = s.containers.map((c, i) => checkContainer(c, ['spec', 'containers', i], is));
      if (list.every((c) => c !== undefined)) containers = list as ContainerSpec[];
      crossContainerChecks(s.containers, is);
    }
  }
  const restartPolicy = has(s, 'restartPolicy')
    ? oneOf(s.restartPolicy, ['spec', 'restartPolicy'], is, ['always', 'on-failure', 'never'] as const)
    : 'always';
  const availability = has(s, 'availability')
    ? oneOf(s.availability, ['spec', 'availability'], is, ['ha', 'best-effort'] as const)
    : 'best-effort';
  const replicas = has(s, 'replicas') ? int(s.replicas, ['spec', 'replicas'], is, 1, 1000) : 1;
  const spec: Partial<PodSpec> = {};
  if (has(s, 'placement')) {
    const p = checkPlacement(s.placement, ['spec', 'placement'], is);
    if (p !== undefined) spec.placement = p;
  }
  if (has(s, 'haGraceSeconds')) {
    const g = int(s.haGraceSeconds, ['spec', 'haGraceSeconds'], is, 1, 86_400);
    if (g !== undefined) spec.haGraceSeconds = g;
  }
  if (has(s, 'security')) {
    const sec = checkSecurity(s.security, ['spec', 'security'], is);
    if (sec !== undefined) spec.security = sec;
  }
  if (
    name === undefined ||
    containers === undefined ||
    restartPolicy === undefined ||
    availability === undefined ||
    replicas === undefined
  ) {
    return undefined;
  }
  return { kind: 'Pod', name, spec: { containers, restartPolicy, availability, replicas, ...spec } };
}

/** Checks across containers: unique names, unique port names, `${PORT_X}` references that resolve. */
function crossContainerChecks(raw: unknown[], is: Issues): void {
  const names = new Map<string, number>();
  const ports = new Map<string, string>();
  raw.forEach((c, i) => {
    if (!isPlainObject(c)) return;
    if (typeof c.name === 'string') {
      const prev = names.get(c.name);
      if (prev !== undefined)
        is.add(
          ['spec', 'containers', i, 'name'],
          `container name "${c.name}" is already used by spec.containers[${prev}]`,
        );
      else names.set(c.name, i);
    }
    if (Array.isArray(c.ports)) {
      c.ports.forEach((p, j) => {
        if (!isPlainObject(p) || typeof p.name !== 'string') return;
        const at = `spec.containers[${i}].ports[${j}]`;
        const prev = ports.get(p.name);
        if (prev !== undefined)
          is.add(
            ['spec', 'containers', i, 'ports', j, 'name'],
            `port name "${p.name}" is already used by ${prev} (port names are unique in a pod)`,
          );
        else ports.set(p.name, at);
      });
    }
  });
  const portEnv = new Map([...ports.keys()].map((n) => [portEnvName(n), n]));
  raw.forEach((c, i) => {
    if (!isPlainObject(c)) return;
    if (isPlainObject(c.env)) {
      for (const k of Object.keys(c.env)) {
        if (portEnv.has(k))
          is.add(
            ['spec', 'containers', i, 'env', k],
            `${k} is set by meshd for port "${portEnv.get(k)}"`,
            'key',
          );
      }
    }
    for (const field of ['command', 'args'] as const) {
      const list = c[field];
      if (!Array.isArray(list)) continue;
      list.forEach((arg, j) => {
        if (typeof arg !== 'string') return;
        for (const m of arg.matchAll(/\$\{(PORT_[A-Za-z0-9_]*)\}/g)) {
          const ref = m[1] as string;
          if (portEnv.has(ref)) continue;
          const near = didYouMean(ref, [...portEnv.keys()]);
          const known =
            portEnv.size === 0 ? 'the pod declares no ports' : `declared: ${[...portEnv.keys()].join(', ')}`;
          is.add(
            ['spec', 'containers', i, field, j],
            `\${${ref}} names no declared port (${near === undefined ? known : `did you mean \${${near}}?`})`,
          );
        }
      });
    }
  });
}

// ---- files --------------------------------------------------------------------------------------

interface Located extends SpecIssue {
  line?: number;
  column?: number;
}

function nodeAt(doc: ReturnType<typeof parseDocument>, path: Path): YamlNode | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (node !== null && node !== undefined && typeof node === 'object' && 'range' in node)
      return node as YamlNode;
  }
  return undefined;
}

function locate(doc: ReturnType<typeof parseDocument>, lc: LineCounter, issue: SpecIssue): Located {
  let offset: number | undefined;
  if (issue.at === 'key') {
    const parent = nodeAt(doc, issue.path.slice(0, -1));
    const last = issue.path[issue.path.length - 1];
    if (parent !== undefined && isMap(parent)) {
      const pair = parent.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === last);
      const key = pair?.key;
      if (key !== undefined && key !== null && isScalar(key) && key.range) offset = key.range[0];
    }
  }
  if (offset === undefined) {
    // A missing field points at its parent mapping; anything else at the value itself.
    offset = nodeAt(doc, issue.path)?.range?.[0];
  }
  if (offset === undefined) return issue;
  const pos = lc.linePos(offset);
  return { ...issue, line: pos.line, column: pos.col };
}

function issueLine(file: string, i: Located): string {
  const where = i.line === undefined ? file : `${file}:${i.line}:${i.column}`;
  return `${where} ${i.path.length === 0 ? '(top level)' : formatPath(i.path)}: ${i.message}`;
}

/** How `parseYamlFile` names and explains one kind of strict YAML file (a pod spec, a node policy). */
export interface YamlFileKind<T> {
  /** What the file holds, in messages: "pod spec". */
  readonly what: string;
  /** Error codes are `<prefix>_TOO_LARGE`, `_SYNTAX`, `_EMPTY` and `_INVALID`. */
  readonly codePrefix: string;
  readonly maxBytes: number;
  readonly tooLargeHint: string;
  /** Said of a second document (`---`) in the file. */
  readonly oneDocument: string;
  /** What an empty file means: a value, or an error with this hint. */
  readonly empty: { readonly value: T } | { readonly hint: string };
  /** The next step once the listed fields are fixed: "apply it again". */
  readonly afterFix: string;
  /** Returns the value, or undefined; every problem goes to `is` (with its field path). */
  readonly validate: (value: unknown, is: Issues) => T | undefined;
}

/**
 * Parses and validates a strict YAML (or JSON, which YAML 1.2 reads) file. Throws ValidationError naming
 * the file, every offending field path with line:col, what was expected and a suggestion.
 */
export function parseYamlFile<T>(text: string, file: string, kind: YamlFileKind<T>): T {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > kind.maxBytes) {
    throw new ValidationError(
      `${kind.codePrefix}_TOO_LARGE`,
      `${file} is ${bytes} bytes; a ${kind.what} may be at most ${kind.maxBytes} bytes`,
      { hint: kind.tooLargeHint, details: { file, path: '', bytes, limit: kind.maxBytes } },
    );
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, strict: true });
  if (doc.errors.length > 0) {
    const lines = doc.errors.map((e) => {
      const pos = lc.linePos(e.pos[0]);
      const msg = e.code === 'MULTIPLE_DOCS' ? kind.oneDocument : e.message.split('\n')[0];
      return { line: pos.line, column: pos.col, text: `${file}:${pos.line}:${pos.col} syntax error: ${msg}` };
    });
    const first = lines[0] as { line: number; column: number };
    throw new ValidationError(`${kind.codePrefix}_SYNTAX`, lines.map((l) => l.text).join('\n'), {
      hint: `Fix the syntax of ${file} at line ${first.line}, column ${first.column} (check indentation, quotes and brackets).`,
      details: { file, path: '', line: first.line, column: first.column, issues: lines },
    });
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ValidationError(`${kind.codePrefix}_SYNTAX`, `${file}: ${(err as Error).message}`, {
      hint: `Expand the YAML aliases in ${file}.`,
      details: { file, path: '' },
      cause: err,
    });
  }
  if (value === null || value === undefined) {
    if ('value' in kind.empty) return kind.empty.value;
    throw new ValidationError(`${kind.codePrefix}_EMPTY`, `${file} is empty`, {
      hint: kind.empty.hint,
      details: { file, path: '' },
    });
  }
  const is = new Issues();
  const result = kind.validate(value, is);
  if (result !== undefined && is.list.length === 0) return result;
  const issues: SpecIssue[] = is.list.length > 0 ? is.list : [{ path: [], message: `invalid ${kind.what}` }];
  const located = issues.map((i) => locate(doc, lc, i));
  located.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
  const first = located[0] as Located;
  const n = located.length;
  const message = `${file}: ${n} problem${n === 1 ? '' : 's'} in the ${kind.what}:\n${located.map((i) => `  ${issueLine(file, i)}`).join('\n')}`;
  throw new ValidationError(`${kind.codePrefix}_INVALID`, message, {
    hint: `Fix the field${n === 1 ? '' : 's'} listed in ${file} and ${kind.afterFix}.`,
    details: {
      file,
      path: formatPath(first.path),
      ...(first.line === undefined ? {} : { line: first.line, column: first.column }),
      issues: located.map((i) => ({
        path: formatPath(i.path),
        message: i.message,
        ...(i.line === undefined ? {} : { line: i.line, column: i.column }),
      })),
    },
  });
}

const podSpecFile: YamlFileKind<Pod> = {
  what: 'pod spec',
  codePrefix: 'E_SPEC',
  maxBytes: maxSpecBytes,
  tooLargeHint:
    'Keep large data out of the spec: put it in a file on the host (security.hostPaths) or fetch it at start.',
  oneDocument: 'more than one document (`---`): give one pod per file',
  empty: { hint: 'A pod spec needs kind: Pod, name and spec.containers.' },
  afterFix: 'apply it again',
  validate: (value, is) => {
    const pod = checkPod(value, is);
    if (pod === undefined && is.list.length === 0) is.add([], 'invalid pod');
    return pod;
  },
};

/**
 * Parses and validates a pod spec file (YAML, or JSON, which YAML 1.2 reads). Throws ValidationError
 * naming the file, every offending field path with line:col, what was expected and a suggestion.
 */
export function parsePodSpec(text: string, file: string): Pod {
  return parseYamlFile(text, file, podSpecFile);
}

// ---- stored form ------------------------------------------------------------------------------------

/**
 * In the cluster document a pod's containers are a map keyed by name (with an `order`), not a list:
 * a merge patch replaces lists whole, so keying them lets two partitions edit different fields of
 * containers (or different containers) and keep both edits.
 */
export interface StoredContainer extends Omit<ContainerSpec, 'name'> {
  order: number;
}

export interface StoredPodSpec extends Omit<PodSpec, 'containers'> {
  containers: Record<string, StoredContainer>;
}

/** The live fields other controllers write (see field-ownership.ts); plugins may add more. */
export interface PodStatus {
  placement?: JsonObject;
  phase?: string;
  node?: string;
  runningRevision?: string | number;
  ports?: Record<string, number>;
  pid?: number;
  restarts?: number;
  lastError?: string;
  ip?: string;
  rollout?: JsonObject;
  /** Per-replica status written by the runtime of the node running each slot, keyed by slot number. */
  slots?: JsonObject;
  [field: string]: JsonValue | undefined;
}

export interface StoredPod {
  kind: 'Pod';
  name: string;
  spec: StoredPodSpec;
  status?: PodStatus;
}

/** The document form of a pod: `{kind, name, spec}` with containers keyed by name. */
export function toStoredPod(pod: Pod): JsonObject {
  const containers: JsonObject = {};
  pod.spec.containers.forEach((c, order) => {
    const { name, ...rest } = c;
    containers[name] = { ...(rest as unknown as JsonObject), order };
  });
  return JSON.parse(
    JSON.stringify({ kind: pod.kind, name: pod.name, spec: { ...pod.spec, containers } }),
  ) as JsonObject;
}

/** The user form of a stored pod's `{kind, name, spec}` (status dropped); issues if it is not one. */
function fromStored(obj: JsonObject, is: Issues): unknown {
  const spec = obj.spec;
  if (!isPlainObject(spec)) return obj;
  const cs = spec.containers;
  if (!isPlainObject(cs)) {
    is.add(['spec', 'containers'], `expected containers keyed by name, got ${describe(cs)}`);
    return undefined;
  }
  const list: { name: string; order: number; rest: JsonObject }[] = [];
  for (const [name, c] of Object.entries(cs)) {
    if (!isPlainObject(c) || typeof c.order !== 'number' || !Number.isInteger(c.order)) {
      is.add(['spec', 'containers', name], 'expected a container with an integer order');
      continue;
    }
    const { order, ...rest } = c;
    list.push({ name, order, rest });
  }
  list.sort((a, b) => a.order - b.order || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const top: JsonObject = {};
  for (const k of Object.keys(obj)) if (k !== 'status') top[k] = obj[k] as JsonValue;
  return { ...top, spec: { ...spec, containers: list.map((c) => ({ name: c.name, ...c.rest })) } };
}

function checkStatus(v: unknown, is: Issues): void {
  if (!isPlainObject(v)) return void is.add(['status'], `expected a mapping, got ${describe(v)}`);
  for (const k of ['phase', 'node', 'lastError', 'ip']) {
    if (v[k] !== undefined && typeof v[k] !== 'string')
      is.add(['status', k], `expected a string, got ${describe(v[k])}`);
  }
  for (const k of ['placement', 'rollout', 'slots']) {
    if (v[k] !== undefined && !isPlainObject(v[k]))
      is.add(['status', k], `expected a mapping, got ${describe(v[k])}`);
  }
  for (const k of ['pid', 'restarts']) {
    const x = v[k];
    if (x !== undefined && (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0)) {
      is.add(['status', k], `expected a whole number ≥ 0, got ${describe(x)}`);
    }
  }
  const rr = v.runningRevision;
  if (rr !== undefined && typeof rr !== 'string' && typeof rr !== 'number')
    is.add(['status', 'runningRevision'], `expected a revision, got ${describe(rr)}`);
  if (v.ports !== undefined) {
    if (!isPlainObject(v.ports))
      is.add(['status', 'ports'], `expected a mapping of port names to numbers, got ${describe(v.ports)}`);
    else {
      for (const [k, p] of Object.entries(v.ports)) {
        if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535)
          is.add(['status', 'ports', k], `expected a port number, got ${describe(p)}`);
      }
    }
  }
}

/**
 * Live status of a pod lives in its own object, `podstatus/<name>` (`{status: {slots: {...}}}`), written by
 * controllers such as the runtime. Kept apart from `pod/<name>` so that a pod's revisions — and the
 * numbers users type — are spec changes only; status churn never inflates them.
 */
export function podStatusKey(podName: string): string {
  return `podstatus/${podName}`;
}

/** Why a `podstatus/<name>` object is invalid, or undefined. Used by materialize. */
export function podStatusProblem(_key: string, obj: JsonObject): string | undefined {
  const is = new Issues();
  for (const k of Object.keys(obj)) if (k !== 'status') is.add([k], 'unknown field of a pod status object');
  if (obj.status !== undefined) checkStatus(obj.status, is);
  if (is.list.length === 0) return undefined;
  return `invalid pod status: ${is.list
    .slice(0, 3)
    .map((i) => `${formatPath(i.path)}: ${i.message}`)
    .join('; ')}`;
}

/** The validators of every object kind meshd stores. */
export const podValidators = Object.freeze({
  pod: storedPodProblem,
  podstatus: podStatusProblem,
});

/** Why a stored pod object is invalid for `key` (`pod/<name>`), or undefined. Used by materialize. */
export function storedPodProblem(key: string, obj: JsonObject): string | undefined {
  const is = new Issues();
  const user = fromStored(obj, is);
  if (user !== undefined) checkPod(user, is);
  if (obj.status !== undefined) checkStatus(obj.status, is);
  const name = key.slice(key.indexOf('/') + 1);
  if (typeof obj.name === 'string' && obj.name !== name)
    is.add(['name'], `expected "${name}" (the object's name never changes), got ${describe(obj.name)}`);
  if (is.list.length === 0) return undefined;
  const shown = is.list
    .slice(0, 3)
    .map((i) => `${i.path.length === 0 ? '(top level)' : formatPath(i.path)}: ${i.message}`);
  if (is.list.length > 3) shown.push(`and ${is.list.length - 3} more`);
  return `invalid pod: ${shown.join('; ')}`;
}

/** The user form of a stored pod (for `meshd edit`, the runtime, the scheduler). Throws if it is not a valid pod. */
export function podFromStored(obj: JsonObject): Pod {
  const is = new Issues();
  const user = fromStored(obj, is);
  const pod = user === undefined ? undefined : checkPod(user, is);
  if (pod === undefined || is.list.length > 0) {
    throw new ValidationError(
      'E_STORED_POD',
      `stored pod ${String(obj.name)} is invalid: ${is.list.map((i) => `${formatPath(i.path)}: ${i.message}`).join('; ')}`,
      {
        hint: 'This is a bug: materialize only yields valid objects. Report it with `meshd history`.',
        details: { path: formatPath(is.list[0]?.path ?? []) },
      },
    );
  }
  return pod;
}
