/**
 * The Remote UI over HTTPS (POSTERN_HTTPS_PORT): served with Postern's own certificate (the relay's) or the
 * administrator's files, the plain HTTP listener reduced to a redirect except for the Google loopback
 * callback, /healthz and /metrics, the session cookie Secure, and the Google registration still completing
 * through the paste-back when the callback arrives over plain HTTP without the session. Real listeners,
 * undici with the certificate trusted explicitly, and Chromium for the login.
 */
import { X509Certificate } from 'node:crypto';
import { connect } from 'node:tls';
import type { Page } from 'playwright-core';
import { Agent, request, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadConfig } from '../src/config.js';
import { launchBrowser } from './support/browser.js';
import { startGoogleStandin, type GoogleStandin } from './support/oauth-standins.js';
import { ADMIN_PASSWORD, field, startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { authorizationUrlOf, saveGoogleSettings } from './support/sending.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { authorizeInBrowserlessAgent } from './support/user-agent.js';

const GOOGLE = '/settings/send/oauth-google';

/** The certificate a TLS client is shown on `port`, and the protocol negotiated, trusting only `ca`. */
function handshake(port: number, ca: string, options: { maxVersion?: 'TLSv1.1' | 'TLSv1.2' } = {}): Promise<{ fingerprint256: string; protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, ...options, ...(options.maxVersion === 'TLSv1.1' ? { minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' } : {}) }, () => {
      const result = { fingerprint256: socket.getPeerCertificate().fingerprint256, protocol: socket.getProtocol() };
      socket.end();
      resolve(result);
    });
    socket.once('error', reject);
  });
}

const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;

describe('HTTPS with Postern\'s own certificate', () => {
  let pki: TestPki;
  let google: GoogleStandin;
  let gw: TestPostern;
  let ownCertificate: string;
  let agent: Agent;
  let httpsPort: number;

  beforeAll(async () => {
    pki = await createTestPki();
    google = await startGoogleStandin({ pki });
    gw = await startTestPostern({ config: { https: { port: 0, certificate: undefined } }, caPems: [pki.ca.cert] });
    ownCertificate = (await gw.postern.relaySettings.certificate())!.cert;
    agent = new Agent({ connect: { ca: ownCertificate } });
    httpsPort = gw.postern.httpsPort!;
  });

  afterAll(async () => {
    await gw?.close();
    await google?.close();
    await agent?.close();
  });

  test('the start-up log names the bound HTTPS port, and the plain listener stays the last line', () => {
    const lines = gw.logs().trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const https = lines.find((line) => line.msg === 'Remote UI listening over HTTPS');
    expect(https).toMatchObject({ port: httpsPort, url: `https://127.0.0.1:${httpsPort}/` });
    expect(httpsPort).toBeGreaterThan(0);
    const plain = lines.find((line) => line.msg === 'Remote UI listening');
    expect(plain).toMatchObject({ port: gw.postern.httpPort, redirectsTo: `https://127.0.0.1:${httpsPort}/` });
    expect(lines.indexOf(plain!)).toBeGreaterThan(lines.indexOf(https!));
    expect(gw.postern.remoteUiUrl).toBe(`https://127.0.0.1:${httpsPort}/`);
  });

  test('the HTTPS listener shows the relay\'s certificate, with TLS 1.2 or newer only', async () => {
    const shown = await handshake(httpsPort, ownCertificate);
    expect(shown.fingerprint256).toBe(fingerprintOf(ownCertificate));
    expect(['TLSv1.2', 'TLSv1.3']).toContain(shown.protocol);
    expect((await handshake(httpsPort, ownCertificate, { maxVersion: 'TLSv1.2' })).protocol).toBe('TLSv1.2');
    await expect(handshake(httpsPort, ownCertificate, { maxVersion: 'TLSv1.1' })).rejects.toThrow(/alert protocol version/);
  });

  test('login over HTTPS works, and the session cookie is Secure and HttpOnly', async () => {
    const loginPage = await undiciFetch(`${gw.httpsUrl}/login`, { dispatcher: agent });
    const sessionCookie = loginPage.headers.getSetCookie().find((cookie) => cookie.startsWith('postern_session='))!;
    expect(sessionCookie).toMatch(/;\s*Secure/i);
    expect(sessionCookie).toMatch(/;\s*HttpOnly/i);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(await loginPage.text())![1]!;
    const login = await undiciFetch(`${gw.httpsUrl}/login`, {
      method: 'POST',
      redirect: 'manual',
      dispatcher: agent,
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: sessionCookie.split(';')[0]! },
      body: new URLSearchParams({ _csrf: csrf, username: 'admin', password: ADMIN_PASSWORD, next: '/settings' }),
    });
    expect(login.status).toBe(303);
    expect(login.headers.get('location')).toBe('/settings');
    const renewed = login.headers.getSetCookie().find((cookie) => cookie.startsWith('postern_session='))!;
    expect(renewed).toMatch(/;\s*Secure/i);
    expect(renewed).toMatch(/;\s*HttpOnly/i);
    const settings = await undiciFetch(`${gw.httpsUrl}/settings`, { dispatcher: agent, headers: { cookie: renewed.split(';')[0]! } });
    expect(settings.status).toBe(200);
    expect(await settings.text()).toContain('<h1>Settings/Registration</h1>');
    expect(settings.headers.get('strict-transport-security')).toBeNull();
  });

  test('a GET or HEAD on the HTTP port is redirected to the same path over HTTPS, on the host name asked for', async () => {
    for (const method of ['GET', 'HEAD']) {
      const response = await fetch(`${gw.url}/settings/send/oauth-microsoft?x=1&y=%2F`, { method, redirect: 'manual' });
      expect(response.status).toBe(302);
      expect(response.headers.get('location')).toBe(`https://127.0.0.1:${httpsPort}/settings/send/oauth-microsoft?x=1&y=%2F`);
      expect(response.headers.getSetCookie()).toEqual([]);
    }
    // fetch does not let a caller choose the Host header; undici's request does.
    const locationFor = async (path: string, host: string) => {
      const response = await request(`${gw.url}${path}`, { headers: { host } });
      await response.body.dump();
      expect(response.statusCode).toBe(302);
      return response.headers.location;
    };
    expect(await locationFor('/', `gateway.example:${gw.postern.httpPort}`)).toBe(`https://gateway.example:${httpsPort}/`);
    expect(await locationFor('/login', 'gateway.example')).toBe(`https://gateway.example:${httpsPort}/login`);
    expect(await locationFor('/login', `[::1]:${gw.postern.httpPort}`)).toBe(`https://[::1]:${httpsPort}/login`);
    // A Host header that is not a host name is not echoed: the address the client connected to is used.
    expect(await locationFor('/login', 'evil.example/x?')).toBe(`https://127.0.0.1:${httpsPort}/login`);
    expect(await locationFor('/login', 'a@evil.example')).toBe(`https://127.0.0.1:${httpsPort}/login`);
  });

  test('a POST on the HTTP port is refused with a page that says to use HTTPS, and nothing is done', async () => {
    const logins = async () => (await gw.postern.audit.recent(1000)).filter((entry) => entry.action.startsWith('login')).length;
    const before = await logins();
    const response = await fetch(`${gw.url}/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username: 'admin', password: ADMIN_PASSWORD }),
    });
    expect(response.status).toBe(403);
    expect(response.headers.get('location')).toBeNull();
    expect(response.headers.getSetCookie()).toEqual([]);
    const html = await response.text();
    expect(html).toContain('<h1>Use HTTPS</h1>');
    expect(html).toContain(`https://127.0.0.1:${httpsPort}/`);
    expect(await logins()).toBe(before);
  });

  test('/healthz and /metrics answer on both listeners', async () => {
    for (const response of [await fetch(`${gw.url}/healthz`), await undiciFetch(`${gw.httpsUrl}/healthz`, { dispatcher: agent })]) {
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ status: 'ok' });
    }
    for (const response of [await fetch(`${gw.url}/metrics`), await undiciFetch(`${gw.httpsUrl}/metrics`, { dispatcher: agent })]) {
      expect(response.status).toBe(200);
      expect(await response.text()).toContain('postern_oauth_token_status');
    }
  });

  test('Google: the callback over plain HTTP without the session shows the address to paste, and pasting it over HTTPS registers', async () => {
    const web = new WebClient(gw.httpsUrl!, agent);
    await web.login();
    await saveGoogleSettings(web, google);
    expect(web.lastStatus).toBe(303);
    await gw.postern.oauth.whenIdle('google');

    const register = await web.get(`${GOOGLE}/register`);
    expect(register).toContain(`http://127.0.0.1:${gw.postern.httpPort}/oauth2/google/callback`);
    const href = authorizationUrlOf(register);
    const redirect = await authorizeInBrowserlessAgent({ authorizationUrl: href, email: 'bob@example.test', password: 'correct horse', ca: pki.ca.cert });
    expect(redirect.origin).toBe(`http://127.0.0.1:${gw.postern.httpPort}`);

    // The browser follows the redirect over plain HTTP without the Secure cookie: still served, not redirected.
    const callback = await fetch(redirect.href, { redirect: 'manual' });
    expect(callback.status).toBe(200);
    const html = (await callback.text()).replace(/&amp;/g, '&');
    expect(html).toContain('<h1>Register Information for Authorization</h1>');
    expect(html).toContain('the Remote UI is served over HTTPS');
    expect(html).toContain(redirect.href);
    expect(field(await web.get(`${GOOGLE}/status`), 'token-status')).toBe('Not Registered');

    await web.post(`${GOOGLE}/register`, { code: redirect.href });
    expect(web.lastStatus).toBe(303);
    expect(field(await web.get(`${GOOGLE}/status`), 'token-status')).toBe('Active');
  });

  test('Google: where the browser sends the session over plain HTTP, the callback registers and sets no insecure cookie', async () => {
    await gw.postern.oauth.deleteToken('google', 'test');
    const web = new WebClient(gw.httpsUrl!, agent);
    await web.login();
    const cookie = web.cookieHeader;
    const register = await web.get(`${GOOGLE}/register`);
    const href = authorizationUrlOf(register);
    const redirect = await authorizeInBrowserlessAgent({ authorizationUrl: href, email: 'bob@example.test', password: 'correct horse', ca: pki.ca.cert });
    const callback = await fetch(redirect.href, { redirect: 'manual', headers: { cookie } });
    expect(callback.status).toBe(303);
    expect(callback.headers.get('location')).toBe(GOOGLE);
    for (const setCookie of callback.headers.getSetCookie()) expect(setCookie).toMatch(/;\s*Secure/i);
    expect(field(await web.get(`${GOOGLE}/status`), 'token-status')).toBe('Active');
    // Where the redirect leads next: to the same page over HTTPS.
    const next = await fetch(new URL(GOOGLE, gw.url), { redirect: 'manual' });
    expect(next.headers.get('location')).toBe(`https://127.0.0.1:${httpsPort}${GOOGLE}`);
  });

  test('a new relay certificate (Relay Settings) is the Remote UI\'s from the next connection on', async () => {
    const fresh = await gw.postern.relaySettings.generateCertificate(['localhost', '127.0.0.1']);
    expect(fresh.fingerprint256).not.toBe(fingerprintOf(ownCertificate));
    expect((await handshake(httpsPort, fresh.cert)).fingerprint256).toBe(fresh.fingerprint256);
  });

  test('Chromium: log in over HTTPS from the plain address and reach Settings/Registration', async () => {
    const browser = await launchBrowser(); // ignoreHTTPSErrors: the self-signed certificate is not trusted
    try {
      const page: Page = await browser.context.newPage();
      await page.goto(`${gw.url}/`);
      expect(new URL(page.url()).origin).toBe(`https://127.0.0.1:${httpsPort}`);
      await page.getByLabel('User Name').fill('admin');
      await page.getByLabel('Password').fill(ADMIN_PASSWORD);
      await page.getByRole('button', { name: 'Log In' }).click();
      await page.getByRole('link', { name: 'Settings/Registration' }).first().click();
      await expect.poll(() => page.locator('h1').textContent()).toBe('Settings/Registration');
      expect(page.url()).toBe(`https://127.0.0.1:${httpsPort}/settings`);
      const session = (await browser.context.cookies()).find((cookie) => cookie.name === 'postern_session');
      expect(session).toMatchObject({ secure: true, httpOnly: true, sameSite: 'Lax' });
    } finally {
      await browser.close();
    }
  });
});

describe('HTTPS with the administrator\'s certificate files', () => {
  let pki: TestPki;
  let gw: TestPostern;
  let agent: Agent;

  beforeAll(async () => {
    pki = await createTestPki('Postern HTTPS Test CA');
    // The files as an administrator gives them, through the configuration check of start-up.
    const https = loadConfig({ POSTERN_HTTPS_PORT: '0', POSTERN_HTTP_PORT: '0', POSTERN_HTTPS_CERT: `${pki.dir}/server.pem`, POSTERN_HTTPS_KEY: `${pki.dir}/server.key` }).https;
    gw = await startTestPostern({ config: { https } });
    agent = new Agent({ connect: { ca: pki.ca.cert } });
  });

  afterAll(async () => {
    await gw?.close();
    await agent?.close();
  });

  test('that certificate is served, trusted through its CA, and the relay keeps its own', async () => {
    const shown = await handshake(gw.postern.httpsPort!, pki.ca.cert);
    expect(shown.fingerprint256).toBe(fingerprintOf(pki.server.cert));
    const relay = (await gw.postern.relaySettings.certificate())!;
    expect(relay.fingerprint256).not.toBe(shown.fingerprint256);
    const login = await undiciFetch(`${gw.httpsUrl}/login`, { dispatcher: agent });
    expect(login.status).toBe(200);
    expect(await login.text()).toContain('Log In');
    const line = gw.logs().split('\n').find((l) => l.includes('Remote UI listening over HTTPS'))!;
    expect(JSON.parse(line).certificate).toBe(`${pki.dir}/server.pem`);
  });

  test('the Google callback is still served on plain HTTP', async () => {
    const response = await fetch(`${gw.url}/oauth2/google/callback?state=s&code=c`, { redirect: 'manual' });
    expect(response.status).toBe(200);
    const html = (await response.text()).replace(/&amp;/g, '&');
    expect(html).toContain(`http://127.0.0.1:${gw.postern.httpPort}/oauth2/google/callback?state=s&code=c`);
  });
});
