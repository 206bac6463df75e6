/**
 * The relay against an attacker with real connections (raw sockets from several 127/8 addresses, Python's
 * smtplib, swaks): AUTH guesses in parallel, one address holding every session, command and NOOP streams,
 * AUTH offered before TLS, a foreign PLAIN authorization identity, a header block too large for the sender
 * policy, NUL bytes. Linux accepts any 127/8 address as a local address, so "another client" is another
 * loopback address.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestPostern, type TestPostern } from './support/postern.js';
import { enqueueMessage, waitForState } from './support/queue.js';
import { addDevice, ALICE, pythonSend, RawSmtp, run, saveRelaySettings, startSendingStack, type SendingStack } from './support/sending.js';

let stack: SendingStack;
const DEVICE = { user: 'mfp-hardening', password: 'device-password-h1' };
/** Sessions at once from one address in this stack (the default is 20; 100 lets 100 guesses run at once). */
const PER_ADDRESS = 100;

const plain = (authzid: string, user: string, password: string) => Buffer.from(`${authzid}\0${user}\0${password}`).toString('base64');
const message = (subject: string, from = 'scanner@printers.local', extraHeaders = '', body = 'Scanned document attached.\r\n') =>
  `From: "Scanner" <${from}>\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n${extraHeaders}\r\n${body}`;
const queueCount = async () => (await stack.gw.postern.store.db.selectFrom('queue_messages').select('id').execute()).length;

/** A session from `localAddress`, greeted (the caller waits for closed sessions there to be gone: relayClosed). */
async function greeted(localAddress: string): Promise<RawSmtp> {
  const smtp = await RawSmtp.connect(stack.relayPort, { localAddress });
  expect(await smtp.reply()).toMatch(/^220 /);
  return smtp;
}

/** Resolves once the relay has seen `n` sessions from `address` end (subscribe before closing them). */
function relayClosed(address: string, n: number): Promise<void> {
  return new Promise((resolve) => {
    let closed = 0;
    const off = stack.gw.postern.relay.onSessionClosed((from) => {
      if (from !== address || ++closed < n) return;
      off();
      resolve();
    });
  });
}

/** A session from `localAddress`, after EHLO, STARTTLS and EHLO again. */
async function tlsSession(localAddress: string): Promise<RawSmtp> {
  const smtp = await greeted(localAddress);
  expect(await smtp.command('EHLO attacker.test')).toMatch(/^250/);
  expect(await smtp.starttls()).toMatch(/^220/);
  expect(await smtp.command('EHLO attacker.test')).toMatch(/^250/);
  return smtp;
}

beforeAll(async () => {
  stack = await startSendingStack({ config: { relayLimits: { maxConnectionsPerAddress: PER_ADDRESS } } });
  await addDevice(stack.web, DEVICE.user, DEVICE.password);
  expect(stack.web.lastStatus).toBe(303);
});

afterAll(async () => {
  await stack?.close();
});

describe('device AUTH throttle', () => {
  it('regression: 100 parallel wrong passwords reach the password check at most 5 times', async () => {
    const sessions = await Promise.all(Array.from({ length: 100 }, () => tlsSession('127.0.0.2')));
    const checks = vi.spyOn(stack.gw.postern.devices, 'authenticate');
    let replies: string[];
    try {
      replies = await Promise.all(sessions.map((smtp, i) => smtp.command(`AUTH PLAIN ${plain('', DEVICE.user, `wrong-${i}`)}`)));
      // The password check itself (scrypt) ran 5 times, not 100.
      expect(checks).toHaveBeenCalledTimes(5);
    } finally {
      checks.mockRestore();
    }
    const gone = relayClosed('127.0.0.2', sessions.length);
    for (const smtp of sessions) smtp.close();
    const invalid = replies.filter((r) => r === '535 5.7.8 Authentication credentials invalid');
    const throttled = replies.filter((r) => /^454 4\.7\.0 Too many failed logins; try again in \d+ minutes? \(after \d\d:\d\d UTC\)$/.test(r));
    expect(invalid.length).toBe(5);
    expect(throttled.length).toBe(95);

    // 127.0.0.2 is locked out, even with the right password; the device on 127.0.0.3 is not.
    await gone;
    const locked = await tlsSession('127.0.0.2');
    expect(await locked.command(`AUTH PLAIN ${plain('', DEVICE.user, DEVICE.password)}`)).toMatch(/^454 4\.7\.0 Too many failed logins; try again in /);
    locked.close();
    const device = await pythonSend({
      port: stack.relayPort,
      sourceAddress: '127.0.0.3',
      starttls: true,
      auth: { mechanism: 'PLAIN', user: DEVICE.user, password: DEVICE.password },
      from: ALICE,
      to: ['bob@example.test'],
      message: message('from the other address'),
    });
    expect(device.error).toBeUndefined();
    expect(device.replies).toContain('235 2.7.0 Authentication successful');
    await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'from the other address', 'the message upstream');
    expect(stack.gw.logs()).not.toContain('wrong-7');
  });
});

describe('one client cannot take every SMTP session', () => {
  it('regression: one address cannot take every SMTP slot', async () => {
    const idle = await Promise.all(Array.from({ length: PER_ADDRESS }, () => RawSmtp.open(stack.relayPort, { localAddress: '127.0.0.4' })));

    // A device on another address is served: a full send with Python's smtplib, delivered upstream.
    const device = await pythonSend({
      port: stack.relayPort,
      sourceAddress: '127.0.0.5',
      starttls: true,
      auth: { mechanism: 'LOGIN', user: DEVICE.user, password: DEVICE.password },
      from: ALICE,
      to: ['bob@example.test'],
      message: message('served while another address is busy'),
    });
    expect(device.error).toBeUndefined();
    await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'served while another address is busy', 'the message upstream');

    // One more from the busy address is refused at once and closed.
    const gone = relayClosed('127.0.0.4', PER_ADDRESS + 1);
    const extra = await RawSmtp.connect(stack.relayPort, { localAddress: '127.0.0.4' });
    expect(await extra.reply()).toBe('421 4.7.0 Too many connections from your address');
    await extra.closed;

    // Sessions that end in any way (QUIT, a reset) give their place back.
    for (const [i, smtp] of idle.entries()) {
      if (i % 2 === 0) expect(await smtp.command('QUIT')).toMatch(/^221/);
      else smtp.close();
    }
    await gone; // the relay has seen every one of them end
    const again = await Promise.all(Array.from({ length: PER_ADDRESS }, () => RawSmtp.connect(stack.relayPort, { localAddress: '127.0.0.4' })));
    const greetings = await Promise.all(again.map((s) => s.reply()));
    expect(greetings.filter((g) => !g.startsWith('220 ')), `${PER_ADDRESS} sessions from 127.0.0.4 again`).toEqual([]);
    for (const smtp of again) smtp.close();
  });

  it('regression: commands before AUTH are limited (421 and closed)', async () => {
    const smtp = await RawSmtp.open(stack.relayPort, { localAddress: '127.0.0.7' });
    expect(await smtp.command('EHLO attacker.test')).toMatch(/^250/);
    for (let i = 2; i <= 25; i++) expect(await smtp.command('MAIL FROM:<spoof@example.test>')).toBe('530 5.7.0 Authentication required');
    expect(await smtp.command('MAIL FROM:<spoof@example.test>')).toBe('421 4.7.0 Too many commands without authentication; closing the session');
    await smtp.closed;
  });

  it('regression: a NOOP stream cannot keep a session open for ever', async () => {
    const smtp = await tlsSession('127.0.0.8');
    expect(await smtp.command(`AUTH PLAIN ${plain('', DEVICE.user, DEVICE.password)}`)).toBe('235 2.7.0 Authentication successful');
    for (let i = 0; i < 20; i++) expect(await smtp.command(i % 2 ? 'NOOP' : 'RSET')).toMatch(/^250 /);
    // An accepted message is progress: the count starts again.
    expect(await smtp.command(`MAIL FROM:<${ALICE}>`)).toMatch(/^250 /);
    expect(await smtp.command('RCPT TO:<bob@example.test>')).toMatch(/^250 /);
    expect(await smtp.command('DATA')).toMatch(/^354 /);
    expect(await smtp.command(`${message('between the noops')}.`)).toMatch(/^250 2\.0\.0 Ok: queued as /);
    for (let i = 0; i < 30; i++) expect(await smtp.command('NOOP')).toMatch(/^250 /);
    expect(await smtp.command('NOOP')).toBe('421 4.4.2 Too many commands without a message; closing the session');
    await smtp.closed;
  });
});

describe('AUTH only under TLS, as itself', () => {
  it('regression: AUTH is not advertised before STARTTLS unless the legacy switch allows AUTH without TLS', async () => {
    const python = await pythonSend({
      port: stack.relayPort,
      starttls: true,
      auth: { mechanism: 'PLAIN', user: DEVICE.user, password: DEVICE.password },
      from: ALICE,
      to: ['bob@example.test'],
      message: message('auth after tls'),
    });
    expect(python.error).toBeUndefined();
    expect(python.featuresBeforeTls).toHaveProperty('starttls');
    expect(python.featuresBeforeTls).not.toHaveProperty('auth');
    expect(python.features?.auth?.trim()).toBe('PLAIN LOGIN');

    const swaks = await run('swaks', ['--server', `127.0.0.1:${stack.relayPort}`, '--quit-after', 'EHLO', '--ehlo', 'device.test']);
    expect(swaks.stdout).toContain('250-STARTTLS');
    expect(swaks.stdout).not.toMatch(/250[- ]AUTH/);

    await saveRelaySettings(stack.web, { allowInsecureAuth: 'on' });
    try {
      const legacy = await pythonSend({
        port: stack.relayPort,
        auth: { mechanism: 'LOGIN', user: DEVICE.user, password: DEVICE.password },
        from: ALICE,
        to: ['bob@example.test'],
        message: message('legacy auth without tls'),
      });
      expect(legacy.error).toBeUndefined();
      expect(legacy.featuresBeforeTls?.auth?.trim()).toBe('PLAIN LOGIN');
    } finally {
      await saveRelaySettings(stack.web, {});
    }
  });

  it('regression: AUTH PLAIN with another authorization identity is refused', async () => {
    const smtp = await tlsSession('127.0.0.9');
    expect(await smtp.command(`AUTH PLAIN ${plain('postmaster', DEVICE.user, DEVICE.password)}`)).toBe('535 5.7.8 Authorization identity must be empty or the same as the user name');
    expect(await smtp.command(`MAIL FROM:<${ALICE}>`)).toBe('530 5.7.0 Authentication required');
    expect(await smtp.command(`AUTH PLAIN ${plain(DEVICE.user, DEVICE.user, DEVICE.password)}`)).toBe('235 2.7.0 Authentication successful');
    smtp.close();
    const empty = await tlsSession('127.0.0.9');
    expect(await empty.command(`AUTH PLAIN ${plain('', DEVICE.user, DEVICE.password)}`)).toBe('235 2.7.0 Authentication successful');
    empty.close();
  });
});

describe('the sender policy cannot be bypassed by size or bytes', () => {
  const send = (subject: string, data: string) =>
    pythonSend({
      port: stack.relayPort,
      starttls: true,
      auth: { mechanism: 'PLAIN', user: DEVICE.user, password: DEVICE.password },
      from: ALICE,
      to: ['bob@example.test'],
      message: data,
    }).then((result) => ({ subject, result }));

  it('regression: a 1.2 MB header block with a spoofed From is refused, in every shape, and nothing reaches the upstream', async () => {
    const spoof = 'ceo@example.test';
    const filler = `X-Filler: ${'a'.repeat(990)}\r\n`.repeat(1250);
    const folded = `X-Folded: start\r\n${` ${'b'.repeat(990)}\r\n`.repeat(1250)}`;
    const longLine = `X-Long: ${'c'.repeat(1_200_000)}\r\n`;
    const before = await queueCount();
    const attempts = await Promise.all([
      send('huge header lines', message('huge header lines', spoof, filler)),
      send('huge folded header', message('huge folded header', spoof, folded)),
      send('huge single header line', message('huge single header line', spoof, longLine)),
      // No blank line at all: the whole message is header.
      send('all header', `From: <${spoof}>\r\nSender: <${spoof}>\r\nSubject: all header\r\n${filler}`),
    ]);
    for (const { subject, result } of attempts) {
      expect(result.error, subject).toMatchObject({ code: 552, message: '5.3.4 Message header block exceeds 262144 bytes' });
    }
    expect(await queueCount()).toBe(before);

    // Under the limit the policy applies whatever the size: From becomes the mailbox, Sender goes.
    const { result } = await send('large but allowed header', message('large but allowed header', spoof, `Sender: <${spoof}>\r\n${`X-Filler: ${'d'.repeat(990)}\r\n`.repeat(200)}`));
    expect(result.error).toBeUndefined();
    const delivered = await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'large but allowed header', 'the message upstream');
    expect(delivered.parsed?.from?.value).toEqual([{ address: ALICE, name: 'Scanner' }]);
    expect(delivered.parsed?.headers.has('sender')).toBe(false);
    for (const { subject } of attempts) expect(stack.upstream.messages.some((m) => m.parsed?.subject === subject)).toBe(false);
    expect(stack.upstream.messages.some((m) => m.parsed?.from?.value.some((a) => a.address === spoof))).toBe(false);
  });

  it('regression: a spooled message whose header the sender policy cannot judge is returned, never sent unrewritten', async () => {
    // Only a message spooled before the relay refused such headers can have one; put it in as the relay did.
    const spoof = 'ceo@example.test';
    const body = `From: <${spoof}>\r\nSubject: spooled huge header\r\n${`X-Filler: ${'a'.repeat(990)}\r\n`.repeat(1250)}\r\nbody\r\n`;
    const queued = await enqueueMessage(stack.gw.postern.queue, body, { reversePath: ALICE, headerFrom: spoof, subject: 'spooled huge header' });
    stack.gw.postern.queueManager.offer(queued);
    const row = await waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, queued.id, 'bounced');
    expect(row.lastReply).toMatch(/^554 5\.6\.0 the message's header block exceeds 1048576 bytes/);
    expect(stack.upstream.messages.some((m) => m.parsed?.subject === 'spooled huge header')).toBe(false);
    expect(stack.upstream.messages.some((m) => m.parsed?.from?.value.some((a) => a.address === spoof))).toBe(false);
  });

  it('regression: a message with NUL bytes is refused with 554 5.6.0', async () => {
    const before = await queueCount();
    const { result } = await send('nul bytes', message('nul bytes', ALICE, '', 'before\0after\r\n'));
    expect(result.error).toMatchObject({ code: 554, message: '5.6.0 Message contains NUL bytes' });
    const inHeader = await send('nul in header', `From: <${ALICE}>\r\nSubject: nul in\0header\r\n\r\nbody\r\n`);
    expect(inHeader.result.error).toMatchObject({ code: 554, message: '5.6.0 Message contains NUL bytes' });
    expect(await queueCount()).toBe(before);
  });
});

describe('session lifetime', () => {
  let gw: TestPostern;

  beforeAll(async () => {
    gw = await startTestPostern({ config: { relayLimits: { sessionTimeoutMs: 1500, maxIdleCommands: 10_000, maxCommandsBeforeAuth: 10_000 } } });
  });

  afterAll(async () => {
    await gw?.close();
  });

  it('regression: a NOOP stream cannot defeat the idle timeout (a session without a message is closed)', async () => {
    // The session limit is the relay's timer: the test drives that clock, a NOOP answered at each step.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const smtp = await RawSmtp.open(gw.postern.smtpPort, { localAddress: '127.0.0.10' });
      expect(await smtp.command('EHLO slow-loris.test')).toMatch(/^250/);
      let closed = false;
      void smtp.closed.then(() => (closed = true));
      // Every NOOP restarts smtp-server's idle timeout (one every 100 ms of the session's time here); the
      // session limit (1.5 s) counts from the connect regardless.
      let last = '';
      for (let step = 0; step < 100 && !last.startsWith('421'); step++) {
        last = await smtp.command('NOOP');
        vi.advanceTimersByTime(100);
      }
      expect(last).toBe('421 4.4.2 No message sent in too long; closing the session');
      await smtp.closed;
      expect(closed).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('default limits', () => {
  let gw: TestPostern;

  beforeAll(async () => {
    gw = await startTestPostern();
  });

  afterAll(async () => {
    await gw?.close();
  });

  it('regression: 20 sessions from one address by default; the 21st gets 421 while another address is served', async () => {
    const port = gw.postern.smtpPort;
    const idle = await Promise.all(Array.from({ length: 20 }, () => RawSmtp.open(port, { localAddress: '127.0.0.11' })));
    const extra = await RawSmtp.connect(port, { localAddress: '127.0.0.11' });
    expect(await extra.reply()).toBe('421 4.7.0 Too many connections from your address');
    await extra.closed;
    const other = await RawSmtp.open(port, { localAddress: '127.0.0.12' });
    expect(await other.command('EHLO device.test')).toMatch(/^250/);
    expect(await other.command('QUIT')).toMatch(/^221/);
    for (const smtp of idle) smtp.close();
  });
});
