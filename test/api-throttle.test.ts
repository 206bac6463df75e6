/**
 * Failed API authentications are throttled per address like the Remote UI's sign-in: reserved before the
 * token is checked, so 30 wrong tokens sent at once from one address are never checked more often than the
 * limit, the rest get 429, and every checked failure is audited. A burst of good requests is not throttled.
 * A Postern of its own: the address stays blocked for the window.
 */
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { startTestPostern, WebClient, type TestPostern } from './support/postern.js';

let gw: TestPostern;
let secret: string;

const status = (token: string) => fetch(`${gw.url}/api/v1/status`, { headers: { authorization: `Bearer ${token}` } });
const wrongToken = (i: number) => `pst_${String(i).padStart(43, 'x')}`;

beforeAll(async () => {
  gw = await startTestPostern();
  const admin = new WebClient(gw.url);
  await admin.login();
  await admin.get('/settings/api-tokens');
  const html = await admin.post('/settings/api-tokens', { name: 'dashboard', scope: 'read', expiresInDays: '7' });
  secret = /data-field="token">(pst_[A-Za-z0-9_-]+)</.exec(html)![1]!;
});

afterAll(async () => {
  await gw?.close();
});

describe('API authentication throttle', () => {
  test('30 parallel requests with a good token all succeed', async () => {
    const responses = await Promise.all(Array.from({ length: 30 }, () => status(secret)));
    expect(responses.map((r) => r.status)).toEqual(Array.from({ length: 30 }, () => 200));
  });

  test('30 parallel wrong tokens from one address: at most the limit are checked, the rest get 429', async () => {
    const checks = vi.spyOn(gw.postern.apiTokens, 'authenticate');
    const responses = await Promise.all(Array.from({ length: 30 }, (_, i) => status(wrongToken(i))));
    const codes = await Promise.all(responses.map(async (r) => [r.status, ((await r.json()) as { error: { code: string } }).error.code] as const));
    const limit = 20;
    expect(checks).toHaveBeenCalledTimes(limit);
    expect(codes.filter(([s]) => s === 401)).toHaveLength(limit);
    expect(codes.filter(([s, code]) => s === 429 && code === 'POSTERN_API_RATE_LIMITED')).toHaveLength(30 - limit);
    expect(responses.find((r) => r.status === 429)!.headers.get('retry-after')).toMatch(/^\d+$/);
    const audited = (await gw.postern.audit.recent(100)).filter((e) => e.action === 'api.auth_failed');
    expect(audited).toHaveLength(limit);
    expect(audited[0]).toMatchObject({ actor: null, detail: 'from 127.0.0.1: invalid' });
    // Blocked: from this address even the good token waits for the window to end, unchecked.
    checks.mockClear();
    expect((await status(secret)).status).toBe(429);
    expect(checks).not.toHaveBeenCalled();
    checks.mockRestore();
  });
});

describe('API request limit per token', () => {
  let limited: TestPostern;
  let token: string;

  beforeAll(async () => {
    limited = await startTestPostern({ config: { apiRequestsPerMinute: 5 } });
    const admin = new WebClient(limited.url);
    await admin.login();
    await admin.get('/settings/api-tokens');
    const html = await admin.post('/settings/api-tokens', { name: 'runaway-script', scope: 'read', expiresInDays: '7' });
    token = /data-field="token">(pst_[A-Za-z0-9_-]+)</.exec(html)![1]!;
  });

  afterAll(async () => {
    await limited?.close();
  });

  test('12 parallel requests with a token allowed 5 a minute: exactly 5 answered, 7 refused with 429 and Retry-After', async () => {
    const responses = await Promise.all(
      Array.from({ length: 12 }, () => fetch(`${limited.url}/api/v1/status`, { headers: { authorization: `Bearer ${token}` } })),
    );
    const answers = await Promise.all(responses.map(async (r) => [r.status, (await r.json()) as { error?: { code: string; message: string } }] as const));
    expect(answers.filter(([s]) => s === 200)).toHaveLength(5);
    const refused = answers.filter(([s]) => s === 429);
    expect(refused).toHaveLength(7);
    expect(refused[0]![1].error).toMatchObject({ code: 'POSTERN_API_RATE_LIMITED', message: expect.stringMatching(/runaway-script sent more than 5 requests in a minute/) });
    expect(responses.find((r) => r.status === 429)!.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
    // The limit is the token's, not the address's: the OpenAPI document (no token) is still served.
    expect((await fetch(`${limited.url}/api/v1/openapi.json`)).status).toBe(200);
  });
});
