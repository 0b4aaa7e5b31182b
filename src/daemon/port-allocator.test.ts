// Tests for host port allocation: range, bind checks, keeping ports across restarts, cooldown, exhaustion.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../shared/clock.ts';
import { ValidationError } from '../shared/errors.ts';
import { firstPortFor, PortAllocator, PortsExhaustedError, portIsFree } from './port-allocator.ts';

const ports = (got: Record<string, { port: number }>) =>
  Object.fromEntries(Object.entries(got).map(([n, a]) => [n, a.port]));

test('skips ports something listens on (127.0.0.1 or 0.0.0.0), with a real bind check', async (t) => {
  // A port the kernel just gave us, then a range around it with that port taken.
  const taken = createServer();
  taken.listen(0, '127.0.0.1');
  await once(taken, 'listening');
  t.after(() => taken.close());
  const busy = (taken.address() as { port: number }).port;
  assert.equal(await portIsFree(busy), false);
  const alloc = new PortAllocator({ clock: new ManualClock(), range: { min: busy, max: busy + 3 } });
  const got = await alloc.allocate('web.0', ['http']);
  assert.notEqual(got.http?.port, busy);
  assert.ok((got.http?.port ?? 0) > busy && (got.http?.port ?? 0) <= busy + 3);
});

test('an owner gets its ports back after a release; others wait for the cooldown', async () => {
  const clock = new ManualClock();
  const alloc = new PortAllocator({
    clock,
    range: { min: 30000, max: 30003 },
    cooldownMs: 1000,
    isFree: async () => true,
  });
  const first = ports(await alloc.allocate('web.0', ['http', 'admin']));
  assert.deepEqual(first, { http: 30000, admin: 30001 });
  alloc.release('web.0');
  // Another pod may not take the just-released ports while they cool down.
  assert.deepEqual(ports(await alloc.allocate('db.0', ['sql'])), { sql: 30002 });
  // The previous owner takes them back (an in-place restart); a port name that went away is dropped.
  const again = await alloc.allocate('web.0', ['http', 'metrics'], first);
  assert.deepEqual(again.http, { port: 30000, kept: true });
  assert.equal(again.metrics?.kept, false);
  assert.equal(again.metrics?.port, 30003);
  assert.deepEqual(alloc.held(), { 'web.0': [30000, 30003], 'db.0': [30002] });
  // 30001 cools down, then anyone may have it.
  await assert.rejects(alloc.allocate('x.0', ['a']), PortsExhaustedError);
  clock.advance(1000);
  assert.deepEqual(ports(await alloc.allocate('x.0', ['a'])), { a: 30001 });
});

test('a preferred port that is no longer free moves, and says from where', async () => {
  const used = new Set([31000]);
  const alloc = new PortAllocator({
    clock: new ManualClock(),
    range: { min: 31000, max: 31010 },
    isFree: async (p) => !used.has(p),
  });
  const got = await alloc.allocate('web.0', ['http'], { http: 31000 });
  assert.deepEqual(got.http, { port: 31001, kept: false, movedFrom: 31000 });
});

test('nodes start their walk at a place of their own, inside the range, the same one every time', async () => {
  const range = { min: 30000, max: 32767 };
  const starts = ['12D3KooWA', '12D3KooWB', '12D3KooWC'].map((id) => firstPortFor(id, range));
  assert.equal(new Set(starts).size, 3, 'three peer ids, three starting ports');
  for (const p of starts) assert.ok(p >= range.min && p <= range.max);
  assert.equal(firstPortFor('12D3KooWA', range), starts[0]);
  const alloc = new PortAllocator({
    clock: new ManualClock(),
    range,
    firstPort: 32767,
    isFree: async () => true,
  });
  assert.deepEqual(ports(await alloc.allocate('web.0', ['http', 'admin'])), { http: 32767, admin: 30000 });
});

test('takenByOthers names the ports of an owner that something else now listens on', async () => {
  const used = new Set<number>();
  const alloc = new PortAllocator({
    clock: new ManualClock(),
    range: { min: 31000, max: 31010 },
    isFree: async (p) => !used.has(p),
  });
  await alloc.allocate('web.0', ['http', 'admin']);
  await alloc.allocate('db.0', ['sql']);
  assert.deepEqual(await alloc.takenByOthers('web.0'), []);
  used.add(31001);
  used.add(31002);
  assert.deepEqual(await alloc.takenByOthers('web.0'), [31001]);
  // Allocating again moves the taken port and keeps the other.
  const again = await alloc.allocate('web.0', ['http', 'admin'], { http: 31000, admin: 31001 });
  assert.deepEqual(again.http, { port: 31000, kept: true });
  assert.deepEqual(again.admin, { port: 31003, kept: false, movedFrom: 31001 });
});

test('exhaustion names the pod, the port and why nothing was free', async () => {
  const alloc = new PortAllocator({
    clock: new ManualClock(),
    range: { min: 32000, max: 32001 },
    isFree: async (p) => p !== 32001,
  });
  await alloc.allocate('a.0', ['http']);
  const err = await alloc.allocate('b.0', ['http']).catch((e: unknown) => e);
  assert.ok(err instanceof PortsExhaustedError);
  assert.equal(err.code, 'E_PORTS_EXHAUSTED');
  assert.match(
    err.message,
    /no free host port for port "http" of b\.0 in 32000-32001: 1 held by pods, 1 in use by other programs/,
  );
  assert.match(err.hint ?? '', /widen/);
  assert.deepEqual(alloc.held(), { 'a.0': [32000] }, 'a failed allocation holds nothing');
});

test('claim takes over recorded ports without a bind check, and refuses a port another slot holds', async () => {
  const alloc = new PortAllocator({ clock: new ManualClock(), isFree: async () => false });
  alloc.claim('web.0', { http: 30500 });
  assert.deepEqual(alloc.held(), { 'web.0': [30500] });
  assert.throws(
    () => alloc.claim('db.0', { sql: 30500 }),
    /port 30500 \(sql\) of db\.0 is already held by web\.0/,
  );
});

test('a bad range is refused with the field named', () => {
  for (const range of [
    { min: 0, max: 10 },
    { min: 100, max: 99 },
    { min: 1, max: 70000 },
  ]) {
    assert.throws(
      () => new PortAllocator({ clock: new ManualClock(), range }),
      (e: unknown) => e instanceof ValidationError && e.code === 'E_PORT_RANGE',
    );
  }
});

test('concurrent allocations never hand out one port twice, and stay in the range', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 3 }), {
        minLength: 1,
        maxLength: 6,
      }),
      fc.array(fc.integer({ min: 33000, max: 33019 }), { maxLength: 6 }),
      async (requests, busy) => {
        const alloc = new PortAllocator({
          clock: new ManualClock(),
          range: { min: 33000, max: 33019 },
          // Bind checks finish out of order.
          isFree: (p) => new Promise((r) => setTimeout(() => r(!busy.includes(p)), p % 3)),
        });
        const results = await Promise.all(
          requests.map((names, i) => alloc.allocate(`p${i}.0`, [...new Set(names)]).catch(() => undefined)),
        );
        const all = results.flatMap((r) => (r === undefined ? [] : Object.values(r).map((a) => a.port)));
        return (
          new Set(all).size === all.length && all.every((p) => p >= 33000 && p <= 33019 && !busy.includes(p))
        );
      },
    ),
    { numRuns: 50 },
  );
});
