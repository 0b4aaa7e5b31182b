// Test fixture for doc-store.test.ts: fills a small file system for real, then checks the store keeps and recovers updates.
// Usage: node doc-store.disk-full-fixture.ts <dir on a small tmpfs>. Prints one JSON line with what it saw.

import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import * as Y from 'yjs';
import { systemClock } from '../shared/clock.ts';
import { isMeshdError } from '../shared/errors.ts';
import { silentLogger } from '../shared/logger.ts';
import { DocStore } from './doc-store.ts';

const dir = process.argv[2];
if (dir === undefined) throw new Error('usage: doc-store.disk-full-fixture.ts <dir>');
const path = join(dir, 'cluster.db');
const filler = join(dir, 'filler');

const store = DocStore.open(path, { logger: silentLogger, clock: systemClock, retryAfterMs: 20 });
const doc = new Y.Doc();
store.load(doc);
store.attach(doc);
const items = doc.getArray<string>('items');
const payload = 'x'.repeat(2000);

// Take every free byte of the file system.
const fd = openSync(filler, 'w');
for (let chunk = 1 << 16; chunk >= 1; chunk >>= 1) {
  const buf = Buffer.alloc(chunk);
  for (;;) {
    try {
      writeSync(fd, buf);
    } catch {
      break;
    }
  }
}
closeSync(fd);

let written = 0;
let error: { code: string; message: string; hint: string | undefined } | undefined;
for (; written < 2000 && error === undefined; ) {
  items.push([`${written}:${payload}`]);
  written++;
  try {
    store.assertDurable();
  } catch (err) {
    if (!isMeshdError(err)) throw err;
    error = { code: err.code, message: err.message, hint: err.hint };
  }
}
// Keep writing while the disk is full: these must be kept too.
for (let i = 0; i < 20; i++) items.push([`${written++}:${payload}`]);
const pendingWhileFull = store.stats().pendingUpdates;

rmSync(filler);
const deadline = Date.now() + 10_000;
const waitDurable = (): void => {
  try {
    store.assertDurable();
  } catch (err) {
    if (Date.now() > deadline) throw err;
    setTimeout(waitDurable, 10);
    return;
  }
  // Recovered by the retry timer alone (no write happened meanwhile).
  store.close();
  const reopened = DocStore.open(path, { logger: silentLogger, clock: systemClock });
  const check = new Y.Doc();
  reopened.load(check);
  reopened.close();
  const got = check.getArray<string>('items').toArray();
  const sameOrder = got.every((v, i) => v.startsWith(`${i}:`));
  process.stdout.write(
    `${JSON.stringify({ written, error, pendingWhileFull, reloaded: got.length, sameOrder })}\n`,
  );
};
waitDurable();
