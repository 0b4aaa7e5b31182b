// Tests for field ownership: owners, refusals naming the owner, conflicting claims, read→write cycles.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OwnershipError } from '../shared/errors.ts';
import { FieldOwnership, ownedFieldsPatch, projectFields } from './field-ownership.ts';

describe('FieldOwnership', () => {
  it('knows the owner of every built-in field', () => {
    const o = FieldOwnership.withBuiltins();
    assert.equal(o.ownerOf('spec.containers.app.env.A'), 'user');
    assert.equal(o.ownerOf('name'), 'user');
    assert.equal(o.ownerOf('status.placement.node'), 'scheduler');
    assert.equal(o.ownerOf('status.leaseEpoch'), 'scheduler');
    assert.equal(o.ownerOf('status.phase'), 'runtime');
    assert.equal(o.ownerOf('status.slots.0.phase'), 'runtime');
    assert.equal(o.ownerOf(['status', 'ip']), 'ipam');
    assert.equal(o.ownerOf('status.rollout.step'), 'rollout');
    assert.equal(o.ownerOf('status'), undefined);
    assert.equal(o.ownerOf('metadata'), undefined);
  });

  it('refuses a write by a non-owner, naming the owner', () => {
    const o = FieldOwnership.withBuiltins();
    assert.doesNotThrow(() => o.assertMayWrite('runtime', { status: { phase: 'running', restarts: 1 } }));
    assert.throws(
      () => o.assertMayWrite('runtime', { spec: { replicas: 3 } }),
      (err: unknown) =>
        err instanceof OwnershipError &&
        err.code === 'E_NOT_OWNER' &&
        /runtime.*spec\.replicas.*owned by "user"/.test(err.message) &&
        err.details?.owner === 'user' &&
        /meshd apply/.test(err.hint ?? ''),
    );
    assert.match(o.writeProblem('user', { status: { phase: 'x' } }) ?? '', /owned by "runtime"/);
    assert.match(
      o.writeProblem('runtime', { status: null }) ?? '',
      /status as a whole.*"scheduler", "runtime"/,
    );
    assert.match(o.writeProblem('user', { extra: 1 }) ?? '', /no controller owns extra/);
    assert.match(o.writeProblem('ghost', { spec: {} }) ?? '', /unknown controller "ghost"/);
    assert.equal(o.writeProblem('user', null), undefined);
    assert.match(o.writeProblem('scheduler', null) ?? '', /may not delete/);
  });

  it('refuses a controller claiming an owned field, a parent or a child of one', () => {
    const o = FieldOwnership.withBuiltins();
    const claim = (owns: string[]) => () => o.register({ name: 'backup', owns, reads: [] });
    assert.throws(
      claim(['status.phase']),
      (e: unknown) =>
        e instanceof OwnershipError &&
        /"backup" claims status\.phase, which controller "runtime" owns/.test(e.message),
    );
    assert.throws(
      claim(['status']),
      (e: unknown) =>
        e instanceof OwnershipError &&
        /status \(which contains status\.placement\).*"scheduler"/.test(e.message),
    );
    assert.throws(
      claim(['status.placement.zone']),
      (e: unknown) => e instanceof OwnershipError && /inside status\.placement.*"scheduler"/.test(e.message),
    );
    assert.throws(
      claim(['status.leaseHolder']),
      (e: unknown) => e instanceof OwnershipError && /"scheduler"/.test(e.message),
    );
    assert.throws(claim(['status..x']), /not a field path/);
    o.register({ name: 'backup', owns: ['status.backup'], reads: ['spec'] });
    assert.equal(o.ownerOf('status.backup.last'), 'backup');
    assert.throws(() => o.register({ name: 'backup', owns: ['status.other'] }), /already registered/);
  });

  it('reports no cycle among the built-ins and reports a read→write cycle with its path', () => {
    const o = FieldOwnership.withBuiltins();
    assert.deepEqual(o.check(), []);
    o.register({ name: 'alpha', owns: ['status.alpha'], reads: ['status.beta'] });
    o.register({ name: 'beta', owns: ['status.beta'], reads: ['status.gamma'] });
    o.register({ name: 'gamma', owns: ['status.gamma'], reads: ['status.alpha', 'spec'] });
    const cycles = o.check();
    assert.equal(cycles.length, 1);
    assert.deepEqual(cycles[0]?.controllers, ['alpha', 'beta', 'gamma']);
    assert.equal(
      cycles[0]?.text,
      'alpha reads status.beta (owned by beta) → beta reads status.gamma (owned by gamma) → gamma reads status.alpha (owned by alpha) → alpha',
    );
  });

  it('builds patches over owned fields only', () => {
    const current = {
      kind: 'Pod',
      name: 'web',
      spec: { replicas: 1, env: { A: 'x' } },
      status: { phase: 'running' },
    };
    const desired = { kind: 'Pod', name: 'web', spec: { replicas: 2 } };
    const owned = FieldOwnership.withBuiltins().ownedBy('user');
    assert.deepEqual(projectFields(current, owned), {
      kind: 'Pod',
      name: 'web',
      spec: { replicas: 1, env: { A: 'x' } },
    });
    assert.deepEqual(ownedFieldsPatch(current, desired, owned), { spec: { replicas: 2, env: null } });
    assert.equal(ownedFieldsPatch(current, { ...current, status: {} }, owned), undefined);
    assert.deepEqual(projectFields({ status: { leaseA: 1, leaseB: 2, phase: 'x' } }, ['status.lease*']), {
      status: { leaseA: 1, leaseB: 2 },
    });
  });
});
