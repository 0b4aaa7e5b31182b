// Tests of size-bounded log rotation.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { RotatingLog, rotatedFiles } from './rotating-log.ts';

test('no file exceeds maxBytes, at most `keep` files exist, and they hold the newest bytes in order', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-rotlog-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let round = 0;
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 0, maxLength: 300 }), { maxLength: 40 }),
      fc.integer({ min: 1, max: 200 }),
      fc.integer({ min: 1, max: 4 }),
      (chunks, maxBytes, keep) => {
        const path = join(dir, `log-${round++}`);
        const log = new RotatingLog(path, { maxBytes, keep });
        for (const c of chunks) log.write(c);
        log.close();
        const files = rotatedFiles(path, keep).filter((f) => existsSync(f));
        if (existsSync(`${path}.${keep}`)) return false;
        if (files.some((f) => statSync(f).size > maxBytes)) return false;
        const kept = Buffer.concat(files.map((f) => readFileSync(f)));
        const all = Buffer.concat(chunks);
        // Whatever is kept is exactly the end of what was written.
        return (
          kept.equals(all.subarray(all.length - kept.length)) &&
          kept.length >= Math.min(all.length, (keep - 1) * maxBytes)
        );
      },
    ),
    { numRuns: 150 },
  );
});

test('a reopened log appends and keeps counting its existing size', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-rotlog-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'out.log');
  const a = new RotatingLog(path, { maxBytes: 10, keep: 2 });
  a.write(Buffer.from('123456'));
  a.close();
  const b = new RotatingLog(path, { maxBytes: 10, keep: 2 });
  b.write(Buffer.from('7890ab'));
  b.close();
  assert.equal(readFileSync(`${path}.1`, 'utf8'), '1234567890');
  assert.equal(readFileSync(path, 'utf8'), 'ab');
});
