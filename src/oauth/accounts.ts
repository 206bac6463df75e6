/**
 * OAuth accounts in the store: settings, Server Connection Status, Token Status and the (encrypted) tokens,
 * plus the pending device authorization. Any number of accounts of either provider: the seed's two have the
 * ids 'microsoft' and 'google', and accounts added later ids of their own (`microsoft-<hex>`).
 *
 * Token Status (the seed's values, docs/protocol.md §4.1): Not Registered → Waiting for Authorization →
 * Active; Active → Expired (re-authorization required: invalid_grant and kin) or Error (transient; retrying,
 * credentials kept). `transition` is the only writer of Token Status and the words and time that go with it
 * (token_status, token_error, token_advice, token_status_at), together with what the status means for the
 * stored tokens; `update` refuses those four columns, so every change of status reaches the `onTokenChange`
 * listeners.
 */
import type { Insertable, Selectable, Updateable } from 'kysely';
import { createHash, randomBytes } from 'node:crypto';
import { ErrorCodes, PosternError } from '../errors.js';
import type { AuthorizationAttemptsTable, DeviceAuthorizationsTable, OAuthAccountsTable, ProviderId, TokenStatus } from '../store/schema.js';
import type { Store } from '../store/store.js';
import type { TlsPolicy } from '../tls/trust.js';
import type { ConnectionCheckResult, ConnectionStatus } from './connection-check.js';
import type { DeviceAuthorization, TokenSet } from './grants.js';

export type { TokenStatus } from '../store/schema.js';

export const TOKEN_STATUS_LABELS: Record<TokenStatus, string> = {
  NotRegistered: 'Not Registered',
  WaitingForAuthorization: 'Waiting for Authorization',
  Active: 'Active',
  Expired: 'Expired',
  Error: 'Error',
};

export type AccountRow = Selectable<OAuthAccountsTable>;
export type DeviceAuthorizationRow = Selectable<DeviceAuthorizationsTable>;
export type AuthorizationAttemptRow = Selectable<AuthorizationAttemptsTable>;

/** Attempts are looked up by a hash of `state`; the state itself is not kept. */
export function stateHash(state: string): string {
  return createHash('sha256').update(state, 'utf8').digest('hex');
}

export interface AccountSettings {
  enabled: boolean;
  tls: TlsPolicy;
  endpoint: string | null;
  clientId: string | null;
  /** Decrypted only when a protocol step needs it. */
  hasClientSecret: boolean;
  authorizationEndpoint: string | null;
  tokenEndpoint: string | null;
}

export function settingsOf(row: AccountRow): AccountSettings {
  return {
    enabled: row.enabled === 1,
    tls: {
      verifyServerCertificate: row.verify_server_certificate === 1,
      addCnToVerificationItems: row.verify_server_certificate === 1 && row.add_cn_to_verification_items === 1,
    },
    endpoint: row.endpoint,
    clientId: row.client_id,
    hasClientSecret: row.client_secret_enc !== null,
    authorizationEndpoint: row.authorization_endpoint,
    tokenEndpoint: row.token_endpoint,
  };
}

/** The token columns of an account that holds no tokens. */
const NO_TOKENS = {
  access_token_enc: null,
  access_token_expires_at: null,
  refresh_token_enc: null,
  granted_scope: null,
  token_issued_at: null,
  refresh_failures: 0,
  next_refresh_attempt_at: null,
  refresh_lease_owner: null,
  refresh_lease_until: null,
} as const;

/** The columns only `transition` writes. */
const TOKEN_STATUS_COLUMNS = ['token_status', 'token_error', 'token_advice', 'token_status_at'] as const;

/** A change to an account other than its Token Status (which changes only through `transition`). */
export type AccountPatch = Omit<Updateable<OAuthAccountsTable>, (typeof TOKEN_STATUS_COLUMNS)[number]>;

/** The words shown with a Token Status: the provider's own text (token_error) and plain-words advice. Absent: none. */
export interface TokenStatusWords {
  error?: string | null;
  advice?: string | null;
}

/**
 * What becomes of the stored tokens with a change of status. Absent: they stay.
 * - `tokens`: forgotten; the mailbox they were for stays on show (it is the one to authorize again).
 * - `tokens-and-mailbox`: forgotten with the mailbox (Delete Token, or another client or tenant).
 */
export type TokensForgotten = 'tokens' | 'tokens-and-mailbox';

/** What each Token Status is entered with (docs/protocol.md §4.1). */
export interface TokenTransitions {
  /**
   * The token endpoint issued `tokens` at `at` (sign-in completed, code exchanged, or refreshed). A response
   * without a refresh token keeps the stored one when `keepRefreshToken` (a refresh), and leaves none otherwise.
   */
  Active: { tokens: TokenSet; keepRefreshToken: boolean; at: number };
  /** A refresh failed for a passing reason: the tokens stay, and the refresh is tried again at `nextAttemptAt`. */
  Error: { error: string; advice: string; failures: number; nextAttemptAt: number };
  Expired: TokenStatusWords & { forget?: TokensForgotten };
  NotRegistered: TokenStatusWords & { forget?: TokensForgotten };
  WaitingForAuthorization: TokenStatusWords & { forget?: TokensForgotten };
  /** Not a status: new advice beside the current status, which stays, as does the time it was reached. */
  Unchanged: { advice: string };
}

type TokenTransition = { [To in keyof TokenTransitions]: { to: To } & TokenTransitions[To] }[keyof TokenTransitions];

/** No sending account has this id (it was removed, or never existed). */
export class AccountNotFoundError extends PosternError {
  constructor(readonly accountId: string) {
    super(ErrorCodes.OAUTH_ACCOUNT_NOT_FOUND, `There is no sending account "${accountId}".`);
    this.name = 'AccountNotFoundError';
  }
}

/** A new account's row: Use off, both TLS checks on, delegated, SMTP, Not Registered. */
function newAccountRow(id: string, provider: ProviderId, name: string, now: number): Insertable<OAuthAccountsTable> {
  return {
    id,
    provider,
    name,
    authorization_type: 'delegated',
    delivery_method: 'smtp',
    client_certificate: null,
    client_key_enc: null,
    service_account_key_enc: null,
    app_mailbox: null,
    graph_large_messages: 0,
    enabled: 0,
    verify_server_certificate: 1,
    add_cn_to_verification_items: 1,
    endpoint: null,
    client_id: null,
    client_secret_enc: null,
    authorization_endpoint: null,
    token_endpoint: null,
    connection_status: null,
    connection_detail: null,
    connection_checked_at: null,
    token_status: 'NotRegistered',
    token_error: null,
    token_advice: null,
    token_status_at: now,
    mailbox: null,
    display_name: null,
    ...NO_TOKENS,
    clock_offset_ms: null,
    clock_server_host: null,
    clock_checked_at: null,
    created_at: now,
    updated_at: now,
  };
}

const secretContext = (accountId: string, column: string) => `oauth_accounts.${column}:${accountId}`;
const deviceCodeContext = (accountId: string) => `device_authorizations.device_code:${accountId}`;

export class OAuthAccounts {
  readonly #tokenListeners = new Set<(id: string) => void>();

  constructor(private readonly store: Store) {}

  /**
   * Told after a write in this process that changes whether an account can hand out tokens (Token Status,
   * the tokens, Use on/off), so that what was concluded from the old state (the queue's route) is dropped.
   */
  onTokenChange(listener: (id: string) => void): () => void {
    this.#tokenListeners.add(listener);
    return () => this.#tokenListeners.delete(listener);
  }

  /** Every account row, by id (Status pages, metrics, the CLI, notifications). */
  async list(): Promise<AccountRow[]> {
    return this.store.db.selectFrom('oauth_accounts').selectAll().orderBy('id').execute();
  }

  /** The accounts whose Use is on (the background refresh looks only at these). */
  async listEnabled(): Promise<AccountRow[]> {
    return this.store.db.selectFrom('oauth_accounts').selectAll().where('enabled', '=', 1).orderBy('id').execute();
  }

  async get(id: string): Promise<AccountRow | undefined> {
    return this.store.db.selectFrom('oauth_accounts').selectAll().where('id', '=', id).executeTakeFirst();
  }

  /** The account row, created with defaults (Use off, both TLS checks on) on first access: the seed's two accounts. */
  async getOrCreate(id: string): Promise<AccountRow> {
    const existing = await this.get(id);
    if (existing) return existing;
    if (id !== 'microsoft' && id !== 'google') throw new AccountNotFoundError(id);
    await this.store.db
      .insertInto('oauth_accounts')
      .values(newAccountRow(id, id, '', Date.now()))
      .onConflict((oc) => oc.column('id').doNothing())
      .execute();
    return (await this.get(id))!;
  }

  /**
   * Adds a sending account of `provider` (Use off, Not Registered). The first account of a provider is the
   * seed's, with the provider's name as id; every later one gets an id of its own.
   */
  async add(provider: ProviderId, name: string): Promise<AccountRow> {
    const seed = await this.get(provider);
    const id = seed ? `${provider}-${randomBytes(5).toString('hex')}` : provider;
    await this.store.db.insertInto('oauth_accounts').values(newAccountRow(id, provider, name, Date.now())).execute();
    return (await this.get(id))!;
  }

  /** Every account of one provider, the seed's first. */
  async listByProvider(provider: ProviderId): Promise<AccountRow[]> {
    const rows = await this.store.db.selectFrom('oauth_accounts').selectAll().where('provider', '=', provider).orderBy('created_at').orderBy('id').execute();
    return rows.sort((a, b) => Number(b.id === provider) - Number(a.id === provider));
  }

  /**
   * Removes an account with its pending authorizations. The caller checks that nothing routes to it and
   * no message waits for it (sending-accounts.ts).
   */
  async remove(id: string): Promise<void> {
    await this.store.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('device_authorizations').where('account_id', '=', id).execute();
      await trx.deleteFrom('authorization_attempts').where('account_id', '=', id).execute();
      await trx.deleteFrom('oauth_accounts').where('id', '=', id).execute();
    });
    this.#tokenChanged(id);
  }

  /** Changes settings and bookkeeping columns. The four Token Status columns are refused: they change only through `transition`. */
  async update(id: string, patch: AccountPatch): Promise<void> {
    for (const column of TOKEN_STATUS_COLUMNS) {
      if (column in patch) throw new TypeError(`OAuthAccounts.update cannot write ${column}: Token Status changes only through transition().`);
    }
    await this.#write(id, patch);
    if ('access_token_enc' in patch || 'refresh_token_enc' in patch || 'enabled' in patch) this.#tokenChanged(id);
  }

  /**
   * The one change of Token Status: writes the status with its words and time, and what the status means
   * for the stored tokens, in one statement, then tells the `onTokenChange` listeners.
   *
   * Active saves a new token set: a rotated refresh token replaces the stored one together with the access
   * token, before anyone can use the new access token (docs/protocol.md §4.3).
   */
  async transition<To extends keyof TokenTransitions>(id: string, to: To, detail: TokenTransitions[To]): Promise<void> {
    await this.#write(id, this.#columnsOf(id, { to, ...detail } as TokenTransition));
    this.#tokenChanged(id);
  }

  #columnsOf(id: string, change: TokenTransition): Updateable<OAuthAccountsTable> {
    switch (change.to) {
      case 'Unchanged':
        return { token_advice: change.advice };
      case 'Active': {
        const { tokens, at } = change;
        return {
          token_status: 'Active',
          token_error: null,
          token_advice: null,
          token_status_at: at,
          access_token_enc: this.store.secrets.encrypt(tokens.accessToken, secretContext(id, 'access_token')),
          access_token_expires_at: tokens.expiresAt,
          granted_scope: tokens.scope ?? null,
          token_issued_at: at,
          refresh_failures: 0,
          next_refresh_attempt_at: null,
          refresh_lease_owner: null,
          refresh_lease_until: null,
          ...(tokens.refreshToken
            ? { refresh_token_enc: this.store.secrets.encrypt(tokens.refreshToken, secretContext(id, 'refresh_token')) }
            : change.keepRefreshToken
              ? {}
              : { refresh_token_enc: null }),
          ...(tokens.mailbox ? { mailbox: tokens.mailbox } : {}),
          ...(tokens.displayName ? { display_name: tokens.displayName } : {}),
        };
      }
      case 'Error':
        return {
          token_status: 'Error',
          token_error: change.error,
          token_advice: change.advice,
          token_status_at: Date.now(),
          refresh_failures: change.failures,
          next_refresh_attempt_at: change.nextAttemptAt,
        };
      default:
        return {
          token_status: change.to,
          token_error: change.error ?? null,
          token_advice: change.advice ?? null,
          token_status_at: Date.now(),
          ...(change.forget ? NO_TOKENS : {}),
          ...(change.forget === 'tokens-and-mailbox' ? { mailbox: null, display_name: null } : {}),
        };
    }
  }

  async #write(id: string, columns: Updateable<OAuthAccountsTable>): Promise<void> {
    await this.store.db
      .updateTable('oauth_accounts')
      .set({ ...columns, updated_at: Date.now() })
      .where('id', '=', id)
      .execute();
  }

  #tokenChanged(id: string): void {
    for (const listener of this.#tokenListeners) listener(id);
  }

  encryptClientSecret(id: string, secret: string): string {
    return this.store.secrets.encrypt(secret, secretContext(id, 'client_secret'));
  }

  /** Encrypts an application credential of the account: its certificate's private key, or a service account key. */
  encryptCredential(id: string, column: 'client_key' | 'service_account_key', value: string): string {
    return this.store.secrets.encrypt(value, secretContext(id, column));
  }

  /** The certificate's private key (client credentials by certificate), decrypted. */
  clientKey(row: AccountRow): string | undefined {
    return this.store.secrets.decryptOptional(row.client_key_enc, secretContext(row.id, 'client_key')) ?? undefined;
  }

  /** The Google service account's JSON key, decrypted. */
  serviceAccountKey(row: AccountRow): string | undefined {
    return this.store.secrets.decryptOptional(row.service_account_key_enc, secretContext(row.id, 'service_account_key')) ?? undefined;
  }

  clientSecret(row: AccountRow): string | undefined {
    return this.store.secrets.decryptOptional(row.client_secret_enc, secretContext(row.id, 'client_secret')) ?? undefined;
  }

  accessToken(row: AccountRow): string | undefined {
    return this.store.secrets.decryptOptional(row.access_token_enc, secretContext(row.id, 'access_token')) ?? undefined;
  }

  refreshToken(row: AccountRow): string | undefined {
    return this.store.secrets.decryptOptional(row.refresh_token_enc, secretContext(row.id, 'refresh_token')) ?? undefined;
  }

  async setConnection(id: string, result: ConnectionCheckResult | { status: ConnectionStatus | null; detail: string | null }): Promise<void> {
    await this.update(id, {
      connection_status: result.status,
      connection_detail: result.detail,
      connection_checked_at: Date.now(),
    });
  }

  /** What the last comparison with the authorization server's clock found (oauth/clock-skew.ts). */
  async setServerClock(id: string, clock: { offsetMs: number; host: string; checkedAt: number }): Promise<void> {
    await this.update(id, { clock_offset_ms: clock.offsetMs, clock_server_host: clock.host, clock_checked_at: clock.checkedAt });
  }

  /**
   * Takes the refresh lease for `owner` when nobody else holds a live one. Conditional update, so across
   * instances sharing one database only one wins.
   */
  async acquireRefreshLease(id: string, owner: string, now: number, ttlMs: number): Promise<boolean> {
    const result = await this.store.db
      .updateTable('oauth_accounts')
      .set({ refresh_lease_owner: owner, refresh_lease_until: now + ttlMs })
      .where('id', '=', id)
      .where((eb) =>
        eb.or([eb('refresh_lease_until', 'is', null), eb('refresh_lease_until', '<', now), eb('refresh_lease_owner', '=', owner)]),
      )
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  async releaseRefreshLease(id: string, owner: string): Promise<void> {
    await this.store.db
      .updateTable('oauth_accounts')
      .set({ refresh_lease_owner: null, refresh_lease_until: null })
      .where('id', '=', id)
      .where('refresh_lease_owner', '=', owner)
      .execute();
  }

  // ---- device authorizations ------------------------------------------------------------------------

  async deviceAuthorization(accountId: string): Promise<DeviceAuthorizationRow | undefined> {
    return this.store.db.selectFrom('device_authorizations').selectAll().where('account_id', '=', accountId).executeTakeFirst();
  }

  deviceCode(row: DeviceAuthorizationRow): string {
    return this.store.secrets.decrypt(row.device_code_enc, deviceCodeContext(row.account_id));
  }

  /**
   * Replaces any earlier device authorization of the account: only one may be active (docs/protocol.md §1.1).
   */
  async saveDeviceAuthorization(accountId: string, grant: DeviceAuthorization, now: number): Promise<void> {
    const row = {
      account_id: accountId,
      device_code_enc: this.store.secrets.encrypt(grant.deviceCode, deviceCodeContext(accountId)),
      user_code: grant.userCode,
      verification_uri: grant.verificationUri,
      verification_uri_complete: grant.verificationUriComplete ?? null,
      message: grant.message ?? null,
      poll_interval: grant.interval,
      started_at: now,
      expires_at: grant.expiresAt,
      next_poll_at: now + grant.interval * 1000,
      status: 'Pending' as const,
      detail: null,
      network_failures: 0,
      poll_lease_owner: null,
      poll_lease_until: null,
      updated_at: now,
    };
    await this.store.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('device_authorizations').where('account_id', '=', accountId).execute();
      await trx.insertInto('device_authorizations').values(row).execute();
    });
  }

  async updateDeviceAuthorization(accountId: string, patch: Updateable<DeviceAuthorizationsTable>): Promise<void> {
    await this.store.db
      .updateTable('device_authorizations')
      .set({ ...patch, updated_at: Date.now() })
      .where('account_id', '=', accountId)
      .execute();
  }

  async pendingDeviceAuthorizations(): Promise<DeviceAuthorizationRow[]> {
    return this.store.db.selectFrom('device_authorizations').selectAll().where('status', '=', 'Pending').execute();
  }

  async acquirePollLease(accountId: string, owner: string, now: number, ttlMs: number): Promise<boolean> {
    const result = await this.store.db
      .updateTable('device_authorizations')
      .set({ poll_lease_owner: owner, poll_lease_until: now + ttlMs })
      .where('account_id', '=', accountId)
      .where('status', '=', 'Pending')
      .where((eb) =>
        eb.or([eb('poll_lease_until', 'is', null), eb('poll_lease_until', '<', now), eb('poll_lease_owner', '=', owner)]),
      )
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  async deleteDeviceAuthorization(accountId: string): Promise<void> {
    await this.store.db.deleteFrom('device_authorizations').where('account_id', '=', accountId).execute();
  }

  // ---- authorization code attempts (Google) ------------------------------------------------------------

  /**
   * Records a new authorization attempt for the admin session. Earlier unused attempts of the same session
   * are dropped: a bare pasted code is matched to the session's one pending attempt.
   */
  async createAuthorizationAttempt(
    accountId: string,
    sessionId: string,
    attempt: { state: string; codeVerifier: string; redirectUri: string },
    now: number,
    ttlMs: number,
  ): Promise<void> {
    const hash = stateHash(attempt.state);
    await this.store.db.transaction().execute(async (trx) => {
      await trx
        .deleteFrom('authorization_attempts')
        .where((eb) =>
          eb.or([
            eb.and([eb('account_id', '=', accountId), eb('session_id', '=', sessionId), eb('used_at', 'is', null)]),
            eb('expires_at', '<', now - 24 * 60 * 60_000),
          ]),
        )
        .execute();
      await trx
        .insertInto('authorization_attempts')
        .values({
          state_hash: hash,
          account_id: accountId,
          session_id: sessionId,
          code_verifier_enc: this.store.secrets.encrypt(attempt.codeVerifier, `authorization_attempts.code_verifier:${hash}`),
          redirect_uri: attempt.redirectUri,
          created_at: now,
          expires_at: now + ttlMs,
          used_at: null,
        })
        .execute();
    });
  }

  async authorizationAttemptByState(state: string): Promise<AuthorizationAttemptRow | undefined> {
    return this.store.db.selectFrom('authorization_attempts').selectAll().where('state_hash', '=', stateHash(state)).executeTakeFirst();
  }

  async latestAuthorizationAttempt(accountId: string, sessionId: string): Promise<AuthorizationAttemptRow | undefined> {
    return this.store.db
      .selectFrom('authorization_attempts')
      .selectAll()
      .where('account_id', '=', accountId)
      .where('session_id', '=', sessionId)
      .orderBy('created_at', 'desc')
      .limit(1)
      .executeTakeFirst();
  }

  codeVerifier(row: AuthorizationAttemptRow): string {
    return this.store.secrets.decrypt(row.code_verifier_enc, `authorization_attempts.code_verifier:${row.state_hash}`);
  }

  /** Marks the attempt used; false when it already was (each code is exchanged at most once). */
  async markAuthorizationAttemptUsed(hash: string, now: number): Promise<boolean> {
    const result = await this.store.db
      .updateTable('authorization_attempts')
      .set({ used_at: now })
      .where('state_hash', '=', hash)
      .where('used_at', 'is', null)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }
}
