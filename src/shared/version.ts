// The meshd version, read once from package.json (works from src/ and from the compiled dist/).

import { readFileSync } from 'node:fs';

function readVersion(): string {
  const raw = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  const pkg = JSON.parse(raw) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

export const meshdVersion: string = readVersion();
