/**
 * The device relay over real sockets with clients nobody here wrote (Python's smtplib, swaks, curl) and a
 * raw socket for byte-exact inputs, delivering through the Office 365 stand-in that checks XOAUTH2 tokens.
 * Covers: STARTTLS + AUTH PLAIN/LOGIN, open-relay attempts, wrong passwords and throttling, Allowed
 * Networks, SMTP smuggling vectors, oversize messages, dot-stuffing, the sender policy and added headers.
 */
import { mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { directoryChanges, LOG, until } from './support/events.js';
import { addDevice, ALICE, pythonSend, RawSmtp, run, saveRelaySettings, startSendingStack, type SendingStack } from './support/sending.js';

let stack: SendingStack;
const DEVICE = { user: 'scanner-3f', password: 'device-password-1' };

const message = (subject: string, from = 'scanner@printers.local', extra = '') =>
  `From: "Scanner 3rd floor" <${from}>\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n${extra}\r\nScanned document attached.\r\n`;

const queueRows = () => stack.gw.postern.store.db.selectFrom('queue_messages').select(['id', 'state']).execute();
const spoolFiles = () => readdirSync(join(stack.gw.dataDir, 'spool')).filter((n) => n.endsWith('.eml'));
/** Log lines so far that name the error code (docs/errors.md). */
const logged = (errorCode: string) => stack.gw.logs().split('\n').filter((line) => line.includes(`"errorCode":"${errorCode}"`)).length;

async function upstreamMessage(subject: string) {
  return stack.upstream.waitForMessage((m) => m.parsed?.subject === subject, `"${subject}" upstream`);
}

beforeAll(async () => {
  stack = await startSendingStack();
  await addDevice(stack.web, DEVICE.user, DEVICE.password);
  expect(stack.web.lastStatus).toBe(303);
  // The stand-in upstream is not a provider host: the relay offers 8BITMIME / SMTPUTF8 once a session has
  // seen it offer them (docs/protocol.md §5.3, test/relay-extensions.test.ts). Send Test E-Mail opens one.
  expect(await stack.web.post('/settings/send/email/test', { testTo: 'bob@example.test' })).toContain('Sent:');
});

afterAll(async () => {
  await stack?.close();
});

describe('authenticated devices', () => {
  it('Python smtplib: STARTTLS (verifying the generated certificate), AUTH PLAIN, relayed upstream with XOAUTH2 as the mailbox', async () => {
    const result = await pythonSend({
      port: stack.relayPort,
      starttls: true,
      cadata: stack.relayCert,
      auth: { mechanism: 'PLAIN', user: DEVICE.user, password: DEVICE.password },
      from: 'scanner@printers.local',
      to: ['bob@example.test'],
      message: message('plain over starttls'),
    });
    expect(result.error).toBeUndefined();
    expect(result.ok).toBe(true);
    expect(result.replies).toContain('235 2.7.0 Authentication successful');
    expect(result.replies.some((r) => /^250 2\.0\.0 Ok: queued as [0-9a-f-]{36}$/.test(r))).toBe(true);
    // Advertised after TLS: AUTH PLAIN LOGIN, 8BITMIME, SMTPUTF8, SIZE; no DSN (not implemented end to end).
    expect(result.features?.auth?.trim()).toBe('PLAIN LOGIN');
    expect(result.features).toHaveProperty('8bitmime');
    expect(result.features).toHaveProperty('smtputf8');
    expect(result.features?.size).toBe(String(25 * 1024 * 1024));
    expect(result.features).not.toHaveProperty('dsn');

    const delivered = await upstreamMessage('plain over starttls');
    expect(delivered.authUser).toBe(ALICE);
    expect(delivered.envelope).toEqual({ mailFrom: ALICE, rcptTo: ['bob@example.test'] });
    expect(stack.upstream.authAttempts.at(-1)).toMatchObject({ user: ALICE, mechanism: 'XOAUTH2', ok: true });
    // Sender policy: From becomes the mailbox with the device's name; the device's address goes to Reply-To.
    expect(delivered.parsed?.from?.value).toEqual([{ address: ALICE, name: 'Scanner 3rd floor' }]);
    expect(delivered.parsed?.replyTo?.value).toEqual([{ address: 'scanner@printers.local', name: '' }]);
    // Message-ID and Date were missing and were added (RFC 6409 §8).
    expect(delivered.parsed?.messageId).toMatch(/^<[0-9a-f-]{36}@.+>$/);
    expect(delivered.parsed?.date).toBeInstanceOf(Date);
  });

  it('Python smtplib: AUTH LOGIN gets the classic prompts 334 VXNlcm5hbWU6 and 334 UGFzc3dvcmQ6', async () => {
    const result = await pythonSend({
      port: stack.relayPort,
      starttls: true,
      auth: { mechanism: 'LOGIN', user: DEVICE.user, password: DEVICE.password },
      from: ALICE,
      to: ['bob@example.test'],
      message: message('login over starttls', ALICE, 'Message-ID: <kept-1@device.test>\r\nDate: Thu, 01 Jan 2026 08:00:00 +0000\r\n'),
    });
    expect(result.ok).toBe(true);
    const prompts = result.replies.filter((r) => r.startsWith('334'));
    expect(prompts).toEqual(['334 VXNlcm5hbWU6', '334 UGFzc3dvcmQ6']);
    const delivered = await upstreamMessage('login over starttls');
    // The mailbox itself as From is kept, with no Reply-To; the device's Message-ID and Date are kept.
    expect(delivered.parsed?.from?.value[0]?.address).toBe(ALICE);
    expect(delivered.parsed?.replyTo).toBeUndefined();
    expect(delivered.parsed?.messageId).toBe('<kept-1@device.test>');
    expect(delivered.raw.toString()).toContain('Date: Thu, 01 Jan 2026 08:00:00 +0000');
  });

  it('curl: STARTTLS, AUTH with the device account, upload', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-curl-'));
    writeFileSync(join(dir, 'mail.txt'), message('via curl'));
    writeFileSync(join(dir, 'relay.pem'), stack.relayCert);
    const result = await run('curl', [
      '--silent',
      '--show-error',
      '--verbose',
      `smtp://127.0.0.1:${stack.relayPort}`,
      '--ssl-reqd',
      '--cacert',
      join(dir, 'relay.pem'),
      '--user',
      `${DEVICE.user}:${DEVICE.password}`,
      '--mail-from',
      'scanner@printers.local',
      '--mail-rcpt',
      'bob@example.test',
      '--upload-file',
      join(dir, 'mail.txt'),
    ]);
    expect(result.stderr).toMatch(/> AUTH (PLAIN|LOGIN)/);
    expect(result.code).toBe(0);
    const delivered = await upstreamMessage('via curl');
    expect(delivered.authUser).toBe(ALICE);
  });

  it('keeps lines that start with a dot intact through dot-unstuffing and re-stuffing (RFC 5321 §4.5.2)', async () => {
    const body = '.single dot line\r\n..two dots\r\n.\r\n...\r\nend';
    const result = await pythonSend({
      port: stack.relayPort,
      starttls: true,
      auth: { mechanism: 'PLAIN', user: DEVICE.user, password: DEVICE.password },
      from: ALICE,
      to: ['bob@example.test'],
      message: `From: ${ALICE}\r\nSubject: dots\r\n\r\n${body}\r\n`,
    });
    expect(result.ok).toBe(true);
    const delivered = await upstreamMessage('dots');
    expect(delivered.raw.toString()).toContain(`\r\n\r\n${body}\r\n`);
  });
});

describe('never an open relay', () => {
  it('MAIL before AUTH from a network that is not allowed gets 530 5.7.0, and nothing is queued', async () => {
    const before = (await queueRows()).length;
    const refusals = logged('POSTERN_SMTP_AUTH_REQUIRED');
    const smtp = await RawSmtp.open(stack.relayPort);
    expect(await smtp.command('EHLO attacker.test')).toMatch(/^250-/);
    expect(await smtp.command('MAIL FROM:<spoof@example.test>')).toBe('530 5.7.0 Authentication required');
    expect(logged('POSTERN_SMTP_AUTH_REQUIRED')).toBe(refusals + 1);
    expect(await smtp.command('RCPT TO:<victim@example.test>')).toMatch(/^503 /);
    expect(await smtp.command('DATA')).toMatch(/^503 /);
    smtp.close();
    const swaks = await run('swaks', ['--server', `127.0.0.1:${stack.relayPort}`, '--from', 'spoof@example.test', '--to', 'victim@example.test', '--suppress-data']);
    expect(swaks.stdout).toContain('<** 530 5.7.0 Authentication required');
    expect((await queueRows()).length).toBe(before);
  });

  it('AUTH without TLS is refused with 538 unless the legacy switch allows it', async () => {
    const smtp = await RawSmtp.open(stack.relayPort);
    await smtp.command('EHLO device.test');
    const plain = Buffer.from(`\0${DEVICE.user}\0${DEVICE.password}`).toString('base64');
    expect(await smtp.command(`AUTH PLAIN ${plain}`)).toBe('538 5.7.0 Error: Must issue a STARTTLS command first');
    smtp.close();

    await saveRelaySettings(stack.web, { allowInsecureAuth: 'on' });
    const legacy = await RawSmtp.open(stack.relayPort);
    await legacy.command('EHLO old-mfp.test');
    expect(await legacy.command(`AUTH PLAIN ${plain}`)).toBe('235 2.7.0 Authentication successful');
    legacy.close();
    await saveRelaySettings(stack.web, {});
  });

  it('a wrong device password gets 535; repeated failures are throttled with 454, even for the right password', async () => {
    await addDevice(stack.web, 'throttled-device', 'right-password-1');
    const [failures, throttled] = [logged('POSTERN_SMTP_AUTH_FAILED'), logged('POSTERN_SMTP_AUTH_THROTTLED')];
    for (let i = 0; i < 5; i++) {
      const wrong = await pythonSend({ port: stack.relayPort, starttls: true, auth: { mechanism: 'PLAIN', user: 'throttled-device', password: `wrong-${i}` }, from: ALICE, to: ['bob@example.test'], message: message('never') });
      expect(wrong.error).toMatchObject({ type: 'SMTPAuthenticationError', code: 535, message: '5.7.8 Authentication credentials invalid' });
    }
    const blocked = await pythonSend({ port: stack.relayPort, starttls: true, auth: { mechanism: 'LOGIN', user: 'throttled-device', password: 'right-password-1' }, from: ALICE, to: ['bob@example.test'], message: message('never') });
    expect(blocked.error?.code).toBe(454);
    expect(blocked.error?.message).toMatch(/^4\.7\.0 Too many failed logins; try again in \d+ minutes? \(after \d\d:\d\d UTC\)$/);
    expect(logged('POSTERN_SMTP_AUTH_FAILED')).toBe(failures + 5);
    expect(logged('POSTERN_SMTP_AUTH_THROTTLED')).toBe(throttled + 1);
    expect(stack.upstream.messages.some((m) => m.parsed?.subject === 'never')).toBe(false);
    expect(stack.gw.logs()).not.toContain('right-password-1');
    expect(stack.gw.logs()).not.toContain('wrong-0');
  });

  it('Allowed Networks: a device without AUTH (swaks) is relayed once its network is listed', async () => {
    const html = await saveRelaySettings(stack.web, { allowedNetworks: '10.1.2.3/8' });
    expect(stack.web.lastStatus).toBe(400);
    expect(html).toContain('aria-invalid="true"');
    expect(html).toContain('the network address of a /8 is 10.0.0.0');
    await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.0/8' });
    expect(stack.web.lastStatus).toBe(303);
    const swaks = await run('swaks', ['--server', `127.0.0.1:${stack.relayPort}`, '--from', 'legacy@printers.local', '--to', 'bob@example.test', '--header', 'Subject: via swaks']);
    expect(swaks.stdout).toMatch(/<- {2}250 2\.0\.0 Ok: queued as/);
    const delivered = await upstreamMessage('via swaks');
    expect(delivered.envelope.mailFrom).toBe(ALICE);
    expect((await queueRows()).find((r) => r.state === 'sent')).toBeDefined();
    await saveRelaySettings(stack.web, {});
  });
});

describe('SMTP smuggling (docs/protocol.md §5.1)', () => {
  const smuggle = (separator: string, subject: string) =>
    `From: ${ALICE}\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nHello${separator}MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nFrom: ceo@example.test\r\nSubject: smuggled\r\n\r\nPay now${separator}`;

  async function sendRaw(data: string): Promise<string[]> {
    const smtp = await RawSmtp.open(stack.relayPort);
    const replies: string[] = [];
    await smtp.command('EHLO device.test');
    replies.push(await smtp.command('MAIL FROM:<scanner@printers.local>'));
    replies.push(await smtp.command('RCPT TO:<bob@example.test>'));
    replies.push(await smtp.command('DATA'));
    smtp.write(data + '\r\n.\r\n');
    replies.push(await smtp.reply());
    replies.push(await smtp.command('QUIT'));
    smtp.close();
    return replies;
  }

  it.each([
    ['<LF>.<LF>', '\n.\n'],
    ['<LF>.<CR><LF>', '\n.\r\n'],
    ['<CR><LF>.<LF>', '\r\n.\n'],
  ])('%s inside DATA stays inside one message (normalize)', async (name, separator) => {
    await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.1' });
    const subject = `smuggling ${name}`;
    const replies = await sendRaw(smuggle(separator, subject));
    expect(replies[3]).toMatch(/^250 2\.0\.0 Ok: queued as/);
    expect(replies[4]).toMatch(/^221 /);
    const delivered = await upstreamMessage(subject);
    const raw = delivered.raw.toString('latin1');
    expect(raw).toContain('MAIL FROM:<ceo@example.test>');
    expect(raw.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    await stack.gw.postern.queueManager.whenIdle();
    expect(stack.upstream.messages.some((m) => m.parsed?.subject === 'smuggled' || m.envelope.rcptTo.includes('victim@example.test'))).toBe(false);
  });

  it('with Reject, any bare CR or LF gets 554 and nothing is relayed', async () => {
    await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.1', bareNewlines: 'reject' });
    const before = (await queueRows()).length;
    const refusals = logged('POSTERN_SMTP_BARE_NEWLINE');
    const replies = await sendRaw(smuggle('\n.\n', 'rejected smuggling'));
    expect(replies[3]).toBe('554 5.6.0 Message contains a bare CR or LF; lines must end with CRLF');
    expect(logged('POSTERN_SMTP_BARE_NEWLINE')).toBe(refusals + 1);
    expect((await queueRows()).length).toBe(before);
    await saveRelaySettings(stack.web, {});
  });
});

describe('message size (RFC 1870, docs/protocol.md §5.5)', () => {
  it('SIZE= above the limit gets 552 at MAIL FROM; a body above it gets 552 after DATA; nothing is queued', async () => {
    await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.1', maxMessageSizeMb: '1' });
    const before = (await queueRows()).length;
    const smtp = await RawSmtp.open(stack.relayPort);
    expect(await smtp.command('EHLO device.test')).toMatch(/250[ -]SIZE 1048576/);
    expect(await smtp.command('MAIL FROM:<a@printers.local> SIZE=2000000')).toMatch(/^552 5\.3\.4 /);
    // No SIZE= parameter: only the real size can tell.
    expect(await smtp.command('MAIL FROM:<a@printers.local>')).toMatch(/^250 /);
    expect(await smtp.command('RCPT TO:<bob@example.test>')).toMatch(/^250 /);
    expect(await smtp.command('DATA')).toMatch(/^354 /);
    const line = 'x'.repeat(998) + '\r\n';
    smtp.write(`Subject: really too big\r\n\r\n${line.repeat(1600)}.\r\n`);
    expect(await smtp.reply()).toBe('552 5.3.4 Error: message exceeds fixed maximum message size 1048576');
    expect(logged('POSTERN_SMTP_MESSAGE_TOO_BIG')).toBeGreaterThan(0);
    // The session goes on: a small message right after is accepted.
    expect(await smtp.command('MAIL FROM:<a@printers.local>')).toMatch(/^250 /);
    smtp.close();
    expect((await queueRows()).length).toBe(before);
    expect(stack.upstream.messages.some((m) => m.parsed?.subject === 'really too big')).toBe(false);
    await stack.gw.postern.queueManager.whenIdle();
    expect(spoolFiles()).toEqual([]);
    await saveRelaySettings(stack.web, {});
  });

  it('a device that disconnects during DATA leaves nothing behind', async () => {
    await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.1' });
    const before = (await queueRows()).length;
    const smtp = await RawSmtp.open(stack.relayPort);
    await smtp.command('EHLO device.test');
    await smtp.command('MAIL FROM:<a@printers.local>');
    await smtp.command('RCPT TO:<bob@example.test>');
    await smtp.command('DATA');
    const mark = stack.gw.log.mark();
    smtp.write('Subject: cut off\r\n\r\n' + 'y'.repeat(100_000));
    smtp.close();
    // The relay says when it has given the partial message up (its spool file removed first).
    await stack.gw.log.waitFor((line) => line.msg === LOG.disconnectedDuringData || line.msg === 'message could not be queued (451)', { from: mark });
    // Every body left in the spool belongs to a queued message: the partial one is gone (bodies of messages
    // sent just before go once their outcome is on disk: checked again at each change of the spool).
    await until(directoryChanges(join(stack.gw.dataDir, 'spool')), async () => {
      const waiting = new Set((await queueRows()).filter((r) => r.state !== 'sent' && r.state !== 'bounced').map((r) => `${r.id}.eml`));
      return spoolFiles().every((file) => waiting.has(file));
    }, 'the partial file to go');
    expect((await queueRows()).length).toBe(before);
    await saveRelaySettings(stack.web, {});
  });
});

describe('storage failures (nothing is lost)', () => {
  it('a spool that cannot be written answers 451 4.3.0 and queues nothing; the retry goes through once storage is back', async () => {
    const spool = join(stack.gw.dataDir, 'spool');
    const send = () =>
      pythonSend({
        port: stack.relayPort,
        starttls: true,
        auth: { mechanism: 'PLAIN', user: DEVICE.user, password: DEVICE.password },
        from: ALICE,
        to: ['bob@example.test'],
        message: message('storage trouble', ALICE),
      });
    const before = (await queueRows()).length;
    // The spool directory turns into a file: every write fails, as on a failed or read-only disk.
    renameSync(spool, `${spool}.away`);
    writeFileSync(spool, '');
    try {
      const refused = await send();
      expect(refused.ok).toBe(false);
      expect(refused.error).toMatchObject({ code: 451 });
      expect(refused.error?.message).toMatch(/^4\.3\.0 /);
      expect(logged('POSTERN_QUEUE_COMMIT_FAILED')).toBeGreaterThan(0);
      expect((await queueRows()).length).toBe(before);
    } finally {
      rmSync(spool);
      renameSync(`${spool}.away`, spool);
    }
    const retried = await send();
    expect(retried.ok).toBe(true);
    await upstreamMessage('storage trouble');
    expect(stack.upstream.messages.filter((m) => m.parsed?.subject === 'storage trouble')).toHaveLength(1);
  });
});

describe('TLS versions for old devices (Allow TLS 1.0 and 1.1)', () => {
  it('TLS 1.0/1.1 are refused by default and accepted with the legacy switch; TLS 1.2 always', async () => {
    const send = (tlsVersion: 'TLSv1' | 'TLSv1_1' | 'TLSv1_2') =>
      pythonSend({
        port: stack.relayPort,
        starttls: true,
        tlsVersion,
        auth: { mechanism: 'LOGIN', user: DEVICE.user, password: DEVICE.password },
        from: ALICE,
        to: ['bob@example.test'],
        message: message(`over ${tlsVersion}`, ALICE),
      });
    const modern = await send('TLSv1_2');
    expect(modern).toMatchObject({ ok: true, tls: 'TLSv1.2' });

    const before = (await queueRows()).length;
    for (const version of ['TLSv1_1', 'TLSv1'] as const) {
      const refused = await send(version);
      expect(refused.ok).toBe(false);
      expect(refused.error?.type).toMatch(/SSL/);
    }
    expect((await queueRows()).length).toBe(before);

    await saveRelaySettings(stack.web, { allowLegacyTls: 'on' });
    try {
      expect(await send('TLSv1_1')).toMatchObject({ ok: true, tls: 'TLSv1.1' });
      expect(await send('TLSv1')).toMatchObject({ ok: true, tls: 'TLSv1' });
      await upstreamMessage('over TLSv1_1');
      await upstreamMessage('over TLSv1');
    } finally {
      await saveRelaySettings(stack.web, {});
    }
    const again = await send('TLSv1_1');
    expect(again.ok).toBe(false);
  });
});
