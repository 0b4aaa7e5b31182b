#!/usr/bin/env node
// Launcher: runs the meshd CLI on Node >= 24, re-executing under the npm-pinned Node when the system one is older.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const major = Number(process.versions.node.split('.')[0]);

if (major >= 24) {
  // A checkout runs its TypeScript sources; a tarball ships no src/, only the compiled dist/ (Node never
  // strips types under node_modules). Preferring src/ keeps a half-built dist/ (during `npm pack`) unused.
  const source = join(here, '..', 'src', 'cli', 'main.ts');
  const entry = existsSync(source) ? source : join(here, '..', 'dist', 'cli', 'main.js');
  const { main } = await import(pathToFileURL(entry).href);
  process.exitCode = await main(process.argv.slice(2));
} else {
  let pinned;
  try {
    pinned = join(dirname(createRequire(import.meta.url).resolve('node/package.json')), 'bin', 'node');
  } catch {
    pinned = undefined;
  }
  if (pinned === undefined || !existsSync(pinned)) {
    process.stderr.write(
      `error: meshd needs Node.js 24 or newer; this is ${process.version}\n  hint: run \`npm ci\` in the meshd folder (it installs Node 24), or install Node 24.\n`,
    );
    process.exit(1);
  }
  const child = spawn(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}
