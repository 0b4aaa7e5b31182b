// Tests of reading rotated logs: tail across rotations, and follow through a rotation.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { waitFor } from '../../../test/support/wait-for.ts';
import { NotFoundError } from '../../shared/errors.ts';
import { liveClock } from './live-clock.ts';
import { readLogLines } from './log-reader.ts';
import { RotatingLog } from './rotating-log.ts';

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const line of it) out.push(line);
  return out;
}

test('tail N returns the last N lines across rotated files, even a line split by rotation', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-logread-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let round = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.stringMatching(/^[a-z0-9 é]{0,30}$/), { minLength: 0, maxLength: 60 }),
      fc.integer({ min: 8, max: 200 }),
      fc.nat(70),
      async (lines, maxBytes, n) => {
        const path = join(dir, `c${round++}.log`);
        const log = new RotatingLog(path, { maxBytes, keep: 3 });
        for (const l of lines) log.write(Buffer.from(`${l}\n`));
        log.close();
        const got = await collect(readLogLines(path, { clock: liveClock, tail: n, keep: 3 }));
        // The kept bytes are a suffix of the stream; the first kept line may be cut at its start.
        const want = lines.slice(Math.max(0, lines.length - n));
        if (got.length > want.length) return false;
        const full = want.slice(want.length - got.length);
        // (A character cut at the very start of what is kept decodes as U+FFFD.)
        return got.every((l, i) =>
          i === 0 ? (full[0] as string).endsWith(l.replace(/^\uFFFD+/, '')) : l === full[i],
        );
      },
    ),
    { numRuns: 60 },
  );
  const path = join(dir, 'exact.log');
  const log = new RotatingLog(path, { maxBytes: 10, keep: 3 });
  log.write(Buffer.from('one\ntwo\nthree\nfour\n'));
  log.close();
  assert.deepEqual(await collect(readLogLines(path, { clock: liveClock, tail: 2 })), ['three', 'four']);
  assert.deepEqual(await collect(readLogLines(path, { clock: liveClock })), ['one', 'two', 'three', 'four']);
});

test('follow yields new lines, survives a rotation and stops when aborted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-logread-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'f.log');
  const log = new RotatingLog(path, { maxBytes: 64, keep: 3 });
  t.after(() => log.close());
  log.write(Buffer.from('before\n'));
  const abort = new AbortController();
  const seen: string[] = [];
  const done = (async () => {
    for await (const line of readLogLines(path, {
      clock: liveClock,
      tail: 1,
      follow: true,
      signal: abort.signal,
      pollMs: 10,
    })) {
      seen.push(line);
    }
  })();
  await waitFor(() => seen.includes('before'), { timeoutMs: 3000, what: 'the existing line' });
  for (let i = 0; i < 20; i++) log.write(Buffer.from(`line ${i}\n`)); // ~160 bytes: rotates twice
  await waitFor(() => seen.includes('line 19'), { timeoutMs: 3000, what: 'lines written after a rotation' });
  abort.abort();
  await done;
  assert.deepEqual(
    seen,
    ['before', ...Array.from({ length: 20 }, (_, i) => `line ${i}`)].slice(0, seen.length),
  );
});

test('reading a log that does not exist says so', async () => {
  await assert.rejects(
    collect(readLogLines('/nonexistent/meshd/x.log', { clock: liveClock })),
    NotFoundError,
  );
});
