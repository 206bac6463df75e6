/**
 * OAuth 2.0 (Microsoft): Basic Settings, and the device authorization grant (RFC 8628, seed steps 3–13):
 * saving Use, the TLS options, the endpoint and the client ID; the user code requested after OK or with
 * Get New User Code. The device poller (device-poller.ts) takes the grant on from there.
 *
 * - Tokens are bound to the app registration and tenant they were issued for: a new endpoint or client ID
 *   forgets them.
 * - With Use on, OK checks the connection and, unless the account holds a usable authorization, requests a
 *   user code, in the background (account-operations.ts).
 * - Use off cancels a pending user code.
 */
import type { Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import { settingsOf, type AccountRow, type OAuthAccounts } from './accounts.js';
import type { AccountOperations } from './account-operations.js';
import { authorizationServerOf, clientOf } from './authorization-server.js';
import { useAndTlsAudit, useAndTlsColumns, type FieldErrors, type MicrosoftSettingsInput, type SaveSettingsResult } from './basic-settings.js';
import type { DevicePoller } from './device-poller.js';
import { startDeviceAuthorization } from './grants.js';
import type { OAuthHttp } from './http.js';
import { MICROSOFT_SCOPE, microsoftGraphScope, PROVIDER_LABELS, validateMicrosoftClientId, validateMicrosoftEndpoint } from './profiles.js';
import { toProviderError } from './provider-errors.js';


export interface MicrosoftAuthorizationOptions {
  accounts: OAuthAccounts;
  http: OAuthHttp;
  poller: DevicePoller;
  operations: AccountOperations;
  audit: AuditLog;
  log: Logger;
  now?: () => number;
  /** The account these steps act on: the seed's ('microsoft') unless told. */
  accountId?: string;
}

export class MicrosoftAuthorization {
  readonly #id: string;
  readonly #accounts: OAuthAccounts;
  readonly #http: OAuthHttp;
  readonly #poller: DevicePoller;
  readonly #operations: AccountOperations;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #now: () => number;

  constructor(options: MicrosoftAuthorizationOptions) {
    this.#accounts = options.accounts;
    this.#http = options.http;
    this.#poller = options.poller;
    this.#operations = options.operations;
    this.#audit = options.audit;
    this.#log = options.log.child({ component: 'oauth-microsoft' });
    this.#now = options.now ?? Date.now;
    this.#id = options.accountId ?? 'microsoft';
  }

  /** The account these steps act on. */
  get accountId(): string {
    return this.#id;
  }

  validateSettings(input: MicrosoftSettingsInput): FieldErrors {
    const errors: FieldErrors = {};
    const endpoint = validateMicrosoftEndpoint(input.endpoint);
    if (!endpoint.ok) errors.endpoint = endpoint.error;
    const clientId = validateMicrosoftClientId(input.clientId);
    if (!clientId.ok) errors.clientId = clientId.error;
    return errors;
  }

  /**
   * Saves the Basic Settings. With Use on, checks the connection and, unless an Active token for the same
   * endpoint and client exists, starts the device authorization grant (in the background).
   */
  async saveSettings(input: MicrosoftSettingsInput, actor: string): Promise<SaveSettingsResult> {
    const errors = this.validateSettings(input);
    const endpoint = validateMicrosoftEndpoint(input.endpoint);
    const clientId = validateMicrosoftClientId(input.clientId);
    if (!endpoint.ok || !clientId.ok) return { ok: false, errors };

    const before = await this.#accounts.getOrCreate(this.#id);
    const identityChanged = before.endpoint !== endpoint.value.endpoint || before.client_id !== clientId.value;
    await this.#accounts.update(this.#id, { ...useAndTlsColumns(input), endpoint: endpoint.value.endpoint, client_id: clientId.value });
    if (identityChanged && before.refresh_token_enc !== null) {
      this.#poller.cancel(this.#id);
      await this.#accounts.deleteDeviceAuthorization(this.#id);
      await this.#accounts.transition(this.#id, 'NotRegistered', { forget: 'tokens-and-mailbox' });
    }
    await this.#audit.record(actor, 'settings.oauth.microsoft', `${useAndTlsAudit(input)} endpoint=${endpoint.value.endpoint} client_id=${clientId.value}`);

    if (!input.enabled) {
      this.#poller.cancel(this.#id);
      const grant = await this.#accounts.deviceAuthorization(this.#id);
      if (grant?.status === 'Pending') {
        await this.#accounts.updateDeviceAuthorization(this.#id, { status: 'Cancelled', detail: `Cancelled: Use ${PROVIDER_LABELS.microsoft} was turned off.` });
        const row = await this.#accounts.get(this.#id);
        if (row?.refresh_token_enc === null) await this.#accounts.transition(this.#id, 'NotRegistered', {});
      }
      await this.#operations.forgetConnection(this.#id);
      return { ok: true };
    }
    const after = await this.#accounts.get(this.#id);
    const needsAuthorization = after?.refresh_token_enc === null || after?.token_status === 'Expired';
    this.#operations.runInBackground(this.#id, () => this.#connectAndAuthorize(needsAuthorization));
    return { ok: true };
  }

  /** Get New User Code: checks the connection again and starts a fresh device authorization. */
  async requestNewUserCode(actor: string): Promise<void> {
    await this.#audit.record(actor, 'oauth.user_code.requested', PROVIDER_LABELS.microsoft);
    this.#operations.runInBackground(this.#id, () => this.#connectAndAuthorize(true));
  }

  async #connectAndAuthorize(startGrant: boolean): Promise<void> {
    const connection = await this.#operations.connect(this.#id);
    if (!connection) return;
    const { row, connected } = connection;
    if (!connected) {
      if (startGrant && row.refresh_token_enc === null) {
        await this.#accounts.transition(this.#id, 'NotRegistered', {
          advice: 'Postern could not reach the authorization server, so no user code was requested. Fix the connection, then click Get New User Code.',
        });
      }
      return;
    }
    if (startGrant) await this.#startDeviceAuthorization(row);
  }

  /** RFC 8628 §3.1–3.2: a new user code replaces any earlier one, and the poller starts on it. */
  async #startDeviceAuthorization(row: AccountRow): Promise<void> {
    this.#poller.cancel(this.#id);
    const now = this.#now();
    try {
      const grant = await startDeviceAuthorization(
        authorizationServerOf(row),
        clientOf(row, undefined),
        row.delivery_method === 'graph' ? microsoftGraphScope(row.graph_large_messages === 1, true) : MICROSOFT_SCOPE,
        await this.#http.options(settingsOf(row).tls),
        this.#now,
      );
      await this.#accounts.saveDeviceAuthorization(this.#id, grant, now);
      if (row.refresh_token_enc === null || row.token_status === 'Expired') {
        // After Expired the mailbox stays on show: it is the one the admin signs in with again.
        await this.#accounts.transition(this.#id, 'WaitingForAuthorization', { forget: row.token_status === 'Expired' ? 'tokens' : 'tokens-and-mailbox' });
      }
      this.#poller.schedule(this.#id, now + grant.interval * 1000);
      this.#log.info({ account: this.#id, expiresAt: new Date(grant.expiresAt).toISOString() }, `${PROVIDER_LABELS.microsoft}: user code issued, waiting for sign-in`);
    } catch (thrown) {
      const error = toProviderError(row.provider, thrown, new URL(authorizationServerOf(row).tokenEndpoint).host);
      await this.#accounts.deleteDeviceAuthorization(this.#id);
      if (row.refresh_token_enc === null) {
        await this.#accounts.transition(this.#id, 'NotRegistered', { error: `No user code: ${error.providerText}`, advice: error.advice ?? null });
      } else {
        await this.#accounts.transition(this.#id, 'Unchanged', { advice: `A new user code could not be requested: ${error.providerText}` });
      }
      this.#log.warn({ account: this.#id, error: error.error, description: error.description }, 'device authorization request failed');
    }
  }
}
