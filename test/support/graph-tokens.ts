/**
 * Real Microsoft Graph tokens from the Microsoft stand-in for tests: a device authorization (RFC 8628) walked
 * by the scripted user, then refresh grants with `scope=https://graph.microsoft.com/Mail.Send … offline_access`
 * on the same refresh token, as Postern's token service would make them. `StandinGraphTokens` is a
 * TokenSource (smtp-out/delivery.ts) with the token service's one behaviour delivery relies on: a
 * `rejectedAccessToken` equal to the current token forces one refresh.
 *
 * TEST INFRASTRUCTURE ONLY.
 */
import * as oauth from 'oauth4webapi';
import { Agent, fetch as undiciFetch } from 'undici';
import type { AccessToken, GetAccessTokenOptions } from '../../src/oauth/token-service.js';
import { TokenUnavailableError } from '../../src/oauth/token-service.js';
import { GRAPH_MAIL_READWRITE_SCOPE, GRAPH_MAIL_SEND_SCOPE, OUTLOOK_SMTP_SCOPE, type MicrosoftStandin } from './oauth-standins.js';
import { approveDeviceCode } from './user-agent.js';

export const GRAPH_SEND_REQUEST_SCOPE = `${GRAPH_MAIL_SEND_SCOPE} offline_access`;
export const GRAPH_LARGE_REQUEST_SCOPE = `${GRAPH_MAIL_SEND_SCOPE} ${GRAPH_MAIL_READWRITE_SCOPE} offline_access`;

export class StandinGraphTokens {
  /** Every refresh made, with the token it replaced when delivery reported one as refused. */
  readonly refreshes: Array<{ rejectedAccessToken: string | undefined; scope: string }> = [];
  /** When set, getAccessToken fails with it (no usable token: delivery holds). */
  unavailable: TokenUnavailableError | undefined;
  #current: AccessToken | undefined;

  constructor(
    private readonly as: oauth.AuthorizationServer,
    private readonly client: oauth.Client,
    private readonly http: { [oauth.customFetch]: typeof fetch },
    private refreshToken: string,
    readonly mailbox: string,
    /** What a refresh asks for. */
    public scope: string,
  ) {}

  /** Hands out `token` until it is reported refused (to start from, e.g., a token for the wrong resource). */
  use(accessToken: string): void {
    this.#current = { accessToken, mailbox: this.mailbox, expiresAt: Date.now() + 3_600_000 };
  }

  async getAccessToken(_accountId: string, options: GetAccessTokenOptions = {}): Promise<AccessToken> {
    if (this.unavailable) throw this.unavailable;
    const rejected = options.rejectedAccessToken;
    if (this.#current && (rejected === undefined || rejected !== this.#current.accessToken)) return this.#current;
    const response = await oauth.refreshTokenGrantRequest(this.as, this.client, oauth.None(), this.refreshToken, { ...this.http, additionalParameters: { scope: this.scope } });
    const tokens = await oauth.processRefreshTokenResponse(this.as, this.client, response);
    if (tokens.refresh_token) this.refreshToken = tokens.refresh_token;
    this.refreshes.push({ rejectedAccessToken: rejected, scope: tokens.scope ?? '' });
    this.#current = { accessToken: tokens.access_token, mailbox: this.mailbox, expiresAt: Date.now() + (tokens.expires_in ?? 3600) * 1000 };
    return this.#current;
  }

  /** A token for another resource (Outlook's SMTP.Send) from the same refresh token. */
  async outlookToken(): Promise<string> {
    const response = await oauth.refreshTokenGrantRequest(this.as, this.client, oauth.None(), this.refreshToken, { ...this.http, additionalParameters: { scope: `${OUTLOOK_SMTP_SCOPE} offline_access` } });
    const tokens = await oauth.processRefreshTokenResponse(this.as, this.client, response);
    if (tokens.refresh_token) this.refreshToken = tokens.refresh_token;
    return tokens.access_token;
  }
}

/** Signs `email` in at the Microsoft stand-in (device flow, Outlook scopes as Postern asks) and returns its token source. */
export async function signInForGraph(ms: MicrosoftStandin, user: { email: string; password: string }, scope = GRAPH_LARGE_REQUEST_SCOPE): Promise<{ tokens: StandinGraphTokens; close(): Promise<void> }> {
  const agent = new Agent({ connect: { ca: ms.ca } });
  const http = { [oauth.customFetch]: ((url: string, init: object) => undiciFetch(url, { ...init, dispatcher: agent })) as unknown as typeof fetch };
  const endpoint = ms.endpoint('organizations');
  const as: oauth.AuthorizationServer = { issuer: ms.issuer, device_authorization_endpoint: `${endpoint}/devicecode`, token_endpoint: `${endpoint}/token`, jwks_uri: ms.jwksUri };
  const client: oauth.Client = { client_id: ms.publicClientId };
  const started = await oauth.deviceAuthorizationRequest(as, client, oauth.None(), { scope: `${OUTLOOK_SMTP_SCOPE} offline_access openid email profile` }, http);
  const da = await oauth.processDeviceAuthorizationResponse(as, client, started);
  await approveDeviceCode({ verificationUri: da.verification_uri, userCode: da.user_code, ...user, ca: ms.ca });
  const polled = await oauth.deviceCodeGrantRequest(as, client, oauth.None(), da.device_code, http);
  const tokens = await oauth.processDeviceCodeResponse(as, client, polled);
  if (!tokens.refresh_token) throw new Error('the sign-in gave no refresh token');
  return { tokens: new StandinGraphTokens(as, client, http, tokens.refresh_token, user.email, scope), close: () => agent.close() };
}
