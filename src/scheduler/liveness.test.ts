// When the next liveness crossing happens: nothing a decision depends on changes before it; something at it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { deadAfterMs, haGraceOf, missingForMs, nextLivenessChange } from './liveness.ts';
import { node, pod, T0, view } from './view-fixtures.ts';

test('property: no node crosses a grace or deadAfter before nextLivenessChange, and one does at it', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: -20_000, max: 0 }), { minLength: 1, maxLength: 5 }),
      fc.array(fc.integer({ min: 0, max: 15_000 }), { maxLength: 4 }),
      fc.integer({ min: 0, max: 30_000 }),
      (seenAgo, graces, watching) => {
        const now = T0 + 100_000;
        const nodes = seenAgo.map((_, i) => node(`n${i}`));
        const v = view({
          nodes,
          pods: graces.map((g, i) => pod(`p${i}`, { haGraceMs: g })),
          presence: new Map(nodes.map((n, i) => [n.peerId, now + (seenAgo[i] ?? 0)])),
          presenceSince: now - watching,
          deadAfterMs: 60_000,
        });
        const limits = [deadAfterMs(v), ...v.pods.map(haGraceOf)];
        const crossed = (t: number) =>
          nodes.flatMap((n) => limits.map((l) => missingForMs(v, n.peerId, t) > l)).join();
        const next = nextLivenessChange(v, now);
        if (next === undefined) {
          assert.equal(crossed(now), crossed(now + 10 * 60_000), 'nothing ahead, nothing changes');
          return;
        }
        assert.ok(next > now);
        assert.equal(crossed(next - 1), crossed(now), 'nothing crosses before it');
        assert.notEqual(crossed(next), crossed(now), 'something crosses at it');
      },
    ),
  );
});
