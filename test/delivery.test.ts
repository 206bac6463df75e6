/**
 * Queue + delivery end to end over real sockets: devices submit through the relay, Postern delivers to
 * stand-in upstreams that check XOAUTH2 tokens by introspection (Office 365 flavour on STARTTLS, Gmail
 * flavour on implicit TLS). Covers upstream 4xx then success, 5xx → exactly one DSN (none to <>), the
 * forced refresh-and-retry on 535, provider replies as advice, a token that expires while messages wait
 * (held, then sent after re-authorization), STARTTLS missing (fail closed), Send Test E-Mail, and the
 * Queue and Log pages.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GMAIL_SCOPE, startGoogleStandin, type GoogleStandin } from './support/oauth-standins.js';
import { field } from './support/postern.js';
import { untilQueue, waitForState } from './support/queue.js';
import {
  ALICE,
  authorizeGoogle,
  authorizeMicrosoft,
  RawSmtp,
  saveEmailSettings,
  saveRelaySettings,
  startSendingStack,
  type SendingStack,
} from './support/sending.js';
import { startSmtpSink, startUpstreamSmtp, type UpstreamSmtp } from './support/upstream-smtp.js';

let stack: SendingStack;
let counter = 0;

/** A log line about queue message `id` that names the error code (docs/errors.md). */
/** Waits for a log line about message `id` that carries `errorCode` (from the start of the run). */
const loggedFor = (id: string, errorCode: string, what: string) =>
  stack.gw.log.waitFor((line) => line.queueId === id && line.errorCode === errorCode, { from: 0 }).catch((error: unknown) => {
    throw new Error(`${what}: ${String(error)}`);
  });

/** Submits one message through the relay from an allowed network; returns its queue id. */
async function submit(options: { subject?: string; from?: string; to?: string[]; headerFrom?: string } = {}): Promise<{ id: string; subject: string }> {
  const subject = options.subject ?? `message ${++counter}`;
  const smtp = await RawSmtp.open(stack.relayPort);
  await smtp.command('EHLO device.test');
  expect(await smtp.command(`MAIL FROM:<${options.from ?? 'scanner@printers.local'}>`)).toMatch(/^250 /);
  for (const to of options.to ?? ['bob@example.test']) expect(await smtp.command(`RCPT TO:<${to}>`)).toMatch(/^250 /);
  expect(await smtp.command('DATA')).toMatch(/^354 /);
  smtp.write(`From: ${options.headerFrom ?? 'scanner@printers.local'}\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nbody of ${subject}\r\n.\r\n`);
  const reply = await smtp.reply();
  smtp.close();
  const id = /queued as ([0-9a-f-]{36})/.exec(reply)?.[1];
  if (!id) throw new Error(`not queued: ${reply}`);
  return { id, subject };
}

const row = (id: string) => stack.gw.postern.queue.get(id);
const waitState = (id: string, state: string, timeoutMs?: number) => waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, id, state, timeoutMs);
/** `check`'s first value, checked now and after each pass and each recorded delivery of the queue manager. */
const untilQueued = <T>(check: () => Promise<T | undefined | false>, what: string) => untilQueue(stack.gw.postern.queueManager, check, what);
const copies = (upstream: UpstreamSmtp, subject: string) => upstream.messages.filter((m) => m.parsed?.subject === subject);
const refreshes = () => stack.microsoft.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;
/** Saving E-Mail Settings closes pooled upstream sessions, so the next delivery signs in afresh. */
const freshSessions = (fields: Record<string, string | undefined> = {}) => saveEmailSettings(stack.web, { smtpPort: String(stack.upstream.port), ...fields });

beforeAll(async () => {
  stack = await startSendingStack();
  await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.1' });
});

afterAll(async () => {
  await stack?.close();
});

describe('delivery through the Office 365 stand-in', () => {
  it('delivers with XOAUTH2 as the authorized mailbox, once', async () => {
    const { id, subject } = await submit();
    await waitState(id, 'sent');
    const [message] = copies(stack.upstream, subject);
    expect(copies(stack.upstream, subject)).toHaveLength(1);
    expect(message!.authUser).toBe(ALICE);
    expect(message!.envelope.mailFrom).toBe(ALICE);
    const log = await stack.web.get(`/settings/log?id=${id}`);
    expect(log).toContain('<h1>Log</h1>');
    expect(field(log, 'message-state')).toBe('Sent');
    expect(log).toMatch(/data-field="reply">250 2\.0\.0 OK &lt;/);
  });

  it('upstream 4xx, then success: deferred, retried with backoff, delivered once', async () => {
    await stack.gw.postern.queueManager.whenIdle();
    stack.upstream.failNext({ phase: 'data', code: 451, message: '4.3.0 Temporary server error. Please try again later' });
    const { id, subject } = await submit();
    const sent = await waitState(id, 'sent');
    expect(sent!.attempts).toBe(2);
    expect(copies(stack.upstream, subject)).toHaveLength(1);
    const events = (await stack.gw.postern.queue.logEntries({ queueId: id })).map((e) => e.event).reverse();
    expect(events).toEqual(['accepted', 'deferred', 'sent']);
    const deferred = (await stack.gw.postern.queue.logEntries({ queueId: id })).find((e) => e.event === 'deferred')!;
    expect(deferred.reply).toBe('451 4.3.0 Temporary server error. Please try again later');
    expect(deferred.advice).toMatch(/retries automatically/);
  });

  it('upstream 5xx: returned to the sender with exactly one DSN, through the same account', async () => {
    await stack.gw.postern.queueManager.whenIdle();
    stack.upstream.failNext({ phase: 'rcpt', code: 550, message: '5.1.1 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup' });
    const { id, subject } = await submit({ from: 'scanner@printers.local', to: ['nobody@example.test'] });
    const bounced = await waitState(id, 'bounced');
    expect(bounced!.lastAdvice).toMatch(/recipient address does not exist/);
    const dsn = await stack.upstream.waitForMessage((m) => m.parsed?.subject === `Undelivered Mail Returned to Sender: ${subject}`, 'the DSN upstream');
    await stack.gw.postern.queueManager.whenIdle();
    expect(stack.upstream.messages.filter((m) => m.parsed?.subject?.startsWith('Undelivered Mail Returned to Sender: ' + subject))).toHaveLength(1);
    expect(dsn.envelope).toEqual({ mailFrom: ALICE, rcptTo: ['scanner@printers.local'] });
    expect(dsn.raw.toString()).toMatch(/Content-Type: multipart\/report; report-type=delivery-status/);
    expect(dsn.raw.toString()).toContain('Final-Recipient: rfc822; nobody@example.test');
    expect(dsn.raw.toString()).toContain('Status: 5.1.1');
    expect(dsn.raw.toString()).toContain(`Subject: ${subject}`);
    const log = await stack.web.get(`/settings/log?id=${id}`);
    expect(log).toContain('Returned to Sender');
    await loggedFor(id, 'POSTERN_SMTP_UPSTREAM_REJECTED', 'the failure logged with its code');
  });

  it('upstream 5xx for a null sender <>: no DSN', async () => {
    await stack.gw.postern.queueManager.whenIdle();
    const before = stack.upstream.messages.length;
    stack.upstream.failNext({ phase: 'data', code: 554, message: '5.6.0 Corrupt message content' });
    const { id } = await submit({ from: '' });
    await waitState(id, 'bounced');
    await stack.gw.postern.queueManager.whenIdle();
    expect(stack.upstream.messages.length).toBe(before);
    const bounces = await stack.gw.postern.store.db.selectFrom('queue_messages').select('id').where('is_bounce', '=', 1).where('recipients', '=', '[""]').execute();
    expect(bounces).toEqual([]);
  });

  it('535 on a token believed valid: one forced refresh, one retry, delivered', async () => {
    await freshSessions();
    await stack.gw.postern.queueManager.whenIdle();
    const before = refreshes();
    stack.upstream.failNext({ phase: 'auth', code: 535, message: '5.7.3 Authentication unsuccessful [SN2PR00CA0018.namprd00.prod.outlook.com]' });
    const { id, subject } = await submit();
    await waitState(id, 'sent');
    expect(refreshes() - before).toBe(1);
    expect(copies(stack.upstream, subject)).toHaveLength(1);
    expect(stack.upstream.authAttempts.slice(-2)).toEqual([
      { user: ALICE, mechanism: 'XOAUTH2', ok: false, reason: 'scripted' },
      { user: ALICE, mechanism: 'XOAUTH2', ok: true },
    ]);
    expect((await row(id))!.attempts).toBe(1);
  });

  it('535 5.7.139 (SMTP AUTH disabled) twice: deferred with the advice to enable Authenticated SMTP, sent once fixed', async () => {
    await freshSessions();
    await stack.gw.postern.queueManager.whenIdle();
    const reply = '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.';
    stack.upstream.failNext({ phase: 'auth', code: 535, message: reply }, 2);
    const { id } = await submit();
    const deferred = await untilQueued(async () => {
      const entries = await stack.gw.postern.queue.logEntries({ queueId: id });
      return entries.find((e) => e.event === 'deferred');
    }, 'a deferral');
    expect(deferred.reply).toBe(`535 ${reply}`);
    expect(deferred.advice).toMatch(/enable Authenticated SMTP for the mailbox/);
    await loggedFor(id, 'POSTERN_SMTP_UPSTREAM_AUTH_FAILED', 'the deferral logged with its code');
    await waitState(id, 'sent');
  });

  it('554 5.2.252 SendAsDenied: a Sender E-Mail Address the mailbox may not use is named in the advice', async () => {
    await freshSessions({ senderAddress: 'frontdesk@example.test' });
    await stack.gw.postern.queueManager.whenIdle();
    const { id } = await submit({ from: '' });
    const bounced = await waitState(id, 'bounced');
    expect(bounced!.lastReply).toMatch(/^554 5\.2\.252 SendAsDenied; alice@example\.test not allowed to send as frontdesk@example\.test/);
    expect(bounced!.lastAdvice).toMatch(/set Sender E-Mail Address in E-Mail Settings to the authorized mailbox/);
    const log = await stack.web.get(`/settings/log?id=${id}`);
    expect(field(log, 'advice')).toMatch(/Sender E-Mail Address/);
    await freshSessions();
  });

  it('an access token that expired while messages waited is refreshed on use, transparently', async () => {
    await stack.gw.postern.queueManager.whenIdle();
    await freshSessions();
    await stack.gw.postern.accounts.update('microsoft', { access_token_expires_at: Date.now() - 1000 });
    const before = refreshes();
    const { id } = await submit();
    await waitState(id, 'sent');
    expect(refreshes() - before).toBe(1);
  });

  it('a token that expires for good mid-queue: messages are held, not failed, and sent after re-authorization', async () => {
    await stack.gw.postern.queueManager.whenIdle();
    await freshSessions();
    expect(stack.microsoft.revokeRefreshTokens(ALICE)).toBeGreaterThan(0);
    await stack.gw.postern.accounts.update('microsoft', { access_token_expires_at: Date.now() - 1000 });
    const before = stack.upstream.messages.length;
    const a = await submit();
    const b = await submit();
    await waitState(a.id, 'held');
    await waitState(b.id, 'held');
    expect(stack.upstream.messages.length).toBe(before);

    const queuePage = await stack.web.get('/settings/queue');
    expect(queuePage).toContain('<h1>Queue</h1>');
    expect(queuePage).toContain(a.subject);
    expect(queuePage).toMatch(/data-field="state">Held</);
    expect(queuePage).toMatch(/re-authorization required|Authorize again/);
    const settings = await stack.web.get('/settings/send/email');
    expect(field(settings, 'token-status')).toBe('Expired');

    await authorizeMicrosoft(stack.web, stack.microsoft, stack.pki, stack.gw.log);
    await waitState(a.id, 'sent', 15_000);
    await waitState(b.id, 'sent', 15_000);
    expect(copies(stack.upstream, a.subject)).toHaveLength(1);
    const events = (await stack.gw.postern.queue.logEntries({ queueId: a.id })).map((e) => e.event).reverse();
    expect(events).toEqual(['accepted', 'held', 'released', 'sent']);
  });

  it('regression: a route concluded before Token Status changed is not used after it (held with a stale reason)', async () => {
    // Use off: the next message is held "not in use", and the queue remembers that route for a moment.
    await stack.gw.postern.accounts.update('microsoft', { enabled: 0 });
    const first = await submit();
    await waitState(first.id, 'held');
    // Use on again: the change itself drops what was concluded, so the next message is never held and the
    // held one is released at once.
    await stack.gw.postern.accounts.update('microsoft', { enabled: 1 });
    const second = await submit();
    await waitState(second.id, 'sent');
    await waitState(first.id, 'sent');
    const events = await stack.gw.postern.store.db.selectFrom('delivery_log').select('event').where('queue_id', '=', second.id).execute();
    expect(events.map((e) => e.event)).not.toContain('held');
  });

  it('Queue page: Retry Now, Retry All Now and Delete', async () => {
    await stack.gw.postern.queueManager.whenIdle();
    // Point at a port where nothing listens: the message stays deferred (with a long first retry).
    await saveEmailSettings(stack.web, { smtpPort: '1' });
    try {
      await retryAndDelete();
    } finally {
      await freshSessions();
    }
  });

  /**
   * The test's retry schedule makes a deferred message due again within 100 ms: park it (next attempt in an
   * hour) so that the button pressed next meets a waiting message, not one being sent.
   */
  async function parkDeferred(id: string) {
    await untilQueued(async () => {
      await stack.gw.postern.queueManager.whenIdle();
      const parked = await stack.gw.postern.store.db
        .updateTable('queue_messages')
        .set({ next_attempt_at: Date.now() + 3_600_000 })
        .where('id', '=', id)
        .where('state', '=', 'deferred')
        .where('lease_owner', 'is', null)
        .executeTakeFirst();
      return parked.numUpdatedRows === 1n ? true : undefined;
    }, 'the message parked while deferred');
  }

  async function retryAndDelete() {
    const { id, subject } = await submit();
    const deferred = await waitState(id, 'deferred');
    expect(deferred!.lastAdvice).toMatch(/refused the connection/);
    let page = await stack.web.get('/settings/queue');
    expect(page).toContain(subject);
    await stack.web.post(`/settings/queue/${id}/retry`);
    expect(stack.web.lastStatus).toBe(303);
    await untilQueued(async () => ((await row(id))!.attempts >= 2 ? true : undefined), 'a second attempt');
    await stack.gw.postern.queueManager.whenIdle();
    await waitState(id, 'deferred');
    // Parked, or on a busy machine the next attempt may have begun before Retry All Now is pressed (then
    // nothing is deferred, and the page rightly says there is nothing to retry).
    await parkDeferred(id);
    page = await stack.web.get('/settings/queue');
    expect(field(page, 'retry-all')).toBe('Retry All Now');
    await stack.web.post('/settings/queue/retry-all');
    expect(stack.web.lastStatus).toBe(303);
    expect(await stack.web.page('/settings/queue')).toContain('1 message is being tried again now.');
    await untilQueued(async () => ((await row(id))!.attempts >= 3 ? true : undefined), 'a third attempt');
    await parkDeferred(id);
    page = await stack.web.get('/settings/queue');
    await stack.web.post(`/settings/queue/${id}/delete`);
    expect(await row(id)).toBeUndefined();
    expect(field(await stack.web.get('/settings/queue'), 'retry-all')).toBeUndefined();
    await stack.web.post('/settings/queue/retry-all');
    expect(await stack.web.page('/settings/queue')).toContain('nothing to retry');
    const log = await stack.web.get('/settings/log');
    expect(log).toMatch(/Deleted by admin/);
  }

  it('Send Test E-Mail reports the upstream answer in plain words', async () => {
    await stack.web.get('/settings/send/email');
    let html = await stack.web.post('/settings/send/email/test', { testTo: 'bob@example.test' });
    expect(field(html, 'test-result')).toBe(`Sent: 127.0.0.1:${stack.upstream.port} accepted the test e-mail from ${ALICE} to bob@example.test.`);
    expect(field(html, 'test-reply')).toMatch(/^250 2\.0\.0 OK &lt;/);
    expect(stack.upstream.messages.at(-1)?.parsed?.subject).toBe('Postern test e-mail');

    stack.upstream.failNext({ phase: 'data', code: 554, message: '5.2.252 SendAsDenied; alice@example.test not allowed to send as x@example.test; STOREDRV.Submission.Exception:SendAsDeniedException' });
    html = await stack.web.post('/settings/send/email/test', { testTo: 'bob@example.test' });
    expect(field(html, 'test-result')).toBe(`Not sent: 127.0.0.1:${stack.upstream.port} refused the message.`);
    expect(field(html, 'test-advice')).toMatch(/Sender E-Mail Address/);

    html = await stack.web.post('/settings/send/email/test', { testTo: 'not an address' });
    expect(stack.web.lastStatus).toBe(400);
    expect(html).toContain('aria-invalid="true"');
  });

  it('STARTTLS missing on a STARTTLS port: fails closed, the token is never sent', async () => {
    const sink = await startSmtpSink();
    try {
      await saveEmailSettings(stack.web, { smtpPort: String(sink.port) });
      const html = await stack.web.post('/settings/send/email/test', { testTo: 'bob@example.test' });
      expect(field(html, 'test-result')).toMatch(/^Not sent: /);
      expect(field(html, 'test-advice')).toMatch(/never signs in over an unencrypted connection/);
      expect(sink.messages).toEqual([]);
    } finally {
      await sink.close();
      await freshSessions();
    }
  });

  it('no token ever reaches the logs', async () => {
    const account = (await stack.gw.postern.accounts.get('microsoft'))!;
    const token = stack.gw.postern.accounts.accessToken(account)!;
    expect(token.length).toBeGreaterThan(20);
    const logs = stack.gw.logs();
    expect(logs).toContain('message delivered');
    expect(logs).not.toContain(token);
    expect(logs).not.toContain(Buffer.from(`user=${ALICE}\x01auth=Bearer ${token}\x01\x01`).toString('base64'));
  });
});

describe('delivery through the Gmail stand-in (implicit TLS)', () => {
  let google: GoogleStandin;
  let gmail: UpstreamSmtp;

  beforeAll(async () => {
    google = await startGoogleStandin({ pki: stack.pki });
    gmail = await startUpstreamSmtp({ flavour: 'gmail', introspection: { ...google.introspection, ca: google.ca }, requiredScope: GMAIL_SCOPE, tls: stack.pki.server });
  });

  afterAll(async () => {
    await gmail?.close();
    await google?.close();
  });

  it('sends through Gmail with a Google token on SSL/TLS', async () => {
    await authorizeGoogle(stack.web, google, stack.pki);
    await saveEmailSettings(stack.web, { accountId: 'google', smtpPort: String(gmail.port), tlsMode: 'tls' });
    const { id, subject } = await submit();
    await waitState(id, 'sent');
    expect(copies(gmail, subject)).toHaveLength(1);
    expect(copies(gmail, subject)[0]!.authUser).toBe(ALICE);
    expect(gmail.authAttempts.at(-1)).toMatchObject({ mechanism: 'XOAUTH2', ok: true });
  });

  it("Gmail's 535-5.7.8 after a refresh: advice to register the authorization again", async () => {
    await saveEmailSettings(stack.web, { accountId: 'google', smtpPort: String(gmail.port), tlsMode: 'tls' });
    gmail.failNext({ phase: 'auth', code: 535, message: '5.7.8 Username and Password not accepted. For more information, go to\n5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp' }, 2);
    const html = await stack.web.post('/settings/send/email/test', { testTo: 'bob@example.test' });
    expect(field(html, 'test-result')).toMatch(/refused the sign-in with the OAuth token/);
    expect(field(html, 'test-advice')).toMatch(/Register the authorization again in OAuth 2\.0 \(Google\) Settings/);
    await saveEmailSettings(stack.web, { smtpPort: String(stack.upstream.port) });
  });
});
