/**
 * Defect: with bodies in PostgreSQL, dead body chunks stayed in the old generation until V8's own full
 * collection. Relaying five 25 MB messages at once grew Postern by 70-100 MB on PostgreSQL against ~13 MB on
 * SQLite: every 256 KB chunk (and the driver's copies of it) lives across a database round trip, so the
 * scavenges of src/queue/body-memory.ts find it alive and promote it, and only a full collection frees it,
 * which V8 starts only after tens of MB of outside-heap memory. DatabaseBodies now reports the bytes it
 * inserts and reads, and a full collection is asked for every DATABASE_BODY_BYTES_PER_FULL_COLLECTION.
 *
 * Real PostgreSQL (a database of the test's own): a 20 MB body streamed in through DatabaseBodies in its own
 * transaction and read back; `gc` is replaced by a recorder, so the test asserts the collections requested.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DATABASE_BODY_BYTES_PER_FULL_COLLECTION } from '../src/queue/body-memory.js';
import { DatabaseBodies } from '../src/queue/database-bodies.js';
import { openStore, type Store } from '../src/store/store.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';

const SIZE = 20 * 1024 * 1024;

describe.skipIf(!POSTGRES_ADMIN_URL)('database bodies and dead chunks (POSTERN_TEST_DATABASE_URL)', () => {
  let database: TestDatabase;
  let store: Store;
  let dataDir: string;
  const global = globalThis as { gc?: unknown };
  const original = global.gc;

  beforeAll(async () => {
    database = await createTestDatabase('postern_dead_chunks');
    dataDir = mkdtempSync(join(tmpdir(), 'postern-dead-chunks-'));
    store = await openStore({ dataDir, databaseUrl: database.url });
  });
  afterAll(async () => {
    global.gc = original;
    await store?.close();
    await database?.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('a long body in PostgreSQL has full collections requested as it goes in and out', async () => {
    const full: number[] = [];
    global.gc = (options?: { type?: string }) => {
      if (options === undefined) full.push(1);
    };
    const bodies = new DatabaseBodies(store);
    const writer = bodies.create('dead-chunks-1', async (op) => {
      await store.db.transaction().execute(op);
    });
    const piece = Buffer.alloc(64 * 1024, 0x61);
    await pipeline(Readable.from((function* () { for (let at = 0; at < SIZE; at += piece.length) yield piece; })()), writer);
    await writer.commit(async () => undefined);
    const afterIn = full.length;
    expect(afterIn).toBeGreaterThanOrEqual(Math.floor(SIZE / DATABASE_BODY_BYTES_PER_FULL_COLLECTION) - 1);

    let read = 0;
    await pipeline(bodies.read('dead-chunks-1'), new Writable({ write(chunk: Buffer, _encoding, callback) { read += chunk.length; callback(); } }));
    expect(read).toBe(SIZE);
    expect(full.length - afterIn).toBeGreaterThanOrEqual(Math.floor(SIZE / DATABASE_BODY_BYTES_PER_FULL_COLLECTION) - 1);
  });
});
