// Test fixture for doc-store.test.ts: appends updates forever and acks each one once its write returned.
// Usage: node doc-store.crash-fixture.ts <store path> <compactAfterUpdates> <maxUpdates>
// Prints `start <n>` once loaded, then `ack <i>` after each update; the parent SIGKILLs it at a random moment.

import { writeSync } from 'node:fs';
import * as Y from 'yjs';
import { systemClock } from '../shared/clock.ts';
import { silentLogger } from '../shared/logger.ts';
import { DocStore } from './doc-store.ts';

const [path, compactArg, maxArg] = process.argv.slice(2);
if (path === undefined)
  throw new Error('usage: doc-store.crash-fixture.ts <store path> <compactAfterUpdates> <max>');

const store = DocStore.open(path, {
  logger: silentLogger,
  clock: systemClock,
  compactAfterUpdates: Number(compactArg ?? 50),
});
const doc = new Y.Doc();
store.load(doc);
store.attach(doc);
const log = doc.getArray<number>('log');
const last = doc.getMap<number>('last');
const start = log.length === 0 ? 0 : Math.max(...log.toArray()) + 1;
writeSync(1, `start ${start}\n`);
const end = start + Number(maxArg ?? 100_000);
for (let i = start; i < end; i++) {
  doc.transact(() => {
    log.push([i]);
    last.set(`k${i % 20}`, i); // overwrites: tombstones that compaction must carry over
  });
  store.assertDurable();
  // Written with writeSync after the transaction returned: the parent only counts an update once it is on disk.
  writeSync(1, `ack ${i}\n`);
}
store.close();
