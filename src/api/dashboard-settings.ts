// Where a node's dashboard listens: `dashboard.json` in the data dir, set by `--dashboard-port` (default 7947).

import * as fs from 'node:fs';
import { join } from 'node:path';
import { DataDirError, UsageError, ValidationError } from '../shared/errors.ts';

export const defaultDashboardPort = 7947;

/** A TCP port on 127.0.0.1 (0: any free port, chosen at each start) or `off` (no dashboard). */
export type DashboardPort = number | 'off';

export function dashboardSettingsFile(dataDir: string): string {
  return join(dataDir, 'dashboard.json');
}

/** `--dashboard-port` as typed: 0–65535 or `off`. */
export function parseDashboardPort(value: string): DashboardPort {
  if (value === 'off') return 'off';
  if (/^\d{1,5}$/.test(value) && Number(value) <= 65535) return Number(value);
  throw new UsageError(
    `--dashboard-port must be a port number (0 for any free port) or "off", not ${JSON.stringify(value)}`,
    'Example: --dashboard-port 7947',
  );
}

/** The remembered port, or the default when nothing was set. */
export function readDashboardPort(dataDir: string): DashboardPort {
  const file = dashboardSettingsFile(dataDir);
  let raw: string;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return defaultDashboardPort;
    throw new DataDirError('E_DATA_DIR', `cannot read ${file}: ${(err as Error).message}`, {
      hint: `Check the permissions of ${file}.`,
    });
  }
  let port: unknown;
  try {
    port = (JSON.parse(raw) as { port?: unknown }).port;
  } catch {
    port = undefined;
  }
  if (port === 'off' || (typeof port === 'number' && Number.isInteger(port) && port >= 0 && port <= 65535)) {
    return port;
  }
  throw new ValidationError('E_DASHBOARD_SETTINGS', `${file}: field "port" must be 0–65535 or "off"`, {
    hint: 'Start the daemon with --dashboard-port PORT to rewrite it (e.g. `meshd up --dashboard-port 7947`).',
    details: { file, path: 'port' },
  });
}

/** Remembers `port` for every later start of this node (written atomically). */
export function writeDashboardPort(dataDir: string, port: DashboardPort): void {
  const file = dashboardSettingsFile(dataDir);
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, `${JSON.stringify({ port })}\n`, { mode: 0o644 });
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new DataDirError('E_DATA_DIR', `cannot write ${file}: ${(err as Error).message}`, {
      hint: `Check the permissions of ${dataDir}.`,
    });
  }
}
