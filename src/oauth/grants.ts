/**
 * The OAuth protocol steps Postern performs, each a request/response pair named as the RFCs name them, on
 * top of oauth4webapi. I/O is in the `*Request` calls of oauth4webapi; everything here that interprets a
 * response is testable with a hand-made Response.
 *
 * - Device authorization grant: RFC 8628 §3.1–3.5 (Microsoft).
 * - Authorization code with PKCE: RFC 6749 §4.1, RFC 7636 (Google).
 * - Refresh: RFC 6749 §6.
 */
import * as oauth from 'oauth4webapi';
import { ErrorCodes, PosternError } from '../errors.js';
import type { HttpOptions } from './http.js';
import { ProviderError, toProviderError } from './provider-errors.js';

export type ProviderName = 'microsoft' | 'google';

/** The authorization server as configured (no discovery: Microsoft's and Google's layouts are fixed). */
export interface AuthorizationServerConfig {
  provider: ProviderName;
  /** Expected id_token issuer; for Microsoft derived per token from `tid` (multi-tenant endpoints). */
  issuer: string;
  tokenEndpoint: string;
  deviceAuthorizationEndpoint?: string;
  authorizationEndpoint?: string;
}

export interface ClientConfig {
  clientId: string;
  /** Confidential clients (Google) only; Microsoft's device flow is a public-client flow. */
  clientSecret?: string | undefined;
}

/** The tokens Postern keeps from a token endpoint response. */
export interface TokenSet {
  accessToken: string;
  /** Absent when the server did not issue (or, on refresh, did not rotate) a refresh token. */
  refreshToken: string | undefined;
  /** Absolute expiry in ms, counted from when the request was sent (RFC 6749 §5.1, docs/protocol.md §4.2). */
  expiresAt: number;
  scope: string | undefined;
  /** The signed-in account from the id_token: email, else preferred_username, else upn. */
  mailbox: string | undefined;
  displayName: string | undefined;
}

function authorizationServer(config: AuthorizationServerConfig, issuer = config.issuer): oauth.AuthorizationServer {
  return {
    issuer,
    token_endpoint: config.tokenEndpoint,
    ...(config.deviceAuthorizationEndpoint ? { device_authorization_endpoint: config.deviceAuthorizationEndpoint } : {}),
    ...(config.authorizationEndpoint ? { authorization_endpoint: config.authorizationEndpoint } : {}),
  };
}

/**
 * Clock tolerance for the id_token's iat / nbf / exp: 5 minutes, as Microsoft's own libraries allow (MSAL's
 * default clock skew), instead of oauth4webapi's 30 s. A gateway in a server room often runs a little off;
 * the admin is warned from 2 minutes on (clock-skew.ts).
 */
export const ID_TOKEN_CLOCK_TOLERANCE_S = 300;

/**
 * On a refresh, the id_token only updates the account shown (the token endpoint was reached over verified
 * TLS, which is what authenticates the answer). Its timestamps are not allowed to throw away a refresh that
 * succeeded, and with it a rotated refresh token: a clock a day off loses nothing, and the clock warning
 * tells the admin.
 */
const REFRESH_ID_TOKEN_CLOCK_TOLERANCE_S = 24 * 3600;

function client(config: ClientConfig, tolerance = ID_TOKEN_CLOCK_TOLERANCE_S): oauth.Client {
  return { client_id: config.clientId, [oauth.clockTolerance]: tolerance };
}

function clientAuthentication(config: ClientConfig): oauth.ClientAuth {
  return config.clientSecret ? oauth.ClientSecretPost(config.clientSecret) : oauth.None();
}

function hostOf(config: AuthorizationServerConfig): string {
  return new URL(config.tokenEndpoint).host;
}

function decodeJwtPayload(jwt: string): Record<string, unknown> | undefined {
  const part = jwt.split('.')[1];
  if (!part) return undefined;
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/**
 * The id_token issuer to expect. Microsoft's multi-tenant endpoints (common, organizations, consumers) issue
 * id_tokens whose `iss` names the user's own tenant: `https://<login host>/<tid>/v2.0`. Google's `iss` is
 * `https://accounts.google.com` (historically also without the scheme).
 */
export function expectedIssuer(config: AuthorizationServerConfig, idTokenClaims: Record<string, unknown> | undefined): string {
  if (config.provider === 'microsoft') {
    const tid = idTokenClaims?.tid;
    if (typeof tid === 'string' && /^[\w-]+$/.test(tid)) return `${new URL(config.tokenEndpoint).origin}/${tid}/v2.0`;
    return config.issuer;
  }
  if (idTokenClaims?.iss === 'accounts.google.com' && config.issuer === 'https://accounts.google.com') return 'accounts.google.com';
  return config.issuer;
}

/**
 * Reads a successful token response into a TokenSet. The id_token came straight from the token endpoint
 * over verified TLS, so its claims are checked (iss, aud, exp) but its signature is not fetched
 * (OpenID Connect Core §3.1.3.7 item 6).
 */
async function processTokenResponse(
  config: AuthorizationServerConfig,
  clientConfig: ClientConfig,
  response: Response,
  sentAt: number,
  process: (as: oauth.AuthorizationServer, c: oauth.Client, r: Response) => Promise<oauth.TokenEndpointResponse>,
  clockTolerance = ID_TOKEN_CLOCK_TOLERANCE_S,
): Promise<TokenSet> {
  let issuer = config.issuer;
  if (response.status === 200) {
    const peek = (await response.clone().json().catch(() => undefined)) as { id_token?: unknown } | undefined;
    if (typeof peek?.id_token === 'string') issuer = expectedIssuer(config, decodeJwtPayload(peek.id_token));
  }
  const result = await process(authorizationServer(config, issuer), client(clientConfig, clockTolerance), response);
  const claims = oauth.getValidatedIdTokenClaims(result);
  const pick = (name: string) => (typeof claims?.[name] === 'string' ? (claims[name] as string) : undefined);
  return {
    accessToken: result.access_token,
    refreshToken: result.refresh_token,
    expiresAt: sentAt + (typeof result.expires_in === 'number' && result.expires_in > 0 ? result.expires_in : 3600) * 1000,
    scope: result.scope,
    mailbox: pick('email') ?? pick('preferred_username') ?? pick('upn'),
    displayName: pick('name'),
  };
}

// ---------------------------------------------------------------------------------------------------------
// RFC 8628 device authorization grant

export interface DeviceAuthorization {
  deviceCode: string;
  userCode: string;
  verificationUri: string;
  verificationUriComplete: string | undefined;
  /** Seconds; RFC 8628 §3.2: 5 when the server gives none. */
  interval: number;
  /** Absolute expiry in ms. */
  expiresAt: number;
  message: string | undefined;
}

/** RFC 8628 §3.1–3.2: POST {endpoint}/devicecode with client_id and scope, form-encoded. */
export async function startDeviceAuthorization(
  config: AuthorizationServerConfig,
  clientConfig: ClientConfig,
  scope: string,
  http: HttpOptions,
  now: () => number = Date.now,
): Promise<DeviceAuthorization> {
  const sentAt = now();
  try {
    const response = await oauth.deviceAuthorizationRequest(
      authorizationServer(config),
      client(clientConfig),
      oauth.None(),
      { scope },
      http,
    );
    const result = await oauth.processDeviceAuthorizationResponse(authorizationServer(config), client(clientConfig), response);
    const message = typeof result.message === 'string' ? result.message : undefined;
    return {
      deviceCode: result.device_code,
      userCode: result.user_code,
      verificationUri: result.verification_uri,
      verificationUriComplete: result.verification_uri_complete,
      interval: typeof result.interval === 'number' && result.interval > 0 ? result.interval : 5,
      expiresAt: sentAt + result.expires_in * 1000,
      message,
    };
  } catch (error) {
    throw toProviderError(config.provider, error, hostOf(config));
  }
}

export type DeviceCodePollOutcome =
  | { type: 'tokens'; tokens: TokenSet }
  /** RFC 8628 §3.5 authorization_pending: poll again after the interval. */
  | { type: 'pending' }
  /** RFC 8628 §3.5 slow_down: add 5 s to the interval for this and all later polls. */
  | { type: 'slow_down' }
  /** The user declined (RFC access_denied, Microsoft authorization_declined). */
  | { type: 'declined'; error: ProviderError }
  /** The device code expired (RFC expired_token, also code_expired). */
  | { type: 'expired'; error: ProviderError }
  /** Any other OAuth error: stop polling. */
  | { type: 'failed'; error: ProviderError }
  /** Network trouble or a 5xx/429: back off and keep polling until the code expires. */
  | { type: 'transient'; error: ProviderError };

/** RFC 8628 §3.4–3.5: one poll of the token endpoint with the device_code grant. */
export async function pollDeviceCodeGrant(
  config: AuthorizationServerConfig,
  clientConfig: ClientConfig,
  deviceCode: string,
  http: HttpOptions,
  now: () => number = Date.now,
): Promise<DeviceCodePollOutcome> {
  const sentAt = now();
  let response: Response;
  try {
    response = await oauth.deviceCodeGrantRequest(
      authorizationServer(config),
      client(clientConfig),
      oauth.None(),
      deviceCode,
      http,
    );
  } catch (error) {
    return { type: 'transient', error: toProviderError(config.provider, error, hostOf(config)) };
  }
  return processDeviceCodeGrantResponse(config, clientConfig, response, sentAt);
}

/** The response half of a device-code poll, separate so it can be tested with a hand-made Response. */
export async function processDeviceCodeGrantResponse(
  config: AuthorizationServerConfig,
  clientConfig: ClientConfig,
  response: Response,
  sentAt: number,
): Promise<DeviceCodePollOutcome> {
  try {
    const tokens = await processTokenResponse(config, clientConfig, response, sentAt, oauth.processDeviceCodeResponse);
    return { type: 'tokens', tokens };
  } catch (thrown) {
    const error = toProviderError(config.provider, thrown, hostOf(config));
    switch (error.error) {
      case 'authorization_pending':
        return { type: 'pending' };
      case 'slow_down':
        return { type: 'slow_down' };
      case 'access_denied':
      case 'authorization_declined':
        return { type: 'declined', error };
      case 'expired_token':
      case 'code_expired':
        return { type: 'expired', error };
      default:
        return error.kind === 'transient' ? { type: 'transient', error } : { type: 'failed', error };
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// RFC 6749 §6 refresh

export async function refreshAccessToken(
  config: AuthorizationServerConfig,
  clientConfig: ClientConfig,
  refreshToken: string,
  http: HttpOptions,
  now: () => number = Date.now,
  /** Another resource's scope than the one granted (Microsoft Graph): one resource per request. */
  scope?: string,
): Promise<TokenSet> {
  const sentAt = now();
  try {
    const response = await oauth.refreshTokenGrantRequest(
      authorizationServer(config),
      client(clientConfig),
      clientAuthentication(clientConfig),
      refreshToken,
      scope ? { ...http, additionalParameters: { scope } } : http,
    );
    return await processTokenResponse(config, clientConfig, response, sentAt, oauth.processRefreshTokenResponse, REFRESH_ID_TOKEN_CLOCK_TOLERANCE_S);
  } catch (error) {
    throw toProviderError(config.provider, error, hostOf(config));
  }
}

// ---------------------------------------------------------------------------------------------------------
// RFC 6749 §4.1 + RFC 7636: authorization code with PKCE (Google)

export interface AuthorizationRequest {
  url: string;
  state: string;
  codeVerifier: string;
  redirectUri: string;
}

/** Builds the authorization URL with a fresh state (256 bits) and a fresh S256 PKCE pair. */
export async function buildAuthorizationRequest(
  config: AuthorizationServerConfig,
  clientConfig: ClientConfig,
  redirectUri: string,
  scope: string,
  extraParameters: Record<string, string> = {},
): Promise<AuthorizationRequest> {
  if (!config.authorizationEndpoint) throw new TypeError('authorizationEndpoint is required');
  const state = oauth.generateRandomState();
  const codeVerifier = oauth.generateRandomCodeVerifier();
  const url = new URL(config.authorizationEndpoint);
  url.searchParams.set('client_id', clientConfig.clientId);
  url.searchParams.set('redirect_uri', redirectUri);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('scope', scope);
  url.searchParams.set('state', state);
  url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(codeVerifier));
  url.searchParams.set('code_challenge_method', 'S256');
  for (const [key, value] of Object.entries(extraParameters)) url.searchParams.set(key, value);
  return { url: url.href, state, codeVerifier, redirectUri };
}

/**
 * Exchanges an authorization code (RFC 6749 §4.1.3) with the PKCE verifier. `callbackParameters` are the
 * redirect's query parameters (code, state, iss…); state was already checked by the caller against the
 * stored attempt, and is checked again here.
 */
export async function exchangeAuthorizationCode(
  config: AuthorizationServerConfig,
  clientConfig: ClientConfig,
  callbackParameters: URLSearchParams,
  expected: { state: string; codeVerifier: string; redirectUri: string },
  http: HttpOptions,
  now: () => number = Date.now,
  /** A bare pasted code has no state; the caller matched it to the session's pending attempt instead. */
  skipStateCheck = false,
): Promise<TokenSet> {
  const as = authorizationServer(config);
  let validated: URLSearchParams;
  try {
    validated = oauth.validateAuthResponse(
      as,
      client(clientConfig),
      callbackParameters,
      skipStateCheck ? oauth.skipStateCheck : expected.state,
    );
  } catch (error) {
    throw new PosternError(
      ErrorCodes.OAUTH_AUTHORIZATION_RESPONSE_REJECTED,
      error instanceof Error ? error.message : String(error),
      { cause: error },
    );
  }
  const sentAt = now();
  try {
    const response = await oauth.authorizationCodeGrantRequest(
      as,
      client(clientConfig),
      clientAuthentication(clientConfig),
      validated,
      expected.redirectUri,
      expected.codeVerifier,
      http,
    );
    return await processTokenResponse(config, clientConfig, response, sentAt, (a, c, r) =>
      oauth.processAuthorizationCodeResponse(a, c, r, { expectedNonce: oauth.expectNoNonce, requireIdToken: false }),
    );
  } catch (error) {
    throw toProviderError(config.provider, error, hostOf(config));
  }
}
