/**
 * Delivery of the outbox: queued notifications POSTed to the webhook (notify/webhook.ts), one receiver, in
 * the order they were made, each under a lease so that of several instances one sends it.
 *
 * Inputs: pending rows of the outbox (notify/outbox.ts), the Webhook URL and format (notify/settings.ts).
 * Outputs: each notification's answer recorded in the outbox; a log line per attempt; an audit entry for a
 *   notification that could not be delivered. The webhook URL is never logged: receivers appear as
 *   scheme://host/… only.
 * Failure modes: 5xx, 408, 429 and network failures are retried with exponential backoff and jitter (and
 *   Retry-After) up to MAX_ATTEMPTS, and the notifications after it wait (same receiver, same order); any
 *   other answer fails at once and is shown on the Notifications page.
 */
import type { Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import type { TlsPolicy } from '../tls/trust.js';
import type { Notice } from './events.js';
import type { NotificationOutbox } from './outbox.js';
import { renderPayload } from './payloads.js';
import { displayWebhookUrl, type NotificationSettings } from './settings.js';
import { postWebhook, type Fetch, type WebhookAnswer } from './webhook.js';

/** How webhooks reach the network: the OAuth HTTP layer's fetch for a TLS policy (oauth/http.ts). */
export interface WebhookHttp {
  fetchFor(policy: TlsPolicy): Promise<Fetch>;
}

export const MAX_ATTEMPTS = 4;
const RETRY_MAX_MS = 60 * 60_000;
const LEASE_MS = 60_000;
const BATCH = 20;
/** Webhooks are always verified: system roots, NODE_EXTRA_CA_CERTS and CA Certificate Settings, and the host name. */
const VERIFY: TlsPolicy = { verifyServerCertificate: true, addCnToVerificationItems: true };

export interface DeliveryOptions {
  outbox: NotificationOutbox;
  settings: NotificationSettings;
  http: WebhookHttp;
  audit: AuditLog;
  log: Logger;
  /** Who holds the leases this instance takes. */
  owner: string;
  retryBaseMs: number;
  random: () => number;
}

export class OutboxDelivery {
  constructor(private readonly options: DeliveryOptions) {}

  /** One POST of `notice` to `url` in the format `format`, TLS verified. */
  async post(url: string, format: Parameters<typeof renderPayload>[0], notice: Notice): Promise<WebhookAnswer> {
    return postWebhook(await this.options.http.fetchFor(VERIFY), url, renderPayload(format, notice));
  }

  /** Sends due notifications in the order they were made; stops at the first that is not due yet. */
  async deliverDue(now: number): Promise<void> {
    const { outbox, settings, owner, log } = this.options;
    const url = await settings.webhookUrl();
    if (!url) return;
    const { format } = await settings.get();
    for (const row of await outbox.pending(BATCH)) {
      if (Number(row.next_attempt_at) > now) return;
      if (row.lease_until !== null && Number(row.lease_until) >= now && row.lease_owner !== owner) return;
      if (!(await outbox.lease(row, owner, now, now + LEASE_MS))) return;
      const id = Number(row.id);
      const answer = await this.post(url, format, JSON.parse(row.notice) as Notice);
      const attempts = row.attempts + 1;
      const fields = { notification: id, event: row.event, receiver: displayWebhookUrl(url), httpStatus: answer.httpStatus, attempts };
      if (answer.outcome === 'delivered') {
        await outbox.record(id, owner, { status: 'delivered', attempts, http_status: answer.httpStatus, result: answer.summary, done_at: now, next_attempt_at: Number(row.next_attempt_at) });
        log.info(fields, 'notification delivered');
      } else if (answer.outcome === 'retry' && attempts < MAX_ATTEMPTS) {
        const backoff = Math.min(this.options.retryBaseMs * 2 ** (attempts - 1), RETRY_MAX_MS) * (0.8 + 0.4 * this.options.random());
        const next = now + Math.round(Math.min(Math.max(backoff, answer.retryAfterMs ?? 0), RETRY_MAX_MS));
        await outbox.record(id, owner, { status: 'pending', attempts, http_status: answer.httpStatus, result: answer.summary, done_at: null, next_attempt_at: next });
        log.warn({ ...fields, reason: answer.summary, nextAttemptAt: next }, 'notification not delivered; trying again');
        return; // the next ones wait for this one: same receiver, same order
      } else {
        const result = answer.outcome === 'retry' ? `${answer.summary} Postern gave up after ${attempts} attempts.` : answer.summary;
        await outbox.record(id, owner, { status: 'failed', attempts, http_status: answer.httpStatus, result, done_at: now, next_attempt_at: Number(row.next_attempt_at) });
        log.warn({ ...fields, reason: result }, 'notification could not be delivered');
        await this.options.audit.record(null, 'notification.failed', `${row.title}: ${result}`);
      }
    }
  }
}
