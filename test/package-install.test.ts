// Installing meshd from its npm tarball into an empty prefix gives a working `meshd` (compiled JS, pinned Node).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('..', import.meta.url));

test('npm pack → install into an empty prefix → meshd --version', { timeout: 300_000 }, async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'meshd-pack-'));
  t.after(() => rm(work, { recursive: true, force: true }));
  const { version } = (await import('../package.json', { with: { type: 'json' } })).default;

  await run('npm', ['pack', '--pack-destination', work], { cwd: repo, timeout: 120_000 });
  const tarball = (await readdir(work)).find((f) => f.endsWith('.tgz'));
  assert.ok(tarball, 'npm pack wrote a tarball');

  const prefix = join(work, 'prefix');
  await run(
    'npm',
    ['install', '--prefix', prefix, '--no-audit', '--no-fund', '--omit=dev', join(work, tarball)],
    {
      cwd: work,
      timeout: 240_000,
    },
  );
  // A PATH without this repo's node_modules/.bin: the launcher must find Node 24 on its own.
  const env = { ...process.env, PATH: '/usr/local/bin:/usr/bin:/bin' };
  const { stdout } = await run(join(prefix, 'node_modules', '.bin', 'meshd'), ['--version'], {
    env,
    timeout: 30_000,
  });
  assert.equal(stdout.trim(), version);
  const help = await run(join(prefix, 'node_modules', '.bin', 'meshd'), ['--help'], { env, timeout: 30_000 });
  assert.match(help.stdout, /meshd join TOKEN|join TOKEN/);
});
