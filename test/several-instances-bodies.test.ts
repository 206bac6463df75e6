/**
 * Message bodies in PostgreSQL (src/queue/database-bodies.ts): a body accepted through one instance's queue
 * is read back by another's, chunk by chunk; body and row commit together; an aborted message leaves no
 * rows; a final outcome removes the body in its own transaction.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BODY_CHUNK_BYTES } from '../src/queue/database-bodies.js';
import { MessageQueue, type MessageEnvelope } from '../src/queue/queue.js';
import { Spool } from '../src/queue/spool.js';
import { openStore, type Store } from '../src/store/store.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';

const tuning = { retryBaseMs: 20, retryMaxMs: 40, lifetimeMs: 60_000, concurrency: 4 };
const envelope: MessageEnvelope = { reversePath: 'dev@printers.local', recipients: ['bob@example.test'], body8bit: false, smtputf8: false, headerFrom: null, subject: 'scan', messageId: null, client: 'test' };

async function write(stream: NodeJS.WritableStream, body: Buffer, piece = 64 * 1024): Promise<void> {
  for (let at = 0; at < body.length; at += piece) {
    const ok = stream.write(body.subarray(at, at + piece));
    if (!ok) await new Promise((resolve) => stream.once('drain', resolve));
  }
  await new Promise<void>((resolve) => stream.end(() => resolve()));
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe.skipIf(!POSTGRES_ADMIN_URL)('message bodies in PostgreSQL', () => {
  let database: TestDatabase;
  let a: { store: Store; queue: MessageQueue };
  let b: { store: Store; queue: MessageQueue };

  async function instance(key: Buffer) {
    const dataDir = mkdtempSync(join(tmpdir(), 'postern-bodies-'));
    const store = await openStore({ dataDir, databaseUrl: database.url, secretKey: key });
    return { store, queue: new MessageQueue(store, Spool.open(join(dataDir, 'spool')), { tuning }) };
  }

  beforeAll(async () => {
    database = await createTestDatabase('postern_bodies');
    const key = randomBytes(32);
    a = await instance(key);
    b = await instance(key);
  });

  afterAll(async () => {
    await a?.queue.close();
    await b?.queue.close();
    await a?.store.close();
    await b?.store.close();
    await database?.drop();
  });

  test('a 3 MB body accepted by one instance is read back whole by the other, from chunks', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    const incoming = await a.queue.receive();
    await write(incoming.body, body);
    const message = await incoming.commit(envelope);
    expect(message.bodyInDatabase).toBe(true);
    const chunks = await a.store.db.selectFrom('message_bodies').select(['seq']).where('message_id', '=', message.id).execute();
    expect(chunks).toHaveLength(Math.ceil(body.length / BODY_CHUNK_BYTES));
    const seen = await b.queue.get(message.id);
    expect(seen).toBeDefined();
    expect((await readAll(b.queue.body(seen!))).equals(body)).toBe(true);
    // The other instance may deliver it: it is among its due messages.
    expect((await b.queue.due(10)).map((m) => m.id)).toContain(message.id);
  });

  test('an aborted long body leaves no rows; a committed one commits with its row only', async () => {
    const incoming = await a.queue.receive();
    const half = randomBytes(BODY_CHUNK_BYTES * 2 + 5);
    await new Promise<void>((resolve) => incoming.body.write(half, () => resolve()));
    await incoming.abort();
    expect(await a.store.db.selectFrom('message_bodies').select('seq').where('message_id', '=', incoming.id).execute()).toHaveLength(0);
    expect(await a.queue.get(incoming.id)).toBeUndefined();
  });

  test('a final outcome removes the body; Delete does too', async () => {
    const small = Buffer.from('Subject: small\r\n\r\nhello\r\n');
    const first = await a.queue.receive();
    await write(first.body, small);
    const sent = await first.commit(envelope);
    const [leased] = await b.queue.leaseMany([sent], 'b', 60_000);
    expect(leased).toBeDefined();
    await b.queue.recordOutcome(leased!, 'b', { delivered: envelope.recipients, retry: [], failed: [], summary: { code: 250, reply: '250 OK' } });
    expect(await a.store.db.selectFrom('message_bodies').select('seq').where('message_id', '=', sent.id).execute()).toHaveLength(0);

    const second = await a.queue.receive();
    await write(second.body, small);
    const waiting = await second.commit(envelope);
    expect(await b.queue.remove(waiting.id, 'admin')).toBeDefined();
    expect(await a.store.db.selectFrom('message_bodies').select('seq').where('message_id', '=', waiting.id).execute()).toHaveLength(0);
  });
});
