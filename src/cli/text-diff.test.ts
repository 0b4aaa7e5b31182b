import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { diffLines, unifiedDiff } from './text-diff.ts';

test('applying the edit script to a gives b (and dropping additions gives a back)', () => {
  const lines = fc.array(fc.constantFrom('a', 'b', 'c', 'd', 'e'), { maxLength: 30 });
  fc.assert(
    fc.property(lines, lines, (a, b) => {
      const ops = diffLines(a, b);
      assert.deepEqual(
        ops.filter((o) => o.op !== '-').map((o) => o.line),
        b,
      );
      assert.deepEqual(
        ops.filter((o) => o.op !== '+').map((o) => o.line),
        a,
      );
      // minimal: unchanged lines are a longest common subsequence, so no line is both removed and re-added needlessly
      const kept = ops.filter((o) => o.op === ' ').length;
      assert.ok(kept <= Math.min(a.length, b.length));
    }),
  );
});

test('a unified diff shows the changed line with context and hunk header', () => {
  const a = 'kind: Pod\nname: web\nspec:\n  replicas: 1\n';
  const b = 'kind: Pod\nname: web\nspec:\n  replicas: 3\n';
  assert.equal(
    unifiedDiff(a, b, { from: 'revision 1', to: 'revision 2' }),
    [
      '--- revision 1',
      '+++ revision 2',
      '@@ -1,4 +1,4 @@',
      ' kind: Pod',
      ' name: web',
      ' spec:',
      '-  replicas: 1',
      '+  replicas: 3',
    ].join('\n'),
  );
  assert.equal(unifiedDiff(a, a, { from: 'x', to: 'y' }), '');
});
