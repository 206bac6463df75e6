/**
 * OAuth 2.0 (Google) end to end against the stand-in Google (oidc-provider over HTTPS with a confidential
 * client, PKCE required, loopback redirects), through the Remote UI's forms without a browser; the Google
 * account holder's sign-in is scripted. Every wrong paste must end in a clear message and no token request.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { startGoogleStandin, type GoogleStandin } from './support/oauth-standins.js';
import { field, startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { authorizationUrlOf, saveGoogleSettings } from './support/sending.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { authorizeInBrowserlessAgent } from './support/user-agent.js';

const BASE = '/settings/send/oauth-google';

let pki: TestPki;
let google: GoogleStandin;
let gw: TestPostern;
let web: WebClient;

async function saveSettings(overrides: Record<string, string | undefined> = {}) {
  const html = await saveGoogleSettings(web, google, overrides);
  await gw.postern.oauth.whenIdle('google');
  return html;
}

/** Opens Register Information for Authorization and returns the URL for Google Authorization Server. */
async function openRegister(): Promise<URL> {
  const html = await web.get(`${BASE}/register`);
  expect(html).toContain('<h1>Register Information for Authorization</h1>');
  return new URL(authorizationUrlOf(html));
}

async function signIn(url: URL, deny = false): Promise<URL> {
  return authorizeInBrowserlessAgent({ authorizationUrl: url.href, email: 'bob@example.test', password: 'correct horse', ca: pki.ca.cert, deny });
}

async function paste(code: string): Promise<string> {
  return web.post(`${BASE}/register`, { code });
}

const tokenRequests = () => google.tokenRequests.length;

beforeAll(async () => {
  pki = await createTestPki();
  google = await startGoogleStandin({ pki });
  gw = await startTestPostern({ caPems: [pki.ca.cert] });
  web = new WebClient(gw.url);
  await web.login();
});

afterAll(async () => {
  await gw?.close();
  await google?.close();
});

describe('Edit Basic Settings', () => {
  test('the Client Secret is required the first time, and bad endpoints are refused', async () => {
    let html = await saveSettings({ clientSecret: '' });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('Enter the Client Secret');
    html = await saveSettings({ tokenEndpoint: 'http://oauth2.googleapis.com/token' });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('The token endpoint must start with https://');
    html = await saveSettings({ authorizationEndpoint: 'not a url' });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('is not a URL');
  });

  test('OK with Use on: Successfully Connected; the secret is stored encrypted and never shown back', async () => {
    await saveSettings();
    expect(web.lastStatus).toBe(303);
    const status = await web.get(`${BASE}/status`);
    expect(field(status, 'connection-status')).toBe('Successfully Connected');
    expect(field(status, 'token-status')).toBe('Not Registered');
    const page = await web.get(BASE);
    expect(page).toContain('Registered (not shown)');
    const edit = await web.get(`${BASE}/edit`);
    expect(edit).not.toContain(google.clientSecret);
    expect(edit).toContain('leave blank to keep it');
    // Saving again with the secret left blank keeps it.
    await saveSettings({ clientSecret: '' });
    expect(web.lastStatus).toBe(303);
    const row = (await gw.postern.accounts.get('google'))!;
    expect(gw.postern.accounts.clientSecret(row)).toBe(google.clientSecret);
    const files = readdirSync(gw.dataDir).filter((n) => n.startsWith('postern.sqlite')).map((n) => readFileSync(join(gw.dataDir, n)).toString('latin1'));
    for (const file of files) expect(file).not.toContain(google.clientSecret);
  });
});

describe('Register Information for Authorization', () => {
  beforeEach(async () => {
    await gw.postern.oauth.deleteToken('google', 'test');
  });

  test('the authorization URL: PKCE S256, a fresh 256-bit state, the loopback redirect URI and the scopes', async () => {
    const first = await openRegister();
    const second = await openRegister();
    const q = first.searchParams;
    expect(first.origin + first.pathname).toBe(google.authorizationEndpoint);
    expect(q.get('client_id')).toBe(google.clientId);
    expect(q.get('response_type')).toBe('code');
    expect(q.get('redirect_uri')).toBe(`http://127.0.0.1:${gw.postern.httpPort}/oauth2/google/callback`);
    expect(q.get('scope')).toBe('https://mail.google.com/ openid email');
    expect(q.get('code_challenge_method')).toBe('S256');
    expect(q.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get('access_type')).toBe('offline');
    expect(q.get('prompt')).toBe('consent');
    expect(Buffer.from(q.get('state')!, 'base64url').length).toBeGreaterThanOrEqual(16);
    expect(second.searchParams.get('state')).not.toBe(q.get('state'));
    expect(second.searchParams.get('code_challenge')).not.toBe(q.get('code_challenge'));
  });

  test('pasting the whole URL from the browser ends in Active', async () => {
    const redirect = await signIn(await openRegister());
    expect(redirect.searchParams.get('code')).toBeTruthy();
    await paste(redirect.href);
    expect(web.lastStatus).toBe(303);
    expect(web.lastLocation).toBe(BASE);
    const status = await web.get(`${BASE}/status`);
    expect(field(status, 'token-status')).toBe('Active');
    expect(field(status, 'account')).toContain('bob@example.test');
    const token = await gw.postern.tokens.getAccessToken('google');
    expect(token.mailbox).toBe('bob@example.test');
  });

  test('pasting only the code (URL-encoded, with spaces and quotes) ends in Active', async () => {
    const redirect = await signIn(await openRegister());
    const raw = /[?&]code=([^&]+)/.exec(redirect.href)![1]!;
    await paste(`  "${raw}" `);
    expect(web.lastStatus).toBe(303);
    expect(field(await web.get(`${BASE}/status`), 'token-status')).toBe('Active');
  });

  test('a URL with error=access_denied is the user refusing: clear message, no token request', async () => {
    const redirect = await signIn(await openRegister(), true);
    expect(redirect.searchParams.get('error')).toBe('access_denied');
    const before = tokenRequests();
    const html = await paste(redirect.href);
    expect(web.lastStatus).toBe(400);
    expect(field(html, 'register-error')).toMatch(/Access was not granted/);
    expect(tokenRequests()).toBe(before);
    expect(field(await web.get(`${BASE}/status`), 'token-status')).toBe('Not Registered');
  });

  test('a state that does not match is refused before any token request', async () => {
    const redirect = await signIn(await openRegister());
    redirect.searchParams.set('state', 'someone-elses-state');
    const before = tokenRequests();
    const html = await paste(redirect.href);
    expect(web.lastStatus).toBe(400);
    expect(field(html, 'register-error')).toMatch(/state does not match/);
    expect(tokenRequests()).toBe(before);
  });

  test('a code is registered at most once', async () => {
    const redirect = await signIn(await openRegister());
    await paste(redirect.href);
    expect(web.lastStatus).toBe(303);
    const before = tokenRequests();
    const html = await paste(redirect.href);
    expect(web.lastStatus).toBe(400);
    expect(field(html, 'register-error')).toMatch(/already used/);
    expect(tokenRequests()).toBe(before);
  });

  test('an expired attempt is refused before any token request', async () => {
    const redirect = await signIn(await openRegister());
    await gw.postern.store.db.updateTable('authorization_attempts').set({ expires_at: Date.now() - 1 }).execute();
    const before = tokenRequests();
    const html = await paste(redirect.href);
    expect(web.lastStatus).toBe(400);
    expect(field(html, 'register-error')).toMatch(/expired/);
    expect(tokenRequests()).toBe(before);
  });

  test('nonsense is refused with a clear message, and the pending attempt survives for a corrected paste', async () => {
    const url = await openRegister();
    const before = tokenRequests();
    const html = await paste('https://127.0.0.1/oauth2/google/callback?state=x');
    expect(web.lastStatus).toBe(400);
    expect(field(html, 'register-error')).toMatch(/no code= parameter/);
    expect(tokenRequests()).toBe(before);
    const redirect = await signIn(url);
    await paste(redirect.href);
    expect(web.lastStatus).toBe(303);
  });

  test('access granted without the Gmail scope saves nothing', async () => {
    google.grantScopeWithoutMail(true);
    try {
      const redirect = await signIn(await openRegister());
      const html = await paste(redirect.href);
      expect(web.lastStatus).toBe(400);
      expect(field(html, 'register-error')).toMatch(/without Gmail/);
      expect(field(await web.get(`${BASE}/status`), 'token-status')).toBe('Not Registered');
      expect((await gw.postern.accounts.get('google'))?.refresh_token_enc).toBeNull();
    } finally {
      google.grantScopeWithoutMail(false);
    }
  });

  test('the loopback redirect reaching Postern completes the registration by itself', async () => {
    const redirect = await signIn(await openRegister());
    expect(redirect.origin).toBe(`http://127.0.0.1:${gw.postern.httpPort}`);
    await web.get(redirect.pathname + redirect.search);
    expect(web.lastStatus).toBe(303);
    expect(field(await web.get(`${BASE}/status`), 'token-status')).toBe('Active');
  });

  test('the redirect in a browser without a Remote UI session explains what to paste', async () => {
    const redirect = await signIn(await openRegister());
    const anonymous = new WebClient(gw.url);
    const html = await anonymous.get(redirect.pathname + redirect.search);
    expect(anonymous.lastStatus).toBe(200);
    expect(html).toContain('copy this page');
    expect(html).toContain('code=');
  });

  test('a revoked refresh token (e.g. Gmail password change): Expired with Google\'s text and advice', async () => {
    await paste((await signIn(await openRegister())).href);
    expect(google.revokeRefreshTokens('bob@example.test')).toBeGreaterThan(0);
    await gw.postern.accounts.update('google', { access_token_expires_at: Date.now() - 1000 });
    await expect(gw.postern.tokens.getAccessToken('google')).rejects.toMatchObject({ status: 'Expired' });
    const status = await web.get(`${BASE}/status`);
    expect(field(status, 'token-status')).toBe('Expired');
    expect(field(status, 'token-error')).toContain('Token has been expired or revoked.');
    expect(field(status, 'token-advice')).toMatch(/Testing/);
  });

  test('Google refresh tokens are kept when the refresh response carries none', async () => {
    await paste((await signIn(await openRegister())).href);
    const before = gw.postern.accounts.refreshToken((await gw.postern.accounts.get('google'))!);
    await gw.postern.tokens.refresh('google');
    const after = gw.postern.accounts.refreshToken((await gw.postern.accounts.get('google'))!);
    expect(after).toBe(before);
  });
});
