/**
 * Defects found against a running Postern, each with its regression test: input that ended the process, a
 * sign-in throttle that parallel guesses outran, and sessions that outlived a password change or reset.
 *
 * The process tests run Postern as a real child process (a crash there is a crash, not a failed assertion in
 * the test runner) and talk to it over real sockets; clients bind to other loopback addresses (127.0.0.x) so
 * that Postern sees distinct client addresses.
 */
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';
import { spawnPostern, type PosternProcess } from './support/postern-process.js';
import { startTestPostern, WebClient, webDependenciesOf, type TestPostern } from './support/postern.js';
import { buildWebApp } from '../src/web/app.js';
import { DatabaseSessionStore } from '../src/web/session-store.js';
import type { Logger } from '../src/log.js';

const ADMIN = 'hardening-admin-password';

const agents: Agent[] = [];
/** An HTTP client whose connections come from `address` (a loopback address other than 127.0.0.1). */
function from(address: string): Agent {
  const agent = new Agent({ localAddress: address });
  agents.push(agent);
  return agent;
}

describe('a real Postern process', () => {
  let dataDir: string;
  let postern: PosternProcess;
  let base: string;

  const healthy = async () => {
    expect(postern.child.exitCode).toBeNull();
    const response = await fetch(`${base}/healthz`);
    expect(response.status).toBe(200);
    expect(postern.count('unhandled promise rejection (a defect); Postern keeps running')).toBe(0);
  };

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'postern-hardening-'));
    postern = await spawnPostern({ POSTERN_DATA_DIR: dataDir, POSTERN_ADMIN_PASSWORD: ADMIN });
    base = `http://127.0.0.1:${postern.httpPort}`;
  });

  afterAll(async () => {
    if (postern && postern.child.exitCode === null) await postern.stop();
    await Promise.all(agents.map((agent) => agent.close()));
    rmSync(dataDir, { recursive: true, force: true });
  });

  describe('no input ends the process', () => {
    const hostile = ['/\r\nx', '/\x0b', '/\t', '/\r\nSet-Cookie: a=b', '/\u0000', '/\u0085x', '/\u009fx', '/\u007f'];
    for (const next of hostile) {
      it(`regression: a next value with a control character (${JSON.stringify(next)}) does not end the process`, async () => {
        const web = new WebClient(base);
        await web.get('/login');
        await web.post('/login', { username: 'admin', password: ADMIN, next });
        expect(web.lastStatus).toBe(303);
        expect(web.lastLocation).toBe('/');
        await healthy();
      });
    }

    for (const next of ['/\t/evil.example', '/\n/evil.example', '/\\evil.example', '/\\/evil.example', 'https://evil.example/', '//evil.example', '/%0d%0a/x', '/\u2028/evil.example', '/\u3000/evil.example']) {
      it(`regression: next ${JSON.stringify(next)} is no redirect to another host`, async () => {
        const web = new WebClient(base);
        await web.get('/login');
        await web.post('/login', { username: 'admin', password: ADMIN, next });
        expect(web.lastStatus).toBe(303);
        const location = web.lastLocation!;
        expect(new URL(location, base).origin).toBe(base);
        // As a browser reads it: tabs and newlines dropped, backslashes as slashes.
        expect(new URL(location.replace(/[\t\n\r]/g, '').replace(/\\/g, '/'), base).origin).toBe(base);
        await healthy();
      });
    }

    it('a same-site next with a query is kept', async () => {
      const web = new WebClient(base);
      await web.get('/login');
      await web.post('/login', { username: 'admin', password: ADMIN, next: '/settings/queue?all=1' });
      expect(web.lastLocation).toBe('/settings/queue?all=1');
    });

    it('regression: a next value with a control character in GET /login does not end the process', async () => {
      const response = await fetch(`${base}/login?next=${encodeURIComponent('/\r\nx')}`);
      expect(response.status).toBe(200);
      expect(await response.text()).toContain('name="next" value="/"');
      await healthy();
    });

    /** Values an attacker would type: any text, any code point, controls, lone surrogates, huge. */
    const hostileText = fc.oneof(
      fc.string(),
      fc.string({ unit: 'binary' }),
      fc.string({ unit: fc.constantFrom('\r', '\n', '\t', '\u0000', '\u000b', '\u0085', '\u2028', '\\', '/', '%', '<', '"', "'", '&', '\ud800', 'a', '.') }),
      fc.tuple(fc.integer({ min: 10_000, max: 200_000 }), fc.constantFrom('a', '\r\n', '\u0000', '/')).map(([n, c]) => c.repeat(Math.ceil(n / c.length))),
      fc.constantFrom('', '0', 'on', '-1', '1e309', 'NaN', '99999999999999999999', '/\t/evil.example', '127.0.0.1/33', 'a@b', '::'),
    );

    /** The names of the fields of each POST form on a page (a form's own and the hidden ones). */
    function formsOf(html: string): Array<{ action: string; names: string[] }> {
      const forms: Array<{ action: string; names: string[] }> = [];
      for (const match of html.matchAll(/<form\b[^>]*method="post"[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/g)) {
        const names = [...match[2]!.matchAll(/<(?:input|select|textarea)\b[^>]*\bname="([^"]+)"/g)].map((m) => m[1]!).filter((n) => n !== '_csrf');
        forms.push({ action: match[1]!.replace(/&amp;/g, '&').replace(/#.*$/, ''), names: [...new Set(names)] });
      }
      return forms;
    }

    async function attack(web: WebClient, page: string, action: string, numRuns: number) {
      const html = await web.page(page);
      expect(web.lastStatus, page).toBe(200);
      const form = formsOf(html).find((f) => f.action === action);
      expect(form, `${action} on ${page}`).toBeDefined();
      const names = [...form!.names, 'next'];
      await fc.assert(
        fc.asyncProperty(fc.record(Object.fromEntries(names.map((name) => [name, hostileText]))), async (fields) => {
          // Each run starts from the form's page, so that the CSRF token is current and the handler runs.
          await web.get(page);
          await web.post(action, fields as Record<string, string>);
          expect(web.lastStatus, `${action} ${JSON.stringify(fields).slice(0, 300)}`).toBeLessThan(500);
          expect(web.lastStatus).not.toBe(403);
          expect(postern.child.exitCode).toBeNull();
        }),
        { numRuns },
      );
      await healthy();
    }

    it('property: any login form values end as a page, never as a 500 or an exit', async () => {
      const web = new WebClient(base, from('127.0.0.5'));
      await attack(web, '/login', '/login', 150);
    }, 120_000);

    const settingsForms: Array<[page: string, action: string]> = [
      ['/settings/send/oauth-microsoft/edit', '/settings/send/oauth-microsoft/edit'],
      ['/settings/send/oauth-google/edit', '/settings/send/oauth-google/edit'],
      ['/settings/send/email', '/settings/send/email'],
      ['/settings/send/relay', '/settings/send/relay'],
      ['/settings/send/relay/devices/new', '/settings/send/relay/devices'],
      ['/settings/send/relay/certificate', '/settings/send/relay/certificate'],
      ['/settings/send/ca-certificates', '/settings/send/ca-certificates/add'],
      ['/settings/users', '/settings/users/add'],
      ['/settings/password', '/settings/password'],
      ['/settings/notifications', '/settings/notifications'],
    ];
    for (const [page, action] of settingsForms) {
      it(`property: any values in ${action} end as a page, never as a 500 or an exit`, async () => {
        const web = new WebClient(base, from('127.0.0.6'));
        await web.login('admin', ADMIN);
        await attack(web, page, action, 100);
      }, 120_000);
    }
  });

  describe('the sign-in throttle', () => {
    it('regression: 40 parallel wrong passwords from one address are not all evaluated; the administrator still logs in from another address', async () => {
      const attacker = new WebClient(base, from('127.0.0.2'));
      const html = await attacker.get('/login');
      const token = /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
      const dispatcher = from('127.0.0.2');
      const responses = await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const response = await undiciFetch(`${base}/login`, {
            method: 'POST',
            redirect: 'manual',
            dispatcher,
            headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: attacker.cookieHeader },
            body: new URLSearchParams({ _csrf: token, username: 'admin', password: `guess-${i}`, next: '/' }).toString(),
          });
          return { status: response.status, retryAfter: response.headers.get('retry-after'), html: await response.text() };
        }),
      );
      const evaluated = responses.filter((r) => r.status === 401);
      const refused = responses.filter((r) => r.status === 429);
      expect(evaluated.length).toBeLessThanOrEqual(5);
      expect(evaluated.length + refused.length).toBe(40);
      for (const r of evaluated) expect(r.html).toContain('The user name or password is incorrect.');
      for (const r of refused) {
        expect(r.html).toMatch(/Too many failed login attempts\. Try again in \d+ minutes? \(after \d\d:\d\d UTC\)\./);
        expect(Number(r.retryAfter)).toBeGreaterThan(0);
      }
      // Postern saw the attacker's own address (so the other address below really is another one).
      expect(postern.lines.some((l) => l.msg === 'login refused: too many failed attempts' && l.address === '127.0.0.2')).toBe(true);
      // Even the right password is refused from the flooding address for now...
      await attacker.post('/login', { username: 'admin', password: ADMIN, next: '/' });
      expect(attacker.lastStatus).toBe(429);
      // ...but the real administrator, elsewhere, is not locked out.
      const admin = new WebClient(base, from('127.0.0.3'));
      await admin.login('admin', ADMIN);
      expect(await admin.get('/')).toContain('admin');
      expect(admin.lastStatus).toBe(200);
    });

    it('a flood of different user names from one address is stopped by the per-address limit', async () => {
      const attacker = new WebClient(base, from('127.0.0.4'));
      await attacker.get('/login');
      const statuses: number[] = [];
      for (let i = 0; i < 25; i++) {
        await attacker.post('/login', { username: `user${i}`, password: 'wrong-password' });
        statuses.push(attacker.lastStatus);
      }
      expect(statuses.filter((s) => s === 401).length).toBe(20);
      expect(statuses.slice(20).every((s) => s === 429)).toBe(true);
    });
  });
});

describe.each([
  ['SQLite', false],
  ['PostgreSQL', true],
] as const)('sessions end with a password change or reset (%s)', (_name, postgres) => {
  let gw: TestPostern;
  let db: TestDatabase | undefined;

  beforeAll(async () => {
    if (postgres) {
      if (!POSTGRES_ADMIN_URL) return;
      db = await createTestDatabase('hardening_sessions');
    }
    gw = await startTestPostern({ config: db ? { databaseUrl: db.url } : {} });
    for (const name of ['alice', 'bob', 'carol', 'dave']) await gw.postern.users.create(name, `${name}-password`, 'GeneralUser');
  });

  afterAll(async () => {
    await gw?.close();
    await db?.drop();
  });

  const signedIn = async (web: WebClient) => {
    await web.get('/');
    return web.lastStatus === 200;
  };
  const sessionRows = async (username: string) => {
    const user = (await gw.postern.users.list()).find((u) => u.username === username)!;
    return gw.postern.store.db.selectFrom('sessions').selectAll().where('user_id', '=', user.id).execute();
  };

  it('regression: changing a password ends the user\'s other sessions; the current one stays signed in', async (context) => {
    if (!gw) return context.skip();
    const here = new WebClient(gw.url);
    const elsewhere = new WebClient(gw.url);
    await here.login('alice', 'alice-password');
    await elsewhere.login('alice', 'alice-password');
    expect(await sessionRows('alice')).toHaveLength(2);
    await here.get('/settings/password');
    await here.post('/settings/password', { current: 'alice-password', password: 'alice-new-password', confirm: 'alice-new-password' });
    expect(here.lastStatus).toBe(303);
    expect(await signedIn(here)).toBe(true);
    await elsewhere.get('/');
    expect(elsewhere.lastStatus).toBe(303);
    expect(elsewhere.lastLocation).toBe('/login?next=%2F');
    expect(await sessionRows('alice')).toHaveLength(1);
    // The current session keeps working on later requests too.
    expect(await signedIn(here)).toBe(true);
  });

  it('regression: postern reset-password ends all of the user\'s sessions', async (context) => {
    if (!gw) return context.skip();
    const one = new WebClient(gw.url);
    const two = new WebClient(gw.url);
    await one.login('bob', 'bob-password');
    await two.login('bob', 'bob-password');
    const reset = await runCli(['reset-password', 'bob'], { POSTERN_DATA_DIR: gw.dataDir, ...(db ? { POSTERN_DATABASE_URL: db.url } : {}) });
    expect(reset.code, reset.stderr).toBe(0);
    expect(await signedIn(one)).toBe(false);
    expect(await signedIn(two)).toBe(false);
    expect(await sessionRows('bob')).toHaveLength(0);
    const password = /New password for bob: (\S+)/.exec(reset.stdout)![1]!;
    await one.login('bob', password);
    expect(await signedIn(one)).toBe(true);
  });

  it('regression: a request under way cannot bring an ended session back by saving it', async (context) => {
    if (!gw) return context.skip();
    const web = new WebClient(gw.url);
    await web.login('dave', 'dave-password');
    const [row] = await sessionRows('dave');
    const dave = (await gw.postern.users.list()).find((u) => u.username === 'dave')!;
    await gw.postern.users.setPassword(dave.id, 'dave-new-password');
    // What a request that had read the session before the reset writes back at its end.
    await gw.postern.store.db.insertInto('sessions').values(row!).execute();
    expect(await signedIn(web)).toBe(false);
  });

  it('regression: removing a user in User Management ends their sessions', async (context) => {
    if (!gw) return context.skip();
    const carol = new WebClient(gw.url);
    await carol.login('carol', 'carol-password');
    const id = (await gw.postern.users.list()).find((u) => u.username === 'carol')!.id;
    const admin = new WebClient(gw.url);
    await admin.login();
    await admin.get('/settings/users');
    await admin.post(`/settings/users/${id}/remove`);
    expect(admin.lastStatus).toBe(303);
    expect(await signedIn(carol)).toBe(false);
    expect(await gw.postern.store.db.selectFrom('sessions').selectAll().where('user_id', '=', id).execute()).toHaveLength(0);
  });
});

describe('errors after the handler', () => {
  let gw: TestPostern;
  beforeAll(async () => {
    gw = await startTestPostern();
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('regression: a response header Node refuses to write ends as an error page, not a throw from the session store', async () => {
    const p = gw.postern;
    const app = await buildWebApp({
      ...webDependenciesOf(p),
      plugins: [
        (web) => {
          // A route that builds a Location from input without checking it, as /login once did.
          web.get('/bad-redirect', async (request, reply) => {
            request.session.flash = { type: 'info', text: 'saved with the session' };
            return reply.redirect(`/x${(request.query as { to: string }).to}`, 303);
          });
        },
      ],
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const port = (app.server.address() as { port: number }).port;
      const response = await fetch(`http://127.0.0.1:${port}/bad-redirect?to=${encodeURIComponent('\r\nx')}`, { redirect: 'manual' });
      expect(response.status).toBe(500);
      expect(response.headers.get('location')).toBeNull();
      expect(await response.text()).toContain('Something Went Wrong');
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('regression: a throw inside a session store callback does not become an unhandled rejection', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    const logged: unknown[] = [];
    let threeLogged!: () => void;
    const allLogged = new Promise<void>((resolve) => (threeLogged = resolve));
    const log = {
      error: (...args: unknown[]) => {
        if (logged.push(args) === 3) threeLogged();
      },
    } as unknown as Logger;
    const store = new DatabaseSessionStore(gw.postern.store, log);
    try {
      store.set('s1', { cookie: {} }, () => {
        throw new Error('thrown by what runs after the save');
      });
      store.get('s1', () => {
        throw new Error('thrown by what runs after the read');
      });
      store.destroy('s1', () => {
        throw new Error('thrown by what runs after the destroy');
      });
      await allLogged; // the three throws logged
      // One more turn for any rejection to be reported.
      await new Promise((resolve) => setImmediate(resolve));
      expect(rejections).toEqual([]);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });
});
