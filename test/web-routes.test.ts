/**
 * The Remote UI's route plugins through `inject()` (no socket): for each plugin, a visitor who is not signed
 * in is sent to the login page; a malformed id in the address, a missing or wrongly typed field, an
 * oversized value and a repeated key each end as the error page or the form's own message (never Fastify's
 * JSON 400, never a 5xx); and a valid request does what it did before.
 */
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { z } from 'zod';
import { MICROSOFT_DEFAULT_ENDPOINT } from '../src/oauth/profiles.js';
import { buildWebApp } from '../src/web/app.js';
import { createTestPki } from './support/test-ca.js';
import { ADMIN_PASSWORD, startTestPostern, webDependenciesOf, type TestPostern } from './support/postern.js';

type Fields = Record<string, string | string[]>;

/** A browser over `inject()`: a cookie jar and the CSRF token of the last page. */
class InjectClient {
  readonly #cookies = new Map<string, string>();
  #csrf = '';
  last!: LightMyRequestResponse;

  constructor(readonly app: FastifyInstance) {}

  get status(): number {
    return this.last.statusCode;
  }

  get location(): string | undefined {
    return this.last.headers.location as string | undefined;
  }

  async #send(method: 'GET' | 'POST', url: string, payload?: string, contentType = 'application/x-www-form-urlencoded'): Promise<string> {
    const cookie = [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    this.last = await this.app.inject({
      method,
      url,
      headers: { ...(cookie ? { cookie } : {}), ...(payload === undefined ? {} : { 'content-type': contentType }) },
      ...(payload === undefined ? {} : { payload }),
    });
    for (const c of this.last.cookies as Array<{ name: string; value: string; expires?: Date }>) {
      if (c.value === '' || (c.expires && c.expires.getTime() < Date.now())) this.#cookies.delete(c.name);
      else this.#cookies.set(c.name, c.value);
    }
    const token = /name="_csrf" value="([^"]+)"/.exec(this.last.body)?.[1];
    if (token) this.#csrf = token;
    return this.last.body;
  }

  get(url: string): Promise<string> {
    return this.#send('GET', url);
  }

  /** A form post with the current CSRF token; an array value is sent as that key repeated. */
  post(url: string, fields: Fields = {}): Promise<string> {
    const body = new URLSearchParams({ _csrf: this.#csrf });
    for (const [name, value] of Object.entries(fields)) for (const v of [value].flat()) body.append(name, v);
    return this.#send('POST', url, body.toString());
  }

  /** A JSON body instead of a form (Fastify parses it; the schema still applies). */
  postJson(url: string, fields: Record<string, unknown>): Promise<string> {
    return this.#send('POST', url, JSON.stringify({ _csrf: this.#csrf, ...fields }), 'application/json');
  }

  async login(username = 'admin', password = ADMIN_PASSWORD): Promise<void> {
    await this.get('/login');
    await this.post('/login', { username, password, next: '/' });
    expect(this.status, 'login').toBe(303);
    await this.get('/');
  }
}

let gw: TestPostern;
let admin: InjectClient;

beforeAll(async () => {
  gw = await startTestPostern();
  admin = new InjectClient(await gw.postern.web.app());
  await admin.login();
});

afterAll(async () => {
  await gw?.close();
});

/** The Remote UI's error page for a request that failed its schema, and the log line that goes with it. */
function expectInvalidInput(client: InjectClient, ...phrases: string[]): void {
  expect(client.status, client.last.body.slice(0, 300)).toBe(400);
  expect(client.last.headers['content-type']).toMatch(/^text\/html/);
  const html = client.last.body;
  expect(html).toContain('<h1>Request Not Accepted</h1>');
  expect(html).toContain('Go back, reload the page and try again.');
  for (const phrase of phrases) expect(html).toContain(phrase);
  expect(html).not.toContain('"statusCode"');
  expect(gw.logs()).toContain('"code":"POSTERN_WEB_INVALID_INPUT"');
}

/** Every page and form of every plugin, with a sample id where the address has one. */
const id = randomUUID();
const protectedRoutes: Array<[plugin: string, method: 'GET' | 'POST', url: string]> = [
  ['portal', 'GET', '/'],
  ['portal', 'GET', '/settings'],
  ['portal', 'GET', '/settings/send'],
  ['portal', 'GET', '/settings/audit'],
  ['users', 'GET', '/settings/users'],
  ['users', 'POST', '/settings/users/add'],
  ['users', 'POST', `/settings/users/${id}/remove`],
  ['users', 'GET', '/settings/password'],
  ['users', 'POST', '/settings/password'],
  ['ca-certificates', 'GET', '/settings/send/ca-certificates'],
  ['ca-certificates', 'POST', '/settings/send/ca-certificates/add'],
  ['ca-certificates', 'POST', `/settings/send/ca-certificates/${id}/remove`],
  ['queue', 'GET', '/settings/queue'],
  ['queue', 'POST', `/settings/queue/${id}/retry`],
  ['queue', 'POST', '/settings/queue/retry-all'],
  ['queue', 'POST', `/settings/queue/${id}/delete`],
  ['queue', 'GET', '/settings/log'],
  ['relay-settings', 'GET', '/settings/send/relay'],
  ['relay-settings', 'POST', '/settings/send/relay'],
  ['relay-settings', 'POST', '/settings/send/relay/devices'],
  ['relay-settings', 'GET', `/settings/send/relay/devices/${id}/edit`],
  ['relay-settings', 'POST', `/settings/send/relay/devices/${id}/edit`],
  ['relay-settings', 'POST', `/settings/send/relay/devices/${id}/remove`],
  ['relay-settings', 'POST', '/settings/send/relay/certificate'],
  ['relay-settings', 'POST', '/settings/send/relay/certificate/generate'],
  ['email-settings', 'GET', '/settings/send/email'],
  ['email-settings', 'POST', '/settings/send/email'],
  ['email-settings', 'POST', '/settings/send/email/test'],
  ['notifications', 'GET', '/settings/notifications'],
  ['notifications', 'POST', '/settings/notifications'],
  ['notifications', 'POST', '/settings/notifications/test'],
  ['notifications', 'POST', '/settings/notifications/delete'],
  ['oauth-microsoft', 'GET', '/settings/send/oauth-microsoft'],
  ['oauth-microsoft', 'GET', '/settings/send/oauth-microsoft/edit'],
  ['oauth-microsoft', 'POST', '/settings/send/oauth-microsoft/edit'],
  ['oauth-microsoft', 'POST', '/settings/send/oauth-microsoft/user-code'],
  ['oauth-account', 'GET', '/settings/send/oauth-microsoft/status'],
  ['oauth-account', 'POST', '/settings/send/oauth-microsoft/token/delete'],
  ['oauth-google', 'GET', '/settings/send/oauth-google'],
  ['oauth-google', 'GET', '/settings/send/oauth-google/edit'],
  ['oauth-google', 'POST', '/settings/send/oauth-google/edit'],
  ['oauth-google', 'GET', '/settings/send/oauth-google/register'],
  ['oauth-google', 'POST', '/settings/send/oauth-google/register'],
  ['oauth-account', 'GET', '/settings/send/oauth-google/status'],
  ['oauth-account', 'POST', '/settings/send/oauth-google/token/delete'],
];

describe('a visitor who is not signed in', () => {
  test.each(protectedRoutes)('%s: %s %s is sent to the login page', async (_plugin, method, url) => {
    const visitor = new InjectClient(await gw.postern.web.app());
    await visitor.get('/login');
    if (method === 'GET') await visitor.get(url);
    // What the form holds does not matter: the login comes first (a repeated key, an oversized value).
    else await visitor.post(url, { username: ['a', 'b'], enabled: 'x'.repeat(10_000) });
    expect(visitor.status).toBe(303);
    expect(visitor.location).toBe(method === 'GET' ? `/login?next=${encodeURIComponent(url)}` : '/login');
  });

  test('an id in the address that is not one still goes to the login page first', async () => {
    const visitor = new InjectClient(await gw.postern.web.app());
    await visitor.post('/settings/queue/not-a-uuid/retry');
    expect(visitor.status).toBe(303);
    expect(visitor.location).toBe('/login');
  });
});

describe('auth', () => {
  test('a repeated or oversized user name gets the error page, not a login attempt', async () => {
    const web = new InjectClient(await gw.postern.web.app());
    await web.get('/login');
    await web.post('/login', { username: ['admin', 'admin'], password: ADMIN_PASSWORD });
    expectInvalidInput(web, 'username was sent more than once');
    await web.get('/login');
    await web.post('/login', { username: 'a'.repeat(5000), password: ADMIN_PASSWORD });
    expectInvalidInput(web, 'username is longer than 4096 characters');
  });

  test('a missing password is the form\'s own message', async () => {
    const web = new InjectClient(await gw.postern.web.app());
    await web.get('/login');
    const html = await web.post('/login', { username: 'nobody' });
    expect(web.status).toBe(401);
    expect(html).toContain('The user name or password is incorrect.');
  });

  test('a next value that cannot be used (repeated, too long) means the portal, as before', async () => {
    const web = new InjectClient(await gw.postern.web.app());
    expect(await web.get(`/login?next=${encodeURIComponent('/settings')}&next=%2Fevil`)).toContain('name="next" value="/"');
    expect(web.status).toBe(200);
    await web.post('/login', { username: 'admin', password: ADMIN_PASSWORD, next: `/${'a'.repeat(5000)}` });
    expect(web.status).toBe(303);
    expect(web.location).toBe('/');
  });

  test('a valid login goes to next; Log Out ends the session', async () => {
    const web = new InjectClient(await gw.postern.web.app());
    await web.get('/login');
    await web.post('/login', { username: 'admin', password: ADMIN_PASSWORD, next: '/settings/queue' });
    expect(web.status).toBe(303);
    expect(web.location).toBe('/settings/queue');
    await web.get('/settings/queue');
    expect(web.status).toBe(200);
    await web.post('/logout');
    expect(web.location).toBe('/login?loggedOut=1');
    await web.get('/settings/queue');
    expect(web.status).toBe(303);
  });

  test('a repeated CSRF token is no token: the form is refused as expired, not a 5xx', async () => {
    const web = new InjectClient(await gw.postern.web.app());
    await web.get('/login');
    // The client sends its own token; this one is a second `_csrf`.
    await web.post('/login', { _csrf: 'another', username: 'admin', password: ADMIN_PASSWORD });
    expect(web.status).toBe(403);
    expect(web.last.body).toContain('Form Expired');
  });

  test('a body sent as JSON is held to the same schema', async () => {
    const web = new InjectClient(await gw.postern.web.app());
    await web.get('/login');
    await web.postJson('/login', { username: 42, password: ADMIN_PASSWORD });
    expectInvalidInput(web, 'username is not text');
  });
});

describe('portal', () => {
  test('the pages render; parameters they do not take are ignored', async () => {
    for (const url of ['/', '/settings', '/settings/send', '/settings/audit?x=1&x=2']) {
      await admin.get(url);
      expect(admin.status, url).toBe(200);
    }
    expect(admin.last.body).toContain('Audit Log');
  });
});

describe('users', () => {
  test('a malformed id in the address gets the error page', async () => {
    await admin.get('/settings/users');
    await admin.post('/settings/users/not-a-uuid/remove');
    expectInvalidInput(admin, 'The address of this page is not valid: id is not an id Postern gave out.');
  });

  test('missing fields are the form\'s own messages; a long user name too, up to the field\'s limit', async () => {
    await admin.get('/settings/users');
    let html = await admin.post('/settings/users/add', {});
    expect(admin.status).toBe(400);
    expect(html).toContain('User name must be 1 to 64 characters');
    expect(html).toContain('Password must be at least 8 characters long.');
    html = await admin.post('/settings/users/add', { username: 'u'.repeat(100), password: 'long-enough-password', role: 'no-such-role' });
    expect(admin.status).toBe(400);
    expect(html).toContain('User name must be 1 to 64 characters');
    // A role that is not one adds nobody, even with a good name and password.
    await admin.post('/settings/users/add', { username: 'no-role-user', password: 'long-enough-password', role: 'Root' });
    expect(admin.status).toBe(400);
    expect(await gw.postern.users.exists('no-role-user')).toBe(false);
  });

  test('an oversized value and a repeated key get the error page; the password is never in the log', async () => {
    await admin.get('/settings/users');
    const secret = `secret-${randomUUID()}`;
    await admin.post('/settings/users/add', { username: 'x'.repeat(4097), password: secret, role: ['GeneralUser', 'Administrator'] });
    expectInvalidInput(admin, 'The form was not accepted', 'username is longer than 4096 characters', 'role was sent more than once');
    expect(admin.last.body).not.toContain(secret);
    expect(gw.logs()).not.toContain(secret);
    expect(await gw.postern.users.exists('x'.repeat(4097))).toBe(false);
  });

  test('keys no form of ours has (__proto__, constructor, extra fields) are ignored', async () => {
    await admin.get('/settings/users');
    await admin.post('/settings/users/add', { ['__proto__']: 'x', constructor: 'y', isAdmin: 'on', username: 'extra-keys', password: 'extra-keys-password', role: 'GeneralUser' });
    expect(admin.status).toBe(303);
    expect((await gw.postern.users.list()).find((u) => u.username === 'extra-keys')?.role).toBe('GeneralUser');
  });

  test('a valid form adds the user, and removing works by id', async () => {
    await admin.get('/settings/users');
    await admin.post('/settings/users/add', { username: 'routes-user', password: 'routes-user-password', role: 'GeneralUser' });
    expect(admin.status).toBe(303);
    const user = (await gw.postern.users.list()).find((u) => u.username === 'routes-user')!;
    expect(user.role).toBe('GeneralUser');
    await admin.get('/settings/users');
    await admin.post(`/settings/users/${user.id}/remove`);
    expect(admin.status).toBe(303);
    expect(await admin.get('/settings/users')).toContain('Removed routes-user.');
    expect(await gw.postern.users.exists('routes-user')).toBe(false);
  });

  test('Change Password: a wrong current password is the form\'s own message; a repeated field the error page', async () => {
    await admin.get('/settings/password');
    const html = await admin.post('/settings/password', { current: 'wrong', password: 'new-password-1', confirm: 'new-password-1' });
    expect(admin.status).toBe(400);
    expect(html).toContain('The current password is incorrect.');
    await admin.post('/settings/password', { current: ADMIN_PASSWORD, password: ['a', 'b'], confirm: 'b' });
    expectInvalidInput(admin, 'password was sent more than once');
  });
});

describe('ca-certificates', () => {
  test('a malformed id gets the error page; text that is not PEM is the form\'s own message', async () => {
    await admin.get('/settings/send/ca-certificates');
    await admin.post('/settings/send/ca-certificates/not-a-uuid/remove');
    expectInvalidInput(admin, 'id is not an id Postern gave out');
    await admin.get('/settings/send/ca-certificates');
    await admin.post('/settings/send/ca-certificates/add', { pem: 'not a certificate' });
    expect(admin.status).toBe(400);
    expect(admin.last.body).toContain('CA Certificate Settings');
    await admin.post('/settings/send/ca-certificates/add', { pem: ['a', 'b'] });
    expectInvalidInput(admin, 'pem was sent more than once');
  });

  test('a valid certificate is registered and removed', async () => {
    const pki = await createTestPki('Routes Test CA');
    await admin.get('/settings/send/ca-certificates');
    await admin.post('/settings/send/ca-certificates/add', { pem: pki.ca.cert });
    expect(admin.status).toBe(303);
    const [cert] = (await gw.postern.caCertificates.list()).filter((c) => c.subject.includes('Routes Test CA'));
    expect(cert).toBeDefined();
    await admin.get('/settings/send/ca-certificates');
    await admin.post(`/settings/send/ca-certificates/${cert!.id}/remove`);
    expect(admin.status).toBe(303);
    expect(await admin.get('/settings/send/ca-certificates')).toContain('Removed');
  });
});

describe('queue', () => {
  test('regression: /settings/queue/not-a-uuid/retry and /delete get the error page, not a 5xx', async () => {
    for (const action of ['retry', 'delete']) {
      await admin.get('/settings/queue');
      await admin.post(`/settings/queue/not-a-uuid/${action}`);
      expectInvalidInput(admin, 'The address of this page is not valid: id is not an id Postern gave out.');
    }
  });

  test('an id that is no longer waiting, and Retry All Now with nothing to retry, say so as before', async () => {
    await admin.get('/settings/queue');
    await admin.post(`/settings/queue/${randomUUID()}/retry`);
    expect(admin.status).toBe(303);
    expect(await admin.get('/settings/queue')).toContain('That message is no longer waiting');
    await admin.post(`/settings/queue/${randomUUID()}/delete`);
    expect(await admin.get('/settings/queue')).toContain('That message cannot be deleted now');
    await admin.post('/settings/queue/retry-all');
    expect(admin.status).toBe(303);
    expect(await admin.get('/settings/queue')).toContain('No message is deferred or held; there is nothing to retry.');
  });

  test('the Log filter ignores an id that is not one (malformed or repeated), as before', async () => {
    for (const query of ['?id=not-a-uuid', `?id=${randomUUID()}&id=${randomUUID()}`, '']) {
      const html = await admin.get(`/settings/log${query}`);
      expect(admin.status, query).toBe(200);
      expect(html).toContain('What happened to each message, newest first');
    }
    const html = await admin.get(`/settings/log?id=${id}`);
    expect(admin.status).toBe(200);
    expect(html).toContain('The history of one message');
  });
});

describe('relay-settings', () => {
  test('malformed ids get the error page', async () => {
    await admin.get('/settings/send/relay/devices/not-a-uuid/edit');
    expectInvalidInput(admin, 'id is not an id Postern gave out');
    for (const action of ['edit', 'remove']) {
      await admin.get('/settings/send/relay');
      await admin.post(`/settings/send/relay/devices/not-a-uuid/${action}`);
      expectInvalidInput(admin, 'id is not an id Postern gave out');
    }
  });

  test('a check box that is not "on", an oversized list and a repeated key get the error page', async () => {
    await admin.get('/settings/send/relay');
    await admin.post('/settings/send/relay', { allowedNetworks: '127.0.0.1', maxMessageSizeMb: '10', bareNewlines: 'reject', allowInsecureAuth: 'yes' });
    expectInvalidInput(admin, 'allowInsecureAuth is a check box');
    await admin.post('/settings/send/relay', { allowedNetworks: '1'.repeat(70_000) });
    expectInvalidInput(admin, 'allowedNetworks is longer than 65536 characters');
    await admin.post('/settings/send/relay/devices', { username: 'scanner', password: ['a', 'b'] });
    expectInvalidInput(admin, 'password was sent more than once');
  });

  test('missing fields are the form\'s own messages', async () => {
    await admin.get('/settings/send/relay');
    let html = await admin.post('/settings/send/relay', {});
    expect(admin.status).toBe(400);
    expect(html).toContain('Enter a size from 1 to');
    html = await admin.post('/settings/send/relay/devices', {});
    expect(admin.status).toBe(400);
    expect(html).toContain('User Name must be 1 to 64 characters');
    expect(html).toContain('Password must be at least 8 characters long.');
  });

  test('a valid device account is added, edited (and Cancel leaves it), and removed', async () => {
    await admin.get('/settings/send/relay');
    await admin.post('/settings/send/relay/devices', { username: 'routes-scanner', password: 'routes-scanner-password', allowedSenders: 'scanner@example.test' });
    expect(admin.status).toBe(303);
    const device = (await gw.postern.devices.list()).find((d) => d.username === 'routes-scanner')!;
    expect(device.allowedSenders).toEqual(['scanner@example.test']);
    await admin.get(`/settings/send/relay/devices/${device.id}/edit`);
    expect(admin.status).toBe(200);
    await admin.post(`/settings/send/relay/devices/${device.id}/edit`, { allowedSenders: '@example.test', cancel: '1' });
    expect(admin.location).toBe('/settings/send/relay');
    expect((await gw.postern.devices.find(device.id))!.allowedSenders).toEqual(['scanner@example.test']);
    await admin.get(`/settings/send/relay/devices/${device.id}/edit`);
    await admin.post(`/settings/send/relay/devices/${device.id}/edit`, { allowedSenders: '@example.test' });
    expect(admin.status).toBe(303);
    expect((await gw.postern.devices.find(device.id))!.allowedSenders).toEqual(['@example.test']);
    await admin.get('/settings/send/relay');
    await admin.post(`/settings/send/relay/devices/${device.id}/remove`);
    expect(admin.status).toBe(303);
    expect(await gw.postern.devices.find(device.id)).toBeUndefined();
  });
});

describe('email-settings', () => {
  test('a repeated key and an oversized value get the error page; a bad address is the form\'s own message', async () => {
    await admin.get('/settings/send/email');
    await admin.post('/settings/send/email', { accountId: ['microsoft', 'google'] });
    expectInvalidInput(admin, 'accountId was sent more than once');
    await admin.post('/settings/send/email/test', { testTo: 'a'.repeat(5000) });
    expectInvalidInput(admin, 'testTo is longer than 4096 characters');
    const html = await admin.post('/settings/send/email/test', {});
    expect(admin.status).toBe(400);
    expect(html).toContain('Enter the e-mail address the test e-mail goes to.');
  });

  test('a valid form is saved', async () => {
    await admin.get('/settings/send/email');
    await admin.post('/settings/send/email', {
      accountId: 'google',
      smtpHost: '',
      smtpPort: '',
      tlsMode: 'tls',
      verifyServerCertificate: 'on',
      addCnToVerificationItems: 'on',
      senderAddress: 'routes@example.test',
      allowedFromAddresses: '',
      messagesPerMinute: '',
    });
    expect(admin.status).toBe(303);
    const settings = await gw.postern.emailSettings.get();
    expect(settings.accountId).toBe('google');
    expect(settings.senderAddress).toBe('routes@example.test');
    expect(settings.tls.verifyServerCertificate).toBe(true);
  });
});

describe('notifications', () => {
  test('a check box that is not "on" and an oversized URL get the error page; a bad URL is the form\'s own message', async () => {
    await admin.get('/settings/notifications');
    await admin.post('/settings/notifications', { webhookUrl: 'https://hooks.example.test/x', format: 'json', 'event-messages-held': 'maybe' });
    expectInvalidInput(admin, 'event-messages-held is a check box');
    await admin.post('/settings/notifications', { webhookUrl: `https://example.test/${'a'.repeat(20_000)}` });
    expectInvalidInput(admin, 'webhookUrl is longer than 16384 characters');
    const html = await admin.post('/settings/notifications', { webhookUrl: `https://example.test/${'a'.repeat(2100)}`, format: 'json' });
    expect(admin.status).toBe(400);
    expect(html).toContain('longer than 2048 characters');
  });

  test('Delete with nothing configured says notifications are off, as before', async () => {
    await admin.get('/settings/notifications');
    await admin.post('/settings/notifications/delete');
    expect(admin.status).toBe(303);
    expect(await admin.get('/settings/notifications')).toContain('The Webhook URL was deleted. Notifications are off.');
  });
});

describe('oauth-microsoft, oauth-google and oauth-account', () => {
  test('a check box or a Cancel button with a value the form does not send gets the error page', async () => {
    await admin.get('/settings/send/oauth-microsoft/edit');
    await admin.post('/settings/send/oauth-microsoft/edit', { enabled: 'true', endpoint: MICROSOFT_DEFAULT_ENDPOINT });
    expectInvalidInput(admin, 'enabled is a check box');
    await admin.get('/settings/send/oauth-google/edit');
    await admin.post('/settings/send/oauth-google/edit', { cancel: ['1', '1'] });
    expectInvalidInput(admin, 'cancel was sent more than once');
    await admin.get('/settings/send/oauth-google/edit');
    await admin.post('/settings/send/oauth-google/edit', { clientSecret: 's'.repeat(5000) });
    expectInvalidInput(admin, 'clientSecret is longer than 4096 characters');
  });

  test('Cancel leaves the screen; a valid form with OAuth off is saved', async () => {
    await admin.get('/settings/send/oauth-microsoft/edit');
    await admin.post('/settings/send/oauth-microsoft/edit', { cancel: '1' });
    expect(admin.location).toBe('/settings/send/oauth-microsoft');
    await admin.get('/settings/send/oauth-microsoft/edit');
    await admin.post('/settings/send/oauth-microsoft/edit', { endpoint: MICROSOFT_DEFAULT_ENDPOINT, clientId: randomUUID(), verifyServerCertificate: 'on' });
    expect(admin.status).toBe(303);
    expect(await admin.get('/settings/send/oauth-microsoft')).toContain('Settings saved. OAuth 2.0 (Microsoft) is not in use.');
    await admin.get('/settings/send/oauth-google/register');
    await admin.post('/settings/send/oauth-google/register', { cancel: '1' });
    expect(admin.location).toBe('/settings/send/oauth-google');
  });

  test('Get New User Code with Microsoft off is refused with the page\'s own message; Delete Token works', async () => {
    await admin.get('/settings/send/oauth-microsoft');
    await admin.post('/settings/send/oauth-microsoft/user-code');
    expect(admin.status).toBe(303);
    expect(await admin.get('/settings/send/oauth-microsoft')).toContain('Select Use OAuth 2.0 (Microsoft) under Basic Settings first.');
    await admin.post('/settings/send/oauth-google/token/delete');
    expect(admin.status).toBe(303);
    expect(await admin.get('/settings/send/oauth-google')).toContain('The token was deleted. Token Status is Not Registered.');
    await admin.get('/settings/send/oauth-google/status?x=1&x=2');
    expect(admin.status).toBe(200);
  });

  test('an oversized pasted authorization code gets the error page', async () => {
    await admin.get('/settings/send/oauth-google/register');
    await admin.post('/settings/send/oauth-google/register', { code: 'c'.repeat(20_000) });
    expectInvalidInput(admin, 'code is longer than 16384 characters');
  });
});

describe('health', () => {
  test('/healthz and /metrics stay JSON and text whatever the query', async () => {
    const health = await (await gw.postern.web.app()).inject({ method: 'GET', url: '/healthz?a=1&a=2' });
    expect(health.statusCode).toBe(200);
    expect(health.headers['content-type']).toMatch(/^application\/json/);
    expect(health.json()).toEqual({ status: 'ok' });
    const metrics = await (await gw.postern.web.app()).inject({ method: 'GET', url: '/metrics?x=1' });
    expect(metrics.statusCode).toBe(200);
    expect(metrics.body).toContain('postern_queue_messages');
  });
});

describe('a plugin with its own prefix', () => {
  test('is routed under its prefix, keeps its own error handler (JSON), and the Remote UI keeps its error page', async () => {
    const p = gw.postern;
    const api: FastifyPluginAsyncZod = async (app) => {
      app.setErrorHandler(async (error: { validation?: unknown; statusCode?: number }, _request, reply) =>
        reply.code(error.statusCode ?? 500).send({ error: error.validation ? 'invalid request' : 'failed' }),
      );
      app.get('/things/:id', { schema: { params: z.object({ id: z.uuid() }) } }, async (request) => ({ id: request.params.id }));
    };
    const app = await buildWebApp({
      ...webDependenciesOf(p),
      plugins: [(web) => web.register(api, { prefix: '/api/test' })],
    });
    try {
      const thing = randomUUID();
      const ok = await app.inject({ method: 'GET', url: `/api/test/things/${thing}` });
      expect(ok.statusCode).toBe(200);
      expect(ok.json()).toEqual({ id: thing });
      const bad = await app.inject({ method: 'GET', url: '/api/test/things/not-a-uuid' });
      expect(bad.statusCode).toBe(400);
      expect(bad.json()).toEqual({ error: 'invalid request' });
      expect((await app.inject({ method: 'GET', url: '/things/not-a-uuid' })).statusCode).toBe(404);
      const visitor = new InjectClient(app);
      await visitor.get('/login');
      await visitor.post('/login', { username: ['a', 'b'] });
      expect(visitor.status).toBe(400);
      expect(visitor.last.body).toContain('Request Not Accepted');
    } finally {
      await app.close();
    }
  });
});
