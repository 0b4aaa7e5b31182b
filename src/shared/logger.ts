// Structured JSON-line logging: one object per line, with `node`, `pod`, `step` as context fields.

import { fstatSync, writeSync } from 'node:fs';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogFields {
  node?: string;
  pod?: string;
  step?: string;
  peer?: string;
  [key: string]: unknown;
}

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Where lines go; defaults to stderr. May throw: the line is then counted as lost, never rethrown. */
  write?: (line: string) => void;
  now?: () => number;
  fields?: LogFields;
}

/**
 * Logging never throws and never takes the process down: a line that cannot be written (disk full, closed
 * pipe) is dropped and counted, and the next line that can be written is preceded by one saying how many
 * were lost. A failing log call inside an error path (the store reporting a full disk) must not turn the
 * error into a crash.
 */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const min = levelRank[opts.level ?? 'info'];
  const write = opts.write ?? stderrWriter();
  const now = opts.now ?? Date.now;
  // shared by every child logger: they write to the same place
  const lost = { lines: 0, error: '' };
  const tryWrite = (line: string): boolean => {
    try {
      write(line);
      return true;
    } catch (err) {
      lost.lines++;
      lost.error = err instanceof Error ? err.message : String(err);
      return false;
    }
  };
  const make = (base: LogFields): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
      if (levelRank[level] < min) return;
      const t = new Date(now()).toISOString();
      if (lost.lines > 0) {
        const notice = { t, level: 'warn', msg: 'log lines lost', lines: lost.lines, err: lost.error };
        // a failed notice counts one more lost line: the one being logged now, which is dropped with it
        if (!tryWrite(`${JSON.stringify(notice)}\n`)) return;
        lost.lines = 0;
      }
      tryWrite(`${JSON.stringify({ t, level, msg, ...base, ...fields }, jsonSafe)}\n`);
    };
    return {
      debug: (m, f) => emit('debug', m, f),
      info: (m, f) => emit('info', m, f),
      warn: (m, f) => emit('warn', m, f),
      error: (m, f) => emit('error', m, f),
      child: (fields) => make({ ...base, ...fields }),
    };
  };
  return make(opts.fields ?? {});
}

/** A logger that drops everything (for tests that do not look at logs). */
export const silentLogger: Logger = createLogger({ write: () => {} });

/**
 * Writes to stderr. When stderr is a file (a detached daemon logs to meshd.log), lines are written with
 * `writeSync` so that a failed write throws here, where it is counted, instead of becoming an unhandled
 * 'error' event of `process.stderr`, which kills the process. Either way `process.stderr` gets an error
 * listener, so other writers to it (Node warnings, libraries) cannot kill the process on ENOSPC or EPIPE.
 */
function stderrWriter(): (line: string) => void {
  if (process.stderr.listenerCount('error') === 0) process.stderr.on('error', () => {});
  let toFile = false;
  try {
    toFile = fstatSync(2).isFile();
  } catch {
    // no stderr at all: process.stderr.write below drops the lines
  }
  if (!toFile) return (line) => void process.stderr.write(line);
  // a line cut short by a full disk is ended before the next one, so every later line still parses
  let cut = false;
  return (line) => {
    const bytes = Buffer.from(cut ? `\n${line}` : line);
    let done = 0;
    try {
      while (done < bytes.byteLength) done += writeSync(2, bytes, done);
      cut = false;
    } catch (err) {
      if (done > 0) cut = true;
      throw err;
    }
  };
}

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
  return value;
}
