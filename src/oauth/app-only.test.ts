/**
 * App-only protocol steps with hand-made responses: the service account key parser against hostile input,
 * the JWTs both grants sign (header and claims), what the token requests carry, the generated certificate,
 * and the app-only advice.
 */
import { createPublicKey, generateKeyPairSync, verify, X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import * as oauth from 'oauth4webapi';
import { describe, expect, test } from 'vitest';
import {
  AppOnlyCredentialError,
  CLIENT_ASSERTION_LIFETIME_S,
  ENTRA_APP_ONLY_STEPS,
  EXCHANGE_APP_ONLY_535_ADVICE,
  certificateThumbprints,
  clientCredentialsGrant,
  exchangeAppOnlySteps,
  generateClientCertificate,
  googleDomainWideDelegationSteps,
  parseServiceAccountKey,
  serviceAccountGrant,
  signServiceAccountAssertion,
  validateMicrosoftAppOnlyEndpoint,
} from './app-only.js';
import type { HttpOptions } from './http.js';
import { adviceFor, ProviderError } from './provider-errors.js';

const RSA = generateKeyPairSync('rsa', { modulusLength: 2048 });
const RSA_PEM = RSA.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

function keyFile(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'service_account',
    project_id: 'postern-unit',
    private_key_id: '0123456789abcdef0123456789abcdef01234567',
    private_key: RSA_PEM,
    client_email: 'postern@postern-unit.iam.gserviceaccount.com',
    client_id: '112233445566778899001',
    auth_uri: 'https://accounts.google.com/o/oauth2/auth',
    token_uri: 'https://oauth2.googleapis.com/token',
    auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
    client_x509_cert_url: 'https://www.googleapis.com/robot/v1/metadata/x509/postern%40postern-unit.iam.gserviceaccount.com',
    universe_domain: 'googleapis.com',
    ...overrides,
  };
}

const text = (value: unknown) => JSON.stringify(value, null, 2);

function refusalOf(input: string): AppOnlyCredentialError {
  try {
    parseServiceAccountKey(input);
  } catch (error) {
    expect(error).toBeInstanceOf(AppOnlyCredentialError);
    expect((error as AppOnlyCredentialError).code).toBe('POSTERN_OAUTH_CREDENTIAL_INVALID');
    return error as AppOnlyCredentialError;
  }
  throw new Error(`accepted: ${input.slice(0, 80)}`);
}

function decodeJwt(jwt: string): { header: Record<string, unknown>; claims: Record<string, unknown>; input: Buffer; signature: Buffer } {
  const [header, claims, signature] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(header!, 'base64url').toString()) as Record<string, unknown>,
    claims: JSON.parse(Buffer.from(claims!, 'base64url').toString()) as Record<string, unknown>,
    input: Buffer.from(`${header}.${claims}`),
    signature: Buffer.from(signature!, 'base64url'),
  };
}

/** A token endpoint that records the request and answers with `response`. */
function endpoint(response: () => Response): { http: HttpOptions; requests: Array<{ url: string; body: URLSearchParams; headers: Headers }> } {
  const requests: Array<{ url: string; body: URLSearchParams; headers: Headers }> = [];
  return {
    requests,
    http: {
      [oauth.customFetch]: async (url, init) => {
        requests.push({ url, body: new URLSearchParams(init.body as URLSearchParams), headers: new Headers(init.headers) });
        return response();
      },
    },
  };
}

const tokenResponse = () =>
  new Response(JSON.stringify({ access_token: 'at-1', token_type: 'Bearer', expires_in: 3599 }), { status: 200, headers: { 'content-type': 'application/json' } });

describe('parseServiceAccountKey', () => {
  test('reads the key file as Google downloads it', () => {
    const key = parseServiceAccountKey(text(keyFile()));
    expect(key).toEqual({
      type: 'service_account',
      projectId: 'postern-unit',
      clientEmail: 'postern@postern-unit.iam.gserviceaccount.com',
      clientId: '112233445566778899001',
      privateKeyId: '0123456789abcdef0123456789abcdef01234567',
      privateKeyPem: RSA_PEM,
      tokenUri: 'https://oauth2.googleapis.com/token',
    });
    // A byte order mark and Windows line ends, as an editor may save it, are fine.
    expect(parseServiceAccountKey(`\uFEFF${text(keyFile()).replace(/\n/g, '\r\n')}`).clientId).toBe('112233445566778899001');
  });

  test('refuses other kinds of Google credentials, naming what they are', () => {
    expect(refusalOf(text({ type: 'authorized_user', client_id: 'x', client_secret: 'y', refresh_token: 'z' })).message).toMatch(/"authorized_user" key/);
    expect(refusalOf(text({ installed: { client_id: 'x.apps.googleusercontent.com', client_secret: 'GOCSPX-y' } })).message).toMatch(/client_secret\.json is not one/);
    expect(refusalOf(text(keyFile({ type: 'external_account' }))).message).toMatch(/external_account/);
    // A type with control characters is not repeated into the message.
    expect(refusalOf(text(keyFile({ type: 'evil\u0007type' }))).message).not.toContain('\u0007');
  });

  test('refuses missing and malformed fields, one sentence each', () => {
    for (const field of ['client_email', 'client_id', 'private_key_id', 'private_key', 'token_uri']) {
      const { [field]: _left, ...rest } = keyFile();
      expect(refusalOf(text(rest)).message, field).toContain(field);
    }
    expect(refusalOf(text(keyFile({ client_email: 'not an address' }))).message).toMatch(/client_email/);
    expect(refusalOf(text(keyFile({ client_id: 'abc' }))).message).toMatch(/numeric client ID/);
    expect(refusalOf(text(keyFile({ client_email: 'a@b.c\r\nBcc: x@y.z' }))).message).toMatch(/control characters/);
    expect(refusalOf(text(keyFile({ client_id: 42 }))).message).toMatch(/client_id/);
  });

  test('refuses a token_uri that is not https', () => {
    expect(refusalOf(text(keyFile({ token_uri: 'http://oauth2.googleapis.com/token' }))).message).toMatch(/https/);
    expect(refusalOf(text(keyFile({ token_uri: 'https://user:pw@oauth2.googleapis.com/token' }))).message).toMatch(/user name/);
    expect(refusalOf(text(keyFile({ token_uri: 'not a url' }))).message).toMatch(/not a URL/);
    expect(refusalOf(text(keyFile({ token_uri: 'javascript:alert(1)' }))).message).toMatch(/https/);
  });

  test('refuses a private key that is not an RSA private key', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(refusalOf(text(keyFile({ private_key: ec }))).message).toMatch(/ec key/);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(refusalOf(text(keyFile({ private_key: small }))).message).toMatch(/2048/);
    const publicKey = RSA.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    expect(refusalOf(text(keyFile({ private_key: publicKey }))).message).toMatch(/not a PEM private key/);
    const damaged = RSA_PEM.replace(/[A-Za-z]{10}/, 'AAAAAAAAAA');
    expect(refusalOf(text(keyFile({ private_key: damaged }))).message).toMatch(/does not parse|not a PEM/);
    const encrypted = RSA.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'secret' }).toString();
    expect(refusalOf(text(keyFile({ private_key: encrypted }))).message).toMatch(/not a PEM private key|passphrase/);
  });

  test('refuses huge input, control characters and what is not a JSON object', () => {
    expect(refusalOf(text(keyFile({ padding: 'x'.repeat(70 * 1024) }))).message).toMatch(/64 KB/);
    expect(refusalOf('é'.repeat(40 * 1024)).message).toMatch(/64 KB/);
    expect(refusalOf(text(keyFile()).replace('{', '{\u0000')).message).toMatch(/control characters/);
    expect(refusalOf(`${text(keyFile())}\u001b[2J`).message).toMatch(/control characters/);
    for (const input of ['', 'null', '[]', '"service_account"', '42', '{', 'type=service_account']) refusalOf(input);
  });

  test('property: whatever the input, it returns a key or throws AppOnlyCredentialError, nothing else', () => {
    const valid = keyFile();
    const field = fc.constantFrom(...Object.keys(valid));
    const anyValue = fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), fc.integer(), fc.constant(null), fc.boolean(), fc.array(fc.string()), fc.object(), fc.string({ unit: 'binary' }));
    const inputs = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 400 }),
      fc.json(),
      fc.jsonValue().map((value) => JSON.stringify(value)),
      fc.record({ field, value: anyValue }).map(({ field, value }) => text({ ...valid, [field]: value })),
      fc.record({ field }).map(({ field }) => {
        const { [field]: _dropped, ...rest } = valid;
        return text(rest);
      }),
      fc.nat({ max: 3000 }).map((cut) => text(valid).slice(0, cut)),
      fc.record({ at: fc.nat({ max: 3000 }), insert: fc.string({ unit: 'binary', maxLength: 8 }) }).map(({ at, insert }) => {
        const whole = text(valid);
        return whole.slice(0, at) + insert + whole.slice(at);
      }),
    );
    fc.assert(
      fc.property(inputs, (input) => {
        try {
          const key = parseServiceAccountKey(input);
          expect(key.type).toBe('service_account');
          expect(key.tokenUri.startsWith('https://')).toBe(true);
        } catch (error) {
          if (!(error instanceof AppOnlyCredentialError)) throw error;
          expect(error.message.length).toBeLessThan(400);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('the service account assertion (RFC 7523 §3)', () => {
  test('is RS256 with kid = private_key_id, and claims iss, sub, scope, aud, iat, exp ≤ iat + 1 h', () => {
    const key = parseServiceAccountKey(text(keyFile()));
    const jwt = signServiceAccountAssertion(key, 'alice@example.test', 'https://mail.google.com/', 1_900_000_000);
    const { header, claims, input, signature } = decodeJwt(jwt);
    expect(header).toEqual({ alg: 'RS256', typ: 'JWT', kid: key.privateKeyId });
    expect(claims).toMatchObject({
      iss: key.clientEmail,
      sub: 'alice@example.test',
      scope: 'https://mail.google.com/',
      aud: 'https://oauth2.googleapis.com/token',
      iat: 1_900_000_000,
      exp: 1_900_003_600,
    });
    expect(verify('sha256', input, RSA.publicKey, signature)).toBe(true);
  });

  test('refuses a mailbox that is no address or holds control characters', () => {
    const key = parseServiceAccountKey(text(keyFile()));
    for (const mailbox of ['', 'alice', 'alice@example.test\r\nx', 'a b@example.test', `${'a'.repeat(400)}@example.test`]) {
      expect(() => signServiceAccountAssertion(key, mailbox, 'https://mail.google.com/', 0)).toThrow(AppOnlyCredentialError);
    }
  });

  test('the grant posts only grant_type and assertion to token_uri, and reads a token for the mailbox', async () => {
    const key = parseServiceAccountKey(text(keyFile()));
    const { http, requests } = endpoint(tokenResponse);
    const tokens = await serviceAccountGrant(key, 'bob@example.test', 'https://mail.google.com/', http, () => 1_900_000_000_000);
    expect(tokens).toEqual({ accessToken: 'at-1', refreshToken: undefined, expiresAt: 1_900_000_000_000 + 3_599_000, scope: undefined, mailbox: 'bob@example.test', displayName: undefined });
    expect(requests[0]!.url).toBe('https://oauth2.googleapis.com/token');
    expect([...requests[0]!.body.keys()].sort()).toEqual(['assertion', 'grant_type']);
    expect(requests[0]!.body.get('grant_type')).toBe('urn:ietf:params:oauth:grant-type:jwt-bearer');
    expect(decodeJwt(requests[0]!.body.get('assertion')!).claims).toMatchObject({ sub: 'bob@example.test', iat: 1_900_000_000 });
  });

  test('Google\'s refusals become ProviderErrors with advice', async () => {
    const key = parseServiceAccountKey(text(keyFile()));
    const answer = (status: number, body: object) => () => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
    const cases: Array<[number, object, RegExp]> = [
      [401, { error: 'unauthorized_client', error_description: 'Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.' }, /Domain-wide delegation/],
      [400, { error: 'invalid_grant', error_description: 'Invalid email or User ID' }, /not a user of your Google Workspace domain/],
      [400, { error: 'invalid_grant', error_description: 'Invalid JWT Signature.' }, /new JSON key/],
      [400, { error: 'invalid_grant', error_description: 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.' }, /time/],
    ];
    for (const [status, body, advice] of cases) {
      const error = await serviceAccountGrant(key, 'alice@example.test', 'https://mail.google.com/', endpoint(answer(status, body)).http).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ProviderError);
      expect(error).toMatchObject({ kind: 'definitive', advice: expect.stringMatching(advice) });
    }
  });
});

describe('the Microsoft client credentials request', () => {
  const server = { tokenEndpoint: 'https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token' };

  test('with a secret: client_secret_post, the .default scope, and a token with no refresh token or mailbox', async () => {
    const { http, requests } = endpoint(tokenResponse);
    const tokens = await clientCredentialsGrant(server, { clientId: 'app-1', credential: { kind: 'secret', secret: 's3cret~value' } }, 'https://outlook.office365.com/.default', http, () => 1_000_000);
    expect(tokens).toEqual({ accessToken: 'at-1', refreshToken: undefined, expiresAt: 1_000_000 + 3_599_000, scope: undefined, mailbox: undefined, displayName: undefined });
    const body = requests[0]!.body;
    expect(Object.fromEntries(body)).toEqual({ grant_type: 'client_credentials', scope: 'https://outlook.office365.com/.default', client_id: 'app-1', client_secret: 's3cret~value' });
    expect(requests[0]!.headers.get('authorization')).toBeNull();
  });

  test('with a certificate: a private key JWT naming the certificate by x5t#S256 and x5t, aud = token endpoint', async () => {
    const certificate = await generateClientCertificate('Postern unit');
    const { http, requests } = endpoint(tokenResponse);
    const now = 1_900_000_000_000;
    await clientCredentialsGrant(server, { clientId: 'app-2', credential: { kind: 'certificate', ...certificate } }, 'https://graph.microsoft.com/.default', http, () => now);
    const body = requests[0]!.body;
    expect(body.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    expect(body.get('client_secret')).toBeNull();
    const { header, claims, input, signature } = decodeJwt(body.get('client_assertion')!);
    const thumbprints = certificateThumbprints(certificate.certificatePem);
    expect(header).toMatchObject({ alg: 'RS256', typ: 'JWT', 'x5t#S256': thumbprints.sha256Base64url, x5t: thumbprints.sha1Base64url });
    expect(claims).toMatchObject({ aud: server.tokenEndpoint, iss: 'app-2', sub: 'app-2', iat: now / 1000, nbf: now / 1000, exp: now / 1000 + CLIENT_ASSERTION_LIFETIME_S });
    expect(CLIENT_ASSERTION_LIFETIME_S).toBeLessThanOrEqual(600);
    expect(claims.jti).toEqual(expect.any(String));
    expect(verify('sha256', input, new X509Certificate(certificate.certificatePem).publicKey, signature)).toBe(true);
  });

  test('refuses unusable certificates and keys before sending anything', async () => {
    const certificate = await generateClientCertificate('unit');
    const { http, requests } = endpoint(tokenResponse);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const attempts = [
      { certificatePem: certificate.certificatePem, privateKeyPem: pss },
      { certificatePem: 'not a certificate', privateKeyPem: certificate.privateKeyPem },
      { certificatePem: certificate.certificatePem, privateKeyPem: 'not a key' },
      { certificatePem: certificate.certificatePem, privateKeyPem: ec },
      { certificatePem: certificate.certificatePem, privateKeyPem: RSA_PEM },
    ];
    for (const credential of attempts) {
      await expect(clientCredentialsGrant(server, { clientId: 'app', credential: { kind: 'certificate', ...credential } }, 'https://outlook.office365.com/.default', http)).rejects.toBeInstanceOf(AppOnlyCredentialError);
    }
    await expect(clientCredentialsGrant(server, { clientId: 'app', credential: { kind: 'secret', secret: '' } }, 'https://outlook.office365.com/.default', http)).rejects.toBeInstanceOf(AppOnlyCredentialError);
    await expect(clientCredentialsGrant(server, { clientId: '', credential: { kind: 'secret', secret: 'x' } }, 'https://outlook.office365.com/.default', http)).rejects.toBeInstanceOf(AppOnlyCredentialError);
    expect(requests).toEqual([]);
  });

  test('an Entra error is a ProviderError with app-only advice, also when a WWW-Authenticate challenge comes with it', async () => {
    const body = { error: 'invalid_client', error_description: 'AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.' };
    const { http } = endpoint(() => new Response(JSON.stringify(body), { status: 401, headers: { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="login"' } }));
    const error = await clientCredentialsGrant(server, { clientId: 'app', credential: { kind: 'secret', secret: 'x' } }, 'https://outlook.office365.com/.default', http).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProviderError);
    expect(error).toMatchObject({ kind: 'definitive', error: 'invalid_client', httpStatus: 401, advice: expect.stringMatching(/Value.*Secret ID/) });
  });

  test('answers that are no token response are ProviderErrors, never anything else', async () => {
    const json = (status: number, body: unknown) => () => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
    const answers: Array<() => Response> = [
      () => new Response('<html>sign in</html>', { status: 200, headers: { 'content-type': 'text/html' } }),
      json(200, { token_type: 'Bearer' }),
      json(200, { access_token: 42, token_type: 'Bearer' }),
      json(200, { access_token: 'at', token_type: 'Bearer', expires_in: 'soon' }),
      json(200, ['not', 'an', 'object']),
      () => new Response('{"access_token":', { status: 200, headers: { 'content-type': 'application/json' } }),
      json(400, { error: 'invalid_request', error_description: `AADSTS9\u0000${'x'.repeat(100_000)}\r\n` }),
      json(400, { error: 42 }),
      () => new Response('', { status: 401 }),
    ];
    for (const answer of answers) {
      const secret = clientCredentialsGrant(server, { clientId: 'app', credential: { kind: 'secret', secret: 'x' } }, 'https://outlook.office365.com/.default', endpoint(answer).http);
      await expect(secret).rejects.toBeInstanceOf(ProviderError);
      const key = parseServiceAccountKey(text(keyFile()));
      await expect(serviceAccountGrant(key, 'alice@example.test', 'https://mail.google.com/', endpoint(answer).http)).rejects.toBeInstanceOf(ProviderError);
    }
  });

  test('a 503 is transient', async () => {
    const { http } = endpoint(() => new Response('busy', { status: 503 }));
    const error = await clientCredentialsGrant(server, { clientId: 'app', credential: { kind: 'secret', secret: 'x' } }, 'https://outlook.office365.com/.default', http).catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'transient' });
  });
});

describe('the generated client certificate', () => {
  test('is a self-signed RSA 2048 certificate for two years whose thumbprints are the certificate\'s', async () => {
    const now = Date.UTC(2026, 11, 2, 8, 0, 0);
    const generated = await generateClientCertificate('Postern, "gateway" #1', () => now);
    const certificate = new X509Certificate(generated.certificatePem);
    expect(certificate.subject).toContain('Postern');
    expect(certificate.verify(certificate.publicKey)).toBe(true);
    expect(certificate.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(generated.notAfter.toISOString()).toBe('2028-12-02T08:00:00.000Z');
    expect(new Date(certificate.validTo).getTime()).toBe(generated.notAfter.getTime());
    expect(new Date(certificate.validFrom).getTime()).toBeLessThanOrEqual(now);
    expect(generated.thumbprintSha1Hex).toBe(certificate.fingerprint.replace(/:/g, ''));
    expect(generated.thumbprintSha256Base64url).toBe(Buffer.from(certificate.fingerprint256.replace(/:/g, ''), 'hex').toString('base64url'));
    expect(generated.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(createPublicKey(generated.privateKeyPem).export({ type: 'spki', format: 'der' }).equals(certificate.publicKey.export({ type: 'spki', format: 'der' }))).toBe(true);
  });

  test('refuses a name that is empty, too long or holds control characters', async () => {
    for (const name of ['', '   ', 'x'.repeat(65), 'bad\nname', 'bad\u0085name']) {
      await expect(generateClientCertificate(name)).rejects.toBeInstanceOf(AppOnlyCredentialError);
    }
  });
});

describe('the app-only endpoint and advice', () => {
  test('the endpoint must name a tenant', () => {
    expect(validateMicrosoftAppOnlyEndpoint('https://login.microsoftonline.com/8f3c1c9e-5d2a-4b7e-9a61-3e0f2b7c4d15/oauth2/v2.0')).toMatchObject({
      ok: true,
      value: { tokenEndpoint: 'https://login.microsoftonline.com/8f3c1c9e-5d2a-4b7e-9a61-3e0f2b7c4d15/oauth2/v2.0/token' },
    });
    expect(validateMicrosoftAppOnlyEndpoint('https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0').ok).toBe(true);
    for (const tenant of ['common', 'organizations', 'consumers', 'COMMON']) {
      expect(validateMicrosoftAppOnlyEndpoint(`https://login.microsoftonline.com/${tenant}/oauth2/v2.0`)).toMatchObject({ ok: false, error: expect.stringMatching(/Directory \(tenant\) ID/) });
    }
    expect(validateMicrosoftAppOnlyEndpoint('http://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0').ok).toBe(false);
  });

  test('Entra errors get app-only advice; delegated advice is unchanged', () => {
    const appOnly = (error: string, code: string) => adviceFor('microsoft', error, `AADSTS${code}: text`, 'app-only');
    expect(appOnly('invalid_client', '7000215')).toMatch(/Value.*not its Secret ID/);
    expect(appOnly('invalid_client', '7000222')).toMatch(/expired/);
    expect(appOnly('invalid_client', '700027')).toMatch(/Certificates & secrets/);
    expect(appOnly('invalid_client', '700024')).toMatch(/clock|time/);
    expect(appOnly('unauthorized_client', '700016')).toMatch(/Application \(Client\) ID/);
    expect(appOnly('invalid_request', '90002')).toMatch(/tenant/);
    expect(appOnly('invalid_scope', '1002012')).toMatch(/\.default/);
    expect(appOnly('invalid_scope', '70011')).toMatch(/\.default/);
    expect(appOnly('invalid_resource', '500011')).toMatch(/Exchange Online/);
    expect(appOnly('invalid_grant', '65001')).toMatch(/SMTP\.SendAsApp.*admin consent/);
    expect(adviceFor('microsoft', 'invalid_grant', 'AADSTS65001: consent', 'delegated')).toMatch(/delegated permission Office 365 Exchange Online > SMTP\.Send/);
    expect(adviceFor('microsoft', 'invalid_grant', 'AADSTS65001: consent')).toBe(adviceFor('microsoft', 'invalid_grant', 'AADSTS65001: consent', 'delegated'));
    expect(adviceFor('google', 'unauthorized_client', undefined)).toMatch(/Desktop app/);
    expect(adviceFor('google', 'unauthorized_client', undefined, 'app-only')).toMatch(/Domain-wide delegation/);
  });

  test('the set-up steps name the client ID where the administrator types it', () => {
    expect(ENTRA_APP_ONLY_STEPS.map((step) => step.text).join(' ')).toMatch(/SMTP\.SendAsApp.*Grant admin consent/s);
    const exchange = exchangeAppOnlySteps({ clientId: '3c8d5e2f-7a1b-4c9d-8e6f-1a2b3c4d5e61', mailbox: 'scanner@contoso.example' }).map((step) => step.text).join('\n');
    expect(exchange).toContain('New-ServicePrincipal -AppId 3c8d5e2f-7a1b-4c9d-8e6f-1a2b3c4d5e61');
    expect(exchange).toContain('Enterprise application');
    expect(exchange).toContain('New-ManagementRoleAssignment -App 3c8d5e2f-7a1b-4c9d-8e6f-1a2b3c4d5e61 -Role "Application SMTP.SendAsApp"');
    expect(exchange).toContain('-CustomResourceScope');
    expect(exchangeAppOnlySteps({ clientId: 'x', via: 'graph' }).map((step) => step.text).join('\n')).toContain('"Application Mail.Send"');
    const google = googleDomainWideDelegationSteps({ clientId: '112233445566778899001' }).map((step) => step.text).join('\n');
    expect(google).toContain('112233445566778899001');
    expect(google).toContain('https://mail.google.com/');
    expect(google).toContain('Domain Wide Delegation');
    expect(EXCHANGE_APP_ONLY_535_ADVICE).toContain('535 5.7.3');
  });
});
