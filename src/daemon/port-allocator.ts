// Host ports for pods: one node-wide range, reservations per pod slot, free-checked by binding.
//
// Invariants:
// - A port is held by at most one owner (a pod slot such as `web.0`) at a time.
// - A released port cools down before another owner may take it, so clients of a pod that just
//   stopped do not reach a different pod; its previous owner may take it back at once (in-place restart).
// - A candidate is reserved before its bind check begins: concurrent allocations never pick the same port.
// - A bind check cannot reserve a port against other programs: between the check and the pod's own
//   bind, another node on this host may pick it too. Nodes start their walk at different places
//   (`firstPort`), and the agent moves a pod whose port was taken (`takenByOthers`).

import { createHash } from 'node:crypto';
import { createServer } from 'node:net';
import type { Clock } from '../shared/clock.ts';
import { MeshdError, ValidationError } from '../shared/errors.ts';

export interface PortRange {
  readonly min: number;
  readonly max: number;
}

export const DEFAULT_PORT_RANGE: PortRange = Object.freeze({ min: 30000, max: 32767 });
export const DEFAULT_PORT_COOLDOWN_MS = 60_000;

/** No port of the range could be had. */
export class PortsExhaustedError extends MeshdError {}

export interface PortAllocatorOptions {
  readonly clock: Clock;
  readonly range?: PortRange;
  /** How long a released port is kept from other owners. */
  readonly cooldownMs?: number;
  /** Whether nothing listens on `port`; binds 127.0.0.1 and 0.0.0.0 by default. */
  readonly isFree?: (port: number) => Promise<boolean>;
  /** Where the walk through the range starts (default: its first port). */
  readonly firstPort?: number;
}

/** Where a port came from in an allocation, for logs and `why`. */
export interface AllocatedPort {
  readonly port: number;
  /** The owner asked for this port (it held it before) and got it back. */
  readonly kept: boolean;
  /** The owner asked for another port, which was no longer free. */
  readonly movedFrom?: number;
}

export class PortAllocator {
  readonly range: PortRange;
  private readonly clock: Clock;
  private readonly cooldownMs: number;
  private readonly isFree: (port: number) => Promise<boolean>;
  /** port → owner. */
  private readonly holders = new Map<number, string>();
  /** port → { previous owner, free for others at }. */
  private readonly cooling = new Map<number, { owner: string; until: number }>();
  /** Where the next search starts: allocations walk the range instead of reusing the lowest port. */
  private cursor: number;

  constructor(opts: PortAllocatorOptions) {
    const range = opts.range ?? DEFAULT_PORT_RANGE;
    if (
      !Number.isInteger(range.min) ||
      !Number.isInteger(range.max) ||
      range.min < 1 ||
      range.max > 65535 ||
      range.min > range.max
    ) {
      throw new ValidationError(
        'E_PORT_RANGE',
        `pod port range ${range.min}-${range.max} is not a range of TCP ports`,
        {
          hint: 'Give two whole numbers from 1 to 65535, the first not above the second (default 30000-32767).',
          details: { path: 'ports.range', min: range.min, max: range.max },
        },
      );
    }
    this.range = { min: range.min, max: range.max };
    this.clock = opts.clock;
    this.cooldownMs = opts.cooldownMs ?? DEFAULT_PORT_COOLDOWN_MS;
    this.isFree = opts.isFree ?? portIsFree;
    const first = opts.firstPort ?? range.min;
    this.cursor = first >= range.min && first <= range.max ? first : range.min;
  }

  /**
   * Ports `owner` holds that something else now listens on. Meaningful only while none of the owner's
   * processes runs: then every port it holds should be free.
   */
  async takenByOthers(owner: string): Promise<number[]> {
    const taken: number[] = [];
    for (const [port, holder] of this.holders) {
      if (holder === owner && !(await this.isFree(port))) taken.push(port);
    }
    return taken.sort((a, b) => a - b);
  }

  /**
   * One port per name for `owner`, trying `preferred[name]` first (what it held before). Ports the
   * owner holds under names no longer asked for are released. Throws PortsExhaustedError.
   */
  async allocate(
    owner: string,
    names: readonly string[],
    preferred: Readonly<Record<string, number>> = {},
  ): Promise<Record<string, AllocatedPort>> {
    const out: Record<string, AllocatedPort> = {};
    const mine = new Set<number>();
    try {
      for (const name of names) {
        const want = preferred[name];
        if (want !== undefined && this.mayTake(owner, want) && !mine.has(want)) {
          this.holders.set(want, owner);
          mine.add(want);
          if (await this.isFree(want)) {
            out[name] = { port: want, kept: true };
            continue;
          }
          mine.delete(want);
          this.holders.delete(want);
        }
        const port = await this.findFree(owner, mine, name);
        mine.add(port);
        out[name] = want === undefined ? { port, kept: false } : { port, kept: false, movedFrom: want };
      }
    } catch (err) {
      for (const p of mine) this.holders.delete(p);
      throw err;
    }
    // Whatever the owner held before and did not get again is released.
    for (const [port, holder] of this.holders) {
      if (holder === owner && !mine.has(port)) this.releasePort(port, owner);
    }
    for (const p of mine) this.cooling.delete(p);
    return out;
  }

  /**
   * Records ports an owner already uses (a pod re-adopted after a daemon restart) without checking
   * they are free: its own process is listening on them. Throws if another owner holds one.
   */
  claim(owner: string, ports: Readonly<Record<string, number>>): void {
    for (const [name, port] of Object.entries(ports)) {
      const holder = this.holders.get(port);
      if (holder !== undefined && holder !== owner) {
        throw new MeshdError(
          'E_PORT_HELD',
          `port ${port} (${name}) of ${owner} is already held by ${holder} on this node`,
          {
            hint: 'Two pod slots recorded the same host port; stop one of them (`meshd delete pod NAME`).',
            details: { owner, holder, port, name },
          },
        );
      }
    }
    for (const port of Object.values(ports)) {
      this.holders.set(port, owner);
      this.cooling.delete(port);
    }
  }

  /** Releases every port of `owner`; they cool down before anyone else may take them. */
  release(owner: string): void {
    for (const [port, holder] of [...this.holders]) if (holder === owner) this.releasePort(port, owner);
  }

  /** Ports held now, by owner. */
  held(): Record<string, number[]> {
    const out: Record<string, number[]> = {};
    for (const [port, owner] of this.holders) {
      const list = out[owner] ?? [];
      list.push(port);
      out[owner] = list;
    }
    for (const list of Object.values(out)) list.sort((a, b) => a - b);
    return out;
  }

  private releasePort(port: number, owner: string): void {
    this.holders.delete(port);
    this.cooling.set(port, { owner, until: this.clock.now() + this.cooldownMs });
  }

  private mayTake(owner: string, port: number): boolean {
    if (port < this.range.min || port > this.range.max) return false;
    const holder = this.holders.get(port);
    if (holder !== undefined) return holder === owner;
    const cool = this.cooling.get(port);
    return cool === undefined || cool.owner === owner || cool.until <= this.clock.now();
  }

  private async findFree(owner: string, mine: ReadonlySet<number>, name: string): Promise<number> {
    const size = this.range.max - this.range.min + 1;
    let busy = 0;
    for (let i = 0; i < size; i++) {
      const port = this.range.min + ((this.cursor - this.range.min + i) % size);
      if (mine.has(port) || !this.mayTake(owner, port)) continue;
      this.holders.set(port, owner); // reserved while the bind check runs
      if (await this.isFree(port)) {
        this.cursor = port + 1 > this.range.max ? this.range.min : port + 1;
        return port;
      }
      this.holders.delete(port);
      busy++;
    }
    const held = this.holders.size;
    throw new PortsExhaustedError(
      'E_PORTS_EXHAUSTED',
      `no free host port for port "${name}" of ${owner} in ${this.range.min}-${this.range.max}: ${held} held by pods, ${busy} in use by other programs, ${this.cooling.size} cooling down after a pod stopped`,
      {
        hint: "Stop pods you no longer need, or widen the node's pod port range.",
        details: { owner, name, range: this.range, held, busy },
      },
    );
  }
}

/**
 * A node's own place to start walking `range`, from a stable identity (its peer id): nodes sharing a
 * host start apart, so two of them rarely check the same port at the same moment.
 */
export function firstPortFor(identity: string, range: PortRange = DEFAULT_PORT_RANGE): number {
  const size = range.max - range.min + 1;
  const n = createHash('sha256').update(identity).digest().readUInt32BE(0);
  return range.min + (n % size);
}

/** Nothing listens on `port`: it can be bound on 127.0.0.1 and on 0.0.0.0 (one after the other). */
export async function portIsFree(port: number): Promise<boolean> {
  for (const host of ['127.0.0.1', '0.0.0.0']) {
    const ok = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
    });
    if (!ok) return false;
  }
  return true;
}
