// End to end through the CLI: `meshd node remove` shuts a machine out for good, and the mesh key rotates.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { NodeEntry, PeerEntry, RemoveNodeResult, StatusView } from '../src/api/types.ts';
import { decodeJoinToken } from '../src/mesh/join-token.ts';
import { fixedLoopback, MeshFixture } from './support/meshd-cli.ts';
import { waitFor } from './support/wait-for.ts';

describe('removing a machine from a four-node mesh', { timeout: 300_000 }, () => {
  let mesh: MeshFixture;
  let oldToken = '';
  let newToken = '';
  let cPeerId = '';

  before(async () => {
    mesh = await MeshFixture.create('meshd-members-');
    oldToken = await mesh.form(['a', 'b', 'c', 'd'], { flags: () => fixedLoopback() });
    for (const n of ['a', 'b', 'c', 'd']) {
      await waitFor(
        async () =>
          (await mesh.json<NodeEntry[]>(n, ['get', 'nodes'])).filter((e) => e.state === 'ready').length === 4,
        { timeoutMs: 30_000, what: `${n} to see four ready nodes` },
      );
    }
    cPeerId = (await mesh.json<StatusView>('c', ['status'])).peerId;
  });

  after(async () => {
    await mesh.cleanup();
  });

  test('remove: the removed machine is cut off and the key rotates on every member reached', async () => {
    await mesh.ok('c', ['down']); // offline during the rotation: it must come back by itself later
    const r = await mesh.json<RemoveNodeResult>('a', ['node', 'remove', 'd']);
    assert.equal(r.node, 'd');
    assert.equal(r.keyEpoch, 1);
    assert.ok(r.sentTo.includes('b'), `b got the key directly: ${JSON.stringify(r)}`);
    assert.ok(!r.sentTo.includes('d'));
    assert.deepEqual(r.notReached, ['c']);

    await waitFor(async () => (await mesh.json<StatusView>('b', ['status'])).keyEpoch === 1, {
      timeoutMs: 15_000,
      what: 'b to switch to key epoch 1',
    });
    const nodes = await mesh.json<NodeEntry[]>('b', ['get', 'nodes']);
    assert.equal(nodes.find((n) => n.name === 'd')?.removed, true, 'b lists d as removed');
    // d keeps its old key and is refused by peer id and by key: it ends with no peer, and knows why
    await waitFor(
      async () => {
        const s = await mesh.json<StatusView>('d', ['status']);
        return s.connectedPeers === 0 && s.keyProblem !== undefined;
      },
      { timeoutMs: 30_000, what: 'd to be alone and told why' },
    );
    assert.equal((await mesh.json<StatusView>('d', ['status'])).keyEpoch, 0);
    for (const n of ['a', 'b']) {
      const peers = await mesh.json<PeerEntry[]>(n, ['peers']);
      assert.equal(
        peers.find((p) => p.name === 'd')?.connected ?? false,
        false,
        `${n} is not connected to d`,
      );
    }
  });

  test('a token printed before the rotation is refused as stale; `meshd token` prints one that works', async () => {
    const stale = await mesh.run(
      'e',
      ['join', oldToken, '--node-name', 'e', ...(await fixedLoopback()), '--detach', '--timeout', '30s'],
      {
        timeoutMs: 60_000,
      },
    );
    assert.notEqual(stale.code, 0, stale.stdout);
    assert.match(stale.stderr, /join token is stale/);
    assert.match(stale.stderr, /meshd token/);

    newToken = (await mesh.ok('a', ['token'])).trim();
    assert.equal(decodeJoinToken(newToken).keyEpoch, 1);
    // the same command with the current token: the data dir the stale attempt left is reused
    await mesh.ok('e', ['join', newToken, '--detach', '--timeout', '30s']);
    await waitFor(
      async () =>
        (await mesh.json<NodeEntry[]>('a', ['get', 'nodes'])).find((n) => n.name === 'e')?.state === 'ready',
      { timeoutMs: 20_000, what: 'e to be ready on a' },
    );
  });

  test('a member that was offline during the rotation is told its key is stale, and rejoins with its identity', async () => {
    await mesh.ok('c', ['up', '--detach']);
    const stale = await waitFor(
      async () => {
        const s = await mesh.json<StatusView>('c', ['status']);
        return s.keyProblem?.code === 'E_MESH_KEY_STALE' ? s : undefined;
      },
      { timeoutMs: 30_000, what: 'c to learn its key is stale' },
    );
    assert.match(stale.keyProblem?.hint ?? '', /meshd join/);
    // (c may briefly reach d, which is as stale as c; the current members all refuse it)
    const linked = (await mesh.json<PeerEntry[]>('c', ['peers']))
      .filter((p) => p.connected)
      .map((p) => p.name);
    assert.deepEqual(
      linked.filter((n) => n !== 'd'),
      [],
      'c reaches no current member',
    );
    const shown = await mesh.ok('c', ['status']);
    assert.match(shown, /stale/);

    await mesh.ok('c', ['down']);
    await mesh.ok('c', ['join', newToken, '--detach', '--timeout', '30s']);
    const back = await mesh.json<StatusView>('c', ['status']);
    assert.equal(back.peerId, cPeerId, 'c keeps its identity');
    assert.equal(back.keyEpoch, 1);
    assert.equal(back.keyProblem, undefined);
    await waitFor(
      async () =>
        (await mesh.json<NodeEntry[]>('a', ['get', 'nodes'])).find((n) => n.name === 'c')?.state === 'ready',
      { timeoutMs: 20_000, what: 'c to be ready on a again' },
    );
  });

  test('the removed machine cannot come back even with a current token', async () => {
    await mesh.ok('d', ['down']);
    const res = await mesh.run('d', ['join', newToken, '--detach', '--timeout', '8s'], { timeoutMs: 60_000 });
    assert.notEqual(res.code, 0, res.stdout);
    const nodes = await mesh.json<NodeEntry[]>('a', ['get', 'nodes']);
    assert.equal(nodes.find((n) => n.name === 'd')?.state, 'unreachable');
    assert.equal(nodes.find((n) => n.name === 'd')?.removed, true);
  });
});
