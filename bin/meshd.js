#!/usr/bin/env node
// Launcher: runs the meshd CLI on Node >= 24, re-executing under the npm-pinned Node when the system one is older.
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync } from 'node:fs';
// A namespace import: this file must load on old Node too (to re-exec), where enableCompileCache is absent.
import * as nodeModule from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const major = Number(process.versions.node.split('.')[0]);

/**
 * Node's compile cache in a directory only this user can write: it keeps stripped TypeScript and V8 code
 * between runs (a CLI call starts faster; a daemon skips loading the type stripper, ~25 MB). Never the
 * shared default under /tmp: another local user could plant code there that a root daemon would run.
 */
function useCompileCache() {
  if (process.env.NODE_COMPILE_CACHE !== undefined) return; // the user chose: Node already uses it
  try {
    const xdg = process.env.XDG_CACHE_HOME;
    const base = xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.cache');
    const dir = join(base, 'meshd', 'node-compile-cache');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Each level must be ours (or root's, for the base) and writable by nobody else: whoever can rename
    // a level could swap the cache after this check.
    const uid = process.getuid?.();
    const safe = (path, owners) => {
      const st = lstatSync(path);
      return st.isDirectory() && owners.includes(st.uid) && (st.mode & 0o022) === 0;
    };
    if (!safe(base, [uid, 0]) || !safe(join(base, 'meshd'), [uid]) || !safe(dir, [uid])) return;
    nodeModule.enableCompileCache(dir);
  } catch {
    // No writable cache (a read-only home, say): run without one.
  }
}

if (major >= 24) {
  useCompileCache();
  // A checkout runs its TypeScript sources; a tarball ships no src/, only the compiled dist/ (Node never
  // strips types under node_modules). Preferring src/ keeps a half-built dist/ (during `npm pack`) unused.
  const source = join(here, '..', 'src', 'cli', 'main.ts');
  const entry = existsSync(source) ? source : join(here, '..', 'dist', 'cli', 'main.js');
  const { main } = await import(pathToFileURL(entry).href);
  process.exitCode = await main(process.argv.slice(2));
} else {
  let pinned;
  try {
    pinned = join(
      dirname(nodeModule.createRequire(import.meta.url).resolve('node/package.json')),
      'bin',
      'node',
    );
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
