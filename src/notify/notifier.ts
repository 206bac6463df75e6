/**
 * The notifier: tells administrators through a webhook when sending needs attention, because Postern cannot
 * reliably e-mail them through the very mailbox that is failing.
 *
 * Purpose: one notification per occurrence of a problem, and one more when it is over.
 * Inputs: the store only, read every `pollMs` (30 s): OAuth accounts (Token Status, Server Connection
 *   Status), held messages and their `held` log entries, `bounced` log entries, and the Notifications
 *   settings. Reading the store, not hooking into the token service or the queue manager, also catches state
 *   that another instance on the same database wrote.
 * Outputs: rows in `notifications` (the outbox, then the record the Notifications page shows) and webhook
 *   POSTs (notify/webhook.ts); log lines and, for a notification that could not be delivered, an audit entry.
 *   The webhook URL is never logged: receivers appear as scheme://host/… only.
 * Events: Token Status became Expired; Token Status in Error for 15 minutes; Server Connection Status
 *   Connection Failed; messages held for 15 minutes; messages returned to their senders (batched per pass).
 * Several instances: each event key has one `notification_state` row, changed only by a conditional write
 *   on its `version`, in the same transaction that queues the notification. Of instances that see the same
 *   change, one write succeeds and the others' match no row, so exactly one notification is queued. Queued
 *   notifications are sent under a lease (`lease_owner`/`lease_until`), in order.
 * Failure modes: 5xx, 408, 429 and network failures are retried with exponential backoff and jitter (and
 *   Retry-After) up to MAX_ATTEMPTS; any other answer fails at once and is shown on the page.
 * Known limits: delivery is at least once: an instance that dies after the receiver answered and before it
 *   recorded the answer leaves the notification to be sent again when its lease runs out. A problem that
 *   begins and ends between two passes is not seen. Token Status Error is timed from when the notifier
 *   first saw it (the token service rewrites the status time on every retry).
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { describeError, type Logger } from '../log.js';
import { TOKEN_STATUS_LABELS, type TokenStatus } from '../oauth/accounts.js';
import { PROVIDER_LABELS } from '../oauth/profiles.js';
import type { AuditLog } from '../store/audit.js';
import type { NotificationStateTable, ProviderId } from '../store/schema.js';
import type { Store } from '../store/store.js';
import type { TlsPolicy } from '../tls/trust.js';
import { EVENT_LABELS, PROBLEM_THRESHOLD_MS, type Notice, type NotificationEvent } from './events.js';
import { renderPayload } from './payloads.js';
import { displayWebhookUrl, type NotificationSettings, type NotificationSettingsView } from './settings.js';
import { postWebhook, type Fetch, type WebhookAnswer } from './webhook.js';

/** How webhooks reach the network: the OAuth HTTP layer's fetch for a TLS policy (oauth/http.ts). */
export interface WebhookHttp {
  fetchFor(policy: TlsPolicy): Promise<Fetch>;
}

export interface NotifierOptions {
  store: Store;
  settings: NotificationSettings;
  http: WebhookHttp;
  audit: AuditLog;
  log: Logger;
  /** The Remote UI's address for links when the administrator's is not known (scheme://host:port). */
  remoteUiBase: () => string;
  /** How long held messages wait before they are returned to their senders (QueueTuning.lifetimeMs). */
  messageLifetimeMs: number;
  now?: () => number;
  random?: () => number;
  pollMs?: number;
  retryBaseMs?: number;
  instanceId?: string;
}

export const MAX_ATTEMPTS = 4;
const POLL_MS = 30_000;
const RETRY_BASE_MS = 30_000;
const RETRY_MAX_MS = 60 * 60_000;
const LEASE_MS = 60_000;
/** Bounces older than this when first seen are not reported (webhook configured or events turned on later). */
const BOUNCE_LOOKBACK_MS = 60 * 60_000;
const BOUNCE_BATCH = 200;
const RETENTION_MS = 30 * 24 * 60 * 60_000;
const PRUNE_EVERY_MS = 60 * 60_000;
/** Webhooks are always verified: system roots, NODE_EXTRA_CA_CERTS and CA Certificate Settings, and the host name. */
const VERIFY: TlsPolicy = { verifyServerCertificate: true, addCnToVerificationItems: true };

/** A notice before the pass fills in time, instance and the absolute link. */
type Draft = Omit<Notice, 'at' | 'instance' | 'link'> & { path: string };

/** What one look at the store says about one event key. */
interface Condition {
  key: string;
  event: NotificationEvent;
  /** active: the problem is there; clear: it is over; unchanged: neither (e.g. re-authorization under way). */
  state: 'active' | 'clear' | 'unchanged';
  /** When the problem began as far as the store tells; `sticky`: keep the first value seen. */
  since: number;
  sticky: boolean;
  thresholdMs: number;
  problem: () => Draft;
  /** null: close without a notification. */
  resolution: () => Draft | null;
}

export interface NotificationRecord {
  id: number;
  event: string;
  eventLabel: string;
  phase: Notice['phase'];
  title: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  httpStatus: number | null;
  result: string | null;
  createdAt: number;
  doneAt: number | null;
  nextAttemptAt: number;
}

export interface TestResult {
  ok: boolean;
  httpStatus: number | null;
  summary: string;
}

type StateRow = NotificationStateTable;

export class Notifier {
  readonly #store: Store;
  readonly #settings: NotificationSettings;
  readonly #http: WebhookHttp;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #remoteUiBase: () => string;
  readonly #lifetimeMs: number;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #pollMs: number;
  readonly #retryBaseMs: number;
  readonly #owner: string;
  readonly #instance = hostname();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> = Promise.resolve();
  #lastPrune = 0;

  constructor(options: NotifierOptions) {
    this.#store = options.store;
    this.#settings = options.settings;
    this.#http = options.http;
    this.#audit = options.audit;
    this.#log = options.log.child({ component: 'notify' });
    this.#remoteUiBase = options.remoteUiBase;
    this.#lifetimeMs = options.messageLifetimeMs;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.#pollMs = options.pollMs ?? POLL_MS;
    this.#retryBaseMs = options.retryBaseMs ?? RETRY_BASE_MS;
    this.#owner = `notify-${options.instanceId ?? randomUUID()}`;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.tick(), this.#pollMs);
    this.#timer.unref();
    void this.tick();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /**
   * One pass: look at the store, queue what changed, deliver what is due. Passes of one instance run one at
   * a time; `now` may be given (tests move time forward instead of waiting).
   */
  tick(now?: number): Promise<void> {
    const run = this.#running.then(() => this.#pass(now ?? this.#now())).catch((error) => this.#log.error({ err: describeError(error) }, 'notification pass failed'));
    this.#running = run;
    return run;
  }

  async #pass(now: number): Promise<void> {
    const settings = await this.#settings.get();
    if (!settings.configured) return;
    await this.#detect(settings, now);
    await this.#deliverDue(now);
    if (now - this.#lastPrune > PRUNE_EVERY_MS) {
      this.#lastPrune = now;
      await this.#store.db.deleteFrom('notifications').where('status', '!=', 'pending').where('done_at', '<', now - RETENTION_MS).execute();
    }
  }

  // ---- detection --------------------------------------------------------------------------------------

  async #detect(settings: NotificationSettingsView, now: number): Promise<void> {
    const enabled = new Set(settings.events);
    const conditions: Condition[] = [];
    if (enabled.has('token-expired') || enabled.has('token-error') || enabled.has('connection-failed')) {
      conditions.push(...(await this.#accountConditions(now)).filter((c) => enabled.has(c.event)));
    }
    if (enabled.has('messages-held')) conditions.push(await this.#heldCondition(now));
    const base = (settings.linkBase ?? this.#remoteUiBase()).replace(/\/+$/, '');
    for (const condition of conditions) await this.#apply(condition, base, now);
    if (enabled.has('message-bounced')) await this.#bounces(base, now);
  }

  #complete(draft: Draft, base: string, now: number): Notice {
    const { path, ...rest } = draft;
    return { ...rest, link: `${base}${path}`, at: now, instance: this.#instance };
  }

  /** The state machine of one event key: idle → (pending →) open → idle; each change one conditional write. */
  async #apply(condition: Condition, base: string, now: number): Promise<void> {
    const row = await this.#stateRow(condition.key, now);
    if (condition.state === 'unchanged') return;
    if (condition.state === 'active') {
      if (row.phase === 'open') return;
      const since = row.phase === 'pending' && condition.sticky && row.since !== null ? Number(row.since) : Math.min(condition.since, now);
      if (now - since >= condition.thresholdMs) {
        await this.#transition(row, { phase: 'open', since, opened_at: now }, [this.#complete(condition.problem(), base, now)], now);
      } else if (row.phase !== 'pending' || Number(row.since) !== since) {
        await this.#transition(row, { phase: 'pending', since }, [], now);
      }
      return;
    }
    if (row.phase === 'idle') return;
    const resolution = row.phase === 'open' ? condition.resolution() : null;
    await this.#transition(row, { phase: 'idle', since: null, opened_at: null }, resolution ? [this.#complete(resolution, base, now)] : [], now);
  }

  async #stateRow(key: string, now: number, cursor: number | null = null): Promise<StateRow> {
    const db = this.#store.db;
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
  async #transition(row: StateRow, patch: Partial<Pick<StateRow, 'phase' | 'since' | 'opened_at' | 'cursor'>>, notices: Notice[], now: number): Promise<boolean> {
    return this.#store.db.transaction().execute(async (trx) => {
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

  async #sendingAccount(): Promise<string> {
    const row = await this.#store.db.selectFrom('email_settings').select('account_id').where('id', '=', 'default').executeTakeFirst();
    return row?.account_id ?? 'microsoft';
  }

  async #accountConditions(now: number): Promise<Condition[]> {
    const rows = await this.#store.db.selectFrom('oauth_accounts').selectAll().execute();
    const sending = await this.#sendingAccount();
    const lifetime = duration(this.#lifetimeMs);
    const conditions: Condition[] = [];
    for (const row of rows) {
      const id = row.id as ProviderId;
      const label = PROVIDER_LABELS[id] ?? row.id;
      const enabled = row.enabled === 1;
      const status = row.token_status;
      const mailbox = row.mailbox ?? 'the authorized mailbox';
      const path = `/settings/send/oauth-${id}`;
      const linkLabel = `Open ${label} Settings`;
      const heldNote =
        id === sending
          ? ` Devices still get 250 for their messages, which are held in the queue and returned to their senders after ${lifetime} if this is not fixed.`
          : '';
      const tokenFacts = (): Draft['facts'] => [
        { name: 'Token Status', value: statusLabel(status) },
        ...(row.mailbox ? [{ name: 'Mailbox', value: row.mailbox }] : []),
        ...(row.token_error ? [{ name: 'Provider message', value: row.token_error }] : []),
      ];
      const activeAgain = (event: NotificationEvent): Draft => ({
        event,
        phase: 'resolved',
        title: `${label}: Token Status is Active again`,
        text: `Postern can get access tokens for ${mailbox} again${id === sending ? ' and delivers held messages now' : ''}.`,
        facts: tokenFacts(),
        path,
        linkLabel,
      });

      conditions.push({
        key: `token-expired:${id}`,
        event: 'token-expired',
        state: enabled && status === 'Expired' ? 'active' : !enabled || status === 'Active' || status === 'NotRegistered' ? 'clear' : 'unchanged',
        since: Number(row.token_status_at),
        sticky: false,
        thresholdMs: 0,
        problem: () => ({
          event: 'token-expired',
          phase: 'problem',
          title: `${label}: Token Status is Expired`,
          text: `The authorization expired: Postern can no longer get access tokens for ${mailbox}, so it cannot send mail. Re-authorization is required.${heldNote}`,
          advice:
            row.token_advice ??
            (id === 'google'
              ? 'Open OAuth 2.0 (Google) Settings and register the authorization again (Register).'
              : 'Open OAuth 2.0 (Microsoft) Settings, click Get New User Code and sign in again.'),
          facts: tokenFacts(),
          path,
          linkLabel,
        }),
        resolution: () =>
          status === 'Active'
            ? activeAgain('token-expired')
            : {
                event: 'token-expired',
                phase: 'resolved',
                title: `${label}: no longer Expired`,
                text: enabled ? `Token Status is now ${statusLabel(status)}.` : `Use ${label} was turned off.`,
                facts: [],
                path,
                linkLabel,
              },
      });

      conditions.push({
        key: `token-error:${id}`,
        event: 'token-error',
        state: enabled && status === 'Error' ? 'active' : 'clear',
        since: Number(row.token_status_at),
        sticky: true,
        thresholdMs: PROBLEM_THRESHOLD_MS,
        problem: () => ({
          event: 'token-error',
          phase: 'problem',
          title: `${label}: Token Status has been Error for more than 15 minutes`,
          text: `Postern cannot refresh the access token for ${mailbox}: ${row.token_error ?? 'the token request failed'}. It keeps the authorization and keeps trying.${heldNote}`,
          advice: [row.token_advice, 'If this lasts, check Server Connection Status and the network path to the authorization server (DNS, firewall, proxy).']
            .filter(Boolean)
            .join(' '),
          facts: tokenFacts(),
          path,
          linkLabel,
        }),
        // Error that became Expired is reported as Expired; only a recovery is worth a message of its own.
        resolution: () => (status === 'Active' ? activeAgain('token-error') : null),
      });

      const connection = row.connection_status;
      conditions.push({
        key: `connection-failed:${id}`,
        event: 'connection-failed',
        state: enabled && connection === 'ConnectionFailed' ? 'active' : !enabled || connection === 'SuccessfullyConnected' || connection === null ? 'clear' : 'unchanged',
        since: Number(row.connection_checked_at ?? now),
        sticky: false,
        thresholdMs: 0,
        problem: () => ({
          event: 'connection-failed',
          phase: 'problem',
          title: `${label}: Server Connection Status is Connection Failed`,
          text: row.connection_detail ?? 'Postern could not connect to the authorization server.',
          facts: [
            { name: 'Server Connection Status', value: 'Connection Failed' },
            ...(row.connection_checked_at ? [{ name: 'Checked at', value: utc(Number(row.connection_checked_at)) }] : []),
          ],
          path,
          linkLabel,
        }),
        resolution: () =>
          connection === 'SuccessfullyConnected'
            ? {
                event: 'connection-failed',
                phase: 'resolved',
                title: `${label}: Successfully Connected again`,
                text: row.connection_detail ?? 'Postern reaches the authorization server again.',
                facts: [{ name: 'Server Connection Status', value: 'Successfully Connected' }],
                path,
                linkLabel,
              }
            : null,
      });
    }
    return conditions;
  }

  async #heldCondition(now: number): Promise<Condition> {
    const db = this.#store.db;
    const held = await db.selectFrom('queue_messages').select((eb) => eb.fn.countAll<number>().as('n')).where('state', '=', 'held').executeTakeFirst();
    const count = Number(held?.n ?? 0);
    let since = now;
    let over = 0;
    let reason: { last_reply: string | null; last_advice: string | null } | undefined;
    if (count > 0) {
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
          eb.fn.sum<number>(eb.case().when('h.held_at', '<=', now - PROBLEM_THRESHOLD_MS).then(1).else(0).end()).as('over'),
        ])
        .executeTakeFirst();
      if (stats?.oldest !== null && stats?.oldest !== undefined) since = Number(stats.oldest);
      over = Number(stats?.over ?? 0);
      // Held messages share one reason (the sending account's); the oldest's words stand for all.
      reason = await db
        .selectFrom('queue_messages')
        .select(['last_reply', 'last_advice'])
        .where('state', '=', 'held')
        .orderBy('received_at')
        .limit(1)
        .executeTakeFirst();
    }
    const lifetime = duration(this.#lifetimeMs);
    return {
      key: 'messages-held',
      event: 'messages-held',
      state: count > 0 ? 'active' : 'clear',
      since,
      sticky: false,
      thresholdMs: PROBLEM_THRESHOLD_MS,
      problem: () => ({
        event: 'messages-held',
        phase: 'problem',
        title: `${over === 1 ? '1 message has' : `${over} messages have`} been held for more than 15 minutes`,
        text: `Devices got 250 for ${over === 1 ? 'this message' : 'these messages'}, but Postern cannot send ${over === 1 ? 'it' : 'them'}: ${reason?.last_reply ?? 'the sending account has no usable token'}. Held messages are sent as soon as the sending account can sign in again, and returned to their senders after ${lifetime}.`,
        advice: reason?.last_advice ?? undefined,
        facts: [
          { name: 'Held messages', value: String(count) },
          { name: 'Held since', value: utc(since) },
        ],
        path: '/settings/queue',
        linkLabel: 'Open the Queue',
      }),
      resolution: () => ({
        event: 'messages-held',
        phase: 'resolved',
        title: 'Held messages are flowing again',
        text: 'No message is held any more: Postern is delivering the queue.',
        facts: [],
        path: '/settings/queue',
        linkLabel: 'Open the Queue',
      }),
    };
  }

  /** Messages returned to their senders since the last pass: one notification for all of them. */
  async #bounces(base: string, now: number): Promise<void> {
    const db = this.#store.db;
    const latest = await db.selectFrom('delivery_log').select((eb) => eb.fn.max<number>('id').as('id')).executeTakeFirst();
    const row = await this.#stateRow('message-bounced', now, Number(latest?.id ?? 0));
    const cursor = Number(row.cursor ?? 0);
    const entries = await db
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
      .where('delivery_log.id', '>', cursor)
      .orderBy('delivery_log.id')
      .limit(BOUNCE_BATCH)
      .execute();
    if (entries.length === 0) return;
    const next = Number(entries[entries.length - 1]!.id);
    const messages = new Map<string, (typeof entries)[number] & { all: string[] }>();
    for (const entry of entries) {
      if (Number(entry.at) < now - BOUNCE_LOOKBACK_MS) continue;
      const known = messages.get(entry.queue_id);
      if (known) known.all.push(entry.recipients ?? '');
      else messages.set(entry.queue_id, { ...entry, all: [entry.recipients ?? ''] });
    }
    const list = [...messages.values()];
    const notices: Notice[] = [];
    if (list.length > 0) {
      const returned = (m: (typeof list)[number]) => m.reverse_path !== null && m.reverse_path !== '' && m.is_bounce !== 1;
      const line = (m: (typeof list)[number]) =>
        `From ${m.reverse_path || '<>'} to ${m.all.filter(Boolean).join(', ')}${m.subject ? `, subject "${m.subject}"` : ''}: ${m.code && m.reply && !m.reply.startsWith(String(m.code)) ? `${m.code} ` : ''}${m.reply ?? 'not delivered'}${returned(m) ? '' : ' (no sender to return it to)'}`;
      const single = list.length === 1;
      const shown = list.slice(0, 5);
      notices.push(
        this.#complete(
          {
            event: 'message-bounced',
            phase: 'problem',
            title: single ? 'A message could not be delivered and was returned to its sender' : `${list.length} messages could not be delivered and were returned to their senders`,
            text: shown.map(line).join('\n') + (list.length > shown.length ? `\n… and ${list.length - shown.length} more (see the Log).` : ''),
            advice: list.find((m) => m.advice)?.advice ?? undefined,
            facts: [],
            path: single ? `/settings/log?id=${list[0]!.queue_id}` : '/settings/log',
            linkLabel: 'Open the Log',
          },
          base,
          now,
        ),
      );
    }
    await this.#transition(row, { cursor: next }, notices, now);
  }

  // ---- delivery ---------------------------------------------------------------------------------------

  /** Sends due notifications in the order they were made; stops at the first that is not due yet. */
  async #deliverDue(now: number): Promise<void> {
    const db = this.#store.db;
    const url = await this.#settings.webhookUrl();
    if (!url) return;
    const { format } = await this.#settings.get();
    const pending = await db.selectFrom('notifications').selectAll().where('status', '=', 'pending').orderBy('id').limit(20).execute();
    for (const row of pending) {
      if (Number(row.next_attempt_at) > now) return;
      if (row.lease_until !== null && Number(row.lease_until) >= now && row.lease_owner !== this.#owner) return;
      const leased = await db
        .updateTable('notifications')
        .set({ lease_owner: this.#owner, lease_until: now + LEASE_MS })
        .where('id', '=', row.id)
        .where('status', '=', 'pending')
        .where('attempts', '=', row.attempts)
        .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now), eb('lease_owner', '=', this.#owner)]))
        .executeTakeFirst();
      if (Number(leased.numUpdatedRows) !== 1) return;
      const notice = JSON.parse(row.notice) as Notice;
      const answer = await postWebhook(await this.#http.fetchFor(VERIFY), url, renderPayload(format, notice));
      const attempts = row.attempts + 1;
      const fields = { notification: Number(row.id), event: row.event, receiver: displayWebhookUrl(url), httpStatus: answer.httpStatus, attempts };
      if (answer.outcome === 'delivered') {
        await this.#record(Number(row.id), { status: 'delivered', attempts, http_status: answer.httpStatus, result: answer.summary, done_at: now, next_attempt_at: Number(row.next_attempt_at) });
        this.#log.info(fields, 'notification delivered');
      } else if (answer.outcome === 'retry' && attempts < MAX_ATTEMPTS) {
        const backoff = Math.min(this.#retryBaseMs * 2 ** (attempts - 1), RETRY_MAX_MS) * (0.8 + 0.4 * this.#random());
        const next = now + Math.round(Math.min(Math.max(backoff, answer.retryAfterMs ?? 0), RETRY_MAX_MS));
        await this.#record(Number(row.id), { status: 'pending', attempts, http_status: answer.httpStatus, result: answer.summary, done_at: null, next_attempt_at: next });
        this.#log.warn({ ...fields, reason: answer.summary, nextAttemptAt: next }, 'notification not delivered; trying again');
        return; // the next ones wait for this one: same receiver, same order
      } else {
        const result = answer.outcome === 'retry' ? `${answer.summary} Postern gave up after ${attempts} attempts.` : answer.summary;
        await this.#record(Number(row.id), { status: 'failed', attempts, http_status: answer.httpStatus, result, done_at: now, next_attempt_at: Number(row.next_attempt_at) });
        this.#log.warn({ ...fields, reason: result }, 'notification could not be delivered');
        await this.#audit.record(null, 'notification.failed', `${row.title}: ${result}`);
      }
    }
  }

  async #record(
    id: number,
    patch: { status: 'pending' | 'delivered' | 'failed'; attempts: number; http_status: number | null; result: string; done_at: number | null; next_attempt_at: number },
  ): Promise<void> {
    await this.#store.db
      .updateTable('notifications')
      .set({ ...patch, lease_owner: null, lease_until: null })
      .where('id', '=', id)
      .where('lease_owner', '=', this.#owner)
      .execute();
  }

  // ---- the Notifications page ------------------------------------------------------------------------

  /** Send Test Notification: one POST to the saved webhook, no retries; recorded like any notification. */
  async sendTest(actor: string, linkBase: string | null): Promise<TestResult> {
    const url = await this.#settings.webhookUrl();
    if (!url) return { ok: false, httpStatus: null, summary: 'Save a Webhook URL first.' };
    const settings = await this.#settings.get();
    const now = this.#now();
    const base = (linkBase ?? settings.linkBase ?? this.#remoteUiBase()).replace(/\/+$/, '');
    const notice: Notice = {
      event: 'test',
      phase: 'test',
      title: 'Postern: test notification',
      text: `${actor} sent this test from the Notifications page. When sending needs attention (Token Status Expired or Error, Connection Failed, held or returned messages), Postern notifies this receiver like this.`,
      facts: [{ name: 'Events', value: settings.events.map((e) => EVENT_LABELS[e]).join('; ') || 'none selected' }],
      link: `${base}/settings/notifications`,
      linkLabel: 'Open Notifications',
      at: now,
      instance: this.#instance,
    };
    let answer: WebhookAnswer;
    try {
      answer = await postWebhook(await this.#http.fetchFor(VERIFY), url, renderPayload(settings.format, notice));
    } catch (error) {
      answer = { outcome: 'failed', httpStatus: null, summary: `The test notification could not be sent: ${describeError(error).message}` };
    }
    const ok = answer.outcome === 'delivered';
    await this.#store.db
      .insertInto('notifications')
      .values({
        event: 'test',
        phase: 'test',
        title: notice.title,
        notice: JSON.stringify(notice),
        status: ok ? 'delivered' : 'failed',
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
    const fields = { event: 'test', receiver: displayWebhookUrl(url), httpStatus: answer.httpStatus };
    if (ok) this.#log.info(fields, 'test notification delivered');
    else this.#log.warn({ ...fields, reason: answer.summary }, 'test notification not delivered');
    return { ok, httpStatus: answer.httpStatus, summary: answer.summary };
  }

  /** Notifications still waiting are not sent (the Webhook URL was deleted). */
  async cancelPending(reason: string): Promise<void> {
    await this.#store.db
      .updateTable('notifications')
      .set({ status: 'failed', result: reason, done_at: this.#now(), lease_owner: null, lease_until: null })
      .where('status', '=', 'pending')
      .execute();
  }

  /** The latest notifications, newest first. */
  async recent(limit = 10): Promise<NotificationRecord[]> {
    const rows = await this.#store.db.selectFrom('notifications').selectAll().orderBy('id', 'desc').limit(limit).execute();
    return rows.map((row) => ({
      id: Number(row.id),
      event: row.event,
      eventLabel: row.event === 'test' ? 'Test notification' : (EVENT_LABELS[row.event as NotificationEvent] ?? row.event),
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

function statusLabel(status: string): string {
  return TOKEN_STATUS_LABELS[status as TokenStatus] ?? status;
}

/** "5 days", "3 hours", "1 minute": how long held messages wait before they are returned. */
function duration(ms: number): string {
  const [value, unit] = ms >= 86_400_000 ? [ms / 86_400_000, 'day'] : ms >= 3_600_000 ? [ms / 3_600_000, 'hour'] : [Math.max(1, ms / 60_000), 'minute'];
  const n = Math.round(value as number);
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

function utc(ms: number): string {
  return `${new Date(ms).toISOString().replace('T', ' ').slice(0, 19)} UTC`;
}
