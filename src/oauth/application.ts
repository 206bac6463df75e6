/**
 * Authorization Type: Application. An account whose application signs in as itself, with no person's
 * sign-in: Microsoft client credentials (Tenant ID, Client ID, a Client Secret or a Certificate whose key
 * Postern generates and keeps) and Google service accounts with domain-wide delegation (the JSON key and the
 * mailbox to send as). The protocol steps are in app-only.ts; this module is their Basic Settings: it
 * validates and stores what the administrator enters (secrets and keys encrypted, SecretBox), and asks for a
 * first token in the background, so Token Status says at once whether the set-up at the provider is complete.
 *
 * There is no refresh token: the token service asks for a new access token whenever one is needed
 * (token-service.ts, `#appToken`).
 */
import { hostname } from 'node:os';
import { ErrorCodes, PosternError } from '../errors.js';
import type { Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import type { AuthorizationType } from '../store/schema.js';
import type { AccountRow, OAuthAccounts } from './accounts.js';
import type { AccountOperations } from './account-operations.js';
import { generateClientCertificate, parseServiceAccountKey, validateMicrosoftAppOnlyEndpoint } from './app-only.js';
import { useAndTlsAudit, useAndTlsColumns, type FieldErrors, type SaveSettingsResult, type UseAndTlsInput } from './basic-settings.js';
import type { DevicePoller } from './device-poller.js';
import { accountLabel, isValidTenant, validateMicrosoftClientId } from './profiles.js';

/** Edit Basic Settings of a Microsoft account with Authorization Type: Application (Client Credentials). */
export interface MicrosoftApplicationInput extends UseAndTlsInput {
  /** Directory (tenant) ID: a GUID or the tenant's domain; not common / organizations / consumers. */
  tenantId: string;
  clientId: string;
  credential: 'secret' | 'certificate';
  /** Empty keeps the stored secret. */
  clientSecret: string;
  /** The mailbox the application sends as (XOAUTH2 user, Graph /users/{mailbox}). */
  mailbox: string;
  /** The login host's endpoint (https://login.microsoftonline.com/…/oauth2/v2.0); empty: the account's or Microsoft's. */
  endpoint?: string | undefined;
}

/** Edit Basic Settings of a Google account with Authorization Type: Service Account (Domain-Wide Delegation). */
export interface GoogleServiceAccountInput extends UseAndTlsInput {
  /** The JSON key file's text; empty keeps the stored key. */
  keyJson: string;
  /** The Workspace user to send as (the JWT's `sub`). */
  mailbox: string;
}

/** A new access token, asked for at once (the token service's refresh). */
export interface ApplicationTokenSource {
  refresh(accountId: string): Promise<unknown>;
}

export interface ApplicationAuthorizationOptions {
  accounts: OAuthAccounts;
  operations: AccountOperations;
  poller: DevicePoller;
  audit: AuditLog;
  log: Logger;
}

const MAILBOX = /^[^\s@<>()",;:\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/u;
const DEFAULT_LOGIN_ORIGIN = 'https://login.microsoftonline.com';

function validMailbox(input: string): string | undefined {
  const mailbox = input.trim();
  return mailbox.length <= 254 && MAILBOX.test(mailbox) ? mailbox : undefined;
}

export class ApplicationAuthorization {
  readonly #accounts: OAuthAccounts;
  readonly #operations: AccountOperations;
  readonly #poller: DevicePoller;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  #tokens: ApplicationTokenSource | undefined;

  constructor(options: ApplicationAuthorizationOptions) {
    this.#accounts = options.accounts;
    this.#operations = options.operations;
    this.#poller = options.poller;
    this.#audit = options.audit;
    this.#log = options.log.child({ component: 'oauth-application' });
  }

  /** The token service, told once it exists (it is built after the OAuth service). */
  useTokens(tokens: ApplicationTokenSource): void {
    this.#tokens = tokens;
  }

  async #account(id: string, provider: 'microsoft' | 'google'): Promise<AccountRow> {
    const row = await this.#accounts.get(id);
    if (!row || row.provider !== provider) throw new PosternError(ErrorCodes.OAUTH_ACCOUNT_NOT_FOUND, `There is no ${provider === 'microsoft' ? 'Microsoft' : 'Google'} sending account "${id}".`);
    return row;
  }

  /** The endpoint an app-only Microsoft account uses: the login host of `endpoint` (or the stored one) and `tenant`. */
  #endpointFor(row: AccountRow, input: MicrosoftApplicationInput): string {
    const given = input.endpoint?.trim() || row.endpoint || `${DEFAULT_LOGIN_ORIGIN}/common/oauth2/v2.0`;
    let origin = DEFAULT_LOGIN_ORIGIN;
    try {
      origin = new URL(given).origin;
    } catch {
      // validated below, with the tenant in place
    }
    return `${origin}/${input.tenantId.trim()}/oauth2/v2.0`;
  }

  validateMicrosoft(row: AccountRow, input: MicrosoftApplicationInput): FieldErrors {
    const errors: FieldErrors = {};
    const tenant = input.tenantId.trim();
    if (tenant === '') errors.tenantId = 'Enter the Directory (tenant) ID from the app registration\'s Overview page.';
    else if (!isValidTenant(tenant) || /^(common|organizations|consumers)$/i.test(tenant)) {
      errors.tenantId = `"${tenant.slice(0, 80)}" is not a tenant: enter the Directory (tenant) ID (a GUID) or the tenant's domain (contoso.onmicrosoft.com).`;
    } else {
      const endpoint = validateMicrosoftAppOnlyEndpoint(this.#endpointFor(row, input));
      if (!endpoint.ok) errors.endpoint = endpoint.error;
    }
    const clientId = validateMicrosoftClientId(input.clientId);
    if (!clientId.ok) errors.clientId = clientId.error;
    if (input.credential === 'secret') {
      if (input.clientSecret.trim() === '' && row.client_secret_enc === null) errors.clientSecret = 'Enter the client secret\'s Value (not its Secret ID).';
      else if (input.clientSecret.length > 1024 || /[\x00-\x1f\x7f]/.test(input.clientSecret)) errors.clientSecret = 'A client secret is at most 1024 characters, without control characters.';
    } else if (input.credential === 'certificate') {
      if (row.client_certificate === null || row.client_key_enc === null) errors.credential = 'Generate a certificate first, and upload it to the app registration (Certificates & secrets).';
    } else {
      errors.credential = 'Choose Client Secret or Certificate.';
    }
    if (!validMailbox(input.mailbox)) errors.mailbox = 'Enter the mailbox to send as (user@contoso.com).';
    return errors;
  }

  /** Saves Microsoft client credentials; with Use on, asks for a first token in the background. */
  async saveMicrosoft(id: string, input: MicrosoftApplicationInput, actor: string): Promise<SaveSettingsResult> {
    const row = await this.#account(id, 'microsoft');
    const errors = this.validateMicrosoft(row, input);
    if (Object.keys(errors).length > 0) return { ok: false, errors };
    const endpoint = validateMicrosoftAppOnlyEndpoint(this.#endpointFor(row, input));
    if (!endpoint.ok) return { ok: false, errors: { endpoint: endpoint.error } };
    const clientId = input.clientId.trim().toLowerCase();
    const mailbox = validMailbox(input.mailbox)!;
    const secret = input.credential === 'secret' ? input.clientSecret.trim() : '';
    const changed =
      row.authorization_type !== 'client-credentials' ||
      row.endpoint !== endpoint.value.endpoint ||
      row.client_id !== clientId ||
      row.app_mailbox !== mailbox ||
      secret !== '' ||
      (input.credential === 'certificate') !== (row.client_secret_enc === null);
    await this.#switchType(row, 'client-credentials');
    await this.#accounts.update(id, {
      ...useAndTlsColumns(input),
      authorization_type: 'client-credentials',
      endpoint: endpoint.value.endpoint,
      client_id: clientId,
      app_mailbox: mailbox,
      ...(input.credential === 'certificate' ? { client_secret_enc: null } : secret !== '' ? { client_secret_enc: this.#accounts.encryptClientSecret(id, secret) } : {}),
    });
    if (changed) await this.#accounts.transition(id, 'NotRegistered', { forget: 'tokens-and-mailbox' });
    await this.#audit.record(
      actor,
      'settings.oauth.application',
      `${accountLabel(id, row.name)}: client credentials ${useAndTlsAudit(input)} endpoint=${endpoint.value.endpoint} client_id=${clientId} credential=${input.credential} mailbox=${mailbox}`,
    );
    await this.#afterSave(id, input.enabled);
    return { ok: true };
  }

  /** Saves a Google service account's key and mailbox; with Use on, asks for a first token in the background. */
  async saveGoogle(id: string, input: GoogleServiceAccountInput, actor: string): Promise<SaveSettingsResult> {
    const row = await this.#account(id, 'google');
    const errors: FieldErrors = {};
    let key: ReturnType<typeof parseServiceAccountKey> | undefined;
    if (input.keyJson.trim() !== '') {
      try {
        key = parseServiceAccountKey(input.keyJson);
      } catch (error) {
        errors.keyJson = error instanceof Error ? error.message : String(error);
      }
    } else if (row.service_account_key_enc === null) {
      errors.keyJson = 'Upload the service account\'s JSON key (Google Cloud console > IAM & Admin > Service Accounts > Keys > Add key).';
    }
    const mailbox = validMailbox(input.mailbox);
    if (!mailbox) errors.mailbox = 'Enter the Workspace mailbox to send as (user@example.com).';
    if (Object.keys(errors).length > 0) return { ok: false, errors };
    const changed = row.authorization_type !== 'service-account' || row.app_mailbox !== mailbox || key !== undefined;
    await this.#switchType(row, 'service-account');
    await this.#accounts.update(id, {
      ...useAndTlsColumns(input),
      authorization_type: 'service-account',
      app_mailbox: mailbox!,
      ...(key
        ? { service_account_key_enc: this.#accounts.encryptCredential(id, 'service_account_key', input.keyJson.trim()), client_id: key.clientId, token_endpoint: key.tokenUri, client_secret_enc: null }
        : {}),
    });
    if (changed) await this.#accounts.transition(id, 'NotRegistered', { forget: 'tokens-and-mailbox' });
    await this.#audit.record(
      actor,
      'settings.oauth.application',
      `${accountLabel(id, row.name)}: service account ${useAndTlsAudit(input)}${key ? ` key=${key.clientEmail} (${key.privateKeyId.slice(0, 8)}…)` : ''} mailbox=${mailbox}`,
    );
    await this.#afterSave(id, input.enabled);
    return { ok: true };
  }

  /**
   * Makes a new key pair and self-signed certificate for the account (client credentials by certificate):
   * the key stays in Postern (encrypted), the certificate is for upload to the app registration.
   */
  async generateCertificate(id: string, actor: string): Promise<{ certificatePem: string; thumbprint: string; notAfter: Date }> {
    const row = await this.#account(id, 'microsoft');
    const certificate = await generateClientCertificate(`Postern ${hostname().replace(/[^\w.-]/g, '').slice(0, 40) || 'gateway'}`);
    await this.#accounts.update(id, {
      client_certificate: certificate.certificatePem,
      client_key_enc: this.#accounts.encryptCredential(id, 'client_key', certificate.privateKeyPem),
      // A token signed by the old key's certificate stays valid until it expires; the next one uses the new key.
      access_token_enc: null,
      access_token_expires_at: null,
    });
    await this.#audit.record(actor, 'oauth.certificate.generated', `${accountLabel(id, row.name)}: thumbprint ${certificate.thumbprintSha1Hex}, valid until ${certificate.notAfter.toISOString()}`);
    this.#log.info({ account: id, thumbprint: certificate.thumbprintSha1Hex }, 'client certificate generated');
    return { certificatePem: certificate.certificatePem, thumbprint: certificate.thumbprintSha1Hex, notAfter: certificate.notAfter };
  }

  /** Get Token: asks for an access token now (after the administrator completed a step at the provider). */
  async requestToken(id: string, actor: string): Promise<void> {
    const row = await this.#accounts.get(id);
    if (!row || row.authorization_type === 'delegated') return;
    await this.#audit.record(actor, 'oauth.token.requested', accountLabel(id, row.name));
    this.#operations.runInBackground(id, () => this.#firstToken(id));
  }

  /**
   * Back to Authorization Type: Delegated (the seed's): the application's credentials and tokens are
   * forgotten; the account is Not Registered until someone signs in.
   */
  async useDelegated(id: string, actor: string): Promise<void> {
    const row = await this.#accounts.get(id);
    if (!row || row.authorization_type === 'delegated') return;
    await this.#accounts.update(id, {
      authorization_type: 'delegated',
      client_certificate: null,
      client_key_enc: null,
      service_account_key_enc: null,
      app_mailbox: null,
      client_secret_enc: row.provider === 'microsoft' ? null : row.client_secret_enc,
      ...(row.provider === 'google' ? { token_endpoint: null, client_id: null } : {}),
    });
    await this.#accounts.transition(id, 'NotRegistered', { forget: 'tokens-and-mailbox' });
    await this.#audit.record(actor, 'settings.oauth.application', `${accountLabel(id, row.name)}: back to delegated authorization`);
  }

  /** A person's authorization (device code, pasted code) does not survive a switch to the application's own. */
  async #switchType(row: AccountRow, to: AuthorizationType): Promise<void> {
    if (row.authorization_type === to) return;
    this.#poller.cancel(row.id);
    await this.#accounts.deleteDeviceAuthorization(row.id);
    await this.#accounts.update(row.id, { refresh_token_enc: null });
  }

  async #afterSave(id: string, enabled: boolean): Promise<void> {
    if (!enabled) {
      await this.#operations.forgetConnection(id);
      return;
    }
    this.#operations.runInBackground(id, async () => {
      const connection = await this.#operations.connect(id);
      if (connection?.connected) await this.#firstToken(id);
    });
  }

  async #firstToken(id: string): Promise<void> {
    try {
      await this.#tokens?.refresh(id);
    } catch {
      // Token Status and its advice say what went wrong (token-service.ts).
    }
  }
}
