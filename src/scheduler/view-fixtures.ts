// Test-only builders for scheduler inputs: nodes, pods, views, a deterministic fake signer and fast-check arbitraries.

import { createHash } from 'node:crypto';
import fc from 'fast-check';
import type { ClusterView, Lease, NodeInfo, PodInfo } from './cluster-view.ts';
import {
  type LeaseSigner,
  type LeaseVerifier,
  leaseSigningPayload,
  type UnsignedLease,
} from './lease-signature.ts';

export const MI = 1024 * 1024;
export const GI = 1024 * MI;
export const T0 = Date.UTC(2026, 0, 1);

export function peerOf(name: string): string {
  return `peer-${name}`;
}

export function node(name: string, over: Partial<NodeInfo> = {}): NodeInfo {
  return {
    name,
    peerId: peerOf(name),
    labels: {},
    capacity: { cpu: 4, memoryBytes: 4 * GI },
    cordoned: false,
    policy: {},
    ...over,
  };
}

export function pod(name: string, over: Partial<PodInfo> = {}): PodInfo {
  return {
    name,
    replicas: 1,
    availability: 'ha',
    placement: {},
    resources: { cpu: 0.5, memoryBytes: 64 * MI },
    security: {},
    ...over,
  };
}

/** A view where every node was heard from at `now` and presence has been watched for a year. */
export function view(over: Partial<ClusterView> & { now?: number } = {}): ClusterView {
  const { now = T0, ...rest } = over;
  const nodes = rest.nodes ?? [];
  return {
    nodes,
    pods: [],
    leases: [],
    presence: new Map(nodes.map((n) => [n.peerId, now])),
    presenceSince: now - 365 * 24 * 3600 * 1000,
    forgotten: new Set(),
    ...rest,
  };
}

function fakeSig(holder: string, payload: Uint8Array): Uint8Array {
  return createHash('sha256').update(`fake-key:${holder}\0`).update(payload).digest();
}

/** A deterministic stand-in for Ed25519: the "key" of a peer is its id. */
export function fakeSigner(peerId: string): LeaseSigner {
  return { peerId, sign: (payload) => fakeSig(peerId, payload) };
}

export const fakeVerifier: LeaseVerifier = {
  verify: (holder, payload, sig) => Buffer.from(fakeSig(holder, payload)).equals(Buffer.from(sig)),
};

/** Signs synchronously with the fake key of `signer` (default: the holder's own). */
export function fakeSign(lease: UnsignedLease, signer = lease.holder): Lease {
  return { ...lease, sig: Buffer.from(fakeSig(signer, leaseSigningPayload(lease))).toString('base64url') };
}

export function lease(
  slot: string,
  holderName: string,
  epoch: number,
  over: Partial<UnsignedLease> = {},
): Lease {
  return fakeSign({ slot, holder: peerOf(holderName), epoch, claimedAt: T0, ...over });
}

/** Fisher–Yates with a fast-check-provided seed list, so shuffles shrink and replay. */
export function shuffled<T>(items: readonly T[], seeds: readonly number[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = (seeds[i % Math.max(1, seeds.length)] ?? 0) % (i + 1);
    const a = out[i] as T;
    out[i] = out[j] as T;
    out[j] = a;
  }
  return out;
}

const NODE_NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];

export const nodeArb: fc.Arbitrary<NodeInfo[]> = fc
  .uniqueArray(fc.constantFrom(...NODE_NAMES), { minLength: 1, maxLength: NODE_NAMES.length })
  .chain((names) =>
    fc.tuple(
      ...names.map((name) =>
        fc
          .record({
            zone: fc.constantFrom('eu', 'us', undefined),
            cpu: fc.constantFrom(1, 2, 4),
            memory: fc.constantFrom(256 * MI, GI, 4 * GI),
            cordoned: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
            hostNetwork: fc.boolean(),
          })
          .map(
            (r): NodeInfo =>
              node(name, {
                labels: r.zone === undefined ? {} : { zone: r.zone },
                capacity: { cpu: r.cpu, memoryBytes: r.memory },
                cordoned: r.cordoned,
                policy: r.hostNetwork ? { hostNetwork: true } : {},
              }),
          ),
      ),
    ),
  );

export const podsArb: fc.Arbitrary<PodInfo[]> = fc
  .uniqueArray(fc.constantFrom('api', 'db', 'web', 'cache', 'job'), { minLength: 1, maxLength: 5 })
  .chain((names) =>
    fc.tuple(
      ...names.map((name) =>
        fc
          .record({
            replicas: fc.integer({ min: 1, max: 4 }),
            availability: fc.constantFrom<'ha' | 'best-effort'>('ha', 'best-effort'),
            host: fc.option(fc.constantFrom(...NODE_NAMES), { freq: 6 }),
            zone: fc.option(fc.constantFrom('eu', 'us'), { freq: 3 }),
            cpu: fc.constantFrom(0.25, 0.5, 1),
            memory: fc.constantFrom(64 * MI, 128 * MI, 512 * MI),
            hostNetwork: fc.boolean().map((b) => b && name === 'job'),
          })
          .map(
            (r): PodInfo =>
              pod(name, {
                replicas: r.replicas,
                availability: r.availability,
                placement: {
                  ...(r.host === null ? {} : { host: r.host }),
                  ...(r.zone === null ? {} : { labels: { zone: r.zone } }),
                },
                resources: { cpu: r.cpu, memoryBytes: r.memory },
                security: r.hostNetwork ? { hostNetwork: true } : {},
              }),
          ),
      ),
    ),
  );
