// Tests for the double opt-in decision: granted ⊆ asked ∩ allowed, refusals name the missing side, host checks.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import type { NodePolicyRecord } from '../state/cluster-doc.ts';
import type { SecuritySpec } from '../state/pod-spec.ts';
import type { LoadedNodePolicy } from './node-policy-file.ts';
import {
  decideSecurity,
  decisionEssence,
  describeGrant,
  grantsNothing,
  refusalError,
  resolveGrant,
  SecurityGrantError,
} from './security-grant.ts';

const root = mkdtempSync(join(tmpdir(), 'meshd-grant-'));
after(() => rmSync(root, { recursive: true, force: true }));

const file = '/var/lib/meshd/policy.yaml';
const loaded = (policy: NodePolicyRecord, exists = true): LoadedNodePolicy => ({ policy, file, exists });

const path = fc
  .array(fc.constantFrom('srv', 'data', 'a', 'b'), { minLength: 1, maxLength: 3 })
  .map((segs) => `/${segs.join('/')}`);
const devices = fc.uniqueArray(fc.constantFrom('/dev/fuse', '/dev/null', '/dev/kvm'), { maxLength: 3 });
const caps = fc.uniqueArray(fc.constantFrom('NET_ADMIN', 'CAP_NET_ADMIN', 'SYS_TIME', 'CHOWN'), {
  maxLength: 3,
});

const asked: fc.Arbitrary<SecuritySpec> = fc.record(
  {
    hostNetwork: fc.boolean(),
    unsandboxed: fc.boolean(),
    hostPaths: fc.array(fc.record({ path, readOnly: fc.boolean() }), { maxLength: 3 }),
    devices,
    capabilities: caps,
  },
  { requiredKeys: [] },
);

const policy: fc.Arbitrary<NodePolicyRecord> = fc.record(
  {
    hostNetwork: fc.boolean(),
    unsandboxed: fc.boolean(),
    hostPaths: fc.array(
      fc.record(
        {
          path: fc.oneof({ weight: 9, arbitrary: path }, { weight: 1, arbitrary: fc.constant('/') }),
          readOnly: fc.boolean(),
        },
        { requiredKeys: ['path'] },
      ),
      { maxLength: 3 },
    ),
    devices,
    capabilities: caps,
  },
  { requiredKeys: [] },
);

/** An independent statement of "the policy allows this host path". */
function pathAllowed(h: { path: string; readOnly: boolean }, p: NodePolicyRecord): boolean {
  return (p.hostPaths ?? []).some(
    (r) =>
      (r.path === '/' || h.path === r.path || h.path.startsWith(`${r.path}/`)) &&
      (r.readOnly !== true || h.readOnly),
  );
}

const bare = (c: string) => c.replace(/^CAP_/, '');

/** Everything the pod asks for that the policy does not allow, as refusals name it. */
function notAllowed(a: SecuritySpec, p: NodePolicyRecord): string[] {
  const out: string[] = [];
  if (a.hostNetwork === true && p.hostNetwork !== true) out.push('hostNetwork');
  if (a.unsandboxed === true && p.unsandboxed !== true) out.push('unsandboxed');
  for (const h of a.hostPaths ?? []) if (!pathAllowed(h, p)) out.push(`hostPath ${h.path}`);
  for (const d of a.devices ?? []) if (!(p.devices ?? []).includes(d)) out.push(`device ${d}`);
  const allowedCaps = (p.capabilities ?? []).map(bare);
  for (const c of a.capabilities ?? [])
    if (!allowedCaps.includes(bare(c))) out.push(`capability CAP_${bare(c)}`);
  return out;
}

test('property: a grant is a subset of asked ∩ allowed, and covers all that was asked', () => {
  fc.assert(
    fc.property(asked, policy, (a, p) => {
      const d = decideSecurity(a, loaded(p));
      if (!('granted' in d)) return;
      const g = d.granted;
      if (g.hostNetwork === true) assert.ok(a.hostNetwork === true && p.hostNetwork === true);
      if (g.unsandboxed === true) assert.ok(a.unsandboxed === true && p.unsandboxed === true);
      for (const h of g.hostPaths ?? []) {
        assert.ok(
          (a.hostPaths ?? []).some((x) => x.path === h.path && x.readOnly === h.readOnly),
          'asked',
        );
        assert.ok(pathAllowed(h, p), `allowed: ${h.path}`);
        assert.ok(
          (p.hostPaths ?? []).some((r) => r.path === h.allowedBy),
          'allowedBy names a policy rule',
        );
      }
      for (const dev of g.devices ?? []) assert.ok(a.devices?.includes(dev) && p.devices?.includes(dev));
      for (const c of g.capabilities ?? []) {
        assert.match(c, /^CAP_/);
        assert.ok((a.capabilities ?? []).map(bare).includes(bare(c)));
        assert.ok((p.capabilities ?? []).map(bare).includes(bare(c)));
      }
      // Nothing asked is silently dropped: a grant is all of it, or there is a refusal.
      assert.equal(g.hostNetwork === true, a.hostNetwork === true);
      assert.equal(g.unsandboxed === true, a.unsandboxed === true);
      assert.equal((g.hostPaths ?? []).length, (a.hostPaths ?? []).length);
      assert.deepEqual(new Set(g.devices ?? []), new Set(a.devices ?? []));
      assert.deepEqual(new Set((g.capabilities ?? []).map(bare)), new Set((a.capabilities ?? []).map(bare)));
    }),
    { numRuns: 500 },
  );
});

test('property: anything asked and not allowed refuses the start, naming each item and the node side', () => {
  fc.assert(
    fc.property(asked, policy, fc.boolean(), (a, p, exists) => {
      const d = decideSecurity(a, loaded(p, exists));
      const missing = notAllowed(a, p);
      const conflict = a.unsandboxed === true && (a.capabilities ?? []).length > 0;
      assert.equal('refused' in d, missing.length > 0 || conflict);
      if (!('refused' in d)) return;
      for (const m of missing) assert.ok(d.message.includes(m), `message names ${m}: ${d.message}`);
      if (missing.length > 0) {
        assert.match(
          d.message,
          /^pod asks for .* but this node's policy \(.*\) does not allow (it|them); the node operator can /,
        );
        assert.ok(d.message.includes(file), 'names the policy file');
        assert.match(
          d.hint,
          /node operator allows it in .*policy\.yaml.*or the pod stops asking for it in spec\.security/,
        );
      }
      const err = refusalError(d);
      assert.equal(err.code, 'E_SECURITY_NOT_ALLOWED');
      assert.equal(err.hint, d.hint);
    }),
    { numRuns: 500 },
  );
});

test('property: what the node allows and the pod does not ask for changes nothing', () => {
  fc.assert(
    fc.property(
      policy,
      fc.constantFrom<SecuritySpec | undefined>(
        undefined,
        {},
        { hostNetwork: false, unsandboxed: false, hostPaths: [], devices: [], capabilities: [] },
      ),
      (p, a) => {
        const d = decideSecurity(a, loaded(p));
        assert.ok('granted' in d && grantsNothing(d.granted));
        assert.equal(describeGrant(d.granted), 'nothing');
      },
    ),
  );
});

test('a refusal says what the pod asks, which policy lacks it, and the line that grants it', () => {
  const rw = decideSecurity({ hostPaths: [{ path: '/srv/data', readOnly: false }] }, loaded({}));
  assert.ok('refused' in rw);
  assert.equal(
    rw.message,
    "pod asks for hostPath /srv/data (read-write) but this node's policy (/var/lib/meshd/policy.yaml) does not allow it; the node operator can add `hostPaths: [{ path: /srv/data }]` to it",
  );
  const roOnly = decideSecurity(
    { hostPaths: [{ path: '/srv/data/x', readOnly: false }] },
    loaded({ hostPaths: [{ path: '/srv/data', readOnly: true }] }),
  );
  assert.ok('refused' in roOnly);
  assert.match(roOnly.message, /hostPath \/srv\/data\/x \(read-write; the policy allows it read-only\)/);

  const several = decideSecurity(
    {
      hostPaths: [
        { path: '/a', readOnly: true },
        { path: '/b', readOnly: false },
      ],
      capabilities: ['NET_ADMIN'],
      devices: ['/dev/fuse'],
      hostNetwork: true,
    },
    loaded({}, false),
  );
  assert.ok('refused' in several);
  assert.equal(
    several.message,
    "pod asks for hostNetwork, hostPath /a (read-only), hostPath /b (read-write), device /dev/fuse and capability CAP_NET_ADMIN but this node's policy (none: /var/lib/meshd/policy.yaml does not exist, so nothing is allowed) does not allow them; the node operator can create /var/lib/meshd/policy.yaml with `hostNetwork: true`, `hostPaths: [{ path: /a, readOnly: true }, { path: /b }]`, `devices: [/dev/fuse]` and `capabilities: [NET_ADMIN]`",
  );

  const conflict = decideSecurity(
    { unsandboxed: true, capabilities: ['CHOWN'] },
    loaded({ unsandboxed: true, capabilities: ['CHOWN'] }),
  );
  assert.ok('refused' in conflict);
  assert.match(conflict.message, /capabilities together with unsandboxed, which no node grants/);
  assert.match(conflict.hint, /not both/);
});

test('the grant, not the wording, is what restarts a slot: same grant, same essence', () => {
  const a = decideSecurity(
    { hostPaths: [{ path: '/srv/data/x', readOnly: true }] },
    loaded({ hostPaths: [{ path: '/srv' }] }),
  );
  const b = decideSecurity(
    { hostPaths: [{ path: '/srv/data/x', readOnly: true }] },
    { policy: { hostPaths: [{ path: '/srv/data', readOnly: true }] }, file: '/elsewhere.yaml', exists: true },
  );
  assert.deepEqual(decisionEssence(a), decisionEssence(b));
  const refused = decideSecurity({ hostPaths: [{ path: '/srv/data/x', readOnly: true }] }, loaded({}));
  assert.notDeepEqual(decisionEssence(refused), decisionEssence(a));
});

test('resolveGrant binds the real path, refuses a symlink out of the allowed prefix, a missing path, a non-device', async () => {
  const allowed = join(root, 'allowed');
  mkdirSync(join(allowed, 'data'), { recursive: true });
  writeFileSync(join(root, 'secret'), 'x');
  symlinkSync(join(allowed, 'data'), join(allowed, 'inside'));
  symlinkSync(join(root, 'secret'), join(allowed, 'escape'));

  const relax = await resolveGrant({
    hostPaths: [{ path: join(allowed, 'inside'), readOnly: true, allowedBy: allowed }],
    devices: ['/dev/null'],
    capabilities: ['CAP_CHOWN'],
  });
  assert.deepEqual(relax, {
    hostPaths: [{ path: join(allowed, 'inside'), source: join(allowed, 'data'), readOnly: true }],
    devices: ['/dev/null'],
    capabilities: ['CAP_CHOWN'],
  });

  await assert.rejects(
    resolveGrant({ hostPaths: [{ path: join(allowed, 'escape'), readOnly: true, allowedBy: allowed }] }),
    (err: unknown) =>
      err instanceof SecurityGrantError &&
      err.code === 'E_HOST_PATH' &&
      err.message.includes(`resolves to ${join(root, 'secret')}, outside ${allowed}`),
  );
  await assert.rejects(
    resolveGrant({ hostPaths: [{ path: join(allowed, 'nope'), readOnly: false, allowedBy: allowed }] }),
    /hostPath .*nope does not exist on this node/,
  );
  await assert.rejects(
    resolveGrant({ devices: ['/dev/does-not-exist'] }),
    /device \/dev\/does-not-exist does not exist/,
  );
  await assert.rejects(resolveGrant({ devices: ['/dev/shm'] }), /device \/dev\/shm is not a device node/);
  assert.deepEqual(await resolveGrant({}), {});
});
