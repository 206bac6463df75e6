/**
 * What the Remote UI's parts share: the dependencies main.ts wires in, the context every route plugin is
 * given, and the request, reply and session fields the web app adds to Fastify's. Route plugins import
 * from here, never from the web app itself, so the app can import them without an import circle.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../log.js';
import type { LoginThrottle } from '../login-throttle.js';
import type { GatewayMetrics } from '../metrics.js';
import type { OAuthAccounts } from '../oauth/accounts.js';
import type { OAuthService } from '../oauth/service.js';
import type { MessageQueue } from '../queue/queue.js';
import type { AuditLog } from '../store/audit.js';
import type { CaCertificates } from '../store/ca-certificates.js';
import type { Store } from '../store/store.js';
import type { User, Users } from '../store/users.js';
import type { Lang, MessageKey, Translate } from './i18n/index.js';

declare module 'fastify' {
  interface Session {
    userId?: string;
    flash?: Flash;
    loginAt?: number;
    /** The pending Google authorization URL shown on Register Information for Authorization. */
    googleAuthorization?: { url: string; expiresAt: number; accountId?: string };
  }
  interface FastifyRequest {
    user?: User;
    /** The page language (the `lang` cookie, else Accept-Language, else English) and its catalogue. */
    lang: Lang;
    t: Translate;
    /** How many sending accounts each provider has (the Send menu's OAuth entries follow it). */
    accountCounts?: Record<string, number>;
  }
  interface FastifyReply {
    render(view: string, data?: Record<string, unknown>, status?: number): FastifyReply;
  }
}

export interface Flash {
  type: 'success' | 'error' | 'info';
  text: string;
}

export interface MenuItem {
  href: string;
  /** English; shown when the item has no catalogue key. */
  label: string;
  /** The label's key in the Remote UI's catalogue (src/web/i18n). */
  labelKey?: MessageKey;
}

/**
 * Adds routes to the Remote UI. It is called with the web app itself, once the Remote UI's own routes are
 * registered; a part with its own routes registers them as an encapsulated plugin
 * (`app.register(plugin, { prefix, ...options })`), which may set its own error handler and schema compilers
 * (a JSON API does). Its routes still pass through the web app's hooks: sessions, the signed-in user, the
 * security headers.
 */
export type WebPlugin = (app: FastifyInstance, web: WebContext) => PromiseLike<unknown> | void;

/** What the web layer needs from the rest of Postern; main.ts wires it. */
export interface WebDependencies {
  store: Store;
  users: Users;
  audit: AuditLog;
  caCertificates: CaCertificates;
  oauth: OAuthService;
  /** The OAuth accounts' rows (metrics, the Send menu, each account's screens). */
  accounts: Pick<OAuthAccounts, 'list' | 'get' | 'update'>;
  /** The Default sending account (the portal's marker); the seed's Microsoft account when absent. */
  defaultAccountId?: (() => Promise<string>) | undefined;
  /** The queue's figures (metrics). */
  queue: Pick<MessageQueue, 'counts' | 'oldestWaitingSince'>;
  /** What /metrics serves, fed by the parts (app.ts); absent: a registry with the gauges above only. */
  metrics?: GatewayMetrics | undefined;
  /** POSTERN_METRICS_TOKEN: when set, /metrics needs it as a bearer token. */
  metricsToken?: string | undefined;
  /** Why the gateway should not take traffic now (/readyz), beyond the store's own answer; none when absent. */
  notReady?: (() => string[]) | undefined;
  log: Logger;
  /** Extra page sections contributed by other modules (E-Mail Settings, Relay Settings, Queue, Log). */
  plugins?: WebPlugin[];
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

/**
 * The access checks run as `preValidation` hooks: before the request's schema is checked, so that a visitor
 * who is not signed in (or not allowed) is sent to the login page (or refused) whatever the form held.
 */
export type AccessCheck = (request: FastifyRequest, reply: FastifyReply) => Promise<void>;

export interface WebContext extends WebDependencies {
  loginThrottle: LoginThrottle;
  /** Pages under Settings/Registration > Send; modules add theirs. */
  sendMenu: MenuItem[];
  /** Pages under Settings/Registration > Management. */
  managementMenu: MenuItem[];
  requireLogin: AccessCheck;
  requireSendSettings: AccessCheck;
  requireUserManagement: AccessCheck;
  setFlash: (request: FastifyRequest, flash: Flash) => void;
}

/** The options of a Remote UI route plugin. */
export interface WebPluginOptions {
  web: WebContext;
}
