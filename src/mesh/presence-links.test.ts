// Relay choice: a neighbour gets exactly the beacons of peers it cannot hear, never its own or an echo back.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { relaysFor } from './presence-links.ts';

const tagOf = (peerId: string) => `t:${peerId}`;

test('a neighbour that hears everyone directly gets no relays (the full mesh costs nothing extra)', () => {
  const pending = [
    { origin: 'a', via: 'a' },
    { origin: 'b', via: 'b' },
  ];
  assert.deepEqual(relaysFor(pending, { peerId: 'c', hearsDirectly: new Set(['t:a', 't:b']) }, tagOf), []);
});

test('a neighbour that has not said what it hears gets everything but its own and what it sent', () => {
  const pending = [
    { origin: 'a', via: 'a' },
    { origin: 'b', via: 'c' },
    { origin: 'c', via: 'c' },
    { origin: 'd', via: 'a' },
  ];
  assert.deepEqual(
    relaysFor(pending, { peerId: 'c', hearsDirectly: undefined }, tagOf).map((r) => r.origin),
    ['a', 'd'],
  );
});

test('relays are exactly the pending beacons the neighbour lacks', () => {
  const peer = fc.constantFrom('a', 'b', 'c', 'd', 'e');
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.record({ origin: peer, via: peer }), { selector: (r) => r.origin }),
      peer,
      fc.option(fc.uniqueArray(peer)),
      (pending, neighbour, hears) => {
        const hearsDirectly = hears === null ? undefined : new Set(hears.map(tagOf));
        const got = relaysFor(pending, { peerId: neighbour, hearsDirectly }, tagOf);
        for (const r of pending) {
          const wanted =
            r.origin !== neighbour && r.via !== neighbour && !(hearsDirectly?.has(tagOf(r.origin)) ?? false);
          assert.equal(got.includes(r), wanted, JSON.stringify({ r, neighbour, hears }));
        }
      },
    ),
  );
});
