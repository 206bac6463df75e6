/**
 * Per-account pacing: at most `limit` messages in any sliding 60-second window, the way Exchange Online
 * counts its "30 messages per minute per mailbox" (docs/protocol.md §3.4). A sliding window, not a token
 * bucket, because a bucket that starts full allows twice the rate across a minute boundary, and Exchange
 * answers that with 4.3.2 throttling replies.
 *
 * Purpose: one window per pacing key (the sending account) for every Postern instance on the database, so
 *   N instances sending through one mailbox together keep to the limit, not N times it.
 * Inputs: the queue manager's requests to start deliveries. Outputs: granted starts (rows in
 *   `pacing_starts`), and how long to wait when fewer were granted than asked for.
 * How: a take is one short transaction that counts the key's starts inside the window and inserts only as
 *   many as the limit leaves. On PostgreSQL a transaction-level advisory lock on the key makes that
 *   read-decide-insert atomic across instances (docs/decisions/008-shared-pacing.md); on SQLite there is one
 *   writer and Kysely runs one transaction at a time on its single connection. Rows that left the window are
 *   deleted by the next take of their key, so a key never keeps more than about `limit` rows.
 * Cost: with no limit (0) nothing is stored and the database is not asked. With a limit, one transaction per
 *   batch of delivery starts, which at tens a minute is nothing.
 * Failure modes: a take that fails (database unreachable) rejects and the caller starts nothing. A give-back
 *   that fails leaves the slot counted until it leaves the window: pacing errs towards sending later.
 * Known limits: the window is judged by each instance's clock, so instances must keep their clocks in step
 *   (NTP); a clock that is s seconds ahead lets that instance start at most s seconds early.
 */
import { inTransaction, sql, type Store } from '../store/store.js';

export const WINDOW_MS = 60_000;

/**
 * Advisory locks taken with two int4 keys live apart from single-bigint ones (Kysely's migration lock among
 * them); this first key marks Postern's pacing locks ('Pace').
 */
const ADVISORY_LOCK_CLASS = 0x50616365;

/** One delivery start taken from a key's window; `id` names its stored row (none when there is no limit). */
export interface PacingSlot {
  readonly key: string;
  readonly id?: number | undefined;
}

export interface PacingGrant {
  /** The starts granted, at most as many as asked for. */
  slots: PacingSlot[];
  /** When fewer were granted than asked for: milliseconds until one more may start; 0 otherwise. */
  waitMs: number;
}

/** The queue manager's view of pacing (wired in app.ts). */
export interface Pacer {
  /** Takes up to `want` starts for `key` under `limit` per sliding minute (0 = unlimited: all granted). */
  take(key: string, limit: number, want: number): Promise<PacingGrant>;
  /** Gives back starts that were taken but not used (the message was held before any connection). */
  giveBack(slots: readonly PacingSlot[]): Promise<void>;
}

/**
 * The window's arithmetic, apart from storage: how many of `want` starts may begin at `now` given a key's
 * earlier `starts`. A start at `t` counts while `t > now - WINDOW_MS`.
 */
export function decideStarts(starts: readonly number[], now: number, limit: number, want: number): { grant: number; waitMs: number } {
  if (limit <= 0) return { grant: want, waitMs: 0 };
  const inside = starts.filter((t) => t > now - WINDOW_MS).sort((a, b) => a - b);
  const grant = Math.max(0, Math.min(want, limit - inside.length));
  if (grant === want) return { grant, waitMs: 0 };
  // The window is full after this grant: one more may start once the limit-th newest start has left it.
  const after = [...inside];
  for (let i = 0; i < grant; i++) after.push(now);
  return { grant, waitMs: Math.max(1, after[after.length - limit]! + WINDOW_MS - now + 1) };
}

/**
 * The window kept in the store: shared by every instance on one database.
 *
 * Takes run as their own small transactions, not through the queue's WriteBatcher: a take reads, decides and
 * answers, and on PostgreSQL it holds the key's advisory lock until its commit, which in a batch would last
 * as long as every unrelated queue write batched with it (and the batcher replays writes one by one after a
 * failed batch, which a read-decide-insert must not see twice). The batcher exists to group hundreds of
 * commits a second and move SQLite's WAL sync off the event loop; at tens of takes a minute, and none
 * without a limit, a plain synchronous=FULL commit costs nothing worth batching.
 */
export class StorePacer implements Pacer {
  constructor(
    private readonly store: Store,
    private readonly now: () => number = Date.now,
  ) {}

  async take(key: string, limit: number, want: number): Promise<PacingGrant> {
    if (want <= 0) return { slots: [], waitMs: 0 };
    if (limit <= 0) return { slots: Array.from({ length: want }, () => ({ key })), waitMs: 0 };
    // Read committed on PostgreSQL (inTransaction): every statement after the lock sees what the previous
    // holder of the lock committed. A snapshot taken before the lock (repeatable read) would not.
    return inTransaction(this.store, async (trx) => {
      if (this.store.dialect === 'postgres') {
        await sql`select pg_advisory_xact_lock(${ADVISORY_LOCK_CLASS}::int4, hashtext(${key}))`.execute(trx);
      }
      const now = this.now();
      // A write first: on SQLite the transaction holds the write lock from here on, so it never has to
      // upgrade from reading (which another connection could refuse).
      await trx.deleteFrom('pacing_starts').where('pacing_key', '=', key).where('started_at', '<=', now - WINDOW_MS).execute();
      const rows = await trx.selectFrom('pacing_starts').select('started_at').where('pacing_key', '=', key).execute();
      const { grant, waitMs } = decideStarts(rows.map((row) => Number(row.started_at)), now, limit, want);
      if (grant === 0) return { slots: [], waitMs };
      const taken = await trx
        .insertInto('pacing_starts')
        .values(Array.from({ length: grant }, () => ({ pacing_key: key, started_at: now })))
        .returning('id')
        .execute();
      return { slots: taken.map((row) => ({ key, id: Number(row.id) })), waitMs };
    });
  }

  async giveBack(slots: readonly PacingSlot[]): Promise<void> {
    const ids = slots.flatMap((slot) => (slot.id === undefined ? [] : [slot.id]));
    if (ids.length === 0) return;
    await this.store.db.deleteFrom('pacing_starts').where('id', 'in', ids).execute();
  }
}
