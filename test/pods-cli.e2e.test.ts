// End to end through the CLI: pods as versioned objects — apply anywhere, history with authors, rollback, no lost edits.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { PodDescription, PodEntry, RevisionView } from '../src/api/types.ts';
import { fixedLoopback, MeshFixture } from './support/meshd-cli.ts';
import { waitFor } from './support/wait-for.ts';

const webSpec = (greeting: string, memory = '64Mi') => `kind: Pod
name: web
spec:
  containers:
    - name: app
      command: [python3, -m, http.server, "\${PORT_HTTP}"]
      env: { GREETING: ${greeting} }
      ports: [{ name: http }]
      resources: { cpu: 0.25, memory: ${memory} }
  restartPolicy: always
  availability: best-effort
  replicas: 1
`;

describe('pods as versioned objects across three peers', { timeout: 300_000 }, () => {
  let mesh: MeshFixture;
  const listen: Record<string, string[]> = {};
  const spec = (name: string, text: string) => {
    const file = join(mesh.root, name);
    writeFileSync(file, text);
    return file;
  };
  // What people changed: the runtime's status records (kind system) are interleaved in the full history.
  const history = async (node: string, ...flags: string[]) =>
    (await mesh.json<RevisionView[]>(node, ['history', 'pod', 'web', ...flags])).filter(
      (r) => r.kind !== 'system',
    );

  before(async () => {
    mesh = await MeshFixture.create('meshd-pods-');
    for (const n of ['a', 'b', 'c']) listen[n] = await fixedLoopback();
    await mesh.form(['a', 'b', 'c'], { initFlags: ['--name', 'home'], flags: (n) => listen[n] ?? [] });
  });

  after(async () => {
    await mesh.cleanup();
  });

  test('apply on A, edit on B; history on C shows both with their authors; rollback from C reaches A', async () => {
    assert.match(
      await mesh.ok('a', [
        'apply',
        '-f',
        spec('web.yaml', webSpec('hello')),
        '--as',
        'alice',
        '-m',
        'first cut',
      ]),
      /revision 1/,
    );
    // identical spec: no revision
    assert.match(
      await mesh.ok('a', ['apply', '-f', spec('web.yaml', webSpec('hello')), '--as', 'alice']),
      /unchanged/,
    );
    await waitFor(async () => (await mesh.run('b', ['describe', 'pod', 'web'])).code === 0, {
      timeoutMs: 15_000,
      what: 'web on b',
    });
    assert.match(
      await mesh.ok('b', ['edit', 'pod', 'web', '--as', 'bob'], {
        env: { EDITOR: 'sed -i s/hello/bonjour/' },
      }),
      /revision 2/,
    );

    const revs = await waitFor(
      async () => {
        const h = await history('c');
        return h.length === 2 ? h : undefined;
      },
      { timeoutMs: 15_000, what: 'both revisions on c' },
    );
    assert.deepEqual(
      revs.map((r) => [r.revision, r.author.actor, r.author.host, r.kind]),
      [
        ['1', 'alice', 'a', 'user'],
        ['2', 'bob', 'b', 'user'],
      ],
    );
    assert.equal(revs[0]?.message, 'first cut');
    assert.deepEqual(
      (await history('c', '--author', 'bob')).map((r) => r.revision),
      ['2'],
    );
    assert.deepEqual(
      (await history('c', '--exclude-author', 'bob')).map((r) => r.revision),
      ['1'],
    );

    const diff = await mesh.ok('c', ['diff', 'pod', 'web', '--from', '1', '--to', '2']);
    assert.match(diff, /-\s+GREETING: hello\n\+\s+GREETING: bonjour/);

    assert.match(await mesh.ok('c', ['rollback', 'pod', 'web', '--to', '1', '--as', 'carol']), /revision 3/);
    await waitFor(
      async () => (await mesh.json<PodDescription>('a', ['describe', 'pod', 'web'])).revision === '3',
      {
        timeoutMs: 15_000,
        what: 'the rollback on a',
      },
    );
    const onA = await mesh.json<PodDescription>('a', ['describe', 'pod', 'web']);
    assert.match(onA.spec, /GREETING: hello/);
    assert.deepEqual(
      (await history('a', '--kind', 'rollback')).map((r) => [r.revision, r.author.actor]),
      [['3', 'carol']],
    );
  });

  test('an edit on an isolated peer and an edit elsewhere both survive the reunion', async () => {
    // Isolate c: the others go down, c edits alone.
    await mesh.ok('a', ['down']);
    await mesh.ok('b', ['down']);
    assert.match(
      await mesh.ok('c', ['apply', '-f', spec('c.yaml', webSpec('hej')), '--as', 'carol']),
      /applied/,
    );
    await mesh.ok('c', ['down']);
    // Meanwhile the others edit another field.
    await mesh.ok('a', ['up', '--detach']);
    await mesh.ok('b', ['up', '--detach']);
    assert.match(
      await mesh.ok('a', ['apply', '-f', spec('a.yaml', webSpec('hello', '128Mi')), '--as', 'alice']),
      /applied/,
    );
    await mesh.ok('c', ['up', '--detach']);

    for (const node of ['a', 'b', 'c']) {
      const d = await waitFor(
        async () => {
          const desc = await mesh.json<PodDescription>(node, ['describe', 'pod', 'web']);
          return desc.spec.includes('GREETING: hej') && desc.spec.includes('memory: 128Mi')
            ? desc
            : undefined;
        },
        { timeoutMs: 30_000, what: `both edits merged on ${node}` },
      );
      assert.ok(d);
      const h = await history(node);
      const concurrent = h
        .filter((r) => r.concurrent)
        .map((r) => r.author.actor)
        .sort();
      assert.deepEqual(concurrent, ['alice', 'carol'], `${node} marks the two partition edits concurrent`);
    }
  });

  test('invalid specs fail with the field path, a non-zero exit, and change nothing', async () => {
    const before = await history('a');
    const bad = spec(
      'bad.yaml',
      'kind: Pod\nname: web\nspec:\n  containers:\n    - name: app\n      comand: [python3]\n  replicas: two\n',
    );
    const res = await mesh.run('a', ['apply', '-f', bad]);
    assert.equal(res.code, 1);
    assert.match(
      res.stderr,
      /bad\.yaml:6:7 spec\.containers\[0\]\.comand: unknown field "comand" \(did you mean "command"\?\)/,
    );
    assert.match(res.stderr, /spec\.replicas/);
    assert.match(res.stderr, /hint:/);

    const owned = spec('owned.yaml', `${webSpec('x')}status:\n  phase: running\n`);
    const res2 = await mesh.run('a', ['apply', '-f', owned]);
    assert.equal(res2.code, 1);
    assert.match(res2.stderr, /status\.phase.*owned by "runtime"/);

    const missing = await mesh.run('a', ['apply', '-f', join(mesh.root, 'nope.yaml')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no such file/);
    assert.deepEqual(await history('a'), before, 'nothing changed');
  });

  test('delete leaves a readable history; get pods lists one entry per slot', async () => {
    await mesh.ok('b', [
      'apply',
      '-f',
      spec(
        'trio.yaml',
        webSpec('x').replace('name: web', 'name: trio').replace('replicas: 1', 'replicas: 3'),
      ),
    ]);
    await waitFor(
      async () =>
        (await mesh.json<PodEntry[]>('c', ['get', 'pods'])).filter((p) => p.name === 'trio').length === 3,
      {
        timeoutMs: 15_000,
        what: 'three trio slots on c',
      },
    );
    assert.match(await mesh.ok('c', ['delete', 'pod', 'trio', '--as', 'carol']), /deleted/);
    await waitFor(
      async () => !(await mesh.json<PodEntry[]>('a', ['get', 'pods'])).some((p) => p.name === 'trio'),
      {
        timeoutMs: 15_000,
        what: 'trio gone on a',
      },
    );
    const h = await mesh.json<RevisionView[]>('a', ['history', 'pod', 'trio']);
    assert.deepEqual(
      h.filter((r) => r.kind !== 'system').map((r) => r.kind),
      ['user', 'delete'],
    );
    // meshd's own changes are a separate query: the slots' status written by the runtime.
    await waitFor(
      async () =>
        (await mesh.json<RevisionView[]>('a', ['history', 'pod', 'trio', '--kind', 'system'])).length > 0,
      {
        timeoutMs: 15_000,
        what: 'status records of trio',
      },
    );
    const gone = await mesh.run('a', ['describe', 'pod', 'trio']);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /was deleted/);
  });
});
