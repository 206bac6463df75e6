/**
 * Wiring: the only place that knows every part. Builds the store, the OAuth services and the Remote UI from
 * a Config, starts them, and stops them in reverse order. main.ts runs it as a process; tests run it
 * in-process with port 0.
 */
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { OAuthAccounts } from './oauth/accounts.js';
import { DevicePoller } from './oauth/device-poller.js';
import { GoogleAuthorization } from './oauth/google.js';
import { OAuthHttp } from './oauth/http.js';
import { OAuthService } from './oauth/service.js';
import { TokenService } from './oauth/token-service.js';
import { AuditLog } from './store/audit.js';
import { CaCertificates } from './store/ca-certificates.js';
import { openStore, type Store } from './store/store.js';
import { Users } from './store/users.js';
import { TrustStore } from './tls/trust.js';
import { buildWebApp } from './web/app.js';

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
  web: FastifyInstance;
  /** Bound addresses, known after start(). */
  httpPort: number;
  /** The generated first-administrator password, when one was generated at this start. */
  generatedAdminPassword: string | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function createPostern(config: Config, log: Logger): Promise<Postern> {
  const store = await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl, secretKey: config.secretKey });
  const instanceId = randomUUID();
  const users = new Users(store);
  const audit = new AuditLog(store);
  const caCertificates = new CaCertificates(store);
  const trust = new TrustStore(caCertificates, config.extraCaFile);
  const http = new OAuthHttp(trust);
  const accounts = new OAuthAccounts(store);
  await accounts.getOrCreate('microsoft');
  await accounts.getOrCreate('google');
  const tokens = new TokenService({ accounts, http, audit, log, instanceId });
  const poller = new DevicePoller({ accounts, http, audit, log, instanceId });
  const google = new GoogleAuthorization({ accounts, http, audit, log });
  const oauth = new OAuthService({ accounts, http, poller, google, audit, log });

  const { generatedPassword } = await users.ensureFirstAdministrator(config.adminPassword);
  let boundHttpPort = config.httpPort;
  const web = await buildWebApp({ store, users, audit, caCertificates, oauth, log, httpPort: () => boundHttpPort });

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
    httpPort: 0,
    generatedAdminPassword: generatedPassword,
    async start() {
      await poller.start();
      tokens.start();
      await web.listen({ host: config.host, port: config.httpPort });
      postern.httpPort = boundHttpPort = (web.server.address() as AddressInfo).port;
      log.info({ host: config.host, port: postern.httpPort, url: `http://${displayHost(config.host)}:${postern.httpPort}/` }, 'Remote UI listening');
    },
    async stop() {
      await web.close();
      await poller.stop();
      await tokens.stop();
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
