/**
 * Token service: the one call the rest of Postern needs, "give me a valid access token for account X".
 *
 * Inputs: the account's stored tokens and settings. Outputs: an access token, or a TokenUnavailableError
 * saying why not and whether waiting can help (the queue holds messages meanwhile).
 *
 * - Refreshes ahead of expiry (`refreshAheadMs`, POSTERN_TOKEN_REFRESH_AHEAD_SECONDS, before `expires_at`;
 *   see refreshDueAt for short-lived tokens), in the background and on demand.
 * - Single-flight per account: concurrent callers share one token request; across instances sharing a
 *   database, a lease in the account row lets one instance refresh while the others wait for its result.
 * - A rotated refresh token is saved together with the new access token before the access token is handed
 *   out (docs/protocol.md §4.3).
 * - invalid_grant and other definitive errors → Expired, credentials dropped, no retry loop; 5xx / 429 /
 *   network → Error, retried with exponential backoff and jitter, credentials kept (docs/protocol.md §4.4).
 * - An application (Authorization Type: Application; client credentials, a service account) has no refresh
 *   token: the same refresh asks for a new access token with its own credential (application.ts).
 * - Compares the token endpoint's Date header with this host's clock on every refresh (clock-skew.ts).
 *
 * Known limits: the background check runs every TICK_MS, so a token that expires sooner than that after an
 * instance start is refreshed on first use instead.
 */
import { randomUUID } from 'node:crypto';
import { ErrorCodes, isPosternError, PosternError } from '../errors.js';
import { describeError, type Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import type { AccountRow, OAuthAccounts, TokenStatus } from './accounts.js';
import { settingsOf } from './accounts.js';
import { authorizationServerOf, clientOf } from './authorization-server.js';
import { recordServerClock, ServerClockProbe } from './clock-skew.js';
import {
  AppOnlyCredentialError,
  clientCredentialsGrant,
  MICROSOFT_APP_ONLY_GRAPH_SCOPE,
  MICROSOFT_APP_ONLY_SMTP_SCOPE,
  parseServiceAccountKey,
  serviceAccountGrant,
  type ClientCredential,
} from './app-only.js';
import { refreshAccessToken, type TokenSet } from './grants.js';
import type { HttpOptions, OAuthHttp } from './http.js';
import { accountLabel, GOOGLE_MAIL_SCOPE, microsoftGraphScope } from './profiles.js';
import { ProviderError } from './provider-errors.js';

/** Default of POSTERN_TOKEN_REFRESH_AHEAD_SECONDS: refresh five minutes before the access token expires. */
export const DEFAULT_REFRESH_AHEAD_MS = 5 * 60_000;
const LEASE_TTL_MS = 30_000;
const TICK_MS = 15_000;
const BACKOFF_BASE_MS = 30_000;
const BACKOFF_MAX_MS = 15 * 60_000;

export interface AccessToken {
  accessToken: string;
  /** The authorized mailbox (SASL user for XOAUTH2). */
  mailbox: string | undefined;
  expiresAt: number;
}

/** Why no token can be given. `retryable`: waiting (or the administrator acting) can make one available. */
export class TokenUnavailableError extends PosternError {
  constructor(
    message: string,
    readonly status: TokenStatus | 'NotInUse',
    readonly retryable: boolean,
    readonly advice?: string,
    options?: { cause?: unknown },
  ) {
    super(ErrorCodes.OAUTH_TOKEN_UNAVAILABLE, message, options);
    this.name = 'TokenUnavailableError';
  }
}

/**
 * How a refresh ended: a new access token, a passing failure (kept, retried with backoff), or a definitive
 * refusal (the account is Expired).
 */
export type RefreshOutcome = 'success' | 'error' | 'definitive';

export interface GetAccessTokenOptions {
  /**
   * The token an upstream server just refused (535): refresh unless the stored token already differs, so
   * that N deliveries failing together cause one refresh, not N.
   */
  rejectedAccessToken?: string;
}

/** What the background OAuth services (token refresh, device polling) need. */
export interface OAuthBackgroundOptions {
  accounts: OAuthAccounts;
  http: OAuthHttp;
  audit: AuditLog;
  log: Logger;
  now?: () => number;
  /** Identifies this process in leases shared with other instances. */
  instanceId?: string;
}

export interface TokenServiceOptions extends OAuthBackgroundOptions {
  random?: () => number;
  /** How long before expiry an access token is refreshed (config: POSTERN_TOKEN_REFRESH_AHEAD_SECONDS). */
  refreshAheadMs?: number;
}

/**
 * When an access token is due for refresh: `refreshAheadMs` before it expires, except that a token whose whole
 * lifetime is shorter than twice that window is refreshed at half its lifetime. Otherwise a token living five
 * minutes under a five-minute window would be due the moment it arrives, and every send would refresh it
 * again. Without a known issue time (`issuedAt` null) the window applies as configured.
 */
export function refreshDueAt(issuedAt: number | null, expiresAt: number, refreshAheadMs: number): number {
  const lifetime = issuedAt === null ? Infinity : Math.max(0, expiresAt - issuedAt);
  return expiresAt - Math.min(refreshAheadMs, lifetime / 2);
}

/** The account's grant was refused: re-authorization is required, with the provider's words and advice. */
function expiredError(label: string, row: AccountRow): TokenUnavailableError {
  return new TokenUnavailableError(
    `${label}: the authorization expired; re-authorization is required. ${row.token_error ?? ''}`.trim(),
    'Expired',
    true,
    row.token_advice ?? undefined,
  );
}

/** The mailbox a token is for: the signed-in one, or the one an application sends as. */
function mailboxOf(row: AccountRow): string | undefined {
  return (row.authorization_type === 'delegated' ? row.mailbox : row.app_mailbox) ?? undefined;
}

/** An application account has what it needs to ask for a token. */
function hasApplicationCredential(row: AccountRow): boolean {
  if (row.authorization_type === 'service-account') return row.service_account_key_enc !== null && row.app_mailbox !== null;
  return row.client_id !== null && (row.client_secret_enc !== null || (row.client_key_enc !== null && row.client_certificate !== null));
}

/**
 * The scope of a delegated refresh: Graph's for an account that delivers by Microsoft Graph (the refresh
 * token serves both resources, one per request); none otherwise, so the token stays for what was granted.
 */
function delegatedRefreshScope(row: AccountRow): string | undefined {
  if (row.provider !== 'microsoft' || row.delivery_method !== 'graph') return undefined;
  return microsoftGraphScope(row.graph_large_messages === 1, false);
}

export class TokenService {
  readonly #inflight = new Map<string, Promise<AccessToken>>();
  readonly #accounts: OAuthAccounts;
  readonly #http: OAuthHttp;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #instanceId: string;
  readonly #refreshAheadMs: number;
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  readonly #refreshListeners = new Set<(accountId: string, outcome: RefreshOutcome) => void>();

  constructor(options: TokenServiceOptions) {
    this.#accounts = options.accounts;
    this.#http = options.http;
    this.#audit = options.audit;
    this.#log = options.log.child({ component: 'token-service' });
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.#instanceId = options.instanceId ?? randomUUID();
    this.#refreshAheadMs = options.refreshAheadMs ?? DEFAULT_REFRESH_AHEAD_MS;
  }

  async getAccessToken(accountId: string, options: GetAccessTokenOptions = {}): Promise<AccessToken> {
    const row = await this.#accounts.get(accountId);
    if (!row) throw new TokenUnavailableError(`${accountId} is not configured.`, 'NotRegistered', false);
    const label = accountLabel(row.id, row.name);
    if (row.enabled !== 1) {
      throw new TokenUnavailableError(`${label} is not in use (Use ${label} is off).`, 'NotInUse', true);
    }
    if (row.token_status === 'Expired') throw expiredError(label, row);
    const now = this.#now();
    const accessToken = this.#accounts.accessToken(row);
    // An application (client credentials, service account) asks for a new token with its own credential.
    const canRefresh = row.authorization_type === 'delegated' ? row.refresh_token_enc !== null : hasApplicationCredential(row);
    const mailbox = mailboxOf(row);
    const expiresAt = row.access_token_expires_at ?? 0;
    const rejected = options.rejectedAccessToken !== undefined && options.rejectedAccessToken === accessToken;

    if (accessToken && !rejected && refreshDueAt(row.token_issued_at, expiresAt, this.#refreshAheadMs) > now) {
      return { accessToken, mailbox, expiresAt };
    }
    if (accessToken && options.rejectedAccessToken !== undefined && !rejected && expiresAt > now) {
      // Someone refreshed since the caller got its token: hand out the newer one.
      return { accessToken, mailbox, expiresAt };
    }
    if (!canRefresh) {
      if (accessToken && !rejected && expiresAt > now) return { accessToken, mailbox, expiresAt };
      throw new TokenUnavailableError(`${label} is not authorized yet (Token Status: Not Registered).`, row.token_status, true);
    }
    if (row.token_status === 'Error' && !rejected && (row.next_refresh_attempt_at ?? 0) > now) {
      if (accessToken && expiresAt > now + 30_000) return { accessToken, mailbox, expiresAt };
      throw new TokenUnavailableError(
        `${label}: the token could not be refreshed (${row.token_error ?? 'error'}); retrying.`,
        'Error',
        true,
      );
    }
    return this.refresh(accountId, { ifStillDue: true, ...(rejected && accessToken ? { rejectedAccessToken: accessToken } : {}) });
  }

  /** Told after each token request this process made, with how it ended (metrics). Returns the removal. */
  onRefresh(listener: (accountId: string, outcome: RefreshOutcome) => void): () => void {
    this.#refreshListeners.add(listener);
    return () => this.#refreshListeners.delete(listener);
  }

  /** A listener's failure is logged, never taken for the refresh's. */
  #refreshed(accountId: string, outcome: RefreshOutcome): void {
    for (const listener of this.#refreshListeners) {
      try {
        listener(accountId, outcome);
      } catch (error) {
        this.#log.warn({ err: describeError(error) }, 'a token refresh listener failed');
      }
    }
  }

  /**
   * Refreshes now; concurrent callers for the same account share the one request. `ifStillDue`: only if the
   * stored token is still due once the lease is ours (another instance may have refreshed it meanwhile);
   * `rejectedAccessToken`, the token the upstream refused, counts as due whatever its expiry.
   */
  refresh(accountId: string, options: { ifStillDue?: boolean; rejectedAccessToken?: string } = {}): Promise<AccessToken> {
    const existing = this.#inflight.get(accountId);
    if (existing) return existing;
    const promise = this.#refreshWithLease(accountId, options).finally(() => this.#inflight.delete(accountId));
    this.#inflight.set(accountId, promise);
    return promise;
  }

  async #refreshWithLease(accountId: string, options: { ifStillDue?: boolean; rejectedAccessToken?: string }): Promise<AccessToken> {
    const started = this.#now();
    const before = await this.#accounts.get(accountId);
    while (!(await this.#accounts.acquireRefreshLease(accountId, this.#instanceId, this.#now(), LEASE_TTL_MS))) {
      // Another instance is refreshing this account: wait for its result instead of sending a second request.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const row = await this.#accounts.get(accountId);
      if (row && row.token_issued_at !== before?.token_issued_at && row.token_status === 'Active') {
        const accessToken = this.#accounts.accessToken(row);
        if (accessToken) return { accessToken, mailbox: mailboxOf(row), expiresAt: row.access_token_expires_at ?? 0 };
      }
      if (row?.token_status === 'Expired') return this.getAccessToken(accountId);
      if (this.#now() - started > LEASE_TTL_MS * 2) break;
    }
    try {
      // The lease is ours, but another instance may have refreshed between our read of the row and now (its
      // lease released just before we asked): a token that is not due, and not the refused one, is used as it
      // is. Without this check two instances could each send a refresh request for one expiry.
      const current = options.ifStillDue ? await this.#accounts.get(accountId) : undefined;
      const token = current ? this.#accounts.accessToken(current) : undefined;
      if (
        current &&
        token &&
        token !== options.rejectedAccessToken &&
        current.token_status === 'Active' &&
        refreshDueAt(current.token_issued_at, current.access_token_expires_at ?? 0, this.#refreshAheadMs) > this.#now()
      ) {
        return { accessToken: token, mailbox: mailboxOf(current), expiresAt: current.access_token_expires_at ?? 0 };
      }
      return await this.#refreshNow(accountId);
    } finally {
      await this.#accounts.releaseRefreshLease(accountId, this.#instanceId);
    }
  }

  async #refreshNow(accountId: string): Promise<AccessToken> {
    const row = await this.#accounts.get(accountId);
    if (!row) throw new TokenUnavailableError(`${accountId} is not configured.`, 'NotRegistered', false);
    const label = accountLabel(row.id, row.name);
    const application = row.authorization_type !== 'delegated';
    const refreshToken = application ? undefined : this.#accounts.refreshToken(row);
    if (!application && !refreshToken) {
      // A refresh that began after another one found the grant refused (two callers that both saw an expired
      // access token, the second one a moment late): the account is Expired, and says why, not "Not Registered".
      if (row.token_status === 'Expired') throw expiredError(label, row);
      throw new TokenUnavailableError(`${label} has no refresh token.`, 'NotRegistered', true);
    }
    const clock = new ServerClockProbe(this.#now);
    const http = clock.http(await this.#http.options(settingsOf(row).tls));
    const now = this.#now();
    try {
      const tokens = await (
        application
          ? this.#applicationToken(row, http)
          : refreshAccessToken(authorizationServerOf(row), clientOf(row, this.#accounts.clientSecret(row)), refreshToken!, http, this.#now, delegatedRefreshScope(row))
      ).finally(() => recordServerClock(this.#accounts, this.#log, accountId, clock.last));
      await this.#accounts.transition(accountId, 'Active', { tokens, keepRefreshToken: !application, at: now });
      this.#refreshed(accountId, 'success');
      if (row.token_status !== 'Active') {
        this.#log.info({ account: accountId }, `${label}: token refreshed, Token Status is Active again`);
      } else {
        this.#log.debug({ account: accountId, rotated: tokens.refreshToken !== undefined }, 'access token refreshed');
      }
      return { accessToken: tokens.accessToken, mailbox: application ? mailboxOf(row) : (tokens.mailbox ?? row.mailbox ?? undefined), expiresAt: tokens.expiresAt };
    } catch (thrown) {
      const error =
        thrown instanceof ProviderError
          ? thrown
          : isPosternError(thrown) && thrown.code === ErrorCodes.OAUTH_CREDENTIAL_INVALID
            ? // A stored key or certificate that cannot be used will not become usable by waiting.
              new ProviderError(thrown.message, 'definitive', undefined, undefined, undefined, 'Enter the credential again in Edit Basic Settings (a new client secret, certificate or JSON key).', { cause: thrown })
            : new ProviderError(thrown instanceof Error ? thrown.message : String(thrown), 'transient', undefined, undefined, undefined, undefined, { cause: thrown });
      if (error.kind === 'definitive') {
        // The Admin console asks for the service account's numeric client ID: give it with the advice.
        const advice = row.authorization_type === 'service-account' && error.error === 'unauthorized_client' && error.advice ? `${error.advice} Client ID: ${row.client_id ?? '?'}.` : (error.advice ?? null);
        await this.#accounts.transition(accountId, 'Expired', { error: error.providerText, advice, forget: 'tokens' });
        this.#refreshed(accountId, 'definitive');
        await this.#audit.record(null, 'token.expired', `${label}: ${error.providerText}`);
        this.#log.warn({ account: accountId, error: error.error, description: error.description }, `${label}: refresh refused, Token Status is Expired`);
        throw new TokenUnavailableError(`${label}: re-authorization required. ${error.providerText}`, 'Expired', true, error.advice, { cause: error });
      }
      const failures = row.refresh_failures + 1;
      const delay = Math.min(BACKOFF_BASE_MS * 2 ** (failures - 1), BACKOFF_MAX_MS) * (0.8 + 0.4 * this.#random());
      const nextAttempt = this.#now() + Math.round(delay);
      await this.#accounts.transition(accountId, 'Error', {
        error: error.providerText,
        advice: `Postern keeps the authorization and retries automatically (next attempt at ${new Date(nextAttempt).toISOString()}).`,
        failures,
        nextAttemptAt: nextAttempt,
      });
      this.#refreshed(accountId, 'error');
      this.#log.warn({ account: accountId, failures, err: describeError(error) }, `${label}: token refresh failed, retrying`);
      throw new TokenUnavailableError(`${label}: the token could not be refreshed (${error.providerText}); retrying.`, 'Error', true, undefined, {
        cause: error,
      });
    }
  }

  /**
   * A new access token for an application: client credentials (a secret, or an assertion signed with the
   * account's certificate key) or a service account's JWT bearer assertion. No refresh token is involved.
   */
  async #applicationToken(row: AccountRow, http: HttpOptions): Promise<TokenSet> {
    const mailbox = row.app_mailbox;
    if (row.authorization_type === 'service-account') {
      const keyText = this.#accounts.serviceAccountKey(row);
      if (!keyText || !mailbox) throw new AppOnlyCredentialError('The service account has no JSON key or no mailbox to send as.');
      return serviceAccountGrant(parseServiceAccountKey(keyText), mailbox, GOOGLE_MAIL_SCOPE, http, this.#now);
    }
    if (!row.client_id) throw new AppOnlyCredentialError('The application has no client ID.');
    const secret = this.#accounts.clientSecret(row);
    const key = this.#accounts.clientKey(row);
    const credential: ClientCredential | undefined = secret
      ? { kind: 'secret', secret }
      : key && row.client_certificate
        ? { kind: 'certificate', privateKeyPem: key, certificatePem: row.client_certificate }
        : undefined;
    if (!credential) throw new AppOnlyCredentialError('The application has neither a client secret nor a certificate.');
    const scope = row.delivery_method === 'graph' ? MICROSOFT_APP_ONLY_GRAPH_SCOPE : MICROSOFT_APP_ONLY_SMTP_SCOPE;
    return clientCredentialsGrant({ tokenEndpoint: authorizationServerOf(row).tokenEndpoint }, { clientId: row.client_id, credential }, scope, http, this.#now);
  }

  /** Refreshes every account whose token is about to expire or whose retry is due. */
  async refreshDue(): Promise<void> {
    const now = this.#now();
    const rows: AccountRow[] = await this.#accounts.listEnabled();
    for (const row of rows) {
      if (row.authorization_type === 'delegated' ? row.refresh_token_enc === null : !hasApplicationCredential(row)) continue;
      const due =
        (row.token_status === 'Active' && refreshDueAt(row.token_issued_at, row.access_token_expires_at ?? 0, this.#refreshAheadMs) <= now) ||
        (row.token_status === 'Error' && (row.next_refresh_attempt_at ?? 0) <= now);
      if (!due) continue;
      try {
        await this.refresh(row.id, { ifStillDue: true });
      } catch (error) {
        if (!(error instanceof TokenUnavailableError)) this.#log.error({ err: describeError(error), account: row.id }, 'background refresh failed');
      }
    }
  }

  start(): void {
    if (this.#timer) return;
    const tick = () => {
      this.#ticking = this.refreshDue()
        .catch((error) => this.#log.error({ err: describeError(error) }, 'token refresh check failed'))
        .finally(() => {
          this.#ticking = undefined;
        });
    };
    tick();
    this.#timer = setInterval(tick, TICK_MS);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#ticking;
    await Promise.allSettled([...this.#inflight.values()]);
  }
}
