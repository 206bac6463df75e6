/**
 * Pacing shared by instances on one PostgreSQL database (POSTERN_TEST_DATABASE_URL, as
 * test/store-postgres.test.ts): two stores opened separately are two Postern instances; together they never
 * start more than the limit in any sliding minute, also when their takes race. The clock is injected. Each
 * run creates and drops its own database.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { StorePacer, WINDOW_MS, type PacingGrant } from '../src/queue/pacing.js';
import { openStore, type Store } from '../src/store/store.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';

let database: TestDatabase;
const LIMIT = 30;

describe.skipIf(!POSTGRES_ADMIN_URL)('pacing across instances on PostgreSQL (POSTERN_TEST_DATABASE_URL)', () => {
  const stores: Store[] = [];
  const connectionErrors: Error[] = [];
  let now = 1_000_000;
  let a: StorePacer;
  let b: StorePacer;
  const granted = (grants: PacingGrant[]) => grants.reduce((sum, grant) => sum + grant.slots.length, 0);

  beforeAll(async () => {
    database = await createTestDatabase('postern_pacing');
    const secretKey = randomBytes(32); // instances on one database share its key
    for (let i = 0; i < 2; i++) {
      stores.push(
        await openStore({
          dataDir: mkdtempSync(join(tmpdir(), 'postern-pgpace-')),
          databaseUrl: database.url,
          secretKey,
          onConnectionError: (error) => connectionErrors.push(error),
        }),
      );
    }
    a = new StorePacer(stores[0]!, () => now);
    b = new StorePacer(stores[1]!, () => now);
  });

  beforeEach(async () => {
    now += 10 * WINDOW_MS; // every test starts with an empty window
  });

  afterAll(async () => {
    for (const store of stores) await store.close();
    await database?.drop();
  });

  test('2 × 20 concurrent takes with a limit of 30: exactly 30 granted, then both wait', async () => {
    const grants = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).take('microsoft', LIMIT, 1)));
    expect(granted(grants)).toBe(LIMIT);
    for (const pacer of [a, b]) {
      const refused = await pacer.take('microsoft', LIMIT, 1);
      expect(refused.slots).toEqual([]);
      expect(refused.waitMs).toBe(WINDOW_MS + 1);
    }
    now += WINDOW_MS;
    const again = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).take('microsoft', LIMIT, 1)));
    expect(granted(again)).toBe(LIMIT);
  });

  test('concurrent batches are cut to what the window leaves', async () => {
    const grants = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).take('microsoft', LIMIT, 4)));
    expect(granted(grants)).toBe(LIMIT);
    expect(await stores[0]!.db.selectFrom('pacing_starts').select('id').where('pacing_key', '=', 'microsoft').where('started_at', '=', now).execute()).toHaveLength(LIMIT);
  });

  test('over five simulated minutes of racing takes, no sliding minute holds more than the limit', async () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    const starts: number[] = [];
    const end = now + 5 * WINDOW_MS;
    while (now < end) {
      const at = now;
      const grants = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).take('google', LIMIT, 1 + Math.floor(random() * 4))));
      for (const grant of grants) for (let i = 0; i < grant.slots.length; i++) starts.push(at);
      now += Math.floor(random() * 3_000);
    }
    expect(starts.length).toBeGreaterThanOrEqual(5 * LIMIT);
    for (const t of starts) expect(starts.filter((s) => s > t - WINDOW_MS && s <= t).length).toBeLessThanOrEqual(LIMIT);
  });

  test('a start one instance gives back can be taken by the other', async () => {
    const grant = await a.take('microsoft', 2, 2);
    expect(grant.slots).toHaveLength(2);
    expect((await b.take('microsoft', 2, 1)).slots).toEqual([]);
    await a.giveBack(grant.slots.slice(0, 1));
    expect((await b.take('microsoft', 2, 1)).slots).toHaveLength(1);
    expect((await a.take('microsoft', 2, 1)).slots).toEqual([]);
  });

  test('without a limit nothing is stored', async () => {
    const grants = await Promise.all([a.take('microsoft', 0, 50), b.take('microsoft', 0, 50)]);
    expect(granted(grants)).toBe(100);
    expect(await stores[1]!.db.selectFrom('pacing_starts').select('id').where('started_at', '>', now - WINDOW_MS).execute()).toEqual([]);
  });
});
