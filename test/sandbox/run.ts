/**
 * `npm run sandbox`: Postern wired to stand-in identity providers (and, when available, a stand-in
 * upstream mail server), so anyone can walk the seed's steps offline. Test infrastructure only.
 *
 * Environment: POSTERN_HTTP_PORT (default 8080), POSTERN_SMTP_PORT (default 2525), SANDBOX_DIR (default
 * .sandbox; removed at start unless SANDBOX_KEEP=1).
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createPostern } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startGoogleStandin, startMicrosoftStandin } from '../support/oauth-standins.js';
import { createTestPki } from '../support/test-ca.js';

const dir = resolve(process.env.SANDBOX_DIR ?? '.sandbox');
if (process.env.SANDBOX_KEEP !== '1' && existsSync(dir)) rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });

const pki = await createTestPki('Postern Sandbox CA');
writeFileSync(join(dir, 'sandbox-ca.pem'), pki.ca.cert);
const microsoft = await startMicrosoftStandin({ pki, interval: 2 });
const google = await startGoogleStandin({ pki });

const config = loadConfig({
  POSTERN_DATA_DIR: join(dir, 'data'),
  POSTERN_HOST: process.env.POSTERN_HOST ?? '127.0.0.1',
  POSTERN_HTTP_PORT: process.env.POSTERN_HTTP_PORT ?? '8080',
  POSTERN_SMTP_PORT: process.env.POSTERN_SMTP_PORT ?? '2525',
  POSTERN_ADMIN_PASSWORD: process.env.POSTERN_ADMIN_PASSWORD ?? 'sandbox-admin',
  POSTERN_LOG_LEVEL: process.env.POSTERN_LOG_LEVEL ?? 'warn',
});
const log = createLogger(config.logLevel);
const postern = await createPostern(config, log);
await postern.caCertificates.add(pki.ca.cert);

const extras: string[] = [];
let stopUpstream: (() => Promise<void>) | undefined;
try {
  // The upstream SMTP stand-in checks XOAUTH2 tokens against the Microsoft stand-in by introspection.
  const upstream = await import('../support/upstream-smtp.js').catch(() => undefined);
  if (upstream && 'startUpstreamSmtp' in upstream) {
    const server = await (upstream.startUpstreamSmtp as (o: unknown) => Promise<any>)({
      flavour: 'office365',
      pki,
      introspection: microsoft.introspection,
      requiredScope: 'https://outlook.office.com/SMTP.Send',
    });
    stopUpstream = () => server.close();
    extras.push(
      `  Upstream SMTP stand-in (Microsoft 365 style, checks XOAUTH2 tokens): ${server.host}:${server.port}, STARTTLS.`,
      `    In E-Mail Settings use SMTP Server ${server.host}, Port ${server.port}, STARTTLS.`,
    );
  }
} catch (error) {
  extras.push(`  (Upstream SMTP stand-in not started: ${error instanceof Error ? error.message : String(error)})`);
}

await postern.start();
const ui = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${postern.httpPort}/`;

process.stdout.write(`
Postern sandbox is running. Everything is offline; nothing here reaches Microsoft or Google.

  Remote UI:        ${ui}
    User Name:      admin
    Password:       ${config.adminPassword}
  Relay for devices (SMTP, STARTTLS): ${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${postern.smtpPort}

  OAuth 2.0 (Microsoft) stand-in (Edit Basic Settings):
    Microsoft Entra ID Authorization Server Endpoint:  ${microsoft.endpoint('organizations')}
      (tenants: ${microsoft.tenants.join(', ')})
    Application (Client) ID:                           ${microsoft.publicClientId}
    An app registration without "Allow public client flows": ${microsoft.confidentialClientId}

  OAuth 2.0 (Google) stand-in (Edit Basic Settings):
    Client ID:      ${google.clientId}
    Client Secret:  ${google.clientSecret}
    Authorization endpoint (advanced): ${google.authorizationEndpoint}
    Token endpoint (advanced):         ${google.tokenEndpoint}

  Test users for the sign-in pages:
${microsoft.users.map((u) => `    ${u.email} / ${u.password}`).join('\n')}

  The stand-ins use a CA made for this sandbox (already registered in CA Certificate Settings):
    ${join(dir, 'sandbox-ca.pem')}
  Your browser will warn about the sign-in pages' certificate; accept it, or import that CA.
${extras.length ? '\n' + extras.join('\n') + '\n' : ''}
Press Ctrl+C to stop.
`);

const stop = async () => {
  await postern.stop().catch(() => undefined);
  await stopUpstream?.().catch(() => undefined);
  await microsoft.close().catch(() => undefined);
  await google.close().catch(() => undefined);
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
