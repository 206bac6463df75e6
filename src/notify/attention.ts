/**
 * What needs attention: the conditions the notifier watches, read from the owners of the tables that hold
 * them, at each pass.
 *
 * Inputs: OAuth accounts (Token Status, Server Connection Status: oauth/accounts.ts), the sending account
 *   (smtp-out/email-settings.ts), held messages and `bounced` log entries (queue/queue.ts). Reading the store,
 *   not hooking into the token service or the queue manager, also catches state that another instance on the
 *   same database wrote.
 * Outputs: one condition per event key (active, clear or unchanged, since when, with its words), which the
 *   outbox's state machine turns into notifications; and the messages returned since a cursor, batched.
 * Known limits: a problem that begins and ends between two passes is not seen. Token Status Error is timed
 *   from when the notifier first saw it (the token service rewrites the status time on every retry: `sticky`).
 */
import { OAuthAccounts } from '../oauth/accounts.js';
import { QueueReads } from '../queue/queue.js';
import { EmailSettings } from '../smtp-out/email-settings.js';
import type { Store } from '../store/store.js';
import { PROBLEM_THRESHOLD_MS, type Condition, type Draft } from './events.js';
import { accountWords, messagesHeld, messagesHeldOver, messagesReturned, type ReturnedMessage } from './wording.js';

/** Bounces older than this when first seen are not reported (webhook configured or events turned on later). */
const BOUNCE_LOOKBACK_MS = 60 * 60_000;
const BOUNCE_BATCH = 200;

/** The messages returned after a cursor: where the cursor moves to, and the notification (null: none is due). */
export interface ReturnedSince {
  next: number;
  draft: Draft | null;
}

export class Attention {
  readonly #accounts: OAuthAccounts;
  readonly #emailSettings: EmailSettings;
  readonly #queue: QueueReads;

  constructor(
    store: Store,
    /** How long held messages wait before they are returned to their senders (QueueTuning.lifetimeMs). */
    private readonly lifetimeMs: number,
  ) {
    this.#accounts = new OAuthAccounts(store);
    this.#emailSettings = new EmailSettings(store);
    this.#queue = new QueueReads(store);
  }

  /** Token Status Expired, Token Status Error, Connection Failed: three conditions per account. */
  async accountConditions(now: number): Promise<Condition[]> {
    const rows = await this.#accounts.list();
    const sending = await this.#emailSettings.sendingAccountId();
    const conditions: Condition[] = [];
    for (const row of rows) {
      const words = accountWords(row, row.id === sending, this.lifetimeMs);
      const enabled = row.enabled === 1;
      const status = row.token_status;
      const connection = row.connection_status;
      conditions.push(
        {
          key: `token-expired:${row.id}`,
          event: 'token-expired',
          state: enabled && status === 'Expired' ? 'active' : !enabled || status === 'Active' || status === 'NotRegistered' ? 'clear' : 'unchanged',
          since: Number(row.token_status_at),
          sticky: false,
          thresholdMs: 0,
          problem: words.tokenExpired,
          resolution: words.tokenExpiredOver,
        },
        {
          key: `token-error:${row.id}`,
          event: 'token-error',
          state: enabled && status === 'Error' ? 'active' : 'clear',
          since: Number(row.token_status_at),
          sticky: true,
          thresholdMs: PROBLEM_THRESHOLD_MS,
          problem: words.tokenError,
          resolution: words.tokenErrorOver,
        },
        {
          key: `connection-failed:${row.id}`,
          event: 'connection-failed',
          state: enabled && connection === 'ConnectionFailed' ? 'active' : !enabled || connection === 'SuccessfullyConnected' || connection === null ? 'clear' : 'unchanged',
          since: Number(row.connection_checked_at ?? now),
          sticky: false,
          thresholdMs: 0,
          problem: words.connectionFailed,
          resolution: words.connectionFailedOver,
        },
      );
    }
    return conditions;
  }

  /** Messages held for more than 15 minutes: one condition, begun when the oldest held message was held. */
  async heldCondition(now: number): Promise<Condition> {
    const held = await this.#queue.heldSummary(now, PROBLEM_THRESHOLD_MS);
    const since = held.oldestHeldAt ?? now;
    return {
      key: 'messages-held',
      event: 'messages-held',
      state: held.count > 0 ? 'active' : 'clear',
      since,
      sticky: false,
      thresholdMs: PROBLEM_THRESHOLD_MS,
      problem: () => messagesHeld(held, since, this.lifetimeMs),
      resolution: messagesHeldOver,
    };
  }

  /** Where a reader of returned messages starts when it has no cursor yet: after the latest log entry. */
  latestLogId(): Promise<number> {
    return this.#queue.latestLogId();
  }

  /**
   * Messages returned to their senders after the log entry `cursor`, in one notification (a batch at a time);
   * undefined when there is none. Returns older than an hour when first seen are passed over.
   */
  async returnedSince(cursor: number, now: number): Promise<ReturnedSince | undefined> {
    const entries = await this.#queue.bouncedAfter(cursor, BOUNCE_BATCH);
    if (entries.length === 0) return undefined;
    const messages = new Map<string, ReturnedMessage>();
    for (const entry of entries) {
      if (entry.at < now - BOUNCE_LOOKBACK_MS) continue;
      const known = messages.get(entry.queueId);
      if (known) known.all.push(entry.recipients ?? '');
      else messages.set(entry.queueId, { ...entry, all: [entry.recipients ?? ''] });
    }
    const list = [...messages.values()];
    return { next: entries[entries.length - 1]!.id, draft: list.length > 0 ? messagesReturned(list) : null };
  }
}
