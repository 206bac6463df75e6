/**
 * Tests for the stand-in authorization servers and the scripted user, driven by oauth4webapi as a real,
 * spec-strict OAuth client over HTTPS (test CA passed through `customFetch`, never NODE_EXTRA_CA_CERTS).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oauth from 'oauth4webapi';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GMAIL_SCOPE,
  OUTLOOK_RESOURCE,
  OUTLOOK_SMTP_SCOPE,
  startGoogleStandin,
  startMicrosoftStandin,
  type GoogleStandin,
  type MicrosoftStandin,
} from './oauth-standins.js';
import { createTestPki, type TestPki } from './test-ca.js';
import { approveDeviceCode, authorizeInBrowserlessAgent, UserAgentError } from './user-agent.js';

const OUTLOOK_REQUEST_SCOPE = 'https://outlook.office.com/SMTP.Send offline_access openid email profile';
const GOOGLE_REQUEST_SCOPE = 'https://mail.google.com/ openid email';
const ALICE = { email: 'alice@example.test', password: 'correct horse' };
const BOB = { email: 'bob@example.test', password: 'correct horse' };

let pki: TestPki;
let ms: MicrosoftStandin;
let google: GoogleStandin;
let agent: Agent;
/** oauth4webapi options: every request goes through undici with the test CA. */
let http: { [oauth.customFetch]: typeof fetch };

beforeAll(async () => {
  pki = await createTestPki();
  [ms, google] = await Promise.all([startMicrosoftStandin({ pki }), startGoogleStandin({ pki })]);
  agent = new Agent({ connect: { ca: pki.ca.cert } });
  const customFetch = (url: string, init: object) => undiciFetch(url, { ...init, dispatcher: agent });
  http = { [oauth.customFetch]: customFetch as unknown as typeof fetch };
});

afterAll(async () => {
  await Promise.all([ms?.close(), google?.close()]);
  await agent?.close();
});

/** Runs `fn` and returns the OAuth error response it throws. */
async function oauthError(fn: () => Promise<unknown>): Promise<oauth.ResponseBodyError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof oauth.ResponseBodyError) return err;
    throw err;
  }
  throw new Error('expected an OAuth error response');
}

/** Runs `fn` and returns the HTTP status of the non-OAuth failure (5xx) oauth4webapi refuses to process. */
async function nonConformStatus(fn: () => Promise<unknown>): Promise<number> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof oauth.OperationProcessingError && err.code === oauth.RESPONSE_IS_NOT_CONFORM) return (err.cause as Response).status;
    throw err;
  }
  throw new Error('expected a failed response');
}

describe('Microsoft stand-in', () => {
  const publicClient = (): oauth.Client => ({ client_id: ms.publicClientId });

  function server(tenant = 'common'): oauth.AuthorizationServer {
    const endpoint = ms.endpoint(tenant);
    return {
      issuer: ms.issuer,
      device_authorization_endpoint: `${endpoint}/devicecode`,
      token_endpoint: `${endpoint}/token`,
      jwks_uri: ms.jwksUri,
    };
  }

  async function deviceAuthorization(tenant = 'common', client = publicClient()) {
    const as = server(tenant);
    const response = await oauth.deviceAuthorizationRequest(as, client, oauth.None(), { scope: OUTLOOK_REQUEST_SCOPE }, http);
    return { as, client, da: await oauth.processDeviceAuthorizationResponse(as, client, response) };
  }

  async function poll(as: oauth.AuthorizationServer, client: oauth.Client, deviceCode: string) {
    const response = await oauth.deviceCodeGrantRequest(as, client, oauth.None(), deviceCode, http);
    return oauth.processDeviceCodeResponse(as, client, response);
  }

  /** Device flow for `user`, approved before the first poll (so no interval has to pass). */
  async function signIn(user = ALICE, tenant = 'common') {
    const { as, client, da } = await deviceAuthorization(tenant);
    await approveDeviceCode({ verificationUri: da.verification_uri, userCode: da.user_code, ...user, ca: pki.ca.cert });
    return { as, client, tokens: await poll(as, client, da.device_code) };
  }

  async function refresh(as: oauth.AuthorizationServer, client: oauth.Client, refreshToken: string) {
    const response = await oauth.refreshTokenGrantRequest(as, client, oauth.None(), refreshToken, http);
    return oauth.processRefreshTokenResponse(as, client, response);
  }

  it('device flow: Microsoft-shaped /devicecode answer, pending, approval, tokens with Microsoft id_token claims', async () => {
    const before = ms.tokenRequests.length;
    const { as, client, da } = await deviceAuthorization();
    expect(da.verification_uri).toBe(ms.verificationUri);
    expect(ms.verificationUri).toBe(`${ms.origin}/devicelogin`);
    expect(da.interval).toBe(1);
    expect(da.expires_in).toBe(900);
    expect(da.user_code).toMatch(/^[A-Z]{4}-[A-Z]{4}$/);
    expect(da.message).toBe(`To sign in, use a web browser to open the page ${ms.verificationUri} and enter the code ${da.user_code} to authenticate.`);
    expect(da.verification_uri_complete).toBeUndefined();
    expect(ms.deviceCodeRequests.at(-1)).toMatchObject({ tenant: 'common', clientId: ms.publicClientId, scope: OUTLOOK_REQUEST_SCOPE, status: 200 });

    const pending = await oauthError(() => poll(as, client, da.device_code));
    expect(pending.error).toBe('authorization_pending');
    expect(pending.error_description).toMatch(/^AADSTS70016:/);
    expect(pending.cause.error_codes).toEqual([70016]);

    const approval = await approveDeviceCode({ verificationUri: da.verification_uri, userCode: da.user_code, ...ALICE, ca: pki.ca.cert });
    expect(approval.outcome).toBe('approved');

    const tokens = await poll(as, client, da.device_code);
    expect(tokens.token_type).toBe('bearer');
    expect(tokens.scope?.split(' ')).toContain(OUTLOOK_SMTP_SCOPE);
    expect(tokens.refresh_token).toBeTruthy();
    expect(tokens.expires_in).toBe(3600);
    expect(tokens.ext_expires_in).toBe(3600);
    const claims = oauth.getValidatedIdTokenClaims(tokens);
    expect(claims).toMatchObject({
      iss: ms.issuer,
      aud: ms.publicClientId,
      sub: ALICE.email,
      tid: ms.tenantId,
      preferred_username: ALICE.email,
      email: ALICE.email,
      name: 'Alice Example',
    });
    expect(ms.tokenRequests.slice(before).map((r) => [r.grantType, r.status, r.error])).toEqual([
      ['urn:ietf:params:oauth:grant-type:device_code', 400, 'authorization_pending'],
      ['urn:ietf:params:oauth:grant-type:device_code', 200, undefined],
    ]);
    expect(ms.tokenRequests.at(-1)?.time).toBeInstanceOf(Date);
  });

  it('accepts every documented tenant value and answers AADSTS90002 for an unknown tenant', async () => {
    expect(ms.tenants).toEqual(['common', 'organizations', 'consumers', ms.tenantId, 'contoso.example']);
    for (const tenant of ms.tenants) {
      const { da } = await deviceAuthorization(tenant);
      expect(da.device_code).toBeTruthy();
    }
    const { tokens } = await signIn(BOB, 'contoso.example');
    expect(oauth.getValidatedIdTokenClaims(tokens)?.preferred_username).toBe(BOB.email);

    const unknown = await undiciFetch(`${ms.origin}/xyz/oauth2/v2.0/devicecode`, {
      method: 'POST',
      body: new URLSearchParams({ client_id: ms.publicClientId, scope: OUTLOOK_REQUEST_SCOPE }),
      dispatcher: agent,
    });
    expect(unknown.status).toBe(400);
    const body = (await unknown.json()) as Record<string, unknown>;
    expect(body.error).toBe('invalid_request');
    expect(body.error_description).toMatch(/^AADSTS90002: Tenant 'xyz' not found\./);

    const bare = await undiciFetch(ms.endpoint('common'), { dispatcher: agent });
    expect(bare.status).toBe(404);
    await bare.body?.cancel();
  });

  it('serves per-tenant discovery documents', async () => {
    const response = await oauth.discoveryRequest(new URL(ms.issuer), { algorithm: 'oidc', ...http });
    const metadata = await oauth.processDiscoveryResponse(new URL(ms.issuer), response);
    expect(metadata.token_endpoint).toBe(`${ms.endpoint(ms.tenantId)}/token`);
    expect(metadata.device_authorization_endpoint).toBe(`${ms.endpoint(ms.tenantId)}/devicecode`);

    const common = await undiciFetch(`${ms.origin}/common/v2.0/.well-known/openid-configuration`, { dispatcher: agent });
    const doc = (await common.json()) as Record<string, unknown>;
    expect(doc.issuer).toBe(`${ms.origin}/{tenantid}/v2.0`);
    expect(doc.token_endpoint).toBe(`${ms.endpoint('common')}/token`);
    expect(doc.jwks_uri).toBe(`${ms.origin}/common/discovery/v2.0/keys`);
  });

  it('rotates refresh tokens', async () => {
    const { as, client, tokens } = await signIn();
    const first = tokens.refresh_token!;
    const refreshed = await refresh(as, client, first);
    expect(refreshed.access_token).not.toBe(tokens.access_token);
    expect(refreshed.refresh_token).toBeTruthy();
    expect(refreshed.refresh_token).not.toBe(first);
    expect(refreshed.scope?.split(' ')).toContain(OUTLOOK_SMTP_SCOPE);
    expect(oauth.getValidatedIdTokenClaims(refreshed)?.tid).toBe(ms.tenantId);
    const again = await refresh(as, client, refreshed.refresh_token!);
    expect(again.refresh_token).not.toBe(refreshed.refresh_token);
    expect(ms.tokenRequests.at(-1)?.grantType).toBe('refresh_token');
  });

  it('refresh may name a subset of the consented scopes, as MSAL-style clients do', async () => {
    const { as, client, tokens } = await signIn();
    const response = await oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token!, {
      ...http,
      additionalParameters: { scope: `${OUTLOOK_SMTP_SCOPE} offline_access openid` },
    });
    const refreshed = await oauth.processRefreshTokenResponse(as, client, response);
    expect(refreshed.scope).toBe(OUTLOOK_SMTP_SCOPE);
    expect(refreshed.refresh_token).toBeTruthy();
  });

  it('revokeRefreshTokens makes the next refresh fail with invalid_grant AADSTS50173; unknown tokens give AADSTS70008', async () => {
    const { as, client, tokens } = await signIn(BOB);
    expect(ms.revokeRefreshTokens(BOB.email)).toBeGreaterThanOrEqual(1);
    const revoked = await oauthError(() => refresh(as, client, tokens.refresh_token!));
    expect(revoked.status).toBe(400);
    expect(revoked.error).toBe('invalid_grant');
    expect(revoked.error_description).toMatch(/^AADSTS50173:/);

    const unknown = await oauthError(() => refresh(as, client, 'not-a-refresh-token'));
    expect(unknown.error).toBe('invalid_grant');
    expect(unknown.error_description).toMatch(/^AADSTS70008:/);
  });

  it('introspection reports the mailbox, scope and audience of an access token', async () => {
    const { tokens } = await signIn();
    const rsServer: oauth.AuthorizationServer = { issuer: ms.issuer, introspection_endpoint: ms.introspection.url };
    const rsClient: oauth.Client = { client_id: ms.introspection.clientId };
    const response = await oauth.introspectionRequest(rsServer, rsClient, oauth.ClientSecretBasic(ms.introspection.clientSecret), tokens.access_token, http);
    const result = await oauth.processIntrospectionResponse(rsServer, rsClient, response);
    expect(result).toMatchObject({ active: true, sub: ALICE.email, email: ALICE.email, username: ALICE.email, aud: OUTLOOK_RESOURCE, tid: ms.tenantId });
    expect(result.scope?.split(' ')).toContain(OUTLOOK_SMTP_SCOPE);

    const bogus = await oauth.introspectionRequest(rsServer, rsClient, oauth.ClientSecretBasic(ms.introspection.clientSecret), 'bogus', http);
    expect((await oauth.processIntrospectionResponse(rsServer, rsClient, bogus)).active).toBe(false);
  });

  it('a declined request polls into authorization_declined (or access_denied when configured)', async () => {
    const { as, client, da } = await deviceAuthorization();
    const result = await approveDeviceCode({ verificationUri: da.verification_uri, userCode: da.user_code, ...ALICE, decline: true, ca: pki.ca.cert });
    expect(result.outcome).toBe('declined');
    const declined = await oauthError(() => poll(as, client, da.device_code));
    expect(declined.error).toBe('authorization_declined');
    expect(declined.error_description).toMatch(/^AADSTS/);

    ms.setDeclineError('access_denied');
    try {
      const second = await deviceAuthorization();
      await approveDeviceCode({ verificationUri: second.da.verification_uri, userCode: second.da.user_code, ...ALICE, decline: true, ca: pki.ca.cert });
      expect((await oauthError(() => poll(second.as, second.client, second.da.device_code))).error).toBe('access_denied');
    } finally {
      ms.setDeclineError('authorization_declined');
    }
  });

  it('an app without public client flows gets a device code but invalid_client AADSTS7000218 at /token', async () => {
    const { as, client, da } = await deviceAuthorization('organizations', { client_id: ms.confidentialClientId });
    expect(da.device_code).toBeTruthy();
    const refused = await oauthError(() => poll(as, client, da.device_code));
    expect(refused.status).toBe(401);
    expect(refused.error).toBe('invalid_client');
    expect(refused.error_description).toMatch(/^AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'\./);
  });

  it('failNext injects scripted responses at /devicecode and /token, in order, then recovers', async () => {
    ms.failNext('devicecode', { status: 503, body: { error: 'temporarily_unavailable', error_description: 'AADSTS90055: throttled' } });
    expect(await nonConformStatus(() => deviceAuthorization())).toBe(503);
    expect(ms.deviceCodeRequests.at(-1)).toMatchObject({ injected: true, status: 503, error: 'temporarily_unavailable' });

    const { as, client, da } = await deviceAuthorization();
    ms.failNext('token', { status: 400, body: { error: 'slow_down' } }, 2);
    ms.failNext('token', { status: 429, body: 'Too Many Requests', headers: { 'retry-after': '7', 'content-type': 'text/plain' } });
    expect((await oauthError(() => poll(as, client, da.device_code))).error).toBe('slow_down');
    expect((await oauthError(() => poll(as, client, da.device_code))).error).toBe('slow_down');
    const throttled = await undiciFetch(as.token_endpoint!, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', client_id: ms.publicClientId, device_code: da.device_code }),
      dispatcher: agent,
    });
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get('retry-after')).toBe('7');
    expect(await throttled.text()).toBe('Too Many Requests');
    expect((await oauthError(() => poll(as, client, da.device_code))).error).toBe('authorization_pending');
    expect(ms.tokenRequests.slice(-4).map((r) => r.injected)).toEqual([true, true, true, false]);
  });

  it('expireDeviceCodes makes polling answer expired_token; setAccessTokenTtl changes expires_in', async () => {
    const { as, client, da } = await deviceAuthorization();
    ms.expireDeviceCodes();
    const expired = await oauthError(() => poll(as, client, da.device_code));
    expect(expired.error).toBe('expired_token');
    expect(expired.error_description).toMatch(/^AADSTS70019:/);

    ms.setAccessTokenTtl(120);
    try {
      const { tokens } = await signIn();
      expect(tokens.expires_in).toBe(120);
    } finally {
      ms.setAccessTokenTtl(3600);
    }
  });

  it('also serves the authorization-code flow at /{tenant}/oauth2/v2.0/authorize (PKCE, loopback redirect)', async () => {
    const as: oauth.AuthorizationServer = { ...server('organizations'), authorization_endpoint: `${ms.endpoint('organizations')}/authorize` };
    const verifier = oauth.generateRandomCodeVerifier();
    const state = oauth.generateRandomState();
    const redirectUri = 'http://127.0.0.1:53682/oauth2/microsoft/callback';
    const url = new URL(as.authorization_endpoint!);
    url.search = new URLSearchParams({
      client_id: ms.publicClientId,
      redirect_uri: redirectUri,
      response_type: 'code',
      // prompt=consent: oidc-provider keeps offline_access on /authorize only with it.
      prompt: 'consent',
      scope: OUTLOOK_REQUEST_SCOPE,
      state,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    }).toString();
    const redirect = await authorizeInBrowserlessAgent({ authorizationUrl: url.href, ...BOB, ca: pki.ca.cert });
    expect(redirect.searchParams.get('iss')).toBe(ms.issuer);
    const params = oauth.validateAuthResponse(as, publicClient(), redirect, state);
    const response = await oauth.authorizationCodeGrantRequest(as, publicClient(), oauth.None(), params, redirectUri, verifier, http);
    const tokens = await oauth.processAuthorizationCodeResponse(as, publicClient(), response);
    expect(tokens.scope).toBe(OUTLOOK_SMTP_SCOPE);
    expect(tokens.refresh_token).toBeTruthy();
    expect(oauth.getValidatedIdTokenClaims(tokens)?.preferred_username).toBe(BOB.email);
  });

  it('the scripted user reports a wrong password', async () => {
    const { da } = await deviceAuthorization();
    await expect(
      approveDeviceCode({ verificationUri: da.verification_uri, userCode: da.user_code, email: ALICE.email, password: 'wrong', ca: pki.ca.cert }),
    ).rejects.toBeInstanceOf(UserAgentError);
  });
});

describe('Google stand-in', () => {
  const client = (): oauth.Client => ({ client_id: google.clientId });
  const server = (): oauth.AuthorizationServer => ({
    issuer: google.issuer,
    authorization_endpoint: google.authorizationEndpoint,
    token_endpoint: google.tokenEndpoint,
    jwks_uri: google.jwksUri,
    authorization_response_iss_parameter_supported: true,
  });

  /** A real loopback listener on a random port, as Postern's admin UI would open; it is never contacted. */
  async function loopbackRedirectUri(): Promise<{ redirectUri: string; close(): Promise<void> }> {
    const listener = createServer((_req, res) => res.end());
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const { port } = listener.address() as AddressInfo;
    return {
      redirectUri: `http://127.0.0.1:${port}/oauth2/google/callback`,
      close: () => new Promise<void>((resolve) => listener.close(() => resolve())),
    };
  }

  async function authorize(options: { deny?: boolean; user?: typeof ALICE; pkce?: boolean; standin?: GoogleStandin } = {}) {
    const standin = options.standin ?? google;
    const loopback = await loopbackRedirectUri();
    try {
      const verifier = oauth.generateRandomCodeVerifier();
      const state = oauth.generateRandomState();
      const url = new URL(standin.authorizationEndpoint);
      url.search = new URLSearchParams({
        client_id: standin.clientId,
        redirect_uri: loopback.redirectUri,
        response_type: 'code',
        scope: GOOGLE_REQUEST_SCOPE,
        state,
        access_type: 'offline',
        prompt: 'consent',
        ...(options.pkce === false ? {} : { code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' }),
      }).toString();
      const redirect = await authorizeInBrowserlessAgent({ authorizationUrl: url.href, ...(options.user ?? ALICE), deny: options.deny, ca: pki.ca.cert });
      return { redirect, redirectUri: loopback.redirectUri, verifier, state };
    } finally {
      await loopback.close();
    }
  }

  async function exchange(redirect: URL, redirectUri: string, verifier: string, state: string, auth = oauth.ClientSecretPost(google.clientSecret)) {
    const as = server();
    const params = oauth.validateAuthResponse(as, client(), redirect, state);
    const response = await oauth.authorizationCodeGrantRequest(as, client(), auth, params, redirectUri, verifier, http);
    return oauth.processAuthorizationCodeResponse(as, client(), response);
  }

  it('authorization code + PKCE with a loopback redirect on a random port; iss and state in the redirect', async () => {
    const { redirect, redirectUri, verifier, state } = await authorize();
    expect(`${redirect.origin}${redirect.pathname}`).toBe(redirectUri);
    expect(redirect.searchParams.get('state')).toBe(state);
    expect(redirect.searchParams.get('iss')).toBe(google.issuer);
    expect(redirect.searchParams.get('code')).toBeTruthy();

    const tokens = await exchange(redirect, redirectUri, verifier, state);
    expect(tokens.token_type).toBe('bearer');
    expect(tokens.scope?.split(' ')).toEqual(expect.arrayContaining([GMAIL_SCOPE, 'openid', 'https://www.googleapis.com/auth/userinfo.email']));
    expect(tokens.refresh_token).toBeTruthy();
    expect(oauth.getValidatedIdTokenClaims(tokens)).toMatchObject({ iss: google.issuer, sub: ALICE.email, email: ALICE.email });
    expect(google.tokenRequests.at(-1)).toMatchObject({ grantType: 'authorization_code', clientId: google.clientId, status: 200 });

    // Authorization codes are single-use.
    const reused = await oauthError(() => exchange(redirect, redirectUri, verifier, state));
    expect(reused.error).toBe('invalid_grant');

    const rsServer: oauth.AuthorizationServer = { issuer: google.issuer, introspection_endpoint: google.introspection.url };
    const rsClient: oauth.Client = { client_id: google.introspection.clientId };
    // The reuse above revoked the grant (RFC 6749 §4.1.2), so introspect a fresh token.
    const fresh = await authorize({ user: BOB });
    const bobTokens = await exchange(fresh.redirect, fresh.redirectUri, fresh.verifier, fresh.state);
    const response = await oauth.introspectionRequest(rsServer, rsClient, oauth.ClientSecretBasic(google.introspection.clientSecret), bobTokens.access_token, http);
    expect(await oauth.processIntrospectionResponse(rsServer, rsClient, response)).toMatchObject({
      active: true,
      sub: BOB.email,
      email: BOB.email,
      username: BOB.email,
      aud: GMAIL_SCOPE,
      scope: GMAIL_SCOPE,
    });
  });

  it('accepts client_secret_basic as well as client_secret_post', async () => {
    const { redirect, redirectUri, verifier, state } = await authorize();
    const tokens = await exchange(redirect, redirectUri, verifier, state, oauth.ClientSecretBasic(google.clientSecret));
    expect(tokens.access_token).toBeTruthy();
  });

  it('refresh keeps the refresh token; after revocation Google says "Token has been expired or revoked."', async () => {
    const { redirect, redirectUri, verifier, state } = await authorize({ user: BOB });
    const tokens = await exchange(redirect, redirectUri, verifier, state);
    const as = server();
    const refresh = async () =>
      oauth.processRefreshTokenResponse(as, client(), await oauth.refreshTokenGrantRequest(as, client(), oauth.ClientSecretPost(google.clientSecret), tokens.refresh_token!, http));

    const refreshed = await refresh();
    expect(refreshed.access_token).not.toBe(tokens.access_token);
    expect(refreshed.refresh_token).toBeUndefined();
    expect(refreshed.scope?.split(' ')).toContain(GMAIL_SCOPE);
    expect((await refresh()).access_token).toBeTruthy(); // the same refresh token still works

    expect(google.revokeRefreshTokens(BOB.email)).toBeGreaterThanOrEqual(1);
    const revoked = await oauthError(refresh);
    expect(revoked.error).toBe('invalid_grant');
    expect(revoked.error_description).toBe('Token has been expired or revoked.');
  });

  it('rotateRefreshTokens option rotates like Microsoft', async () => {
    const rotating = await startGoogleStandin({ pki, rotateRefreshTokens: true });
    try {
      const { redirect, redirectUri, verifier, state } = await authorize({ standin: rotating });
      const as: oauth.AuthorizationServer = { issuer: rotating.issuer, token_endpoint: rotating.tokenEndpoint };
      const c: oauth.Client = { client_id: rotating.clientId };
      const params = oauth.validateAuthResponse(as, c, redirect, state);
      const auth = oauth.ClientSecretPost(rotating.clientSecret);
      const tokens = await oauth.processAuthorizationCodeResponse(as, c, await oauth.authorizationCodeGrantRequest(as, c, auth, params, redirectUri, verifier, http));
      const refreshed = await oauth.processRefreshTokenResponse(as, c, await oauth.refreshTokenGrantRequest(as, c, auth, tokens.refresh_token!, http));
      expect(refreshed.refresh_token).toBeTruthy();
      expect(refreshed.refresh_token).not.toBe(tokens.refresh_token);
    } finally {
      await rotating.close();
    }
  });

  it('consent can be denied: the redirect carries error=access_denied', async () => {
    const { redirect, state } = await authorize({ deny: true });
    expect(redirect.searchParams.get('error')).toBe('access_denied');
    expect(redirect.searchParams.get('state')).toBe(state);
    expect(() => oauth.validateAuthResponse(server(), client(), redirect, state)).toThrow(oauth.AuthorizationResponseError);
  });

  it('PKCE is required', async () => {
    const { redirect } = await authorize({ pkce: false });
    expect(redirect.searchParams.get('error')).toBe('invalid_request');
    expect(redirect.searchParams.get('error_description')).toMatch(/PKCE/);
  });

  it('granular consent: the token scope can lack https://mail.google.com/', async () => {
    google.grantScopeWithoutMail();
    try {
      const { redirect, redirectUri, verifier, state } = await authorize();
      const tokens = await exchange(redirect, redirectUri, verifier, state);
      expect(tokens.scope?.split(' ')).not.toContain(GMAIL_SCOPE);
      expect(tokens.scope?.split(' ')).toContain('openid');
      expect(oauth.getValidatedIdTokenClaims(tokens)?.email).toBe(ALICE.email);
    } finally {
      google.grantScopeWithoutMail(false);
    }
  });

  it('failNext injects a token endpoint failure', async () => {
    const { redirect, redirectUri, verifier, state } = await authorize();
    google.failNext('token', { status: 500, body: { error: 'internal_failure' } });
    expect(await nonConformStatus(() => exchange(redirect, redirectUri, verifier, state))).toBe(500);
    expect(google.tokenRequests.at(-1)).toMatchObject({ injected: true, status: 500 });
    // The code was not spent by the injected failure.
    expect((await exchange(redirect, redirectUri, verifier, state)).access_token).toBeTruthy();
  });
});
