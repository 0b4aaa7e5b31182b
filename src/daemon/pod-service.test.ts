// Pod history through the service the API serves: compacted revisions, restore points and the dropped span.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import * as Y from 'yjs';
import { ManualClock } from '../shared/clock.ts';
import { FieldOwnership } from '../state/field-ownership.ts';
import { ObjectStore } from '../state/object-store.ts';
import { podValidators } from '../state/pod-spec.ts';
import { ed25519Signer, peerIdVerifier } from '../state/revision-records.ts';
import { PodService } from './pod-service.ts';

const key = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(9));

function service() {
  const clock = new ManualClock();
  const ownership = FieldOwnership.withBuiltins();
  const store = new ObjectStore(new Y.Doc(), {
    signer: ed25519Signer(key),
    verifier: peerIdVerifier(),
    ownership,
    clock,
    host: 'nas',
    validators: podValidators,
    compaction: { threshold: 20, keep: 3, maxSummaries: 10, restorePoints: 4 },
  });
  const pods = new PodService({
    store,
    ownership,
    peerId: peerIdFromPrivateKey(key).toString(),
    host: 'nas',
    assertDurable: () => {},
  });
  return { pods, clock };
}

const spec = (n: number) =>
  `kind: Pod\nname: web\nspec:\n  containers:\n    - name: app\n      command: [sleep, "${n}"]\n`;

test('history after compaction: the dropped span with its authors, restorable and kept revisions', () => {
  const { pods, clock } = service();
  for (let i = 1; i <= 60; i++) {
    clock.advance(1000);
    pods.apply({ text: spec(i), file: 'web.yaml', actor: i % 3 === 0 ? 'bob' : 'alice' });
  }
  const rows = pods.history('web', {});
  const dropped = rows[0];
  assert.ok(dropped?.dropped !== undefined, 'the first row stands for the dropped revisions');
  assert.match(dropped.revision, /^1\.\.\d+$/);
  const count = dropped.dropped.count;
  assert.ok(count > 0);
  assert.deepEqual(
    dropped.dropped.by.map((b) => b.actor).sort(),
    ['alice', 'bob'],
    'who made the dropped revisions is kept',
  );
  assert.equal(
    dropped.dropped.by.reduce((n, b) => n + b.count, 0),
    count,
    'the authors account for every dropped revision',
  );
  const listed = rows.slice(1);
  assert.equal(count + listed.length, 60, 'every revision is either listed or counted');
  const restorable = listed.filter((r) => r.restorable === true).map((r) => r.revision);
  assert.ok(restorable.length > 0 && restorable.length <= 4, `restore points: ${restorable.join(',')}`);
  assert.ok(
    listed.slice(-3).every((r) => r.compacted !== true),
    'the newest revisions are kept whole',
  );

  // a restorable revision can still be rolled back to, exactly
  const target = restorable[0] ?? '';
  const n = Number(target);
  pods.rollback('web', target, { actor: 'carol' });
  assert.match(pods.describe('web').spec, new RegExp(`sleep, "${n}"|- sleep\\n\\s+- "${n}"`));

  // a filtered history is only revisions, no span row
  assert.ok(
    pods.history('web', { author: 'bob' }).every((r) => r.dropped === undefined && r.author.actor === 'bob'),
  );
});
