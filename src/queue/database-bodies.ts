/**
 * Message bodies in PostgreSQL, so that every instance on one database can deliver every message
 * (docs/decisions/028-shared-bodies-and-instances.md).
 *
 * Purpose: with PostgreSQL the body of a message is rows of `message_bodies` (message id, chunk number,
 *   at most BODY_CHUNK_BYTES of bytea each), not a file on the disk of the instance that accepted it.
 * Intake: the relay streams DATA into a DatabaseBodyWriter. Chunks are collected up to BODY_CHUNK_BYTES;
 *   a body that fits in one chunk (most messages) is inserted together with its queue row in the queue's
 *   batched transaction. A longer body opens a transaction of its own at its first full chunk, inserts each
 *   chunk as it fills (the relay waits for the insert: back-pressure on the device's socket, never more
 *   than about two chunks of one message in memory), and the queue row is inserted in that same transaction
 *   at the end, before it commits. Either way body and row commit together, before the device gets `250`.
 * Output: a Readable that fetches one chunk at a time, in order.
 * Removal: a body's rows are deleted in the transaction that makes its message final (sent, returned,
 *   deleted); rows without a waiting message (none are left by a crash: an uncommitted body rolls back
 *   with its transaction) are removed at start all the same.
 * Failure modes: a failed insert fails the writer; the relay answers 451 and the device retries. A body
 *   without rows fails the read stream with POSTERN_QUEUE_SPOOL_MISSING.
 * Memory: every chunk in or out is reported to databaseBodyBytes (body-memory.ts), which asks for a full
 *   collection every few MB: a chunk lives across a round trip, so scavenges promote it instead of freeing it.
 * Known limits: a long body holds one pooled connection while it arrives; at most `maxOpen` do at once
 *   (the others wait, and their devices with them), so the rest of Postern always has connections left.
 */
import { Readable, Writable } from 'node:stream';
import type { ControlledTransaction, Kysely } from 'kysely';
import { ErrorCodes, PosternError } from '../errors.js';
import type { Database } from '../store/schema.js';
import { databaseBodyBytes } from './body-memory.js';

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
  give(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

export class DatabaseBodies {
  readonly #slots: Slots;

  constructor(
    private readonly db: Kysely<Database>,
    options: { maxOpen?: number } = {},
  ) {
    this.#slots = new Slots(options.maxOpen ?? 4);
  }

  /** A writer for the body of message `id`. Keeps a copy of up to `keepBytes` (see SpoolWriter.kept). */
  create(id: string, batched: BatchedWrite, keepBytes = 0): DatabaseBodyWriter {
    return new DatabaseBodyWriter(this.db, id, batched, this.#slots, keepBytes);
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
    await this.removeIn(this.db, id);
  }

  /** Whether the body of `id` has rows. */
  async has(id: string): Promise<boolean> {
    return (await this.db.selectFrom('message_bodies').select('seq').where('message_id', '=', id).limit(1).executeTakeFirst()) !== undefined;
  }

  /** Removes bodies whose message is not among the waiting ones (`isWaiting`). Returns how many. */
  async removeOrphans(waiting: (ids: string[]) => Promise<Set<string>>): Promise<number> {
    const ids = (await this.db.selectFrom('message_bodies').select('message_id').where('seq', '=', 0).execute()).map((r) => r.message_id);
    let removed = 0;
    for (let i = 0; i < ids.length; i += 500) {
      const slice = ids.slice(i, i + 500);
      const known = await waiting(slice);
      const gone = slice.filter((id) => !known.has(id));
      if (gone.length > 0) {
        await this.db.deleteFrom('message_bodies').where('message_id', 'in', gone).execute();
        removed += gone.length;
      }
    }
    return removed;
  }

  /** The body's bytes, one chunk per read from the database. */
  read(id: string): Readable {
    let seq = 0;
    const db = this.db;
    return new Readable({
      highWaterMark: 1,
      objectMode: false,
      read() {
        db.selectFrom('message_bodies')
          .select('data')
          .where('message_id', '=', id)
          .where('seq', '=', seq)
          .executeTakeFirst()
          .then(
            (row) => {
              if (!row) {
                if (seq === 0) {
                  this.destroy(new PosternError(ErrorCodes.QUEUE_SPOOL_MISSING, `the stored body of queue message ${id} is missing`));
                } else this.push(null);
                return;
              }
              seq++;
              databaseBodyBytes(row.data.length);
              if (row.data.length === 0) this.push(null);
              else this.push(row.data);
            },
            (error: unknown) =>
              this.destroy(new PosternError(ErrorCodes.QUEUE_SPOOL_MISSING, `the stored body of queue message ${id} cannot be read: ${error instanceof Error ? error.message : String(error)}`, { cause: error })),
          );
      },
    });
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
  #trx: ControlledTransaction<Database> | undefined;
  #holdsSlot = false;
  #kept: Buffer[] | undefined;
  #settled = false;

  constructor(
    private readonly db: Kysely<Database>,
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

  /** Inserts every full chunk collected so far (in the writer's own transaction). */
  async #flushFull(): Promise<void> {
    while (this.#pendingBytes >= BODY_CHUNK_BYTES) {
      const all = Buffer.concat(this.#pending, this.#pendingBytes);
      const chunk = all.subarray(0, BODY_CHUNK_BYTES);
      const rest = all.subarray(BODY_CHUNK_BYTES);
      this.#pending = rest.length > 0 ? [Buffer.from(rest)] : [];
      this.#pendingBytes = rest.length;
      const trx = await this.#transaction();
      await trx.insertInto('message_bodies').values({ message_id: this.id, seq: this.#seq++, data: chunk }).execute();
      databaseBodyBytes(chunk.length);
    }
  }

  async #transaction(): Promise<ControlledTransaction<Database>> {
    if (this.#trx) return this.#trx;
    await this.slots.take();
    this.#holdsSlot = true;
    const trx = await this.db.startTransaction().setIsolationLevel('read committed').execute();
    if (this.#settled) {
      // Aborted while the transaction was being opened.
      await trx.rollback().execute().catch(() => undefined);
      this.#release();
      throw new Error('the message was aborted');
    }
    this.#trx = trx;
    return trx;
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
    const last = Buffer.concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    const trx = this.#trx;
    if (!trx) {
      // One chunk (or an empty body): inserted in the queue's batched transaction, with the row.
      await this.batched(async (batch) => {
        await batch.insertInto('message_bodies').values({ message_id: this.id, seq: 0, data: last }).execute();
        await row(batch);
      });
      return;
    }
    try {
      if (last.length > 0) await trx.insertInto('message_bodies').values({ message_id: this.id, seq: this.#seq++, data: last }).execute();
      await row(trx);
      await trx.commit().execute();
      this.#trx = undefined;
    } catch (error) {
      await trx.rollback().execute().catch(() => undefined);
      this.#trx = undefined;
      throw error;
    } finally {
      this.#release();
    }
  }

  async abort(): Promise<void> {
    this.#pending = [];
    if (!this.destroyed) this.destroy();
    if (this.#settled && !this.#trx) return;
    this.#settled = true;
    const trx = this.#trx;
    this.#trx = undefined;
    if (trx) await trx.rollback().execute().catch(() => undefined);
    this.#release();
  }
}
