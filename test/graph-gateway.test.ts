/**
 * Delivery Method: Microsoft Graph through the whole gateway. The seed's Microsoft account (alice) sends by
 * SMTP; a second Microsoft account (bob, signed in by the device flow) delivers through the Graph stand-in;
 * an application account (client credentials) delivers through Graph as its mailbox. Devices send with
 * Python's smtplib, each routed to its account; every message arrives at the right server as the right
 * mailbox, never crossed. Graph's 429 with Retry-After defers the message for at least that long.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOG } from './support/events.js';
import { startGraphStandin, type GraphStandin } from './support/graph-standin.js';
import { OUTLOOK_SMTP_SCOPE, startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { authorizeMicrosoft, pythonSend, saveEmailSettings } from './support/sending.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { startUpstreamSmtp, type UpstreamSmtp } from './support/upstream-smtp.js';
import { approveDeviceCode } from './support/user-agent.js';
import { untilQueue } from './support/queue.js';

const BOB = 'bob@example.test';
const CAROL = 'carol@example.test';
const DEVICE_PASSWORD = 'correct horse battery staple';
const tls = { enabled: true, verifyServerCertificate: true, addCnToVerificationItems: true };

let pki: TestPki;
let microsoft: MicrosoftStandin;
let upstream: UpstreamSmtp;
let graph: GraphStandin;
let gw: TestPostern;
let relayCert: string;

beforeAll(async () => {
  pki = await createTestPki();
  microsoft = await startMicrosoftStandin({ pki, interval: 1 });
  upstream = await startUpstreamSmtp({ flavour: 'office365', introspection: { ...microsoft.introspection, ca: pki.ca.cert }, requiredScope: OUTLOOK_SMTP_SCOPE, tls: pki.server, enforceSendAs: true });
  graph = await startGraphStandin({ introspection: microsoft.introspection, pki });
  gw = await startTestPostern({ caPems: [pki.ca.cert], config: { graphUrl: graph.baseUrl, queue: { retryBaseMs: 200, retryMaxMs: 400, lifetimeMs: 600_000, concurrency: 4 } } });
  const web = new WebClient(gw.url);
  await web.login();
  await authorizeMicrosoft(web, microsoft, pki, gw.log);
  await saveEmailSettings(web, { smtpPort: String(upstream.port) });
  relayCert = (await gw.postern.relaySettings.certificate())!.cert;
  await gw.postern.devices.create('smtp-scanner', DEVICE_PASSWORD);
});

afterAll(async () => {
  await gw?.close();
  await graph?.close();
  await upstream?.close();
  await microsoft?.close();
});

async function sendAs(device: string, subject: string): Promise<void> {
  const result = await pythonSend({
    port: gw.postern.smtpPort,
    starttls: true,
    cadata: relayCert,
    auth: { mechanism: 'PLAIN', user: device, password: DEVICE_PASSWORD },
    from: 'scanner@printers.test',
    to: ['dora@example.net'],
    message: `From: scanner@printers.test\r\nTo: dora@example.net\r\nSubject: ${subject}\r\n\r\nscan\r\n`,
  });
  expect(result.ok, JSON.stringify(result.error)).toBe(true);
}

const subjectOf = (mime: Buffer) => /^Subject: (.*)$/m.exec(mime.toString('utf8'))?.[1]?.trim();

describe('Microsoft Graph delivery through the gateway', () => {
  it('a second, delegated Microsoft account delivers through Graph as its own mailbox; the seed\'s goes on by SMTP', async () => {
    const postern = gw.postern;
    const account = await postern.accounts.add('microsoft', 'Graph (bob)');
    await postern.accounts.update(account.id, { delivery_method: 'graph' });
    const issued = gw.log.mark();
    await postern.oauth.microsoftFor(account.id).saveSettings({ ...tls, endpoint: microsoft.endpoint('organizations'), clientId: microsoft.publicClientId }, 'admin');
    await gw.log.waitFor(LOG.userCodeIssued, { from: issued });
    const status = await postern.oauth.status(account.id);
    expect(status.device?.userCode).toBeTruthy();
    // The sign-in asks for Graph's permission, not SMTP's.
    const signingIn = gw.log.mark();
    await approveDeviceCode({ verificationUri: microsoft.verificationUri, userCode: status.device!.userCode, email: BOB, password: 'correct horse', ca: pki.ca.cert });
    await gw.log.waitFor(LOG.authorized, { from: signingIn });
    expect((await postern.oauth.status(account.id)).token).toMatchObject({ status: 'Active', mailbox: BOB });

    await postern.devices.create('graph-scanner', DEVICE_PASSWORD, [], account.id);
    await sendAs('graph-scanner', 'through graph');
    await sendAs('smtp-scanner', 'through smtp');
    const viaSmtp = await upstream.waitForMessage((m) => m.parsed?.subject === 'through smtp', 'the SMTP message');
    expect(viaSmtp.authUser).toBe('alice@example.test');
    const viaGraph = await untilQueue(postern.queueManager, async () => graph.messages.find((m) => subjectOf(m.mime) === 'through graph'), 'the Graph message');
    expect(viaGraph.mailbox).toBe(BOB);
    expect(viaGraph.recipients).toEqual(['dora@example.net']);
    expect(viaGraph.via).toBe('sendMail');
    // The sender policy applies on the way out as for SMTP: the From is the account's mailbox.
    expect(viaGraph.mime.toString()).toMatch(new RegExp(`^From: .*${BOB}`, 'm'));
    expect(upstream.messages.find((m) => m.parsed?.subject === 'through graph')).toBeUndefined();
    expect(graph.messages.find((m) => subjectOf(m.mime) === 'through smtp')).toBeUndefined();
    const row = (await postern.queue.list(['sent'])).find((m) => m.subject === 'through graph')!;
    expect(row.accountId).toBe(account.id);
    expect(row.lastCode).toBe(202);
  });

  it('an application account (client credentials) delivers through Graph as /users/{mailbox}', async () => {
    const postern = gw.postern;
    const account = await postern.accounts.add('microsoft', 'Graph app');
    await postern.accounts.update(account.id, { delivery_method: 'graph' });
    const endpoint = microsoft.appOnly.tokenEndpoint().replace(/\/token$/, '');
    const saved = await postern.oauth.application.saveMicrosoft(
      account.id,
      { ...tls, endpoint, tenantId: new URL(endpoint).pathname.split('/')[1]!, clientId: microsoft.appOnly.secretClientId, credential: 'secret', clientSecret: microsoft.appOnly.clientSecret, mailbox: CAROL },
      'admin',
    );
    expect(saved).toEqual({ ok: true });
    await postern.oauth.whenIdle(account.id);
    expect((await postern.oauth.status(account.id)).token.status).toBe('Active');
    expect(microsoft.tokenRequests.at(-1)).toMatchObject({ grantType: 'client_credentials', scope: 'https://graph.microsoft.com/.default', status: 200 });
    await postern.devices.create('graph-app-scanner', DEVICE_PASSWORD, [], account.id);
    await sendAs('graph-app-scanner', 'through graph as the app');
    const sent = await untilQueue(postern.queueManager, async () => graph.messages.find((m) => subjectOf(m.mime) === 'through graph as the app'), 'the app\'s Graph message');
    expect(sent.mailbox).toBe(CAROL);
    expect(graph.requests.some((r) => r.path.includes(`/users/${encodeURIComponent(CAROL)}/sendMail`) || r.path.includes(`/users/${CAROL}/sendMail`))).toBe(true);
  });

  it('Graph\'s 429 with Retry-After defers the message for at least that long', async () => {
    const postern = gw.postern;
    graph.failNext({ status: 429, headers: { 'Retry-After': '120' }, body: { error: { code: 'ApplicationThrottled', message: 'Too many requests' } } });
    const before = Date.now();
    await sendAs('graph-scanner', 'throttled');
    const deferred = await untilQueue(postern.queueManager, async () => (await postern.queue.list(['deferred'])).find((m) => m.subject === 'throttled'), 'deferred');
    expect(deferred.lastCode).toBe(429);
    expect(deferred.nextAttemptAt).toBeGreaterThanOrEqual(before + 120_000);
    await postern.queue.remove(deferred.id, 'admin');
  });
});
