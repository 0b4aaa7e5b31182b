// Topic and protocol names derive from the mesh id; peer addresses are accepted with or without /p2p.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ValidationError } from '../shared/errors.ts';
import { fullPeerAddr, meshProtocols, peerIdOfAddr } from './mesh-protocols.ts';

const peer = '12D3KooWJfDWKkYirW1x6CtUMxYUu3hYUGUh7TNsLG5KqFvJygnj';
const other = '12D3KooWBzcPqCzdjEa2d1Qu6cAFtAFXMt7Hs589PDvbpo8bdCE8';

test('names are versioned and carry the mesh id', () => {
  assert.deepEqual(meshProtocols('home-1'), {
    docTopic: '/meshd/home-1/doc/2',
    presenceProtocol: '/meshd/home-1/presence/2.0.0',
    syncProtocol: '/meshd/home-1/sync/1.0.0',
    queryProtocol: '/meshd/home-1/query/1.0.0',
    rekeyProtocol: '/meshd/home-1/rekey/1.0.0',
  });
});

test('a mesh id that could break a topic or protocol name is refused', () => {
  for (const bad of ['', 'a/b', 'has space', '-lead', 'x'.repeat(65), 'ü']) {
    assert.throws(
      () => meshProtocols(bad),
      (e: unknown) => e instanceof ValidationError && e.code === 'E_MESH_ID_INVALID',
      bad,
    );
  }
});

test('peer addresses are normalised to end in /p2p/<peer id>', () => {
  assert.equal(fullPeerAddr('/ip4/10.0.0.1/tcp/7946', peer), `/ip4/10.0.0.1/tcp/7946/p2p/${peer}`);
  assert.equal(
    fullPeerAddr(`/ip4/10.0.0.1/tcp/7946/p2p/${peer}`, peer),
    `/ip4/10.0.0.1/tcp/7946/p2p/${peer}`,
  );
  assert.equal(fullPeerAddr(`/ip4/10.0.0.1/tcp/7946/p2p/${other}`, peer), undefined, 'names another peer');
  assert.equal(fullPeerAddr('not an address', peer), undefined);
  assert.equal(peerIdOfAddr(`/ip4/10.0.0.1/tcp/7946/p2p/${peer}`), peer);
  assert.equal(peerIdOfAddr('/ip4/10.0.0.1/tcp/7946'), undefined);
});
