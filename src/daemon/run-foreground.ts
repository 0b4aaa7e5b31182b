// Runs the daemon in this process until a signal or `meshd down`; prints what a person at the terminal needs.

import { systemClock } from '../shared/clock.ts';
import { isMeshdError, MeshdError } from '../shared/errors.ts';
import { createLogger, type LogLevel } from '../shared/logger.ts';
import { Daemon } from './daemon.ts';
import type { DataDir } from './data-dir.ts';

export interface ForegroundOptions {
  printToken: boolean;
  logLevel?: LogLevel;
  out?: (line: string) => void;
}

/** Resolves with the process exit code once the daemon has stopped. */
export async function runForeground(dir: DataDir, opts: ForegroundOptions): Promise<number> {
  const out = opts.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const logger = createLogger({ level: opts.logLevel ?? 'info' });
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({ dataDir: dir, logger, clock: systemClock });
  } catch (err) {
    logFatal(logger, err);
    throw err;
  }
  const status = daemon.status();
  out(`meshd ${status.version}: node "${status.name}" (${status.peerId}) in mesh "${status.mesh.name}"`);
  out(`api: ${dir.socketPath}`);
  if (status.joining) out('joining: waiting for the first peer from the token…');
  if (opts.printToken) {
    out('join token (run `meshd join TOKEN` on another machine):');
    out(daemon.token());
  }
  const onSignal = (sig: NodeJS.Signals) => {
    logger.info('signal received', { signal: sig });
    void daemon.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  await daemon.stopped;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  if (daemon.fatalError !== undefined) {
    logFatal(logger, daemon.fatalError);
    throw daemon.fatalError;
  }
  return 0;
}

/** The detaching CLI reads this line back from meshd.log to report why a background daemon died. */
function logFatal(logger: ReturnType<typeof createLogger>, err: unknown): void {
  const body = isMeshdError(err)
    ? err.toJSON()
    : new MeshdError('E_INTERNAL', String(err instanceof Error ? err.stack : err)).toJSON();
  logger.error('fatal', { fatal: body });
}
