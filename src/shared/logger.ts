// Structured JSON-line logging: one object per line, with `node`, `pod`, `step` as context fields.

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
  /** Where lines go; defaults to stderr. */
  write?: (line: string) => void;
  now?: () => number;
  fields?: LogFields;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const min = levelRank[opts.level ?? 'info'];
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const now = opts.now ?? Date.now;
  const make = (base: LogFields): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
      if (levelRank[level] < min) return;
      const line = { t: new Date(now()).toISOString(), level, msg, ...base, ...fields };
      write(`${JSON.stringify(line, jsonSafe)}\n`);
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

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
  return value;
}
