// Tests of step graph validation and ordering: errors a user reads, implied ordering, determinism.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ValidationError } from '../shared/errors.ts';
import { buildStepGraph, findCycle, orderLayers, RUNNING_TARGET, type StepDefinition } from './step-graph.ts';

const noop = async () => undefined;
const step = (name: string, rest: Partial<StepDefinition> = {}): StepDefinition => ({
  name,
  start: noop,
  ...rest,
});

function thrown(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ValidationError, `expected ValidationError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a ValidationError');
}

describe('step graph validation', { timeout: 20_000 }, () => {
  test('an unknown step is named, with a suggestion', () => {
    const err = thrown(() =>
      buildStepGraph([
        step('process.start', { source: 'built-in' }),
        step('health.check', { source: 'plugin /etc/meshd/health.mjs', requires: ['proces.start'] }),
      ]),
    );
    assert.equal(err.code, 'E_STEP_UNKNOWN');
    assert.match(err.message, /health\.check/);
    assert.match(err.message, /plugin \/etc\/meshd\/health\.mjs/);
    assert.match(err.message, /unknown step 'proces\.start' in requires/);
    assert.match(err.message, /did you mean 'process\.start'\?/);
    assert.match(err.hint ?? '', /Replace 'proces\.start' with 'process\.start'/);
    assert.equal(err.details?.path, 'health.check.requires[0]');
  });

  test('an unknown step with nothing close gets no suggestion', () => {
    const err = thrown(() => buildStepGraph([step('a', { after: ['zzzzzzzz'] })]));
    assert.equal(err.code, 'E_STEP_UNKNOWN');
    assert.doesNotMatch(err.message, /did you mean/);
  });

  test('a cycle is printed with every edge and its origin', () => {
    const err = thrown(() =>
      buildStepGraph([
        step('c', { before: ['a'] }),
        step('b', { requires: ['a'] }),
        step('a', { before: [] }),
        step('x'),
        step('cc', { after: ['b'], before: ['c'] }),
      ]),
    );
    assert.equal(err.code, 'E_STEP_CYCLE');
    // a → b (b requires a), b → cc (cc.after), cc → c (cc.before), c → a (c.before)
    assert.match(err.message, /a → b → cc → c → a/);
    assert.match(err.message, /b requires a \(implies after\)/);
    assert.match(err.message, /cc\.after lists b/);
    assert.match(err.message, /c\.before lists a/);
    assert.deepEqual(err.details?.cycle, ['a', 'b', 'cc', 'c', 'a']);
  });

  test('the same cycle prints the same way whatever the definition order', () => {
    const defs = [step('q', { after: ['p'] }), step('r', { after: ['q'] }), step('p', { after: ['r'] })];
    const a = thrown(() => buildStepGraph(defs)).message;
    const b = thrown(() => buildStepGraph([...defs].reverse())).message;
    assert.equal(a, b);
    assert.match(a, /p → q → r → p/);
  });

  test('duplicate names are refused, naming both sources', () => {
    const err = thrown(() =>
      buildStepGraph([
        step('audit', { source: 'plugin /a.mjs' }),
        step('audit', { source: 'node config lifecycle.hooks[0]' }),
      ]),
    );
    assert.equal(err.code, 'E_STEP_DUPLICATE');
    assert.match(
      err.message,
      /'audit' is defined twice \(plugin \/a\.mjs and node config lifecycle\.hooks\[0\]\)/,
    );
  });

  test('a standard target cannot be redefined', () => {
    const err = thrown(() => buildStepGraph([{ name: RUNNING_TARGET, source: 'plugin /x.mjs' }]));
    assert.equal(err.code, 'E_STEP_DUPLICATE');
    assert.match(err.hint ?? '', /Built-in/);
  });

  test('self references and malformed fields are refused with the field path', () => {
    assert.match(
      thrown(() => buildStepGraph([step('a', { after: ['a'] })])).message,
      /lists itself in after/,
    );
    const bad = thrown(() => buildStepGraph([{ name: 'a', start: noop, timeoutMs: -1 }]));
    assert.equal(bad.details?.path, "step 'a'.timeoutMs");
    const typo = thrown(() =>
      buildStepGraph([{ name: 'a', start: noop, requirez: ['b'] } as unknown as StepDefinition]),
    );
    assert.match(typo.message, /requirez is not a step field \(did you mean 'requires'\?\)/);
    assert.match(thrown(() => buildStepGraph([step('bad name')])).message, /name must be a step name/);
  });
});

describe('step graph semantics', { timeout: 20_000 }, () => {
  test('requires and wants imply after; requiredBy/wantedBy are the reverse forms', () => {
    const g = buildStepGraph([
      step('net.ip'),
      step('proc', { requires: ['net.ip'], wants: ['metrics'] }),
      step('metrics'),
      step('audit', { requiredBy: [RUNNING_TARGET] }),
      step('announce', { wantedBy: [RUNNING_TARGET] }),
    ]);
    assert.deepEqual(g.steps.get('proc')?.after, ['metrics', 'net.ip']);
    assert.deepEqual(g.steps.get(RUNNING_TARGET)?.requires, ['audit', 'sandbox.target']);
    assert.deepEqual(g.steps.get(RUNNING_TARGET)?.wants, ['announce']);
    assert.ok(g.steps.get(RUNNING_TARGET)?.after.includes('audit'));
    assert.ok(g.order.indexOf('audit') < g.order.indexOf(RUNNING_TARGET));
    const implied = g.edges.find((e) => e.from === 'proc' && e.to === 'net.ip' && e.kind === 'after');
    assert.equal(implied?.implied, true);
  });

  test('an explicit before wins over the ordering implied by requires', () => {
    // A log forwarder that must be up before the process it requires.
    const g = buildStepGraph([step('proc'), step('log.forward', { requires: ['proc'], before: ['proc'] })]);
    assert.deepEqual(g.steps.get('proc')?.after, ['log.forward']);
    assert.deepEqual(g.steps.get('log.forward')?.after, []);
    assert.deepEqual(g.steps.get('log.forward')?.requires, ['proc']);
    assert.deepEqual(g.steps.get('proc')?.requiredBy, ['log.forward']);
  });

  test('requires beats wants on the same pair', () => {
    const g = buildStepGraph([step('a'), step('b', { requires: ['a'], wants: ['a'] })]);
    assert.deepEqual(g.steps.get('b')?.requires, ['a']);
    assert.deepEqual(g.steps.get('b')?.wants, []);
  });

  test('standard targets are ordered network/storage → sandbox → running', () => {
    const g = buildStepGraph([]);
    assert.deepEqual(g.layers, [
      ['network.target', 'storage.target'],
      ['sandbox.target'],
      ['running.target'],
    ]);
  });
});

/** Random DAGs: nodes 0..n-1 under shuffled names, edges only from lower to higher index. */
const dagArb = fc.integer({ min: 1, max: 12 }).chain((n) =>
  fc.record({
    names: fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9]{0,4}$/), { minLength: n, maxLength: n }),
    edges: fc.array(
      fc.record({
        i: fc.nat(n - 1),
        j: fc.nat(n - 1),
        kind: fc.constantFrom('after', 'before', 'requires', 'wants', 'requiredBy', 'wantedBy'),
      }),
      { maxLength: n * 3 },
    ),
  }),
);

function dagDefinitions(names: readonly string[], edges: readonly { i: number; j: number; kind: string }[]) {
  const defs = names.map((name) => ({
    name,
    start: noop,
    after: [] as string[],
    before: [] as string[],
    requires: [] as string[],
    wants: [] as string[],
    requiredBy: [] as string[],
    wantedBy: [] as string[],
  }));
  const pairs: [string, string][] = [];
  for (const { i, j, kind } of edges) {
    if (i === j) continue;
    const [lo, hi] = i < j ? [i, j] : [j, i];
    const early = defs[lo];
    const late = defs[hi];
    if (early === undefined || late === undefined) continue;
    if (kind === 'after') late.after.push(early.name);
    if (kind === 'before') early.before.push(late.name);
    if (kind === 'requires') late.requires.push(early.name);
    if (kind === 'wants') late.wants.push(early.name);
    if (kind === 'requiredBy') early.requiredBy.push(late.name);
    if (kind === 'wantedBy') early.wantedBy.push(late.name);
    pairs.push([early.name, late.name]);
  }
  return { defs, pairs };
}

describe('step graph ordering (properties)', { timeout: 20_000 }, () => {
  test('the topological order respects every ordering edge, and is deterministic', () => {
    fc.assert(
      fc.property(dagArb, ({ names, edges }) => {
        const { defs, pairs } = dagDefinitions(names, edges);
        const g = buildStepGraph(defs);
        const pos = new Map(g.order.map((n, i) => [n, i]));
        for (const [early, late] of pairs)
          assert.ok((pos.get(early) ?? -1) < (pos.get(late) ?? -1), `${early} before ${late}`);
        for (const [name, s] of g.steps) {
          for (const p of s.after) assert.ok((pos.get(p) ?? -1) < (pos.get(name) ?? -1));
        }
        const layerOf = new Map(g.layers.flatMap((l, k) => l.map((n) => [n, k] as const)));
        for (const [early, late] of pairs) assert.ok((layerOf.get(early) ?? -1) < (layerOf.get(late) ?? -1));
        assert.deepEqual(buildStepGraph([...defs].reverse()).order, g.order);
      }),
      { numRuns: 200 },
    );
  });

  test('adding a back edge to a chain is always reported as a cycle through it', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 8 }), fc.nat(), (n, k) => {
        const names = Array.from({ length: n }, (_, i) => `s${i}`);
        const preds = new Map(names.map((name, i) => [name, i === 0 ? [`s${n - 1}`] : [`s${i - 1}`]]));
        const cycle = findCycle(names, preds);
        assert.ok(cycle !== undefined);
        assert.equal(cycle.length, n + 1);
        assert.equal(cycle[0], cycle[n]);
        assert.throws(() => orderLayers(names, preds));
        preds.set(`s${k % n}`, []);
        assert.equal(findCycle(names, preds), undefined);
      }),
    );
  });
});
