/** Login and Log Out. Failed logins are rate limited per user name + address and per address. */
import type { FastifyInstance } from 'fastify';
import { text, type WebContext } from '../app.js';
import { formatWait } from '../login-throttle.js';

/** Only same-site paths are followed after login (no open redirect). */
function safeNext(next: unknown): string {
  return typeof next === 'string' && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') ? next : '/';
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
