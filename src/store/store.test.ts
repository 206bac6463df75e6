import { chmodSync, mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { openStore } from './store.js';

describe('SQLite store files', () => {
  test('the database and its WAL files are readable by the owner only, even in a world-readable directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-store-'));
    chmodSync(dir, 0o755);
    const store = await openStore({ dataDir: dir });
    await store.db.insertInto('meta').values({ key: 'probe', value: 'x' }).execute();
    const files = readdirSync(dir).filter((name) => name.startsWith('postern.sqlite'));
    expect(files).toEqual(expect.arrayContaining(['postern.sqlite', 'postern.sqlite-wal']));
    for (const name of files) expect(statSync(join(dir, name)).mode & 0o777, name).toBe(0o600);
    await store.close();
  });

  test('an existing database file that others could read is made owner-only at start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-store-'));
    const first = await openStore({ dataDir: dir });
    await first.close();
    chmodSync(join(dir, 'postern.sqlite'), 0o644);
    const again = await openStore({ dataDir: dir });
    expect(statSync(join(dir, 'postern.sqlite')).mode & 0o777).toBe(0o600);
    await again.close();
  });
});
