/**
 * The Remote UI: server-rendered pages (Eta, escape by default) modelled on the device's Remote UI, with
 * sessions, CSRF protection on every form, login rate limiting and security headers.
 *
 * Each screen is an encapsulated route plugin (src/web/routes) registered here with the context it needs
 * (src/web/context.ts); every route has a zod schema for its params, querystring and body (src/web/form.ts).
 * Per request: the session (onRequest), then the signed-in user, the route's access check and the CSRF check
 * (preValidation), then the schema, then the handler with typed values.
 *
 * Inputs: HTTP requests from administrators' browsers. Outputs: pages, and calls into the services
 * (OAuth, users, CA certificates). Never shows a stack trace or Fastify's JSON errors: a request that fails
 * its schema gets the error page (400, POSTERN_WEB_INVALID_INPUT in the log), unexpected errors a plain error
 * page, logged with an id the page shows.
 */
import fastifyCookie from '@fastify/cookie';
import fastifyCsrf from '@fastify/csrf-protection';
import fastifyFormbody from '@fastify/formbody';
import fastifyHelmet from '@fastify/helmet';
import fastifySession from '@fastify/session';
import { Eta } from 'eta';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { validateHeaderName, validateHeaderValue } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes } from '../errors.js';
import { LoginThrottle } from '../login-throttle.js';
import { GOOGLE_CALLBACK_PATH } from '../oauth/google.js';
import type { Role } from '../store/schema.js';
import { SecretBox } from '../store/secret-box.js';
import { canChangeSendSettings, canManageUsers, sessionStillValid } from '../store/users.js';
import type { Flash, MenuItem, WebContext, WebDependencies } from './context.js';
import type { MessageKey } from './i18n/index.js';

const ROLE_KEYS: Record<Role, MessageKey> = { Administrator: 'role.Administrator', NetworkAdministrator: 'role.NetworkAdministrator', GeneralUser: 'role.GeneralUser' };
import { invalidInputMessage, none } from './form.js';
import { LANG_COOKIE, negotiate, translator } from './i18n/index.js';
import { viewHelpers } from './i18n/view.js';
import { registerPlainHttpRedirect } from './https.js';
import { authRoutes } from './routes/auth.js';
import { caCertificateRoutes } from './routes/ca-certificates.js';
import { healthRoutes } from './routes/health.js';
import { accountSettingsRoutes, ACCOUNTS_PATH, GOOGLE_PATH, MICROSOFT_PATH } from './routes/oauth-account.js';
import { googleRoutes } from './routes/oauth-google.js';
import { microsoftRoutes } from './routes/oauth-microsoft.js';
import { languageRoutes } from './routes/language.js';
import { portalRoutes } from './routes/portal.js';
import { userRoutes } from './routes/users.js';
import { DatabaseSessionStore } from './session-store.js';

export type { Flash, MenuItem, WebContext, WebDependencies, WebPlugin } from './context.js';

const here = dirname(fileURLToPath(import.meta.url));
const VIEWS_DIR = join(here, 'views');
const PUBLIC_DIR = join(here, 'public');

const STATIC_FILES: Record<string, string> = {
  '/static/app.css': 'text/css; charset=utf-8',
  '/static/app.js': 'text/javascript; charset=utf-8',
  '/static/favicon.svg': 'image/svg+xml',
};

/**
 * `trustedProxies` (POSTERN_HTTP_TRUSTED_PROXIES): the addresses of the reverse proxies in front of the Remote
 * UI (HAProxy in HTTP mode, docs/several-instances.md). Only a request from one of them has its
 * X-Forwarded-For believed; from anyone else the peer address is the client, as without a proxy.
 */
export async function buildWebApp(deps: WebDependencies & { trustedProxies?: string[] | undefined }): Promise<FastifyInstance> {
  const app: FastifyInstance = Fastify({
    loggerInstance: deps.log.child({ component: 'web' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    trustProxy: deps.trustedProxies && deps.trustedProxies.length > 0 ? deps.trustedProxies : false,
    bodyLimit: 1024 * 1024,
    genReqId: () => randomUUID(),
  });
  // Every route's params, querystring and body are zod schemas (src/web/form.ts); the handlers get the parsed
  // values. A request that fails them reaches the error handler below as a validation error.
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  const eta = new Eta({ views: VIEWS_DIR, cache: true, autoEscape: true, autoTrim: false });
  const loginThrottle = deps.loginThrottle ?? new LoginThrottle();

  await app.register(fastifyHelmet, {
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        connectSrc: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
        objectSrc: ["'none'"],
      },
    },
    // Plain HTTP on the LAN is the default; HSTS would lock browsers out of it. Not even with HTTPS on:
    // the default certificate is self-signed, and HSTS takes away the browser's "proceed anyway" on a
    // certificate error, so an administrator who has not imported it could not reach the Remote UI at all.
    // HSTS also covers every port of the host name, which would break the plain HTTP listener the Google
    // loopback redirect needs (whenever the Remote UI is reached by the name "localhost") and any other
    // plain HTTP service on that host. The plain listener's redirect does the useful part without the lock.
    strictTransportSecurity: false,
    crossOriginEmbedderPolicy: false,
    referrerPolicy: { policy: 'no-referrer' },
  });
  if (deps.httpsPort) {
    // The Google callback page's stylesheet and script come along, so that it reads like the rest of the UI.
    registerPlainHttpRedirect(app, {
      httpsPort: deps.httpsPort,
      plainHttpPaths: [GOOGLE_CALLBACK_PATH, '/healthz', '/readyz', '/metrics', ...Object.keys(STATIC_FILES)],
    });
  }
  await app.register(fastifyFormbody);
  await app.register(fastifyCookie);
  await app.register(fastifySession, {
    cookieName: 'postern_session',
    secret: SecretBox.deriveKey(deps.store.masterKey, 'session cookie').toString('hex'),
    store: new DatabaseSessionStore(deps.store, deps.log.child({ component: 'web' })),
    saveUninitialized: false,
    rolling: true,
    cookie: {
      httpOnly: true,
      // Lax, not Strict: the Google authorization redirect back to Postern is a cross-site navigation.
      sameSite: 'lax',
      // With HTTPS on, always Secure: the plain listener then serves no page that should set a session
      // (@fastify/session does not save a Secure session over plain HTTP).
      secure: deps.httpsPort ? true : 'auto',
      path: '/',
      maxAge: deps.sessionTtlMs ?? 8 * 60 * 60_000,
    },
  });
  // Read before the route's schema runs (the check is a preValidation hook), from the body as it was parsed.
  await app.register(fastifyCsrf, { sessionPlugin: '@fastify/session', getToken: (request) => csrfTokenOf(request.body) });

  // Last of the onSend hooks (after the session is saved): a header that Node would refuse to write (a control
  // character in a Location built from input) becomes an error for this request, handled below, instead of a
  // throw from inside the session store's callback that no request handler sees.
  app.addHook('onSend', async (_request, reply, payload) => {
    const bad = invalidHeaders(reply);
    if (bad.length > 0) {
      for (const name of bad) reply.removeHeader(name);
      throw Object.assign(new Error(`the response had an invalid header: ${bad.join(', ')}`), { code: 'POSTERN_WEB_INVALID_HEADER' });
    }
    return payload;
  });

  // The page language, before anything renders (the error pages too).
  app.decorateRequest('lang', 'en');
  app.decorateRequest('t', null as unknown as FastifyRequest['t']);
  app.addHook('onRequest', async (request) => {
    request.lang = negotiate(request.cookies[LANG_COOKIE], request.headers['accept-language']);
    request.t = translator(request.lang);
  });

  const context = {
    sendMenu: [
      { href: ACCOUNTS_PATH, label: 'Sending Accounts', labelKey: 'menu.sendingAccounts' },
      { href: MICROSOFT_PATH, label: 'OAuth 2.0 (Microsoft) Settings', labelKey: 'menu.oauthMicrosoft' },
      { href: GOOGLE_PATH, label: 'OAuth 2.0 (Google) Settings', labelKey: 'menu.oauthGoogle' },
      { href: '/settings/send/ca-certificates', label: 'CA Certificate Settings', labelKey: 'menu.caCertificates' },
    ],
    managementMenu: [
      { href: '/settings/users', label: 'User Management', labelKey: 'menu.users' },
      { href: '/settings/password', label: 'Change Password', labelKey: 'menu.password' },
      { href: '/settings/audit', label: 'Audit Log', labelKey: 'menu.audit' },
    ],
  } as WebContext;

  const staticCache = new Map<string, Buffer>();
  for (const [url, type] of Object.entries(STATIC_FILES)) {
    const body = readFileSync(join(PUBLIC_DIR, url.replace('/static/', '')));
    staticCache.set(url, body);
    app.get(url, { schema: { querystring: none } }, async (_request, reply) => reply.type(type).header('cache-control', 'no-cache').send(body));
  }

  const setFlash = (request: FastifyRequest, flash: Flash) => {
    request.session.flash = flash;
  };

  app.decorateReply('render', function (this: FastifyReply, view: string, data: Record<string, unknown> = {}, status = 200) {
    const request = this.request;
    const user = request.user;
    const flash = request.session?.flash;
    if (flash && request.session) request.session.flash = undefined;
    const role = user?.role as Role | undefined;
    const html = eta.render(view, {
      ...viewHelpers(request.lang ?? 'en'),
      ...data,
      user,
      roleLabel: role ? request.t(ROLE_KEYS[role]) : undefined,
      canChange: role ? canChangeSendSettings(role) : false,
      canManageUsers: role ? canManageUsers(role) : false,
      csrfToken: request.session ? this.generateCsrf() : '',
      flash,
      path: request.url,
      sendMenu: sendMenuFor(context.sendMenu, request.accountCounts),
      managementMenu: context.managementMenu,
    });
    return this.code(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(html);
  });

  // Before validation, with the access checks (context.ts): who is signed in decides what a request may see,
  // whatever it holds.
  app.addHook('preValidation', async (request) => {
    const userId = request.session?.userId;
    if (userId) {
      const user = await deps.users.findById(userId);
      // A session from before the user's password was changed or reset is over (Users.endSessions).
      if (user && sessionStillValid(user, request.session.loginAt)) request.user = user;
      else request.session.userId = undefined;
    }
  });

  // The Send menu's OAuth entries open the one account's screen, or the list of a provider's accounts when it
  // has several: counted for the pages a signed-in user opens.
  app.addHook('preHandler', async (request) => {
    if (!request.user || request.method !== 'GET') return;
    const counts: Record<string, number> = {};
    for (const row of await deps.accounts.list()) counts[row.provider] = (counts[row.provider] ?? 0) + 1;
    request.accountCounts = counts;
  });

  const requireLogin = async (request: FastifyRequest, reply: FastifyReply) => {
    if (!request.user) {
      const next = request.method === 'GET' ? `?next=${encodeURIComponent(request.url)}` : '';
      return reply.redirect(`/login${next}`, 303);
    }
  };
  const requireRole = (check: (role: Role) => boolean, message: MessageKey) => async (request: FastifyRequest, reply: FastifyReply) => {
    await requireLogin(request, reply);
    if (reply.sent) return;
    if (!check(request.user!.role)) {
      return reply.render('error', { title: request.t('error.notAllowed'), message: request.t(message) }, 403);
    }
  };
  const requireSendSettings = requireRole(canChangeSendSettings, 'access.sendSettings');
  const requireUserManagement = requireRole(canManageUsers, 'access.users');

  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    // The error page must be writable whatever the failed response had set.
    for (const name of invalidHeaders(reply)) reply.removeHeader(name);
    if (error.code === 'POSTERN_WEB_INVALID_HEADER') reply.removeHeader('location');
    if (error.code === 'FST_CSRF_INVALID_TOKEN' || error.code === 'FST_CSRF_MISSING_SECRET') {
      return reply.render('error', { title: request.t('error.formExpired'), message: request.t('error.formExpiredMessage') }, 403);
    }
    if (error.validation) {
      // A request no form of ours sends (a repeated key, an oversized value, a malformed id): the fields and
      // what is wrong with them are logged and shown, never their values.
      const issues = error.validation;
      request.log.warn(
        {
          code: ErrorCodes.WEB_INVALID_INPUT,
          reqId: request.id,
          method: request.method,
          path: request.url.split('?')[0],
          part: error.validationContext,
          fields: [...new Set(issues.map((issue) => issue.instancePath.replace(/^\//, '') || '(all)'))].slice(0, 20),
        },
        'request not accepted: it does not match the form',
      );
      return reply.render('error', { title: request.t('error.notAccepted'), message: invalidInputMessage(error.validationContext, issues, request.t) }, 400);
    }
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return reply.render('error', { title: request.t('error.notAccepted'), message: error.message }, error.statusCode);
    }
    // The path only: a query string can hold an authorization code and its state (the Google callback).
    request.log.error({ err: error, reqId: request.id, method: request.method, path: request.url.split('?')[0] }, 'unexpected error in the Remote UI');
    return reply.render('error', { title: request.t('error.unexpected'), message: request.t('error.unexpectedMessage', { id: request.id }) }, 500);
  });
  app.setNotFoundHandler(async (request, reply) =>
    reply.render('error', { title: request.t('error.notFound'), message: request.t('error.notFoundMessage', { url: request.url }) }, 404),
  );

  context.loginThrottle = loginThrottle;
  Object.assign(context, {
    ...deps,
    loginThrottle,
    requireLogin,
    requireSendSettings,
    requireUserManagement,
    setFlash,
  });
  await app.register(healthRoutes, { web: context });
  await app.register(languageRoutes, { web: context });
  await app.register(authRoutes, { web: context });
  await app.register(portalRoutes, { web: context });
  await app.register(microsoftRoutes, { web: context });
  await app.register(googleRoutes, { web: context });
  await app.register(accountSettingsRoutes, { web: context });
  await app.register(caCertificateRoutes, { web: context });
  await app.register(userRoutes, { web: context });
  for (const plugin of deps.plugins ?? []) await plugin(app, context);
  return app;
}

/** The Send menu for this request: a provider with several accounts is reached through its list. */
function sendMenuFor(menu: MenuItem[], counts: Record<string, number> | undefined): MenuItem[] {
  if (!counts) return menu;
  return menu.map((item) => {
    const provider = PROVIDER_MENU_HREFS[item.href];
    return provider && (counts[provider] ?? 0) > 1 ? { ...item, href: `${ACCOUNTS_PATH}?provider=${provider}` } : item;
  });
}

const PROVIDER_MENU_HREFS: Record<string, string> = { [MICROSOFT_PATH]: 'microsoft', [GOOGLE_PATH]: 'google' };

/** A form's `_csrf` field; anything else (absent, repeated, not text) is no token, and the form is refused. */
function csrfTokenOf(body: unknown): string | undefined {
  return typeof body === 'object' && body !== null && '_csrf' in body && typeof body._csrf === 'string' ? body._csrf : undefined;
}

/** The names of the reply's headers that Node's HTTP server would refuse to write (RFC 9110 section 5.5). */
function invalidHeaders(reply: FastifyReply): string[] {
  const bad: string[] = [];
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value === undefined) continue;
    try {
      validateHeaderName(name);
      for (const item of Array.isArray(value) ? value : [value]) validateHeaderValue(name, String(item));
    } catch {
      bad.push(name);
    }
  }
  return bad;
}

