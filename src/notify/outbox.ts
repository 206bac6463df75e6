/**
 * The notification outbox and the state machine behind it: the `notification_state` and `notifications`
 * tables, read and written here only.
 *
 * Purpose: one notification per occurrence of a problem, and one more when it is over, however many
 *   instances share the database; then a record of each notification for the Notifications page.
 * Inputs: conditions (notify/attention.ts) and the notices made of them; the delivery's leases and answers.
 * Outputs: rows in `notifications`: first the outbox (status `pending`), then the record (`delivered`,
 *   `failed`), kept for 30 days.
 * Several instances: each event key has one `notification_state` row, changed only by a conditional write
 *   on its `version`, in the same transaction that queues the notification. Of instances that see the same
 *   change, one write succeeds and the others' match no row, so exactly one notification is queued. Queued
 *   notifications are sent under a lease (`lease_owner`/`lease_until`), in order.
 * Known limits: delivery is at least once: an instance that dies after the receiver answered and before it
 *   recorded the answer leaves the notification to be sent again when its lease runs out.
 */
import type { Selectable } from 'kysely';
import type { NotificationStateTable, NotificationsTable } from '../store/schema.js';
import type { Store } from '../store/store.js';
import type { Condition, Draft, Notice } from './events.js';
import { eventLabel } from './wording.js';

export type StateRow = NotificationStateTable;
export type OutboxRow = Selectable<NotificationsTable>;
export type NotificationStatus = NotificationsTable['status'];

export interface NotificationRecord {
  id: number;
  event: string;
  eventLabel: string;
  phase: Notice['phase'];
  title: string;
  status: NotificationStatus;
  attempts: number;
  httpStatus: number | null;
  result: string | null;
  createdAt: number;
  doneAt: number | null;
  nextAttemptAt: number;
}

/** What one attempt came to, written with the lease released. */
export interface AttemptRecord {
  status: NotificationStatus;
  attempts: number;
  http_status: number | null;
  result: string;
  done_at: number | null;
  next_attempt_at: number;
}

export class NotificationOutbox {
  constructor(private readonly store: Store) {}

  // ---- the state machine ------------------------------------------------------------------------------

  /**
   * The state machine of one event key: idle → (pending →) open → idle; each change one conditional write.
   * `complete` turns the condition's draft into the notice to queue.
   */
  async apply(condition: Condition, complete: (draft: Draft) => Notice, now: number): Promise<void> {
    const row = await this.stateRow(condition.key, now);
    if (condition.state === 'unchanged') return;
    if (condition.state === 'active') {
      if (row.phase === 'open') return;
      const since = row.phase === 'pending' && condition.sticky && row.since !== null ? Number(row.since) : Math.min(condition.since, now);
      if (now - since >= condition.thresholdMs) {
        await this.transition(row, { phase: 'open', since, opened_at: now }, [complete(condition.problem())], now);
      } else if (row.phase !== 'pending' || Number(row.since) !== since) {
        await this.transition(row, { phase: 'pending', since }, [], now);
      }
      return;
    }
    if (row.phase === 'idle') return;
    const resolution = row.phase === 'open' ? condition.resolution() : null;
    await this.transition(row, { phase: 'idle', since: null, opened_at: null }, resolution ? [complete(resolution)] : [], now);
  }

  /** The state row of `key`, made (idle, with `cursor`) when there is none yet. */
  async stateRow(key: string, now: number, cursor: number | null = null): Promise<StateRow> {
    const db = this.store.db;
    let row = await db.selectFrom('notification_state').selectAll().where('key', '=', key).executeTakeFirst();
    if (!row) {
      await db
        .insertInto('notification_state')
        .values({ key, phase: 'idle', since: null, opened_at: null, cursor, version: 0, updated_at: now })
        .onConflict((oc) => oc.column('key').doNothing())
        .execute();
      row = await db.selectFrom('notification_state').selectAll().where('key', '=', key).executeTakeFirstOrThrow();
    }
    return row;
  }

  /**
   * Moves a state row on from the version this pass read, and queues `notices` in the same transaction.
   * False when another instance changed the row first (it queued the notification; nothing to do here).
   */
  async transition(row: StateRow, patch: Partial<Pick<StateRow, 'phase' | 'since' | 'opened_at' | 'cursor'>>, notices: Notice[], now: number): Promise<boolean> {
    return this.store.db.transaction().execute(async (trx) => {
      const result = await trx
        .updateTable('notification_state')
        .set({ ...patch, version: row.version + 1, updated_at: now })
        .where('key', '=', row.key)
        .where('version', '=', row.version)
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) !== 1) return false;
      for (const notice of notices) {
        await trx
          .insertInto('notifications')
          .values({
            event: notice.event,
            phase: notice.phase,
            title: notice.title,
            notice: JSON.stringify(notice),
            status: 'pending',
            attempts: 0,
            next_attempt_at: now,
            lease_owner: null,
            lease_until: null,
            http_status: null,
            result: null,
            created_at: now,
            done_at: null,
          })
          .execute();
      }
      return true;
    });
  }

  // ---- the outbox -------------------------------------------------------------------------------------

  /** The first `limit` notifications waiting to be sent, in the order they were made. */
  async pending(limit: number): Promise<OutboxRow[]> {
    return this.store.db.selectFrom('notifications').selectAll().where('status', '=', 'pending').orderBy('id').limit(limit).execute();
  }

  /**
   * Takes the lease of a pending notification for `owner` until `until`: a conditional write, so of several
   * instances only one sends it. False when another holds it or it changed since it was read.
   */
  async lease(row: OutboxRow, owner: string, now: number, until: number): Promise<boolean> {
    const leased = await this.store.db
      .updateTable('notifications')
      .set({ lease_owner: owner, lease_until: until })
      .where('id', '=', row.id)
      .where('status', '=', 'pending')
      .where('attempts', '=', row.attempts)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now), eb('lease_owner', '=', owner)]))
      .executeTakeFirst();
    return Number(leased.numUpdatedRows) === 1;
  }

  /** Records an attempt and releases the lease; nothing when `owner` no longer holds it. */
  async record(id: number, owner: string, attempt: AttemptRecord): Promise<void> {
    await this.store.db
      .updateTable('notifications')
      .set({ ...attempt, lease_owner: null, lease_until: null })
      .where('id', '=', id)
      .where('lease_owner', '=', owner)
      .execute();
  }

  /** A notification sent once, outside the outbox (Send Test Notification), recorded like any other. */
  async recordSent(notice: Notice, answer: { delivered: boolean; httpStatus: number | null; summary: string }, now: number): Promise<void> {
    await this.store.db
      .insertInto('notifications')
      .values({
        event: notice.event,
        phase: notice.phase,
        title: notice.title,
        notice: JSON.stringify(notice),
        status: answer.delivered ? 'delivered' : 'failed',
        attempts: 1,
        next_attempt_at: now,
        lease_owner: null,
        lease_until: null,
        http_status: answer.httpStatus,
        result: answer.summary,
        created_at: now,
        done_at: now,
      })
      .execute();
  }

  /** Notifications still waiting are not sent: they fail with `reason`. */
  async cancelPending(reason: string, now: number): Promise<void> {
    await this.store.db
      .updateTable('notifications')
      .set({ status: 'failed', result: reason, done_at: now, lease_owner: null, lease_until: null })
      .where('status', '=', 'pending')
      .execute();
  }

  /** Forgets notifications that were done before `before`. */
  async prune(before: number): Promise<void> {
    await this.store.db.deleteFrom('notifications').where('status', '!=', 'pending').where('done_at', '<', before).execute();
  }

  /** The latest notifications, newest first. */
  async recent(limit: number): Promise<NotificationRecord[]> {
    const rows = await this.store.db.selectFrom('notifications').selectAll().orderBy('id', 'desc').limit(limit).execute();
    return rows.map((row) => ({
      id: Number(row.id),
      event: row.event,
      eventLabel: eventLabel(row.event),
      phase: row.phase,
      title: row.title,
      status: row.status,
      attempts: row.attempts,
      httpStatus: row.http_status,
      result: row.result,
      createdAt: Number(row.created_at),
      doneAt: row.done_at === null ? null : Number(row.done_at),
      nextAttemptAt: Number(row.next_attempt_at),
    }));
  }
}
