/**
 * Outbound HTTP proxy for the OAuth HTTP requests, against a real CONNECT proxy (the `proxy` package) in
 * front of the HTTPS Microsoft stand-in: the connection check and the device grant go through the tunnel,
 * the TLS options still decide inside it, a refusing or unreachable proxy is named in the reason, the
 * proxy's credentials never reach the logs, and NO_PROXY sends a host around the proxy.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadConfig } from '../src/config.js';
import { startTestProxy, unusedAddress, type TestProxy } from './support/http-proxy.js';
import { startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { LOG } from './support/events.js';
import { field, startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { approveDeviceCode } from './support/user-agent.js';

const BASE = '/settings/send/oauth-microsoft';
const PROXY_USER = 'postern-proxy-user';
const PROXY_PASSWORD = 'Pr0xy-p@ss:word!';

let pki: TestPki;
let ms: MicrosoftStandin;
const cleanups: Array<() => Promise<void>> = [];

interface Gateway {
  gw: TestPostern;
  web: WebClient;
}

/** Postern configured from these environment variables, as start-up would read them. */
async function startGateway(env: Record<string, string>): Promise<Gateway> {
  const gw = await startTestPostern({ caPems: [pki.ca.cert], config: { outboundProxy: loadConfig(env).outboundProxy } });
  cleanups.push(() => gw.close());
  const web = new WebClient(gw.url);
  await web.login();
  return { gw, web };
}

async function saveMicrosoftSettings(
  { gw, web }: Gateway,
  standin: MicrosoftStandin,
  tls: { verify: boolean; addCn: boolean } = { verify: true, addCn: true },
): Promise<{ status?: string; detail?: string; html: string }> {
  await web.get(`${BASE}/edit`);
  // Another stand-in is another endpoint: saving it discards the authorization of the one before, which the
  // page asks about first; these tests mean it.
  const form: Record<string, string> = { enabled: 'on', endpoint: standin.endpoint('organizations'), clientId: standin.publicClientId, confirmDiscard: '1' };
  if (tls.verify) form.verifyServerCertificate = 'on';
  if (tls.addCn) form.addCnToVerificationItems = 'on';
  await web.post(`${BASE}/edit`, form);
  expect(web.lastStatus).toBe(303);
  await gw.postern.oauth.whenIdle('microsoft');
  const html = await web.get(`${BASE}/status`);
  return { status: field(html, 'connection-status'), detail: field(html, 'connection-detail'), html };
}

function hostOf(standin: MicrosoftStandin): string {
  return new URL(standin.origin).host;
}

beforeAll(async () => {
  pki = await createTestPki();
  ms = await startMicrosoftStandin({ pki, interval: 1 });
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await ms?.close();
});

describe('through an open proxy', () => {
  let proxy: TestProxy;
  let gateway: Gateway;

  beforeAll(async () => {
    proxy = await startTestProxy();
    cleanups.push(() => proxy.close());
    gateway = await startGateway({ POSTERN_HTTPS_PROXY: proxy.url() });
  });

  test('the connection check and the whole device grant go through the proxy, to Active', async () => {
    const { status, html } = await saveMicrosoftSettings(gateway, ms);
    expect(status).toBe('Successfully Connected');
    expect(proxy.connects.map((c) => c.target)).toContain(hostOf(ms));

    // saveMicrosoftSettings waited for the background work that requested the user code.
    const userCode = field(await gateway.web.get(`${BASE}/status`), 'user-code')?.match(/^[A-Z0-9-]{6,}$/)?.[0];
    if (!userCode) throw new Error('no user code on the status page');
    expect(field(html, 'token-status')).toBe('Waiting for Authorization');
    const mark = gateway.gw.log.mark();
    await approveDeviceCode({ verificationUri: ms.verificationUri, userCode, email: 'alice@example.test', password: 'correct horse', ca: pki.ca.cert });
    await gateway.gw.log.waitFor(LOG.authorized, { from: mark });
    expect(field(await gateway.web.get(`${BASE}/status`), 'token-status')).toBe('Active');
    expect((await gateway.gw.postern.tokens.getAccessToken('microsoft')).mailbox).toBe('alice@example.test');

    // Every CONNECT went to the stand-in, and nothing reached it directly from Postern: a refresh also tunnels.
    expect(new Set(proxy.connects.map((c) => c.target))).toEqual(new Set([hostOf(ms)]));
    const before = ms.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;
    await gateway.gw.postern.tokens.refresh('microsoft');
    expect(ms.tokenRequests.filter((r) => r.grantType === 'refresh_token').length).toBe(before + 1);

    // The start-up log names the proxy as scheme://host:port.
    expect(gateway.gw.logs()).toContain(`"proxy":"http://${proxy.address}"`);
  });

  test('the TLS options still apply inside the tunnel: an untrusted CA with Verify on fails as certificate not trusted', async () => {
    const untrusted = await startMicrosoftStandin({ pki: await createTestPki('Unknown CA') });
    cleanups.push(() => untrusted.close());
    const result = await saveMicrosoftSettings(gateway, untrusted);
    expect(result.status).toBe('Connection Failed');
    expect(result.detail).toMatch(/The server certificate of 127\.0\.0\.1:\d+ is not trusted/);
    expect(result.detail).toMatch(/CA Certificate Settings/);
    expect(proxy.connects.map((c) => c.target)).toContain(hostOf(untrusted));
    expect(untrusted.deviceCodeRequests.length).toBe(0);

    // Verify off: encrypted but unverified, through the same proxy.
    const unverified = await saveMicrosoftSettings(gateway, untrusted, { verify: false, addCn: false });
    expect(unverified.status).toBe('Successfully Connected');
  });

  test('Add CN to Verification Items is checked against the authorization server, not the proxy', async () => {
    const wrongName = await startMicrosoftStandin({ pki: { ...pki, server: await pki.ca.issue(['wrong-host.example']) } });
    cleanups.push(() => wrongName.close());
    const result = await saveMicrosoftSettings(gateway, wrongName);
    expect(result.status).toBe('Connection Failed');
    expect(result.detail).toMatch(/does not match the host name 127\.0\.0\.1/);
    expect(proxy.connects.map((c) => c.target)).toContain(hostOf(wrongName));
    expect((await saveMicrosoftSettings(gateway, wrongName, { verify: true, addCn: false })).status).toBe('Successfully Connected');
  });
});

describe('a proxy that requires authentication', () => {
  let proxy: TestProxy;

  beforeAll(async () => {
    proxy = await startTestProxy({ credentials: { user: PROXY_USER, password: PROXY_PASSWORD } });
    cleanups.push(() => proxy.close());
  });

  test('without credentials: Connection Failed naming the proxy and 407; a token refresh becomes Error with the same reason', async () => {
    const gateway = await startGateway({ POSTERN_HTTPS_PROXY: proxy.url() });
    const deviceCodes = ms.deviceCodeRequests.length;
    const result = await saveMicrosoftSettings(gateway, ms);
    expect(result.status).toBe('Connection Failed');
    expect(result.detail).toContain(`The proxy at ${proxy.address} refused the connection: 407 Proxy Authentication Required`);
    expect(result.detail).toContain(`POSTERN_HTTPS_PROXY as http://user:password@${proxy.address}`);
    expect(ms.deviceCodeRequests.length).toBe(deviceCodes);

    // A stored authorization whose refresh has to pass the same proxy: Token Status Error, the proxy named.
    const now = Date.now();
    await gateway.gw.postern.accounts.transition('microsoft', 'Active', {
      tokens: { accessToken: 'stale-access-token', refreshToken: 'refresh-token-that-never-leaves', expiresAt: now - 1000, scope: undefined, mailbox: 'alice@example.test', displayName: undefined },
      keepRefreshToken: false,
      at: now,
    });
    const refreshes = ms.tokenRequests.length;
    await expect(gateway.gw.postern.tokens.refresh('microsoft')).rejects.toMatchObject({ status: 'Error', message: expect.stringContaining('407 Proxy Authentication Required') });
    const html = await gateway.web.get(`${BASE}/status`);
    expect(field(html, 'token-status')).toBe('Error');
    expect(field(html, 'token-error')).toContain(`The proxy at ${proxy.address} refused the connection: 407 Proxy Authentication Required`);
    expect(ms.tokenRequests.length).toBe(refreshes);
  });

  test('with a wrong password: Connection Failed naming 407, and the password is not logged', async () => {
    const wrong = 'wrong-proxy-password-xyz';
    const gateway = await startGateway({ HTTPS_PROXY: proxy.url({ user: PROXY_USER, password: wrong }) });
    const result = await saveMicrosoftSettings(gateway, ms);
    expect(result.status).toBe('Connection Failed');
    expect(result.detail).toContain(`The proxy at ${proxy.address} refused the connection: 407 Proxy Authentication Required`);
    expect(result.detail).toContain('did not accept the user name and password in HTTPS_PROXY');
    expect(proxy.connects.at(-1)).toEqual({ target: hostOf(ms), withCredentials: true });
    expect(gateway.gw.logs()).not.toContain(wrong);
    expect(result.html).not.toContain(wrong);
  });

  test('with the right credentials: Successfully Connected and a user code; the credentials appear in no log line', async () => {
    const gateway = await startGateway({ POSTERN_HTTPS_PROXY: proxy.url({ user: PROXY_USER, password: PROXY_PASSWORD }) });
    const deviceCodes = ms.deviceCodeRequests.length;
    const result = await saveMicrosoftSettings(gateway, ms);
    expect(result.status).toBe('Successfully Connected');
    expect(ms.deviceCodeRequests.length).toBe(deviceCodes + 1);
    expect(proxy.connects.at(-1)).toEqual({ target: hostOf(ms), withCredentials: true });

    const logs = gateway.gw.logs();
    expect(logs).toContain(`"proxy":"http://${proxy.address}"`);
    expect(logs).toContain('"credentials":"[redacted]"');
    for (const secret of [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD), Buffer.from(`${PROXY_USER}:${PROXY_PASSWORD}`).toString('base64')]) {
      expect(logs).not.toContain(secret);
      expect(result.html).not.toContain(secret);
    }
  });
});

describe('an https:// proxy', () => {
  // First in this file to open TLS to a proxy: Node prints each deprecation once per process.
  test('a proxy given by IP address is not named in SNI (no DEP0123 DeprecationWarning on stderr)', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const proxy = await startTestProxy({ tls: { key: pki.server.key, cert: pki.server.cert } });
      cleanups.push(() => proxy.close());
      expect(proxy.address).toMatch(/^127\.0\.0\.1:/);
      const result = await saveMicrosoftSettings(await startGateway({ POSTERN_HTTPS_PROXY: proxy.url() }), ms);
      expect(result.status).toBe('Successfully Connected');
      expect(proxy.connects.map((c) => c.target)).toContain(hostOf(ms));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.map((warning) => `${warning.name}: ${warning.message}`)).toEqual([]);
  });

  test('its certificate is verified against the trusted CAs, and the tunnelled TLS still follows the account', async () => {
    const proxy = await startTestProxy({ tls: { key: pki.server.key, cert: pki.server.cert } });
    cleanups.push(() => proxy.close());
    const gateway = await startGateway({ POSTERN_HTTPS_PROXY: proxy.url() });
    const result = await saveMicrosoftSettings(gateway, ms);
    expect(result.status).toBe('Successfully Connected');
    expect(new Set(proxy.connects.map((c) => c.target))).toEqual(new Set([hostOf(ms)]));
  });

  test('a proxy certificate from an unknown CA: could not reach the proxy, certificate not trusted', async () => {
    const unknown = await createTestPki('Unknown proxy CA');
    const proxy = await startTestProxy({ tls: { key: unknown.server.key, cert: unknown.server.cert } });
    cleanups.push(() => proxy.close());
    const gateway = await startGateway({ POSTERN_HTTPS_PROXY: proxy.url() });
    const result = await saveMicrosoftSettings(gateway, ms);
    expect(result.status).toBe('Connection Failed');
    expect(result.detail).toContain(`Could not reach the proxy at ${proxy.address} (its certificate is not trusted`);
    expect(proxy.connects).toEqual([]);
  });
});

test('an unreachable proxy: Connection Failed, could not reach the proxy at host:port', async () => {
  const address = await unusedAddress();
  const gateway = await startGateway({ POSTERN_HTTPS_PROXY: `http://${address}` });
  const result = await saveMicrosoftSettings(gateway, ms);
  expect(result.status).toBe('Connection Failed');
  expect(result.detail).toContain(`Could not reach the proxy at ${address} (connection refused)`);
  expect(result.detail).toContain('POSTERN_HTTPS_PROXY');
});

test('NO_PROXY matching the host: a direct connection, the proxy sees nothing', async () => {
  const proxy = await startTestProxy();
  cleanups.push(() => proxy.close());
  const gateway = await startGateway({ HTTPS_PROXY: proxy.url(), NO_PROXY: 'example.com, 127.0.0.1' });
  const result = await saveMicrosoftSettings(gateway, ms);
  expect(result.status).toBe('Successfully Connected');
  expect(proxy.connects).toEqual([]);
});
