/**
 * The OAuth API the Remote UI talks to. Each provider's own steps live in its authorization, reached as
 * `microsoft` (Basic Settings, device authorization grant) and `google` (Basic Settings, authorization code
 * with PKCE); what the two screens share lives here: the status block, Delete Token, the connection check
 * run again on its own, and waiting for the background steps (account-operations.ts).
 *
 * The status block also shows this host's clock against the authorization server's (clock-skew.ts).
 */
import type { Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import type { AuthorizationType, DeliveryMethod, ProviderId } from '../store/schema.js';
import { AccountNotFoundError, settingsOf, TOKEN_STATUS_LABELS, type OAuthAccounts, type TokenStatus } from './accounts.js';
import { AccountOperations } from './account-operations.js';
import { clockSkewWarningOf } from './clock-skew.js';
import { CONNECTION_STATUS_LABELS, type ConnectionStatus } from './connection-check.js';
import type { DevicePoller } from './device-poller.js';
import { ApplicationAuthorization } from './application.js';
import { GoogleAuthorization } from './google.js';
import type { OAuthHttp } from './http.js';
import { MicrosoftAuthorization } from './microsoft.js';
import { MICROSOFT_DEFAULT_ENDPOINT, PROVIDER_LABELS, accountLabel } from './profiles.js';

export interface AccountStatusView {
  /** The account's id ('microsoft' and 'google' for the seed's). */
  id: string;
  provider: ProviderId;
  /** The administrator's name for it ('' for the seed's until one is given). */
  name: string;
  authorizationType: AuthorizationType;
  deliveryMethod: DeliveryMethod;
  /** The mailbox an application sends as (client credentials, service account). */
  appMailbox: string | null;
  label: string;
  enabled: boolean;
  busy: boolean;
  settings: {
    verifyServerCertificate: boolean;
    addCnToVerificationItems: boolean;
    endpoint: string | null;
    clientId: string | null;
    hasClientSecret: boolean;
    authorizationEndpoint: string | null;
    tokenEndpoint: string | null;
  };
  connection: { status: ConnectionStatus | null; label: string; detail: string | null; checkedAt: number | null };
  device: {
    status: string;
    userCode: string;
    verificationUri: string;
    message: string | null;
    expiresAt: number;
    remainingSeconds: number;
    detail: string | null;
  } | null;
  token: {
    status: TokenStatus;
    label: string;
    error: string | null;
    advice: string | null;
    mailbox: string | null;
    displayName: string | null;
    accessTokenExpiresAt: number | null;
    statusAt: number;
  };
  warnings: string[];
  /** This host's clock is more than 2 minutes off the authorization server's (shown apart from the status values). */
  clockWarning: string | null;
}

/** What the authorizations of every account share. */
export interface OAuthParts {
  accounts: OAuthAccounts;
  http: OAuthHttp;
  poller: DevicePoller;
  operations: AccountOperations;
  audit: AuditLog;
  log: Logger;
}

export interface OAuthServiceOptions {
  /** What an account's own steps are built from (microsoftFor, googleFor). */
  parts: OAuthParts;
  accounts: OAuthAccounts;
  operations: AccountOperations;
  microsoft: MicrosoftAuthorization;
  google: GoogleAuthorization;
  application: ApplicationAuthorization;
  poller: DevicePoller;
  audit: AuditLog;
  log: Logger;
  now?: () => number;
}

export class OAuthService {
  readonly #accounts: OAuthAccounts;
  readonly #operations: AccountOperations;
  readonly #poller: DevicePoller;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #parts: OAuthParts;
  /** OAuth 2.0 (Microsoft): Basic Settings and the device authorization grant. */
  readonly microsoft: MicrosoftAuthorization;
  /** OAuth 2.0 (Google): Basic Settings and Register Information for Authorization. */
  readonly google: GoogleAuthorization;
  /** Authorization Type: Application, for any account (client credentials, service accounts). */
  readonly application: ApplicationAuthorization;

  constructor(options: OAuthServiceOptions) {
    this.#accounts = options.accounts;
    this.#parts = options.parts;
    this.#operations = options.operations;
    this.microsoft = options.microsoft;
    this.google = options.google;
    this.application = options.application;
    this.#poller = options.poller;
    this.#audit = options.audit;
    this.#log = options.log.child({ component: 'oauth' });
    this.#now = options.now ?? Date.now;
  }

  readonly #bound = new Map<string, MicrosoftAuthorization | GoogleAuthorization>();

  /** OAuth 2.0 (Microsoft) steps for one Microsoft account (the seed's: `microsoft`). */
  microsoftFor(id: string): MicrosoftAuthorization {
    if (id === this.microsoft.accountId) return this.microsoft;
    let bound = this.#bound.get(id);
    if (!(bound instanceof MicrosoftAuthorization)) {
      bound = new MicrosoftAuthorization({ ...this.#parts, accountId: id });
      this.#bound.set(id, bound);
    }
    return bound;
  }

  /** OAuth 2.0 (Google) steps for one Google account (the seed's: `google`). */
  googleFor(id: string): GoogleAuthorization {
    if (id === this.google.accountId) return this.google;
    let bound = this.#bound.get(id);
    if (!(bound instanceof GoogleAuthorization)) {
      bound = new GoogleAuthorization({ ...this.#parts, accountId: id });
      this.#bound.set(id, bound);
    }
    return bound;
  }

  /** Resolves when the account's background operation (if any) has finished. */
  whenIdle(id: string): Promise<void> {
    return this.#operations.whenIdle(id);
  }

  /** Re-runs only the connection check (e.g. after registering a CA certificate). */
  async recheckConnection(id: string): Promise<void> {
    this.#operations.runInBackground(id, async () => {
      await this.#operations.checkConnection(await this.#accounts.getOrCreate(id));
    });
  }

  /** Deletes the stored tokens (and stops any pending authorization). Token Status becomes Not Registered. */
  async deleteToken(id: string, actor: string): Promise<void> {
    await this.whenIdle(id);
    this.#poller.cancel(id);
    await this.#accounts.deleteDeviceAuthorization(id);
    await this.#accounts.transition(id, 'NotRegistered', { forget: 'tokens-and-mailbox' });
    const row = await this.#accounts.get(id);
    const label = accountLabel(id, row?.name);
    await this.#audit.record(actor, 'oauth.token.deleted', label);
    this.#log.info({ account: id }, `${label}: token deleted`);
  }

  /**
   * Chooses how a Microsoft account hands its messages to Microsoft: SMTP (XOAUTH2) or Microsoft Graph, and
   * whether Mail.ReadWrite was granted (messages over 3 MB then go through a draft). The access token is
   * forgotten, not the refresh token: the next one is asked for with the scopes of the new method.
   */
  async setDeliveryMethod(id: string, method: DeliveryMethod, largeMessages: boolean, actor: string): Promise<void> {
    const row = await this.#accounts.get(id);
    if (!row) throw new AccountNotFoundError(id);
    await this.#accounts.update(id, {
      delivery_method: method,
      graph_large_messages: largeMessages ? 1 : 0,
      access_token_enc: null,
      access_token_expires_at: null,
      updated_at: this.#now(),
    });
    const label = accountLabel(id, row.name);
    const words = method === 'graph' ? `Microsoft Graph${largeMessages ? ', large messages through a draft' : ''}` : 'SMTP (XOAUTH2)';
    await this.#audit.record(actor, 'oauth.delivery-method.changed', `${label}: ${words}`);
    this.#log.info({ account: id, deliveryMethod: method, largeMessages }, `${label}: Delivery Method ${words}`);
  }

  /** The account an authorization attempt (Google's `state`) was started for; undefined when none is known. */
  async accountOfAttempt(state: string): Promise<string | undefined> {
    if (state === '' || state.length > 1024) return undefined;
    return (await this.#accounts.authorizationAttemptByState(state))?.account_id;
  }

  // ---- Status ----------------------------------------------------------------------------------------

  async status(id: string): Promise<AccountStatusView> {
    const row = await this.#accounts.getOrCreate(id);
    const grant = await this.#accounts.deviceAuthorization(id);
    const now = this.#now();
    const settings = settingsOf(row);
    const warnings: string[] = [];
    if (settings.enabled && !settings.tls.verifyServerCertificate) {
      warnings.push('Verify Server Certificate is off: the connection is encrypted, but the server is not authenticated.');
    } else if (settings.enabled && !settings.tls.addCnToVerificationItems) {
      warnings.push('Add CN to Verification Items is off: any certificate from a trusted CA is accepted, whatever host it names.');
    }
    const connectionStatus = (row.connection_status as ConnectionStatus | null) ?? null;
    return {
      id,
      provider: row.provider,
      name: row.name,
      authorizationType: row.authorization_type,
      deliveryMethod: row.delivery_method,
      appMailbox: row.app_mailbox,
      label: PROVIDER_LABELS[row.provider],
      enabled: settings.enabled,
      busy: this.#operations.isBusy(id),
      settings: {
        verifyServerCertificate: settings.tls.verifyServerCertificate,
        addCnToVerificationItems: settings.tls.addCnToVerificationItems,
        endpoint: row.endpoint ?? (row.provider === 'microsoft' ? MICROSOFT_DEFAULT_ENDPOINT : null),
        clientId: row.client_id,
        hasClientSecret: settings.hasClientSecret,
        authorizationEndpoint: row.authorization_endpoint,
        tokenEndpoint: row.token_endpoint,
      },
      connection: {
        status: connectionStatus,
        label: connectionStatus ? CONNECTION_STATUS_LABELS[connectionStatus] : settings.enabled ? (row.connection_detail ?? 'Not checked') : 'Not in use',
        detail: connectionStatus ? row.connection_detail : null,
        checkedAt: row.connection_checked_at,
      },
      device:
        grant && grant.status !== 'Completed'
          ? {
              status: grant.status,
              userCode: grant.user_code,
              verificationUri: grant.verification_uri,
              message: grant.message,
              expiresAt: grant.expires_at,
              remainingSeconds: Math.max(0, Math.floor((grant.expires_at - now) / 1000)),
              detail: grant.detail,
            }
          : null,
      token: {
        status: row.token_status,
        label: TOKEN_STATUS_LABELS[row.token_status],
        error: row.token_error,
        advice: row.token_advice,
        mailbox: row.mailbox,
        displayName: row.display_name,
        accessTokenExpiresAt: row.access_token_expires_at,
        statusAt: row.token_status_at,
      },
      warnings,
      clockWarning: settings.enabled ? clockSkewWarningOf(row) : null,
    };
  }
}

/** The OAuth part as the gateway and the command line assemble it: the two authorizations over one set of operations. */
export function createOAuthService(options: Pick<OAuthServiceOptions, 'accounts' | 'poller' | 'audit' | 'log'> & { http: OAuthHttp }): OAuthService {
  const { accounts, http, poller, audit, log } = options;
  const operations = new AccountOperations({ accounts, http, log });
  const parts: OAuthParts = { accounts, http, poller, operations, audit, log };
  const microsoft = new MicrosoftAuthorization(parts);
  const google = new GoogleAuthorization(parts);
  const application = new ApplicationAuthorization(parts);
  return new OAuthService({ parts, accounts, operations, microsoft, google, application, poller, audit, log });
}
