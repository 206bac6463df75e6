/**
 * The queue: one row per message (state, envelope, retry bookkeeping) plus its body in the spool.
 *
 * Purpose: the durable hand-over point between the relay (which only ever says `250` after `commit()`
 *   resolved) and the queue manager (which leases due messages, delivers them and records the outcome).
 * States (Postfix's names, docs/decisions/005-queue-states-leases-holds-and-bounces.md): `incoming`
 *   (committed, not tried yet) → `active` (leased by a delivery) → `deferred` (will retry) / `held`
 *   (waiting for the sending account's Token Status to become Active) → `sent` / `bounced` (final; the row
 *   stays for the Log page, the body is removed).
 * Inputs: bodies and envelopes from the relay; outcomes from the queue manager; Retry Now / Delete from
 *   the Remote UI. Outputs: rows for the queue manager and the Queue and Log pages.
 * Failure modes: a failed commit rejects with POSTERN_QUEUE_COMMIT_FAILED and the relay answers 451 (the
 *   device keeps the message). Every
 *   transition of an active message checks the lease, so a delivery whose lease was taken over cannot
 *   overwrite the newer outcome.
 * Bodies: in the spool of the node that accepted the message (SQLite; rows carry `node_id` and only that
 *   node delivers them), or in the database (PostgreSQL, queue/database-bodies.ts; `body_in_database` = 1),
 *   where every instance on the database delivers every message: a dead instance's leased messages are
 *   taken over by another once their lease has run out (docs/decisions/028).
 */
import type { ExpressionBuilder, Kysely, Selectable } from 'kysely';
import { Readable } from 'node:stream';
import type { QueueTuning } from '../config.js';
import { ErrorCodes, PosternError } from '../errors.js';
import type { Database, DeliveryEvent, QueueMessagesTable, QueueState } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { DatabaseBodies, type DatabaseBodyWriter } from './database-bodies.js';
import { Spool, type SpoolWriter } from './spool.js';
import { WriteBatcher } from './write-batcher.js';

export type QueueRow = Selectable<QueueMessagesTable>;

export interface QueuedMessage {
  id: string;
  state: QueueState;
  reversePath: string;
  recipients: string[];
  size: number;
  body8bit: boolean;
  smtputf8: boolean;
  headerFrom: string | null;
  subject: string | null;
  messageId: string | null;
  client: string;
  isBounce: boolean;
  attempts: number;
  receivedAt: number;
  nextAttemptAt: number;
  expiresAt: number;
  leaseOwner: string | null;
  leaseUntil: number | null;
  lastCode: number | null;
  lastReply: string | null;
  lastAdvice: string | null;
  doneAt: number | null;
  /** The body is in the database (every instance reads it), not in the spool of the node that accepted it. */
  bodyInDatabase: boolean;
  /** The sending account it was routed to ('' from an older instance: the Default). */
  accountId: string;
  /** The body, while a small message is on its way from the relay to its first delivery attempt. */
  cachedBody?: Buffer | undefined;
}

/** Bodies up to this size are kept in memory between acceptance and the first attempt… */
export const KEEP_BODY_BYTES = 64 * 1024;
/** …as long as all kept bodies together stay under this. */
export const KEEP_BODIES_TOTAL = 8 * 1024 * 1024;

export interface MessageEnvelope {
  /** MAIL FROM of the device ('' for the null sender). */
  reversePath: string;
  recipients: string[];
  body8bit: boolean;
  smtputf8: boolean;
  headerFrom: string | null;
  subject: string | null;
  messageId: string | null;
  client: string;
  /**
   * The sending account the message was routed to (smtp-in/routing.ts); it is sent through no other.
   * Absent or '': the Default account at delivery time.
   */
  accountId?: string | undefined;
  /** Why that account, in words for the Log page ("Sender Routing rule @example.com", "device account"). */
  routedBy?: string | undefined;
}

/** A message being received: stream the body into `body`, then `commit()` (durable) or `abort()`. */
export interface IncomingMessage {
  readonly id: string;
  readonly body: SpoolWriter | DatabaseBodyWriter;
  /** Durable once resolved; resolves with the queued message (state `incoming`). */
  commit(envelope: MessageEnvelope): Promise<QueuedMessage>;
  abort(): Promise<void>;
}

/** One recipient's reply from the upstream server. */
export interface RecipientReply {
  recipient: string;
  code: number | null;
  reply: string;
  advice?: string | undefined;
}

/** A bounce to create together with the final state of the original (exactly one DSN per failure). */
export interface BounceMessage {
  to: string;
  body: Buffer;
}

export interface LogEntry {
  id: number;
  queueId: string;
  at: number;
  event: DeliveryEvent;
  recipients: string | null;
  code: number | null;
  reply: string | null;
  advice: string | null;
  /** From the queue row, when it still exists. */
  subject: string | null;
  headerFrom: string | null;
  reversePath: string | null;
  client: string | null;
}

export const ACTIVE_STATES: QueueState[] = ['incoming', 'active', 'deferred', 'held'];

export function toMessage(row: QueueRow): QueuedMessage {
  return {
    id: row.id,
    state: row.state,
    reversePath: row.reverse_path,
    recipients: JSON.parse(row.recipients) as string[],
    size: Number(row.size),
    body8bit: row.body_8bit === 1,
    smtputf8: row.smtputf8 === 1,
    headerFrom: row.header_from,
    subject: row.subject,
    messageId: row.message_id_header,
    client: row.client,
    isBounce: row.is_bounce === 1,
    attempts: row.attempts,
    receivedAt: Number(row.received_at),
    nextAttemptAt: Number(row.next_attempt_at),
    expiresAt: Number(row.expires_at),
    leaseOwner: row.lease_owner,
    leaseUntil: row.lease_until === null ? null : Number(row.lease_until),
    lastCode: row.last_code,
    lastReply: row.last_reply,
    lastAdvice: row.last_advice,
    doneAt: row.done_at === null ? null : Number(row.done_at),
    bodyInDatabase: row.body_in_database === 1,
    accountId: row.account_id,
  };
}

/** Reply text as stored and shown: one line, bounded. */
function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function oneLine(text: string | null | undefined, max = 1000): string | null {
  if (text === null || text === undefined) return null;
  return text.replace(/\s*[\r\n]+\s*/g, ' ').slice(0, max);
}

export interface MessageQueueOptions {
  tuning: QueueTuning;
  now?: () => number;
  /**
   * Where bodies go: `database` (message_bodies, shared by every instance; PostgreSQL only) or `spool`.
   * Default: `database` with PostgreSQL, `spool` with SQLite.
   */
  bodies?: 'database' | 'spool';
}

export class MessageQueue {
  readonly #store: Store;
  readonly #batcher: WriteBatcher;
  readonly #now: () => number;
  readonly tuning: QueueTuning;
  /** Bodies in the database (PostgreSQL): undefined when they are spool files. */
  readonly databaseBodies: DatabaseBodies | undefined;
  #cachedBytes = 0;

  constructor(
    store: Store,
    readonly spool: Spool,
    options: MessageQueueOptions,
  ) {
    this.#store = store;
    this.#batcher = new WriteBatcher(store.db, { dialect: store.dialect, databaseFile: store.databaseFile });
    this.#now = options.now ?? Date.now;
    this.tuning = options.tuning;
    const bodies = options.bodies ?? (store.dialect === 'postgres' ? 'database' : 'spool');
    if (bodies === 'database' && store.dialect !== 'postgres') throw new Error('invariant: bodies in the database need PostgreSQL');
    this.databaseBodies = bodies === 'database' ? new DatabaseBodies(store) : undefined;
  }

  /** Whether every instance on this database can deliver every message (bodies in the database). */
  get shared(): boolean {
    return this.databaseBodies !== undefined;
  }

  get nodeId(): string {
    return this.spool.nodeId;
  }

  // ---- intake ---------------------------------------------------------------------------------------

  async receive(): Promise<IncomingMessage> {
    if (this.databaseBodies) return this.#receiveIntoDatabase(this.databaseBodies);
    const id = Spool.newId();
    let body: SpoolWriter;
    try {
      body = await this.spool.create(id, this.#cachedBytes + KEEP_BODY_BYTES <= KEEP_BODIES_TOTAL ? KEEP_BODY_BYTES : 0);
    } catch (error) {
      throw new PosternError(ErrorCodes.QUEUE_COMMIT_FAILED, `no spool file could be created for a new message: ${reasonOf(error)}`, { cause: error });
    }
    let settled = false;
    return {
      id,
      body,
      commit: async (envelope) => {
        // A programmer error (the relay commits once), not a storage failure.
        if (settled) throw new Error('invariant: message already committed or aborted');
        settled = true;
        try {
          await body.commit();
        } catch (error) {
          throw new PosternError(ErrorCodes.QUEUE_COMMIT_FAILED, `the spool file of queue message ${id} could not be made durable: ${reasonOf(error)}`, { cause: error });
        }
        const now = this.#now();
        const row = this.#newRow(id, envelope, body.bytesWritten, now, false);
        try {
          await this.#batcher.run(async (trx) => {
            await this.#insertAccepted(trx, row, envelope);
          });
        } catch (error) {
          await this.spool.remove(id).catch(() => undefined);
          throw new PosternError(ErrorCodes.QUEUE_COMMIT_FAILED, `queue message ${id} could not be recorded in the database: ${reasonOf(error)}`, { cause: error });
        }
        return this.#accepted(row, body.kept());
      },
      abort: async () => {
        if (settled) return;
        settled = true;
        await body.abort();
      },
    };
  }

  /** receive() with the body streamed into the database, committed in one transaction with its row. */
  #receiveIntoDatabase(bodies: DatabaseBodies): IncomingMessage {
    const id = Spool.newId();
    const body = bodies.create(id, (op) => this.#batcher.run(op), this.#cachedBytes + KEEP_BODY_BYTES <= KEEP_BODIES_TOTAL ? KEEP_BODY_BYTES : 0);
    let settled = false;
    return {
      id,
      body,
      commit: async (envelope) => {
        if (settled) throw new Error('invariant: message already committed or aborted');
        settled = true;
        const now = this.#now();
        const row = this.#newRow(id, envelope, body.bytesWritten, now, false);
        try {
          await body.commit(async (trx) => {
            await this.#insertAccepted(trx, row, envelope);
          });
        } catch (error) {
          throw new PosternError(ErrorCodes.QUEUE_COMMIT_FAILED, `queue message ${id} could not be recorded in the database: ${reasonOf(error)}`, { cause: error });
        }
        return this.#accepted(row, body.kept());
      },
      abort: async () => {
        if (settled) return;
        settled = true;
        await body.abort();
      },
    };
  }

  /** The new message's row and its "accepted" log line, in the transaction that makes it durable. */
  async #insertAccepted(trx: Kysely<Database>, row: QueueRow, envelope: MessageEnvelope): Promise<void> {
    await trx.insertInto('queue_messages').values(row).execute();
    await trx
      .insertInto('delivery_log')
      .values({ queue_id: row.id, at: row.received_at, event: 'accepted', recipients: envelope.recipients.join(', '), code: null, reply: `received from ${envelope.client}, ${row.size} bytes${envelope.accountId ? `; sending account ${envelope.accountId}${envelope.routedBy ? ` (${envelope.routedBy})` : ''}` : ''}`, advice: null })
      .execute();
  }

  /** The committed message, with its body kept in memory for the first delivery while the cache has room. */
  #accepted(row: QueueRow, kept: Buffer | undefined): QueuedMessage {
    const message = toMessage(row);
    if (kept && this.#cachedBytes + kept.length <= KEEP_BODIES_TOTAL) {
      message.cachedBody = kept;
      this.#cachedBytes += kept.length;
    }
    return message;
  }

  #newRow(id: string, envelope: MessageEnvelope, size: number, now: number, isBounce: boolean): QueueRow {
    return {
      id,
      node_id: this.nodeId,
      body_in_database: this.databaseBodies ? 1 : 0,
      account_id: envelope.accountId ?? '',
      state: 'incoming',
      reverse_path: envelope.reversePath,
      recipients: JSON.stringify(envelope.recipients),
      size,
      body_8bit: envelope.body8bit ? 1 : 0,
      smtputf8: envelope.smtputf8 ? 1 : 0,
      header_from: oneLine(envelope.headerFrom, 500),
      subject: oneLine(envelope.subject, 500),
      message_id_header: oneLine(envelope.messageId, 500),
      client: envelope.client,
      is_bounce: isBounce ? 1 : 0,
      attempts: 0,
      received_at: now,
      next_attempt_at: now,
      expires_at: now + this.tuning.lifetimeMs,
      lease_owner: null,
      lease_until: null,
      last_code: null,
      last_reply: null,
      last_advice: null,
      done_at: null,
    };
  }

  // ---- reading --------------------------------------------------------------------------------------

  async get(id: string): Promise<QueuedMessage | undefined> {
    const row = await this.#store.db.selectFrom('queue_messages').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toMessage(row) : undefined;
  }

  /** Messages in the given states, newest first (the Queue page). */
  async list(states: QueueState[] = ACTIVE_STATES, limit = 500): Promise<QueuedMessage[]> {
    const rows = await this.#store.db
      .selectFrom('queue_messages')
      .selectAll()
      .where('state', 'in', states)
      .orderBy('received_at', 'desc')
      .limit(limit)
      .execute();
    return rows.map(toMessage);
  }

  async counts(): Promise<Record<QueueState, number>> {
    const rows = await this.#store.db
      .selectFrom('queue_messages')
      .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy('state')
      .execute();
    const counts: Record<QueueState, number> = { incoming: 0, active: 0, deferred: 0, held: 0, sent: 0, bounced: 0 };
    for (const row of rows) counts[row.state] = Number(row.n);
    return counts;
  }

  /** When the oldest message not yet delivered or returned was received (undefined when none waits). */
  async oldestWaitingSince(): Promise<number | undefined> {
    const row = await this.#store.db
      .selectFrom('queue_messages')
      .select((eb) => eb.fn.min<number>('received_at').as('oldest'))
      .where('state', 'in', ['incoming', 'active', 'deferred', 'held'])
      .executeTakeFirst();
    return row?.oldest === null || row?.oldest === undefined ? undefined : Number(row.oldest);
  }

  /** The body as a stream: from memory when it was kept, from the spool file otherwise. */
  body(message: QueuedMessage): Readable {
    return message.cachedBody ? Readable.from([message.cachedBody]) : this.#read(message.id, message.bodyInDatabase);
  }

  /** A stored body: from the database or from the spool (rows from before the database held bodies). */
  #read(id: string, inDatabase: boolean): Readable {
    return inDatabase && this.databaseBodies ? this.databaseBodies.read(id) : this.spool.read(id);
  }

  /** Drops a kept body (after the first attempt, or when the message is handed back to the database). */
  forgetBody(message: QueuedMessage): void {
    if (!message.cachedBody) return;
    this.#cachedBytes -= message.cachedBody.length;
    message.cachedBody = undefined;
  }

  /** The header block of a spooled body (for a DSN), at most `limit` bytes. */
  async readHeaders(id: string, limit = 64 * 1024, inDatabase = this.databaseBodies !== undefined): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let length = 0;
    for await (const chunk of this.#read(id, inDatabase)) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      const joined = Buffer.concat(chunks, length);
      const end = joined.indexOf('\r\n\r\n');
      if (end >= 0) return joined.subarray(0, end + 2);
      if (length >= limit) return joined.subarray(0, limit);
    }
    return Buffer.concat(chunks, length);
  }

  /** The earliest next attempt among waiting messages this node may deliver (for the manager's timer). */
  async nextDueAt(excludeAccounts: Iterable<string> = []): Promise<number | undefined> {
    const accounts = [...excludeAccounts];
    const row = await this.#store.db
      .selectFrom('queue_messages')
      .select((eb) => eb.fn.min<number>('next_attempt_at').as('at'))
      .where((eb) => this.#mine(eb))
      .where('state', 'in', ['incoming', 'deferred'])
      .$if(accounts.length > 0, (q) => q.where('account_id', 'not in', accounts))
      .executeTakeFirst();
    return row?.at === null || row?.at === undefined ? undefined : Number(row.at);
  }

  /**
   * The rows this node may deliver: its own; with bodies in the database also every row whose body is
   * there, whoever accepted it.
   */
  #mine(eb: ExpressionBuilder<Database, 'queue_messages'>) {
    return this.databaseBodies ? eb.or([eb('node_id', '=', this.nodeId), eb('body_in_database', '=', 1)]) : eb('node_id', '=', this.nodeId);
  }

  // ---- the queue manager's side ---------------------------------------------------------------------

  /**
   * Due messages this node may deliver: waiting ones whose time has come, and active ones whose lease ran out
   * (with bodies in the database, also those of an instance that died while delivering them).
   */
  async due(limit: number, excludeIds: Iterable<string> = [], excludeAccounts: Iterable<string> = []): Promise<QueuedMessage[]> {
    const now = this.#now();
    const exclude = [...excludeIds];
    const accounts = [...excludeAccounts];
    let query = this.#store.db
      .selectFrom('queue_messages')
      .selectAll()
      .where((eb) => this.#mine(eb))
      .where((eb) =>
        eb.or([
          eb.and([eb('state', 'in', ['incoming', 'deferred']), eb('next_attempt_at', '<=', now)]),
          eb.and([eb('state', '=', 'active'), eb('lease_until', '<', now)]),
        ]),
      )
      .orderBy('next_attempt_at')
      .limit(limit);
    if (exclude.length > 0) query = query.where('id', 'not in', exclude);
    if (accounts.length > 0) query = query.where('account_id', 'not in', accounts);
    return (await query.execute()).map(toMessage);
  }

  /** Takes the lease of a due message (a conditional update: of several contenders only one wins). */
  async lease(message: QueuedMessage, owner: string, leaseMs: number): Promise<boolean> {
    return (await this.leaseMany([message], owner, leaseMs)).length === 1;
  }

  #log(trx: Parameters<Parameters<WriteBatcher['run']>[0]>[0], queueId: string, event: DeliveryEvent, entry: { recipients?: string[] | null; code?: number | null; reply?: string | null; advice?: string | null }, at: number) {
    return trx
      .insertInto('delivery_log')
      .values({
        queue_id: queueId,
        at,
        event,
        recipients: entry.recipients ? entry.recipients.join(', ') : null,
        code: entry.code ?? null,
        reply: oneLine(entry.reply),
        advice: oneLine(entry.advice),
      })
      .execute();
  }

  /**
   * Leases several due messages in one write (one commit for the lot). Each is taken only if it is still
   * where it was seen (same state family and attempt count): of several contenders one wins. Returns the
   * messages this owner now holds, updated.
   *
   * On PostgreSQL the candidate rows are first locked with `FOR UPDATE SKIP LOCKED`, so a claimer never
   * waits on another instance's open transaction: a row locked right now is skipped (someone else is taking
   * it) and only the rows that came back are updated, still under the conditional WHERE (a row unlocked but
   * already taken loses). SQLite has one writer and no row locks: its path is unchanged.
   */
  async leaseMany(messages: QueuedMessage[], owner: string, leaseMs: number): Promise<QueuedMessage[]> {
    if (messages.length === 0) return [];
    const now = this.#now();
    const won: QueuedMessage[] = [];
    const skipLocked = this.#store.dialect === 'postgres';
    await this.#batcher.run(async (trx) => {
      won.length = 0;
      let candidates = messages;
      if (skipLocked) {
        const locked = await trx
          .selectFrom('queue_messages')
          .select('id')
          .where('id', 'in', messages.map((m) => m.id))
          .forUpdate()
          .skipLocked()
          .execute();
        const ids = new Set(locked.map((r) => r.id));
        candidates = messages.filter((m) => ids.has(m.id));
      }
      // Fresh messages (incoming, never tried) are taken with one statement; the rest one by one.
      const fresh = candidates.filter((m) => m.state === 'incoming' && m.attempts === 0);
      const others = candidates.filter((m) => !(m.state === 'incoming' && m.attempts === 0));
      if (fresh.length > 0) {
        const rows = await trx
          .updateTable('queue_messages')
          .set({ state: 'active', lease_owner: owner, lease_until: now + leaseMs, attempts: 1 })
          .where('id', 'in', fresh.map((m) => m.id))
          .where('state', '=', 'incoming')
          .where('attempts', '=', 0)
          .returning('id')
          .execute();
        const taken = new Set(rows.map((r) => r.id));
        for (const message of fresh) if (taken.has(message.id)) won.push(message);
      }
      for (const message of others) {
        const result = await trx
          .updateTable('queue_messages')
          .set({ state: 'active', lease_owner: owner, lease_until: now + leaseMs, attempts: message.attempts + 1 })
          .where('id', '=', message.id)
          .where('attempts', '=', message.attempts)
          .where((eb) =>
            eb.or([eb('state', 'in', ['incoming', 'deferred', 'held']), eb.and([eb('state', '=', 'active'), eb('lease_until', '<', now)])]),
          )
          .executeTakeFirst();
        if (Number(result.numUpdatedRows) === 1) won.push(message);
      }
    }, { durable: false });
    for (const message of won) {
      message.state = 'active';
      message.attempts += 1;
      message.leaseOwner = owner;
      message.leaseUntil = now + leaseMs;
    }
    return won;
  }

  /** Extends the leases this owner holds on `ids` to `until` (deliveries still in progress). */
  async renewLeases(ids: string[], owner: string, until: number): Promise<void> {
    if (ids.length === 0) return;
    await this.#batcher.run(async (trx) => {
      await trx.updateTable('queue_messages').set({ lease_until: until }).where('id', 'in', ids).where('state', '=', 'active').where('lease_owner', '=', owner).execute();
    }, { durable: false });
  }

  /** Writes the DSN body to the spool (durably) before the transaction that creates its row. */
  async #spoolBounce(bounce: BounceMessage): Promise<{ id: string; size: number }> {
    const id = Spool.newId();
    // In the database the body is inserted with the bounce's row, in the outcome's transaction.
    if (this.databaseBodies) return { id, size: bounce.body.length };
    const writer = await this.spool.create(id);
    await new Promise<void>((resolve, reject) => writer.end(bounce.body, (error?: Error | null) => (error ? reject(error) : resolve())));
    await writer.commit();
    return { id, size: writer.bytesWritten };
  }

  /**
   * Records, before anything else, that the upstream took the message for `delivered` (a partial delivery
   * whose other recipients still need a DSN built and spooled): durably and at once (docs/decisions/020).
   * The row stays active under the lease with only the undelivered recipients, so a crash before
   * `recordOutcome` tries just those again. `recordOutcome` then follows with `deliveredRecorded`.
   */
  async recordDelivered(message: QueuedMessage, owner: string, delivered: string[], reply: { code: number | null; reply: string } | undefined): Promise<void> {
    const now = this.#now();
    const remaining = message.recipients.filter((r) => !delivered.includes(r));
    await this.#batcher.run(async (trx) => {
      const result = await trx
        .updateTable('queue_messages')
        .set({ recipients: JSON.stringify(remaining) })
        .where('id', '=', message.id)
        .where('state', '=', 'active')
        .where('lease_owner', '=', owner)
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) !== 1) throw new LeaseLostError(message.id);
      await this.#log(trx, message.id, 'sent', { recipients: delivered, code: reply?.code ?? 250, reply: reply?.reply ?? null }, now);
    }, { durable: true, urgent: true });
  }

  /**
   * Records a delivery attempt's outcome in one transaction: delivered recipients, recipients to retry
   * (`retry`, at `nextAttemptAt`), recipients that failed for good (`failed`, with at most one bounce).
   * An outcome with delivered recipients is durable and urgent: it is the first durable write after the
   * upstream's reply and waits for no batch window (docs/decisions/020), since until it is on disk a crash
   * sends the message again. The body is removed once nothing is left to deliver.
   */
  async recordOutcome(
    message: QueuedMessage,
    owner: string,
    outcome: {
      delivered: string[];
      deliveredReply?: { code: number | null; reply: string } | undefined;
      retry: RecipientReply[];
      /** When to retry `retry`; undefined means they ran out of time and are failed instead. */
      nextAttemptAt?: number | undefined;
      failed: RecipientReply[];
      bounce?: BounceMessage | undefined;
      summary: { code: number | null; reply: string; advice?: string | undefined };
      /** `recordDelivered` already recorded `delivered` (its log line is not written again). */
      deliveredRecorded?: boolean | undefined;
    },
  ): Promise<{ state: 'sent' | 'deferred' | 'bounced'; bounceId?: string }> {
    const now = this.#now();
    const bounce = outcome.bounce ? await this.#spoolBounce(outcome.bounce) : undefined;
    const state: 'sent' | 'deferred' | 'bounced' = outcome.retry.length > 0 ? 'deferred' : outcome.delivered.length > 0 ? 'sent' : 'bounced';
    try {
      await this.#batcher.run(async (trx) => {
        const result = await trx
          .updateTable('queue_messages')
          .set({
            state,
            recipients: outcome.retry.length > 0 ? JSON.stringify(outcome.retry.map((r) => r.recipient)) : JSON.stringify(message.recipients),
            next_attempt_at: outcome.retry.length > 0 ? (outcome.nextAttemptAt ?? now) : message.nextAttemptAt,
            lease_owner: null,
            lease_until: null,
            last_code: outcome.summary.code,
            last_reply: oneLine(outcome.summary.reply),
            last_advice: oneLine(outcome.summary.advice ?? null),
            done_at: state === 'sent' || state === 'bounced' ? now : null,
          })
          .where('id', '=', message.id)
          .where('state', '=', 'active')
          .where('lease_owner', '=', owner)
          .executeTakeFirst();
        if (Number(result.numUpdatedRows) !== 1) throw new LeaseLostError(message.id);
        // A body in the database goes with the outcome that makes its message final, in one transaction.
        if (this.databaseBodies && (state === 'sent' || state === 'bounced')) await this.databaseBodies.removeIn(trx, message.id);
        if (outcome.delivered.length > 0 && !outcome.deliveredRecorded) {
          await this.#log(trx, message.id, 'sent', { recipients: outcome.delivered, code: outcome.deliveredReply?.code ?? 250, reply: outcome.deliveredReply?.reply ?? null }, now);
        }
        for (const r of outcome.retry) {
          await this.#log(trx, message.id, 'deferred', { recipients: [r.recipient], code: r.code, reply: r.reply, advice: r.advice ?? null }, now);
        }
        for (const r of outcome.failed) {
          await this.#log(trx, message.id, 'bounced', { recipients: [r.recipient], code: r.code, reply: r.reply, advice: r.advice ?? null }, now);
        }
        if (bounce && outcome.bounce) {
          if (this.databaseBodies) await this.databaseBodies.insertIn(trx, bounce.id, outcome.bounce.body);
          await trx
            .insertInto('queue_messages')
            .values(
              this.#newRow(
                bounce.id,
                {
                  reversePath: '',
                  recipients: [outcome.bounce.to],
                  body8bit: /[\x80-\xff]/.test(outcome.bounce.body.toString('latin1')),
                  smtputf8: /[^\x00-\x7f]/.test(outcome.bounce.to),
                  headerFrom: null,
                  subject: `Undelivered Mail Returned to Sender${message.subject ? `: ${message.subject}` : ''}`,
                  messageId: null,
                  client: `postern (bounce of ${message.id})`,
                  // A DSN goes back the way the message came: through the account it was routed to.
                  accountId: message.accountId,
                },
                bounce.size,
                now,
                true,
              ),
            )
            .execute();
          await this.#log(trx, message.id, 'bounce-queued', { recipients: [outcome.bounce.to], reply: `delivery status notification ${bounce.id}` }, now);
          await this.#log(trx, bounce.id, 'accepted', { recipients: [outcome.bounce.to], reply: `delivery status notification for ${message.id}` }, now);
        }
      }, { durable: bounce !== undefined || outcome.delivered.length > 0, urgent: outcome.delivered.length > 0 && !outcome.deliveredRecorded });
    } catch (error) {
      if (bounce && !this.databaseBodies) await this.spool.remove(bounce.id).catch(() => undefined);
      throw error;
    }
    if ((state === 'sent' || state === 'bounced') && !message.bodyInDatabase) {
      // Only once the outcome is on disk (a returned message's outcome may be relaxed): after a power loss the
      // row could roll back to active, and its body must still be there to be tried again (a repeat, never a
      // loss). A crash before the removal leaves a file that start-up removes (its row is final).
      void this.#batcher.whenDurable().then(() => this.spool.remove(message.id).catch(() => undefined));
    }
    return bounce ? { state, bounceId: bounce.id } : { state };
  }

  /** Puts an active message on hold: the sending account has no usable token. */
  async hold(message: QueuedMessage, owner: string, reason: string, advice?: string): Promise<void> {
    const now = this.#now();
    await this.#batcher.run(async (trx) => {
      const result = await trx
        .updateTable('queue_messages')
        .set({ state: 'held', lease_owner: null, lease_until: null, attempts: Math.max(0, message.attempts - 1), last_code: null, last_reply: oneLine(reason), last_advice: oneLine(advice ?? null) })
        .where('id', '=', message.id)
        .where('state', '=', 'active')
        .where('lease_owner', '=', owner)
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) !== 1) throw new LeaseLostError(message.id);
      await this.#log(trx, message.id, 'held', { recipients: message.recipients, reply: reason, advice: advice ?? null }, now);
    }, { durable: false });
  }

  /** Gives an active message back without an outcome (shutdown): due again at once. */
  async release(message: QueuedMessage, owner: string): Promise<void> {
    await this.#batcher.run(async (trx) => {
      await trx
        .updateTable('queue_messages')
        .set({ state: 'deferred', lease_owner: null, lease_until: null, attempts: Math.max(0, message.attempts - 1), next_attempt_at: this.#now() })
        .where('id', '=', message.id)
        .where('state', '=', 'active')
        .where('lease_owner', '=', owner)
        .execute();
    }, { durable: false });
  }

  /**
   * Held messages of this node become due again (the token is usable again): those routed to `accountId`
   * (a message's account_id, '' included), or all. Returns how many.
   */
  releaseHeld(accountId?: string): Promise<number> {
    return this.#makeDue('held', 'released', 'Token Status is Active again', false, true, accountId);
  }

  /** The accounts (message account_id values) that held messages this node may deliver are routed to. */
  async heldAccounts(): Promise<string[]> {
    const rows = await this.#store.db
      .selectFrom('queue_messages')
      .select('account_id')
      .distinct()
      .where((eb) => this.#mine(eb))
      .where('state', '=', 'held')
      .execute();
    return rows.map((r) => r.account_id);
  }

  /**
   * Due waiting messages go on hold without an attempt (no usable token): those routed to `accountId` (a
   * message's account_id, '' included), or all. Returns how many.
   */
  async holdDue(reason: string, advice?: string, accountId?: string): Promise<number> {
    const now = this.#now();
    let count = 0;
    await this.#batcher.run(async (trx) => {
      const rows = await trx
        .selectFrom('queue_messages')
        .select(['id', 'recipients'])
        .where((eb) => this.#mine(eb))
        .where('state', 'in', ['incoming', 'deferred'])
        .where('next_attempt_at', '<=', now)
        .$if(accountId !== undefined, (q) => q.where('account_id', '=', accountId!))
        .execute();
      if (rows.length === 0) return;
      for (const row of rows) {
        await trx
          .updateTable('queue_messages')
          .set({ state: 'held', last_code: null, last_reply: oneLine(reason), last_advice: oneLine(advice ?? null) })
          .where('id', '=', row.id)
          .where('state', 'in', ['incoming', 'deferred'])
          .execute();
        await this.#log(trx, row.id, 'held', { recipients: JSON.parse(row.recipients) as string[], reply: reason, advice: advice ?? null }, now);
      }
      count = rows.length;
    }, { durable: false });
    return count;
  }

  /**
   * At start: this node's active messages were being delivered by a process that no longer runs (a crash
   * or kill -9). They become due again at once (durably: their leases are gone). Returns how many.
   */
  requeueActive(): Promise<number> {
    // Only this node's own: another instance's active rows are leased by a process that may well be running.
    return this.#makeDue('active', 'requeued', 'delivery interrupted by a restart; trying again', true, false);
  }

  /** This node's messages in state `from` become due at once, unleased, each with a log line. Returns how many. */
  async #makeDue(from: 'held' | 'active', event: DeliveryEvent, reply: string, durable: boolean, shared: boolean, accountId?: string): Promise<number> {
    const now = this.#now();
    let count = 0;
    await this.#batcher.run(async (trx) => {
      const rows = await trx
        .selectFrom('queue_messages')
        .select('id')
        .where((eb) => (shared ? this.#mine(eb) : eb('node_id', '=', this.nodeId)))
        .where('state', '=', from)
        .$if(accountId !== undefined, (q) => q.where('account_id', '=', accountId!))
        .execute();
      if (rows.length === 0) return;
      await trx
        .updateTable('queue_messages')
        .set({ state: 'deferred', lease_owner: null, lease_until: null, next_attempt_at: now })
        .where('id', 'in', rows.map((r) => r.id))
        .where('state', '=', from)
        .execute();
      for (const row of rows) await this.#log(trx, row.id, event, { reply }, now);
      count = rows.length;
    }, { durable });
    return count;
  }

  /** Removes bodies that have no queue row (a crash between spooling and committing). Returns how many. */
  async removeOrphans(): Promise<number> {
    let fromDatabase = 0;
    if (this.databaseBodies) {
      fromDatabase = await this.databaseBodies.removeOrphans(async (slice) =>
        new Set((await this.#store.db.selectFrom('queue_messages').select('id').where('id', 'in', slice).where('state', 'in', ACTIVE_STATES).execute()).map((r) => r.id)),
      );
    }
    return fromDatabase + (await this.#removeSpoolOrphans());
  }

  async #removeSpoolOrphans(): Promise<number> {
    const ids = await this.spool.ids();
    let removed = await this.spool.removeTemporaryFiles();
    for (let i = 0; i < ids.length; i += 500) {
      const slice = ids.slice(i, i + 500);
      const known = new Set(
        (await this.#store.db.selectFrom('queue_messages').select('id').where('id', 'in', slice).where('state', 'in', ACTIVE_STATES).execute()).map((r) => r.id),
      );
      for (const id of slice) {
        if (!known.has(id)) {
          await this.spool.remove(id);
          removed++;
        }
      }
    }
    return removed;
  }

  // ---- the Remote UI's side -------------------------------------------------------------------------

  /** Retry Now: a deferred or held message becomes due at once. */
  async retryNow(id: string, actor: string): Promise<boolean> {
    const now = this.#now();
    let done = false;
    await this.#batcher.run(async (trx) => {
      const result = await trx
        .updateTable('queue_messages')
        .set({ state: 'deferred', next_attempt_at: now })
        .where('id', '=', id)
        .where('state', 'in', ['incoming', 'deferred', 'held'])
        .executeTakeFirst();
      done = Number(result.numUpdatedRows) === 1;
      if (done) await this.#log(trx, id, 'retry', { reply: `Retry Now by ${actor}` }, now);
    });
    return done;
  }

  /**
   * Retry All Now: every deferred or held message becomes due at once (incoming ones are due already). The
   * updates run concurrently, so they share the write batches: a few commits, not one per message.
   */
  async retryAllNow(actor: string): Promise<{ retried: number; held: number }> {
    const messages = await this.list(['deferred', 'held'], Number.MAX_SAFE_INTEGER);
    let retried = 0;
    let held = 0;
    for (let i = 0; i < messages.length; i += 500) {
      const slice = messages.slice(i, i + 500);
      const done = await Promise.all(slice.map((m) => this.retryNow(m.id, actor)));
      retried += done.filter(Boolean).length;
      held += slice.filter((m, j) => done[j] && m.state === 'held').length;
    }
    return { retried, held };
  }

  /** Delete: removes a waiting message without delivering or bouncing it. Active ones cannot be deleted. */
  async remove(id: string, actor: string): Promise<QueuedMessage | undefined> {
    const now = this.#now();
    let removed: QueuedMessage | undefined;
    await this.#batcher.run(async (trx) => {
      const row = await trx.selectFrom('queue_messages').selectAll().where('id', '=', id).where('state', 'in', ['incoming', 'deferred', 'held']).executeTakeFirst();
      if (!row) return;
      removed = toMessage(row);
      await trx.deleteFrom('queue_messages').where('id', '=', id).execute();
      if (this.databaseBodies) await this.databaseBodies.removeIn(trx, id);
      const what = `from ${row.reverse_path || '<>'}${row.subject ? `, subject "${row.subject}"` : ''}`;
      await this.#log(trx, id, 'deleted', { recipients: removed.recipients, reply: `Deleted by ${actor} (${what})` }, now);
    });
    if (removed) await this.spool.remove(id);
    return removed;
  }

  /** Log entries, newest first; optionally of one message. */
  async logEntries(options: { queueId?: string; limit?: number } = {}): Promise<LogEntry[]> {
    let query = this.#store.db
      .selectFrom('delivery_log')
      .leftJoin('queue_messages', 'queue_messages.id', 'delivery_log.queue_id')
      .select([
        'delivery_log.id',
        'delivery_log.queue_id',
        'delivery_log.at',
        'delivery_log.event',
        'delivery_log.recipients',
        'delivery_log.code',
        'delivery_log.reply',
        'delivery_log.advice',
        'queue_messages.subject',
        'queue_messages.header_from',
        'queue_messages.reverse_path',
        'queue_messages.client',
      ])
      .orderBy('delivery_log.id', 'desc')
      .limit(options.limit ?? 300);
    if (options.queueId) query = query.where('delivery_log.queue_id', '=', options.queueId);
    const rows = await query.execute();
    return rows.map((row) => ({
      id: Number(row.id),
      queueId: row.queue_id,
      at: Number(row.at),
      event: row.event,
      recipients: row.recipients,
      code: row.code,
      reply: row.reply,
      advice: row.advice,
      subject: row.subject ?? null,
      headerFrom: row.header_from ?? null,
      reversePath: row.reverse_path ?? null,
      client: row.client ?? null,
    }));
  }

  /** Forgets finished messages and log entries older than `before`. */
  async prune(before: number): Promise<void> {
    await this.#batcher.run(async (trx) => {
      await trx.deleteFrom('queue_messages').where('state', 'in', ['sent', 'bounced']).where('done_at', '<', before).execute();
      await trx.deleteFrom('delivery_log').where('at', '<', before).execute();
    }, { durable: false });
  }

  /** Waits until every write requested so far is committed, durably. */
  drain(): Promise<void> {
    return this.#batcher.drain();
  }

  /** Drains, then releases the files the queue holds open. */
  async close(): Promise<void> {
    await this.#batcher.close();
    await this.spool.close();
  }
}

export class LeaseLostError extends PosternError {
  constructor(id: string) {
    super(ErrorCodes.QUEUE_LEASE_LOST, `the lease of queue message ${id} was lost`);
    this.name = 'LeaseLostError';
  }
}

/** What the Notifications page's held-messages event needs to know (notify/attention.ts). */
export interface HeldSummary {
  /** Messages held now. */
  count: number;
  /** When the oldest of them was held (its latest `held` log entry); undefined when none is held. */
  oldestHeldAt: number | undefined;
  /** Of them, how many were held at or before `now - thresholdMs`. */
  heldLongerThan: number;
  /** The oldest held message's last reply and advice: held messages share one reason, the sending account's. */
  lastReply: string | null;
  lastAdvice: string | null;
}

/** A `bounced` log entry with what its queue row (when it still exists) says of the message. */
export interface BouncedEntry {
  id: number;
  queueId: string;
  at: number;
  recipients: string | null;
  code: number | null;
  reply: string | null;
  advice: string | null;
  reversePath: string | null;
  subject: string | null;
  isBounce: boolean;
}

/** A message not finished yet, as a backup needs it: whose spool holds its body, and how long the body is. */
export interface WaitingMessage {
  id: string;
  nodeId: string;
  state: QueueState;
  size: number;
  /** The body is in the database (PostgreSQL, message_bodies): pg_dump has it, no spool holds it. */
  bodyInDatabase: boolean;
}

/** Counts by state and the messages not finished, of the whole database or of one node's rows. */
export interface QueueCensus {
  counts: Record<QueueState, number>;
  /** Oldest first. */
  waiting: WaitingMessage[];
}

/**
 * The queue's reads that need neither a spool nor a node: what the notifier and the backup ask of the queue's
 * tables. They take a database, not a MessageQueue, so that they also read a copy of the database (the
 * backup's snapshot) and another instance's rows.
 */
export class QueueReads {
  constructor(private readonly store: Pick<Store, 'db'>) {}

  /** Held messages: how many, since when, how many longer than `thresholdMs`, and why. */
  async heldSummary(now: number, thresholdMs: number): Promise<HeldSummary> {
    const db = this.store.db;
    const held = await db.selectFrom('queue_messages').select((eb) => eb.fn.countAll<number>().as('n')).where('state', '=', 'held').executeTakeFirst();
    const count = Number(held?.n ?? 0);
    if (count === 0) return { count, oldestHeldAt: undefined, heldLongerThan: 0, lastReply: null, lastAdvice: null };
    // When each held message was held (its latest `held` entry): the condition began with the oldest.
    const perMessage = db
      .selectFrom('queue_messages')
      .innerJoin('delivery_log', 'delivery_log.queue_id', 'queue_messages.id')
      .select(['queue_messages.id as id', (eb) => eb.fn.max<number>('delivery_log.at').as('held_at')])
      .where('queue_messages.state', '=', 'held')
      .where('delivery_log.event', '=', 'held')
      .groupBy('queue_messages.id');
    const stats = await db
      .selectFrom(perMessage.as('h'))
      .select((eb) => [
        eb.fn.min<number>('h.held_at').as('oldest'),
        eb.fn.sum<number>(eb.case().when('h.held_at', '<=', now - thresholdMs).then(1).else(0).end()).as('over'),
      ])
      .executeTakeFirst();
    const reason = await db
      .selectFrom('queue_messages')
      .select(['last_reply', 'last_advice'])
      .where('state', '=', 'held')
      .orderBy('received_at')
      .limit(1)
      .executeTakeFirst();
    return {
      count,
      oldestHeldAt: stats?.oldest === null || stats?.oldest === undefined ? undefined : Number(stats.oldest),
      heldLongerThan: Number(stats?.over ?? 0),
      lastReply: reason?.last_reply ?? null,
      lastAdvice: reason?.last_advice ?? null,
    };
  }

  /** The id of the latest log entry (0 when the log is empty): where a reader of new entries starts. */
  async latestLogId(): Promise<number> {
    const latest = await this.store.db.selectFrom('delivery_log').select((eb) => eb.fn.max<number>('id').as('id')).executeTakeFirst();
    return Number(latest?.id ?? 0);
  }

  /** `bounced` log entries after the entry `afterId`, oldest first, at most `limit`. */
  async bouncedAfter(afterId: number, limit: number): Promise<BouncedEntry[]> {
    const rows = await this.store.db
      .selectFrom('delivery_log')
      .leftJoin('queue_messages', 'queue_messages.id', 'delivery_log.queue_id')
      .select([
        'delivery_log.id',
        'delivery_log.queue_id',
        'delivery_log.at',
        'delivery_log.recipients',
        'delivery_log.code',
        'delivery_log.reply',
        'delivery_log.advice',
        'queue_messages.reverse_path',
        'queue_messages.subject',
        'queue_messages.is_bounce',
      ])
      .where('delivery_log.event', '=', 'bounced')
      .where('delivery_log.id', '>', afterId)
      .orderBy('delivery_log.id')
      .limit(limit)
      .execute();
    return rows.map((row) => ({
      id: Number(row.id),
      queueId: row.queue_id,
      at: Number(row.at),
      recipients: row.recipients,
      code: row.code,
      reply: row.reply,
      advice: row.advice,
      reversePath: row.reverse_path ?? null,
      subject: row.subject ?? null,
      isBounce: row.is_bounce === 1,
    }));
  }

  /** Counts by state and the messages not finished: of every node, or of the node `nodeId` only. */
  async census(nodeId?: string): Promise<QueueCensus> {
    let counted = this.store.db.selectFrom('queue_messages').select(['state', (eb) => eb.fn.countAll<number | string>().as('n')]).groupBy('state');
    // All columns, not a list: a copy made before migration 010 has no body_in_database (its bodies are files).
    let waiting = this.store.db.selectFrom('queue_messages').selectAll().where('state', 'in', ACTIVE_STATES).orderBy('received_at');
    if (nodeId !== undefined) {
      counted = counted.where('node_id', '=', nodeId);
      waiting = waiting.where('node_id', '=', nodeId);
    }
    const counts: Record<QueueState, number> = { incoming: 0, active: 0, deferred: 0, held: 0, sent: 0, bounced: 0 };
    for (const row of await counted.execute()) counts[row.state] = Number(row.n);
    const rows = await waiting.execute();
    return { counts, waiting: rows.map((row) => ({ id: row.id, nodeId: row.node_id, state: row.state, size: Number(row.size), bodyInDatabase: row.body_in_database === 1 })) };
  }

  /**
   * Messages not yet delivered or returned (incoming, active, deferred, held), by the account they were
   * routed to ('' for those from an older instance, which go through the Default).
   */
  async waitingByAccount(): Promise<Map<string, number>> {
    const rows = await this.store.db
      .selectFrom('queue_messages')
      .select(['account_id', (eb) => eb.fn.countAll<number | string>().as('n')])
      .where('state', 'in', ACTIVE_STATES)
      .groupBy('account_id')
      .execute();
    return new Map(rows.map((row) => [row.account_id, Number(row.n)]));
  }

  /** The state of each message now; a message absent from the map was deleted, or finished and purged. */
  async statesOf(ids: readonly string[]): Promise<Map<string, QueueState>> {
    const states = new Map<string, QueueState>();
    for (let i = 0; i < ids.length; i += 500) {
      const rows = await this.store.db.selectFrom('queue_messages').select(['id', 'state']).where('id', 'in', ids.slice(i, i + 500)).execute();
      for (const row of rows) states.set(row.id, row.state);
    }
    return states;
  }
}
