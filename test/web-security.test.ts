/**
 * The Remote UI's defences: login and rate limiting, sessions, CSRF, roles, escaping, headers, health and
 * metrics endpoints.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ADMIN_PASSWORD, startTestPostern, WebClient, type TestPostern } from './support/postern.js';

let gw: TestPostern;

beforeAll(async () => {
  gw = await startTestPostern();
  await gw.postern.users.create('viewer', 'viewer-password', 'GeneralUser');
  await gw.postern.users.create('netadmin', 'netadmin-password', 'NetworkAdministrator');
  await gw.postern.users.create('clumsy', 'clumsy-password', 'GeneralUser');
});

afterAll(async () => {
  await gw?.close();
});

describe('login', () => {
  test('pages need a login; the login page comes back after it', async () => {
    const web = new WebClient(gw.url);
    await web.get('/settings/send/oauth-microsoft');
    expect(web.lastStatus).toBe(303);
    expect(web.lastLocation).toBe('/login?next=%2Fsettings%2Fsend%2Foauth-microsoft');
    await web.get('/login');
    await web.post('/login', { username: 'admin', password: ADMIN_PASSWORD, next: '/settings/send/oauth-microsoft' });
    expect(web.lastLocation).toBe('/settings/send/oauth-microsoft');
  });

  test('a wrong password is refused with a clear message; repeated failures are rate limited', async () => {
    const web = new WebClient(gw.url);
    await web.get('/login');
    let html = await web.post('/login', { username: 'clumsy', password: 'wrong' });
    expect(web.lastStatus).toBe(401);
    expect(html).toContain('The user name or password is incorrect.');
    for (let i = 0; i < 4; i++) await web.post('/login', { username: 'clumsy', password: 'wrong' });
    html = await web.post('/login', { username: 'clumsy', password: 'clumsy-password' });
    expect(web.lastStatus).toBe(429);
    expect(html).toMatch(/Too many failed login attempts\. Try again in \d+ minutes? \(after \d\d:\d\d UTC\)\./);
  });

  test('the session cookie is HttpOnly and SameSite, and a new session id is issued at login', async () => {
    const response = await fetch(`${gw.url}/login`);
    const before = response.headers.getSetCookie().join(';');
    const web = new WebClient(gw.url);
    await web.get('/login');
    const token = /name="_csrf" value="([^"]+)"/.exec(await (await fetch(`${gw.url}/login`)).text());
    expect(token).toBeTruthy();
    const login = await fetch(`${gw.url}/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username: 'admin', password: ADMIN_PASSWORD }),
    });
    // Without the CSRF secret from a session, even correct credentials are refused.
    expect(login.status).toBe(403);
    await web.login();
    const cookies = (await fetch(`${gw.url}/login`)).headers.getSetCookie();
    for (const cookie of [...cookies, before].filter((c) => c.includes('postern_session'))) {
      expect(cookie).toMatch(/HttpOnly/i);
      expect(cookie).toMatch(/SameSite=Lax/i);
    }
  });

  test('only same-site paths are followed after login', async () => {
    const web = new WebClient(gw.url);
    await web.get('/login');
    await web.post('/login', { username: 'admin', password: ADMIN_PASSWORD, next: '//evil.example/x' });
    expect(web.lastLocation).toBe('/');
  });

  test('Log Out ends the session', async () => {
    const web = new WebClient(gw.url);
    await web.login();
    await web.post('/logout');
    await web.get('/');
    expect(web.lastStatus).toBe(303);
  });
});

describe('CSRF and roles', () => {
  test('a form posted without its CSRF token is refused', async () => {
    const web = new WebClient(gw.url);
    await web.login();
    const html = await web.post('/settings/send/oauth-microsoft/edit', { _csrf: 'forged', enabled: 'on' });
    expect(web.lastStatus).toBe(403);
    expect(html).toContain('Form Expired');
  });

  test('a General User may view status but not change Send settings', async () => {
    const web = new WebClient(gw.url);
    await web.login('viewer', 'viewer-password');
    const page = await web.get('/settings/send/oauth-microsoft');
    expect(web.lastStatus).toBe(200);
    expect(page).toContain('data-field="token-status"');
    expect(page).not.toContain('>Edit</button>');
    expect(page).toContain('Administrator or Network Administrator privileges are required');
    const edit = await web.get('/settings/send/oauth-microsoft/edit');
    expect(web.lastStatus).toBe(403);
    expect(edit).toContain('Administrator or Network Administrator privileges are required');
    await web.post('/settings/send/oauth-microsoft/token/delete');
    expect(web.lastStatus).toBe(403);
    await web.get('/settings/users');
    expect(web.lastStatus).toBe(403);
  });

  test('a Network Administrator may change Send settings but not manage users', async () => {
    const web = new WebClient(gw.url);
    await web.login('netadmin', 'netadmin-password');
    await web.get('/settings/send/oauth-microsoft/edit');
    expect(web.lastStatus).toBe(200);
    await web.get('/settings/users');
    expect(web.lastStatus).toBe(403);
  });

  test('users: add with validation; nobody removes the account they are logged in with', async () => {
    const web = new WebClient(gw.url);
    await web.login();
    let html = await web.post('/settings/users/add', { username: 'bad name!', password: 'x', role: 'GeneralUser' });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('User name must be');
    expect(html).toContain('at least 8 characters');
    await web.post('/settings/users/add', { username: 'operator', password: 'operator-password', role: 'NetworkAdministrator' });
    expect(web.lastStatus).toBe(303);
    html = await web.page('/settings/users');
    expect(html).toContain('operator');
    expect(html).toContain('Network Administrator');
    const adminId = (await gw.postern.users.list()).find((u) => u.username === 'admin')!.id;
    await web.post(`/settings/users/${adminId}/remove`);
    expect(await web.page('/settings/users')).toContain('You cannot remove the account you are logged in with.');
    expect(await gw.postern.users.exists('admin')).toBe(true);
  });
});

describe('output and headers', () => {
  test('provider text is escaped, never interpreted as HTML', async () => {
    await gw.postern.accounts.transition('microsoft', 'Expired', { error: '<script>alert(1)</script>', advice: '"><img src=x onerror=alert(1)>' });
    const web = new WebClient(gw.url);
    await web.login();
    const html = await web.get('/settings/send/oauth-microsoft/status');
    expect(html).not.toContain('<script>alert(1)</script>');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).not.toContain('<img src=x');
  });

  test('security headers: CSP without inline script, no framing, no referrer', async () => {
    const response = await fetch(`${gw.url}/login`);
    const csp = response.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('referrer-policy')).toBe('no-referrer');
  });

  test('unknown pages and unexpected errors show a plain page, no stack trace', async () => {
    const response = await fetch(`${gw.url}/no/such/page`);
    expect(response.status).toBe(404);
    const html = await response.text();
    expect(html).toContain('Page Not Found');
    expect(html).not.toMatch(/at \S+ \(/);
  });

  test('/healthz and /metrics', async () => {
    const health = await fetch(`${gw.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toContain('postern_oauth_token_status{provider="microsoft",status="Expired"} 1');
    expect(metrics).toMatch(/^process_resident_memory_bytes \d/m);
    expect(metrics).toContain('postern_queue_messages{state="deferred"} 0');
    expect(metrics).toContain('postern_queue_oldest_waiting_seconds 0');
  });
});
