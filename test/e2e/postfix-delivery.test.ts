/**
 * End to end with a real MTA as the upstream: a device (Python's smtplib) → Postern's relay → Postern's
 * delivery with XOAUTH2 → Postfix 3.7 submission, whose SASL is Dovecot's oauth2 passdb introspecting the
 * token at the stand-in Microsoft identity platform → Postfix relays to a recording sink. Postfix's
 * `reject_sender_login_mismatch` checks the sender policy independently: only the authorized mailbox, or an
 * address given to it (Send As), may be the envelope sender.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OUTLOOK_SMTP_SCOPE, startMicrosoftStandin, type MicrosoftStandin } from '../support/oauth-standins.js';
import { isPostfixAvailable, startPostfixWithDovecot, type PostfixWithDovecot } from '../support/postfix-dovecot.js';
import { startTestPostern, WebClient, type TestPostern } from '../support/postern.js';
import { untilQueue } from '../support/queue.js';
import { addDevice, ALICE, authorizeMicrosoft, FAST_QUEUE, pythonSend, saveEmailSettings } from '../support/sending.js';
import { createTestPki, type TestPki } from '../support/test-ca.js';

const SHARED = 'shared@example.test';
const DEVICE = { user: 'mfp-2nd-floor', password: 'mfp-password-22' };

let pki: TestPki;
let microsoft: MicrosoftStandin;
let mta: PostfixWithDovecot;
let gw: TestPostern;
let web: WebClient;

async function send(subject: string, headerFrom = 'scanner@printers.local'): Promise<void> {
  const result = await pythonSend({
    port: gw.postern.smtpPort,
    starttls: true,
    auth: { mechanism: 'LOGIN', user: DEVICE.user, password: DEVICE.password },
    from: 'scanner@printers.local',
    to: ['bob@example.test'],
    message: `From: ${headerFrom}\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nScan attached.\r\n`,
  });
  expect(result.error).toBeUndefined();
}

beforeAll(async () => {
  if (!isPostfixAvailable()) throw new Error('postfix and dovecot-core must be installed for these tests');
  pki = await createTestPki();
  microsoft = await startMicrosoftStandin({ pki, interval: 1 });
  [mta, gw] = await Promise.all([
    startPostfixWithDovecot({
      introspection: { ...microsoft.introspection, caFile: pki.caFile },
      tls: pki.server,
      requiredScope: OUTLOOK_SMTP_SCOPE,
      senderLogins: { [SHARED]: [ALICE] },
    }),
    startTestPostern({ caPems: [pki.ca.cert], config: { queue: FAST_QUEUE } }),
  ]);
  web = new WebClient(gw.url);
  await web.login();
  await authorizeMicrosoft(web, microsoft, pki, gw.log);
  await saveEmailSettings(web, { smtpPort: String(mta.port) });
  await addDevice(web, DEVICE.user, DEVICE.password);
});

afterAll(async () => {
  await gw?.close();
  await mta?.close();
  await microsoft?.close();
});

describe('Postern → Postfix with Dovecot oauth2 SASL', () => {
  it('a device message arrives, submitted with XOAUTH2 as the authorized mailbox', async () => {
    await send('through postfix');
    const [message] = await mta.sink.waitForMessages(1, 20_000);
    expect(message!.parsed?.subject).toBe('through postfix');
    expect(message!.authUser).toBe(ALICE);
    expect(message!.envelope).toEqual({ mailFrom: ALICE, rcptTo: ['bob@example.test'] });
    expect(message!.parsed?.from?.value[0]?.address).toBe(ALICE);
    expect(message!.parsed?.replyTo?.value[0]?.address).toBe('scanner@printers.local');
    expect(mta.logs()).toMatch(/sasl_method=XOAUTH2, sasl_username=alice@example\.test/);
  });

  it('a Sender E-Mail Address the mailbox may send as is used as envelope sender and kept as From', async () => {
    await saveEmailSettings(web, { smtpPort: String(mta.port), senderAddress: SHARED });
    await send('as the shared mailbox', SHARED);
    const message = await mta.sink.waitForMessage((m) => m.parsed?.subject === 'as the shared mailbox', 'the shared message');
    expect(message.envelope.mailFrom).toBe(SHARED);
    expect(message.authUser).toBe(ALICE);
    expect(message.parsed?.from?.value[0]?.address).toBe(SHARED);
    expect(message.parsed?.replyTo).toBeUndefined();
  });

  it("a sender the mailbox may not use: Postfix's 553 is a permanent failure with plain advice", async () => {
    await saveEmailSettings(web, { smtpPort: String(mta.port), senderAddress: 'bob@example.test' });
    await send('not allowed');
    const row = await untilQueue(gw.postern.queueManager, async () => {
      const rows = await gw.postern.queue.list(['bounced']);
      return rows.find((r) => r.subject === 'not allowed');
    }, 'the message to be returned');
    expect(row.lastReply).toMatch(/^553 5\.7\.1 <bob@example\.test>: Sender address rejected: not owned by user alice@example\.test/);
    expect(row.lastAdvice).toMatch(/set Sender E-Mail Address in E-Mail Settings to the authorized mailbox/);
    expect(mta.sink.messages.some((m) => m.parsed?.subject === 'not allowed')).toBe(false);
    await saveEmailSettings(web, { smtpPort: String(mta.port) });
  });

  it('an upstream that offers only OAUTHBEARER gets OAUTHBEARER (RFC 7628), and the message arrives', async () => {
    const bearerOnly = await startPostfixWithDovecot({
      introspection: { ...microsoft.introspection, caFile: pki.caFile },
      tls: pki.server,
      requiredScope: OUTLOOK_SMTP_SCOPE,
      mechanisms: ['oauthbearer'],
    });
    try {
      await saveEmailSettings(web, { smtpPort: String(bearerOnly.port) });
      await send('through oauthbearer');
      const [message] = await bearerOnly.sink.waitForMessages(1, 20_000);
      expect(message!.parsed?.subject).toBe('through oauthbearer');
      expect(message!.envelope.mailFrom).toBe(ALICE);
      expect(bearerOnly.logs()).toMatch(/sasl_method=OAUTHBEARER, sasl_username=alice@example\.test/);
      expect(bearerOnly.logs()).not.toMatch(/sasl_method=XOAUTH2/);
    } finally {
      await saveEmailSettings(web, { smtpPort: String(mta.port) });
      await bearerOnly.close();
    }
  });
});
