/**
 * Login and Log Out. Sign-in attempts are throttled per user name + address and per address
 * (src/login-throttle.ts): an attempt is reserved before the password is checked, so parallel guesses cannot
 * outrun the limit.
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { tryAgainIn } from '../../login-throttle.js';
import type { WebPluginOptions } from '../context.js';
import { formBody, ignoredWhenInvalid, none, text } from '../form.js';
import { domainText } from '../i18n/domain.js';

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

/** "Try again in 15 minutes (after 21:45 UTC)", in the page's language. */
function waitSentence(request: FastifyRequest, seconds: number): string {
  const words = domainText(request.lang, request.t, tryAgainIn(seconds));
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A user name as the audit log and the log keep it: what was typed, cut to a sensible length. */
function shown(username: string): string {
  return username.length > 100 ? `${username.slice(0, 100)}…` : username;
}

/** Where to go after login: a bad value (too long, repeated, another site) means the portal, as safeNext says. */
const nextPath = ignoredWhenInvalid(z.string().max(2048));

export const authRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  app.get('/login', { schema: { querystring: z.object({ next: nextPath }) } }, async (request, reply) => {
    if (request.user) return reply.redirect('/', 303);
    return reply.render('login', { title: request.t('login.title'), next: safeNext(request.query.next), username: '' });
  });

  const loginForm = formBody({ username: text(), password: text(), next: nextPath });
  app.post('/login', { preValidation: app.csrfProtection, schema: { body: loginForm } }, async (request, reply) => {
    const username = request.body.username.trim();
    const password = request.body.password;
    const next = safeNext(request.body.next);
    const address = request.ip;
    // Reserved before the (slow) password check: however many guesses arrive at once, at most the limit of
    // them is evaluated.
    const attempt = await web.loginThrottle.reserve(username, address);
    if (!attempt.allowed) {
      web.log.warn({ username: shown(username), address }, 'login refused: too many failed attempts');
      reply.header('retry-after', String(attempt.retryAfterSeconds));
      return reply.render(
        'login',
        { title: request.t('login.title'), next, username, error: request.t('login.tooMany', { wait: waitSentence(request, attempt.retryAfterSeconds) }) },
        429,
      );
    }
    const user = username && password ? await web.users.authenticate(username, password) : undefined;
    if (!user) {
      await web.audit.record(shown(username) || null, 'login.failed', `from ${address}`);
      return reply.render('login', { title: request.t('login.title'), next, username, error: request.t('login.incorrect') }, 401);
    }
    await attempt.succeeded();
    // A new session id at login (no session fixation).
    await request.session.regenerate();
    request.session.userId = user.id;
    request.session.loginAt = Date.now();
    await web.audit.record(user.username, 'login', `from ${address}`);
    return reply.redirect(next, 303);
  });

  app.post('/logout', { preValidation: app.csrfProtection, schema: { body: none } }, async (request, reply) => {
    if (request.user) await web.audit.record(request.user.username, 'logout');
    await request.session.destroy();
    return reply.redirect('/login?loggedOut=1', 303);
  });
};
