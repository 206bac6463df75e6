/**
 * The queue on PostgreSQL (POSTERN_TEST_DATABASE_URL, as test/store-postgres.test.ts): migration 002, the
 * relay's commit, batched leases with RETURNING, outcomes, one bounce, restart recovery. Each run creates and
 * drops its own database.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLogger } from '../src/log.js';
import { StorePacer } from '../src/queue/pacing.js';
import { QueueManager, type DeliveryResult, type OutboundTransport } from '../src/queue/queue-manager.js';
import { MessageQueue, type QueuedMessage } from '../src/queue/queue.js';
import { Spool } from '../src/queue/spool.js';
import { openStore, type Store } from '../src/store/store.js';
import { untilQueue } from './support/queue.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';

let database: TestDatabase;
const tuning = { retryBaseMs: 20, retryMaxMs: 40, lifetimeMs: 60_000, concurrency: 4 };

describe.skipIf(!POSTGRES_ADMIN_URL)('queue on PostgreSQL (POSTERN_TEST_DATABASE_URL)', () => {
  let store: Store;
  let dataDir: string;
  let queue: MessageQueue;
  let manager: QueueManager;
  const delivered: string[] = [];
  const script: Array<(m: QueuedMessage) => DeliveryResult> = [];
  const transport: OutboundTransport = {
    route: async () => ({ accountId: 'microsoft', ready: true, messagesPerMinute: 0, postmaster: 'alice@example.test' }),
    async deliver(message: QueuedMessage, body: () => Readable): Promise<DeliveryResult> {
      for await (const _chunk of body()) void _chunk;
      delivered.push(message.id);
      return (script.shift() ?? ((m) => ({ status: 'delivered', code: 250, reply: '250 OK', accepted: m.recipients, rejected: [] })))(message);
    },
    abort: async () => undefined,
  };

  async function enqueue(from = 'dev@printers.local'): Promise<QueuedMessage> {
    const incoming = await queue.receive();
    await new Promise<void>((resolve) => incoming.body.end(Buffer.from('Subject: pg\r\n\r\nhello\r\n'), () => resolve()));
    const message = await incoming.commit({ reversePath: from, recipients: ['bob@example.test'], body8bit: false, smtputf8: false, headerFrom: null, subject: 'pg', messageId: null, client: 'test' });
    manager.offer(message);
    return message;
  }

  beforeAll(async () => {
    database = await createTestDatabase('postern_queue');
    dataDir = mkdtempSync(join(tmpdir(), 'postern-pgq-'));
    store = await openStore({ dataDir, databaseUrl: database.url });
    queue = new MessageQueue(store, Spool.open(join(dataDir, 'spool')), { tuning });
    manager = new QueueManager({ queue, transport, pacer: new StorePacer(store), log: createLogger('silent'), tuning, reportingMta: 'pg.test', tickMs: 50, routeCacheMs: 0 });
    await manager.start();
  });

  afterAll(async () => {
    await manager?.stop(1000);
    await store?.close();
    await database?.drop();
  });

  test('accepted messages are leased in batches, delivered once and recorded', async () => {
    const messages = await Promise.all(Array.from({ length: 10 }, () => enqueue()));
    await untilQueue(manager, async () => (await queue.counts()).sent === 10, 'ten sent');
    expect([...new Set(delivered)].sort()).toEqual(messages.map((m) => m.id).sort());
    expect(delivered).toHaveLength(10);
  });

  test('a 4xx is retried, a 5xx returned with one DSN', async () => {
    script.push(() => ({ status: 'deferred', code: 451, reply: '451 later', advice: 'later' }));
    const retried = await enqueue();
    await untilQueue(manager, async () => (await queue.get(retried.id))?.state === 'sent', 'sent after a retry');
    script.push(() => ({ status: 'failed', code: 550, reply: '550 5.1.1 unknown', advice: 'check' }));
    const failed = await enqueue();
    await untilQueue(manager, async () => (await queue.get(failed.id))?.state === 'bounced', 'bounced');
    await untilQueue(manager, async () => (await store.db.selectFrom('queue_messages').select('state').where('is_bounce', '=', 1).execute()).some((r) => r.state === 'sent'), 'the DSN sent');
    expect(await store.db.selectFrom('queue_messages').select('id').where('is_bounce', '=', 1).execute()).toHaveLength(1);
  });

  test('a restart puts active messages back', async () => {
    await manager.stop(1000);
    const stuck = await (async () => {
      const incoming = await queue.receive();
      await new Promise<void>((resolve) => incoming.body.end(Buffer.from('Subject: stuck\r\n\r\nx\r\n'), () => resolve()));
      return incoming.commit({ reversePath: 'a@b.test', recipients: ['c@d.test'], body8bit: false, smtputf8: false, headerFrom: null, subject: 'stuck', messageId: null, client: 'test' });
    })();
    expect(await queue.leaseMany([stuck], 'dead-process', 60_000)).toHaveLength(1);
    manager = new QueueManager({ queue, transport, pacer: new StorePacer(store), log: createLogger('silent'), tuning, reportingMta: 'pg.test', tickMs: 50, routeCacheMs: 0 });
    await manager.start();
    await untilQueue(manager, async () => (await queue.get(stuck.id))?.state === 'sent', 'the stuck message sent');
  });
});
