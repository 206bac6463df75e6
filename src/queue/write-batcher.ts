/**
 * Group commit for the queue's writes, with the WAL fsync off the event loop.
 *
 * With SQLite in WAL mode and synchronous=FULL every commit is an fsync (docs/decisions/002), run by
 * better-sqlite3 on the event loop's thread: at a few hundred messages a second that blocked the relay for a
 * quarter of its time. SQLite defines FULL in WAL mode as NORMAL plus one sync of the WAL file after each
 * commit. So the queue commits with synchronous=NORMAL and performs that sync itself, asynchronously on
 * libuv's threadpool (`fsync` of the `-wal` file), and resolves a durable write only after it completed.
 * One sync covers every commit before it (group sync), and commits are at least `windowMs` apart while
 * writes keep coming, each taking everything requested meanwhile. The first write after a quiet spell is
 * committed at once.
 *
 * Two kinds of write (docs/decisions/004): `durable` ones (a message accepted, a bounce created, a deletion,
 * a delivered outcome) resolve after the WAL sync. Bookkeeping (leases, deferrals, holds, log lines) resolves
 * at commit: losing it (power loss only; a crashed process loses nothing, the OS has the data) means at worst
 * a repeated attempt. A sync still follows within `relaxedSyncMs`, and `whenDurable()` tells when it is done.
 * `urgent` writes (a delivered outcome, docs/decisions/020) skip the window and start their batch at once.
 *
 * PostgreSQL: commits are asynchronous network I/O there (and PostgreSQL groups them itself), so every
 * batch is simply a durable transaction.
 *
 * When a batch fails, each write is retried in its own transaction, so one bad write cannot fail the others.
 */
import { sql, type Kysely } from 'kysely';
import { open, type FileHandle } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { DialectName } from '../store/migrations.js';
import type { Database } from '../store/schema.js';

export type WriteOp = (trx: Kysely<Database>) => Promise<void>;

interface Pending {
  op: WriteOp;
  durable: boolean;
  urgent: boolean;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export interface WriteBatcherOptions {
  dialect: DialectName;
  /** SQLite: the database file (its `-wal` file is synced). */
  databaseFile?: string | undefined;
  windowMs?: number;
  relaxedSyncMs?: number;
}

export class WriteBatcher {
  #pending: Pending[] = [];
  #scheduled = false;
  /** The window timer of a scheduled batch (undefined when it starts at the next turn anyway). */
  #windowTimer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  #lastFlushAt = Number.NEGATIVE_INFINITY;
  #syncTimer: NodeJS.Timeout | undefined;
  #wal: Promise<FileHandle> | undefined;
  /** A WAL sync not started yet: commits made before it starts are covered by it. */
  #syncQueued: Promise<void> | undefined;
  #syncChain: Promise<void> = Promise.resolve();
  /** Commits since the last WAL sync started (nothing to sync when false). */
  #unsynced = false;
  readonly #dialect: DialectName;
  readonly #databaseFile: string | undefined;
  readonly #windowMs: number;
  readonly #relaxedSyncMs: number;

  constructor(
    private readonly db: Kysely<Database>,
    options: WriteBatcherOptions,
  ) {
    this.#dialect = options.dialect;
    this.#databaseFile = options.databaseFile;
    this.#windowMs = options.windowMs ?? 2;
    this.#relaxedSyncMs = options.relaxedSyncMs ?? 100;
  }

  get #asyncSync(): boolean {
    return this.#dialect === 'sqlite' && this.#databaseFile !== undefined;
  }

  /**
   * Queues a write. `durable` (the default) resolves after the WAL sync that covers it. `urgent` writes do
   * not wait for the window: the batch they join starts at the next turn of the event loop, taking
   * everything pending with it. A delivered outcome is urgent (docs/decisions/020): after the upstream's
   * `250`, recording it is the first thing that happens, and every millisecond it waits is a millisecond in
   * which a crash makes a duplicate.
   */
  run(op: WriteOp, options: { durable?: boolean; urgent?: boolean } = {}): Promise<void> {
    return new Promise((resolve, reject) => {
      const urgent = options.urgent ?? false;
      this.#pending.push({ op, durable: options.durable ?? true, urgent, resolve, reject });
      if (this.#scheduled) {
        if (urgent && this.#windowTimer) {
          clearTimeout(this.#windowTimer);
          this.#windowTimer = undefined;
          setImmediate(() => this.#start());
        }
        return;
      }
      this.#scheduled = true;
      const wait = urgent ? 0 : this.#lastFlushAt + this.#windowMs - performance.now();
      if (wait <= 0) setImmediate(() => this.#start());
      else this.#windowTimer = setTimeout(() => this.#start(), wait);
    });
  }

  #start(): void {
    this.#windowTimer = undefined;
    this.#flushing = this.#flushing.then(() => this.#flush());
  }

  /** Resolves once everything committed before the call is on stable storage. */
  whenDurable(): Promise<void> {
    if (!this.#asyncSync || !this.#unsynced) return this.#syncQueued ?? this.#syncChain;
    return this.#syncWal();
  }

  /** Resolves when everything requested so far is committed (or failed), durably. */
  async drain(): Promise<void> {
    while (this.#pending.length > 0 || this.#scheduled) {
      await new Promise((resolve) => setImmediate(resolve));
      await this.#flushing;
    }
    await this.#flushing;
    if (this.#syncTimer) clearTimeout(this.#syncTimer);
    this.#syncTimer = undefined;
    await this.whenDurable().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.drain();
    const wal = this.#wal;
    this.#wal = undefined;
    if (wal) await (await wal).close().catch(() => undefined);
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    this.#lastFlushAt = performance.now();
    const batch = this.#pending;
    this.#pending = [];
    if (batch.length === 0) return;
    try {
      await this.#commit(batch);
      this.#settle(batch);
    } catch (error) {
      if (batch.length === 1) {
        batch[0]!.reject(error);
        return;
      }
      for (const item of batch) {
        try {
          await this.#commit([item]);
          this.#settle([item]);
        } catch (single) {
          item.reject(single);
        }
      }
    }
  }

  /** Resolves relaxed writes now and durable ones after the WAL sync that covers them. */
  #settle(batch: Pending[]): void {
    const durable = batch.filter((item) => item.durable);
    for (const item of batch) if (!item.durable) item.resolve();
    if (!this.#asyncSync) {
      for (const item of durable) item.resolve();
      return;
    }
    if (durable.length > 0) {
      this.#syncWal().then(
        () => durable.forEach((item) => item.resolve()),
        (error: unknown) => durable.forEach((item) => item.reject(error)),
      );
    } else {
      this.#syncTimer ??= setTimeout(() => {
        this.#syncTimer = undefined;
        void this.#syncWal().catch(() => undefined);
      }, this.#relaxedSyncMs);
      this.#syncTimer.unref();
    }
  }

  async #commit(batch: Pending[]): Promise<void> {
    if (!this.#asyncSync) {
      await this.db.transaction().execute(async (trx) => {
        for (const item of batch) await item.op(trx);
      });
      return;
    }
    // One connection (SQLite): nothing else runs between these statements. Other parts of Postern keep
    // committing with synchronous=FULL.
    await this.db.connection().execute(async (connection) => {
      await sql`PRAGMA synchronous = NORMAL`.execute(connection);
      try {
        await connection.transaction().execute(async (trx) => {
          for (const item of batch) await item.op(trx);
        });
      } finally {
        await sql`PRAGMA synchronous = FULL`.execute(connection);
      }
    });
    this.#unsynced = true;
  }

  /** fsync of the WAL file on the threadpool; callers arriving before it starts share it. */
  #syncWal(): Promise<void> {
    if (this.#syncQueued) return this.#syncQueued;
    const queued = this.#syncChain.then(async () => {
      this.#syncQueued = undefined;
      this.#unsynced = false;
      if (this.#syncTimer) clearTimeout(this.#syncTimer);
      this.#syncTimer = undefined;
      this.#wal ??= open(`${this.#databaseFile}-wal`, 'r+');
      await (await this.#wal).sync();
    });
    this.#syncQueued = queued;
    this.#syncChain = queued.catch(() => undefined);
    return queued;
  }
}
