// kill -9 of a daemon in the middle of applies never loses an acknowledged revision nor leaves a partial record.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { RevisionView } from '../src/api/types.ts';
import { fixedLoopback, isAlive, MeshFixture, runMeshd } from './support/meshd-cli.ts';
import { waitFor } from './support/wait-for.ts';

const spec = (n: number) => `kind: Pod
name: crashy
spec:
  containers:
    - name: app
      command: [sleep, "3600"]
      env: { N: "${n}" }
`;

test('kill -9 in a loop during applies: every acknowledged revision survives, nothing partial', {
  timeout: 240_000,
}, async (t) => {
  const mesh = await MeshFixture.create('meshd-crash-');
  t.after(() => mesh.cleanup());
  const listen = await fixedLoopback();
  await mesh.ok('a', ['init', '--node-name', 'a', ...listen, '--detach']);
  const acknowledged: number[] = [];
  let n = 0;
  for (let round = 0; round < 5; round++) {
    // Fire applies back to back; kill the daemon while they are in flight.
    // At most three CLI calls at once: more only load the machine (and whatever test runs beside this one).
    const inflight = new Set<Promise<void>>();
    const stopAt = Date.now() + 300 + Math.floor(Math.random() * 700);
    while (Date.now() < stopAt) {
      const k = ++n;
      const file = join(mesh.root, `s${k}.yaml`);
      writeFileSync(file, spec(k));
      const p: Promise<void> = runMeshd([
        'apply',
        '-f',
        file,
        '--as',
        `writer-${k}`,
        '--data-dir',
        mesh.dataDir('a'),
      ]).then((res) => {
        if (res.code === 0 && /applied/.test(res.stdout)) acknowledged.push(k);
        inflight.delete(p);
      });
      inflight.add(p);
      await new Promise((r) => setImmediate(r));
      if (inflight.size >= 3) await Promise.race(inflight);
    }
    const pid = mesh.killDaemon('a');
    await Promise.all(inflight);
    await waitFor(() => !isAlive(pid), { timeoutMs: 5_000, what: 'the daemon to die' });
    await mesh.ok('a', ['up', '--detach']);
    const history = await mesh.json<RevisionView[]>('a', ['history', 'pod', 'crashy']);
    const present = new Set(history.map((h) => h.author.actor));
    for (const k of acknowledged)
      assert.ok(present.has(`writer-${k}`), `acknowledged apply ${k} survived round ${round}`);
    assert.ok(
      history.every((h) => h.rejected === undefined),
      'no partial or rejected record',
    );
  }
  assert.ok(acknowledged.length >= 5, `enough applies were acknowledged (${acknowledged.length})`);
  const describe = await runMeshd([
    'describe',
    'pod',
    'crashy',
    '-o',
    'json',
    '--data-dir',
    mesh.dataDir('a'),
  ]);
  assert.equal(describe.code, 0, describe.stderr);
});
