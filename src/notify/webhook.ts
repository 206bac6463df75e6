/**
 * One webhook POST, and what the receiver's answer means in plain words.
 *
 * The request goes through the fetch the OAuth HTTP layer builds (src/oauth/http.ts): undici with TLS
 * verification on against the system roots, NODE_EXTRA_CA_CERTS and the CAs registered in CA Certificate
 * Settings, and the outbound proxy when one is configured. Redirects are not followed: a redirect would carry
 * the notification (and whatever the receiver expects with it) to an address the administrator never entered.
 *
 * Outcomes: `delivered` (2xx); `retry` (5xx, 408, 429, network and TLS failures: worth trying again);
 * `failed` (any other answer: the receiver refused, and trying again cannot help).
 * Nothing here logs; texts name the receiver as scheme://host/… only.
 */
import { STATUS_CODES } from 'node:http';
import { scrubSecrets } from '../log.js';
import { classifyConnectionError } from '../tls/trust.js';
import { displayWebhookUrl } from './settings.js';

export type Fetch = (url: string, init: RequestInit) => Promise<Response>;

export interface WebhookAnswer {
  outcome: 'delivered' | 'retry' | 'failed';
  /** null when no HTTP answer came (network, TLS, timeout). */
  httpStatus: number | null;
  /** What the receiver answered, and what to do, in plain words. */
  summary: string;
  /** How long the receiver asked to wait (Retry-After), when it did. */
  retryAfterMs?: number | undefined;
}

export const WEBHOOK_TIMEOUT_MS = 15_000;
const MAX_ANSWER_CHARS = 300;

export async function postWebhook(fetch: Fetch, url: string, body: unknown, timeoutMs = WEBHOOK_TIMEOUT_MS): Promise<WebhookAnswer> {
  const target = new URL(url);
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-8', 'user-agent': 'Postern' },
      body: JSON.stringify(body),
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await response.text().catch(() => '');
  } catch (error) {
    const failure = classifyConnectionError(error, target.host);
    return { outcome: 'retry', httpStatus: null, summary: `The notification did not reach ${displayWebhookUrl(target)}: ${withoutUrl(failure.reason, target)}` };
  }
  return describeAnswer(response.status, receiverText(text, target), retryAfter(response.headers.get('retry-after')));
}

/** HTTP 404 Not Found, HTTP 202 Accepted … */
export function httpStatusText(status: number): string {
  const reason = STATUS_CODES[status];
  return reason ? `HTTP ${status} ${reason}` : `HTTP ${status}`;
}

/** The meaning of a receiver's HTTP status, in plain words. `said`: the start of the receiver's answer. */
export function describeAnswer(status: number, said = '', retryAfterMs?: number): WebhookAnswer {
  const http = httpStatusText(status);
  const quote = said ? ` The receiver said: "${said}".` : '';
  if (status >= 200 && status < 300) {
    return { outcome: 'delivered', httpStatus: status, summary: `The receiver accepted the notification (${http}).` };
  }
  if (status >= 300 && status < 400) {
    return {
      outcome: 'failed',
      httpStatus: status,
      summary: `The receiver answered ${http}, a redirect to another address. Postern does not follow redirects with a webhook: enter the webhook's final URL.`,
    };
  }
  if (status === 408 || status === 429) {
    return { outcome: 'retry', httpStatus: status, summary: `The receiver is busy (${http}) and asked to try again later.${quote}`, retryAfterMs };
  }
  if (status >= 500) {
    return {
      outcome: 'retry',
      httpStatus: status,
      summary: `The receiver failed (${http}): a problem on the receiver's side, not in Postern's settings.${quote}`,
      retryAfterMs,
    };
  }
  let meaning: string;
  if (status === 404 || status === 410) {
    meaning = `there is no webhook at this address. It may have been deleted (or its workflow turned off), or the URL is incomplete. Copy the Webhook URL again from the receiver.`;
  } else if (status === 401 || status === 403) {
    meaning = `the receiver refused the request: the secret in the Webhook URL is wrong or no longer valid, or the receiver does not accept requests from this network. Copy the Webhook URL again from the receiver.`;
  } else if (status === 400 || status === 415 || status === 422) {
    meaning = `the receiver did not accept the message. Check that Format matches the receiver: Microsoft Teams Workflows expects the Adaptive Card format, Slack and its kin expect {"text": …}.`;
  } else if (status === 405) {
    meaning = `the address does not take webhook messages (POST). Check the Webhook URL.`;
  } else if (status === 413) {
    meaning = `the receiver found the message too large.`;
  } else {
    meaning = `the receiver refused the notification.`;
  }
  return { outcome: 'failed', httpStatus: status, summary: `The receiver answered ${http}: ${meaning}${quote}` };
}

/** The start of the receiver's answer, on one line, without anything of the webhook URL or token-like strings. */
function receiverText(text: string, target: URL): string {
  const clean = text.replace(/\s+/g, ' ').trim();
  if (clean.startsWith('<')) return ''; // an HTML error page says nothing useful in one line
  const safe = withoutUrl(clean, target);
  return safe.length > MAX_ANSWER_CHARS ? `${safe.slice(0, MAX_ANSWER_CHARS)}…` : safe;
}

/** Text that is shown and logged: the webhook URL's path and query (its secret) replaced by "…". */
function withoutUrl(text: string, target: URL): string {
  let clean = text;
  for (const secret of [target.href, `${target.pathname}${target.search}`, target.search.slice(1), target.pathname]) {
    if (secret.length > 1) clean = clean.split(secret).join('…');
  }
  return scrubSecrets(clean);
}

function retryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
