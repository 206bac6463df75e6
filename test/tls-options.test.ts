/**
 * The seed's TLS options against real TLS servers: Verify Server Certificate and Add CN to Verification
 * Items decide the Server Connection Status, and registered CA certificates extend the trust.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { field, startTestPostern, WebClient, type TestPostern } from './support/postern.js';

const BASE = '/settings/send/oauth-microsoft';

let trustedPki: TestPki;
let untrusted: MicrosoftStandin;
let wrongName: MicrosoftStandin;
let gw: TestPostern;
let web: WebClient;

async function connect(standin: MicrosoftStandin, verify: boolean, addCn: boolean): Promise<{ status?: string; detail?: string }> {
  await web.get(`${BASE}/edit`);
  const form: Record<string, string> = { enabled: 'on', endpoint: standin.endpoint('common'), clientId: standin.publicClientId };
  if (verify) form.verifyServerCertificate = 'on';
  if (addCn) form.addCnToVerificationItems = 'on';
  await web.post(`${BASE}/edit`, form);
  expect(web.lastStatus).toBe(303);
  await gw.postern.oauth.whenIdle('microsoft');
  const html = await web.get(`${BASE}/status`);
  return { status: field(html, 'connection-status'), detail: field(html, 'connection-detail') };
}

beforeAll(async () => {
  // A stand-in whose CA Postern does not know.
  untrusted = await startMicrosoftStandin({ pki: await createTestPki('Unknown CA') });
  // A stand-in with a certificate from a trusted CA, but for another host name.
  trustedPki = await createTestPki('Registered CA');
  const wrongNamePki: TestPki = { ...trustedPki, server: await trustedPki.ca.issue(['wrong-host.example']) };
  wrongName = await startMicrosoftStandin({ pki: wrongNamePki });
  gw = await startTestPostern({ caPems: [trustedPki.ca.cert] });
  web = new WebClient(gw.url);
  await web.login();
});

afterAll(async () => {
  await gw?.close();
  await untrusted?.close();
  await wrongName?.close();
});

describe('Server Connection Status under the TLS options', () => {
  test('untrusted CA with Verify Server Certificate on: Connection Failed, certificate not trusted', async () => {
    const result = await connect(untrusted, true, true);
    expect(result.status).toBe('Connection Failed');
    expect(result.detail).toMatch(/not trusted/);
    expect(result.detail).toMatch(/CA Certificate Settings/);
    // No device authorization was attempted over an unverified connection.
    expect(untrusted.deviceCodeRequests.length).toBe(0);
  });

  test('wrong host name with Add CN to Verification Items on: Connection Failed, name mismatch', async () => {
    const result = await connect(wrongName, true, true);
    expect(result.status).toBe('Connection Failed');
    expect(result.detail).toMatch(/does not match the host name 127\.0\.0\.1/);
  });

  test('wrong host name with Add CN to Verification Items off: Successfully Connected', async () => {
    const result = await connect(wrongName, true, false);
    expect(result.status).toBe('Successfully Connected');
    expect(wrongName.deviceCodeRequests.length).toBe(1);
    const html = await web.get(`${BASE}/status`);
    expect(html).toContain('Add CN to Verification Items is off');
  });

  test('Verify Server Certificate off: Successfully Connected even to an untrusted server, with a warning', async () => {
    const result = await connect(untrusted, false, true);
    expect(result.status).toBe('Successfully Connected');
    const html = await web.get(`${BASE}/status`);
    expect(html).toContain('Verify Server Certificate is off');
    // Add CN is meaningless without Verify, and is stored off.
    expect((await gw.postern.accounts.get('microsoft'))?.add_cn_to_verification_items).toBe(0);
  });

  test('registering the CA in CA Certificate Settings makes the untrusted server trusted', async () => {
    expect((await connect(untrusted, true, true)).status).toBe('Connection Failed');
    await web.get('/settings/send/ca-certificates');
    await web.post('/settings/send/ca-certificates/add', { pem: untrusted.ca });
    expect(web.lastStatus).toBe(303);
    await gw.postern.oauth.whenIdle('microsoft');
    const html = await web.get(`${BASE}/status`);
    expect(field(html, 'connection-status')).toBe('Successfully Connected');
  });

  test('a closed port and an unresolvable host are told apart', async () => {
    const { checkConnection } = await import('../src/oauth/connection-check.js');
    const { OAuthHttp } = await import('../src/oauth/http.js');
    const { TrustStore } = await import('../src/tls/trust.js');
    const http = new OAuthHttp(new TrustStore({ pems: async () => [] }));
    const f = await http.fetchFor({ verifyServerCertificate: true, addCnToVerificationItems: true });
    const { createServer } = await import('node:net');
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const closedPort = (probe.address() as { port: number }).port;
    await new Promise((resolve) => probe.close(resolve));
    const refused = await checkConnection(`https://127.0.0.1:${closedPort}/common/oauth2/v2.0`, f);
    expect(refused).toMatchObject({ status: 'ConnectionFailed', kind: 'refused' });
    const dns = await checkConnection('https://no-such-host.invalid/common/oauth2/v2.0', f);
    expect(dns).toMatchObject({ status: 'ConnectionFailed', kind: 'dns' });
    await http.close();
  });

  test('a CA file that is not a certificate is refused with a clear message', async () => {
    await web.get('/settings/send/ca-certificates');
    const html = await web.post('/settings/send/ca-certificates/add', { pem: 'hello' });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('No PEM certificate found');
    const leaf = await trustedPki.ca.issue(['leaf.example']);
    const html2 = await web.post('/settings/send/ca-certificates/add', { pem: leaf.cert });
    expect(web.lastStatus).toBe(400);
    expect(html2).toContain('is not a CA certificate');
  });
});
