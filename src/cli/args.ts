// Command-line parsing: strict flags per command, with errors that say which flag is wrong.

import { parseArgs } from 'node:util';
import { resolveDataDir } from '../daemon/data-dir.ts';
import { UsageError } from '../shared/errors.ts';

export type FlagSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

const globalFlags: FlagSpec = {
  'data-dir': { type: 'string' },
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
};

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  dataDir: string;
  output: 'text' | 'json' | 'yaml';
}

export function parseCommand(command: string, argv: string[], flags: FlagSpec): Parsed {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      options: { ...globalFlags, ...flags },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(
      `${command}: ${(err as Error).message}`,
      `Run \`meshd ${command} --help\` for its flags.`,
    );
  }
  const values = parsed.values as Parsed['values'];
  const output = (values.output as string | undefined) ?? 'text';
  if (output !== 'text' && output !== 'json' && output !== 'yaml') {
    throw new UsageError(`${command}: -o must be json, yaml or text, not ${JSON.stringify(output)}`);
  }
  return {
    values,
    positionals: parsed.positionals,
    dataDir: resolveDataDir(values['data-dir'] as string | undefined),
    output,
  };
}

export function stringFlag(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function listFlag(p: Parsed, name: string): string[] | undefined {
  const v = p.values[name];
  return Array.isArray(v) ? v : undefined;
}

export function boolFlag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

export function expectPositionals(command: string, p: Parsed, names: string[]): string[] {
  if (p.positionals.length < names.length) {
    throw new UsageError(
      `${command}: missing ${names.slice(p.positionals.length).join(' ')}`,
      `Usage: meshd ${command} ${names.join(' ')}`,
    );
  }
  if (p.positionals.length > names.length) {
    throw new UsageError(`${command}: unexpected argument ${JSON.stringify(p.positionals[names.length])}`);
  }
  return p.positionals;
}

/** Seconds as given on the command line (`30`, `30s`, `2m`) in milliseconds. */
export function parseDurationFlag(flag: string, value: string | undefined, fallbackMs: number): number {
  if (value === undefined) return fallbackMs;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value);
  if (m === null)
    throw new UsageError(`--${flag} must be a duration like 30s or 2m, not ${JSON.stringify(value)}`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return unit === 'ms' ? n : unit === 's' ? n * 1000 : n * 60_000;
}
