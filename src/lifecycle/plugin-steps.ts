// Operator-supplied lifecycle steps: executable hooks from node config and ES module plugins.
//
// An exec hook runs in its own process group with the pod's context as JSON on stdin. It succeeds on
// exit 0 (a JSON object on stdout becomes the step's output), fails with the tail of its stderr
// otherwise, and its whole group is sent SIGTERM on timeout or abort, then SIGKILL after a grace
// period. Processes the hook leaves behind are killed when it exits (like a systemd oneshot unit).

import { spawn } from 'node:child_process';
import { resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { describeError, ValidationError } from '../shared/errors.ts';
import { closestName, type StepContext, type StepDefinition, validateStepDefinition } from './step-graph.ts';

/** An executable hook as written in node config (`lifecycle.hooks[]`). */
export interface ExecHookConfig {
  readonly name: string;
  readonly description?: string;
  readonly after?: readonly string[];
  readonly before?: readonly string[];
  readonly requires?: readonly string[];
  readonly wants?: readonly string[];
  readonly requiredBy?: readonly string[];
  readonly wantedBy?: readonly string[];
  /** argv; the first element is a path or a name looked up in PATH. */
  readonly exec: readonly string[];
  /** Run when the pod stops, with the same stdin; only if the hook's start ran. */
  readonly stopExec?: readonly string[];
  /** `'5s'`, `'500ms'`, `'2m'`, or milliseconds. */
  readonly timeout?: string | number;
}

/** The plugin part of node config. */
export interface PluginConfig {
  readonly hooks?: readonly unknown[];
  /** Paths of ES modules exporting `steps` (or a default function returning them). */
  readonly modules?: readonly string[];
}

export interface ExecHookOptions {
  readonly clock: Clock;
  /** Between SIGTERM and SIGKILL of the hook's process group. */
  readonly killGraceMs?: number;
}

/** What a hook reads on stdin. */
export interface HookInput {
  readonly pod: string;
  readonly node: string;
  readonly attempt: number;
  readonly step: string;
  readonly phase: 'start' | 'stop';
  readonly spec: unknown;
  readonly outputs: Readonly<Record<string, unknown>>;
}

export const DEFAULT_KILL_GRACE_MS = 2000;
const STDERR_TAIL_BYTES = 4096;
const STDOUT_MAX_BYTES = 64 * 1024;
const HOOK_FIELDS: readonly string[] = [
  'name',
  'description',
  'after',
  'before',
  'requires',
  'wants',
  'requiredBy',
  'wantedBy',
  'exec',
  'stopExec',
  'timeout',
];

/**
 * Loads every plugin step named in node config: hooks first, then modules, in config order.
 * `configPath` names the config section in errors (`lifecycle` → `lifecycle.hooks[2].exec`).
 */
export async function loadPluginSteps(
  config: PluginConfig,
  opts: ExecHookOptions & { readonly configPath?: string },
): Promise<StepDefinition[]> {
  const base = opts.configPath ?? 'lifecycle';
  const steps = (config.hooks ?? []).map((hook, i) => execHookStep(hook, `${base}.hooks[${i}]`, opts));
  for (const file of config.modules ?? []) steps.push(...(await loadModulePlugin(file)));
  return steps;
}

/** Validates one hook's config and turns it into a step. `path` names it in errors. */
export function execHookStep(config: unknown, path: string, opts: ExecHookOptions): StepDefinition {
  const hook = checkHookConfig(config, path);
  const killGraceMs = opts.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  const timeoutMs = hook.timeout === undefined ? undefined : parseDuration(hook.timeout, `${path}.timeout`);
  const { exec, stopExec } = hook;
  const run = (argv: readonly string[], phase: 'start' | 'stop', ctx: StepContext, signal: AbortSignal) =>
    runHook(argv, hookInput(ctx, phase), { signal, clock: opts.clock, killGraceMs, step: ctx.step });
  const lists = Object.fromEntries(
    (['after', 'before', 'requires', 'wants', 'requiredBy', 'wantedBy'] as const)
      .filter((f) => hook[f] !== undefined)
      .map((f) => [f, [...(hook[f] ?? [])]]),
  );
  return {
    ...lists,
    name: hook.name,
    source: `node config ${path}`,
    description: hook.description ?? `exec ${exec.join(' ')}`,
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    start: async (ctx, signal) => {
      const stdout = await run(exec, 'start', ctx, signal);
      return parseOutput(stdout);
    },
    ...(stopExec === undefined
      ? {}
      : {
          stop: async (ctx: StepContext, signal: AbortSignal) => {
            await run(stopExec, 'stop', ctx, signal);
          },
        }),
  };
}

/**
 * Imports an ES module plugin and returns its validated steps. The module exports `steps` (an array
 * of step definitions) or a default function returning one (or a promise of one). Every error names
 * the file. Modules are cached by the runtime: a changed plugin needs a daemon restart.
 */
export async function loadModulePlugin(file: string): Promise<StepDefinition[]> {
  const abs = resolvePath(file);
  const where = `plugin ${abs}`;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(abs).href)) as Record<string, unknown>;
  } catch (err) {
    throw new ValidationError('E_PLUGIN_LOAD', `${where} could not be loaded: ${describeError(err)}`, {
      hint: 'Check the path in node config and that the file is an ES module that runs under Node 24.',
      details: { file: abs },
      cause: err,
    });
  }
  let steps: unknown = mod.steps;
  if (steps === undefined && typeof mod.default === 'function') {
    try {
      steps = await (mod.default as () => unknown)();
    } catch (err) {
      throw new ValidationError(
        'E_PLUGIN_LOAD',
        `${where}: its default export threw: ${describeError(err)}`,
        {
          hint: 'Fix the plugin; its default function must return an array of steps.',
          details: { file: abs },
          cause: err,
        },
      );
    }
  }
  if (!Array.isArray(steps)) {
    throw new ValidationError(
      'E_PLUGIN_INVALID',
      `${where} exports no steps: expected \`export const steps = [...]\` or a default function returning them`,
      {
        hint: 'Export an array of { name, after?, before?, requires?, wants?, timeoutMs?, start, stop? }.',
        details: { file: abs },
      },
    );
  }
  return steps.map((s, i) => validateStepDefinition(s, `${where}: steps[${i}]`, abs));
}

/** `'5s'`, `'250ms'`, `'2m'`, `'1h'`, `'1.5s'` or a number of milliseconds. */
export function parseDuration(value: unknown, path: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) return value;
  if (typeof value === 'string') {
    const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/.exec(value.trim());
    if (m !== null) {
      const n = Number(m[1]);
      const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
      if (n > 0) return n * unit;
    }
  }
  throw new ValidationError(
    'E_CONFIG_INVALID',
    `${path} must be a duration like '5s' or '500ms', got ${JSON.stringify(value)}`,
    {
      hint: `Write ${path}: 5s (units: ms, s, m, h) or a number of milliseconds.`,
      details: { path },
    },
  );
}

function checkHookConfig(config: unknown, path: string): ExecHookConfig {
  const fail = (field: string, what: string): never => {
    const at = field === '' ? path : `${path}.${field}`;
    throw new ValidationError('E_CONFIG_INVALID', `${at} ${what}`, {
      hint: 'A hook is { name, exec: [path, ...args], after?, before?, requires?, wants?, requiredBy?, wantedBy?, stopExec?, timeout? }.',
      details: { path: at },
    });
  };
  if (typeof config !== 'object' || config === null || Array.isArray(config))
    return fail('', 'must be a mapping');
  const c = config as Record<string, unknown>;
  for (const key of Object.keys(c)) {
    if (!HOOK_FIELDS.includes(key)) {
      const near = closestName(key, HOOK_FIELDS);
      fail(key, `is not a hook field${near === undefined ? '' : ` (did you mean '${near}'?)`}`);
    }
  }
  for (const field of ['exec', 'stopExec'] as const) {
    const argv = c[field];
    if (argv === undefined && field === 'stopExec') continue;
    if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string' && a !== '')) {
      fail(field, 'must be a non-empty list of strings: [program, ...arguments]');
    }
  }
  // The step-shaped fields are checked by the step validator, under the same path.
  const { exec: _e, stopExec: _s, timeout: _t, ...stepFields } = c;
  validateStepDefinition(stepFields, path);
  return c as unknown as ExecHookConfig;
}

function hookInput(ctx: StepContext, phase: 'start' | 'stop'): HookInput {
  return {
    pod: ctx.pod,
    node: ctx.node,
    attempt: ctx.attempt,
    step: ctx.step,
    phase,
    spec: ctx.spec,
    outputs: ctx.outputs,
  };
}

function parseOutput(stdout: string): Record<string, unknown> | undefined {
  const text = stdout.trim();
  if (!text.startsWith('{')) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    // Not JSON: stdout is free-form output then, not a step output.
    return undefined;
  }
}

/**
 * Runs a hook in a new process group. Resolves with stdout on exit 0; rejects with the stderr tail
 * otherwise. On abort: SIGTERM to the group, SIGKILL after `killGraceMs`; rejects with the abort
 * reason once the hook has exited.
 */
function runHook(
  argv: readonly string[],
  input: HookInput,
  opts: { signal: AbortSignal; clock: Clock; killGraceMs: number; step: string },
): Promise<string> {
  const [program, ...args] = argv as [string, ...string[]];
  return new Promise((resolve, reject) => {
    if (opts.signal.aborted) {
      reject(opts.signal.reason);
      return;
    }
    const child = spawn(program, args, {
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, MESHD_POD: input.pod, MESHD_NODE: input.node, MESHD_STEP: input.step },
    });
    let stdout = Buffer.alloc(0);
    let stderr = Buffer.alloc(0);
    let exited = false;
    let settled = false;
    let graceTimer: TimerHandle | undefined;
    let spawnError: NodeJS.ErrnoException | undefined;

    const killGroup = (sig: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        // ESRCH: the group is already gone.
      }
    };
    const onAbort = () => {
      killGroup('SIGTERM');
      graceTimer = opts.clock.setTimeout(() => killGroup('SIGKILL'), opts.killGraceMs);
      if (exited) finish(null, null);
    };
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (settled) return;
      settled = true;
      opts.signal.removeEventListener('abort', onAbort);
      graceTimer?.cancel();
      child.stdout?.destroy();
      child.stderr?.destroy();
      if (opts.signal.aborted) reject(opts.signal.reason);
      else if (spawnError !== undefined) {
        const why =
          spawnError.code === 'ENOENT'
            ? 'not found'
            : spawnError.code === 'EACCES'
              ? 'permission denied'
              : spawnError.message;
        reject(new Error(`${program}: ${why}`));
      } else if (code === 0) resolve(stdout.toString('utf8'));
      else {
        const how = code === null ? `was killed by ${signal ?? 'a signal'}` : `exited with code ${code}`;
        const tail = stderrTail(stderr);
        reject(new Error(`${program} ${how}${tail === '' ? '' : `: ${tail}`}`));
      }
    };

    opts.signal.addEventListener('abort', onAbort, { once: true });
    child.stdout?.on('data', (chunk: Buffer) => {
      if (stdout.length < STDOUT_MAX_BYTES)
        stdout = Buffer.concat([stdout, chunk]).subarray(0, STDOUT_MAX_BYTES);
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr = Buffer.concat([stderr, chunk]);
      if (stderr.length > STDERR_TAIL_BYTES) stderr = stderr.subarray(stderr.length - STDERR_TAIL_BYTES);
    });
    // A hook that does not read stdin makes the write fail with EPIPE: that is its right.
    child.stdin?.on('error', () => {});
    child.stdin?.end(`${JSON.stringify(input)}\n`);
    child.on('error', (err: NodeJS.ErrnoException) => {
      spawnError = err;
      if (child.pid === undefined) finish(null, null);
    });
    child.on('exit', () => {
      exited = true;
      // Whatever the hook left running in its group goes with it.
      killGroup('SIGKILL');
    });
    child.on('close', (code, signal) => finish(code, signal));
  });
}

/** The last lines of stderr on one line: `line 1 | line 2`. */
function stderrTail(buf: Buffer): string {
  const lines = buf
    .toString('utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
  const tail = lines.slice(-5).join(' | ');
  return tail.length > 500 ? `…${tail.slice(-499)}` : tail;
}
