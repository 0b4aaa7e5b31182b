import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newPsk, peerGroup } from '../../test/support/mesh-peers.ts';
import { waitFor } from '../../test/support/wait-for.ts';
import { NotFoundError } from '../shared/errors.ts';

const meshId = 'query-test';

test('a question is answered by the peer, streamed, and its typed errors come back', async (t) => {
  const { start } = peerGroup(t);
  const psk = newPsk();
  const a = await start({ name: 'a', psk, meshId });
  const b = await start({ name: 'b', psk, meshId, bootstrap: a.node.addrs() });
  await b.node.serveQuestions(async function* (q, peer) {
    if (q.pod === 'missing')
      throw new NotFoundError('E_POD_NOT_FOUND', `no pod ${q.pod}`, { hint: 'list pods' });
    for (let i = 0; i < 3; i++) yield { kind: q.kind, pod: q.pod, i, asker: peer };
  });
  await waitFor(() => a.node.connectedCount() > 0, { timeoutMs: 10_000, what: 'a and b connected' });

  const bodies: unknown[] = [];
  for await (const body of a.node.ask(
    b.node.peerId,
    { kind: 'logs', pod: 'web', opts: {} },
    AbortSignal.timeout(5000),
  )) {
    bodies.push(body);
  }
  assert.deepEqual(
    bodies,
    [0, 1, 2].map((i) => ({ kind: 'logs', pod: 'web', i, asker: a.node.peerId })),
  );

  await assert.rejects(
    async () => {
      for await (const _ of a.node.ask(
        b.node.peerId,
        { kind: 'why', pod: 'missing', opts: {} },
        AbortSignal.timeout(5000),
      )) {
        // no body expected
      }
    },
    (err: unknown) =>
      err instanceof Error &&
      (err as { code?: string }).code === 'E_POD_NOT_FOUND' &&
      /no pod missing \(answered by peer /.test(err.message),
  );
});
