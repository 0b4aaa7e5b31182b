// Redial backoff on a manual clock: doubling delays up to the ceiling, reset by a connection, no dial storms.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock } from '../shared/clock.ts';
import { silentLogger } from '../shared/logger.ts';
import { PeerRedialer, type RedialTarget } from './peer-redial.ts';

const target: RedialTarget = { peerId: 'peer-a', addrs: ['/ip4/127.0.0.1/tcp/1/p2p/peer-a'] };

/** A redialer whose dials settle as the test says; records the clock time of every dial. */
function harness(opts: { targets?: RedialTarget[]; connected?: Set<string>; maxParallel?: number } = {}) {
  const clock = new ManualClock(0);
  const dials: Array<{ at: number; peerId: string; settle: (ok: boolean) => void }> = [];
  const connected = opts.connected ?? new Set<string>();
  const redialer = new PeerRedialer({
    clock,
    logger: silentLogger,
    minMs: 1000,
    maxMs: 8000,
    targets: () => opts.targets ?? [target],
    isConnected: (id) => connected.has(id),
    dial: (t) =>
      new Promise<void>((resolve, reject) => {
        dials.push({
          at: clock.now(),
          peerId: t.peerId,
          settle: (ok) => (ok ? resolve() : reject(new Error('refused'))),
        });
      }),
    random: () => 0.5, // no jitter
    ...(opts.maxParallel === undefined ? {} : { maxParallel: opts.maxParallel }),
  });
  return { clock, dials, connected, redialer };
}

/** Lets settled dial promises run their handlers. */
const flush = () => new Promise<void>((r) => setImmediate(r));

async function failAll(dials: Array<{ settle: (ok: boolean) => void }>) {
  for (const d of dials.splice(0)) d.settle(false);
  await flush();
}

test('dials at once, then backs off 1 s, 2 s, 4 s, 8 s, 8 s after failures', async () => {
  const { clock, dials, redialer } = harness();
  redialer.start();
  const times: number[] = [];
  for (let i = 0; i < 6; i++) {
    for (let step = 0; step < 200 && dials.length === 0; step++) clock.advance(100);
    assert.equal(dials.length, 1, 'exactly one dial in flight');
    times.push(dials[0]?.at ?? -1);
    await failAll(dials);
  }
  const gaps = times.slice(1).map((t, i) => t - (times[i] ?? 0));
  assert.equal(times[0], 0);
  // each gap is the backoff rounded up to the next 500 ms tick
  assert.deepEqual(gaps, [1000, 2000, 4000, 8000, 8000]);
  redialer.stop();
});

test('a connection resets the backoff; a connected peer is not dialled', async () => {
  const { clock, dials, connected, redialer } = harness();
  redialer.start();
  await failAll(dials);
  clock.advance(1000);
  await failAll(dials);
  assert.equal(redialer.state('peer-a')?.delayMs, 4000);
  connected.add('peer-a');
  redialer.connected('peer-a');
  assert.equal(redialer.state('peer-a'), undefined);
  clock.advance(20_000);
  assert.equal(dials.length, 0, 'no dial while connected');
  connected.delete('peer-a');
  clock.advance(500);
  assert.equal(dials.length, 1, 'dialled on the next tick after the connection was lost');
  dials[0]?.settle(false);
  await flush();
  assert.equal(redialer.state('peer-a')?.nextAt, clock.now() + 1000, 'backoff starts from the minimum again');
  redialer.stop();
});

test('a successful dial clears the state; stop ends all dialling', async () => {
  const { clock, dials, redialer } = harness();
  redialer.start();
  dials.splice(0)[0]?.settle(true);
  await flush();
  assert.equal(redialer.state('peer-a'), undefined);
  redialer.stop();
  clock.advance(60_000);
  assert.equal(dials.length, 0);
});

test('never more than maxParallel dials in flight', () => {
  const targets = Array.from({ length: 20 }, (_, i) => ({
    peerId: `p${i}`,
    addrs: [`/ip4/127.0.0.1/tcp/${i + 1}`],
  }));
  const { clock, dials, redialer } = harness({ targets, maxParallel: 3 });
  redialer.start();
  clock.advance(5000);
  assert.equal(dials.length, 3);
  redialer.stop();
});
