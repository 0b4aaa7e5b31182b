// A private LAN of network namespaces for partition tests: one namespace per node, each behind a veth on a bridge.
//
// Layout: a bridge namespace holds two bridges, `br0` (the LAN) and `br1` (the far side of a partition);
// every node namespace has `lo` and `eth0` with an address from 10.213.7.0/24, whose other end `pN` sits
// on `br0`. A partition moves some nodes' ports to `br1`, so the two groups hear only themselves; a heal
// moves them back. Addresses and routes exist only inside these namespaces: nothing reaches the host's
// network, and the host never routes to them. `destroy()` deletes every namespace (and so every veth and
// bridge in them); call it after every process running inside them is gone.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

const subnet = '10.213.7';

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Why network namespaces cannot be used here, or undefined when they can (probed by making one). */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'network namespaces need root (run the test as root)';
  const probe = `meshd-probe-${process.pid}-${randomBytes(3).toString('hex')}`;
  try {
    ip(['netns', 'add', probe]);
    ip(['-n', probe, 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1']);
    return undefined;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    return `cannot create a network namespace with a veth (\`ip netns add\`): ${(e.stderr ?? e.message).trim()}`;
  } finally {
    try {
      ip(['netns', 'del', probe]);
    } catch {
      // never created
    }
  }
}

export class NetnsLan {
  readonly prefix: string;
  readonly nodes: readonly string[];
  private readonly created: string[] = [];
  private readonly far = new Set<string>();

  private constructor(prefix: string, nodes: readonly string[]) {
    this.prefix = prefix;
    this.nodes = nodes;
  }

  /** Builds the LAN for `nodes` (at most 250). On failure, removes what it made and throws. */
  static create(nodes: readonly string[]): NetnsLan {
    const lan = new NetnsLan(`meshd-${process.pid}-${randomBytes(2).toString('hex')}`, nodes);
    try {
      lan.build();
    } catch (err) {
      lan.destroy();
      throw err;
    }
    return lan;
  }

  get bridgeNs(): string {
    return `${this.prefix}-lan`;
  }

  /** The namespace node `node` runs in. */
  ns(node: string): string {
    return `${this.prefix}-${this.index(node)}`;
  }

  addr(node: string): string {
    return `${subnet}.${this.index(node) + 1}`;
  }

  /** `--listen` flags for the node's fixed address on the LAN. */
  listen(node: string): string[] {
    return ['--listen', `/ip4/${this.addr(node)}/tcp/7946`];
  }

  /** Cuts the LAN in two: `side` hears only itself, the rest only themselves. */
  partition(side: readonly string[]): void {
    for (const node of side) {
      ip(['-n', this.bridgeNs, 'link', 'set', this.port(node), 'master', 'br1']);
      this.far.add(node);
    }
  }

  /** Puts every node back on one LAN. */
  heal(): void {
    for (const node of [...this.far]) {
      ip(['-n', this.bridgeNs, 'link', 'set', this.port(node), 'master', 'br0']);
      this.far.delete(node);
    }
  }

  /** Namespaces of this LAN that exist now (empty after `destroy()`). */
  existing(): string[] {
    return ip(['netns', 'list'])
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(`${this.prefix}-`));
  }

  /** Deletes every namespace this LAN made; their veths and bridges go with them. Safe to call twice. */
  destroy(): void {
    for (const ns of this.created.splice(0).reverse()) {
      try {
        ip(['netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
  }

  private index(node: string): number {
    const i = this.nodes.indexOf(node);
    if (i < 0) throw new Error(`node ${node} is not on this LAN (${this.nodes.join(', ')})`);
    return i;
  }

  private port(node: string): string {
    return `p${this.index(node)}`;
  }

  private addNs(name: string): void {
    ip(['netns', 'add', name]);
    this.created.push(name);
    ip(['-n', name, 'link', 'set', 'lo', 'up']);
  }

  private build(): void {
    if (this.nodes.length > 250) throw new Error('at most 250 nodes on one LAN');
    const br = this.bridgeNs;
    this.addNs(br);
    for (const bridge of ['br0', 'br1']) {
      ip(['-n', br, 'link', 'add', bridge, 'type', 'bridge']);
      ip(['-n', br, 'link', 'set', bridge, 'up']);
    }
    for (const node of this.nodes) {
      const ns = this.ns(node);
      this.addNs(ns);
      ip(['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', this.port(node), 'netns', br]);
      ip(['-n', ns, 'addr', 'add', `${this.addr(node)}/24`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      ip(['-n', br, 'link', 'set', this.port(node), 'master', 'br0']);
      ip(['-n', br, 'link', 'set', this.port(node), 'up']);
    }
  }
}
