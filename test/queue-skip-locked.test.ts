/**
 * Claiming on PostgreSQL (POSTERN_TEST_DATABASE_URL): `leaseMany` locks its candidates with
 * `FOR UPDATE SKIP LOCKED`, so a claimer skips a row another transaction holds instead of waiting for it,
 * and the conditional UPDATE still gives each message exactly one owner. Each run creates and drops its
 * own database.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MessageQueue, type QueuedMessage } from '../src/queue/queue.js';
import { Spool } from '../src/queue/spool.js';
import { openStore, type Store } from '../src/store/store.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';

const tuning = { retryBaseMs: 20, retryMaxMs: 40, lifetimeMs: 60_000, concurrency: 4 };
const LEASE_MS = 60_000;

describe.skipIf(!POSTGRES_ADMIN_URL)('leaseMany with FOR UPDATE SKIP LOCKED (POSTERN_TEST_DATABASE_URL)', () => {
  let database: TestDatabase;
  let dataDir: string;
  // Two instances on one database, each with its own store (own connection pool) and queue.
  let storeA: Store;
  let storeB: Store;
  let queueA: MessageQueue;
  let queueB: MessageQueue;

  async function accept(queue: MessageQueue): Promise<QueuedMessage> {
    const incoming = await queue.receive();
    await new Promise<void>((resolve) => incoming.body.end(Buffer.from('Subject: skip\r\n\r\nhello\r\n'), () => resolve()));
    return incoming.commit({ reversePath: 'dev@printers.local', recipients: ['bob@example.test'], body8bit: false, smtputf8: false, headerFrom: null, subject: 'skip', messageId: null, client: 'test' });
  }

  async function fresh(queue: MessageQueue, id: string): Promise<QueuedMessage> {
    const message = await queue.get(id);
    if (!message) throw new Error(`no message ${id}`);
    return message;
  }

  beforeAll(async () => {
    database = await createTestDatabase('postern_skip');
    dataDir = mkdtempSync(join(tmpdir(), 'postern-skip-'));
    storeA = await openStore({ dataDir, databaseUrl: database.url });
    storeB = await openStore({ dataDir, databaseUrl: database.url });
    queueA = new MessageQueue(storeA, Spool.open(join(dataDir, 'spool')), { tuning });
    queueB = new MessageQueue(storeB, Spool.open(join(dataDir, 'spool')), { tuning });
  });

  afterAll(async () => {
    await storeA?.close();
    await storeB?.close();
    await database?.drop();
  });

  test('a row locked by another transaction is skipped, not waited for, and taken once the lock is gone', async () => {
    const a = await accept(queueA);
    const b = await accept(queueA);
    const blocker = new pg.Client({ connectionString: database.url });
    await blocker.connect();
    try {
      await blocker.query('begin');
      const held = await blocker.query('select id from queue_messages where id = $1 for update', [a.id]);
      expect(held.rows).toHaveLength(1);

      // Awaited while the blocker is still open: waiting on its lock would hang here.
      const won = await queueA.leaseMany([a, b], 'owner-a', LEASE_MS);
      expect(won.map((m) => m.id)).toEqual([b.id]);
      expect((await queueA.get(a.id))?.state).toBe('incoming');
      expect((await queueA.get(b.id))).toMatchObject({ state: 'active', leaseOwner: 'owner-a', attempts: 1 });

      await blocker.query('commit');
    } finally {
      await blocker.end();
    }

    const later = await queueA.leaseMany([a], 'owner-a', LEASE_MS);
    expect(later.map((m) => m.id)).toEqual([a.id]);
    expect(await queueA.get(a.id)).toMatchObject({ state: 'active', leaseOwner: 'owner-a', attempts: 1 });
  });

  test('a row unlocked but already taken still loses the conditional UPDATE', async () => {
    const message = await accept(queueA);
    const seenByB = await fresh(queueB, message.id);
    expect((await queueA.leaseMany([message], 'owner-a', LEASE_MS)).map((m) => m.id)).toEqual([message.id]);
    // B saw the row before A took it; nothing locks it now, but its state and attempts have moved on.
    expect(await queueB.leaseMany([seenByB], 'owner-b', LEASE_MS)).toEqual([]);
    expect(await queueA.get(message.id)).toMatchObject({ leaseOwner: 'owner-a', attempts: 1 });
  });

  test('two instances claiming the same 50 messages at once: each message has exactly one owner', async () => {
    for (let round = 0; round < 10; round += 1) {
      const accepted = await Promise.all(Array.from({ length: 50 }, () => accept(round % 2 === 0 ? queueA : queueB)));
      const ids = accepted.map((m) => m.id);
      // Each instance works from its own read of the rows, as after its own scan.
      const forA = await Promise.all(ids.map((id) => fresh(queueA, id)));
      const forB = await Promise.all(ids.map((id) => fresh(queueB, id)));
      const [wonA, wonB] = await Promise.all([queueA.leaseMany(forA, 'owner-a', LEASE_MS), queueB.leaseMany(forB, 'owner-b', LEASE_MS)]);

      const idsA = wonA.map((m) => m.id);
      const idsB = wonB.map((m) => m.id);
      expect(new Set(idsA).size).toBe(idsA.length);
      expect(new Set(idsB).size).toBe(idsB.length);
      expect(idsA.filter((id) => idsB.includes(id))).toEqual([]);
      expect([...idsA, ...idsB].sort()).toEqual([...ids].sort());

      const rows = await storeA.db.selectFrom('queue_messages').select(['id', 'state', 'lease_owner', 'attempts']).where('id', 'in', ids).execute();
      expect(rows).toHaveLength(50);
      for (const row of rows) {
        expect(row.state).toBe('active');
        expect(Number(row.attempts)).toBe(1);
        expect(row.lease_owner).toBe(idsA.includes(row.id) ? 'owner-a' : 'owner-b');
      }
    }
  });
});
