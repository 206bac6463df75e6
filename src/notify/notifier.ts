/**
 * The notifier: tells administrators through a webhook when sending needs attention, because Postern cannot
 * reliably e-mail them through the very mailbox that is failing.
 *
 * Purpose: one notification per occurrence of a problem, and one more when it is over. This module wires the
 *   parts and runs the passes; each part has its own job:
 *   - notify/attention.ts: what needs attention (conditions from accounts, held and returned messages);
 *   - notify/outbox.ts: the state machine and the outbox (once per occurrence across instances);
 *   - notify/delivery.ts and notify/webhook.ts: sending the outbox, with retries;
 *   - notify/wording.ts and notify/payloads.ts: the words, and the receiver's format.
 * Inputs: the store, read every `pollMs` (30 s) through the owners of its tables, and the Notifications
 *   settings. Events: Token Status became Expired; Token Status in Error for 15 minutes; Server Connection
 *   Status Connection Failed; messages held for 15 minutes; messages returned to their senders (batched per
 *   pass).
 * Outputs: notifications queued and sent (see the parts); Send Test Notification; the latest notifications for
 *   the Notifications page. A failed pass is logged and the next one tries again.
 * Known limits: see the parts (delivery is at least once; a problem shorter than a pass is not seen).
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { describeError, type Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import type { Store } from '../store/store.js';
import { Attention } from './attention.js';
import { OutboxDelivery, type WebhookHttp } from './delivery.js';
import type { Condition, Draft, Notice } from './events.js';
import { NotificationOutbox, type NotificationRecord } from './outbox.js';
import { displayWebhookUrl, type NotificationSettings, type NotificationSettingsView } from './settings.js';
import type { WebhookAnswer } from './webhook.js';
import { testNotification } from './wording.js';

export { MAX_ATTEMPTS, type WebhookHttp } from './delivery.js';
export type { NotificationRecord } from './outbox.js';

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

export interface TestResult {
  ok: boolean;
  httpStatus: number | null;
  summary: string;
}

const POLL_MS = 30_000;
const RETRY_BASE_MS = 30_000;
const RETENTION_MS = 30 * 24 * 60 * 60_000;
const PRUNE_EVERY_MS = 60 * 60_000;

export class Notifier {
  readonly #settings: NotificationSettings;
  readonly #log: Logger;
  readonly #remoteUiBase: () => string;
  readonly #now: () => number;
  readonly #pollMs: number;
  readonly #instance = hostname();
  readonly #attention: Attention;
  readonly #outbox: NotificationOutbox;
  readonly #delivery: OutboxDelivery;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> = Promise.resolve();
  #lastPrune = 0;

  constructor(options: NotifierOptions) {
    this.#settings = options.settings;
    this.#log = options.log.child({ component: 'notify' });
    this.#remoteUiBase = options.remoteUiBase;
    this.#now = options.now ?? Date.now;
    this.#pollMs = options.pollMs ?? POLL_MS;
    this.#attention = new Attention(options.store, options.messageLifetimeMs);
    this.#outbox = new NotificationOutbox(options.store);
    this.#delivery = new OutboxDelivery({
      outbox: this.#outbox,
      settings: options.settings,
      http: options.http,
      audit: options.audit,
      log: this.#log,
      owner: `notify-${options.instanceId ?? randomUUID()}`,
      retryBaseMs: options.retryBaseMs ?? RETRY_BASE_MS,
      random: options.random ?? Math.random,
    });
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
    await this.#delivery.deliverDue(now);
    if (now - this.#lastPrune > PRUNE_EVERY_MS) {
      this.#lastPrune = now;
      await this.#outbox.prune(now - RETENTION_MS);
    }
  }

  async #detect(settings: NotificationSettingsView, now: number): Promise<void> {
    const enabled = new Set(settings.events);
    const conditions: Condition[] = [];
    if (enabled.has('token-expired') || enabled.has('token-error') || enabled.has('connection-failed')) {
      conditions.push(...(await this.#attention.accountConditions(now)).filter((c) => enabled.has(c.event)));
    }
    if (enabled.has('messages-held')) conditions.push(await this.#attention.heldCondition(now));
    const base = (settings.linkBase ?? this.#remoteUiBase()).replace(/\/+$/, '');
    const complete = (draft: Draft) => this.#complete(draft, base, now);
    for (const condition of conditions) await this.#outbox.apply(condition, complete, now);
    if (enabled.has('message-bounced')) await this.#returned(complete, now);
  }

  /** Messages returned to their senders since the last pass: one notification for all of them. */
  async #returned(complete: (draft: Draft) => Notice, now: number): Promise<void> {
    // A cursor made now starts after the latest log entry: returns from before notifications were on are old news.
    const row = await this.#outbox.stateRow('message-bounced', now, await this.#attention.latestLogId());
    const returned = await this.#attention.returnedSince(Number(row.cursor ?? 0), now);
    if (!returned) return;
    await this.#outbox.transition(row, { cursor: returned.next }, returned.draft ? [complete(returned.draft)] : [], now);
  }

  #complete(draft: Draft, base: string, now: number): Notice {
    const { path, ...rest } = draft;
    return { ...rest, link: `${base}${path}`, at: now, instance: this.#instance };
  }

  // ---- the Notifications page ------------------------------------------------------------------------

  /** Send Test Notification: one POST to the saved webhook, no retries; recorded like any notification. */
  async sendTest(actor: string, linkBase: string | null): Promise<TestResult> {
    const url = await this.#settings.webhookUrl();
    if (!url) return { ok: false, httpStatus: null, summary: 'Save a Webhook URL first.' };
    const settings = await this.#settings.get();
    const now = this.#now();
    const base = (linkBase ?? settings.linkBase ?? this.#remoteUiBase()).replace(/\/+$/, '');
    const notice = this.#complete(testNotification(actor, settings.events), base, now);
    let answer: WebhookAnswer;
    try {
      answer = await this.#delivery.post(url, settings.format, notice);
    } catch (error) {
      answer = { outcome: 'failed', httpStatus: null, summary: `The test notification could not be sent: ${describeError(error).message}` };
    }
    const ok = answer.outcome === 'delivered';
    await this.#outbox.recordSent(notice, { delivered: ok, httpStatus: answer.httpStatus, summary: answer.summary }, now);
    const fields = { event: 'test', receiver: displayWebhookUrl(url), httpStatus: answer.httpStatus };
    if (ok) this.#log.info(fields, 'test notification delivered');
    else this.#log.warn({ ...fields, reason: answer.summary }, 'test notification not delivered');
    return { ok, httpStatus: answer.httpStatus, summary: answer.summary };
  }

  /** Notifications still waiting are not sent (the Webhook URL was deleted). */
  async cancelPending(reason: string): Promise<void> {
    await this.#outbox.cancelPending(reason, this.#now());
  }

  /** The latest notifications, newest first. */
  async recent(limit = 10): Promise<NotificationRecord[]> {
    return this.#outbox.recent(limit);
  }
}
