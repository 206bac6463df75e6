/** Protocol steps against hand-made responses (RFC 8628 §3.5 outcomes, id_token issuer rules). */
import * as oauth from 'oauth4webapi';
import { describe, expect, test } from 'vitest';
import { expectedIssuer, processDeviceCodeGrantResponse, refreshAccessToken, type AuthorizationServerConfig } from './grants.js';
import { ProviderError } from './provider-errors.js';

const ms: AuthorizationServerConfig = {
  provider: 'microsoft',
  issuer: 'https://login.microsoftonline.com/common/v2.0',
  tokenEndpoint: 'https://login.microsoftonline.com/common/oauth2/v2.0/token',
  deviceAuthorizationEndpoint: 'https://login.microsoftonline.com/common/oauth2/v2.0/devicecode',
};
const client = { clientId: '00000000-0000-0000-0000-000000000001' };

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

function jwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'RS256', typ: 'JWT' })}.${part(claims)}.signature`;
}

describe('processDeviceCodeGrantResponse', () => {
  test.each([
    [{ error: 'authorization_pending' }, 'pending'],
    [{ error: 'slow_down' }, 'slow_down'],
    [{ error: 'authorization_declined', error_description: 'AADSTS70000: declined' }, 'declined'],
    [{ error: 'access_denied' }, 'declined'],
    [{ error: 'expired_token' }, 'expired'],
    [{ error: 'code_expired' }, 'expired'],
    [{ error: 'bad_verification_code' }, 'failed'],
    [{ error: 'invalid_client', error_description: 'AADSTS7000218: The request body must contain client_assertion or client_secret' }, 'failed'],
  ])('%o → %s', async (body, type) => {
    const outcome = await processDeviceCodeGrantResponse(ms, client, json(400, body), Date.now());
    expect(outcome.type).toBe(type);
  });

  test('invalid_client AADSTS7000218 carries the "Allow public client flows" advice', async () => {
    const outcome = await processDeviceCodeGrantResponse(
      ms,
      client,
      json(401, { error: 'invalid_client', error_description: "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'." }),
      Date.now(),
    );
    expect(outcome.type === 'failed' && outcome.error.advice).toMatch(/Allow public client flows/);
  });

  test('5xx and 429 are transient', async () => {
    expect((await processDeviceCodeGrantResponse(ms, client, new Response('busy', { status: 503 }), 0)).type).toBe('transient');
    expect((await processDeviceCodeGrantResponse(ms, client, json(429, { error: 'temporarily_unavailable' }), 0)).type).toBe('transient');
  });

  test('a success: expiry counted from when the request was sent, mailbox from the id_token of the user\'s tenant', async () => {
    const sentAt = 1_000_000;
    const tid = '9188040d-6c67-4c5b-b112-36a304b66dad';
    const idToken = jwt({
      iss: `https://login.microsoftonline.com/${tid}/v2.0`,
      aud: client.clientId,
      sub: 'x',
      tid,
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 3600,
      preferred_username: 'printer@contoso.example',
      name: 'Printer',
    });
    const outcome = await processDeviceCodeGrantResponse(
      ms,
      client,
      json(200, { token_type: 'Bearer', access_token: 'at', refresh_token: 'rt', expires_in: 3599, scope: 'https://outlook.office.com/SMTP.Send', id_token: idToken }),
      sentAt,
    );
    expect(outcome).toMatchObject({
      type: 'tokens',
      tokens: { accessToken: 'at', refreshToken: 'rt', expiresAt: sentAt + 3_599_000, mailbox: 'printer@contoso.example', displayName: 'Printer' },
    });
  });

  test('an id_token from a foreign issuer is refused', async () => {
    const idToken = jwt({ iss: 'https://evil.example/v2.0', aud: client.clientId, sub: 'x', iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 60 });
    const outcome = await processDeviceCodeGrantResponse(ms, client, json(200, { token_type: 'Bearer', access_token: 'at', id_token: idToken }), 0);
    expect(outcome.type).toBe('failed');
  });
});

describe('expectedIssuer', () => {
  test('Microsoft multi-tenant endpoints expect the user tenant', () => {
    expect(expectedIssuer(ms, { tid: 'abc-123' })).toBe('https://login.microsoftonline.com/abc-123/v2.0');
    expect(expectedIssuer(ms, {})).toBe(ms.issuer);
  });

  test('Google accepts its issuer with or without the scheme', () => {
    const google: AuthorizationServerConfig = { provider: 'google', issuer: 'https://accounts.google.com', tokenEndpoint: 'https://oauth2.googleapis.com/token' };
    expect(expectedIssuer(google, { iss: 'accounts.google.com' })).toBe('accounts.google.com');
    expect(expectedIssuer(google, { iss: 'https://accounts.google.com' })).toBe('https://accounts.google.com');
  });
});

describe("id_tokens and this computer's clock", () => {
  const tid = '9188040d-6c67-4c5b-b112-36a304b66dad';
  /** A token response whose id_token was issued `aheadS` seconds after this computer's "now". */
  const dated = (aheadS: number) => {
    const iat = Math.floor(Date.now() / 1000) + aheadS;
    const idToken = jwt({ iss: `https://login.microsoftonline.com/${tid}/v2.0`, aud: client.clientId, sub: 'x', tid, iat, nbf: iat, exp: iat + 3600, preferred_username: 'printer@contoso.example' });
    return json(200, { token_type: 'Bearer', access_token: 'at-new', refresh_token: 'rt-rotated', expires_in: 3599, id_token: idToken });
  };

  test('a clock up to 5 minutes behind the server is tolerated', async () => {
    const outcome = await processDeviceCodeGrantResponse(ms, client, dated(4 * 60), Date.now());
    expect(outcome).toMatchObject({ type: 'tokens', tokens: { mailbox: 'printer@contoso.example' } });
  });

  test('a clock further off fails the sign-in as a transient clock problem with advice, not as bad settings', async () => {
    const outcome = await processDeviceCodeGrantResponse(ms, client, dated(20 * 60), Date.now());
    expect(outcome.type).toBe('transient');
    const error = (outcome as { error: ProviderError }).error;
    expect(error.kind).toBe('transient');
    expect(error.message).toMatch(/dated outside this computer's clock/);
    expect(error.advice).toMatch(/date, time and time zone.*NTP/);
  });

  test('a refresh is never lost over its id_token\'s timestamps: the rotated refresh token is kept', async () => {
    const http = { [oauth.customFetch]: async () => dated(3 * 3600) };
    const tokens = await refreshAccessToken(ms, client, 'rt-old', http);
    expect(tokens).toMatchObject({ accessToken: 'at-new', refreshToken: 'rt-rotated', mailbox: 'printer@contoso.example' });
  });
});
