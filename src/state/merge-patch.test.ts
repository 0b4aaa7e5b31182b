// Tests for RFC 7386 merge patches: apply follows the RFC examples, diff generates exact patches.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { foldStampedPatches, objectOfStates } from './materialize.ts';
import {
  applyMergePatch,
  deepEqual,
  diffMergePatch,
  formatPath,
  type JsonValue,
  jsonProblem,
  writtenPaths,
} from './merge-patch.ts';

/** JSON values without null members inside objects (what a merge patch can produce). */
const patchableJson: fc.Arbitrary<JsonValue> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.boolean(),
    fc.integer({ min: -5, max: 5 }),
    fc.constantFrom('a', 'b', ''),
    fc.array(fc.oneof(fc.constant(null), fc.integer({ min: 0, max: 3 })), { maxLength: 3 }),
    tie('object'),
  ),
  object: fc.dictionary(fc.constantFrom('a', 'b', 'c', 'd'), tie('value'), { maxKeys: 4 }),
})).value as fc.Arbitrary<JsonValue>;

/** Any merge patch, nulls included. */
const patchArb: fc.Arbitrary<JsonValue> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.integer({ min: 0, max: 9 }),
    fc.constantFrom('x', 'y'),
    fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 2 }),
    tie('object'),
  ),
  object: fc.dictionary(fc.constantFrom('a', 'b', 'c'), tie('value'), { maxKeys: 3 }),
})).value as fc.Arbitrary<JsonValue>;

describe('applyMergePatch', () => {
  it('passes the RFC 7386 appendix A examples', () => {
    const cases: [JsonValue, JsonValue, JsonValue][] = [
      [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
      [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
      [{ a: 'b' }, { a: null }, {}],
      [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
      [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
      [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
      [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
      [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
      [
        ['a', 'b'],
        ['c', 'd'],
        ['c', 'd'],
      ],
      [{ a: 'b' }, ['c'], ['c']],
      [{ a: 'foo' }, null, null],
      [{ a: 'foo' }, 'bar', 'bar'],
      [{ e: null }, { a: 1 }, { e: null, a: 1 }],
      [[1, 2], { a: 'b', c: null }, { a: 'b' }],
      [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
    ];
    for (const [target, patch, result] of cases) assert.deepEqual(applyMergePatch(target, patch), result);
  });

  it('does not modify its inputs', () => {
    const target = { a: { b: 1 } };
    const patch = { a: { c: [1] } };
    const out = applyMergePatch(target, patch) as { a: { c: number[] } };
    out.a.c.push(2);
    assert.deepEqual(target, { a: { b: 1 } });
    assert.deepEqual(patch, { a: { c: [1] } });
  });
});

describe('diffMergePatch', () => {
  it('yields a patch that turns `from` into exactly `to` (property)', () => {
    fc.assert(
      fc.property(fc.option(patchableJson, { nil: undefined }), patchableJson, (from, to) => {
        const patch = diffMergePatch(from, to);
        if (patch === undefined) assert.ok(deepEqual(from, to));
        else assert.ok(deepEqual(applyMergePatch(from, patch), to), JSON.stringify({ from, to, patch }));
      }),
      { numRuns: 300 },
    );
  });

  it('deletes with null and refuses targets holding null members', () => {
    assert.deepEqual(diffMergePatch({ a: 1, b: 2 }, { a: 1 }), { b: null });
    assert.equal(diffMergePatch({ a: 1 }, { a: 1 }), undefined);
    assert.equal(diffMergePatch({ a: 1 }, null), null);
    assert.throws(() => diffMergePatch({}, { a: { b: null } }), /a\.b is null/);
  });
});

describe('stamped fold', () => {
  const rfcFold = (patches: readonly JsonValue[]) => {
    let plain: JsonValue | undefined;
    for (const p of patches) plain = applyMergePatch(plain, p);
    return plain !== null && typeof plain === 'object' && !Array.isArray(plain) ? plain : null;
  };
  const stamped = (patches: readonly JsonValue[]) => patches.map((p, i) => [i + 1, p] as const);

  it('equals folding applyMergePatch in order (property)', () => {
    fc.assert(
      fc.property(fc.array(patchArb, { maxLength: 8 }), (patches) => {
        assert.deepEqual(
          objectOfStates(foldStampedPatches(stamped(patches))),
          rfcFold(patches),
          JSON.stringify(patches),
        );
      }),
      { numRuns: 400 },
    );
  });

  it('gives the in-order result whatever order patches arrive in (property)', () => {
    const arb = fc
      .array(patchArb, { minLength: 1, maxLength: 7 })
      .chain((patches) =>
        fc.tuple(fc.constant(patches), fc.shuffledSubarray(stamped(patches), { minLength: patches.length })),
      );
    fc.assert(
      fc.property(arb, ([patches, order]) => {
        assert.deepEqual(objectOfStates(foldStampedPatches(order)), rfcFold(patches), JSON.stringify(order));
      }),
      { numRuns: 400 },
    );
  });

  it('merges two folded states as if every patch had been folded in order (property)', () => {
    const arb = fc.array(fc.tuple(patchArb, fc.constantFrom('a', 'b', 'both')), {
      minLength: 1,
      maxLength: 8,
    });
    fc.assert(
      fc.property(arb, (tagged) => {
        const all = tagged.map(([p]) => p);
        const st = stamped(all);
        const a = st.filter((_, i) => tagged[i]?.[1] !== 'b');
        const b = st.filter((_, i) => tagged[i]?.[1] !== 'a');
        const merged = objectOfStates(foldStampedPatches(a), foldStampedPatches(b));
        assert.deepEqual(merged, rfcFold(all), JSON.stringify(tagged));
      }),
      { numRuns: 400 },
    );
  });
});

describe('helpers', () => {
  it('lists the paths a patch writes', () => {
    assert.deepEqual(writtenPaths({ spec: { replicas: 2, env: { A: null } }, status: {} }), [
      ['spec', 'replicas'],
      ['spec', 'env', 'A'],
      ['status'],
    ]);
    assert.deepEqual(writtenPaths(null), [[]]);
  });

  it('formats field paths for people', () => {
    assert.equal(
      formatPath(['spec', 'containers', 0, 'ports', 0, 'name']),
      'spec.containers[0].ports[0].name',
    );
    assert.equal(formatPath(['labels', 'example.com/zone']), 'labels["example.com/zone"]');
  });

  it('refuses values that are not plain JSON', () => {
    assert.equal(jsonProblem({ a: [1, { b: 'x' }] }), undefined);
    assert.match(jsonProblem({ a: { b: undefined } }) ?? '', /a\.b is not JSON/);
    assert.match(jsonProblem({ a: Number.NaN }) ?? '', /finite/);
    assert.match(jsonProblem(JSON.parse('{"__proto__": 1}')) ?? '', /__proto__/);
    assert.match(jsonProblem({ a: new Uint8Array(1) }) ?? '', /not JSON/);
  });
});
