/**
 * Message bodies in PostgreSQL, so that every instance on one database can deliver every message
 * (docs/decisions/028-shared-bodies-and-instances.md).
 *
 * Purpose: with PostgreSQL the body of a message is rows of `message_bodies` (message id, chunk number,
 *   at most BODY_CHUNK_BYTES of bytea each), not a file on the disk of the instance that accepted it.
 * Intake: the relay streams DATA into a DatabaseBodyWriter. A body that fits in one chunk (most messages)
 *   is collected and inserted together with its queue row in the queue's batched transaction. A longer body
 *   takes a connection of its own at its first full chunk, opens a transaction there and streams its rows
 *   through `COPY message_bodies FROM STDIN` in PostgreSQL's binary format (copy-binary.ts): the device's
 *   pieces go to the connection as they are, with a few bytes of framing, and the relay waits whenever the
 *   connection's buffer is full (back-pressure on the device's socket). At the end the COPY is closed, the
 *   queue row is inserted on that same connection, and the transaction commits. Either way body and row
 *   commit together, before the device gets `250`.
 * Output: a Readable. One query returns the number of the last chunk, and the data with it when the body
 *   is one chunk (most messages): that is all. A longer body comes through `COPY (SELECT data …) TO STDOUT`
 *   in binary, as the server sends it, on a connection of its own that the reader holds until the end; when
 *   `maxOpenReads` readers already hold one, it is fetched one chunk per query instead (never waiting).
 * Why COPY: a bytea query parameter is copied three times into the driver's message, and a bytea column is
 *   read back as hex text twice its size; both are large objects that only a full collection frees.
 *   Relaying five 25 MB messages at once grew an instance by ~31 MB that way against ~14 MB on SQLite.
 * Removal: a body's rows are deleted in the transaction that makes its message final (sent, returned,
 *   deleted); rows without a waiting message (none are left by a crash: an uncommitted body rolls back
 *   with its transaction) are removed at start all the same.
 * Failure modes: a failed COPY or insert fails the writer (its connection is closed, so the server rolls
 *   the transaction back); the relay answers 451 and the device retries. An aborted body closes its
 *   connection the same way. A body without rows, or with fewer than its last chunk number says, fails the
 *   read stream with POSTERN_QUEUE_SPOOL_MISSING; a reader stopped early closes its connection.
 * Memory: every chunk in or out is reported to databaseBodyBytes (body-memory.ts), which asks for a full
 *   collection every few MB.
 * Known limits: a long body holds one pooled connection while it arrives; at most `maxOpen` do at once
 *   (the others wait, and their devices with them), so the rest of Postern always has connections left.
 */
import { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Kysely, PostgresDialect, sql, type PostgresPool, type PostgresPoolClient } from 'kysely';
import type { PoolClient } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { ErrorCodes, PosternError } from '../errors.js';
import type { Database } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { databaseBodyBytes } from './body-memory.js';
import { BinaryCopyDecoder, bodyRowStart, copyHeader, copyTrailer } from './copy-binary.js';

/** The largest chunk of a body in one row. */
export const BODY_CHUNK_BYTES = 256 * 1024;

export type BodyTransaction = Kysely<Database>;

/** What the queue runs when the body is complete: its row and log line, in the body's transaction. */
export type RowWrite = (trx: BodyTransaction) => Promise<void>;

/** Runs a write in the queue's batched, durable transaction (WriteBatcher.run). */
export type BatchedWrite = (op: RowWrite) => Promise<void>;

/** A counting semaphore: the long bodies that hold a connection at once. */
class Slots {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  constructor(count: number) {
    this.#free = count;
  }
  async take(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }
  /** Takes a slot if one is free, without waiting. */
  tryTake(): boolean {
    if (this.#free === 0) return false;
    this.#free--;
    return true;
  }
  give(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

/** Kysely on one connection (inside the transaction a long body opened there): for the queue row. */
function kyselyOn(client: PoolClient): Kysely<Database> {
  const pinned = { query: client.query.bind(client), release: () => undefined } as unknown as PostgresPoolClient;
  const pool: PostgresPool = { connect: async () => pinned, end: async () => undefined };
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

function unreadable(id: string, error: unknown): PosternError {
  if (error instanceof PosternError) return error;
  return new PosternError(ErrorCodes.QUEUE_SPOOL_MISSING, `the stored body of queue message ${id} cannot be read: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
}

export class DatabaseBodies {
  readonly #db: Kysely<Database>;
  readonly #connect: () => Promise<PoolClient>;
  readonly #slots: Slots;
  readonly #readSlots: Slots;

  constructor(store: Pick<Store, 'db' | 'connect'>, options: { maxOpen?: number; maxOpenReads?: number } = {}) {
    const connect = store.connect;
    if (!connect) throw new TypeError('bodies in the database need PostgreSQL');
    this.#db = store.db;
    this.#connect = connect;
    this.#slots = new Slots(options.maxOpen ?? 4);
    this.#readSlots = new Slots(options.maxOpenReads ?? 5);
  }

  /** A writer for the body of message `id`. Keeps a copy of up to `keepBytes` (see SpoolWriter.kept). */
  create(id: string, batched: BatchedWrite, keepBytes = 0): DatabaseBodyWriter {
    return new DatabaseBodyWriter(this.#connect, id, batched, this.#slots, keepBytes);
  }

  /** Inserts a whole (small, generated) body inside `trx`: a DSN, created with its row. */
  async insertIn(trx: BodyTransaction, id: string, body: Buffer): Promise<void> {
    for (let seq = 0, at = 0; at < body.length || seq === 0; seq++, at += BODY_CHUNK_BYTES) {
      await trx.insertInto('message_bodies').values({ message_id: id, seq, data: body.subarray(at, at + BODY_CHUNK_BYTES) }).execute();
    }
  }

  /** Deletes a body inside `trx` (the transaction that makes its message final). */
  async removeIn(trx: BodyTransaction, id: string): Promise<void> {
    await trx.deleteFrom('message_bodies').where('message_id', '=', id).execute();
  }

  /** Deletes a body on its own. */
  async remove(id: string): Promise<void> {
    await this.removeIn(this.#db, id);
  }

  /** Whether the body of `id` has rows. */
  async has(id: string): Promise<boolean> {
    return (await this.#db.selectFrom('message_bodies').select('seq').where('message_id', '=', id).limit(1).executeTakeFirst()) !== undefined;
  }

  /** Removes bodies whose message is not among the waiting ones (`isWaiting`). Returns how many. */
  async removeOrphans(waiting: (ids: string[]) => Promise<Set<string>>): Promise<number> {
    const ids = (await this.#db.selectFrom('message_bodies').select('message_id').where('seq', '=', 0).execute()).map((r) => r.message_id);
    let removed = 0;
    for (let i = 0; i < ids.length; i += 500) {
      const slice = ids.slice(i, i + 500);
      const known = await waiting(slice);
      const gone = slice.filter((id) => !known.has(id));
      if (gone.length > 0) {
        await this.#db.deleteFrom('message_bodies').where('message_id', 'in', gone).execute();
        removed += gone.length;
      }
    }
    return removed;
  }

  /** The body's bytes: a one-chunk body by one query, a longer one through a binary COPY (or by queries). */
  read(id: string): Readable {
    return Readable.from(this.#chunks(id), { objectMode: false, highWaterMark: 1 });
  }

  async *#chunks(id: string): AsyncGenerator<Buffer> {
    try {
      // The data only when it is all there is: a longer body's first chunk would come back as hex text twice
      // its size (and a Buffer besides) at the start of every delivery, when it comes through the COPY as it is.
      const { rows } = await sql<{ data: Buffer | null; last: number }>`select case when b.last = 0 then m.data end as data, b.last from message_bodies m, (select max(seq) as last from message_bodies where message_id = ${id}) b where m.message_id = ${id} and m.seq = 0`.execute(this.#db);
      const first = rows[0];
      if (!first) throw new PosternError(ErrorCodes.QUEUE_SPOOL_MISSING, `the stored body of queue message ${id} is missing`);
      if (first.data) {
        databaseBodyBytes(first.data.length);
        if (first.data.length > 0) yield first.data;
        return;
      }
      const last = Number(first.last);
      if (this.#readSlots.tryTake()) {
        try {
          yield* this.#copyOut(id, last);
        } finally {
          this.#readSlots.give();
        }
      } else {
        yield* this.#queries(id, last);
      }
    } catch (error) {
      throw unreadable(id, error);
    }
  }

  /** Chunks 0…last through `COPY … TO STDOUT (FORMAT binary)` on a connection of its own. */
  async *#copyOut(id: string, last: number): AsyncGenerator<Buffer> {
    const client = await this.#connect();
    let clean = false;
    try {
      // In object mode, so that each piece the COPY stream pushes is read as it is: in byte mode the
      // iterator's read() joins whatever pieces have queued up into one more copy.
      const copy = client.query(copyTo(`copy (select data from message_bodies where message_id = ${client.escapeLiteral(id)} order by seq) to stdout (format binary)`, { objectMode: true, highWaterMark: 1 }));
      const decoder = new BinaryCopyDecoder();
      for await (const piece of copy as AsyncIterable<Buffer>) {
        for (const data of decoder.push(piece)) {
          databaseBodyBytes(data.length);
          yield data;
        }
      }
      decoder.end();
      clean = true;
      if (decoder.rows !== last + 1) throw new Error(`${decoder.rows} of its ${last + 1} chunks are stored`);
    } finally {
      // Stopped early or failed: the COPY may still be running, so the connection is closed, not reused.
      client.release(clean ? undefined : new Error('body read stopped'));
    }
  }

  /** Chunks 0…last, one query each. */
  async *#queries(id: string, last: number): AsyncGenerator<Buffer> {
    for (let seq = 0; seq <= last; seq++) {
      const row = await this.#db.selectFrom('message_bodies').select('data').where('message_id', '=', id).where('seq', '=', seq).executeTakeFirst();
      if (!row) throw new Error(`chunk ${seq} of its ${last + 1} chunks is missing`);
      databaseBodyBytes(row.data.length);
      if (row.data.length > 0) yield row.data;
    }
  }
}

/**
 * Streams one body into `message_bodies`. `commit(row)` inserts what is left and the queue row, and commits
 * both; `abort()` rolls back.
 */
export class DatabaseBodyWriter extends Writable {
  bytesWritten = 0;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #seq = 0;
  #client: PoolClient | undefined;
  #copy: Writable | undefined;
  #copyError: Error | undefined;
  #holdsSlot = false;
  #kept: Buffer[] | undefined;
  #settled = false;

  constructor(
    private readonly connect: () => Promise<PoolClient>,
    readonly id: string,
    private readonly batched: BatchedWrite,
    private readonly slots: Slots,
    private readonly keepBytes: number,
  ) {
    super({ highWaterMark: BODY_CHUNK_BYTES });
    this.#kept = keepBytes > 0 ? [] : undefined;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.bytesWritten += chunk.length;
    if (this.#kept) {
      if (this.bytesWritten > this.keepBytes) this.#kept = undefined;
      else this.#kept.push(chunk);
    }
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (this.#pendingBytes < BODY_CHUNK_BYTES) return callback();
    this.#flushFull().then(() => callback(), (error: Error) => callback(error));
  }

  /** Sends every full chunk collected so far into the COPY, then waits until the connection takes more. */
  async #flushFull(): Promise<void> {
    const copy = await this.#open();
    let ready = true;
    while (this.#pendingBytes >= BODY_CHUNK_BYTES) {
      ready = this.#sendRow(copy, BODY_CHUNK_BYTES);
      databaseBodyBytes(BODY_CHUNK_BYTES);
    }
    if (!ready) await this.#drained(copy);
  }

  /** Writes a row of the next `length` pending bytes (views of the pieces, not copies). */
  #sendRow(copy: Writable, length: number): boolean {
    let ready = copy.write(bodyRowStart(this.id, this.#seq++, length));
    let need = length;
    while (need > 0) {
      const piece = this.#pending[0]!;
      if (piece.length <= need) {
        this.#pending.shift();
        ready = copy.write(piece);
        need -= piece.length;
      } else {
        ready = copy.write(piece.subarray(0, need));
        this.#pending[0] = piece.subarray(need);
        need = 0;
      }
    }
    this.#pendingBytes -= length;
    return ready;
  }

  /** Resolves when the COPY takes more; rejects when it fails or closes first (an abort closes it). */
  async #drained(copy: Writable): Promise<void> {
    if (this.#copyError) throw this.#copyError;
    await new Promise<void>((resolve, reject) => {
      const settle = (error?: Error) => {
        copy.off('drain', onDrain).off('error', onError).off('close', onClose);
        if (error) reject(error);
        else resolve();
      };
      const onDrain = () => settle();
      const onError = (error: Error) => settle(error);
      const onClose = () => settle(this.#copyError ?? new Error('the body\'s COPY closed before it took the rest'));
      copy.on('drain', onDrain).on('error', onError).on('close', onClose);
    });
  }

  /** The COPY of this body, opened on a connection of its own inside a transaction. */
  async #open(): Promise<Writable> {
    if (this.#copyError) throw this.#copyError;
    if (this.#copy) return this.#copy;
    await this.slots.take();
    this.#holdsSlot = true;
    let client: PoolClient | undefined;
    try {
      client = await this.connect();
      if (this.#settled) throw new Error('the message was aborted');
      await client.query('start transaction isolation level read committed');
      if (this.#settled) throw new Error('the message was aborted');
    } catch (error) {
      client?.release(error instanceof Error ? error : new Error(String(error)));
      this.#release();
      throw error;
    }
    this.#client = client;
    const copy = client.query(copyFrom('copy message_bodies (message_id, seq, data) from stdin (format binary)'));
    copy.on('error', (error: Error) => {
      this.#copyError ??= error;
    });
    copy.write(copyHeader());
    this.#copy = copy;
    return copy;
  }

  /** Gives the connection back (or closes it, after a failure) and the slot. */
  #close(error?: Error): void {
    const client = this.#client;
    this.#client = undefined;
    this.#copy = undefined;
    client?.release(error);
    this.#release();
  }

  #release(): void {
    if (this.#holdsSlot) {
      this.#holdsSlot = false;
      this.slots.give();
    }
  }

  /** The whole body, when it was small enough to keep. */
  kept(): Buffer | undefined {
    return this.#kept ? Buffer.concat(this.#kept, this.bytesWritten) : undefined;
  }

  /** Inserts the rest of the body and runs `row` in the same transaction, then commits. */
  async commit(row: RowWrite): Promise<void> {
    this.#settled = true;
    const copy = this.#copy;
    const client = this.#client;
    if (!copy || !client) {
      // One chunk (or an empty body): inserted in the queue's batched transaction, with the row.
      const last = Buffer.concat(this.#pending, this.#pendingBytes);
      this.#pending = [];
      this.#pendingBytes = 0;
      await this.batched(async (batch) => {
        await batch.insertInto('message_bodies').values({ message_id: this.id, seq: 0, data: last }).execute();
        await row(batch);
      });
      return;
    }
    try {
      if (this.#copyError) throw this.#copyError;
      if (this.#pendingBytes > 0) this.#sendRow(copy, this.#pendingBytes);
      copy.end(copyTrailer());
      await finished(copy);
      if (this.#copyError) throw this.#copyError;
      await row(kyselyOn(client));
      // PostgreSQL completes COMMIT with a ROLLBACK tag when an earlier statement left the transaction aborted.
      if ((await client.query('commit')).command === 'ROLLBACK') throw new Error('the transaction was rolled back');
      this.#close();
    } catch (error) {
      this.#close(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
  }

  async abort(): Promise<void> {
    this.#pending = [];
    this.#pendingBytes = 0;
    if (!this.destroyed) this.destroy();
    if (this.#settled && !this.#client) return;
    this.#settled = true;
    // Closing the connection ends the COPY and rolls the transaction back on the server.
    this.#close(new Error('the message was aborted'));
  }
}
