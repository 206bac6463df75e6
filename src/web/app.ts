/**
 * The Remote UI: server-rendered pages (Eta, escape by default) modelled on the device's Remote UI, with
 * sessions, CSRF protection on every form, login rate limiting and security headers.
 *
 * Inputs: HTTP requests from administrators' browsers. Outputs: pages, and calls into the services
 * (OAuth, users, CA certificates). Never shows a stack trace: unexpected errors render a plain error page
 * and are logged with an id the page shows.
 */
import fastifyCookie from '@fastify/cookie';
import fastifyCsrf from '@fastify/csrf-protection';
import fastifyFormbody from '@fastify/formbody';
import fastifyHelmet from '@fastify/helmet';
import fastifySession from '@fastify/session';
import { Eta } from 'eta';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { validateHeaderName, validateHeaderValue } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../log.js';
import { LoginThrottle } from '../login-throttle.js';
import { GOOGLE_CALLBACK_PATH } from '../oauth/google.js';
import type { OAuthAccounts } from '../oauth/accounts.js';
import type { OAuthService } from '../oauth/service.js';
import type { MessageQueue } from '../queue/queue.js';
import type { AuditLog } from '../store/audit.js';
import type { CaCertificates } from '../store/ca-certificates.js';
import type { Role } from '../store/schema.js';
import { SecretBox } from '../store/secret-box.js';
import type { Store } from '../store/store.js';
import { canChangeSendSettings, canManageUsers, ROLE_LABELS, sessionStillValid, type User, type Users } from '../store/users.js';
import { registerPlainHttpRedirect } from './https.js';
import { registerAuthRoutes } from './routes/auth.js';
import { registerCaCertificateRoutes } from './routes/ca-certificates.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerGoogleRoutes } from './routes/oauth-google.js';
import { registerMicrosoftRoutes } from './routes/oauth-microsoft.js';
import { registerPortalRoutes } from './routes/portal.js';
import { registerUserRoutes } from './routes/users.js';
import { DatabaseSessionStore } from './session-store.js';

declare module 'fastify' {
  interface Session {
    userId?: string;
    flash?: Flash;
    loginAt?: number;
    /** The pending Google authorization URL shown on Register Information for Authorization. */
    googleAuthorization?: { url: string; expiresAt: number };
  }
  interface FastifyRequest {
    user?: User;
  }
  interface FastifyReply {
    render(view: string, data?: Record<string, unknown>, status?: number): FastifyReply;
  }
}

export interface Flash {
  type: 'success' | 'error' | 'info';
  text: string;
}

/** What the web layer needs from the rest of Postern; main.ts wires it. */
export interface WebDependencies {
  store: Store;
  users: Users;
  audit: AuditLog;
  caCertificates: CaCertificates;
  oauth: OAuthService;
  /** The OAuth accounts' rows (metrics). */
  accounts: Pick<OAuthAccounts, 'list'>;
  /** The queue's figures (metrics). */
  queue: Pick<MessageQueue, 'counts' | 'oldestWaitingSince'>;
  log: Logger;
  /** Extra page sections contributed by other modules (E-Mail Settings, Relay Settings, Queue, Log). */
  plugins?: ((app: FastifyInstance, web: WebContext) => Promise<void> | void)[];
  /** The Remote UI's sign-in throttle (src/login-throttle.ts); a fresh one when absent. */
  loginThrottle?: LoginThrottle;
  /** The Remote UI's bound port (for the Google loopback redirect URI). */
  httpPort: () => number;
  /**
   * The HTTPS listener's bound port when the Remote UI is served over HTTPS (POSTERN_HTTPS_PORT). Absent:
   * plain HTTP only. Present: the plain listener redirects to HTTPS, and the session cookie is Secure.
   */
  httpsPort?: (() => number) | undefined;
  /** Idle session lifetime, ms. */
  sessionTtlMs?: number;
}

export interface MenuItem {
  href: string;
  label: string;
}

export interface WebContext extends WebDependencies {
  loginThrottle: LoginThrottle;
  /** Pages under Settings/Registration > Send; modules add theirs. */
  sendMenu: MenuItem[];
  /** Pages under Settings/Registration > Management. */
  managementMenu: MenuItem[];
  requireLogin: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  requireSendSettings: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  requireUserManagement: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  setFlash: (request: FastifyRequest, flash: Flash) => void;
}

const here = dirname(fileURLToPath(import.meta.url));
const VIEWS_DIR = join(here, 'views');
const PUBLIC_DIR = join(here, 'public');

const STATIC_FILES: Record<string, string> = {
  '/static/app.css': 'text/css; charset=utf-8',
  '/static/app.js': 'text/javascript; charset=utf-8',
};

export async function buildWebApp(deps: WebDependencies): Promise<FastifyInstance> {
  const app: FastifyInstance = Fastify({
    loggerInstance: deps.log.child({ component: 'web' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    trustProxy: false,
    bodyLimit: 1024 * 1024,
    genReqId: () => randomUUID(),
  });
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
      plainHttpPaths: [GOOGLE_CALLBACK_PATH, '/healthz', '/metrics', ...Object.keys(STATIC_FILES)],
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
  await app.register(fastifyCsrf, { sessionPlugin: '@fastify/session', getToken: (request) => (request.body as any)?._csrf });

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

  const context = {
    sendMenu: [
      { href: '/settings/send/oauth-microsoft', label: 'OAuth 2.0 (Microsoft) Settings' },
      { href: '/settings/send/oauth-google', label: 'OAuth 2.0 (Google) Settings' },
      { href: '/settings/send/ca-certificates', label: 'CA Certificate Settings' },
    ],
    managementMenu: [
      { href: '/settings/users', label: 'User Management' },
      { href: '/settings/password', label: 'Change Password' },
      { href: '/settings/audit', label: 'Audit Log' },
    ],
  } as WebContext;

  const staticCache = new Map<string, Buffer>();
  for (const [url, type] of Object.entries(STATIC_FILES)) {
    const body = readFileSync(join(PUBLIC_DIR, url.replace('/static/', '')));
    staticCache.set(url, body);
    app.get(url, async (_request, reply) => reply.type(type).header('cache-control', 'no-cache').send(body));
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
      ...data,
      user,
      roleLabel: role ? ROLE_LABELS[role] : undefined,
      canChange: role ? canChangeSendSettings(role) : false,
      canManageUsers: role ? canManageUsers(role) : false,
      csrfToken: request.session ? this.generateCsrf() : '',
      flash,
      path: request.url,
      sendMenu: context.sendMenu,
      managementMenu: context.managementMenu,
    });
    return this.code(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(html);
  });

  app.addHook('preHandler', async (request) => {
    const userId = request.session?.userId;
    if (userId) {
      const user = await deps.users.findById(userId);
      // A session from before the user's password was changed or reset is over (Users.endSessions).
      if (user && sessionStillValid(user, request.session.loginAt)) request.user = user;
      else request.session.userId = undefined;
    }
  });

  const requireLogin = async (request: FastifyRequest, reply: FastifyReply) => {
    if (!request.user) {
      const next = request.method === 'GET' ? `?next=${encodeURIComponent(request.url)}` : '';
      return reply.redirect(`/login${next}`, 303);
    }
  };
  const requireRole = (check: (role: Role) => boolean, message: string) => async (request: FastifyRequest, reply: FastifyReply) => {
    await requireLogin(request, reply);
    if (reply.sent) return;
    if (!check(request.user!.role)) {
      return reply.render('error', { title: 'Not Allowed', message }, 403);
    }
  };
  const requireSendSettings = requireRole(
    canChangeSendSettings,
    'Administrator or Network Administrator privileges are required to change these settings. Log in with such an account.',
  );
  const requireUserManagement = requireRole(canManageUsers, 'Administrator privileges are required to manage users.');

  app.setErrorHandler(async (error: Error & { code?: string; statusCode?: number }, request, reply) => {
    // The error page must be writable whatever the failed response had set.
    for (const name of invalidHeaders(reply)) reply.removeHeader(name);
    if (error.code === 'POSTERN_WEB_INVALID_HEADER') reply.removeHeader('location');
    if (error.code === 'FST_CSRF_INVALID_TOKEN' || error.code === 'FST_CSRF_MISSING_SECRET') {
      return reply.render(
        'error',
        { title: 'Form Expired', message: 'The form was open too long or came from another page. Go back, reload the page and try again.' },
        403,
      );
    }
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return reply.render('error', { title: 'Request Not Accepted', message: error.message }, error.statusCode);
    }
    // The path only: a query string can hold an authorization code and its state (the Google callback).
    request.log.error({ err: error, reqId: request.id, method: request.method, path: request.url.split('?')[0] }, 'unexpected error in the Remote UI');
    return reply.render(
      'error',
      { title: 'Something Went Wrong', message: `An unexpected error occurred. It was logged with reference ${request.id}.` },
      500,
    );
  });
  app.setNotFoundHandler(async (request, reply) =>
    reply.render('error', { title: 'Page Not Found', message: `There is no page at ${request.url}.` }, 404),
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
  registerHealthRoutes(app, context);
  registerAuthRoutes(app, context);
  registerPortalRoutes(app, context);
  registerMicrosoftRoutes(app, context);
  registerGoogleRoutes(app, context);
  registerCaCertificateRoutes(app, context);
  registerUserRoutes(app, context);
  for (const plugin of deps.plugins ?? []) await plugin(app, context);
  return app;
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

/** Reads a check box from a form body: present (any value) means on. */
export function checkbox(body: Record<string, unknown>, name: string): boolean {
  const value = body[name];
  return value !== undefined && value !== '' && value !== '0' && value !== 'off';
}

export function text(body: Record<string, unknown>, name: string): string {
  const value = body[name];
  return typeof value === 'string' ? value : Array.isArray(value) ? String(value[0] ?? '') : '';
}
