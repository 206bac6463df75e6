/**
 * Sender Routing under attack: the same rule posted 100 times at once becomes one rule; 100 hostile posts at
 * once (control characters, CRLF, huge values, unknown accounts) are each refused with 400, nothing is
 * written, and the gateway goes on relaying.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPostern, WebClient, type TestPostern } from './support/postern.js';

const PATH = '/settings/send/sender-routing';
let gw: TestPostern;
let web: WebClient;
let csrf: string;

beforeAll(async () => {
  gw = await startTestPostern();
  web = new WebClient(gw.url);
  await web.login();
  const html = await web.get(PATH);
  csrf = /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
});

afterAll(async () => {
  await gw?.close();
});

function post(fields: Record<string, string>): Promise<number> {
  return fetch(`${gw.url.replace(/\/$/, '')}${PATH}`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: web.cookieHeader, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ _csrf: csrf, ...fields }),
  }).then(async (response) => {
    await response.arrayBuffer();
    return response.status;
  });
}

describe('Sender Routing in parallel', () => {
  it('the same rule 100 times at once is one rule', async () => {
    const statuses = await Promise.all(Array.from({ length: 100 }, () => post({ pattern: '@Parallel.Example', accountId: 'google' })));
    expect(new Set(statuses)).toEqual(new Set([303]));
    const rules = (await gw.postern.routes.senderRoutes()).filter((r) => r.pattern === '@parallel.example');
    expect(rules).toHaveLength(1);
    expect(rules[0]!.accountId).toBe('google');
  });

  it('100 hostile posts at once are each refused, and nothing is written', async () => {
    const before = (await gw.postern.routes.senderRoutes()).length;
    const hostile = [
      { pattern: 'a@b.test\r\nRCPT TO:<x@y.test>', accountId: 'google' },
      { pattern: '\u0000@x.test', accountId: 'google' },
      { pattern: `${'a'.repeat(20_000)}@x.test`, accountId: 'google' },
      { pattern: '@x.test', accountId: 'no-such-account' },
      { pattern: '@x.test', accountId: '../../etc/passwd' },
      { pattern: '@x.test', accountId: '' },
      { pattern: 'not-an-address', accountId: 'microsoft' },
      { pattern: '@', accountId: 'microsoft' },
      { pattern: '@\u202e.test', accountId: 'microsoft' },
      { pattern: '', accountId: 'microsoft' },
    ];
    const statuses = await Promise.all(Array.from({ length: 100 }, (_, i) => post(hostile[i % hostile.length]!)));
    expect(statuses.filter((s) => s !== 400)).toEqual([]);
    expect((await gw.postern.routes.senderRoutes()).length).toBe(before);
    expect(gw.logs()).not.toMatch(/"level":50.*unexpected/);
    // Still serving.
    expect((await fetch(`${gw.url.replace(/\/$/, '')}/healthz`)).status).toBe(200);
  });
});
