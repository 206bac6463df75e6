/**
 * OAuth 2.0 (Microsoft) end to end against the stand-in identity platform (oidc-provider over HTTPS in
 * Microsoft's URL layout), driven through the Remote UI's forms without a browser; the end user's sign-in
 * is scripted. Covers the device grant outcomes, refresh with rotation, single-flight, invalid_grant and
 * transient failures, and that no secret reaches the logs or the database file in clear text.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { LOG, until } from './support/events.js';
import { field, startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { approveDeviceCode } from './support/user-agent.js';

const BASE = '/settings/send/oauth-microsoft';

let pki: TestPki;
let ms: MicrosoftStandin;
let gw: TestPostern;
let web: WebClient;

async function saveSettings(fields: Partial<Record<'endpoint' | 'clientId', string>> & { enabled?: boolean; verify?: boolean; addCn?: boolean } = {}) {
  await web.get(`${BASE}/edit`);
  const form: Record<string, string> = {
    endpoint: fields.endpoint ?? ms.endpoint('organizations'),
    clientId: fields.clientId ?? ms.publicClientId,
  };
  if (fields.enabled ?? true) form.enabled = 'on';
  if (fields.verify ?? true) form.verifyServerCertificate = 'on';
  if (fields.addCn ?? true) form.addCnToVerificationItems = 'on';
  const html = await web.post(`${BASE}/edit`, form);
  await gw.postern.oauth.whenIdle('microsoft');
  return html;
}

async function statusHtml(): Promise<string> {
  return web.get(`${BASE}/status`);
}

/** The user code shown; the request for it has finished (the tests await oauth.whenIdle after asking). */
async function pendingUserCode(): Promise<string> {
  const userCode = field(await statusHtml(), 'user-code')?.match(/^[A-Z0-9-]{6,}$/)?.[0];
  if (!userCode) throw new Error('no user code on the status page');
  return userCode;
}

/** Signs in at the verification page and waits until Postern's poll has completed the grant. */
async function signInAndWaitForActive(userCode: string): Promise<void> {
  const mark = gw.log.mark();
  await approveDeviceCode({ verificationUri: ms.verificationUri, userCode, email: 'alice@example.test', password: 'correct horse', ca: pki.ca.cert });
  await gw.log.waitFor(LOG.authorized, { from: mark });
  expect(field(await statusHtml(), 'token-status')).toBe('Active');
}

beforeAll(async () => {
  pki = await createTestPki();
  ms = await startMicrosoftStandin({ pki, interval: 1 });
  gw = await startTestPostern({ caPems: [pki.ca.cert] });
  web = new WebClient(gw.url);
  await web.login();
});

afterAll(async () => {
  await gw?.close();
  await ms?.close();
});

describe('Edit Basic Settings validation', () => {
  test.each([
    ['not a url', /is not a URL/],
    ['http://login.microsoftonline.com/common/oauth2/v2.0', /must start with https/],
    ['https://login.microsoftonline.com/common/oauth2/v1.0', /must end in \/&lt;tenant&gt;\/oauth2\/v2.0/],
    ['https://login.microsoftonline.com/not_a_tenant!/oauth2/v2.0', /is not a valid tenant/],
    ['https://login.microsoftonline.com/common/oauth2/v2.0?x=1', /query/],
  ])('endpoint %s is refused with a clear message and nothing is saved', async (endpoint, message) => {
    const before = await gw.postern.accounts.get('microsoft');
    const html = await saveSettings({ endpoint });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('<h1>Edit Basic Settings</h1>');
    expect(html).toMatch(message);
    expect(html).toContain('aria-invalid="true"');
    expect((await gw.postern.accounts.get('microsoft'))?.endpoint).toBe(before?.endpoint);
  });

  test('the Application (Client) ID is required', async () => {
    const html = await saveSettings({ clientId: '  ' });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('Enter the Application (Client) ID');
  });

  test('national cloud hosts, GUID and domain tenants are accepted', async () => {
    const { validateMicrosoftEndpoint } = await import('../src/oauth/profiles.js');
    for (const url of [
      'https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0',
      'https://login.chinacloudapi.cn/8f3c1c9e-5d2a-4b7e-9a61-3e0f2b7c4d15/oauth2/v2.0/',
      'https://login.microsoftonline.com/consumers/oauth2/v2.0',
    ]) {
      expect(validateMicrosoftEndpoint(url).ok).toBe(true);
    }
  });
});

describe('device authorization grant', () => {
  test('OK with Use on: Successfully Connected, a user code, then Active after the user signs in', async () => {
    await saveSettings();
    const html = await statusHtml();
    expect(field(html, 'connection-status')).toBe('Successfully Connected');
    expect(field(html, 'token-status')).toBe('Waiting for Authorization');
    const userCode = await pendingUserCode();
    expect(field(html, 'message')).toContain(userCode);
    expect(field(html, 'expires-in')).toMatch(/^1[45]:\d\d$/);
    expect(html).toContain(`href="${ms.verificationUri}"`);

    // What was sent: form-encoded client_id and the Outlook scopes, to the configured tenant.
    const request = ms.deviceCodeRequests.at(-1)!;
    expect(request.tenant).toBe('organizations');
    expect(request.clientId).toBe(ms.publicClientId);
    expect(request.scope).toBe('https://outlook.office.com/SMTP.Send offline_access openid email profile');

    await signInAndWaitForActive(userCode);
    const active = await statusHtml();
    expect(field(active, 'account')).toContain('alice@example.test');
    expect(field(active, 'user-code')).toBe('None');

    const token = await gw.postern.tokens.getAccessToken('microsoft');
    expect(token.mailbox).toBe('alice@example.test');
    expect(token.accessToken.length).toBeGreaterThan(20);

    // Polls carried exactly the device_code grant and no client secret, never faster than the interval.
    const polls = ms.tokenRequests.filter((r) => r.grantType === 'urn:ietf:params:oauth:grant-type:device_code');
    expect(polls.length).toBeGreaterThan(0);
    for (let i = 1; i < polls.length; i++) expect(polls[i]!.time.getTime() - polls[i - 1]!.time.getTime()).toBeGreaterThanOrEqual(950);
  });

  test('refresh rotates the refresh token and saves it before the new access token is used', async () => {
    const before = (await gw.postern.accounts.get('microsoft'))!;
    const oldRefresh = gw.postern.accounts.refreshToken(before);
    const oldAccess = gw.postern.accounts.accessToken(before);
    const token = await gw.postern.tokens.refresh('microsoft');
    const after = (await gw.postern.accounts.get('microsoft'))!;
    expect(token.accessToken).not.toBe(oldAccess);
    expect(gw.postern.accounts.accessToken(after)).toBe(token.accessToken);
    expect(gw.postern.accounts.refreshToken(after)).not.toBe(oldRefresh);
    expect(after.token_status).toBe('Active');
  });

  test('N concurrent callers across an expiry cause exactly one refresh request', async () => {
    // An hour-long token in its last second (a one-second token would be fresh for half of it: refreshDueAt).
    await gw.postern.accounts.update('microsoft', { access_token_expires_at: Date.now() + 1000, token_issued_at: Date.now() - 3_599_000 });
    const before = ms.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;
    const results = await Promise.all(Array.from({ length: 25 }, () => gw.postern.tokens.getAccessToken('microsoft')));
    const refreshes = ms.tokenRequests.filter((r) => r.grantType === 'refresh_token').length - before;
    expect(refreshes).toBe(1);
    expect(new Set(results.map((r) => r.accessToken)).size).toBe(1);
  });

  test('a token an upstream refused is refreshed once, even when many deliveries report it', async () => {
    const current = await gw.postern.tokens.getAccessToken('microsoft');
    const before = ms.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;
    const fresh = await Promise.all(
      Array.from({ length: 5 }, () => gw.postern.tokens.getAccessToken('microsoft', { rejectedAccessToken: current.accessToken })),
    );
    const later = await gw.postern.tokens.getAccessToken('microsoft', { rejectedAccessToken: current.accessToken });
    expect(ms.tokenRequests.filter((r) => r.grantType === 'refresh_token').length - before).toBe(1);
    expect(fresh[0]!.accessToken).not.toBe(current.accessToken);
    expect(later.accessToken).toBe(fresh[0]!.accessToken);
  });

  test('5xx from the token endpoint: Error, credentials kept, retried with backoff, then Active again', async () => {
    await gw.postern.accounts.update('microsoft', { access_token_expires_at: Date.now() - 1000 });
    ms.failNext('token', { status: 503, body: { error: 'temporarily_unavailable', error_description: 'AADSTS90055: busy' } });
    await expect(gw.postern.tokens.getAccessToken('microsoft')).rejects.toMatchObject({ status: 'Error', retryable: true });
    let row = (await gw.postern.accounts.get('microsoft'))!;
    expect(row.token_status).toBe('Error');
    expect(row.refresh_token_enc).not.toBeNull();
    expect(row.next_refresh_attempt_at).toBeGreaterThan(Date.now());
    expect(field(await statusHtml(), 'token-status')).toBe('Error');

    // Before the backoff elapses no request is sent.
    const count = ms.tokenRequests.length;
    await expect(gw.postern.tokens.getAccessToken('microsoft')).rejects.toMatchObject({ status: 'Error' });
    expect(ms.tokenRequests.length).toBe(count);

    await gw.postern.accounts.update('microsoft', { next_refresh_attempt_at: Date.now() - 1 });
    await gw.postern.tokens.refreshDue();
    row = (await gw.postern.accounts.get('microsoft'))!;
    expect(row.token_status).toBe('Active');
  });

  test('a revoked refresh token: Expired with the provider error and advice, and no retry loop', async () => {
    expect(ms.revokeRefreshTokens('alice@example.test')).toBeGreaterThan(0);
    await gw.postern.accounts.update('microsoft', { access_token_expires_at: Date.now() - 1000 });
    await expect(gw.postern.tokens.getAccessToken('microsoft')).rejects.toMatchObject({ status: 'Expired' });
    const html = await statusHtml();
    expect(field(html, 'token-status')).toBe('Expired');
    expect(field(html, 'token-error')).toMatch(/invalid_grant: AADSTS50173/);
    expect(field(html, 'token-advice')).toMatch(/Get a new user code and sign in again/);

    const count = ms.tokenRequests.length;
    await expect(gw.postern.tokens.getAccessToken('microsoft')).rejects.toMatchObject({ status: 'Expired' });
    await gw.postern.tokens.refreshDue();
    expect(ms.tokenRequests.length).toBe(count);
  });

  test('Get New User Code after Expired leads back to Active', async () => {
    await web.post(`${BASE}/user-code`);
    await gw.postern.oauth.whenIdle('microsoft');
    const userCode = await pendingUserCode();
    await signInAndWaitForActive(userCode);
  });

  test('Get New User Code refused while Active: the status and its time stay, the advice says why', async () => {
    const before = (await gw.postern.accounts.get('microsoft'))!;
    ms.failNext('devicecode', { status: 503, body: { error: 'temporarily_unavailable', error_description: 'AADSTS90055: throttled' } });
    await web.post(`${BASE}/user-code`);
    await gw.postern.oauth.whenIdle('microsoft');
    const html = await statusHtml();
    expect(field(html, 'token-status')).toBe('Active');
    expect(field(html, 'token-advice')).toMatch(/^A new user code could not be requested: .* answered HTTP 503/);
    expect(field(html, 'user-code')).toBe('None');
    const after = (await gw.postern.accounts.get('microsoft'))!;
    expect(after.token_status_at).toBe(before.token_status_at);
    expect(gw.postern.accounts.refreshToken(after)).toBe(gw.postern.accounts.refreshToken(before));
  });

  test('declined sign-in stops polling and says so', async () => {
    await web.post(`${BASE}/token/delete`);
    expect(field(await statusHtml(), 'token-status')).toBe('Not Registered');
    await web.post(`${BASE}/user-code`);
    await gw.postern.oauth.whenIdle('microsoft');
    const userCode = await pendingUserCode();
    await approveDeviceCode({ verificationUri: ms.verificationUri, userCode, email: 'alice@example.test', password: 'correct horse', decline: true, ca: pki.ca.cert });
    // The poll that hears access_denied marks the grant Declined, then sets Token Status (told to listeners).
    const html = await until((listener) => gw.postern.accounts.onTokenChange(() => listener()), async () => {
      const h = await statusHtml();
      return /declined/.test(field(h, 'message') ?? '') ? h : undefined;
    }, 'the declined message');
    expect(field(html, 'token-status')).toBe('Not Registered');
    const grant = await gw.postern.accounts.deviceAuthorization('microsoft');
    expect(grant?.status).toBe('Declined');
    // No further poll: the poller's next step for this account, whenever it would come, sends nothing.
    const count = ms.tokenRequests.length;
    await gw.postern.poller.pollOnce('microsoft');
    expect(ms.tokenRequests.length).toBe(count);
  });

  test('an app registration without public client flows gets the "Allow public client flows" advice', async () => {
    const mark = gw.log.mark();
    await saveSettings({ clientId: ms.confidentialClientId });
    // The first poll is refused (invalid_client); the poller logs it once the grant is marked Failed.
    await gw.log.waitFor(LOG.deviceAuthorizationFailed, { from: mark });
    const html = await statusHtml();
    expect(html).toMatch(/AADSTS7000218/);
    expect(html).toContain('Allow public client flows');
    expect((await gw.postern.accounts.deviceAuthorization('microsoft'))?.status).toBe('Failed');
  });

  test('an unknown tenant is reported with the provider error, no stack trace', async () => {
    await saveSettings({ endpoint: ms.endpoint('nosuchtenant.example'), clientId: ms.publicClientId });
    const html = await statusHtml();
    expect(field(html, 'connection-status')).toBe('Successfully Connected');
    expect(field(html, 'token-error')).toMatch(/AADSTS90002/);
    expect(field(html, 'token-advice')).toMatch(/tenant/);
    expect(html).not.toMatch(/at .*\.ts:\d+/);
  });

  test('Use off stops any pending authorization', async () => {
    await saveSettings();
    await pendingUserCode();
    await saveSettings({ enabled: false });
    expect((await gw.postern.accounts.deviceAuthorization('microsoft'))?.status).toBe('Cancelled');
    expect(field(await statusHtml(), 'connection-status')).toBe('Not in use');
  });
});

describe('secrets at rest and in logs', () => {
  test('no access token, refresh token or device code appears in the logs or the database files', async () => {
    // Authorize once more so that every kind of secret exists.
    await saveSettings();
    const userCode = await pendingUserCode();
    const grant = (await gw.postern.accounts.deviceAuthorization('microsoft'))!;
    const deviceCode = gw.postern.accounts.deviceCode(grant);
    await signInAndWaitForActive(userCode);
    const row = (await gw.postern.accounts.get('microsoft'))!;
    const secrets = [gw.postern.accounts.accessToken(row)!, gw.postern.accounts.refreshToken(row)!, deviceCode];
    const logs = gw.logs();
    const files = readdirSync(gw.dataDir)
      .filter((name) => name.startsWith('postern.sqlite'))
      .map((name) => readFileSync(join(gw.dataDir, name)).toString('latin1'));
    for (const secret of secrets) {
      expect(secret.length).toBeGreaterThan(10);
      expect(logs).not.toContain(secret);
      for (const file of files) expect(file).not.toContain(secret);
    }
    expect(logs).not.toContain('admin-password-for-tests');
  });
});
