/**
 * Authorization Type: Application through the whole gateway: a second Microsoft account authorized by client
 * credentials (a client secret, then a certificate Postern generates), a Google account authorized as a
 * service account with domain-wide delegation, each routed to by a device account; devices send with
 * Python's smtplib; the stand-in upstreams see each message signed in as the application's mailbox, never as
 * another account's. Also what a missing step at the provider looks like on the account and in the queue.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GMAIL_SCOPE, startGoogleStandin, type GoogleStandin } from './support/oauth-standins.js';
import { pythonSend, startSendingStack, type SendingStack } from './support/sending.js';
import { startUpstreamSmtp, type UpstreamSmtp } from './support/upstream-smtp.js';

const ALICE = 'alice@example.test';
const CAROL = 'carol@example.test';
const BOB = 'bob@example.test';
const DEVICE_PASSWORD = 'correct horse battery staple';

let stack: SendingStack;
let google: GoogleStandin;
let gmail: UpstreamSmtp;

beforeAll(async () => {
  stack = await startSendingStack({ enforceSendAs: true });
  google = await startGoogleStandin({ pki: stack.pki });
  gmail = await startUpstreamSmtp({ flavour: 'gmail', introspection: { ...google.introspection, ca: google.ca }, requiredScope: GMAIL_SCOPE, tls: stack.pki.server });
});

afterAll(async () => {
  await stack?.close();
  await gmail?.close();
  await google?.close();
});

const tls = { enabled: true, verifyServerCertificate: true, addCnToVerificationItems: true };

/** The stand-in's token endpoint's base, as an administrator would copy the tenant's endpoint. */
function appEndpoint(): { endpoint: string; tenantId: string } {
  const endpoint = stack.microsoft.appOnly.tokenEndpoint().replace(/\/token$/, '');
  return { endpoint, tenantId: new URL(endpoint).pathname.split('/')[1]! };
}

async function tokenStatus(id: string, want: string): Promise<string> {
  const postern = stack.gw.postern;
  await postern.oauth.whenIdle(id);
  const status = await postern.oauth.status(id);
  expect(status.token.status, `${id}: ${status.token.error ?? ''} ${status.token.advice ?? ''}`).toBe(want);
  return status.token.advice ?? '';
}

async function sendAs(device: string, subject: string, from = 'scanner@printers.test'): Promise<void> {
  const result = await pythonSend({
    port: stack.relayPort,
    starttls: true,
    cadata: stack.relayCert,
    auth: { mechanism: 'PLAIN', user: device, password: DEVICE_PASSWORD },
    from,
    to: ['dora@example.net'],
    message: `From: ${from}\r\nTo: dora@example.net\r\nSubject: ${subject}\r\n\r\nscan\r\n`,
  });
  expect(result.ok, JSON.stringify(result.error)).toBe(true);
}

describe('app-only sending accounts through the gateway', () => {
  let appId: string;

  it('client credentials with a secret: a routed device sends as the application\'s mailbox, the other as the person\'s', async () => {
    const postern = stack.gw.postern;
    const account = await postern.accounts.add('microsoft', 'Scanners (app)');
    appId = account.id;
    expect(appId).toMatch(/^microsoft-[0-9a-f]{10}$/);
    await postern.emailSettings.save({ ...(await postern.emailSettings.get(appId)), smtpHost: '127.0.0.1', smtpPort: stack.upstream.port }, { makeDefault: false });
    stack.upstream.grantAppMailbox(stack.microsoft.appOnly.secretClientId, CAROL);
    const saved = await postern.oauth.application.saveMicrosoft(
      appId,
      { ...tls, ...appEndpoint(), clientId: stack.microsoft.appOnly.secretClientId, credential: 'secret', clientSecret: stack.microsoft.appOnly.clientSecret, mailbox: CAROL },
      'admin',
    );
    expect(saved).toEqual({ ok: true });
    await tokenStatus(appId, 'Active');
    // The Default is still the seed's Microsoft account (alice); the app is the device's.
    await postern.devices.create('app-scanner', DEVICE_PASSWORD, [], appId);
    await postern.devices.create('plain-scanner', DEVICE_PASSWORD);
    await sendAs('app-scanner', 'via the app');
    await sendAs('plain-scanner', 'via alice');
    const viaApp = await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'via the app', 'the app\'s message');
    const viaAlice = await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'via alice', 'alice\'s message');
    expect(viaApp.authUser).toBe(CAROL);
    expect(viaApp.envelope.mailFrom).toBe(CAROL);
    expect(viaAlice.authUser).toBe(ALICE);
    const accepted = (await postern.queue.logEntries({ limit: 50 })).filter((e) => e.event === 'accepted').map((e) => e.reply ?? '');
    expect(accepted.some((r) => r.includes(`sending account ${appId} (the device account)`))).toBe(true);
    expect(stack.gw.logs()).not.toContain(stack.microsoft.appOnly.clientSecret);
  });

  it('a refused mailbox is held up with the Exchange steps as advice, then sent once the role is given', async () => {
    const postern = stack.gw.postern;
    const account = await postern.accounts.add('microsoft', 'No role yet');
    await postern.emailSettings.save({ ...(await postern.emailSettings.get(account.id)), smtpHost: '127.0.0.1', smtpPort: stack.upstream.port }, { makeDefault: false });
    await postern.oauth.application.saveMicrosoft(
      account.id,
      { ...tls, ...appEndpoint(), clientId: stack.microsoft.appOnly.secretClientId, credential: 'secret', clientSecret: stack.microsoft.appOnly.clientSecret, mailbox: 'erin@example.test' },
      'admin',
    );
    await tokenStatus(account.id, 'Active');
    await postern.devices.create('norole-scanner', DEVICE_PASSWORD, [], account.id);
    await sendAs('norole-scanner', 'no role');
    const waiting = await waitForRow(async () => (await postern.queue.list()).find((m) => m.subject === 'no role' && m.lastReply !== null));
    expect(waiting.accountId).toBe(account.id);
    expect(waiting.lastReply).toMatch(/535 5\.7\.3/);
    expect(waiting.lastAdvice).toMatch(/New-ServicePrincipal/);
    expect(waiting.lastAdvice).toMatch(/Application SMTP\.SendAsApp/);
    stack.upstream.grantAppMailbox(stack.microsoft.appOnly.secretClientId, 'erin@example.test');
    await postern.queue.retryNow(waiting.id, 'admin');
    postern.queueManager.kick();
    const sent = await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'no role', 'sent after the role');
    expect(sent.authUser).toBe('erin@example.test');
  });

  it('client credentials with a certificate Postern generates and the administrator uploads', async () => {
    const postern = stack.gw.postern;
    const clientId = stack.microsoft.appOnly.certificateClientId;
    const input = { ...tls, ...appEndpoint(), clientId, credential: 'certificate' as const, clientSecret: '', mailbox: CAROL };
    // Certificate chosen, none generated yet: refused field by field, nothing saved.
    const refused = await postern.oauth.application.saveMicrosoft(appId, input, 'admin');
    expect(refused.ok).toBe(false);
    const generated = await postern.oauth.application.generateCertificate(appId, 'admin');
    expect(generated.certificatePem).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(generated.thumbprint).toMatch(/^[0-9A-F]{40}$/);
    // Not yet uploaded: Entra refuses the assertion, and says so.
    await postern.oauth.application.saveMicrosoft(appId, input, 'admin');
    const advice = await tokenStatus(appId, 'Expired');
    expect(advice).toMatch(/certificate/i);
    stack.microsoft.appOnly.registerAppCertificate(clientId, generated.certificatePem);
    stack.upstream.grantAppMailbox(clientId, CAROL);
    await postern.oauth.application.saveMicrosoft(appId, input, 'admin');
    await tokenStatus(appId, 'Active');
    const row = (await postern.accounts.get(appId))!;
    expect(row.client_secret_enc).toBeNull();
    expect(row.client_key_enc).not.toContain('PRIVATE KEY');
    await sendAs('app-scanner', 'via the certificate');
    const sent = await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'via the certificate', 'sent with the certificate');
    expect(sent.authUser).toBe(CAROL);
  });

  it('a Google service account with domain-wide delegation sends as the impersonated mailbox', async () => {
    const postern = stack.gw.postern;
    const account = await postern.accounts.add('google', 'Workspace robot');
    expect(account.id).toMatch(/^google(-[0-9a-f]{10})?$/);
    await postern.emailSettings.save({ ...(await postern.emailSettings.get(account.id)), smtpHost: '127.0.0.1', smtpPort: gmail.port, tlsMode: 'tls' }, { makeDefault: false });
    const keyJson = google.serviceAccounts.createServiceAccount('postern-relay');
    const key = JSON.parse(keyJson) as { client_id: string; private_key: string };
    // Delegation not entered in the Admin console yet: unauthorized_client, with the steps.
    const saved = await postern.oauth.application.saveGoogle(account.id, { ...tls, keyJson, mailbox: BOB }, 'admin');
    expect(saved).toEqual({ ok: true });
    const advice = await tokenStatus(account.id, 'Expired');
    expect(advice).toMatch(/[Dd]omain-wide delegation/);
    expect(advice).toContain(key.client_id);
    google.serviceAccounts.authorizeDelegation(key.client_id, [GMAIL_SCOPE]);
    await postern.oauth.application.requestToken(account.id, 'admin');
    await tokenStatus(account.id, 'Active');
    await postern.devices.create('google-scanner', DEVICE_PASSWORD, [], account.id);
    await sendAs('google-scanner', 'via the service account');
    const sent = await gmail.waitForMessage((m) => m.parsed?.subject === 'via the service account', 'sent as bob');
    expect(sent.authUser).toBe(BOB);
    const row = (await postern.accounts.get(account.id))!;
    expect(row.service_account_key_enc).not.toContain('PRIVATE KEY');
    expect(stack.gw.logs()).not.toContain(key.private_key.split('\n')[1]!);
  });

  it('refuses a key that is not a service account key, a common tenant and a bad mailbox, field by field', async () => {
    const postern = stack.gw.postern;
    const account = await postern.accounts.add('google', 'Bad input');
    for (const keyJson of ['{}', 'not json', '{"type":"authorized_user"}', '\u0000'.repeat(10), 'x'.repeat(70_000)]) {
      const result = await postern.oauth.application.saveGoogle(account.id, { ...tls, keyJson, mailbox: BOB }, 'admin');
      expect(result.ok, keyJson.slice(0, 20)).toBe(false);
    }
    const ms = await postern.accounts.add('microsoft', 'Bad tenant');
    const common = await postern.oauth.application.saveMicrosoft(ms.id, { ...tls, tenantId: 'common', clientId: stack.microsoft.appOnly.secretClientId, credential: 'secret', clientSecret: 's', mailbox: 'not an address' }, 'admin');
    expect(common.ok).toBe(false);
    if (!common.ok) expect(Object.keys(common.errors).sort()).toEqual(['mailbox', 'tenantId']);
    expect((await postern.accounts.get(ms.id))!.authorization_type).toBe('delegated');
  });
});

async function waitForRow<T>(find: () => Promise<T | undefined>): Promise<T> {
  const { untilQueue } = await import('./support/queue.js');
  return untilQueue(stack.gw.postern.queueManager, find, 'the message with its reply');
}
