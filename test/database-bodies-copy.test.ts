/**
 * Long bodies in PostgreSQL stream through binary COPY (src/queue/database-bodies.ts), in and out, on a
 * connection of their own. Real PostgreSQL, a database of the test's own: bodies cut in odd pieces come
 * back whole through COPY and through the one-query-per-chunk fallback; readers stopped early, aborted
 * writers and a COPY the server refuses give their connection back closed, so the pool never runs dry and
 * nothing is left half-written; a missing chunk is reported, not passed over, and so is a body deleted
 * while it is read; 100 readers of one body at once all get it whole.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BODY_CHUNK_BYTES, DatabaseBodies } from '../src/queue/database-bodies.js';
import { openStore, type Store } from '../src/store/store.js';
import { adminQuery, createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';

const inOneTransaction = (store: Store) => async (op: (trx: Store['db']) => Promise<void>) => {
  await store.db.transaction().execute(op);
};

/** `body` in pieces of the given sizes, in turn. */
function pieces(body: Buffer, sizes: number[]): Readable {
  return Readable.from((function* () {
    for (let at = 0, i = 0; at < body.length; i++) {
      const size = sizes[i % sizes.length]!;
      yield body.subarray(at, at + size);
      at += size;
    }
  })());
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe.skipIf(!POSTGRES_ADMIN_URL)('long bodies through binary COPY (POSTERN_TEST_DATABASE_URL)', () => {
  let database: TestDatabase;
  let store: Store;
  let dataDir: string;

  beforeAll(async () => {
    database = await createTestDatabase('postern_bodies_copy');
    dataDir = mkdtempSync(join(tmpdir(), 'postern-bodies-copy-'));
    store = await openStore({ dataDir, databaseUrl: database.url });
  });
  afterAll(async () => {
    await store?.close();
    await database?.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function store_(id: string, body: Buffer, sizes: number[], bodies = new DatabaseBodies(store)): Promise<void> {
    const writer = bodies.create(id, inOneTransaction(store));
    await pipeline(pieces(body, sizes), writer);
    await writer.commit(async () => undefined);
  }

  /** Connections of this test's database that are inside a transaction or a COPY. */
  async function busyConnections(): Promise<number> {
    const rows = await adminQuery<{ n: string }>(`select count(*) as n from pg_stat_activity where datname = $1 and (state like 'idle in transaction%' or query ilike 'copy%' and state = 'active')`, [database.name]);
    return Number(rows[0]!.n);
  }

  test('a body cut in odd pieces is stored in full chunks and read back whole, by COPY and by queries', async () => {
    const body = randomBytes(BODY_CHUNK_BYTES * 5 + 12_345);
    await store_('copy-odd', body, [1, 999, 65_536, 7, 300_000]);
    const seqs = await store.db.selectFrom('message_bodies').select(['seq', (eb) => eb.fn<number>('octet_length', ['data']).as('length')]).where('message_id', '=', 'copy-odd').orderBy('seq').execute();
    expect(seqs.map((r) => r.seq)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(seqs.slice(0, 5).every((r) => Number(r.length) === BODY_CHUNK_BYTES)).toBe(true);
    expect(Number(seqs[5]!.length)).toBe(12_345);
    expect((await readAll(new DatabaseBodies(store).read('copy-odd'))).equals(body)).toBe(true);
    expect((await readAll(new DatabaseBodies(store, { maxOpenReads: 0 }).read('copy-odd'))).equals(body)).toBe(true);
  });

  test('bodies at the chunk boundary (empty, one byte, one full chunk, one chunk and a byte) read back whole, by COPY and by queries', async () => {
    for (const size of [0, 1, BODY_CHUNK_BYTES, BODY_CHUNK_BYTES + 1]) {
      const body = randomBytes(size);
      await store_(`copy-edge-${size}`, body, [65_536]);
      for (const bodies of [new DatabaseBodies(store), new DatabaseBodies(store, { maxOpenReads: 0 })]) {
        expect((await readAll(bodies.read(`copy-edge-${size}`))).equals(body)).toBe(true);
      }
    }
  });

  test('eight long bodies written and read at once (four writers, five COPY readers at a time) all come back whole', async () => {
    const bodies = new DatabaseBodies(store);
    const all = Array.from({ length: 8 }, (_, i) => ({ id: `copy-parallel-${i}`, body: randomBytes(BODY_CHUNK_BYTES * 3 + i * 1000) }));
    await Promise.all(all.map(({ id, body }) => store_(id, body, [65_536], bodies)));
    const back = await Promise.all(all.map(({ id }) => readAll(bodies.read(id))));
    back.forEach((got, i) => expect(got.equals(all[i]!.body)).toBe(true));
  });

  test('readers stopped after their first bytes give their connections back: the pool still serves everyone', async () => {
    const body = randomBytes(BODY_CHUNK_BYTES * 8);
    await store_('copy-early', body, [65_536]);
    const bodies = new DatabaseBodies(store);
    // More early-stopped readers than the pool has connections: a leaked connection would hang the rest.
    for (let round = 0; round < 3; round++) {
      await Promise.all(
        Array.from({ length: 10 }, async () => {
          const stream = bodies.read('copy-early');
          let seen = 0;
          for await (const chunk of stream) {
            seen += (chunk as Buffer).length;
            if (seen > BODY_CHUNK_BYTES + 1) break;
          }
        }),
      );
    }
    expect((await readAll(bodies.read('copy-early'))).equals(body)).toBe(true);
    await expect.poll(busyConnections, { timeout: 5000 }).toBe(0);
  });

  test('100 readers of one long body at once (five by COPY, the rest by queries), a third stopped early: the others whole, no connection left busy', async () => {
    const body = randomBytes(BODY_CHUNK_BYTES * 4 + 777);
    await store_('copy-hundred', body, [65_536]);
    const bodies = new DatabaseBodies(store);
    const outcomes = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const stream = bodies.read('copy-hundred');
        if (i % 3 !== 0) return (await readAll(stream)).equals(body);
        for await (const chunk of stream) if ((chunk as Buffer).length > 0) break;
        return true;
      }),
    );
    expect(outcomes.every(Boolean)).toBe(true);
    await expect.poll(busyConnections, { timeout: 5000 }).toBe(0);
  });

  test('a body deleted while 20 readers stream it: each reader gets it whole or POSTERN_QUEUE_SPOOL_MISSING, and the pool goes on', async () => {
    const body = randomBytes(BODY_CHUNK_BYTES * 6);
    await store_('copy-vanish', body, [65_536]);
    const bodies = new DatabaseBodies(store);
    const readers = Array.from({ length: 20 }, () =>
      readAll(bodies.read('copy-vanish')).then(
        (got) => (got.equals(body) ? 'whole' : 'corrupt'),
        (error: { code?: string }) => error.code ?? 'other',
      ),
    );
    await store.db.deleteFrom('message_bodies').where('message_id', '=', 'copy-vanish').execute();
    const outcomes = await Promise.all(readers);
    expect(outcomes.filter((o) => o !== 'whole' && o !== 'POSTERN_QUEUE_SPOOL_MISSING')).toEqual([]);
    await expect.poll(busyConnections, { timeout: 5000 }).toBe(0);
    await store_('copy-after-vanish', body, [65_536]);
    expect((await readAll(bodies.read('copy-after-vanish'))).equals(body)).toBe(true);
  });

  test('a missing chunk fails the read with POSTERN_QUEUE_SPOOL_MISSING, by COPY and by queries', async () => {
    await store_('copy-gap', randomBytes(BODY_CHUNK_BYTES * 4), [65_536]);
    await store.db.deleteFrom('message_bodies').where('message_id', '=', 'copy-gap').where('seq', '=', 2).execute();
    for (const bodies of [new DatabaseBodies(store), new DatabaseBodies(store, { maxOpenReads: 0 })]) {
      await expect(readAll(bodies.read('copy-gap'))).rejects.toMatchObject({ code: 'POSTERN_QUEUE_SPOOL_MISSING', message: expect.stringMatching(/copy-gap.*chunk/) });
    }
    // A long body without its first chunk (read whole through the COPY): missing, not read from chunk 1.
    await store_('copy-headless', randomBytes(BODY_CHUNK_BYTES * 3), [65_536]);
    await store.db.deleteFrom('message_bodies').where('message_id', '=', 'copy-headless').where('seq', '=', 0).execute();
    await expect(readAll(new DatabaseBodies(store).read('copy-headless'))).rejects.toMatchObject({ code: 'POSTERN_QUEUE_SPOOL_MISSING', message: expect.stringMatching(/copy-headless is missing/) });
    await expect(readAll(new DatabaseBodies(store).read('copy-none'))).rejects.toMatchObject({ code: 'POSTERN_QUEUE_SPOOL_MISSING', message: expect.stringMatching(/copy-none is missing/) });
  });

  test('a writer aborted in the middle of its COPY leaves no rows and no open transaction', async () => {
    const bodies = new DatabaseBodies(store);
    const writer = bodies.create('copy-abort', inOneTransaction(store));
    const half = randomBytes(BODY_CHUNK_BYTES * 3 + 5);
    await new Promise<void>((resolve, reject) => writer.write(half, (error) => (error ? reject(error) : resolve())));
    await writer.abort();
    await expect.poll(busyConnections, { timeout: 5000 }).toBe(0);
    expect(await store.db.selectFrom('message_bodies').select('seq').where('message_id', '=', 'copy-abort').execute()).toHaveLength(0);
    // The slot came back too: four more long bodies (maxOpen 1 here would hang otherwise).
    const one = new DatabaseBodies(store, { maxOpen: 1 });
    const aborted = one.create('copy-abort-2', inOneTransaction(store));
    await new Promise<void>((resolve, reject) => aborted.write(randomBytes(BODY_CHUNK_BYTES + 1), (error) => (error ? reject(error) : resolve())));
    await aborted.abort();
    await store_('copy-after-abort', randomBytes(BODY_CHUNK_BYTES * 2), [65_536], one);
  });

  test('a COPY the server refuses (a chunk already there) fails the body whole and leaves the pool working', async () => {
    await store.db.insertInto('message_bodies').values({ message_id: 'copy-clash', seq: 1, data: Buffer.from('already here') }).execute();
    const body = randomBytes(BODY_CHUNK_BYTES * 3);
    const writer = new DatabaseBodies(store).create('copy-clash', inOneTransaction(store));
    const written = pipeline(pieces(body, [65_536]), writer).then(() => writer.commit(async () => undefined));
    await expect(written).rejects.toThrow(/duplicate key|message_bodies_pk/);
    await writer.abort();
    const rows = await store.db.selectFrom('message_bodies').select('seq').where('message_id', '=', 'copy-clash').execute();
    expect(rows.map((r) => r.seq)).toEqual([1]);
    await expect.poll(busyConnections, { timeout: 5000 }).toBe(0);
    await store_('copy-after-clash', randomBytes(BODY_CHUNK_BYTES * 2), [65_536]);
  });

  test('a writer aborted while its COPY waits for the server (table locked) settles at once and leaves nothing', async () => {
    // Another session holds the table, so the COPY waits for its lock and the server stops reading: the
    // connection's buffers fill and the writer waits for them to drain, as with a slow database.
    const locker = new (await import('pg')).default.Client({ connectionString: database.url });
    await locker.connect();
    try {
      await locker.query('begin');
      await locker.query('lock table message_bodies in access exclusive mode');
      const writer = new DatabaseBodies(store).create('copy-stalled', inOneTransaction(store));
      const body = randomBytes(32 * 1024 * 1024);
      const written = pipeline(pieces(body, [65_536]), writer).then(() => 'finished', (error: unknown) => error);
      await expect.poll(() => writer.writableNeedDrain, { timeout: 10_000 }).toBe(true);
      await writer.abort();
      expect(await written).toBeInstanceOf(Error);
      await locker.query('rollback');
      await expect.poll(busyConnections, { timeout: 5000 }).toBe(0);
      expect(await store.db.selectFrom('message_bodies').select('seq').where('message_id', '=', 'copy-stalled').execute()).toHaveLength(0);
      await store_('copy-after-stall', randomBytes(BODY_CHUNK_BYTES * 2), [65_536]);
    } finally {
      await locker.end();
    }
  });
});
