/**
 * Authorization Type through the Remote UI: an added Microsoft account switched to client credentials with a
 * Client Secret becomes Active; Generate Certificate shows the certificate and its download is the stored PEM;
 * the seed's pages show the type with a Change link; hostile input is refused (400/403/404), never a 500.
 */
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GMAIL_SCOPE, startGoogleStandin, type GoogleStandin } from './support/oauth-standins.js';
import { field, type WebClient } from './support/postern.js';
import { startSendingStack, type SendingStack } from './support/sending.js';

const CAROL = 'carol@example.test';
const UNKNOWN = 'microsoft-0123456789';

let stack: SendingStack;
let web: WebClient;
let appId: string;
let google: GoogleStandin;

const csrfOf = (html: string) => /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
const row = async (id: string) => (await stack.gw.postern.store.db.selectFrom('oauth_accounts').selectAll().where('id', '=', id).executeTakeFirst())!;

function appEndpoint(): { endpoint: string; tenantId: string } {
  const endpoint = stack.microsoft.appOnly.tokenEndpoint().replace(/\/token$/, '');
  return { endpoint, tenantId: new URL(endpoint).pathname.split('/')[1]! };
}

beforeAll(async () => {
  stack = await startSendingStack({ enforceSendAs: true });
  web = stack.web;
  google = await startGoogleStandin({ pki: stack.pki });
  await web.get('/settings/send/accounts/new');
  await web.post('/settings/send/accounts/new', { provider: 'microsoft', name: 'Scanners (app)' });
  appId = /(microsoft-[0-9a-f]{10})/.exec(web.lastLocation ?? '')![1]!;
  const postern = stack.gw.postern;
  await postern.emailSettings.save({ ...(await postern.emailSettings.get(appId)), smtpHost: '127.0.0.1', smtpPort: stack.upstream.port }, { makeDefault: false });
});

afterAll(async () => {
  await stack?.close();
  await google?.close();
});

describe('Authorization Type', () => {
  it('the seed\'s pages show the type and a Change link', async () => {
    const microsoft = await web.get('/settings/send/oauth-microsoft');
    expect(field(microsoft, 'authorization-type')).toBe('Delegated (Device Code)');
    expect(microsoft).toContain('href="/settings/send/accounts/microsoft/authorization"');
    const google = await web.get('/settings/send/oauth-google');
    expect(field(google, 'authorization-type')).toBe('User (Authorization Code)');
    const form = await web.get('/settings/send/accounts/google/authorization');
    expect(web.lastStatus).toBe(200);
    expect(form).toContain('Service Account (Domain-Wide Delegation)');
    expect(form).toContain('name="keyJson"');
    expect(form).toContain('Manage Domain Wide Delegation');
  });

  it('an added Microsoft account switched to client credentials with a secret is Active', async () => {
    const form = await web.get(`/settings/send/accounts/${appId}/authorization`);
    expect(web.lastStatus).toBe(200);
    expect(form).toContain('Application (Client Credentials)');
    expect(form).toContain('New-ServicePrincipal');
    stack.upstream.grantAppMailbox(stack.microsoft.appOnly.secretClientId, CAROL);
    // A missing secret is refused beside its field.
    const refused = await web.post(`/settings/send/accounts/${appId}/authorization`, {
      authorizationType: 'client-credentials', ...appEndpoint(), clientId: stack.microsoft.appOnly.secretClientId, credential: 'secret', clientSecret: '', mailbox: CAROL, enabled: 'on', verifyServerCertificate: 'on',
    });
    expect(web.lastStatus).toBe(400);
    expect(refused).toContain('id="clientSecret-error"');
    await web.post(`/settings/send/accounts/${appId}/authorization`, {
      authorizationType: 'client-credentials', ...appEndpoint(), clientId: stack.microsoft.appOnly.secretClientId, credential: 'secret', clientSecret: stack.microsoft.appOnly.clientSecret, mailbox: CAROL, enabled: 'on', verifyServerCertificate: 'on', addCnToVerificationItems: 'on',
    });
    expect(web.lastStatus, web.lastLocation).toBe(303);
    expect(web.lastLocation).toBe(`/settings/send/oauth-microsoft/${appId}`);
    await stack.gw.postern.oauth.whenIdle(appId);
    const page = await web.get(`/settings/send/oauth-microsoft/${appId}`);
    expect(field(page, 'authorization-type')).toBe('Application (Client Credentials)');
    expect(field(await web.get(`/settings/send/oauth-microsoft/${appId}/status`), 'token-status')).toBe('Active');
    expect(stack.gw.logs()).not.toContain(stack.microsoft.appOnly.clientSecret);
    // Get Token asks again; the account stays Active.
    await web.get(`/settings/send/accounts/${appId}/authorization`);
    await web.post(`/settings/send/accounts/${appId}/token`);
    expect(web.lastStatus).toBe(303);
    await stack.gw.postern.oauth.whenIdle(appId);
    expect(field(await web.get(`/settings/send/oauth-microsoft/${appId}/status`), 'token-status')).toBe('Active');
  });

  it('Generate Certificate shows the PEM and thumbprint; the download is the stored certificate', async () => {
    await web.get(`/settings/send/accounts/${appId}/authorization`);
    const html = await web.post(`/settings/send/accounts/${appId}/certificate`);
    expect(web.lastStatus).toBe(200);
    const thumbprint = field(html, 'certificate-thumbprint')!;
    expect(thumbprint).toMatch(/^[0-9A-Fa-f:]{40,}$/);
    expect(html).toContain('-----BEGIN CERTIFICATE-----');
    const response = await fetch(new URL(`/settings/send/accounts/${appId}/certificate.pem`, stack.gw.url), { headers: { cookie: web.cookieHeader } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/x-pem-file/);
    const pem = await response.text();
    expect(pem).toBe((await row(appId)).client_certificate);
    expect(new X509Certificate(pem).fingerprint.replace(/:/g, '').toLowerCase()).toBe(thumbprint.replace(/:/g, '').toLowerCase());
    // The seed's account has none yet.
    const none = await fetch(new URL('/settings/send/accounts/microsoft/certificate.pem', stack.gw.url), { headers: { cookie: web.cookieHeader } });
    expect(none.status).toBe(404);
  });

  it('Certificate: the generated certificate, once uploaded to the app registration, gets a token', async () => {
    const clientId = stack.microsoft.appOnly.certificateClientId;
    const response = await fetch(new URL(`/settings/send/accounts/${appId}/certificate.pem`, stack.gw.url), { headers: { cookie: web.cookieHeader } });
    stack.microsoft.appOnly.registerAppCertificate(clientId, await response.text());
    stack.upstream.grantAppMailbox(clientId, CAROL);
    await web.get(`/settings/send/accounts/${appId}/authorization`);
    await web.post(`/settings/send/accounts/${appId}/authorization`, {
      authorizationType: 'client-credentials', tenantId: appEndpoint().tenantId, endpoint: '', clientId, credential: 'certificate', clientSecret: '', mailbox: CAROL, enabled: 'on', verifyServerCertificate: 'on', addCnToVerificationItems: 'on',
    });
    expect(web.lastStatus).toBe(303);
    await stack.gw.postern.oauth.whenIdle(appId);
    expect(field(await web.get(`/settings/send/oauth-microsoft/${appId}/status`), 'token-status')).toBe('Active');
    expect(await row(appId)).toMatchObject({ client_secret_enc: null, client_id: clientId });
    const form = await web.get(`/settings/send/accounts/${appId}/authorization`);
    expect(form).toMatch(/id="credential-certificate"[^>]*checked/);
    expect(form).toContain(`value="${appEndpoint().tenantId}"`);
  });

  it('a Google account switched to a service account with a pasted JSON key gets a token with Get Token', async () => {
    const id = (await stack.gw.postern.accounts.add('google', 'Workspace robot')).id;
    const keyJson = google.serviceAccounts.createServiceAccount('postern-web');
    const key = JSON.parse(keyJson) as { client_id: string };
    google.serviceAccounts.authorizeDelegation(key.client_id, [GMAIL_SCOPE]);
    await web.get(`/settings/send/accounts/${id}/authorization`);
    await web.post(`/settings/send/accounts/${id}/authorization`, { authorizationType: 'service-account', keyJson, mailbox: 'bob@example.test', verifyServerCertificate: 'on' });
    expect(web.lastStatus).toBe(303);
    const page = await web.get(`/settings/send/oauth-google/${id}`);
    expect(field(page, 'authorization-type')).toBe('Service Account (Domain-Wide Delegation)');
    const form = await web.get(`/settings/send/accounts/${id}/authorization`);
    expect(form).toContain(key.client_id);
    expect(form).not.toContain('PRIVATE KEY');
    await web.post(`/settings/send/accounts/${id}/token`);
    expect(web.lastStatus).toBe(303);
    await stack.gw.postern.oauth.whenIdle(id);
    expect(field(await web.get(`/settings/send/oauth-google/${id}/status`), 'token-status')).toBe('Active');
    // Empty keeps the stored key.
    await web.post(`/settings/send/accounts/${id}/authorization`, { authorizationType: 'service-account', keyJson: '', mailbox: 'bob@example.test' });
    expect(web.lastStatus).toBe(303);
    expect((await row(id)).service_account_key_enc).not.toBeNull();
  });

  it('back to Delegated forgets the application\'s credentials', async () => {
    const id = (await stack.gw.postern.accounts.add('microsoft', 'Back again')).id;
    await web.get(`/settings/send/accounts/${id}/authorization`);
    await web.post(`/settings/send/accounts/${id}/authorization`, {
      authorizationType: 'client-credentials', ...appEndpoint(), clientId: stack.microsoft.appOnly.secretClientId, credential: 'secret', clientSecret: stack.microsoft.appOnly.clientSecret, mailbox: CAROL,
    });
    expect(web.lastStatus).toBe(303);
    expect((await row(id)).authorization_type).toBe('client-credentials');
    await web.get(`/settings/send/accounts/${id}/authorization`);
    await web.post(`/settings/send/accounts/${id}/authorization`, { authorizationType: 'delegated' });
    expect(web.lastStatus).toBe(303);
    expect(await row(id)).toMatchObject({ authorization_type: 'delegated', client_secret_enc: null, app_mailbox: null });
  });

  it('hostile input is refused, never with a 500', async () => {
    const path = `/settings/send/accounts/${appId}/authorization`;
    const csrf = csrfOf(await web.get(path));
    const base = { authorizationType: 'client-credentials', ...appEndpoint(), clientId: stack.microsoft.appOnly.secretClientId, credential: 'secret', clientSecret: '', mailbox: CAROL };
    const hostile: Record<string, string>[] = [
      { ...base, authorizationType: 'service-account' },
      { ...base, authorizationType: 'delegated\r\nX-Evil: 1' },
      { ...base, tenantId: 'contoso\x00.onmicrosoft.com' },
      { ...base, tenantId: 'common' },
      { ...base, clientId: 'x'.repeat(100 * 1024) },
      { ...base, clientSecret: 'a\x1bb' },
      { ...base, mailbox: 'carol@example.test\r\nBcc: eve@evil.test' },
      { ...base, mailbox: 'x'.repeat(100 * 1024) },
      { ...base, endpoint: 'javascript:alert(1)' },
      { ...base, endpoint: 'http://login.microsoftonline.com/x/oauth2/v2.0' },
      { ...base, credential: 'passkey' },
      { ...base, credential: 'certificate', keyJson: 'x'.repeat(100 * 1024) },
      { ...base, enabled: 'yes' },
    ];
    const statuses = await Promise.all(
      hostile.map(async (fields) => {
        const response = await fetch(new URL(path, stack.gw.url), {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: web.cookieHeader },
          body: new URLSearchParams({ _csrf: csrf, ...fields }),
          redirect: 'manual',
        });
        await response.text();
        return response.status;
      }),
    );
    expect(statuses).toEqual(hostile.map(() => 400));
    // A Google account refuses a key that is not one, beside the field.
    const googleCsrf = csrfOf(await web.get('/settings/send/accounts/google/authorization'));
    for (const keyJson of ['{', '{"type":"service_account"}', '\x00\x01', 'x'.repeat(70 * 1024)]) {
      const response = await fetch(new URL('/settings/send/accounts/google/authorization', stack.gw.url), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: web.cookieHeader },
        body: new URLSearchParams({ _csrf: googleCsrf, authorizationType: 'service-account', keyJson, mailbox: CAROL }),
        redirect: 'manual',
      });
      await response.text();
      expect(response.status, keyJson.slice(0, 20)).toBe(400);
    }
    expect((await row('google')).authorization_type).toBe('delegated');
    // Unknown accounts are Not Found; malformed ids are refused.
    for (const target of [`/settings/send/accounts/${UNKNOWN}/authorization`, `/settings/send/accounts/${UNKNOWN}/certificate.pem`, '/settings/send/accounts/google/certificate.pem']) {
      await web.get(target);
      expect(web.lastStatus, target).toBe(404);
    }
    await web.get('/settings/send/accounts/%0d%0a/authorization');
    expect([400, 404]).toContain(web.lastStatus);
    await web.get(path);
    await web.post(`/settings/send/accounts/${UNKNOWN}/authorization`, { authorizationType: 'delegated' });
    expect(web.lastStatus).toBe(404);
    await web.post(`/settings/send/accounts/${UNKNOWN}/token`);
    expect(web.lastStatus).toBe(404);
    await web.post('/settings/send/accounts/google/certificate');
    expect(web.lastStatus).toBe(404);
    // Without the CSRF token nothing is saved.
    for (const target of [path, `/settings/send/accounts/${appId}/certificate`, `/settings/send/accounts/${appId}/token`]) {
      await web.post(target, { _csrf: '', authorizationType: 'delegated' });
      expect(web.lastStatus, target).toBe(403);
    }
    expect((await row(appId)).authorization_type).toBe('client-credentials');
    expect(stack.gw.logs()).not.toContain('unexpected error in the Remote UI');
  });
});
