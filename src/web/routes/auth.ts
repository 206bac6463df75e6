/** Login and Log Out. Failed logins are rate limited per user name + address and per address. */
import type { FastifyInstance } from 'fastify';
import { text, type WebContext } from '../app.js';
import { formatWait } from '../login-throttle.js';

const ORIGIN = 'http://postern.invalid';
/** C0 and C1 controls (and DEL): browsers strip some of them from URLs, and none belongs in a header. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * The path to go to after login: a path on this site only (no open redirect), or `/`.
 *
 * The value is parsed as a URL against a placeholder origin and must stay on that origin; what is kept is its
 * path and query. Anything with a control character or a backslash is refused before parsing: the WHATWG URL
 * parser (and so every browser) drops tabs and newlines and reads `\` as `/`, so `/\t/evil.example` and
 * `/\evil.example` would become `//evil.example`, another host. The result must start with exactly one `/`.
 */
export function safeNext(next: unknown): string {
  if (typeof next !== 'string' || next.length === 0 || next.length > 2048) return '/';
  if (CONTROL.test(next) || next.includes('\\')) return '/';
  if (!next.startsWith('/') || next.startsWith('//')) return '/';
  let url: URL;
  try {
    url = new URL(next, ORIGIN);
  } catch {
    return '/';
  }
  if (url.origin !== ORIGIN) return '/';
  const path = `${url.pathname}${url.search}`;
  if (!path.startsWith('/') || path.startsWith('//') || CONTROL.test(path) || path.includes('\\')) return '/';
  return path;
}

export function registerAuthRoutes(app: FastifyInstance, web: WebContext): void {
  app.get('/login', async (request, reply) => {
    if (request.user) return reply.redirect('/', 303);
    const query = request.query as Record<string, unknown>;
    return reply.render('login', { title: 'Login', next: safeNext(query.next), username: '' });
  });

  app.post('/login', { preHandler: app.csrfProtection }, async (request, reply) => {
    const body = (request.body ?? {}) as Record<string, unknown>;
    const username = text(body, 'username').trim();
    const password = text(body, 'password');
    const next = safeNext(body.next);
    const address = request.ip;
    const blocked = await web.loginThrottle.blockedFor(username, address);
    if (blocked !== undefined) {
      web.log.warn({ username, address }, 'login refused: too many failed attempts');
      return reply.render(
        'login',
        { title: 'Login', next, username, error: `Too many failed login attempts. Try again in ${formatWait(blocked)}.` },
        429,
      );
    }
    const user = username && password ? await web.users.authenticate(username, password) : undefined;
    if (!user) {
      await web.loginThrottle.recordFailure(username, address);
      await web.audit.record(username || null, 'login.failed', `from ${address}`);
      return reply.render('login', { title: 'Login', next, username, error: 'The user name or password is incorrect.' }, 401);
    }
    await web.loginThrottle.recordSuccess(username, address);
    // A new session id at login (no session fixation).
    await request.session.regenerate();
    request.session.userId = user.id;
    request.session.loginAt = Date.now();
    await web.audit.record(user.username, 'login', `from ${address}`);
    return reply.redirect(next, 303);
  });

  app.post('/logout', { preHandler: app.csrfProtection }, async (request, reply) => {
    if (request.user) await web.audit.record(request.user.username, 'logout');
    await request.session.destroy();
    return reply.redirect('/login?loggedOut=1', 303);
  });
}
