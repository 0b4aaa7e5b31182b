// `--dashboard-port` of init/join/up/start: checked before anything is written, remembered in the data dir.

import { parseDashboardPort, writeDashboardPort } from '../api/dashboard-settings.ts';
import { type Parsed, stringFlag } from './args.ts';

export const dashboardPortFlags = { 'dashboard-port': { type: 'string' } } as const;

/** Checks the flag now; returns what writes it to the data dir once that exists (a no-op without the flag). */
export function dashboardPortFlag(p: Parsed): (dataDir: string) => void {
  const value = stringFlag(p, 'dashboard-port');
  if (value === undefined) return () => {};
  const port = parseDashboardPort(value);
  return (dataDir) => writeDashboardPort(dataDir, port);
}
