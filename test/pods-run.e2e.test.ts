// End to end through the CLI: a pinned pod runs sandboxed on its node, restarts in place, says why, outlives its daemon.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { PodEntry, WhyView } from '../src/api/types.ts';
import { httpStatus } from './support/http-status.ts';
import { fixedLoopback, isAlive, MeshFixture } from './support/meshd-cli.ts';
import { waitFor } from './support/wait-for.ts';

/** meshd substitutes `${PORT_HTTP}` in commands itself: a plain string, not a template. */
const portHttp = ['$', '{PORT_HTTP}'].join('');

/** `/proc/PID/status`, or undefined once the process is gone. */
function procStatus(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
}

const podSpec = (name: string, command: string, host = 'b') => `kind: Pod
name: ${name}
spec:
  containers:
    - name: app
      command: ${command}
      ports: [{ name: http }]
  placement: { host: ${host} }
`;

describe('pods run on their node, sandboxed', { timeout: 300_000 }, () => {
  let mesh: MeshFixture;
  const file = (name: string, text: string) => {
    const path = join(mesh.root, name);
    writeFileSync(path, text);
    return path;
  };
  const slot = async (node: string, pod: string) =>
    (await mesh.json<PodEntry[]>(node, ['get', 'pods'])).find((p) => p.name === pod && p.slot === 0);

  before(async () => {
    mesh = await MeshFixture.create('meshd-run-');
    await mesh.form(['a', 'b', 'c'], { flags: () => fixedLoopback() });
    // c runs an operator plugin step that sleeps past its timeout, before running.target
    await mesh.ok('c', ['down']);
    const configFile = join(mesh.dataDir('c'), 'meshd.json');
    const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    config.lifecycle = {
      hooks: [
        {
          name: 'company.audit',
          before: ['running.target'],
          requiredBy: ['running.target'],
          exec: ['sleep', '30'],
          timeout: '500ms',
        },
      ],
    };
    writeFileSync(configFile, JSON.stringify(config, null, 2));
    await mesh.ok('c', ['up', '--detach']);
  });

  after(async () => {
    await mesh.cleanup();
  });

  test('a pinned http.server runs on b as uid 65534 in its own pid namespace with no capabilities', async () => {
    await mesh.ok('a', [
      'apply',
      '-f',
      file('web.yaml', podSpec('web', `[python3, -m, http.server, "${portHttp}"]`)),
    ]);
    // Running, serving on its port, and its process alive as reported. (Another program may take the
    // port between its allocation and the pod's bind; the pod then moves to another: wait for that too.)
    const { s, status } = await waitFor(
      async () => {
        const e = await slot('a', 'web');
        if (e?.phase !== 'running' || e.pid === null || e.ports.http === undefined) return undefined;
        if ((await httpStatus(`http://127.0.0.1:${e.ports.http}/`, 2000)) !== 200) return undefined;
        const status = procStatus(e.pid);
        return status === undefined ? undefined : { s: e, status };
      },
      { timeoutMs: 30_000, what: 'web running, serving HTTP, its process alive' },
    );
    assert.equal(s.node, 'b');
    assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
    assert.match(status, /^CapEff:\s+0000000000000000$/m);
    assert.match(status, /^NoNewPrivs:\s+1$/m);
    assert.match(status, /^NSpid:\s+\d+\s+\d+$/m, 'the process has a second pid: its own pid namespace');
    // Its output, streamed from b to a CLI on c.
    const logs = await waitFor(
      async () => {
        const text = await mesh.ok('c', ['logs', 'pod', 'web', '--stderr', '--tail', '20']);
        return /"GET \/ HTTP\/1\.1" 200/.test(text) ? text : undefined;
      },
      { timeoutMs: 15_000, what: 'the request in the logs, from c' },
    );
    assert.ok(logs);
  });

  test('editing the command restarts it in place: new pid, same node, revision 2', async () => {
    const before = await slot('c', 'web');
    assert.ok(before?.pid);
    await mesh.ok('c', [
      'apply',
      '-f',
      file('web2.yaml', podSpec('web', `[python3, -u, -m, http.server, "${portHttp}"]`)),
    ]);
    const after = await waitFor(
      async () => {
        const e = await slot('c', 'web');
        return e?.runningRevision === '2' && e.phase === 'running' && e.pid !== before.pid ? e : undefined;
      },
      { timeoutMs: 30_000, what: 'web restarted at revision 2' },
    );
    assert.equal(after.node, 'b');
    assert.equal(after.revision, '2');
    assert.deepEqual(after.ports, before.ports, 'the unchanged port is kept');
  });

  test('a bad command shows process.start failed with the reason, asked from c', async () => {
    await mesh.ok('a', ['apply', '-f', file('bad.yaml', podSpec('bad', '[python4, -V]'))]);
    const why = await waitFor(
      async () => {
        const w = await mesh.json<WhyView>('c', ['why', 'pod', 'bad']);
        return w.slots.some((s) => /process\.start/.test(s.text) && /python4/.test(s.summary))
          ? w
          : undefined;
      },
      { timeoutMs: 30_000, what: 'why to show process.start failed' },
    );
    assert.equal(why.node, 'b', 'answered by the node that runs it');
    assert.match(why.slots[0]?.text ?? '', /process\.start.*failed|failed.*process\.start/s);
    // The text form says the same (asked again: a retry may be under way at any single moment).
    await waitFor(async () => /python4: not found/.test(await mesh.ok('c', ['why', 'pod', 'bad'])), {
      timeoutMs: 15_000,
      what: 'the text of why to name python4',
    });
  });

  test('a plugin step that sleeps past its timeout shows as timed out', async () => {
    await mesh.ok('a', ['apply', '-f', file('slow.yaml', podSpec('slow', '[sleep, "3600"]', 'c'))]);
    const why = await waitFor(
      async () => {
        const w = await mesh.json<WhyView>('c', ['why', 'pod', 'slow']);
        return w.slots.some((s) => /company\.audit/.test(s.text) && /timed.out/.test(s.text)) ? w : undefined;
      },
      { timeoutMs: 30_000, what: 'company.audit timed out' },
    );
    assert.ok(why);
  });

  test('kill -9 of b five times leaves the pod running with the same pid and zero restarts', async () => {
    const before = await slot('b', 'web');
    assert.ok(before?.pid);
    for (let i = 0; i < 5; i++) {
      const daemon = mesh.killDaemon('b');
      await waitFor(() => !isAlive(daemon), { timeoutMs: 5_000, what: 'b to die' });
      assert.ok(isAlive(before.pid as number), 'the pod outlives its daemon');
      await mesh.ok('b', ['up', '--detach']);
    }
    const after = await waitFor(
      async () => {
        const e = await slot('b', 'web');
        return e?.phase === 'running' ? e : undefined;
      },
      { timeoutMs: 20_000, what: 'web reported running after the restarts' },
    );
    assert.equal(after.pid, before.pid);
    assert.equal(after.restarts, 0);
    assert.equal(after.revision, '2', 'no new revision');
  });
});
