/**
 * The queue's outbound transport: E-Mail Settings + the sending account's token + SmtpDelivery, and the
 * sender policy applied on the way out. Also Send Test E-Mail, which goes the same way but answers at once.
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { ErrorCodes } from '../errors.js';
import { AccountNotFoundError, type AccountRow } from '../oauth/accounts.js';
import { EXCHANGE_APP_ONLY_535_ADVICE } from '../oauth/app-only.js';
import { accountLabel } from '../oauth/profiles.js';
import { TokenUnavailableError, type AccessToken } from '../oauth/token-service.js';
import type { DeliveryResult, OutboundTransport, RouteStatus } from '../queue/queue-manager.js';
import type { QueuedMessage } from '../queue/queue.js';
import { adviceFor, type ClassifiedFailure } from './replies.js';
import type { DeliveryEnvelope, SendOutcome, SmtpDelivery, TokenSource, UpstreamTarget } from './delivery.js';
import { GRAPH_BASE_URL, type GraphTarget } from './graph.js';
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
      return `Turn on Use ${accountLabel} in ${accountLabel} Settings, or route its mail to another sending account.`;
    case 'Expired':
      return `Authorize again in ${accountLabel} Settings; held messages are sent as soon as Token Status is Active.`;
    case 'Error':
      return `Postern keeps retrying the token refresh; held messages are sent as soon as Token Status is Active again.`;
    default:
      return `Authorize the account in ${accountLabel} Settings; held messages are sent as soon as Token Status is Active.`;
  }
}

/**
 * A refused sign-in means other steps for an application than for a person: Exchange's service principal and
 * mailbox role (client credentials), the Admin console's delegation entry (a service account).
 */
function applicationAdvice(failure: ClassifiedFailure, account: AccountRow | undefined): ClassifiedFailure {
  // Graph's own answers name the Graph permission already (graph.ts).
  if (!account || account.authorization_type === 'delegated' || account.delivery_method === 'graph' || failure.class !== 'auth-failed') return failure;
  if (account.authorization_type === 'client-credentials') return { ...failure, advice: EXCHANGE_APP_ONLY_535_ADVICE };
  return {
    ...failure,
    advice: `Gmail refused the service account's token for ${account.app_mailbox ?? 'the mailbox'}: check the domain-wide delegation entry (Admin console > Security > Access and data control > API controls > Domain-wide delegation) for client ID ${account.client_id ?? '?'} with the scope https://mail.google.com/, and that the mailbox is a user of the Workspace domain.`,
  };
}

export interface TestEmailResult {
  ok: boolean;
  /** One paragraph for the administrator: what happened, in plain words. */
  summary: string;
  reply?: string | undefined;
  advice?: string | undefined;
}

/** What the transport reads of a sending account (oauth/accounts.ts's rows). */
export interface SendingAccountSource {
  get(id: string): Promise<AccountRow | undefined>;
}

/** Microsoft Graph sendMail (graph.ts), for accounts whose Delivery Method is Microsoft Graph. */
export interface GraphSender {
  send(target: GraphTarget, envelope: DeliveryEnvelope, body: () => Readable): Promise<SendOutcome>;
}

/** One account's way out, as the route found it. */
interface AccountRoute {
  account: AccountRow;
  settings: EmailSettingsView;
  label: string;
  mailbox: string | undefined;
}

export class UpstreamTransport implements OutboundTransport {
  /** The authorized mailbox of each account, as of its last route check. */
  readonly #mailboxes = new Map<string, string | undefined>();

  constructor(
    private readonly settings: EmailSettings,
    private readonly tokens: TokenSource,
    private readonly delivery: SmtpDelivery,
    private readonly clientName: string,
    private readonly accounts?: SendingAccountSource,
    private readonly graph?: { sender: GraphSender; baseUrl?: string },
  ) {}

  /** The account a message routed to `key` goes through ('': the Default). */
  async #accountId(key: string): Promise<string> {
    return key || (await this.settings.defaultAccountId());
  }

  async route(key: string = ''): Promise<RouteStatus> {
    const accountId = await this.#accountId(key);
    const account = this.accounts ? await this.accounts.get(accountId) : undefined;
    if (this.accounts && !account) {
      const error = new AccountNotFoundError(accountId);
      return { accountId, ready: false, messagesPerMinute: 0, reason: error.message, advice: 'The account was removed: delete these messages, or add the account again and route its mail to it.' };
    }
    const settings = await this.settings.get(accountId);
    const label = accountLabel(accountId, account?.name);
    const graph = account?.delivery_method === 'graph';
    const base = { accountId, messagesPerMinute: settings.messagesPerMinute, remoteMta: graph ? new URL(this.graph?.baseUrl ?? GRAPH_BASE_URL).host : settings.smtpHost };
    if (graph && !this.graph) return { ...base, ready: false, reason: `${label}: Microsoft Graph delivery is not available in this build.`, advice: 'Choose SMTP (XOAUTH2) as the Delivery Method.' };
    let token: AccessToken;
    try {
      token = await this.tokens.getAccessToken(accountId);
    } catch (error) {
      this.delivery.closeIdle();
      if (error instanceof TokenUnavailableError) {
        return { ...base, ready: false, reason: `${label}: ${error.message}`, advice: holdAdvice(error, label) };
      }
      return { ...base, ready: false, reason: `${label}: the token could not be read (${error instanceof Error ? error.message : String(error)})`, advice: 'Postern tries again shortly.' };
    }
    this.#mailboxes.set(accountId, token.mailbox);
    const postmaster = settings.senderAddress ?? token.mailbox;
    if (!postmaster) {
      return { ...base, ready: false, reason: `${label}: the authorized mailbox is not known.`, advice: 'Enter the Sender E-Mail Address in E-Mail Settings, or authorize again.' };
    }
    return { ...base, ready: true, postmaster };
  }

  #policy(settings: EmailSettingsView, mailbox: string | undefined): SenderPolicy {
    return { mailbox: settings.senderAddress ?? mailbox ?? '', allowed: [...(mailbox ? [mailbox] : []), ...settings.allowedFromAddresses] };
  }

  async #routeOf(route: RouteStatus): Promise<AccountRoute | undefined> {
    const account = this.accounts ? await this.accounts.get(route.accountId) : undefined;
    if (this.accounts && !account) return undefined;
    const settings = await this.settings.get(route.accountId);
    return { account: account!, settings, label: accountLabel(route.accountId, account?.name), mailbox: this.#mailboxes.get(route.accountId) };
  }

  async deliver(message: QueuedMessage, body: () => Readable, route: RouteStatus): Promise<DeliveryResult> {
    const way = await this.#routeOf(route);
    if (!way) {
      // Removed between the route and now: held, never sent through another account.
      return { status: 'held', reason: new AccountNotFoundError(route.accountId).message, advice: 'The account was removed: delete these messages, or add the account again.', errorCode: ErrorCodes.OAUTH_ACCOUNT_NOT_FOUND };
    }
    const { settings, label } = way;
    const policy = this.#policy(settings, way.mailbox);
    let headerTooLarge = false;
    const envelope = { from: policy.mailbox, to: message.recipients, size: message.size, eightBit: message.body8bit, smtpUtf8: message.smtputf8 };
    const source = () => {
      const source = body();
      const transform = new SenderPolicyTransform(policy);
      // pipe() does not forward errors; the policy's own error (header too large) must end the send.
      source.on('error', (error) => transform.destroy(error));
      transform.on('error', () => (headerTooLarge ||= transform.headerTooLarge));
      return source.pipe(transform);
    };
    const outcome =
      way.account?.delivery_method === 'graph' && this.graph
        ? await this.graph.sender.send(this.#graphTarget(way), envelope, source)
        : await this.delivery.send(targetOf(settings), envelope, source);
    if (headerTooLarge && outcome.kind === 'failed') {
      // Never sent without the sender policy, and never will be: a permanent failure, not a retry.
      return { status: 'failed', code: 554, reply: `554 5.6.0 ${new HeaderTooLargeError().message}`, advice: 'Send the message again with a smaller header.', errorCode: ErrorCodes.SMTP_HEADER_TOO_BIG };
    }
    if (outcome.kind === 'held') {
      return { status: 'held', reason: `${label}: ${outcome.error.message}`, advice: holdAdvice(outcome.error, label), errorCode: outcome.error.code };
    }
    if (outcome.kind === 'failed') {
      const f = applicationAdvice(outcome.failure, way.account);
      return f.class === 'permanent'
        ? { status: 'failed', code: f.code, reply: f.reply, advice: f.advice, errorCode: f.errorCode }
        : { status: 'deferred', code: f.code, reply: f.reply, advice: f.advice, errorCode: f.errorCode, retryAfterMs: f.retryAfterMs };
    }
    return {
      status: 'delivered',
      code: outcome.code,
      reply: outcome.reply,
      accepted: outcome.accepted,
      rejected: outcome.rejected.map((r) => ({ ...r, advice: adviceFor(r.code, r.reply) })),
    };
  }

  #graphTarget(way: AccountRoute): GraphTarget {
    const delegated = way.account.authorization_type === 'delegated';
    return {
      accountId: way.account.id,
      baseUrl: this.graph?.baseUrl ?? GRAPH_BASE_URL,
      mailbox: way.account.app_mailbox ?? way.mailbox ?? way.account.mailbox ?? '',
      delegated,
      tls: way.settings.tls,
      largeMessages: way.account.graph_large_messages === 1,
    };
  }

  async abort(): Promise<void> {
    await this.delivery.close();
  }

  /** Send Test E-Mail: a short message to `to`, straight to the upstream (not through the queue). */
  async sendTestEmail(to: string, actor: string, accountId?: string): Promise<TestEmailResult> {
    const settings = await this.settings.get(accountId);
    const label = accountLabel(settings.accountId, (await this.accounts?.get(settings.accountId))?.name);
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
