// Checks a stopped daemon's document store the way SQLite itself does: `PRAGMA integrity_check` must say ok.

import assert from 'node:assert/strict';
import { DatabaseSync } from 'node:sqlite';

export function assertSqliteIntact(path: string): void {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const rows = db.prepare('PRAGMA integrity_check').all();
    assert.deepEqual(
      rows.map((r) => r.integrity_check),
      ['ok'],
      `${path} passes integrity_check`,
    );
  } finally {
    db.close();
  }
}
