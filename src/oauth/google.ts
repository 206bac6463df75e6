/**
 * OAuth 2.0 (Google): Basic Settings, and Register Information for Authorization (seed, Google steps 5–11):
 * authorization code with PKCE (RFC 7636, S256), a loopback redirect URI, and the code pasted back by the
 * administrator or captured when the redirect reaches Postern itself.
 *
 * - Each attempt has a fresh 256-bit `state` and PKCE verifier, is bound to the admin's session, and
 *   expires after ATTEMPT_TTL_MS; it is marked used before the token request, so a code is exchanged at most
 *   once (RFC 6749 §4.1.2, docs/protocol.md §2.3).
 * - Refusals (error=…), state mismatches, reused or expired attempts are rejected before any token request.
 * - The granted scope must include https://mail.google.com/; otherwise nothing is saved.
 * - Saving with Use on checks the connection to the token endpoint's host in the background
 *   (account-operations.ts); a new client or endpoint forgets the tokens, which belong to the client.
 */
import { ErrorCodes, PosternError } from '../errors.js';
import type { Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import { settingsOf, stateHash, type AccountRow, type OAuthAccounts } from './accounts.js';
import type { AccountOperations } from './account-operations.js';
import { parsePastedAuthorizationResponse } from './authorization-response.js';
import { authorizationServerOf, clientOf } from './authorization-server.js';
import { useAndTlsAudit, useAndTlsColumns, type FieldErrors, type GoogleSettingsInput, type SaveSettingsResult } from './basic-settings.js';
import { buildAuthorizationRequest, exchangeAuthorizationCode } from './grants.js';
import type { OAuthHttp } from './http.js';
import {
  GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT,
  GOOGLE_DEFAULT_TOKEN_ENDPOINT,
  GOOGLE_MAIL_SCOPE,
  GOOGLE_SCOPE,
  validateGoogleClientId,
  validateHttpsEndpoint,
} from './profiles.js';
import { ProviderError, toProviderError } from './provider-errors.js';

export const ATTEMPT_TTL_MS = 10 * 60_000;
export const GOOGLE_CALLBACK_PATH = '/oauth2/google/callback';

/** Why a pasted authorization response was refused, in words for the Register screen. */
export class AuthorizationRejected extends PosternError {
  constructor(
    message: string,
    readonly reason: 'invalid' | 'refused' | 'state-mismatch' | 'no-attempt' | 'expired' | 'reused' | 'scope' | 'no-refresh-token' | 'provider',
    readonly advice?: string,
    options?: { cause?: unknown },
  ) {
    super(ErrorCodes.OAUTH_AUTHORIZATION_RESPONSE_REJECTED, message, options);
    this.name = 'AuthorizationRejected';
  }
}

export interface GoogleAuthorizationOptions {
  accounts: OAuthAccounts;
  http: OAuthHttp;
  operations: AccountOperations;
  audit: AuditLog;
  log: Logger;
  now?: () => number;
  /** The account these steps act on: the seed's ('google') unless told. */
  accountId?: string;
}

export class GoogleAuthorization {
  readonly #id: string;
  readonly #accounts: OAuthAccounts;
  readonly #http: OAuthHttp;
  readonly #operations: AccountOperations;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #now: () => number;

  constructor(options: GoogleAuthorizationOptions) {
    this.#accounts = options.accounts;
    this.#http = options.http;
    this.#operations = options.operations;
    this.#audit = options.audit;
    this.#log = options.log.child({ component: 'oauth-google' });
    this.#now = options.now ?? Date.now;
    this.#id = options.accountId ?? 'google';
  }

  /** The account these steps act on. */
  get accountId(): string {
    return this.#id;
  }

  async validateSettings(input: GoogleSettingsInput): Promise<FieldErrors> {
    const errors: FieldErrors = {};
    const clientId = validateGoogleClientId(input.clientId);
    if (!clientId.ok) errors.clientId = clientId.error;
    const row = await this.#accounts.getOrCreate(this.#id);
    if (input.clientSecret.trim() === '' && row.client_secret_enc === null) {
      errors.clientSecret = 'Enter the Client Secret of your OAuth client (Google Cloud console > APIs & Services > Credentials).';
    } else if (/\s/.test(input.clientSecret.trim())) {
      errors.clientSecret = 'The Client Secret cannot contain spaces.';
    }
    const authorization = validateHttpsEndpoint(input.authorizationEndpoint || GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT, 'authorization endpoint');
    if (!authorization.ok) errors.authorizationEndpoint = authorization.error;
    const token = validateHttpsEndpoint(input.tokenEndpoint || GOOGLE_DEFAULT_TOKEN_ENDPOINT, 'token endpoint');
    if (!token.ok) errors.tokenEndpoint = token.error;
    return errors;
  }

  /**
   * Saves the settings; with Use on, checks the connection to the token endpoint's host (in the background).
   * Returns whether the authorization must be registered again (client changed).
   */
  /**
   * Whether saving `input` (valid) would forget a held authorization: the client, its secret or an endpoint
   * changes while a refresh token is stored. The Remote UI asks before it saves such a change.
   */
  async wouldForgetAuthorization(input: GoogleSettingsInput): Promise<boolean> {
    if (Object.keys(await this.validateSettings(input)).length > 0) return false;
    const before = await this.#accounts.getOrCreate(this.#id);
    return before.refresh_token_enc !== null && this.#identityChangeOf(before, input).identityChanged;
  }

  #identityChangeOf(before: AccountRow, input: GoogleSettingsInput) {
    const clientId = input.clientId.trim();
    const authorizationEndpoint = new URL(input.authorizationEndpoint.trim() || GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT).href;
    const tokenEndpoint = new URL(input.tokenEndpoint.trim() || GOOGLE_DEFAULT_TOKEN_ENDPOINT).href;
    const secret = input.clientSecret.trim();
    const previousSecret = this.#accounts.clientSecret(before);
    const identityChanged =
      before.client_id !== clientId ||
      (secret !== '' && secret !== previousSecret) ||
      (before.authorization_endpoint ?? GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT) !== authorizationEndpoint ||
      (before.token_endpoint ?? GOOGLE_DEFAULT_TOKEN_ENDPOINT) !== tokenEndpoint;
    return { clientId, authorizationEndpoint, tokenEndpoint, secret, identityChanged };
  }

  async saveSettings(input: GoogleSettingsInput, actor: string): Promise<SaveSettingsResult<{ identityChanged: boolean }>> {
    const errors = await this.validateSettings(input);
    if (Object.keys(errors).length > 0) return { ok: false, errors };
    const before = await this.#accounts.getOrCreate(this.#id);
    const { clientId, authorizationEndpoint, tokenEndpoint, secret, identityChanged } = this.#identityChangeOf(before, input);
    await this.#accounts.update(this.#id, {
      ...useAndTlsColumns(input),
      client_id: clientId,
      ...(secret !== '' ? { client_secret_enc: this.#accounts.encryptClientSecret(this.#id, secret) } : {}),
      authorization_endpoint: authorizationEndpoint === GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT ? null : authorizationEndpoint,
      token_endpoint: tokenEndpoint === GOOGLE_DEFAULT_TOKEN_ENDPOINT ? null : tokenEndpoint,
    });
    if (identityChanged && before.refresh_token_enc !== null) {
      // Google's refresh tokens belong to the OAuth client that obtained them.
      await this.#accounts.transition(this.#id, 'NotRegistered', { forget: 'tokens-and-mailbox' });
    }
    await this.#audit.record(
      actor,
      'settings.oauth.google',
      `${useAndTlsAudit(input)} client_id=${clientId}${secret ? ' client_secret=(changed)' : ''} authorization_endpoint=${authorizationEndpoint} token_endpoint=${tokenEndpoint}`,
    );
    if (input.enabled) {
      this.#operations.runInBackground(this.#id, async () => {
        await this.#operations.connect(this.#id);
      });
    } else {
      await this.#operations.forgetConnection(this.#id);
    }
    return { ok: true, identityChanged };
  }

  /**
   * Starts an attempt for the admin's session: a fresh state and PKCE pair, and the URL for Google
   * Authorization Server (with access_type=offline and prompt=consent, so a refresh token is issued).
   */
  async beginAuthorization(sessionId: string, redirectUri: string): Promise<{ url: string; expiresAt: number }> {
    const row = await this.#accounts.getOrCreate(this.#id);
    const request = await buildAuthorizationRequest(authorizationServerOf(row), clientOf(row, undefined), redirectUri, GOOGLE_SCOPE, {
      access_type: 'offline',
      prompt: 'consent',
    });
    const now = this.#now();
    await this.#accounts.createAuthorizationAttempt(this.#id, sessionId, request, now, ATTEMPT_TTL_MS);
    return { url: request.url, expiresAt: now + ATTEMPT_TTL_MS };
  }

  /**
   * Completes an attempt from what was pasted into Authorization Code (or what arrived at the callback).
   * Everything that can be refused is refused before the token request.
   */
  async completeAuthorization(sessionId: string, pasted: string, actor: string): Promise<{ mailbox: string | undefined }> {
    const parsed = parsePastedAuthorizationResponse(pasted);
    if (parsed.kind === 'invalid') throw new AuthorizationRejected(parsed.reason, 'invalid');
    if (parsed.kind === 'error') {
      const attempt = parsed.state ? await this.#accounts.authorizationAttemptByState(parsed.state) : undefined;
      if (attempt && attempt.used_at === null) await this.#accounts.markAuthorizationAttemptUsed(attempt.state_hash, this.#now());
      throw new AuthorizationRejected(
        parsed.error === 'access_denied'
          ? 'Access was not granted: the Google account holder clicked Cancel or denied access (access_denied). Nothing was registered.'
          : `Google returned an error instead of a code: ${parsed.error}${parsed.description ? ` (${parsed.description})` : ''}. Nothing was registered.`,
        'refused',
        'Click Register to start again, and allow access at Google.',
      );
    }

    const now = this.#now();
    let attempt;
    if (parsed.state !== undefined) {
      attempt = await this.#accounts.authorizationAttemptByState(parsed.state);
      if (!attempt || attempt.session_id !== sessionId || attempt.account_id !== this.#id) {
        throw new AuthorizationRejected(
          'The pasted URL belongs to another authorization attempt (state does not match). Use the URL from the sign-in you started on this screen.',
          'state-mismatch',
          'Click Register to start again.',
        );
      }
    } else {
      attempt = await this.#accounts.latestAuthorizationAttempt(this.#id, sessionId);
      if (!attempt) {
        throw new AuthorizationRejected(
          'No authorization is pending for this session. Open URL for Google Authorization Server first, then paste the code.',
          'no-attempt',
        );
      }
    }
    if (attempt.used_at !== null) {
      throw new AuthorizationRejected(
        'This authorization was already used: each code can be registered only once.',
        'reused',
        'Click Register to start a new authorization.',
      );
    }
    if (attempt.expires_at <= now) {
      throw new AuthorizationRejected(
        `The authorization attempt expired (it is valid for ${ATTEMPT_TTL_MS / 60_000} minutes).`,
        'expired',
        'Click Register to start again and paste the code promptly.',
      );
    }
    if (!(await this.#accounts.markAuthorizationAttemptUsed(attempt.state_hash, now))) {
      throw new AuthorizationRejected('This authorization was already used.', 'reused');
    }

    const row = await this.#accounts.getOrCreate(this.#id);
    const parameters = new URLSearchParams(parsed.parameters);
    parameters.set('code', parsed.code);
    let tokens;
    try {
      tokens = await exchangeAuthorizationCode(
        authorizationServerOf(row),
        clientOf(row, this.#accounts.clientSecret(row)),
        parameters,
        {
          state: parsed.state ?? '',
          codeVerifier: this.#accounts.codeVerifier(attempt),
          redirectUri: attempt.redirect_uri,
        },
        await this.#http.options(settingsOf(row).tls),
        this.#now,
        parsed.state === undefined,
      );
    } catch (error) {
      if (error instanceof PosternError && error.code === ErrorCodes.OAUTH_AUTHORIZATION_RESPONSE_REJECTED) {
        throw new AuthorizationRejected(`The pasted URL was not accepted: ${error.message}`, 'invalid', undefined, { cause: error });
      }
      const providerError = error instanceof ProviderError ? error : toProviderError('google', error, new URL(authorizationServerOf(row).tokenEndpoint).host);
      this.#log.warn({ error: providerError.error, description: providerError.description }, 'Google authorization code exchange failed');
      throw new AuthorizationRejected(
        `Google did not accept the code: ${providerError.providerText}`,
        'provider',
        providerError.error === 'invalid_grant'
          ? 'The code is wrong, expired or already used, or it was not copied whole. Click Register to start again and paste the whole URL.'
          : providerError.advice,
        { cause: providerError },
      );
    }
    const granted = (tokens.scope ?? '').split(/\s+/);
    if (!granted.includes(GOOGLE_MAIL_SCOPE)) {
      throw new AuthorizationRejected(
        `Google granted access without Gmail (granted: ${tokens.scope || 'nothing'}). Nothing was registered.`,
        'scope',
        'Click Register again and, at Google, tick the box that allows reading, composing and sending email from Gmail.',
      );
    }
    if (!tokens.refreshToken) {
      throw new AuthorizationRejected(
        'Google issued no refresh token, so Postern could not keep the authorization. Nothing was registered.',
        'no-refresh-token',
        'Remove Postern from the account\'s third-party access (myaccount.google.com > Security), then click Register again.',
      );
    }
    await this.#accounts.transition(this.#id, 'Active', { tokens, keepRefreshToken: false, at: this.#now() });
    await this.#audit.record(actor, 'token.authorized', `OAuth 2.0 (Google): authorized as ${tokens.mailbox ?? 'unknown account'}`);
    this.#log.info({ mailbox: tokens.mailbox }, 'OAuth 2.0 (Google): authorization registered, Token Status is Active');
    return { mailbox: tokens.mailbox };
  }

  /** The hash of a state value, for tests and the callback. */
  static stateHash = stateHash;
}
