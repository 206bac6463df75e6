/**
 * Wiring: the only place that knows every part. Builds the store, the OAuth services and the Remote UI from
 * a Config, starts them, and stops them in reverse order. main.ts runs it as a process; tests run it
 * in-process with port 0.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { FastifyInstance } from 'fastify';
import { ApiTokens } from './api/tokens.js';
import { QUEUE_DEFAULTS, QUEUE_LEASE_DEFAULT_MS, RELAY_LIMIT_DEFAULTS, type Config } from './config.js';
import { describeError, type Logger } from './log.js';
import { LoginThrottle } from './login-throttle.js';
import { GatewayMetrics } from './metrics.js';
import { Notifier } from './notify/notifier.js';
import { NotificationSettings } from './notify/settings.js';
import { OAuthAccounts } from './oauth/accounts.js';
import { DevicePoller } from './oauth/device-poller.js';
import { OAuthHttp } from './oauth/http.js';
import { createOAuthService, type OAuthService } from './oauth/service.js';
import { TokenService } from './oauth/token-service.js';
import { StorePacer } from './queue/pacing.js';
import { MessageQueue, QueueReads, type QueuedMessage } from './queue/queue.js';
import { QueueManager } from './queue/queue-manager.js';
import { Spool, spoolDirectory } from './queue/spool.js';
import { DeviceAccounts } from './smtp-in/devices.js';
import { RelayServer } from './smtp-in/relay-server.js';
import { relayCertificateNames, RelaySettings } from './smtp-in/relay-settings.js';
import { SmtpDelivery } from './smtp-out/delivery.js';
import { EmailSettings } from './smtp-out/email-settings.js';
import { UpstreamTransport } from './smtp-out/upstream-transport.js';
import { relayExtensions } from './smtp-out/extensions.js';
import { AuditLog } from './store/audit.js';
import { CaCertificates } from './store/ca-certificates.js';
import { SettingsWatch } from './store/settings-watch.js';
import { SendingRoutes } from './smtp-in/routing.js';
import { GraphDelivery } from './smtp-out/graph.js';
import { openStore, type Store } from './store/store.js';
import { Users } from './store/users.js';
import { TrustStore } from './tls/trust.js';
import { listenHttps, type HttpsListener } from './web/https.js';
import { RemoteUiListener } from './web/listener.js';

export interface Postern {
  config: Config;
  store: Store;
  users: Users;
  audit: AuditLog;
  caCertificates: CaCertificates;
  accounts: OAuthAccounts;
  tokens: TokenService;
  oauth: OAuthService;
  poller: DevicePoller;
  /**
   * The Remote UI's listeners; the Remote UI itself (Fastify, every screen, the JSON API) is built at the
   * first request that needs it, or by `web.app()` (src/web/listener.ts).
   */
  web: RemoteUiListener;
  emailSettings: EmailSettings;
  relaySettings: RelaySettings;
  devices: DeviceAccounts;
  /** Which sending account each message goes through (smtp-in/routing.ts). */
  routes: SendingRoutes;
  queue: MessageQueue;
  queueManager: QueueManager;
  relay: RelayServer;
  transport: UpstreamTransport;
  notificationSettings: NotificationSettings;
  notifier: Notifier;
  /** What /metrics serves; the parts tell it what happens (wired below). */
  metrics: GatewayMetrics;
  /** The JSON API's bearer tokens (src/api). */
  apiTokens: ApiTokens;
  /** Bound addresses, known after start(). */
  httpPort: number;
  smtpPort: number;
  /** The Remote UI's HTTPS port when POSTERN_HTTPS_PORT is set, known after start(); undefined otherwise. */
  httpsPort: number | undefined;
  /** Where administrators open the Remote UI (over HTTPS when it is on), known after start(). */
  remoteUiUrl: string;
  /** The generated first-administrator password, when one was generated at this start. */
  generatedAdminPassword: string | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function createPostern(config: Config, log: Logger): Promise<Postern> {
  const store = await openStore({
    dataDir: config.dataDir,
    databaseUrl: config.databaseUrl,
    secretKey: config.secretKey,
    onConnectionError: (error) => log.warn({ err: error }, 'database connection lost; the next query reconnects'),
  });
  const instanceId = randomUUID();
  const users = new Users(store);
  const audit = new AuditLog(store);
  const caCertificates = new CaCertificates(store);
  const trust = new TrustStore(caCertificates, config.extraCaFile);
  const http = new OAuthHttp(trust, config.outboundProxy);
  const accounts = new OAuthAccounts(store);
  await accounts.getOrCreate('microsoft');
  await accounts.getOrCreate('google');
  const tokens = new TokenService({ accounts, http, audit, log, instanceId, refreshAheadMs: config.tokenRefreshAheadMs });
  const poller = new DevicePoller({ accounts, http, audit, log, instanceId });
  const oauth = createOAuthService({ accounts, http, poller, audit, log });
  oauth.application.useTokens(tokens);

  // Sending: device relay (smtp-in) → queue (spool + rows) → queue manager → delivery with XOAUTH2 (smtp-out).
  const tuning = { ...QUEUE_DEFAULTS, ...config.queue };
  const name = hostname();
  const queue = new MessageQueue(store, Spool.open(spoolDirectory(config.dataDir)), { tuning });
  const emailSettings = new EmailSettings(store);
  const relaySettings = new RelaySettings(store);
  const devices = new DeviceAccounts(store);
  // Which sending account each message goes through, decided when the relay accepts it (smtp-in/routing.ts).
  const routes = new SendingRoutes(store, { relaySettings, devices, defaultAccountId: () => emailSettings.defaultAccountId() });
  await relaySettings.ensureCertificate(relayCertificateNames(config.host));
  // What sessions see the upstream advertise is kept in E-Mail Settings; the relay promises no more (docs/protocol.md §5.3).
  const delivery = new SmtpDelivery({
    tokens,
    trust,
    log,
    clientName: name,
    onExtensions: (target, extensions) =>
      emailSettings.recordExtensions(target.host, target.port, extensions, target.accountId).then(
        () => undefined,
        (error: unknown) => log.warn({ err: describeError(error) }, 'could not record what the upstream supports'),
      ),
  });
  // Accounts whose Delivery Method is Microsoft Graph send through Graph's sendMail (smtp-out/graph.ts).
  const graph = new GraphDelivery({ tokens, http, log });
  const transport = new UpstreamTransport(emailSettings, tokens, delivery, name, accounts, { sender: graph, ...(config.graphUrl ? { baseUrl: config.graphUrl } : {}) });
  // Pacing lives in the store, so every instance on a shared database keeps to one limit per account.
  const queueManager = new QueueManager({ queue, transport, pacer: new StorePacer(store), log, tuning, reportingMta: name, leaseMs: config.queueLeaseMs ?? QUEUE_LEASE_DEFAULT_MS });
  emailSettings.onChange(() => {
    routes.forget(); // the Default may have changed
    delivery.closeIdle();
    queueManager.invalidateRoute();
  });
  // A route concluded from the old Token Status (held: "not authorized yet") must not outlive the change.
  accounts.onTokenChange(() => queueManager.invalidateRoute());

  // Metrics: the parts report what happens through their observer hooks; only src/metrics.ts knows prom-client.
  const metrics = new GatewayMetrics({ sources: { accounts, queue } });
  queueManager.onEvent((event) => {
    if (event.type === 'delivery' && event.outcome) metrics.onOutcome(event.outcome);
  });
  tokens.onRefresh((account, outcome) => metrics.onTokenRefresh(account, outcome));
  // The account a message goes out through is the one it was routed to ('' only from an older instance).
  const countAccepted = (message: QueuedMessage) =>
    void (message.accountId ? Promise.resolve(message.accountId) : emailSettings.defaultAccountId()).then(
      (accountId) => metrics.onAccepted(accountId),
      () => metrics.onAccepted('unknown'),
    );
  const relay = new RelayServer({
    host: config.host,
    port: config.smtpPort,
    hostname: name,
    settings: relaySettings,
    devices,
    throttle: new LoginThrottle(),
    limits: { ...RELAY_LIMIT_DEFAULTS, ...config.relayLimits },
    intake: queue,
    log,
    proxyFrom: config.smtpProxyFrom,
    routes,
    onAccepted: (message) => {
      countAccepted(message);
      queueManager.offer(message);
    },
    // A device's route is known only after EHLO: the relay promises what every account that sends by SMTP
    // and is in use can pass on (Graph takes the MIME as it is).
    upstream: async () => {
      const inUse = new Set((await accounts.listEnabled()).filter((a) => a.delivery_method !== 'graph').map((a) => a.id));
      const all = (await emailSettings.all()).filter((settings) => inUse.has(settings.accountId));
      const views = all.length > 0 ? all : [await emailSettings.get()];
      const advertised = views.map((settings) => relayExtensions(settings.smtpHost, settings.smtpPort, settings.upstreamExtensions));
      return { eightBitMime: advertised.every((a) => a['8BITMIME']), smtpUtf8: advertised.every((a) => a.SMTPUTF8) };
    },
  });
  relay.onAuthFailure((reason) => metrics.onRelayAuthFailure(reason));
  emailSettings.onExtensionsChange(() => relay.reload().catch((error: unknown) => log.error({ err: describeError(error) }, 'could not apply what the upstream supports')));

  // Notifications: a webhook tells administrators when sending needs attention (src/notify). Links fall back
  // to the Remote UI's own address when the administrator's is not known.
  const notificationSettings = new NotificationSettings(store);
  const notifier = new Notifier({
    store,
    settings: notificationSettings,
    http,
    audit,
    log,
    instanceId,
    messageLifetimeMs: tuning.lifetimeMs,
    remoteUiBase: () => postern.remoteUiUrl,
  });

  const apiTokens = new ApiTokens(store);

  const { generatedPassword } = await users.ensureFirstAdministrator(config.adminPassword);
  let boundHttpPort = config.httpPort;
  let boundHttpsPort = config.https?.port ?? 0;
  let httpsListener: HttpsListener | undefined;
  /** Where start() and stop() are: /readyz says ready only while running with every listener up. */
  let phase: 'created' | 'starting' | 'running' | 'stopping' = 'created';
  const notReady = (): string[] => {
    const reasons: string[] = [];
    if (phase !== 'running') reasons.push(phase === 'stopping' ? 'stopping' : 'starting');
    if (!relay.listening) reasons.push('SMTP relay not listening');
    if (!web.listening || (config.https && !httpsListener)) reasons.push('Remote UI not listening');
    return reasons;
  };
  if (config.https && !config.https.certificate) {
    // Postern's own certificate, the relay's: the Remote UI follows it when it is regenerated or uploaded
    // in Relay Settings.
    relaySettings.onChange(async () => {
      const certificate = await relaySettings.certificate();
      if (certificate && httpsListener) httpsListener.setCertificate(certificate);
    });
  }
  // Several instances on one PostgreSQL: a setting saved through one is in force on the others within a
  // second or two (LISTEN/NOTIFY, polling as the fallback; docs/several-instances.md).
  const settingsWatch = new SettingsWatch(store, { log });
  settingsWatch.onChange(async (table) => {
    log.info({ table }, 'settings changed in the database: applied');
    devices.forgetAllowedSenders();
    routes.forget();
    emailSettings.forget();
    queueManager.invalidateRoute();
    delivery.closeIdle();
    await relay.reload().catch((error: unknown) => log.error({ err: describeError(error) }, 'could not apply Relay Settings changed by another instance'));
  });
  const queueReads = new QueueReads(store);
  // Loaded on first use: a gateway nobody is administering does not carry the Remote UI (decision 032).
  const buildRemoteUi = async (): Promise<FastifyInstance> => {
    const [{ buildWebApp }, { apiTokensPage }, { emailSettingsRoutes }, { notificationRoutes }, { queueRoutes }, { relaySettingsRoutes }, { senderRoutingRoutes }, { authorizationTypeRoutes }, { sendingAccountsRoutes }, { API_PREFIX, apiPlugin }] =
      await Promise.all([
        import('./web/app.js'),
        import('./web/routes/api-tokens.js'),
        import('./web/routes/email-settings.js'),
        import('./web/routes/notifications.js'),
        import('./web/routes/queue.js'),
        import('./web/routes/relay-settings.js'),
        import('./web/routes/sender-routing.js'),
        import('./web/routes/authorization-type.js'),
        import('./web/routes/sending-accounts.js'),
        import('./api/plugin.js'),
      ]);
    return buildWebApp({
    trustedProxies: config.httpTrustedProxies,
    store,
    users,
    audit,
    caCertificates,
    oauth,
    accounts,
    defaultAccountId: () => emailSettings.sendingAccountId(),
    queue,
    metrics,
    metricsToken: config.metricsToken,
    notReady,
    log,
    httpPort: () => boundHttpPort,
    httpsPort: config.https ? () => boundHttpsPort : undefined,
    plugins: [
      (app, web) =>
        app.register(emailSettingsRoutes, { web, deps: { emailSettings, oauth, audit, accounts, sendTestEmail: (to, actor, accountId) => transport.sendTestEmail(to, actor, accountId) } }),
      (app, web) =>
        app.register(sendingAccountsRoutes, { web, deps: { accounts, emailSettings, routes, waiting: () => queueReads.waitingByAccount(), audit } }),
      (app, web) => app.register(senderRoutingRoutes, { web, deps: { routes, accounts, audit } }),
      (app, web) => app.register(authorizationTypeRoutes, { web }),
      (app, web) =>
        app.register(relaySettingsRoutes, {
          web,
          deps: {
            relaySettings,
            devices,
            routes,
            accounts,
            audit,
            listener: () => ({ host: config.host, port: relay.port || config.smtpPort }),
            certificateNames: () => relayCertificateNames(config.host),
          },
        }),
      (app, web) => app.register(queueRoutes, { web, deps: { queue, audit, accounts, kick: () => queueManager.kick() } }),
      (app, web) => app.register(notificationRoutes, { web, deps: { settings: notificationSettings, notifier, audit } }),
      async (app, context) => {
        await app.register(apiTokensPage, { web: context, tokens: apiTokens, audit });
        await app.register(apiPlugin, {
          prefix: API_PREFIX,
          tokens: apiTokens,
          accounts,
          oauth,
          queue,
          kick: () => queueManager.kick(),
          devices,
          emailSettings,
          relaySettings,
          audit,
          log,
          requestsPerMinute: config.apiRequestsPerMinute,
        });
      },
    ],
  });
  };
  const web = new RemoteUiListener({ build: buildRemoteUi, store, metrics, metricsToken: config.metricsToken, notReady, log });

  const postern: Postern = {
    config,
    store,
    users,
    audit,
    caCertificates,
    accounts,
    tokens,
    oauth,
    poller,
    web,
    emailSettings,
    relaySettings,
    devices,
    queue,
    queueManager,
    relay,
    transport,
    notificationSettings,
    notifier,
    metrics,
    apiTokens,
    routes,
    httpPort: 0,
    smtpPort: 0,
    httpsPort: undefined,
    remoteUiUrl: '',
    generatedAdminPassword: generatedPassword,
    async start() {
      phase = 'starting';
      if (config.outboundProxy) {
        // toJSON shows scheme://host:port and whether credentials are set, never the credentials.
        log.info(config.outboundProxy.toJSON(), 'OAuth HTTP requests go through the outbound proxy (upstream SMTP connects directly)');
      }
      await settingsWatch.start();
      await poller.start();
      tokens.start();
      await queueManager.start();
      postern.smtpPort = await relay.start();
      log.info({ host: config.host, port: postern.smtpPort }, 'SMTP relay listening');
      // HTTPS first: when "Remote UI listening" (plain HTTP), which tools wait for, is logged, both are up.
      let httpsUrl: string | undefined;
      if (config.https) {
        const certificate = config.https.certificate ?? (await relaySettings.ensureCertificate(relayCertificateNames(config.host)));
        httpsListener = await listenHttps(web, { host: config.host, port: config.https.port, certificate, log });
        postern.httpsPort = boundHttpsPort = httpsListener.port;
        httpsUrl = `https://${displayHost(config.host)}:${postern.httpsPort}/`;
        log.info(
          { host: config.host, port: postern.httpsPort, url: httpsUrl, certificate: config.https.certificate?.certFile ?? 'Postern\'s own (Relay Settings)' },
          'Remote UI listening over HTTPS',
        );
      }
      postern.httpPort = boundHttpPort = await web.listen({ host: config.host, port: config.httpPort });
      const httpUrl = `http://${displayHost(config.host)}:${postern.httpPort}/`;
      postern.remoteUiUrl = httpsUrl ?? httpUrl;
      log.info(
        { host: config.host, port: postern.httpPort, url: httpUrl, ...(httpsUrl ? { redirectsTo: httpsUrl } : {}) },
        'Remote UI listening',
      );
      notifier.start();
      phase = 'running';
    },
    async stop() {
      // Not ready from the first moment, so that load balancers stop sending before the listeners close.
      phase = 'stopping';
      // Stop accepting mail first, then let deliveries finish (or give their messages back), then the rest.
      await relay.stop();
      await queueManager.stop();
      await Promise.all([web.close(), httpsListener?.close()]);
      await poller.stop();
      await settingsWatch.stop();
      await tokens.stop();
      await notifier.stop();
      await http.close();
      await store.close();
    },
  };
  return postern;
}

function displayHost(host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}
