/**
 * The JSON shapes the API answers with, as zod schemas (validated on the way out and turned into the OpenAPI
 * document), and the functions that build the status and queue shapes. `postern status --json` and
 * `postern queue list --json` print what these functions return, so the command line and `GET /api/v1/status`
 * and `GET /api/v1/queue` cannot drift apart.
 *
 * Times are ISO 8601 strings in UTC. No shape carries a secret: no OAuth token, client secret, device
 * password hash or certificate key.
 */
import { z } from 'zod';
import type { OAuthAccounts } from '../oauth/accounts.js';
import type { OAuthService } from '../oauth/service.js';
import { ACTIVE_STATES, type LogEntry, type MessageQueue, type QueuedMessage } from '../queue/queue.js';
import type { DeviceAccount } from '../smtp-in/devices.js';
import type { RelayCertificate, RelaySettingsView } from '../smtp-in/relay-settings.js';
import type { EmailSettingsView } from '../smtp-out/email-settings.js';
import type { ProviderId, QueueState } from '../store/schema.js';

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : iso(ms));

const Time = z.iso.datetime().describe('ISO 8601 time, UTC');

export const ErrorBody = z
  .object({
    error: z.object({
      code: z.string().describe('A stable code from the error catalogue, e.g. POSTERN_API_TOKEN_INVALID'),
      message: z.string().describe('What went wrong, in plain words'),
      fields: z.record(z.string(), z.string()).optional().describe('Per field, the message the Remote UI form would show'),
    }),
  })
  .describe('An error');
export type ErrorBody = z.infer<typeof ErrorBody>;

// ---- status ------------------------------------------------------------------------------------------

export const QUEUE_STATES: readonly QueueState[] = ['incoming', 'active', 'deferred', 'held', 'sent', 'bounced'];

export const QueueCounts = z.object({
  incoming: z.number().int(),
  active: z.number().int(),
  deferred: z.number().int(),
  held: z.number().int(),
  sent: z.number().int(),
  bounced: z.number().int(),
});

export const AccountStatus = z.object({
  provider: z.enum(['microsoft', 'google']),
  label: z.string().describe('OAuth 2.0 (Microsoft) or OAuth 2.0 (Google)'),
  use: z.boolean().describe('Use OAuth 2.0 (Microsoft/Google) on the settings page'),
  mailbox: z.string().nullable().describe('The authorized mailbox, once known'),
  tokenStatus: z.object({
    status: z.enum(['NotRegistered', 'WaitingForAuthorization', 'Active', 'Expired', 'Error']),
    label: z.string(),
    error: z.string().nullable(),
    advice: z.string().nullable(),
    since: Time,
  }),
  serverConnectionStatus: z.object({
    status: z.enum(['SuccessfullyConnected', 'ConnectionFailed']).nullable().describe('null: not checked (or not in use)'),
    label: z.string(),
    detail: z.string().nullable(),
    checkedAt: Time.nullable(),
  }),
  accessTokenExpiresAt: Time.nullable().describe('When the current access token expires (Postern refreshes it before); never the token'),
  warnings: z.array(z.string()),
  clockWarning: z.string().nullable(),
});

export const StatusBody = z.object({
  accounts: z.array(AccountStatus),
  queue: z.object({
    counts: QueueCounts,
    oldestWaitingSince: Time.nullable().describe('When the oldest message not yet delivered or returned was received'),
  }),
});
export type StatusBody = z.infer<typeof StatusBody>;

export interface StatusSources {
  accounts: Pick<OAuthAccounts, 'list'>;
  oauth: Pick<OAuthService, 'status'>;
  queue: Pick<MessageQueue, 'counts' | 'oldestWaitingSince'>;
}

/** `GET /api/v1/status` and `postern status --json`. */
export async function buildStatus(sources: StatusSources): Promise<StatusBody> {
  const rows = await sources.accounts.list();
  const accounts = await Promise.all(
    rows.map(async (row) => {
      const view = await sources.oauth.status(row.id as ProviderId);
      return {
        provider: view.provider,
        label: view.label,
        use: view.enabled,
        mailbox: view.token.mailbox,
        tokenStatus: { status: view.token.status, label: view.token.label, error: view.token.error, advice: view.token.advice, since: iso(view.token.statusAt) },
        serverConnectionStatus: {
          status: view.connection.status,
          label: view.connection.label,
          detail: view.connection.detail,
          checkedAt: isoOrNull(view.connection.checkedAt),
        },
        accessTokenExpiresAt: isoOrNull(view.token.accessTokenExpiresAt),
        warnings: view.warnings,
        clockWarning: view.clockWarning,
      };
    }),
  );
  const [counts, oldest] = await Promise.all([sources.queue.counts(), sources.queue.oldestWaitingSince()]);
  return { accounts, queue: { counts, oldestWaitingSince: isoOrNull(oldest) } };
}

// ---- sending accounts ----------------------------------------------------------------------------------

export const SendingAccount = z.object({
  id: z.string().describe("The account's id: 'microsoft' and 'google' for the seed's, 'microsoft-<hex>' and 'google-<hex>' for later ones"),
  provider: z.enum(['microsoft', 'google']),
  name: z.string().describe("The administrator's name for it ('' for a seed account without one)"),
  use: z.boolean().describe('Use OAuth 2.0 (Microsoft/Google) on its settings page'),
  authorizationType: z.enum(['delegated', 'client-credentials', 'service-account']).describe('delegated: a user signed in; otherwise the application\'s own'),
  deliveryMethod: z.enum(['smtp', 'graph']).describe('SMTP (XOAUTH2) or Microsoft Graph'),
  mailbox: z.string().nullable().describe('The authorized mailbox, once known'),
  tokenStatus: z.enum(['NotRegistered', 'WaitingForAuthorization', 'Active', 'Expired', 'Error']),
  isDefault: z.boolean().describe('Mail no route sends elsewhere goes through it'),
});
export const SendingAccountsBody = z.object({ accounts: z.array(SendingAccount) });
export type SendingAccountsBody = z.infer<typeof SendingAccountsBody>;

/** `GET /api/v1/accounts`: every sending account, the seed's of each provider first. */
export async function buildSendingAccounts(sources: { accounts: Pick<OAuthAccounts, 'list'>; defaultAccountId(): Promise<string> }): Promise<SendingAccountsBody> {
  const [rows, defaultId] = await Promise.all([sources.accounts.list(), sources.defaultAccountId()]);
  const rank = (id: string) => (id === 'microsoft' || id === 'google' ? 0 : 1);
  rows.sort((a, b) => b.provider.localeCompare(a.provider) || rank(a.id) - rank(b.id) || a.created_at - b.created_at || a.id.localeCompare(b.id));
  return {
    accounts: rows.map((row) => ({
      id: row.id,
      provider: row.provider,
      name: row.name,
      use: row.enabled === 1,
      authorizationType: row.authorization_type,
      deliveryMethod: row.delivery_method,
      mailbox: row.mailbox ?? row.app_mailbox,
      tokenStatus: row.token_status,
      isDefault: row.id === defaultId,
    })),
  };
}

// ---- queue -------------------------------------------------------------------------------------------

export const QUEUE_FILTERS = ['waiting', 'all', ...QUEUE_STATES] as const;
export type QueueFilter = (typeof QUEUE_FILTERS)[number];
export const DEFAULT_QUEUE_LIMIT = 500;
export const MAX_QUEUE_LIMIT = 1000;

export const QueueMessage = z.object({
  id: z.string(),
  state: z.enum(['incoming', 'active', 'deferred', 'held', 'sent', 'bounced']),
  receivedAt: Time,
  from: z.string().describe('MAIL FROM of the device ("" for the null sender)'),
  to: z.array(z.string()),
  headerFrom: z.string().nullable(),
  subject: z.string().nullable(),
  size: z.number().int().describe('Bytes'),
  client: z.string().describe('The device that sent it'),
  isBounce: z.boolean(),
  attempts: z.number().int(),
  nextAttemptAt: Time.nullable().describe('Incoming and deferred messages only'),
  expiresAt: Time.describe('Returned to its sender if not delivered by then'),
  doneAt: Time.nullable(),
  lastReply: z.object({ code: z.number().int().nullable(), text: z.string().nullable(), advice: z.string().nullable() }),
});

export const QueueBody = z.object({
  state: z.enum(QUEUE_FILTERS),
  limit: z.number().int(),
  counts: QueueCounts,
  messages: z.array(QueueMessage).describe('Newest first'),
});
export type QueueBody = z.infer<typeof QueueBody>;

export function messageShape(m: QueuedMessage): z.infer<typeof QueueMessage> {
  return {
    id: m.id,
    state: m.state,
    receivedAt: iso(m.receivedAt),
    from: m.reversePath,
    to: m.recipients,
    headerFrom: m.headerFrom,
    subject: m.subject,
    size: m.size,
    client: m.client,
    isBounce: m.isBounce,
    attempts: m.attempts,
    nextAttemptAt: m.state === 'incoming' || m.state === 'deferred' ? iso(m.nextAttemptAt) : null,
    expiresAt: iso(m.expiresAt),
    doneAt: isoOrNull(m.doneAt),
    lastReply: { code: m.lastCode, text: m.lastReply, advice: m.lastAdvice },
  };
}

/** The states a filter stands for: `waiting` (the default) is every state not finished. */
export function statesOf(filter: QueueFilter): QueueState[] {
  if (filter === 'waiting') return [...ACTIVE_STATES];
  if (filter === 'all') return [...QUEUE_STATES];
  return [filter];
}

/** `GET /api/v1/queue` and `postern queue list --json`. */
export async function buildQueueList(queue: Pick<MessageQueue, 'list' | 'counts'>, options: { state?: QueueFilter; limit?: number } = {}): Promise<QueueBody> {
  const state = options.state ?? 'waiting';
  const limit = options.limit ?? DEFAULT_QUEUE_LIMIT;
  const [messages, counts] = await Promise.all([queue.list(statesOf(state), limit), queue.counts()]);
  return { state, limit, counts, messages: messages.map(messageShape) };
}

// ---- log ---------------------------------------------------------------------------------------------

export const LogEntryShape = z.object({
  id: z.number().int(),
  queueId: z.string(),
  at: Time,
  event: z.enum(['accepted', 'sent', 'deferred', 'held', 'bounced', 'bounce-queued', 'deleted', 'retry', 'released', 'requeued']),
  recipients: z.string().nullable(),
  code: z.number().int().nullable(),
  reply: z.string().nullable(),
  advice: z.string().nullable(),
  subject: z.string().nullable(),
  from: z.string().nullable(),
  client: z.string().nullable(),
});

export function logEntryShape(entry: LogEntry): z.infer<typeof LogEntryShape> {
  return {
    id: entry.id,
    queueId: entry.queueId,
    at: iso(entry.at),
    event: entry.event,
    recipients: entry.recipients,
    code: entry.code,
    reply: entry.reply,
    advice: entry.advice,
    subject: entry.subject,
    from: entry.reversePath,
    client: entry.client,
  };
}

// ---- devices -----------------------------------------------------------------------------------------

export const Device = z.object({
  id: z.string(),
  username: z.string(),
  allowedSenders: z.array(z.string()).describe('Allowed Sender Addresses; empty: any sender'),
  createdAt: Time,
  updatedAt: Time,
  lastLoginAt: Time.nullable(),
});

export function deviceShape(device: DeviceAccount): z.infer<typeof Device> {
  return {
    id: device.id,
    username: device.username,
    allowedSenders: device.allowedSenders,
    createdAt: iso(Number(device.created_at)),
    updatedAt: iso(Number(device.updated_at)),
    lastLoginAt: isoOrNull(device.last_login_at === null ? null : Number(device.last_login_at)),
  };
}

// ---- settings ----------------------------------------------------------------------------------------

export const EmailSettingsShape = z.object({
  accountId: z.string().describe('The sending account: microsoft, google, or the id of an account added later'),
  smtpHost: z.string(),
  smtpPort: z.number().int(),
  tlsMode: z.enum(['starttls', 'tls']),
  verifyServerCertificate: z.boolean(),
  addCnToVerificationItems: z.boolean(),
  senderAddress: z.string().nullable().describe('null: the authorized mailbox'),
  allowedFromAddresses: z.array(z.string()),
  messagesPerMinute: z.number().int().describe('0: no limit'),
});

export function emailSettingsShape(view: EmailSettingsView): z.infer<typeof EmailSettingsShape> {
  return {
    accountId: view.accountId,
    smtpHost: view.smtpHost,
    smtpPort: view.smtpPort,
    tlsMode: view.tlsMode,
    verifyServerCertificate: view.tls.verifyServerCertificate,
    addCnToVerificationItems: view.tls.addCnToVerificationItems,
    senderAddress: view.senderAddress,
    allowedFromAddresses: view.allowedFromAddresses,
    messagesPerMinute: view.messagesPerMinute,
  };
}

export const RelaySettingsShape = z.object({
  allowedNetworks: z.array(z.string()),
  maxMessageSize: z.number().int().describe('Bytes'),
  maxMessageSizeMb: z.number(),
  allowInsecureAuth: z.boolean(),
  allowLegacyTls: z.boolean(),
  bareNewlines: z.enum(['normalize', 'reject']),
  certificate: z
    .object({
      source: z.enum(['generated', 'uploaded']),
      subject: z.string(),
      issuer: z.string(),
      validTo: Time,
      fingerprint256: z.string(),
      names: z.array(z.string()),
    })
    .nullable()
    .describe("The relay's STARTTLS certificate (never its key)"),
});

export function relaySettingsShape(view: RelaySettingsView, certificate: RelayCertificate | undefined): z.infer<typeof RelaySettingsShape> {
  return {
    allowedNetworks: view.allowedNetworks,
    maxMessageSize: view.maxMessageSize,
    maxMessageSizeMb: Math.round((view.maxMessageSize / 1024 / 1024) * 100) / 100,
    allowInsecureAuth: view.allowInsecureAuth,
    allowLegacyTls: view.allowLegacyTls,
    bareNewlines: view.bareNewlines,
    certificate: certificate
      ? {
          source: certificate.source,
          subject: certificate.subject,
          issuer: certificate.issuer,
          validTo: certificate.validTo.toISOString(),
          fingerprint256: certificate.fingerprint256,
          names: certificate.names,
        }
      : null,
  };
}

export const SettingsBody = z.object({ email: EmailSettingsShape, relay: RelaySettingsShape });
