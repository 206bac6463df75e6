/**
 * The OAuth facade the Remote UI talks to: save Basic Settings, check the connection, start the device
 * authorization grant, delete tokens, and assemble what the status block shows.
 *
 * The connection check also compares the server's Date header with this host's clock (clock-skew.ts).
 *
 * Long steps (connection check, device authorization request) run in the background after OK, as on the
 * device ("wait a few seconds, then click refresh"); `whenIdle()` lets callers and tests await them.
 */
import { describeError, type Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import type { ProviderId } from '../store/schema.js';
import { settingsOf, TOKEN_STATUS_LABELS, type AccountRow, type OAuthAccounts, type TokenStatus } from './accounts.js';
import { authorizationServerOf, clientOf, connectionCheckUrl } from './authorization-server.js';
import { clockSkewWarningOf, recordServerClock, ServerClockProbe } from './clock-skew.js';
import { checkConnection, CONNECTION_STATUS_LABELS, type ConnectionStatus } from './connection-check.js';
import type { DevicePoller } from './device-poller.js';
import { startDeviceAuthorization } from './grants.js';
import type { GoogleAuthorization, GoogleSettingsInput } from './google.js';
import type { OAuthHttp } from './http.js';
import {
  MICROSOFT_DEFAULT_ENDPOINT,
  MICROSOFT_SCOPE,
  PROVIDER_LABELS,
  validateMicrosoftClientId,
  validateMicrosoftEndpoint,
} from './profiles.js';
import { toProviderError } from './provider-errors.js';

export interface MicrosoftSettingsInput {
  enabled: boolean;
  verifyServerCertificate: boolean;
  addCnToVerificationItems: boolean;
  endpoint: string;
  clientId: string;
}

export type FieldErrors = Partial<Record<string, string>>;

export interface AccountStatusView {
  provider: ProviderId;
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

export interface OAuthServiceOptions {
  accounts: OAuthAccounts;
  google: GoogleAuthorization;
  http: OAuthHttp;
  poller: DevicePoller;
  audit: AuditLog;
  log: Logger;
  now?: () => number;
}

export class OAuthService {
  readonly #operations = new Map<string, Promise<void>>();
  readonly #accounts: OAuthAccounts;
  readonly #http: OAuthHttp;
  readonly #poller: DevicePoller;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #now: () => number;
  /** Register Information for Authorization (Google). */
  readonly google: GoogleAuthorization;

  constructor(options: OAuthServiceOptions) {
    this.#accounts = options.accounts;
    this.google = options.google;
    this.#http = options.http;
    this.#poller = options.poller;
    this.#audit = options.audit;
    this.#log = options.log.child({ component: 'oauth' });
    this.#now = options.now ?? Date.now;
  }

  account(id: ProviderId): Promise<AccountRow> {
    return this.#accounts.getOrCreate(id);
  }

  /** Resolves when the account's background operation (if any) has finished. */
  async whenIdle(id: ProviderId): Promise<void> {
    while (this.#operations.has(id)) await this.#operations.get(id);
  }

  #runInBackground(id: ProviderId, operation: () => Promise<void>): void {
    const previous = this.#operations.get(id) ?? Promise.resolve();
    const run = previous
      .then(operation)
      .catch((error) => this.#log.error({ err: describeError(error), account: id }, 'background OAuth operation failed'))
      .finally(() => {
        if (this.#operations.get(id) === run) this.#operations.delete(id);
      });
    this.#operations.set(id, run);
  }

  // ---- Microsoft: Edit Basic Settings ----------------------------------------------------------------

  validateMicrosoftSettings(input: MicrosoftSettingsInput): FieldErrors {
    const errors: FieldErrors = {};
    const endpoint = validateMicrosoftEndpoint(input.endpoint);
    if (!endpoint.ok) errors.endpoint = endpoint.error;
    const clientId = validateMicrosoftClientId(input.clientId);
    if (!clientId.ok) errors.clientId = clientId.error;
    return errors;
  }

  /**
   * Saves the Microsoft Basic Settings. With Use on, checks the connection and, unless an Active token for
   * the same endpoint and client exists, starts the device authorization grant (in the background).
   */
  async saveMicrosoftSettings(input: MicrosoftSettingsInput, actor: string): Promise<{ ok: true } | { ok: false; errors: FieldErrors }> {
    const errors = this.validateMicrosoftSettings(input);
    if (Object.keys(errors).length > 0) return { ok: false, errors };
    const endpoint = validateMicrosoftEndpoint(input.endpoint);
    const clientId = validateMicrosoftClientId(input.clientId);
    if (!endpoint.ok || !clientId.ok) return { ok: false, errors };

    const before = await this.#accounts.getOrCreate('microsoft');
    const identityChanged = before.endpoint !== endpoint.value.endpoint || before.client_id !== clientId.value;
    await this.#accounts.update('microsoft', {
      enabled: input.enabled ? 1 : 0,
      verify_server_certificate: input.verifyServerCertificate ? 1 : 0,
      add_cn_to_verification_items: input.verifyServerCertificate && input.addCnToVerificationItems ? 1 : 0,
      endpoint: endpoint.value.endpoint,
      client_id: clientId.value,
    });
    if (identityChanged && before.refresh_token_enc !== null) {
      // Tokens are bound to the app registration and tenant they were issued for.
      this.#poller.cancel('microsoft');
      await this.#accounts.deleteDeviceAuthorization('microsoft');
      await this.#accounts.transition('microsoft', 'NotRegistered', { forget: 'tokens-and-mailbox' });
    }
    await this.#audit.record(
      actor,
      'settings.oauth.microsoft',
      `Use=${input.enabled ? 'on' : 'off'} Verify=${input.verifyServerCertificate ? 'on' : 'off'} AddCN=${input.verifyServerCertificate && input.addCnToVerificationItems ? 'on' : 'off'} endpoint=${endpoint.value.endpoint} client_id=${clientId.value}`,
    );

    if (!input.enabled) {
      this.#poller.cancel('microsoft');
      const grant = await this.#accounts.deviceAuthorization('microsoft');
      if (grant?.status === 'Pending') {
        await this.#accounts.updateDeviceAuthorization('microsoft', { status: 'Cancelled', detail: 'Cancelled: Use OAuth 2.0 (Microsoft) was turned off.' });
        const row = await this.#accounts.get('microsoft');
        if (row?.refresh_token_enc === null) await this.#accounts.transition('microsoft', 'NotRegistered', {});
      }
      await this.#accounts.setConnection('microsoft', { status: null, detail: null });
      return { ok: true };
    }
    const after = await this.#accounts.get('microsoft');
    const needsAuthorization = after?.refresh_token_enc === null || after?.token_status === 'Expired';
    this.#runInBackground('microsoft', () => this.#connectAndAuthorize('microsoft', needsAuthorization));
    return { ok: true };
  }

  // ---- Google: Edit Basic Settings -------------------------------------------------------------------

  /** Saves the Google Basic Settings; with Use on, checks the connection to the token endpoint's host. */
  async saveGoogleSettings(input: GoogleSettingsInput, actor: string): Promise<{ ok: true; identityChanged: boolean } | { ok: false; errors: FieldErrors }> {
    const result = await this.google.saveSettings(input, actor);
    if (!result.ok) return result;
    if (input.enabled) {
      this.#runInBackground('google', () => this.#connectAndAuthorize('google', false));
    } else {
      await this.#accounts.setConnection('google', { status: null, detail: null });
    }
    return result;
  }

  /** Get New User Code: checks the connection again and starts a fresh device authorization. */
  async requestNewUserCode(id: ProviderId, actor: string): Promise<void> {
    await this.#audit.record(actor, 'oauth.user_code.requested', PROVIDER_LABELS[id]);
    this.#runInBackground(id, () => this.#connectAndAuthorize(id, true));
  }

  /** Re-runs only the connection check (e.g. after registering a CA certificate). */
  async recheckConnection(id: ProviderId): Promise<void> {
    this.#runInBackground(id, async () => {
      await this.#checkConnection(await this.#accounts.getOrCreate(id));
    });
  }

  async #checkConnection(row: AccountRow): Promise<boolean> {
    const clock = new ServerClockProbe(this.#now);
    const fetch = clock.fetch(await this.#http.fetchFor(settingsOf(row).tls));
    const result = await checkConnection(connectionCheckUrl(row), fetch);
    await recordServerClock(this.#accounts, this.#log, row.id, clock.last);
    await this.#accounts.setConnection(row.id, result);
    if (result.status === 'ConnectionFailed') {
      this.#log.warn({ account: row.id, reason: result.detail }, `${PROVIDER_LABELS[row.provider]}: Connection Failed`);
    }
    return result.status === 'SuccessfullyConnected';
  }

  async #connectAndAuthorize(id: ProviderId, startGrant: boolean): Promise<void> {
    const row = await this.#accounts.getOrCreate(id);
    if (row.enabled !== 1) return;
    await this.#accounts.setConnection(id, { status: null, detail: 'Connecting…' });
    if (!(await this.#checkConnection(row))) {
      if (startGrant && row.refresh_token_enc === null) {
        await this.#accounts.transition(id, 'NotRegistered', {
          advice: 'Postern could not reach the authorization server, so no user code was requested. Fix the connection, then click Get New User Code.',
        });
      }
      return;
    }
    if (!startGrant || row.provider !== 'microsoft') return;

    this.#poller.cancel(id);
    const now = this.#now();
    try {
      const grant = await startDeviceAuthorization(
        authorizationServerOf(row),
        clientOf(row, undefined),
        MICROSOFT_SCOPE,
        await this.#http.options(settingsOf(row).tls),
        this.#now,
      );
      await this.#accounts.saveDeviceAuthorization(id, grant, now);
      if (row.refresh_token_enc === null || row.token_status === 'Expired') {
        await this.#accounts.transition(id, 'WaitingForAuthorization', { forget: row.token_status === 'Expired' ? 'tokens' : 'tokens-and-mailbox' });
      }
      this.#poller.schedule(id, now + grant.interval * 1000);
      this.#log.info({ account: id, expiresAt: new Date(grant.expiresAt).toISOString() }, `${PROVIDER_LABELS[row.provider]}: user code issued, waiting for sign-in`);
    } catch (thrown) {
      const error = toProviderError(row.provider, thrown, new URL(authorizationServerOf(row).tokenEndpoint).host);
      await this.#accounts.deleteDeviceAuthorization(id);
      if (row.refresh_token_enc === null) {
        await this.#accounts.transition(id, 'NotRegistered', {
          error: `No user code: ${error.providerText}`,
          advice: error.advice ?? null,
        });
      } else {
        await this.#accounts.transition(id, 'Unchanged', { advice: `A new user code could not be requested: ${error.providerText}` });
      }
      this.#log.warn({ account: id, error: error.error, description: error.description }, 'device authorization request failed');
    }
  }

  /** Deletes the stored tokens (and stops any pending authorization). Token Status becomes Not Registered. */
  async deleteToken(id: ProviderId, actor: string): Promise<void> {
    await this.whenIdle(id);
    this.#poller.cancel(id);
    await this.#accounts.deleteDeviceAuthorization(id);
    await this.#accounts.transition(id, 'NotRegistered', { forget: 'tokens-and-mailbox' });
    await this.#audit.record(actor, 'oauth.token.deleted', PROVIDER_LABELS[id]);
    this.#log.info({ account: id }, `${PROVIDER_LABELS[id]}: token deleted`);
  }

  // ---- Status ----------------------------------------------------------------------------------------

  async status(id: ProviderId): Promise<AccountStatusView> {
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
      provider: id,
      label: PROVIDER_LABELS[id],
      enabled: settings.enabled,
      busy: this.#operations.has(id),
      settings: {
        verifyServerCertificate: settings.tls.verifyServerCertificate,
        addCnToVerificationItems: settings.tls.addCnToVerificationItems,
        endpoint: row.endpoint ?? (id === 'microsoft' ? MICROSOFT_DEFAULT_ENDPOINT : null),
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
