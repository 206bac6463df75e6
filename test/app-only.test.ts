/**
 * App-only authorization end to end over real HTTPS and SMTP: Postern's client credentials grant (secret and
 * certificate) against the Microsoft stand-in and its service account grant against the Google stand-in, the
 * tokens then used for XOAUTH2 at the stand-in upstreams, and each refusal an administrator meets, with the
 * advice Postern gives for it.
 */
import { createTransport } from 'nodemailer';
import * as oauth from 'oauth4webapi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MICROSOFT_APP_ONLY_GRAPH_SCOPE,
  MICROSOFT_APP_ONLY_SMTP_SCOPE,
  clientCredentialsGrant,
  generateClientCertificate,
  parseServiceAccountKey,
  serviceAccountGrant,
  validateMicrosoftAppOnlyEndpoint,
  type AppOnlyClient,
} from '../src/oauth/app-only.js';
import type { TokenSet } from '../src/oauth/grants.js';
import { OAuthHttp, type HttpOptions } from '../src/oauth/http.js';
import { GOOGLE_MAIL_SCOPE } from '../src/oauth/profiles.js';
import { ProviderError } from '../src/oauth/provider-errors.js';
import { TrustStore } from '../src/tls/trust.js';
import { GMAIL_SCOPE, OUTLOOK_SMTP_SCOPE, startGoogleStandin, startMicrosoftStandin, type GoogleStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { createIntrospector, startUpstreamSmtp, type UpstreamSmtp } from './support/upstream-smtp.js';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';

let pki: TestPki;
let microsoft: MicrosoftStandin;
let google: GoogleStandin;
let exchange: UpstreamSmtp;
let gmail: UpstreamSmtp;
let oauthHttp: OAuthHttp;
let http: HttpOptions;

beforeAll(async () => {
  pki = await createTestPki();
  [microsoft, google] = await Promise.all([startMicrosoftStandin({ pki }), startGoogleStandin({ pki })]);
  [exchange, gmail] = await Promise.all([
    startUpstreamSmtp({ flavour: 'office365', pki, introspection: microsoft.introspection, requiredScope: OUTLOOK_SMTP_SCOPE }),
    startUpstreamSmtp({ flavour: 'gmail', pki, introspection: google.introspection, requiredScope: GMAIL_SCOPE }),
  ]);
  oauthHttp = new OAuthHttp(new TrustStore({ pems: async () => [pki.ca.cert] }));
  http = await oauthHttp.options({ verifyServerCertificate: true, addCnToVerificationItems: true });
});

afterAll(async () => {
  await Promise.all([exchange?.close(), gmail?.close()]);
  await Promise.all([microsoft?.close(), google?.close(), oauthHttp?.close()]);
});

/** Sends one message with XOAUTH2 `user=<user>` and the token; resolves with the upstream's answer or rejects with its refusal. */
async function sendWith(upstream: UpstreamSmtp, user: string, accessToken: string, subject: string): Promise<string> {
  const transport = createTransport({
    host: upstream.host,
    port: upstream.port,
    secure: upstream.flavour === 'gmail',
    requireTLS: upstream.flavour === 'office365',
    tls: { ca: pki.ca.cert },
    auth: { type: 'OAuth2', user, accessToken },
  });
  try {
    const info = await transport.sendMail({ from: user, to: 'carol@example.net', subject, text: `body of ${subject}` });
    return info.response;
  } finally {
    transport.close();
  }
}

async function refusal(promise: Promise<unknown>): Promise<ProviderError> {
  const error = await promise.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(ProviderError);
  return error as ProviderError;
}

const tokenEndpoint = (tenant?: string) => ({ tokenEndpoint: microsoft.appOnly.tokenEndpoint(tenant) });
const secretClient = (secret = microsoft.appOnly.clientSecret): AppOnlyClient => ({
  clientId: microsoft.appOnly.secretClientId,
  credential: { kind: 'secret', secret },
});

describe('Microsoft client credentials with a client secret', () => {
  it('gets an app-only token (no refresh token, no mailbox) that sends as a granted mailbox', async () => {
    const tokens = await clientCredentialsGrant(tokenEndpoint(), secretClient(), MICROSOFT_APP_ONLY_SMTP_SCOPE, http);
    expect(tokens).toMatchObject({ refreshToken: undefined, mailbox: undefined, scope: 'SMTP.SendAsApp' });
    expect(tokens.expiresAt).toBeGreaterThan(Date.now() + 30 * 60_000);
    const request = microsoft.tokenRequests.at(-1)!;
    expect(request).toMatchObject({ grantType: 'client_credentials', scope: MICROSOFT_APP_ONLY_SMTP_SCOPE, status: 200, clientId: microsoft.appOnly.secretClientId });

    // The resource server sees the application, its role and no user.
    const introspector = createIntrospector({ ...microsoft.introspection, ca: pki.ca.cert });
    const info = await introspector.introspect(tokens.accessToken).finally(() => introspector.close());
    expect(info).toMatchObject({ active: true, client_id: microsoft.appOnly.secretClientId, scope: 'SMTP.SendAsApp', aud: 'https://outlook.office365.com' });
    expect(info.sub).toBeUndefined();

    exchange.grantAppMailbox(microsoft.appOnly.secretClientId, ALICE);
    const subject = 'app-only secret';
    expect(await sendWith(exchange, ALICE, tokens.accessToken, subject)).toMatch(/^250 2\.0\.0 OK/);
    const message = await exchange.waitForMessage((m) => m.parsed?.subject === subject, subject);
    expect(message.authUser).toBe(ALICE);
  });

  it('a mailbox the application was not given is refused with 535 5.7.3, as Exchange refuses it', async () => {
    const tokens = await clientCredentialsGrant(tokenEndpoint(microsoft.tenantDomain), secretClient(), MICROSOFT_APP_ONLY_SMTP_SCOPE, http);
    await expect(sendWith(exchange, BOB, tokens.accessToken, 'not granted')).rejects.toMatchObject({ responseCode: 535, response: expect.stringContaining('5.7.3 Authentication unsuccessful') });
    expect(exchange.authAttempts.at(-1)).toMatchObject({ user: BOB, ok: false, reason: 'app-mailbox-not-granted' });
  });

  it('without admin consent the token carries no role and Exchange refuses it', async () => {
    microsoft.appOnly.setAdminConsent(microsoft.appOnly.secretClientId, false);
    try {
      const tokens = await clientCredentialsGrant(tokenEndpoint(), secretClient(), MICROSOFT_APP_ONLY_SMTP_SCOPE, http);
      expect(tokens.scope).toBeUndefined();
      await expect(sendWith(exchange, ALICE, tokens.accessToken, 'no consent')).rejects.toMatchObject({ responseCode: 535 });
      expect(exchange.authAttempts.at(-1)).toMatchObject({ ok: false, reason: 'app-role' });
    } finally {
      microsoft.appOnly.setAdminConsent(microsoft.appOnly.secretClientId, true);
    }
  });

  it('a Graph token is for Graph, and Exchange does not take it', async () => {
    const tokens = await clientCredentialsGrant(tokenEndpoint(), secretClient(), MICROSOFT_APP_ONLY_GRAPH_SCOPE, http);
    expect(tokens.scope).toBe('Mail.Send');
    await expect(sendWith(exchange, ALICE, tokens.accessToken, 'graph token')).rejects.toMatchObject({ responseCode: 535 });
    expect(exchange.authAttempts.at(-1)).toMatchObject({ ok: false, reason: 'audience' });
  });

  it('a wrong secret (the Secret ID pasted instead of the Value) is AADSTS7000215, with advice', async () => {
    const error = await refusal(clientCredentialsGrant(tokenEndpoint(), secretClient(microsoft.appOnly.clientSecretId), MICROSOFT_APP_ONLY_SMTP_SCOPE, http));
    expect(error).toMatchObject({ kind: 'definitive', error: 'invalid_client', httpStatus: 401 });
    expect(error.description).toContain('AADSTS7000215');
    expect(error.advice).toMatch(/Value.*not its Secret ID/);
  });

  it('an expired secret is AADSTS7000222, with advice to create a new one', async () => {
    microsoft.appOnly.expireClientSecret();
    try {
      const error = await refusal(clientCredentialsGrant(tokenEndpoint(), secretClient(), MICROSOFT_APP_ONLY_SMTP_SCOPE, http));
      expect(error.description).toContain('AADSTS7000222');
      expect(error.advice).toMatch(/expired.*new client secret/);
    } finally {
      microsoft.appOnly.expireClientSecret(false);
    }
  });

  it('an unknown application (wrong client ID or tenant) is AADSTS700016, with advice', async () => {
    const error = await refusal(
      clientCredentialsGrant(tokenEndpoint(), { clientId: '00000000-1111-2222-3333-444444444444', credential: { kind: 'secret', secret: 'x' } }, MICROSOFT_APP_ONLY_SMTP_SCOPE, http),
    );
    expect(error).toMatchObject({ error: 'unauthorized_client', kind: 'definitive' });
    expect(error.description).toContain('AADSTS700016');
    expect(error.advice).toMatch(/Application \(Client\) ID.*tenant/);
  });

  it('a tenant that does not exist is AADSTS90002, with advice', async () => {
    const error = await refusal(clientCredentialsGrant(tokenEndpoint('fabrikam.example'), secretClient(), MICROSOFT_APP_ONLY_SMTP_SCOPE, http));
    expect(error.description).toContain('AADSTS90002');
    expect(error.advice).toMatch(/Directory \(tenant\) ID/);
  });

  it('common is refused by the endpoint validation, and by Entra ID (AADSTS50059) if it gets there', async () => {
    const validation = validateMicrosoftAppOnlyEndpoint(microsoft.endpoint('common'));
    expect(validation).toMatchObject({ ok: false, error: expect.stringMatching(/cannot be used for app-only authorization/) });
    for (const alias of ['organizations', 'consumers', 'Common']) expect(validateMicrosoftAppOnlyEndpoint(microsoft.endpoint(alias)).ok).toBe(false);
    expect(validateMicrosoftAppOnlyEndpoint(microsoft.endpoint(microsoft.tenantId))).toMatchObject({ ok: true, value: { tokenEndpoint: microsoft.appOnly.tokenEndpoint() } });

    const error = await refusal(clientCredentialsGrant(tokenEndpoint('common'), secretClient(), MICROSOFT_APP_ONLY_SMTP_SCOPE, http));
    expect(error.description).toContain('AADSTS50059');
    expect(error.advice).toMatch(/replace common/);
  });

  it('a delegated scope instead of .default is AADSTS1002012, with advice', async () => {
    const error = await refusal(clientCredentialsGrant(tokenEndpoint(), secretClient(), 'https://outlook.office.com/SMTP.Send', http));
    expect(error).toMatchObject({ error: 'invalid_scope' });
    expect(error.description).toContain('AADSTS1002012');
    expect(error.advice).toContain('https://outlook.office365.com/.default');
  });

  it('a resource the tenant does not have is AADSTS500011, with advice', async () => {
    const error = await refusal(clientCredentialsGrant(tokenEndpoint(), secretClient(), 'https://unknown.example/.default', http));
    expect(error.description).toContain('AADSTS500011');
    expect(error.advice).toMatch(/Exchange Online/);
  });
});

describe('Microsoft client credentials with a certificate (private key JWT)', () => {
  const certificateClient = (credential: { privateKeyPem: string; certificatePem: string }): AppOnlyClient => ({
    clientId: microsoft.appOnly.certificateClientId,
    credential: { kind: 'certificate', ...credential },
  });

  it('a certificate that is not uploaded yet is AADSTS700027 naming its thumbprint; once uploaded, the token sends', async () => {
    const certificate = await generateClientCertificate('Postern app-only test');
    const error = await refusal(clientCredentialsGrant(tokenEndpoint(), certificateClient(certificate), MICROSOFT_APP_ONLY_SMTP_SCOPE, http));
    expect(error).toMatchObject({ error: 'invalid_client', kind: 'definitive' });
    expect(error.description).toContain('AADSTS700027');
    // The stand-in names the thumbprint as Entra does; Postern's scrubbing hides such long hex strings.
    expect(error.description).toMatch(/Thumbprint of key used by client/);
    expect(error.advice).toMatch(/Upload Postern's certificate/);

    microsoft.appOnly.registerAppCertificate(microsoft.appOnly.certificateClientId, certificate.certificatePem);
    const tokens: TokenSet = await clientCredentialsGrant(tokenEndpoint(microsoft.tenantDomain), certificateClient(certificate), MICROSOFT_APP_ONLY_SMTP_SCOPE, http);
    expect(tokens).toMatchObject({ refreshToken: undefined, mailbox: undefined, scope: 'SMTP.SendAsApp' });
    expect(microsoft.tokenRequests.at(-1)).toMatchObject({ grantType: 'client_credentials', status: 200, clientId: microsoft.appOnly.certificateClientId });

    exchange.grantAppMailbox(microsoft.appOnly.certificateClientId, BOB);
    const subject = 'app-only certificate';
    expect(await sendWith(exchange, BOB, tokens.accessToken, subject)).toMatch(/^250 /);
    expect((await exchange.waitForMessage((m) => m.parsed?.subject === subject, subject)).authUser).toBe(BOB);

    // Each token is a new assertion (a new jti): asking again works.
    await expect(clientCredentialsGrant(tokenEndpoint(), certificateClient(certificate), MICROSOFT_APP_ONLY_SMTP_SCOPE, http)).resolves.toMatchObject({ scope: 'SMTP.SendAsApp' });
  });

  it('a certificate that is registered on the app but signed by another key fails signature validation', async () => {
    const registered = await generateClientCertificate('registered');
    const other = await generateClientCertificate('other');
    microsoft.appOnly.registerAppCertificate(microsoft.appOnly.certificateClientId, registered.certificatePem);
    // A caller that pairs the wrong key with the certificate is stopped before anything is sent.
    const before = microsoft.tokenRequests.length;
    await expect(
      clientCredentialsGrant(tokenEndpoint(), certificateClient({ certificatePem: registered.certificatePem, privateKeyPem: other.privateKeyPem }), MICROSOFT_APP_ONLY_SMTP_SCOPE, http),
    ).rejects.toMatchObject({ code: 'POSTERN_OAUTH_CREDENTIAL_INVALID', message: expect.stringMatching(/does not belong/) });
    expect(microsoft.tokenRequests.length).toBe(before);
  });

  it('a removed certificate is refused again', async () => {
    const certificate = await generateClientCertificate('removed');
    microsoft.appOnly.registerAppCertificate(microsoft.appOnly.certificateClientId, certificate.certificatePem);
    await clientCredentialsGrant(tokenEndpoint(), certificateClient(certificate), MICROSOFT_APP_ONLY_SMTP_SCOPE, http);
    microsoft.appOnly.removeAppCertificates(microsoft.appOnly.certificateClientId);
    const error = await refusal(clientCredentialsGrant(tokenEndpoint(), certificateClient(certificate), MICROSOFT_APP_ONLY_SMTP_SCOPE, http));
    expect(error.description).toContain('AADSTS700027');
  });
});

describe('Google service account with domain-wide delegation', () => {
  it('a delegated service account gets a token for the mailbox and sends as it', async () => {
    const key = parseServiceAccountKey(google.serviceAccounts.createServiceAccount('delegated'));
    google.serviceAccounts.authorizeDelegation(key.clientId, [GOOGLE_MAIL_SCOPE]);
    const tokens = await serviceAccountGrant(key, ALICE, GOOGLE_MAIL_SCOPE, http);
    expect(tokens).toMatchObject({ refreshToken: undefined, mailbox: ALICE, scope: GOOGLE_MAIL_SCOPE });
    expect(google.tokenRequests.at(-1)).toMatchObject({ grantType: 'urn:ietf:params:oauth:grant-type:jwt-bearer', status: 200 });

    const subject = 'service account';
    expect(await sendWith(gmail, ALICE, tokens.accessToken, subject)).toMatch(/^250 /);
    expect((await gmail.waitForMessage((m) => m.parsed?.subject === subject, subject)).authUser).toBe(ALICE);
    // The token is the mailbox's: another user= is refused.
    await expect(sendWith(gmail, BOB, tokens.accessToken, 'other user')).rejects.toMatchObject({ responseCode: 535 });
    expect(gmail.authAttempts.at(-1)).toMatchObject({ user: BOB, ok: false, reason: 'user-mismatch' });
  });

  it('without the delegation entry: unauthorized_client, with the Admin console steps', async () => {
    const key = parseServiceAccountKey(google.serviceAccounts.createServiceAccount('undelegated'));
    const error = await refusal(serviceAccountGrant(key, ALICE, GOOGLE_MAIL_SCOPE, http));
    expect(error).toMatchObject({ error: 'unauthorized_client', kind: 'definitive' });
    expect(error.description).toContain('Client is unauthorized to retrieve access tokens');
    expect(error.advice).toMatch(/Domain-wide delegation.*https:\/\/mail\.google\.com\//);

    // A delegation for other scopes is no delegation for Gmail.
    google.serviceAccounts.authorizeDelegation(key.clientId, ['https://www.googleapis.com/auth/calendar']);
    expect((await refusal(serviceAccountGrant(key, ALICE, GOOGLE_MAIL_SCOPE, http))).error).toBe('unauthorized_client');
  });

  it('a mailbox that is not a user of the domain: invalid_grant "Invalid email or User ID", with advice', async () => {
    const key = parseServiceAccountKey(google.serviceAccounts.createServiceAccount('unknown-user'));
    google.serviceAccounts.authorizeDelegation(key.clientId, [GOOGLE_MAIL_SCOPE]);
    const error = await refusal(serviceAccountGrant(key, 'someone@gmail.com', GOOGLE_MAIL_SCOPE, http));
    expect(error).toMatchObject({ error: 'invalid_grant', description: 'Invalid email or User ID', kind: 'definitive' });
    expect(error.advice).toMatch(/not a user of your Google Workspace domain/);
  });

  it('a key of another service account, or a deleted key: "Invalid JWT Signature.", with advice', async () => {
    const mine = parseServiceAccountKey(google.serviceAccounts.createServiceAccount('mine'));
    const theirs = parseServiceAccountKey(google.serviceAccounts.createServiceAccount('theirs'));
    google.serviceAccounts.authorizeDelegation(mine.clientId, [GOOGLE_MAIL_SCOPE]);
    const mixed = { ...mine, privateKeyPem: theirs.privateKeyPem };
    const error = await refusal(serviceAccountGrant(mixed, ALICE, GOOGLE_MAIL_SCOPE, http));
    expect(error).toMatchObject({ error: 'invalid_grant', description: 'Invalid JWT Signature.' });
    expect(error.advice).toMatch(/Create a new JSON key/);

    google.serviceAccounts.deleteServiceAccountKey(mine.privateKeyId);
    expect((await refusal(serviceAccountGrant(mine, ALICE, GOOGLE_MAIL_SCOPE, http))).description).toBe('Invalid JWT Signature.');
    // A new key for the same account works again.
    const renewed = parseServiceAccountKey(google.serviceAccounts.addServiceAccountKey(mine.clientEmail));
    await expect(serviceAccountGrant(renewed, BOB, GOOGLE_MAIL_SCOPE, http)).resolves.toMatchObject({ mailbox: BOB });
  });

  it('a token endpoint that is down is transient, not the key\'s fault', async () => {
    const key = parseServiceAccountKey(google.serviceAccounts.createServiceAccount('busy'));
    google.failNext('token', { status: 503, body: 'busy' });
    expect(await refusal(serviceAccountGrant(key, ALICE, GOOGLE_MAIL_SCOPE, http))).toMatchObject({ kind: 'transient' });
  });
});

describe('hostile requests at the stand-ins', () => {
  const post = (url: string, form: Record<string, string>) =>
    http[oauth.customFetch](url, { method: 'POST', body: new URLSearchParams(form).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });

  it('malformed client assertions and JWT bearer assertions get OAuth errors, and the servers keep serving', async () => {
    const base = { grant_type: 'client_credentials', client_id: microsoft.appOnly.certificateClientId, scope: MICROSOFT_APP_ONLY_SMTP_SCOPE };
    const assertions = ['garbage', 'a.b.c', `${Buffer.from('{"alg":"none"}').toString('base64url')}..`, `\u0000\r\n.${'x'.repeat(20_000)}.y`, `${Buffer.from('[1]').toString('base64url')}.e30.`];
    for (const assertion of assertions) {
      const response = await post(microsoft.appOnly.tokenEndpoint(), { ...base, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion });
      expect(response.status, assertion.slice(0, 20)).toBeGreaterThanOrEqual(400);
      expect(response.status).toBeLessThan(500);
      expect(((await response.json()) as { error?: string }).error).toEqual(expect.any(String));
    }
    for (const assertion of ['garbage', 'a.b.c', `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from('{"iss":"nobody@x"}').toString('base64url')}.sig`, '\u0007'.repeat(300)]) {
      const response = await post(`${google.origin}/token`, { grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion });
      expect(response.status, assertion.slice(0, 20)).toBeGreaterThanOrEqual(400);
      expect(response.status).toBeLessThan(500);
      expect(((await response.json()) as { error?: string }).error).toEqual(expect.any(String));
    }
    await expect(clientCredentialsGrant(tokenEndpoint(), secretClient(), MICROSOFT_APP_ONLY_SMTP_SCOPE, http)).resolves.toMatchObject({ scope: 'SMTP.SendAsApp' });
  });
});

