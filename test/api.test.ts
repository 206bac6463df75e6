/**
 * The JSON API (/api/v1) as an automation engineer drives it, against a real running Postern: tokens are
 * created on the Remote UI's API Tokens page (an Administrator, with the form's CSRF token), then used with
 * curl and fetch. Scopes, the 401 answers for a missing, revoked or expired token (RFC 6750 §3), the OpenAPI
 * document, and hostile input that must never give a 5xx.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ApiTokens } from '../src/api/tokens.js';
import { scrubSecrets } from '../src/log.js';
import type { QueuedMessage } from '../src/queue/queue.js';
import { eventually, startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { enqueueMessage } from './support/queue.js';

let gw: TestPostern;
let admin: WebClient;
const token = {} as Record<'read' | 'operate' | 'administer', string>;
let held: QueuedMessage;

/** Creates a token on the API Tokens page and returns it as the page shows it, once. */
async function createToken(client: WebClient, name: string, scope: string, expiresInDays = '30'): Promise<string> {
  await client.get('/settings/api-tokens');
  const html = await client.post('/settings/api-tokens', { name, scope, expiresInDays });
  expect(client.lastStatus).toBe(200);
  const secret = /data-field="token">(pst_[A-Za-z0-9_-]+)</.exec(html)?.[1];
  if (!secret) throw new Error(`no token on the page: ${html.slice(0, 500)}`);
  return secret;
}

interface CurlResult {
  status: number;
  headers: string;
  body: any;
}

/** curl as an automation script runs it: status, response headers and the JSON body. */
function curl(args: string[]): Promise<CurlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-sS', '-D', '-', ...args]);
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.stderr.on('data', (chunk) => (err += chunk));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`curl exited ${code}: ${err}`));
      const split = out.indexOf('\r\n\r\n');
      const headers = out.slice(0, split);
      const text = out.slice(split + 4);
      resolve({ status: Number(/^HTTP\/[\d.]+ (\d+)/.exec(headers)?.[1]), headers, body: text ? JSON.parse(text) : undefined });
    });
  });
}

const url = (path: string) => `${gw.url}/api/v1${path}`;
const bearer = (secret: string) => ['-H', `Authorization: Bearer ${secret}`];

async function api(path: string, secret: string | undefined, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) {
  const response = await fetch(url(path), {
    method: init.method ?? 'GET',
    headers: {
      ...(secret ? { authorization: `Bearer ${secret}` } : {}),
      ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...init.headers,
    },
    ...(init.body !== undefined ? { body: typeof init.body === 'string' ? init.body : JSON.stringify(init.body) } : {}),
  });
  const text = await response.text();
  let body: any;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text;
  }
  return { status: response.status, headers: response.headers, body };
}

beforeAll(async () => {
  gw = await startTestPostern();
  admin = new WebClient(gw.url);
  await admin.login();
  token.read = await createToken(admin, 'monitoring', 'read');
  token.operate = await createToken(admin, 'night operator', 'operate');
  token.administer = await createToken(admin, 'provisioning', 'administer', '365');
  // No OAuth account is authorized: the queue manager holds the message (Token Status is not Active).
  const message = await enqueueMessage(gw.postern.queue, 'Subject: Scan\r\n\r\nhello\r\n', { reversePath: 'mfp@printers.local', subject: 'Scan 1' });
  gw.postern.queueManager.kick();
  held = await eventually(async () => {
    const now = await gw.postern.queue.get(message.id);
    return now?.state === 'held' ? now : undefined;
  }, 20_000, 'the message to be held');
});

afterAll(async () => {
  await gw?.close();
});

describe('API tokens on the Remote UI page', () => {
  test('the page lists each token with its scope and creator, never the token itself', async () => {
    const html = await admin.get('/settings/api-tokens');
    expect(admin.lastStatus).toBe(200);
    expect(html).toContain('monitoring');
    expect(html).toContain('night operator');
    expect(html).toContain('Administer');
    expect(html).toContain('admin');
    for (const secret of Object.values(token)) {
      expect(html).not.toContain(secret);
      expect(html).toContain(secret.slice(0, 12));
    }
    expect(html).toContain('href="/settings/api-tokens"');
  });

  test('creating is audited and checks the form like the other pages', async () => {
    const html = await admin.post('/settings/api-tokens', { name: '', scope: 'everything', expiresInDays: '366' });
    expect(admin.lastStatus).toBe(400);
    expect(html).toContain('Name must be 1 to 64 characters');
    expect(html).toContain('Choose Read, Operate or Administer.');
    expect(html).toContain('Enter a whole number of days from 1 to 365.');
    const audit = await gw.postern.audit.recent(50);
    expect(audit.filter((e) => e.action === 'api-token.created').map((e) => e.actor)).toEqual(['admin', 'admin', 'admin']);
  });

  test('a form without its CSRF token is refused', async () => {
    await admin.post('/settings/api-tokens', { _csrf: 'forged', name: 'sneaky', scope: 'administer' });
    expect(admin.lastStatus).toBe(403);
    expect((await gw.postern.apiTokens.list()).map((t) => t.name)).not.toContain('sneaky');
  });

  test('only an Administrator may manage tokens', async () => {
    await gw.postern.users.create('netadmin', 'netadmin-password', 'NetworkAdministrator');
    const other = new WebClient(gw.url);
    await other.login('netadmin', 'netadmin-password');
    const html = await other.get('/settings/api-tokens');
    expect(other.lastStatus).toBe(403);
    expect(html).toContain('Administrator privileges are required to manage API tokens.');
    await other.post('/settings/api-tokens', { name: 'not-allowed', scope: 'administer' });
    expect(other.lastStatus).toBe(403);
    expect((await gw.postern.apiTokens.list()).map((t) => t.name)).not.toContain('not-allowed');
  });
});

describe('reading with curl', () => {
  test('GET /status gives each account\'s Token Status and Server Connection Status, never a token', async () => {
    const { status, body } = await curl([...bearer(token.read), url('/status')]);
    expect(status).toBe(200);
    const microsoft = body.accounts.find((a: { provider: string }) => a.provider === 'microsoft');
    expect(microsoft).toMatchObject({
      label: 'OAuth 2.0 (Microsoft)',
      use: false,
      mailbox: null,
      tokenStatus: { status: 'NotRegistered', label: 'Not Registered' },
      serverConnectionStatus: { status: null, label: 'Not in use' },
      accessTokenExpiresAt: null,
    });
    expect(body.queue.counts.held).toBe(1);
    expect(JSON.stringify(body)).not.toMatch(/refresh_token|access_token|_enc|secret/i);
  });

  test('GET /queue lists the held message, and filters by state', async () => {
    const { status, body } = await curl([...bearer(token.read), url('/queue')]);
    expect(status).toBe(200);
    expect(body.state).toBe('waiting');
    expect(body.messages.map((m: { id: string }) => m.id)).toContain(held.id);
    const message = body.messages.find((m: { id: string }) => m.id === held.id);
    expect(message).toMatchObject({ state: 'held', from: 'mfp@printers.local', to: ['bob@example.test'], subject: 'Scan 1', nextAttemptAt: null });
    expect(message.lastReply.text).toBeTruthy();
    expect((await api('/queue?state=sent', token.read)).body.messages).toEqual([]);
    const bad = await api('/queue?state=lost', token.read);
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('POSTERN_WEB_INVALID_INPUT');
  });

  test('GET /log, /devices and /settings answer without secrets', async () => {
    const log = await api(`/log?limit=10&id=${held.id}`, token.read);
    expect(log.status).toBe(200);
    expect(log.body.entries.map((e: { event: string }) => e.event)).toContain('accepted');
    const settings = await api('/settings', token.read);
    expect(settings.status).toBe(200);
    expect(settings.body.email).toMatchObject({ accountId: 'microsoft', smtpHost: 'smtp.office365.com', smtpPort: 587, tlsMode: 'starttls' });
    expect(settings.body.relay.certificate.source).toBe('generated');
    expect(JSON.stringify(settings.body)).not.toContain('PRIVATE KEY');
    const devices = await api('/devices', token.read);
    expect(devices.status).toBe(200);
    expect(Array.isArray(devices.body.devices)).toBe(true);
  });
});

describe('changing with curl', () => {
  test('an operate token retries a held message: the log and the audit log name the token', async () => {
    const { status, body } = await curl(['-X', 'POST', ...bearer(token.operate), url(`/queue/${held.id}/retry`)]);
    expect(status).toBe(200);
    expect(body.message.id).toBe(held.id);
    const entries = await gw.postern.queue.logEntries({ queueId: held.id });
    expect(entries.find((e) => e.event === 'retry')?.reply).toBe('Retry Now by night operator');
    const audit = await gw.postern.audit.recent(20);
    expect(audit.find((e) => e.action === 'queue.retry')).toMatchObject({ actor: 'night operator', detail: `${held.id} (API)` });
  });

  test('an administer token adds a device account; its password is returned once and works for the relay', async () => {
    const { status, body } = await curl([
      '-X', 'POST', ...bearer(token.administer), '-H', 'Content-Type: application/json',
      '--data', JSON.stringify({ username: 'scanner-3f', allowedSenders: ['scanner@printers.local'] }),
      url('/devices'),
    ]);
    expect(status).toBe(201);
    expect(body.device).toMatchObject({ username: 'scanner-3f', allowedSenders: ['scanner@printers.local'], lastLoginAt: null });
    expect(body.password).toMatch(/^.{8,}$/);
    expect(await gw.postern.devices.authenticate('scanner-3f', body.password)).toBeDefined();
    const listed = await api('/devices', token.read);
    expect(JSON.stringify(listed.body)).not.toContain(body.password);
    expect((await gw.postern.audit.recent(5)).find((e) => e.action === 'relay-device.added')).toMatchObject({ actor: 'provisioning' });

    const again = await api('/devices', token.administer, { method: 'POST', body: { username: 'scanner-3f' } });
    expect(again.status).toBe(409);
    expect(again.body.error).toMatchObject({ code: 'POSTERN_API_CONFLICT', message: 'A device account named scanner-3f already exists.' });

    const changed = await api('/devices/scanner-3f', token.administer, { method: 'PATCH', body: { allowedSenders: ['@printers.local'] } });
    expect(changed.status).toBe(200);
    expect(changed.body.device.allowedSenders).toEqual(['@printers.local']);

    const removed = await api('/devices/scanner-3f', token.administer, { method: 'DELETE' });
    expect(removed.status).toBe(200);
    expect((await api('/devices/scanner-3f', token.administer, { method: 'DELETE' })).status).toBe(404);
  });

  test('settings changes are checked with the Remote UI forms\' messages', async () => {
    const bad = await api('/settings/email', token.administer, { method: 'PATCH', body: { smtpPort: 70000, tlsMode: 'plain' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('POSTERN_WEB_INVALID_INPUT');
    expect(bad.body.error.fields).toEqual({
      smtpPort: 'Enter a port number from 1 to 65535 (587 for STARTTLS, 465 for SSL/TLS).',
      tlsMode: 'Choose STARTTLS or SSL/TLS.',
    });
    const good = await api('/settings/email', token.administer, { method: 'PATCH', body: { messagesPerMinute: 12 } });
    expect(good.status).toBe(200);
    expect(good.body.email).toMatchObject({ messagesPerMinute: 12, smtpHost: 'smtp.office365.com' });
    expect((await gw.postern.emailSettings.get()).messagesPerMinute).toBe(12);

    const relay = await api('/settings/relay', token.administer, { method: 'PATCH', body: { allowedNetworks: ['not-a-network'], maxMessageSizeMb: 0 } });
    expect(relay.status).toBe(400);
    expect(relay.body.error.fields.maxMessageSizeMb).toBe('Enter a size from 1 to 34 MB.');
    expect(relay.body.error.fields.allowedNetworks).toBeTruthy();
    const saved = await api('/settings/relay', token.administer, { method: 'PATCH', body: { allowedNetworks: ['192.0.2.0/24'] } });
    expect(saved.status).toBe(200);
    expect(saved.body.relay.allowedNetworks).toEqual(['192.0.2.0/24']);
    const audit = await gw.postern.audit.recent(10);
    expect(audit.find((e) => e.action === 'relay-settings.saved')?.actor).toBe('provisioning');
    expect(audit.find((e) => e.action === 'email-settings.saved')?.actor).toBe('provisioning');
  });
});

describe('scopes and refusals', () => {
  test('a read token cannot change anything (403 with the code)', async () => {
    const before = await gw.postern.audit.recent(1);
    const attempts = [
      api(`/queue/${held.id}/retry`, token.read, { method: 'POST' }),
      api(`/queue/${held.id}`, token.read, { method: 'DELETE' }),
      api('/devices', token.read, { method: 'POST', body: { username: 'nope-device' } }),
      api('/settings/email', token.read, { method: 'PATCH', body: { messagesPerMinute: 1 } }),
      api('/settings/relay', token.read, { method: 'PATCH', body: { allowInsecureAuth: true } }),
    ];
    for (const result of await Promise.all(attempts)) {
      expect(result.status).toBe(403);
      expect(result.body.error.code).toBe('POSTERN_API_SCOPE_INSUFFICIENT');
      expect(result.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
    }
    expect((await gw.postern.queue.get(held.id))).toBeDefined();
    expect(await gw.postern.devices.exists('nope-device')).toBe(false);
    expect((await gw.postern.emailSettings.get()).messagesPerMinute).toBe(12);
    expect((await gw.postern.relaySettings.get()).allowInsecureAuth).toBe(false);
    expect((await gw.postern.audit.recent(1))[0]!.id).toBe(before[0]!.id);
  });

  test('an operate token cannot add device accounts', async () => {
    const result = await api('/devices', token.operate, { method: 'POST', body: { username: 'nope-device' } });
    expect(result.status).toBe(403);
    expect(result.body.error.code).toBe('POSTERN_API_SCOPE_INSUFFICIENT');
  });

  test('no token, or only a session cookie: 401 with WWW-Authenticate: Bearer, and no cookie is set', async () => {
    const none = await curl([url('/status')]);
    expect(none.status).toBe(401);
    expect(none.headers).toMatch(/^www-authenticate: Bearer realm="Postern API"/im);
    expect(none.body.error.code).toBe('POSTERN_API_TOKEN_MISSING');
    const cookieOnly = await api('/queue', undefined, { headers: { cookie: admin.cookieHeader } });
    expect(cookieOnly.status).toBe(401);
    expect(cookieOnly.body.error.code).toBe('POSTERN_API_TOKEN_MISSING');
    expect(cookieOnly.headers.get('set-cookie')).toBeNull();
    const withBoth = await api('/queue', token.read, { headers: { cookie: admin.cookieHeader } });
    expect(withBoth.status).toBe(200);
    expect(withBoth.headers.get('set-cookie')).toBeNull();
  });

  test('a malformed or unknown token: 401 POSTERN_API_TOKEN_INVALID', async () => {
    for (const header of ['Basic YWRtaW46YWRtaW4=', 'Bearer', 'Bearer pst_short', `Bearer pst_${'A'.repeat(43)}`]) {
      const result = await api('/status', undefined, { headers: { authorization: header } });
      expect(result.status, header).toBe(401);
      expect(result.body.error.code, header).toBe('POSTERN_API_TOKEN_INVALID');
      expect(result.headers.get('www-authenticate')).toContain('error="invalid_token"');
    }
  });

  test('a revoked token: 401 POSTERN_API_TOKEN_REVOKED, and the revocation is audited', async () => {
    const secret = await createToken(admin, 'short-lived', 'read');
    expect((await api('/status', secret)).status).toBe(200);
    const revoked = (await gw.postern.apiTokens.list()).find((t) => t.name === 'short-lived')!;
    await admin.get('/settings/api-tokens');
    await admin.post(`/settings/api-tokens/${revoked.id}/revoke`);
    expect(admin.lastStatus).toBe(303);
    const { status, headers, body } = await curl([...bearer(secret), url('/status')]);
    expect(status).toBe(401);
    expect(headers).toMatch(/^www-authenticate: Bearer .*error="invalid_token"/im);
    expect(body.error.code).toBe('POSTERN_API_TOKEN_REVOKED');
    const audit = await gw.postern.audit.recent(10);
    expect(audit.find((e) => e.action === 'api-token.revoked')).toMatchObject({ actor: 'admin' });
    expect(audit.find((e) => e.action === 'api.auth_failed')).toMatchObject({ actor: 'short-lived', detail: 'from 127.0.0.1: revoked' });
  });

  test('an expired token: 401 POSTERN_API_TOKEN_EXPIRED', async () => {
    const twoDaysAgo = Date.now() - 2 * 24 * 60 * 60_000;
    const { secret } = await new ApiTokens(gw.postern.store, { now: () => twoDaysAgo }).create({ name: 'yesterday', scope: 'administer', expiresInDays: 1, createdBy: 'admin' });
    const result = await api('/status', secret);
    expect(result.status).toBe(401);
    expect(result.body.error.code).toBe('POSTERN_API_TOKEN_EXPIRED');
    expect(result.headers.get('www-authenticate')).toContain('Bearer');
    expect(await admin.get('/settings/api-tokens')).toMatch(/yesterday[\s\S]*\(Expired\)/);
  });

  test('an unknown endpoint: 404 POSTERN_API_NOT_FOUND; an unknown message or device likewise', async () => {
    const missing = await api('/nothing-here', token.read);
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('POSTERN_API_NOT_FOUND');
    const message = await api('/queue/00000000-0000-4000-8000-000000000000/retry', token.operate, { method: 'POST' });
    expect(message.status).toBe(404);
    expect(message.body.error.code).toBe('POSTERN_API_NOT_FOUND');
  });
});

describe('hostile input never gives a 5xx', () => {
  test('malformed JSON, a form body, a huge body', async () => {
    const malformed = await api('/devices', token.administer, { method: 'POST', body: '{"username": "x",' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.code).toBe('POSTERN_WEB_INVALID_INPUT');
    const form = await api('/devices', token.administer, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(form.status).toBe(415);
    const huge = await api('/devices', token.administer, { method: 'POST', body: JSON.stringify({ username: 'x'.repeat(2 * 1024 * 1024) }) });
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe('POSTERN_WEB_INVALID_INPUT');
    const wrongTypes = await api('/devices', token.administer, { method: 'POST', body: { username: 42, allowedSenders: 'one' } });
    expect(wrongTypes.status).toBe(400);
    expect(wrongTypes.body.error.message).toContain('body.username');
    const array = await api('/settings/relay', token.administer, { method: 'PATCH', body: [1, 2] });
    expect(array.status).toBe(400);
  });

  test('control characters in a device name, in the body and in the path', async () => {
    for (const username of ['scan\u0000ner', 'scan\r\nner', '\u001b[31mred', 'x\u2028y']) {
      const result = await api('/devices', token.administer, { method: 'POST', body: { username, password: 'long-enough-password' } });
      expect(result.status, JSON.stringify(username)).toBe(400);
      expect(result.body.error.fields.username).toBe('User Name must be 1 to 64 characters: letters, digits, and . _ @ + -');
    }
    for (const path of ['/devices/scan%00ner', '/devices/%0d%0aSet-Cookie:%20x=1', '/devices/%ff%fe', '/queue/%00/retry']) {
      const result = await api(path, token.administer, { method: path.endsWith('retry') ? 'POST' : 'DELETE' });
      expect(result.status, path).toBeGreaterThanOrEqual(400);
      expect(result.status, path).toBeLessThan(500);
      expect(result.headers.get('set-cookie')).toBeNull();
    }
    expect((await gw.postern.devices.list()).some((d) => /[\u0000-\u001f]/.test(d.username))).toBe(false);
  });
});

describe('the OpenAPI document', () => {
  test('parses, is OpenAPI 3.1 with the bearer scheme, and lists every API route and nothing else', async () => {
    const response = await fetch(url('/openapi.json'));
    expect(response.status).toBe(200);
    const document = JSON.parse(await response.text());
    expect(document.openapi).toBe('3.1.0');
    expect(document.components.securitySchemes.bearerAuth).toEqual(expect.objectContaining({ type: 'http', scheme: 'bearer' }));
    expect(document.security).toEqual([{ bearerAuth: [] }]);
    const routes = Object.entries(document.paths as Record<string, Record<string, unknown>>).flatMap(([path, methods]) =>
      Object.keys(methods).filter((m) => m !== 'head').map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(routes.sort()).toEqual(
      [
        'GET /api/v1/openapi.json',
        'GET /api/v1/status',
        'GET /api/v1/accounts',
        'GET /api/v1/queue',
        'POST /api/v1/queue/{id}/retry',
        'DELETE /api/v1/queue/{id}',
        'GET /api/v1/log',
        'GET /api/v1/devices',
        'POST /api/v1/devices',
        'PATCH /api/v1/devices/{name}',
        'DELETE /api/v1/devices/{name}',
        'GET /api/v1/settings',
        'PATCH /api/v1/settings/email',
        'PATCH /api/v1/settings/relay',
      ].sort(),
    );
    expect(document.paths['/api/v1/openapi.json'].get.security).toEqual([]);
    const status = document.paths['/api/v1/status'].get;
    expect(Object.keys(status.responses)).toEqual(expect.arrayContaining(['200', '401', '403', '429']));
    expect(JSON.stringify(status.responses['200'])).toContain('tokenStatus');
  });
});

describe('logs', () => {
  test('no token ever reaches a log line', () => {
    const logs = gw.logs();
    expect(logs).toContain('API authentication failed');
    for (const secret of Object.values(token)) expect(logs).not.toContain(secret.slice(4));
    expect(logs).not.toMatch(/pst_[A-Za-z0-9_-]{20,}/);
    // A token that ends up in free text (an error message) is scrubbed too.
    const scrubbed = scrubSecrets(`Authorization: Bearer ${token.read}`);
    expect(scrubbed).toContain('[redacted]');
    expect(scrubbed).not.toContain(token.read.slice(4, 40));
  });
});
