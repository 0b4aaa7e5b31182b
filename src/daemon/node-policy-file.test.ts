// Tests for the node policy file: strict parsing with file:line:col errors, where it is looked for, what none means.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ValidationError } from '../shared/errors.ts';
import { loadNodePolicy, parseNodePolicy } from './node-policy-file.ts';

const root = mkdtempSync(join(tmpdir(), 'meshd-policy-'));
after(() => rmSync(root, { recursive: true, force: true }));

function dir(name: string): string {
  return mkdtempSync(join(root, `${name}-`));
}

/** The ValidationError `fn` throws. */
function thrown(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ValidationError, `expected a ValidationError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected an error');
}

test('a valid policy reads back as the node policy record the scheduler sees', () => {
  const policy = parseNodePolicy(
    `# what pods may relax on this node
hostNetwork: false
hostPaths:
  - { path: /srv/data, readOnly: true }
  - path: /srv/scratch
devices: [/dev/fuse]
capabilities: [NET_BIND_SERVICE, CAP_SYS_TIME]
unsandboxed: true
`,
    'policy.yaml',
  );
  assert.deepEqual(policy, {
    hostNetwork: false,
    unsandboxed: true,
    hostPaths: [
      { path: '/srv/data', readOnly: true },
      { path: '/srv/scratch', readOnly: false },
    ],
    devices: ['/dev/fuse'],
    capabilities: ['NET_BIND_SERVICE', 'CAP_SYS_TIME'],
  });
  assert.deepEqual(parseNodePolicy('{"devices": ["/dev/fuse"]}', 'policy.json'), { devices: ['/dev/fuse'] });
  assert.deepEqual(parseNodePolicy('', 'policy.yaml'), {}, 'an empty file allows nothing');
  assert.deepEqual(parseNodePolicy('# nothing yet\n', 'policy.yaml'), {});
});

test('every problem is reported with the file, field path, line:col and what was expected', () => {
  const err = thrown(() =>
    parseNodePolicy(
      `hostPath:
  - path: /srv/data
hostNetwork: yes please
hostPaths:
  - { path: srv/relative }
  - { path: /srv/ok, readOnly: "no" }
devices: [/etc/passwd]
capabilities: [NET_BIND_SERVCE]
`,
      '/etc/meshd/policy.yaml',
    ),
  );
  assert.equal(err.code, 'E_POLICY_INVALID');
  const lines = err.message.split('\n');
  assert.equal(lines[0], '/etc/meshd/policy.yaml: 6 problems in the node policy:');
  assert.match(
    err.message,
    /policy\.yaml:1:1 hostPath: unknown field "hostPath" \(did you mean "hostPaths"\?\)/,
  );
  assert.match(err.message, /policy\.yaml:3:14 hostNetwork: expected true or false, got "yes please"/);
  assert.match(
    err.message,
    /policy\.yaml:5:13 hostPaths\[0\]\.path: expected an absolute path without \. or \.\., got "srv\/relative"/,
  );
  assert.match(err.message, /policy\.yaml:6:32 hostPaths\[1\]\.readOnly: expected true or false, got "no"/);
  assert.match(err.message, /policy\.yaml:7:11 devices\[0\]: expected a device path under \/dev/);
  assert.match(
    err.message,
    /policy\.yaml:8:16 capabilities\[0\]: "NET_BIND_SERVCE" is not a Linux capability \(did you mean "NET_BIND_SERVICE"\?\)/,
  );
  assert.match(
    err.hint ?? '',
    /Fix the fields listed in \/etc\/meshd\/policy\.yaml and start meshd again \(a running meshd rereads it on SIGHUP\)/,
  );
  assert.equal(err.details?.path, 'hostPath');
  assert.equal(err.details?.line, 1);
});

test('syntax errors and a list instead of a mapping name the file and the place', () => {
  const syntax = thrown(() => parseNodePolicy('hostPaths: [{ path: /srv\n', 'p.yaml'));
  assert.equal(syntax.code, 'E_POLICY_SYNTAX');
  assert.match(syntax.message, /^p\.yaml:\d+:\d+ syntax error/);
  const list = thrown(() => parseNodePolicy('- hostNetwork\n', 'p.yaml'));
  assert.equal(list.code, 'E_POLICY_INVALID');
  assert.match(
    list.message,
    /p\.yaml:1:1 \(top level\): expected a mapping with fields hostNetwork, hostPaths/,
  );
  const twice = thrown(() => parseNodePolicy('hostNetwork: true\n---\nhostNetwork: false\n', 'p.yaml'));
  assert.match(twice.message, /a node has one policy/);
});

test('no policy file allows nothing; the data dir policy file is found; a named file must exist', () => {
  const empty = dir('none');
  assert.deepEqual(loadNodePolicy({ dataDir: empty }), {
    policy: {},
    file: join(empty, 'policy.yaml'),
    exists: false,
  });

  const withJson = dir('json');
  writeFileSync(join(withJson, 'policy.json'), '{"hostNetwork": true}');
  assert.deepEqual(loadNodePolicy({ dataDir: withJson }), {
    policy: { hostNetwork: true },
    file: join(withJson, 'policy.json'),
    exists: true,
  });

  const both = dir('both');
  writeFileSync(join(both, 'policy.json'), '{}');
  writeFileSync(join(both, 'policy.yaml'), '');
  const ambiguous = thrown(() => loadNodePolicy({ dataDir: both }));
  assert.equal(ambiguous.code, 'E_POLICY_AMBIGUOUS');
  assert.match(ambiguous.message, /policy\.yaml, .*policy\.json/);

  const missing = thrown(() => loadNodePolicy({ dataDir: empty, file: join(root, 'nope.yaml') }));
  assert.equal(missing.code, 'E_POLICY_MISSING');
  assert.match(missing.message, /nope\.yaml does not exist/);
  assert.match(missing.hint ?? '', /--policy FILE/);

  const named = join(withJson, 'elsewhere.yaml');
  writeFileSync(named, 'devices: [/dev/fuse]\n');
  assert.deepEqual(loadNodePolicy({ dataDir: empty, file: named }), {
    policy: { devices: ['/dev/fuse'] },
    file: named,
    exists: true,
  });

  const bad = dir('bad');
  writeFileSync(join(bad, 'policy.yaml'), 'hostNetwork: 1\n');
  const invalid = thrown(() => loadNodePolicy({ dataDir: bad }));
  assert.equal(invalid.code, 'E_POLICY_INVALID');
  assert.match(invalid.message, new RegExp(`${join(bad, 'policy.yaml')}:1:14 hostNetwork`));

  const isDir = dir('isdir');
  mkdtempSync(join(isDir, 'x'));
  const unreadable = thrown(() => loadNodePolicy({ dataDir: isDir, file: isDir }));
  assert.equal(unreadable.code, 'E_POLICY_UNREADABLE');
});
