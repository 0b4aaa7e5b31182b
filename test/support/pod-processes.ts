import { parseUnitName } from '../../src/daemon/pod-slot-files.ts';
import { isSameProcess } from '../../src/runtime/process/proc-stat.ts';
import { readState } from '../../src/runtime/process/supervisor-files.ts';
import { stateFilesUnder } from './pod-world.ts';

/** One container process of one pod slot, alive now. */
export interface LiveCopy {
  /** `web.0`. */
  readonly unit: string;
  readonly pod: string;
  readonly slot: number;
  readonly container: string;
  /** The epoch the supervisor was started with (the pod's MESHD_LEASE_EPOCH). */
  readonly leaseEpoch: number;
  /** Host pid of the container's main process. */
  readonly pid: number;
}

/**
 * Every container under `dataDir` whose supervisor and main process are both alive (pid and start time
 * checked, so a recycled pid never counts). This is what the machine runs, whatever any document says.
 */
export async function liveCopies(dataDir: string): Promise<LiveCopy[]> {
  const states = stateFilesUnder(dataDir);
  const out: LiveCopy[] = [];
  for (const file of states) {
    const s = await readState(file);
    if (s === undefined || s.containerPid <= 0) continue;
    if (!(await isSameProcess(s.supervisorPid, s.supervisorStartTime))) continue;
    if (!(await isSameProcess(s.containerPid, s.containerStartTime))) continue;
    const ref = parseUnitName(s.podKey);
    if (ref === undefined) continue;
    out.push({
      unit: s.podKey,
      pod: ref.pod,
      slot: ref.slot,
      container: s.container,
      leaseEpoch: s.leaseEpoch,
      pid: s.containerPid,
    });
  }
  return out.sort((a, b) => (a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0));
}
