// The meshd command line: parse, call the local API (or run the daemon), format; errors are caught once, here.

import { stringify as toYaml } from 'yaml';
import { DataDir } from '../daemon/data-dir.ts';
import { isMeshdError, UsageError } from '../shared/errors.ts';
import { meshdVersion } from '../shared/version.ts';
import { daemonCommands } from './daemon-commands.ts';
import { dashboardCommands } from './dashboard-commands.ts';
import { meshCommands } from './mesh-commands.ts';
import { podCommands } from './pod-commands.ts';

export interface CommandContext {
  out: (text: string) => void;
  err: (text: string) => void;
}

export interface Command {
  /** Words that select it, e.g. ['get', 'nodes']. */
  words: string[];
  summary: string;
  usage: string;
  run(argv: string[], ctx: CommandContext): Promise<number>;
}

const commands: Command[] = [...daemonCommands, ...meshCommands, ...podCommands, ...dashboardCommands];

export function helpText(): string {
  const width = Math.max(...commands.map((c) => c.usage.length));
  return [
    'meshd — an edge-first, peer-to-peer orchestrator',
    '',
    'Usage:',
    ...commands.map((c) => `  ${c.usage.padEnd(width)}  ${c.summary}`),
    '',
    'Every command takes --data-dir DIR (or MESHD_DATA_DIR). Read commands take -o json.',
  ].join('\n');
}

export async function main(argv: string[], ctx?: CommandContext): Promise<number> {
  const io: CommandContext = ctx ?? {
    out: (t) => process.stdout.write(`${t}\n`),
    err: (t) => process.stderr.write(`${t}\n`),
  };
  try {
    if (argv.length === 0 || argv[0] === 'help' || argv[0] === '--help' || argv[0] === '-h') {
      io.out(helpText());
      return argv.length === 0 ? 2 : 0;
    }
    if (argv[0] === '--version' || argv[0] === 'version') {
      io.out(meshdVersion);
      return 0;
    }
    const command = commands
      .filter((c) => c.words.every((w, i) => argv[i] === w))
      .sort((a, b) => b.words.length - a.words.length)[0];
    if (command === undefined) {
      throw new UsageError(
        `unknown command "${argv.slice(0, 2).join(' ')}"`,
        'Run `meshd --help` for the list of commands.',
      );
    }
    const rest = argv.slice(command.words.length);
    if (rest.includes('--help') || rest.includes('-h')) {
      io.out(`Usage: meshd ${command.usage}\n  ${command.summary}`);
      return 0;
    }
    return await command.run(rest, io);
  } catch (err) {
    if (isMeshdError(err)) {
      io.err(`error: ${err.message}`);
      if (err.hint !== undefined) io.err(`  hint: ${err.hint}`);
      return err instanceof UsageError ? 2 : 1;
    }
    io.err(
      `internal error (this is a bug in meshd, please report it): ${err instanceof Error ? err.stack : String(err)}`,
    );
    return 70;
  }
}

/** Prints `value` as JSON/YAML when asked, else through `text`. */
export function emit(
  ctx: CommandContext,
  output: 'text' | 'json' | 'yaml',
  value: unknown,
  text: () => string,
): void {
  if (output === 'json') ctx.out(JSON.stringify(value, null, 2));
  else if (output === 'yaml') ctx.out(toYaml(value).trimEnd());
  else ctx.out(text());
}

export function dataDirOf(path: string): DataDir {
  return new DataDir(path);
}
