// Tests of the bubblewrap command line: the security defaults are present and nothing smuggles options in.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { ValidationError } from '../../shared/errors.ts';
import {
  buildSandboxArgs,
  bwrapArgv,
  canonicalCapability,
  checkContainerName,
  encodeArgs,
  etcReadOnly,
  GATE_SCRIPT,
  gateArgv,
  portEnvName,
  type SandboxPlan,
  sandboxEnv,
} from './sandbox-args.ts';

function plan(over: Partial<SandboxPlan> = {}): SandboxPlan {
  return {
    command: ['python3', '-m', 'http.server'],
    env: sandboxEnv({
      env: { GREETING: 'hi' },
      podKey: 'web',
      container: 'app',
      leaseEpoch: 4,
      ports: { http: 8080 },
    }),
    hostname: 'app',
    workDir: '/var/lib/meshd/pods/web/app/work',
    passwdFile: '/var/lib/meshd/pods/web/app/passwd',
    groupFile: '/var/lib/meshd/pods/web/app/group',
    tmpBytes: 1 << 20,
    ...over,
  };
}

/** Parses options back into (option, operands) pairs, as bwrap reads them. */
function parse(options: readonly string[]): [string, string[]][] {
  const arity: Record<string, number> = {
    '--uid': 1,
    '--gid': 1,
    '--hostname': 1,
    '--cap-drop': 1,
    '--cap-add': 1,
    '--dev-bind': 2,
    '--ro-bind': 2,
    '--ro-bind-try': 2,
    '--bind': 2,
    '--symlink': 2,
    '--proc': 1,
    '--dev': 1,
    '--tmpfs': 1,
    '--size': 1,
    '--chdir': 1,
    '--remount-ro': 1,
    '--setenv': 2,
  };
  const out: [string, string[]][] = [];
  for (let i = 0; i < options.length; ) {
    const opt = options[i] as string;
    const n = arity[opt] ?? 0;
    out.push([opt, options.slice(i + 1, i + 1 + n)]);
    i += 1 + n;
  }
  return out;
}

test('the sandbox gets its namespaces, uid 65534, no capabilities and the supervisor as parent', () => {
  const { options, command } = buildSandboxArgs(plan());
  const opts = parse(options);
  const has = (o: string, ...operands: string[]) =>
    opts.some(([k, v]) => k === o && operands.every((x, i) => v[i] === x));
  for (const ns of [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--disable-userns',
  ]) {
    assert.ok(has(ns), ns);
  }
  assert.ok(!has('--unshare-net'), 'shares the host network for now');
  assert.ok(!has('--share-net') && !has('--unshare-all'));
  assert.ok(has('--uid', '65534') && has('--gid', '65534'));
  assert.ok(has('--cap-drop', 'ALL'));
  assert.ok(has('--die-with-parent') && has('--new-session'));
  assert.ok(!has('--cap-add') && !has('--as-pid-1'));
  assert.deepEqual(command, ['python3', '-m', 'http.server']);
});

test('only /usr, an /etc allow-list and the work dir come from the host; / ends read-only', () => {
  const p = plan();
  const opts = parse(buildSandboxArgs(p).options);
  const writable = opts.filter(([k]) => k === '--bind' || k === '--dev-bind' || k === '--bind-try');
  assert.deepEqual(writable, [['--bind', [p.workDir, '/work']]]);
  const ro = opts.filter(([k]) => k === '--ro-bind' || k === '--ro-bind-try').map(([, v]) => v);
  for (const [src, dest] of ro) {
    const allowed =
      src === '/usr' || etcReadOnly.includes(src as string) || src === p.passwdFile || src === p.groupFile;
    assert.ok(allowed, `unexpected host path ${src}`);
    if (src === p.passwdFile) assert.equal(dest, '/etc/passwd');
  }
  assert.ok(!ro.some(([src]) => src === '/etc/passwd' || src === '/etc/shadow' || src === '/'));
  const idx = (k: string, v?: string) =>
    opts.findIndex(([o, a]) => o === k && (v === undefined || a[0] === v));
  // The root is remounted read-only after every mount under it has been made.
  assert.ok(idx('--remount-ro', '/') > idx('--bind'));
  assert.ok(idx('--remount-ro', '/') > idx('--tmpfs', '/tmp'));
  assert.deepEqual(opts[idx('--chdir')]?.[1], ['/work']);
  assert.ok(idx('--proc', '/proc') >= 0 && idx('--dev', '/dev') >= 0);
});

test('the environment is cleared first, then only PATH, HOME, spec, MESHD_* and PORT_* are set', () => {
  fc.assert(
    fc.property(
      fc.dictionary(
        fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,12}$/).filter((k) => !/^(MESHD_|PORT_)/.test(k)),
        fc.string({ maxLength: 20 }).filter((v) => !v.includes('\0')),
      ),
      (env) => {
        const full = sandboxEnv({ env, podKey: 'p', container: 'c', leaseEpoch: 1, ports: { web: 1234 } });
        const opts = parse(buildSandboxArgs(plan({ env: full })).options);
        const clear = opts.findIndex(([k]) => k === '--clearenv');
        const sets = opts.map(([k, v], i) => [k, v, i] as const).filter(([k]) => k === '--setenv');
        if (clear < 0 || sets.some(([, , i]) => i < clear)) return false;
        const names = new Set(sets.map(([, v]) => v[0] as string));
        const expected = new Set([
          'PATH',
          'HOME',
          'MESHD_POD',
          'MESHD_CONTAINER',
          'MESHD_LEASE_EPOCH',
          'PORT_WEB',
          ...Object.keys(env),
        ]);
        return names.size === expected.size && [...names].every((n) => expected.has(n));
      },
    ),
  );
  const env = sandboxEnv({
    env: {},
    podKey: 'web',
    container: 'app',
    leaseEpoch: 7,
    ports: { http: 8080, 'admin-ui': 9000 },
  });
  assert.equal(env.PATH, '/usr/local/bin:/usr/bin:/bin');
  assert.equal(env.HOME, '/tmp');
  assert.equal(env.PORT_HTTP, '8080');
  assert.equal(env.PORT_ADMIN_UI, '9000');
  assert.equal(env.MESHD_LEASE_EPOCH, '7');
});

test('a replica slot sees its pod name, slot and node; without them MESHD_POD is the pod key', () => {
  const slot = sandboxEnv({
    env: {},
    podKey: 'web.1',
    container: 'app',
    leaseEpoch: 2,
    ports: {},
    podName: 'web',
    slot: 1,
    node: 'nas',
  });
  assert.equal(slot.MESHD_POD, 'web');
  assert.equal(slot.MESHD_SLOT, '1');
  assert.equal(slot.MESHD_NODE, 'nas');
  const plain = sandboxEnv({ env: {}, podKey: 'web', container: 'app', leaseEpoch: 2, ports: {} });
  assert.equal(plain.MESHD_POD, 'web');
  assert.equal(plain.MESHD_SLOT, undefined);
  assert.equal(plain.MESHD_NODE, undefined);
  assert.throws(
    () => sandboxEnv({ env: {}, podKey: 'p', container: 'c', leaseEpoch: 1, ports: {}, node: 'a\0b' }),
    /node contains a NUL byte/,
  );
});

test('a spec cannot set MESHD_* or PORT_*, bad names, or two ports with one variable', () => {
  const base = { podKey: 'p', container: 'c', leaseEpoch: 1, ports: {} };
  assert.throws(() => sandboxEnv({ ...base, env: { MESHD_POD: 'x' } }), ValidationError);
  assert.throws(() => sandboxEnv({ ...base, env: { PORT_HTTP: '1' } }), ValidationError);
  assert.throws(() => sandboxEnv({ ...base, env: { 'A=B': '1' } }), ValidationError);
  assert.throws(
    () => sandboxEnv({ ...base, env: {}, ports: { 'a-b': 1, a_b: 2 } }),
    /two ports map to PORT_A_B/,
  );
  assert.throws(() => sandboxEnv({ ...base, env: {}, ports: { http: 70000 } }), ValidationError);
  assert.equal(portEnvName('metrics.v2'), 'PORT_METRICS_V2');
});

test('a NUL byte anywhere is refused: it would inject bwrap options through --args', () => {
  fc.assert(
    fc.property(fc.string(), fc.string(), (a, b) => {
      const evil = `${a}\0--bind\0/\0/host\0${b}`;
      const tries = [
        () => sandboxEnv({ env: { X: evil }, podKey: 'p', container: 'c', leaseEpoch: 1, ports: {} }),
        () => buildSandboxArgs(plan({ command: ['sh', evil] })),
        () => buildSandboxArgs(plan({ env: { X: evil } })),
      ];
      return tries.every((t) => {
        try {
          t();
          return false;
        } catch (err) {
          return err instanceof ValidationError;
        }
      });
    }),
  );
  // Values that look like options stay values: --setenv takes exactly two operands.
  const opts = buildSandboxArgs(plan({ env: { X: '--bind' } })).options;
  const decoded = encodeArgs(opts).toString('utf8').split('\0').slice(0, -1);
  assert.deepEqual(decoded, opts);
  assert.deepEqual(parse(opts).filter(([k]) => k === '--bind').length, 1);
});

test('empty commands and unsafe container names are refused', () => {
  assert.throws(() => buildSandboxArgs(plan({ command: [] })), ValidationError);
  assert.throws(() => buildSandboxArgs(plan({ command: [''] })), ValidationError);
  for (const bad of ['', '../etc', 'a/b', '.hidden', 'x'.repeat(64)]) {
    assert.throws(() => checkContainerName(bad), ValidationError, bad);
  }
  checkContainerName('web-1.main_2');
});

test('the supervisor argv puts its fds before --args and the command after --', () => {
  const argv = bwrapArgv({ args: 3, seccomp: 4, status: 5, block: 6 }, ['sh', '-c', 'echo hi']);
  assert.deepEqual(argv, [
    '--seccomp',
    '4',
    '--json-status-fd',
    '5',
    '--block-fd',
    '6',
    '--args',
    '3',
    '--',
    'sh',
    '-c',
    'echo hi',
  ]);
});

test('no relaxation (absent or empty) gives exactly the default sandbox options', () => {
  const base = buildSandboxArgs(plan());
  assert.deepEqual(buildSandboxArgs(plan({ relax: {} })), base);
  assert.deepEqual(
    buildSandboxArgs(plan({ relax: { hostPaths: [], devices: [], capabilities: [], hostNetwork: true } })),
    base,
    'hostNetwork adds nothing: the sandbox shares the host network today',
  );
  assert.ok(!base.options.includes('--cap-add'));
  assert.ok(!base.options.includes('--dev-bind'));
});

test('granted host paths, devices and capabilities become binds and ambient capabilities, nothing more', () => {
  const base = buildSandboxArgs(plan()).options;
  const { options } = buildSandboxArgs(
    plan({
      relax: {
        hostPaths: [
          { path: '/srv/data', source: '/mnt/disk1/data', readOnly: true },
          { path: '/srv/scratch', source: '/srv/scratch', readOnly: false },
        ],
        devices: ['/dev/fuse'],
        capabilities: ['NET_BIND_SERVICE', 'CAP_SYS_TIME'],
      },
    }),
  );
  const opts = parse(options);
  const at = (o: string, ...operands: string[]) =>
    opts.findIndex(([k, v]) => k === o && operands.every((x, i) => v[i] === x));
  assert.ok(at('--ro-bind', '/mnt/disk1/data', '/srv/data') >= 0, 'read-only bind of the resolved source');
  assert.ok(at('--bind', '/srv/scratch', '/srv/scratch') >= 0, 'read-write bind');
  assert.ok(
    at('--dev-bind', '/dev/fuse', '/dev/fuse') > at('--dev', '/dev'),
    'device after the minimal /dev',
  );
  assert.ok(at('--dev-bind', '/dev/fuse', '/dev/fuse') < at('--remount-ro', '/dev'));
  const capDrop = at('--cap-drop', 'ALL');
  assert.ok(at('--cap-add', 'CAP_NET_BIND_SERVICE') > capDrop, 'added after everything is dropped');
  assert.ok(at('--cap-add', 'CAP_SYS_TIME') > capDrop);
  assert.ok(
    at('--ro-bind', '/mnt/disk1/data', '/srv/data') < at('--remount-ro', '/'),
    'binds before the root goes read-only',
  );
  assert.ok(at('--uid', '65534') >= 0, 'still uid 65534: never root inside the pod');
  // The defaults are all still there, in order: relaxations only add.
  const isAdded = ([k, v]: [string, string[]]) =>
    k === '--cap-add' ||
    k === '--dev-bind' ||
    ((k === '--ro-bind' || k === '--bind') && (v[1] === '/srv/data' || v[1] === '/srv/scratch'));
  assert.equal(opts.filter(isAdded).length, 5);
  assert.deepEqual(
    opts.filter((o) => !isAdded(o)),
    parse(base),
  );
});

test('relaxations bwrap could misread are refused: unknown capability, relative or dotted paths, non-/dev devices', () => {
  const bad = [
    { capabilities: ['NET_BIND_SERVCE'] },
    { devices: ['/etc/passwd'] },
    { devices: ['/dev/../etc/shadow'] },
    { hostPaths: [{ path: 'srv/data', source: '/srv/data', readOnly: true }] },
    { hostPaths: [{ path: '/srv/data', source: '/srv/../etc', readOnly: true }] },
    { hostPaths: [{ path: '/srv/\0data', source: '/srv/data', readOnly: false }] },
  ];
  for (const relax of bad) {
    assert.throws(() => buildSandboxArgs(plan({ relax })), ValidationError, JSON.stringify(relax));
  }
  assert.equal(canonicalCapability('net_admin'), 'CAP_NET_ADMIN');
  assert.equal(canonicalCapability('CAP_CHOWN'), 'CAP_CHOWN');
});

test('an unsandboxed command runs behind the gate: sh waits on fd 3, then execs the command in place', () => {
  assert.deepEqual(gateArgv(['python3', '-c', 'print(1)']), [
    '/bin/sh',
    '-c',
    GATE_SCRIPT,
    'meshd-gate',
    'python3',
    '-c',
    'print(1)',
  ]);
  assert.throws(() => gateArgv([]), ValidationError);
  assert.throws(() => gateArgv(['a\0b']), ValidationError);
});

test('the gate runs the command only after the go line: a supervisor gone before it means exit 125', () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-gate-'));
  try {
    // fd 3 holds what the supervisor wrote before it went away: nothing, or the go line
    assert.deepEqual(runWithFd3(dir, ''), { status: 125, ran: false });
    assert.deepEqual(runWithFd3(dir, 'go\n'), { status: 0, ran: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs `touch MARKER` behind the gate with `fd3` as the supervisor's go pipe content (then closed). */
function runWithFd3(dir: string, fd3: string): { status: number | null; ran: boolean } {
  const marker = join(dir, `ran-${fd3.length}`);
  const feed = join(dir, `go-${fd3.length}`);
  writeFileSync(feed, fd3);
  const fd = openSync(feed, 'r');
  try {
    const r = spawnSync('/bin/sh', gateArgv(['touch', marker]).slice(1), {
      stdio: ['ignore', 'ignore', 'ignore', fd],
    });
    return { status: r.status, ran: existsSync(marker) };
  } finally {
    closeSync(fd);
  }
}
