/**
 * Notifications end to end: the Remote UI page (validation, the secret URL never shown back, roles), Send
 * Test Notification against a real HTTP(S) receiver, and the notifier on the real sending path: a refresh
 * token the stand-in revoked (Token Status Expired, then Active again after re-authorization), messages held
 * past the threshold, a bounce, and a receiver that fails twice before it answers 200. The notifier's
 * timer is stopped; each pass is a tick(now), with the clock moved forward where a threshold needs it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NOTIFICATION_EVENTS, type NotificationEvent } from '../src/notify/events.js';
import { field, WebClient } from './support/postern.js';
import { waitForState } from './support/queue.js';
import { ALICE, authorizeMicrosoft, RawSmtp, saveRelaySettings, startSendingStack, type SendingStack } from './support/sending.js';
import { createTestPki } from './support/test-ca.js';
import { startWebhookReceiver, type ReceivedWebhook, type WebhookReceiver } from './support/webhook-receiver.js';

const PAGE = '/settings/notifications';
const MINUTE = 60_000;
/** The secret parts of the webhook URL, as Teams and Slack URLs carry them. */
const SECRET_PATH = 'T0KEN-in-the-path-9f2c41';
const SECRET_SIG = 'SIG-in-the-query-77d0e3';

let stack: SendingStack;
let receiver: WebhookReceiver;
let hookUrl: string;
const secretUrls: string[] = [];

const allEvents = (events: readonly NotificationEvent[] = NOTIFICATION_EVENTS) => Object.fromEntries(events.map((e) => [`event-${e}`, 'on']));

async function save(fields: Record<string, string>, web = stack.web): Promise<string> {
  await web.get(PAGE);
  return web.post(PAGE, { webhookUrl: '', format: 'json', ...allEvents(), ...fields });
}

/** One pass of the notifier, `aheadMs` in the future. */
const tick = (aheadMs = 0) => stack.gw.postern.notifier.tick(Date.now() + aheadMs);

/** What the receiver got since `mark`. */
const since = (mark: number): ReceivedWebhook[] => receiver.received.slice(mark);

async function expireToken(): Promise<void> {
  expect(stack.microsoft.revokeRefreshTokens(ALICE)).toBeGreaterThan(0);
  await stack.gw.postern.accounts.update('microsoft', { access_token_expires_at: Date.now() - 1000 });
  await expect(stack.gw.postern.tokens.getAccessToken('microsoft')).rejects.toMatchObject({ status: 'Expired' });
}

let counter = 0;
async function submit(to = 'bob@example.test'): Promise<string> {
  const smtp = await RawSmtp.open(stack.relayPort);
  await smtp.command('EHLO device.test');
  expect(await smtp.command('MAIL FROM:<scanner@printers.local>')).toMatch(/^250 /);
  expect(await smtp.command(`RCPT TO:<${to}>`)).toMatch(/^250 /);
  expect(await smtp.command('DATA')).toMatch(/^354 /);
  smtp.write(`From: scanner@printers.local\r\nTo: ${to}\r\nSubject: scan ${++counter}\r\n\r\nscan\r\n.\r\n`);
  const reply = await smtp.reply();
  smtp.close();
  const id = /queued as ([0-9a-f-]{36})/.exec(reply)?.[1];
  if (!id) throw new Error(`not queued: ${reply}`);
  return id;
}

const waitState = (id: string, state: string) => waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, id, state);

beforeAll(async () => {
  stack = await startSendingStack();
  await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.1' });
  await stack.gw.postern.users.create('viewer', 'viewer-password', 'GeneralUser');
  receiver = await startWebhookReceiver();
  hookUrl = `${receiver.origin}/hooks/${SECRET_PATH}?sig=${SECRET_SIG}`;
  secretUrls.push(hookUrl);
  // Passes are driven by the tests (tick), not by the 30-second timer.
  await stack.gw.postern.notifier.stop();
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('the Notifications page', () => {
  it('sits under Management beside Queue and Log; every event is on by default; no webhook yet', async () => {
    const html = await stack.web.get(PAGE);
    expect(stack.web.lastStatus).toBe(200);
    expect(html).toContain('<h1>Notifications</h1>');
    const nav = /<nav class="sidenav"[\s\S]*?<\/nav>/.exec(html)![0];
    const [queue, log, notifications] = ['/settings/queue', '/settings/log', PAGE].map((href) => nav.indexOf(`href="${href}"`)) as [number, number, number];
    expect(queue).toBeGreaterThan(0);
    expect(log).toBeGreaterThan(queue);
    expect(notifications).toBeGreaterThan(log);
    expect(await stack.web.get('/settings')).toContain(`<a href="${PAGE}">Notifications</a>`);
    for (const event of NOTIFICATION_EVENTS) expect(html).toMatch(new RegExp(`id="event-${event}"[^>]* checked`));
    for (const label of ['Token Status became Expired', 'Token Status in Error for more than 15 minutes', 'Server Connection Status: Connection Failed (at a connection check)', 'Messages held for more than 15 minutes', 'A message returned to its sender (bounce)']) {
      expect(html).toContain(`>${label}</label>`);
    }
    expect(html).toContain('<label for="webhookUrl">Webhook URL</label>');
    expect(html).toContain('<label for="format">Format</label>');
    expect(field(html, 'webhook-url')).toBe('Not set: notifications are off');
    expect(html).toMatch(/<button type="submit" disabled>Send Test Notification<\/button>/);
  });

  it('refuses bad input with a message on the field, saves nothing, and does not repeat the URL typed', async () => {
    let html = await save({ webhookUrl: '' });
    expect(stack.web.lastStatus).toBe(400);
    expect(html).toContain('<p class="field-error" id="webhookUrl-error">Enter the Webhook URL of the receiver (https://…).</p>');
    expect(html).toMatch(/id="webhookUrl"[^>]*aria-invalid="true"/);

    html = await save({ webhookUrl: `http://hooks.example.com/hooks/${SECRET_PATH}` });
    expect(stack.web.lastStatus).toBe(400);
    expect(html).toContain('http://hooks.example.com/… uses http://, which is unencrypted');
    expect(html).not.toContain(SECRET_PATH);

    html = await save({ webhookUrl: 'https://admin:pw@hooks.example.com/x' });
    expect(stack.web.lastStatus).toBe(400);
    expect(html).toContain('cannot contain a user name or password');

    html = await save({ webhookUrl: 'https://hooks.example.com/x', format: 'xml' });
    expect(stack.web.lastStatus).toBe(400);
    expect(html).toContain('<p class="field-error" id="format-error">Choose the format your receiver expects.</p>');

    expect((await stack.gw.postern.notificationSettings.get()).configured).toBe(false);
  });

  it('saves the URL encrypted and shows only scheme://host/…; http:// on loopback comes with a warning', async () => {
    await save({ webhookUrl: hookUrl });
    expect(stack.web.lastStatus).toBe(303);
    const html = await stack.web.page(PAGE);
    expect(field(html, 'webhook-url')).toBe(`${receiver.origin}/…`);
    expect(field(html, 'webhook-warning')).toMatch(/^Unencrypted: the receiver is reached over http:\/\//);
    expect(html).toMatch(/id="webhookUrl" name="webhookUrl" value=""/);
    expect(html).not.toContain(SECRET_PATH);
    expect(html).not.toContain(SECRET_SIG);
    expect(await stack.gw.postern.notificationSettings.webhookUrl()).toBe(hookUrl);

    // Saving again with the field empty keeps the URL.
    await save({ format: 'json' });
    expect(stack.web.lastStatus).toBe(303);
    expect(await stack.gw.postern.notificationSettings.webhookUrl()).toBe(hookUrl);

    const audit = await stack.web.get('/settings/audit');
    expect(audit).toContain('notifications.saved');
    expect(audit).not.toContain(SECRET_PATH);
    const files = readdirSync(stack.gw.dataDir).filter((name) => name.startsWith('postern.sqlite'));
    expect(files.length).toBeGreaterThan(0);
    for (const name of files) {
      const bytes = readFileSync(join(stack.gw.dataDir, name)).toString('latin1');
      expect(bytes, name).not.toContain(SECRET_PATH);
      expect(bytes, name).not.toContain(SECRET_SIG);
    }
  });

  it('a General User sees the status but cannot change the settings or send a test', async () => {
    const viewer = new WebClient(stack.gw.url);
    await viewer.login('viewer', 'viewer-password');
    const html = await viewer.get(PAGE);
    expect(viewer.lastStatus).toBe(200);
    expect(field(html, 'webhook-url')).toBe(`${receiver.origin}/…`);
    expect(html).not.toContain('name="webhookUrl"');
    expect(html).not.toContain('Send Test Notification</button>');
    expect(html).toContain('Administrator or Network Administrator privileges are required to change these settings.');
    const mark = receiver.received.length;
    for (const path of [PAGE, `${PAGE}/test`, `${PAGE}/delete`]) {
      const answer = await viewer.post(path, { webhookUrl: 'https://evil.example/hook', format: 'slack' });
      expect(viewer.lastStatus, path).toBe(403);
      expect(answer).toContain('Administrator or Network Administrator privileges are required');
    }
    expect(since(mark)).toEqual([]);
    expect(await stack.gw.postern.notificationSettings.webhookUrl()).toBe(hookUrl);
    expect((await stack.gw.postern.notificationSettings.get()).format).toBe('json');
  });
});

describe('Send Test Notification', () => {
  it('reports the receiver\'s answer: success', async () => {
    const mark = receiver.received.length;
    await stack.web.get(PAGE);
    const html = await stack.web.post(`${PAGE}/test`);
    expect(stack.web.lastStatus).toBe(200);
    expect(field(html, 'test-result')).toBe('The receiver accepted the notification (HTTP 200 OK).');
    expect(html).toMatch(/<div class="flash flash-success" role="status">\s*<p data-field="test-result">/);
    const [request] = since(mark);
    expect(since(mark)).toHaveLength(1);
    expect(request!.method).toBe('POST');
    expect(request!.path).toBe(`/hooks/${SECRET_PATH}?sig=${SECRET_SIG}`);
    expect(request!.body).toMatchObject({ source: 'postern', event: 'test', phase: 'test', link: `${stack.gw.url}/settings/notifications` });
    expect(field(html, 'last-notification')).toMatch(/^Postern: test notification at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC — delivered, HTTP 200$/);
  });

  it('reports the receiver\'s answer: a 404 says there is no webhook at that address', async () => {
    receiver.answerNext({ status: 404, body: 'Not Found' });
    await stack.web.get(PAGE);
    const html = await stack.web.post(`${PAGE}/test`);
    expect(field(html, 'test-result')).toBe(
      'The receiver answered HTTP 404 Not Found: there is no webhook at this address. It may have been deleted (or its workflow turned off), or the URL is incomplete. Copy the Webhook URL again from the receiver. The receiver said: "Not Found".',
    );
    expect(html).toMatch(/<div class="flash flash-error" role="alert">/);
    expect(field(html, 'last-notification')).toMatch(/— not delivered, HTTP 404$/);
  });

  it('sends each format in its documented shape', async () => {
    const bodyFor = async (format: string) => {
      await save({ format });
      const mark = receiver.received.length;
      await stack.web.get(PAGE);
      expect(field(await stack.web.post(`${PAGE}/test`), 'test-result')).toBe('The receiver accepted the notification (HTTP 200 OK).');
      return since(mark)[0]!.body;
    };
    const teams = await bodyFor('teams');
    expect(teams.type).toBe('message');
    expect(teams.attachments).toHaveLength(1);
    expect(teams.attachments[0]).toMatchObject({ contentType: 'application/vnd.microsoft.card.adaptive', contentUrl: null, content: { type: 'AdaptiveCard' } });
    expect(teams.attachments[0].content.body[0]).toMatchObject({ type: 'TextBlock', text: 'Postern: test notification' });
    expect(teams.attachments[0].content.actions).toEqual([{ type: 'Action.OpenUrl', title: 'Open Notifications', url: `${stack.gw.url}/settings/notifications` }]);

    const slack = await bodyFor('slack');
    expect(Object.keys(slack)).toEqual(['text']);
    expect(slack.text).toMatch(/^\*Postern: test notification\*\n/);
    expect(slack.text).toContain(`Open Notifications: ${stack.gw.url}/settings/notifications`);

    const json = await bodyFor('json');
    expect(Object.keys(json).sort()).toEqual(['advice', 'event', 'facts', 'instance', 'link', 'occurredAt', 'phase', 'source', 'text', 'title']);
    expect(field(await stack.web.get(PAGE), 'format')).toBe('JSON (generic)');
  });
});

describe('notifications from the sending path', () => {
  it('Token Status Expired: exactly one notification with the advice and a link; one more when Active again', async () => {
    const mark = receiver.received.length;
    await tick();
    expect(since(mark)).toEqual([]);
    await expireToken();
    await tick();
    await tick(MINUTE);
    await tick(2 * MINUTE);
    expect(since(mark)).toHaveLength(1);
    const problem = since(mark)[0]!.body;
    expect(problem).toMatchObject({ event: 'token-expired', phase: 'problem', title: 'OAuth 2.0 (Microsoft): Token Status is Expired' });
    expect(problem.text).toContain(`Postern can no longer get access tokens for ${ALICE}`);
    expect(problem.text).toMatch(/Devices still get 250 for their messages, which are held in the queue/);
    expect(problem.advice).toMatch(/Get a new user code and sign in again/);
    expect(problem.facts).toContainEqual({ name: 'Provider message', value: expect.stringMatching(/^invalid_grant: AADSTS50173/) });
    expect(problem.link).toBe(`${stack.gw.url}/settings/send/oauth-microsoft`);
    const html = await stack.web.get(PAGE);
    expect(field(html, 'last-notification')).toMatch(/^OAuth 2\.0 \(Microsoft\): Token Status is Expired at .* UTC — delivered, HTTP 200$/);

    await authorizeMicrosoft(stack.web, stack.microsoft, stack.pki, stack.gw.log);
    await tick();
    await tick(MINUTE);
    expect(since(mark).map((r) => `${r.body.event}:${r.body.phase}`)).toEqual(['token-expired:problem', 'token-expired:resolved']);
    expect(since(mark)[1]!.body.title).toBe('OAuth 2.0 (Microsoft): Token Status is Active again');
  });

  it('messages held for more than 15 minutes: one notification; one more when they flow again', async () => {
    await save({ ...Object.fromEntries(NOTIFICATION_EVENTS.map((e) => [`event-${e}`, ''])), 'event-messages-held': 'on' });
    expect((await stack.gw.postern.notificationSettings.get()).events).toEqual(['messages-held']);
    const mark = receiver.received.length;
    await expireToken();
    const id = await submit();
    await waitState(id, 'held');
    await tick();
    await tick(14 * MINUTE);
    expect(since(mark)).toEqual([]);
    await tick(16 * MINUTE);
    await tick(17 * MINUTE);
    expect(since(mark)).toHaveLength(1);
    const held = since(mark)[0]!.body;
    expect(held).toMatchObject({ event: 'messages-held', phase: 'problem', title: '1 message has been held for more than 15 minutes' });
    expect(held.text).toMatch(/^Devices got 250 for this message, but Postern cannot send it: OAuth 2\.0 \(Microsoft\)/);
    expect(held.advice).toMatch(/sign in again/);
    expect(held.link).toBe(`${stack.gw.url}/settings/queue`);

    await authorizeMicrosoft(stack.web, stack.microsoft, stack.pki, stack.gw.log);
    await waitState(id, 'sent');
    await tick();
    expect(since(mark).map((r) => r.body.title)).toEqual(['1 message has been held for more than 15 minutes', 'Held messages are flowing again']);
    await save({});
  });

  it('a receiver that fails with 503 twice, then answers 200: delivered once, after backoff', async () => {
    receiver.answerNext(503, 503);
    const mark = receiver.received.length;
    await expireToken();
    const t = Date.now();
    const at = (offset: number) => stack.gw.postern.notifier.tick(t + offset);
    await at(0);
    await at(1000); // not due yet: nothing sent
    expect(since(mark).map((r) => r.status)).toEqual([503]);
    let html = await stack.web.get(PAGE);
    expect(html).toMatch(/data-field="delivery-status">Trying Again<\/span> <span class="mono small">HTTP 503<\/span>/);
    expect(field(html, 'last-notification')).toMatch(/Token Status is Expired at .* — trying again, HTTP 503$/);
    await at(10 * MINUTE);
    await at(30 * MINUTE);
    await at(60 * MINUTE);
    expect(since(mark).map((r) => r.status)).toEqual([503, 503, 200]);
    expect(new Set(since(mark).map((r) => r.body.title))).toEqual(new Set(['OAuth 2.0 (Microsoft): Token Status is Expired']));
    html = await stack.web.get(PAGE);
    expect(field(html, 'last-notification')).toMatch(/Token Status is Expired at .* — delivered, HTTP 200$/);

    await authorizeMicrosoft(stack.web, stack.microsoft, stack.pki, stack.gw.log);
    await at(61 * MINUTE);
    expect(since(mark).map((r) => r.body.phase)).toEqual(['problem', 'problem', 'problem', 'resolved']);
  });

  it('a message returned to its sender: one notification that links to its Log', async () => {
    const mark = receiver.received.length;
    await tick();
    stack.upstream.failNext({ phase: 'rcpt', code: 550, message: '5.1.1 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup' });
    const id = await submit('nobody@example.test');
    await waitState(id, 'bounced');
    await tick();
    await tick(MINUTE);
    expect(since(mark)).toHaveLength(1);
    const bounce = since(mark)[0]!.body;
    expect(bounce).toMatchObject({ event: 'message-bounced', title: 'A message could not be delivered and was returned to its sender' });
    expect(bounce.text).toMatch(/^From scanner@printers\.local to nobody@example\.test, subject "scan \d+": 550 5\.1\.1 RESOLVER\.ADR\.RecipientNotFound/);
    expect(bounce.advice).toMatch(/recipient address does not exist/);
    expect(bounce.link).toBe(`${stack.gw.url}/settings/log?id=${id}`);
  });
});

describe('TLS and removal', () => {
  it('an https:// receiver is verified against CA Certificate Settings; an unknown CA is refused in plain words', async () => {
    const trusted = await startWebhookReceiver({ tls: stack.pki.server });
    const other = await createTestPki('Unknown Test CA');
    const untrusted = await startWebhookReceiver({ tls: other.server });
    try {
      const trustedUrl = `${trusted.origin}/hooks/${SECRET_PATH}-tls?sig=${SECRET_SIG}`;
      secretUrls.push(trustedUrl);
      await save({ webhookUrl: trustedUrl });
      let html = await stack.web.page(PAGE);
      expect(field(html, 'webhook-url')).toBe(`${trusted.origin}/…`);
      expect(html).not.toContain('data-field="webhook-warning"');
      html = await stack.web.post(`${PAGE}/test`);
      expect(field(html, 'test-result')).toBe('The receiver accepted the notification (HTTP 200 OK).');
      expect(trusted.received).toHaveLength(1);

      const untrustedUrl = `${untrusted.origin}/hooks/${SECRET_PATH}-untrusted`;
      secretUrls.push(untrustedUrl);
      await save({ webhookUrl: untrustedUrl });
      await stack.web.get(PAGE);
      html = await stack.web.post(`${PAGE}/test`);
      expect(field(html, 'test-result')).toMatch(
        new RegExp(`^The notification did not reach ${untrusted.origin.replace(/\./g, '\\.')}/…: The server certificate of 127\\.0\\.0\\.1:\\d+ is not trusted \\(\\w+\\)\\. Register the issuing CA certificate in CA Certificate Settings`),
      );
      expect(untrusted.received).toHaveLength(0);
    } finally {
      await trusted.close();
      await untrusted.close();
    }
  });

  it('Delete Webhook URL turns notifications off', async () => {
    await stack.web.get(PAGE);
    await stack.web.post(`${PAGE}/delete`);
    expect(stack.web.lastStatus).toBe(303);
    const html = await stack.web.page(PAGE);
    expect(field(html, 'webhook-url')).toBe('Not set: notifications are off');
    expect(await stack.gw.postern.notificationSettings.webhookUrl()).toBeUndefined();
  });

  it('no webhook URL appears in the logs, the audit log or the pages; receivers are named as scheme://host/…', async () => {
    const logs = stack.gw.logs();
    expect(logs).toContain(`"receiver":"${receiver.origin}/…"`);
    const pages = [await stack.web.get(PAGE), await stack.web.get('/settings/audit')];
    for (const text of [logs, ...pages]) {
      expect(text).not.toContain(SECRET_PATH);
      expect(text).not.toContain(SECRET_SIG);
      for (const url of secretUrls) expect(text).not.toContain(url);
    }
  });
});
