/**
 * The queue's outbound transport: E-Mail Settings + the sending account's token + SmtpDelivery, and the
 * sender policy applied on the way out. Also Send Test E-Mail, which goes the same way but answers at once.
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { ErrorCodes } from '../errors.js';
import { PROVIDER_LABELS } from '../oauth/profiles.js';
import { TokenUnavailableError, type AccessToken } from '../oauth/token-service.js';
import type { DeliveryResult, OutboundTransport, RouteStatus } from '../queue/queue-manager.js';
import type { QueuedMessage } from '../queue/queue.js';
import { adviceFor } from './replies.js';
import type { SmtpDelivery, TokenSource, UpstreamTarget } from './delivery.js';
import type { EmailSettings, EmailSettingsView } from './email-settings.js';
import { HeaderTooLargeError, SenderPolicyTransform, type SenderPolicy } from './sender-policy.js';

export function targetOf(settings: EmailSettingsView): UpstreamTarget {
  return { accountId: settings.accountId, host: settings.smtpHost, port: settings.smtpPort, tlsMode: settings.tlsMode, tls: settings.tls };
}

/** Advice for a held queue: what the administrator does to make the token usable again. */
function holdAdvice(error: TokenUnavailableError, accountLabel: string): string {
  if (error.advice) return error.advice;
  switch (error.status) {
    case 'NotInUse':
      return `Turn on Use ${accountLabel} in ${accountLabel} Settings, or choose the other account in E-Mail Settings.`;
    case 'Expired':
      return `Authorize again in ${accountLabel} Settings; held messages are sent as soon as Token Status is Active.`;
    case 'Error':
      return `Postern keeps retrying the token refresh; held messages are sent as soon as Token Status is Active again.`;
    default:
      return `Authorize the account in ${accountLabel} Settings; held messages are sent as soon as Token Status is Active.`;
  }
}

export interface TestEmailResult {
  ok: boolean;
  /** One paragraph for the administrator: what happened, in plain words. */
  summary: string;
  reply?: string | undefined;
  advice?: string | undefined;
}

export class UpstreamTransport implements OutboundTransport {
  /** The authorized mailbox, as of the last route check. */
  #mailbox: string | undefined;

  constructor(
    private readonly settings: EmailSettings,
    private readonly tokens: TokenSource,
    private readonly delivery: SmtpDelivery,
    private readonly clientName: string,
  ) {}

  async route(): Promise<RouteStatus> {
    const settings = await this.settings.get();
    const label = PROVIDER_LABELS[settings.accountId];
    const base = { accountId: settings.accountId, messagesPerMinute: settings.messagesPerMinute, remoteMta: settings.smtpHost };
    let token: AccessToken;
    try {
      token = await this.tokens.getAccessToken(settings.accountId);
    } catch (error) {
      this.delivery.closeIdle();
      if (error instanceof TokenUnavailableError) {
        return { ...base, ready: false, reason: `${label}: ${error.message}`, advice: holdAdvice(error, label) };
      }
      return { ...base, ready: false, reason: `${label}: the token could not be read (${error instanceof Error ? error.message : String(error)})`, advice: 'Postern tries again shortly.' };
    }
    this.#mailbox = token.mailbox;
    const postmaster = settings.senderAddress ?? token.mailbox;
    if (!postmaster) {
      return { ...base, ready: false, reason: `${label}: the authorized mailbox is not known.`, advice: 'Enter the Sender E-Mail Address in E-Mail Settings, or authorize again.' };
    }
    return { ...base, ready: true, postmaster };
  }

  #policy(settings: EmailSettingsView, mailbox: string | undefined): SenderPolicy {
    return { mailbox: settings.senderAddress ?? mailbox ?? '', allowed: [...(mailbox ? [mailbox] : []), ...settings.allowedFromAddresses] };
  }

  async deliver(message: QueuedMessage, body: () => Readable, _route: RouteStatus): Promise<DeliveryResult> {
    const settings = await this.settings.get();
    const policy = this.#policy(settings, this.#mailbox);
    let headerTooLarge = false;
    const outcome = await this.delivery.send(
      targetOf(settings),
      { from: policy.mailbox, to: message.recipients, size: message.size, eightBit: message.body8bit, smtpUtf8: message.smtputf8 },
      () => {
        const source = body();
        const transform = new SenderPolicyTransform(policy);
        // pipe() does not forward errors; the policy's own error (header too large) must end the send.
        source.on('error', (error) => transform.destroy(error));
        transform.on('error', () => (headerTooLarge ||= transform.headerTooLarge));
        return source.pipe(transform);
      },
    );
    if (headerTooLarge && outcome.kind === 'failed') {
      // Never sent without the sender policy, and never will be: a permanent failure, not a retry.
      return { status: 'failed', code: 554, reply: `554 5.6.0 ${new HeaderTooLargeError().message}`, advice: 'Send the message again with a smaller header.', errorCode: ErrorCodes.SMTP_HEADER_TOO_BIG };
    }
    if (outcome.kind === 'held') {
      const label = PROVIDER_LABELS[settings.accountId];
      return { status: 'held', reason: `${label}: ${outcome.error.message}`, advice: holdAdvice(outcome.error, label), errorCode: outcome.error.code };
    }
    if (outcome.kind === 'failed') {
      const f = outcome.failure;
      return { status: f.class === 'permanent' ? 'failed' : 'deferred', code: f.code, reply: f.reply, advice: f.advice, errorCode: f.errorCode };
    }
    return {
      status: 'delivered',
      code: outcome.code,
      reply: outcome.reply,
      accepted: outcome.accepted,
      rejected: outcome.rejected.map((r) => ({ ...r, advice: adviceFor(r.code, r.reply) })),
    };
  }

  async abort(): Promise<void> {
    await this.delivery.close();
  }

  /** Send Test E-Mail: a short message to `to`, straight to the upstream (not through the queue). */
  async sendTestEmail(to: string, actor: string): Promise<TestEmailResult> {
    const settings = await this.settings.get();
    const label = PROVIDER_LABELS[settings.accountId];
    let token: AccessToken;
    try {
      token = await this.tokens.getAccessToken(settings.accountId);
    } catch (error) {
      if (error instanceof TokenUnavailableError) {
        return { ok: false, summary: `Not sent: ${label} has no usable token. ${error.message}`, advice: holdAdvice(error, label) };
      }
      throw error;
    }
    const from = settings.senderAddress ?? token.mailbox ?? '';
    const date = new Date();
    const text = [
      `From: Postern <${from}>`,
      `To: <${to}>`,
      'Subject: Postern test e-mail',
      `Date: ${date.toUTCString().replace(/GMT$/, '+0000')}`,
      `Message-ID: <${randomUUID()}@${this.clientName}>`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      '',
      `This test e-mail was sent by ${actor} from the Postern Remote UI through ${settings.smtpHost}:${settings.smtpPort} with ${label}.`,
      'If you can read it, devices can send through Postern.',
      '',
    ].join('\r\n');
    const outcome = await this.delivery.send(targetOf(settings), { from, to: [to] }, () => Readable.from([Buffer.from(text)]));
    const server = `${settings.smtpHost}:${settings.smtpPort}`;
    // A test e-mail is not queued, so "Postern retries automatically" does not apply to it.
    const once = (advice: string | undefined) => advice?.replace(/\s*Postern retries automatically\.?/g, '').trim() || undefined;
    if (outcome.kind === 'held') return { ok: false, summary: `Not sent: ${label} has no usable token. ${outcome.error.message}`, advice: holdAdvice(outcome.error, label) };
    if (outcome.kind === 'failed') {
      const f = outcome.failure;
      const what = f.class === 'connection' ? `could not be reached or the session failed` : f.class === 'auth-failed' ? 'refused the sign-in with the OAuth token' : 'refused the message';
      return { ok: false, summary: `Not sent: ${server} ${what}.`, reply: f.reply, advice: once(f.advice) };
    }
    if (outcome.accepted.length === 0) {
      const r = outcome.rejected[0];
      return { ok: false, summary: `Not sent: ${server} refused the recipient ${to}.`, reply: r?.reply, advice: r ? once(adviceFor(r.code, r.reply)) : undefined };
    }
    return { ok: true, summary: `Sent: ${server} accepted the test e-mail from ${from} to ${to}.`, reply: outcome.reply };
  }
}
