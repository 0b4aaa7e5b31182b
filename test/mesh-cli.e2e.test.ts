// End to end through the real CLI: three daemons on loopback form a mesh, replicate edits and survive crashes.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { NodeEntry, PeerEntry, StatusView } from '../src/api/types.ts';
import { decodeJoinToken, encodeJoinToken } from '../src/mesh/join-token.ts';
import { fixedLoopback, isAlive, lastLine, loopback, MeshFixture, runMeshd } from './support/meshd-cli.ts';
import { waitFor } from './support/wait-for.ts';

describe('a three-node mesh driven through the CLI', { timeout: 240_000 }, () => {
  let mesh: MeshFixture;
  let token = '';

  before(async () => {
    mesh = await MeshFixture.create();
    // Fixed ports, as real nodes have: restarted nodes find each other at the addresses they remember.
    token = await mesh.form(['a', 'b', 'c'], { initFlags: ['--name', 'home'], flags: () => fixedLoopback() });
    assert.match(token, /^meshd1/);
  });

  after(async () => {
    await mesh.cleanup();
  });

  const readyNames = async (node: string) =>
    (await mesh.json<NodeEntry[]>(node, ['get', 'nodes']))
      .filter((n) => n.state === 'ready')
      .map((n) => n.name)
      .sort()
      .join(',');

  test('every node lists all three nodes as ready', async () => {
    for (const node of ['a', 'b', 'c']) {
      await waitFor(async () => (await readyNames(node)) === 'a,b,c', {
        timeoutMs: 20_000,
        what: `${node} to see a,b,c ready`,
      });
    }
    const status = await mesh.json<StatusView>('b', ['status']);
    assert.equal(status.name, 'b');
    assert.equal(status.mesh.name, 'home');
    assert.match(status.peerId, /^12D3Koo/);
    const peers = await mesh.json<PeerEntry[]>('a', ['peers']);
    assert.deepEqual(peers.map((p) => p.name).sort(), ['b', 'c']);
    await waitFor(
      async () =>
        (await mesh.json<PeerEntry[]>('a', ['peers'])).every((p) => p.connected && p.rttMs !== null),
      {
        timeoutMs: 15_000,
        what: 'RTT to every peer',
      },
    );
  });

  test("describe node shows what another node's policy allows, after a SIGHUP reload, and refuses an unknown name", async () => {
    const before = await mesh.run('c', ['describe', 'node', 'b']);
    assert.equal(before.code, 0, before.stderr);
    assert.match(before.stdout, /^Name: +b$/m);
    assert.match(before.stdout, /^ {2}nothing beyond the sandbox defaults$/m);
    // b's operator allows a read-only host path and a device, and has b read its policy again.
    writeFileSync(
      join(mesh.dataDir('b'), 'policy.yaml'),
      'hostPaths:\n  - { path: /srv/media, readOnly: true }\ndevices: [/dev/fuse]\n',
    );
    process.kill((await mesh.json<StatusView>('b', ['status'])).pid, 'SIGHUP');
    const seen = await waitFor(
      async () => {
        const d = await mesh.json<{ node: NodeEntry }>('c', ['describe', 'node', 'b']);
        return d.node.policy.hostPaths.length > 0 ? d.node : undefined;
      },
      { timeoutMs: 15_000, what: "b's policy to reach c" },
    );
    assert.deepEqual(seen.policy, {
      hostNetwork: false,
      unsandboxed: false,
      hostPaths: [{ path: '/srv/media', readOnly: true }],
      devices: ['/dev/fuse'],
      capabilities: [],
    });
    const text = await mesh.ok('c', ['describe', 'node', 'b']);
    assert.match(text, /^ {2}host path \/srv\/media and below: read-only$/m);
    assert.match(text, /^ {2}devices: \/dev\/fuse$/m);

    const unknown = await mesh.run('c', ['describe', 'node', 'nas']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no node named "nas"/);
    assert.match(unknown.stderr, /Known nodes: a, b, c/);
  });

  test('a label set while a node is down reaches it when it comes back', async () => {
    await mesh.ok('c', ['down']);
    await waitFor(
      async () =>
        (await mesh.json<NodeEntry[]>('a', ['get', 'nodes'])).find((n) => n.name === 'c')?.state ===
        'unreachable',
      {
        timeoutMs: 20_000,
        what: 'c to turn unreachable on a',
      },
    );
    await mesh.ok('a', ['label', 'node', 'b', 'zone=home', 'tier=gold']);
    await mesh.ok('a', ['label', 'node', 'b', 'tier-']);
    await mesh.ok('c', ['up', '--detach']);
    await waitFor(
      async () =>
        (await mesh.json<NodeEntry[]>('c', ['get', 'nodes'])).find((n) => n.name === 'b')?.labels.zone ===
        'home',
      {
        timeoutMs: 20_000,
        what: 'the label to reach c',
      },
    );
    const b = (await mesh.json<NodeEntry[]>('c', ['get', 'nodes'])).find((n) => n.name === 'b');
    assert.deepEqual(b?.labels, { zone: 'home' });
  });

  test('a kill -9ed daemon restarts alone with every acknowledged edit', async () => {
    await mesh.ok('b', ['label', 'node', 'b', 'disk=ssd']);
    const pid = mesh.killDaemon('b');
    await waitFor(() => !isAlive(pid), { timeoutMs: 5_000, what: 'b to die' });
    // Take the others away too: what b knows after the restart must come from its own disk.
    await mesh.ok('a', ['down']);
    await mesh.ok('c', ['down']);
    await mesh.ok('b', ['up', '--detach']);
    const nodes = await mesh.json<NodeEntry[]>('b', ['get', 'nodes']);
    assert.deepEqual(nodes.find((n) => n.name === 'b')?.labels, { zone: 'home', disk: 'ssd' });
    assert.deepEqual(nodes.map((n) => n.name).sort(), ['a', 'b', 'c']);
    // And the others come back through b (a restarted node finds the mesh through any member).
    await mesh.ok('a', ['up', '--detach']);
    await mesh.ok('c', ['up', '--detach']);
    for (const node of ['a', 'b', 'c']) {
      await waitFor(async () => (await readyNames(node)) === 'a,b,c', {
        timeoutMs: 30_000,
        what: `${node} to see a,b,c ready again`,
      });
    }
  });

  test('a second daemon on the same data dir is refused', async () => {
    const res = await mesh.run('a', ['up']);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /already running on .* \(pid \d+\)/);
    assert.match(res.stderr, /hint:/);
  });

  test('a peer holding the wrong key cannot connect', async () => {
    const real = decodeJoinToken(await mesh.ok('a', ['token']));
    const forged = encodeJoinToken({ ...real, psk: real.psk.map((b) => b ^ 0xff) });
    const started = Date.now();
    const res = await mesh.run('intruder', [
      'join',
      forged,
      '--node-name',
      'intruder',
      ...loopback,
      '--detach',
      '--timeout',
      '4s',
    ]);
    assert.equal(res.code, 1, res.stderr);
    assert.match(res.stderr, /gave up after 4 s waiting for a peer of mesh "home"/);
    assert.ok(Date.now() - started < 15_000);
    const peers = await mesh.json<PeerEntry[]>('a', ['peers']);
    assert.ok(!peers.some((p) => p.name === 'intruder'), 'the intruder never became a peer');
    const nodes = await mesh.json<NodeEntry[]>('a', ['get', 'nodes']);
    assert.deepEqual(nodes.map((n) => n.name).sort(), ['a', 'b', 'c']);
  });

  test('joining a data dir that belongs to another mesh is refused', async () => {
    const other = lastLine(
      await mesh.ok('z', ['init', '--name', 'other', '--node-name', 'z', ...loopback, '--detach']),
    );
    await mesh.ok('z', ['down']);
    const res = await mesh.run('a', ['join', other]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /already belongs to mesh "home".*token is for mesh "other"/);
  });
});

describe('bad tokens', { timeout: 30_000 }, () => {
  test('fail fast with a clear message and write nothing', async (t) => {
    const mesh = await MeshFixture.create();
    t.after(() => mesh.cleanup());
    const cases: Array<[string, RegExp]> = [
      ['meshd1abc', /too short|damaged/],
      ['tskey-auth-123', /not a meshd join token.*Tailscale/],
      ['meshd1' + 'x'.repeat(40) + 'O', /cannot appear in a token: "O"/],
    ];
    for (const [bad, message] of cases) {
      const started = Date.now();
      const res = await runMeshd(['join', bad, '--data-dir', mesh.dataDir('fresh')]);
      assert.equal(res.code, 1);
      assert.match(res.stderr, message);
      assert.match(res.stderr, /hint: /);
      // No dial, no wait: far below the 30 s a join would wait for an unreachable peer (loose for loaded CI).
      assert.ok(Date.now() - started < 15_000, 'refused at once');
      assert.ok(
        !existsSync(mesh.dataDir('fresh')) || readdirSync(mesh.dataDir('fresh')).length === 0,
        'nothing written',
      );
    }
  });
});
