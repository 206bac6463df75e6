/**
 * Allowed Sender Addresses of device accounts (docs/protocol.md §5.2): a signed-in device may use
 * only the MAIL FROM its account lists, otherwise `550 5.7.1`, and the upstream never sees the message.
 * Real sockets, Python's smtplib over STARTTLS + AUTH, a raw socket for the exact replies, the Office 365
 * stand-in upstream; the list is set and edited through the Relay Settings page as an administrator does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebClient } from './support/postern.js';
import { addDevice, ALICE, editDeviceSenders, pythonSend, RawSmtp, saveRelaySettings, startSendingStack, type SendingStack } from './support/sending.js';

let stack: SendingStack;
const LIMITED = { user: 'scanner-limited', password: 'limited-password-1' };
const OPEN = { user: 'scanner-open', password: 'open-password-1' };

const queueCount = async () => (await stack.gw.postern.store.db.selectFrom('queue_messages').select('id').execute()).length;
const storedSenders = async (username: string) =>
  (await stack.gw.postern.store.db.selectFrom('relay_devices').select('allowed_senders').where('username', '=', username).executeTakeFirstOrThrow()).allowed_senders;

function send(device: { user: string; password: string }, from: string, subject: string) {
  return pythonSend({
    port: stack.relayPort,
    starttls: true,
    cadata: stack.relayCert,
    auth: { mechanism: 'PLAIN', user: device.user, password: device.password },
    from,
    to: ['bob@example.test'],
    message: `From: <${from || 'mailer-daemon@printers.local'}>\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nScanned document attached.\r\n`,
  });
}

async function upstreamMessage(subject: string) {
  return stack.upstream.waitForMessage((m) => m.parsed?.subject === subject, `"${subject}" upstream`);
}

/** Nothing with `subject` reached the upstream, once the queue has nothing left to do. */
async function neverUpstream(subject: string): Promise<void> {
  await stack.gw.postern.queueManager.whenIdle();
  expect(stack.upstream.messages.some((m) => m.parsed?.subject === subject)).toBe(false);
}

beforeAll(async () => {
  stack = await startSendingStack();
  await addDevice(stack.web, LIMITED.user, LIMITED.password, 'scanner@printers.local\n@contoso.example');
  expect(stack.web.lastStatus).toBe(303);
  await addDevice(stack.web, OPEN.user, OPEN.password);
  expect(stack.web.lastStatus).toBe(303);
});

afterAll(async () => {
  await stack?.close();
});

describe('a device with Allowed Sender Addresses (docs/protocol.md §5.2)', () => {
  it('sends as a listed address: accepted and delivered upstream as the mailbox', async () => {
    const result = await send(LIMITED, 'scanner@printers.local', 'listed address');
    expect(result.error).toBeUndefined();
    expect(result.ok).toBe(true);
    const delivered = await upstreamMessage('listed address');
    expect(delivered.envelope).toEqual({ mailFrom: ALICE, rcptTo: ['bob@example.test'] });
  });

  it('sends as any address of a listed @domain, in any letter case', async () => {
    for (const [from, subject] of [
      ['any@contoso.example', 'listed domain'],
      ['ANY@CONTOSO.EXAMPLE', 'listed domain, upper case'],
    ] as const) {
      const result = await send(LIMITED, from, subject);
      expect(result.error, from).toBeUndefined();
      expect(result.ok).toBe(true);
      await upstreamMessage(subject);
    }
  });

  it('another sender gets 550 5.7.1 at MAIL FROM; nothing is queued and nothing goes upstream', async () => {
    const before = await queueCount();
    const result = await send(LIMITED, 'other@printers.local', 'unlisted sender');
    expect(result.ok).toBe(false);
    expect(result.error).toEqual({ type: 'SMTPSenderRefused', code: 550, message: '5.7.1 Sender address <other@printers.local> is not allowed for this device' });
    expect(await queueCount()).toBe(before);
    await neverUpstream('unlisted sender');
    // Logged for the administrator (which device, which sender), never the password.
    const logs = stack.gw.logs();
    expect(logs).toMatch(/"device":"scanner-limited".*"mailFrom":"other@printers\.local".*MAIL FROM not allowed for this device/);
    expect(logs).not.toContain(LIMITED.password);
  });

  it('the null reverse-path <> is refused too: a device does not send bounces through Postern', async () => {
    const before = await queueCount();
    const result = await send(LIMITED, '', 'null sender');
    expect(result.error).toEqual({ type: 'SMTPSenderRefused', code: 550, message: '5.7.1 Sender address <> is not allowed for this device' });
    expect(await queueCount()).toBe(before);
    await neverUpstream('null sender');
  });

  it('a device without a list may use any sender, <> included (as before)', async () => {
    const result = await send(OPEN, 'whoever@elsewhere.example', 'open device');
    expect(result.error).toBeUndefined();
    await upstreamMessage('open device');
    expect((await send(OPEN, '', 'open device, null sender')).ok).toBe(true);
  });

  it('sessions from Allowed Networks (no AUTH) are not limited by any device list', async () => {
    await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.1' });
    const smtp = await RawSmtp.open(stack.relayPort);
    await smtp.command('EHLO device.test');
    expect(await smtp.command('MAIL FROM:<other@printers.local>')).toBe('250 2.1.0 Accepted');
    smtp.close();
    await saveRelaySettings(stack.web, {});
  });
});

describe('editing the list on Relay Settings', () => {
  it('shows each device’s list (Any when empty) and takes an edit from the next session on', async () => {
    let html = await stack.web.get('/settings/send/relay');
    expect(html).toContain('<th scope="col">Allowed Sender Addresses</th>');
    expect(html).toContain('data-field="device-allowed-senders">scanner@printers.local, @contoso.example<');
    expect(html).toContain('data-field="device-allowed-senders">Any<');

    html = await editDeviceSenders(stack.web, LIMITED.user, 'scanner@printers.local\n@Printers.Local');
    expect(stack.web.lastStatus).toBe(303);
    expect(await storedSenders(LIMITED.user)).toBe('scanner@printers.local\n@printers.local');
    expect((await send(LIMITED, 'other@printers.local', 'allowed after the edit')).ok).toBe(true);
    await upstreamMessage('allowed after the edit');
    expect((await send(LIMITED, 'any@contoso.example', 'refused after the edit')).error?.code).toBe(550);
    const audit = await stack.gw.postern.audit.recent(5);
    expect(audit[0]).toMatchObject({ actor: 'admin', action: 'relay-device.changed', detail: 'scanner-limited, allowed senders [scanner@printers.local @printers.local]' });
  });

  it('an edit counts from the next MAIL FROM even inside a session that signed in before it', async () => {
    await saveRelaySettings(stack.web, { allowInsecureAuth: 'on' });
    const smtp = await RawSmtp.open(stack.relayPort);
    await smtp.command('EHLO device.test');
    const plain = Buffer.from(`\0${LIMITED.user}\0${LIMITED.password}`).toString('base64');
    expect(await smtp.command(`AUTH PLAIN ${plain}`)).toBe('235 2.7.0 Authentication successful');
    expect(await smtp.command('MAIL FROM:<fax@printers.local>')).toBe('250 2.1.0 Accepted');
    expect(await smtp.command('RSET')).toMatch(/^250 /);
    await editDeviceSenders(stack.web, LIMITED.user, 'scanner@printers.local');
    expect(await smtp.command('MAIL FROM:<fax@printers.local>')).toBe('550 5.7.1 Sender address <fax@printers.local> is not allowed for this device');
    expect(await smtp.command('MAIL FROM:<scanner@printers.local>')).toBe('250 2.1.0 Accepted');
    smtp.close();
    await saveRelaySettings(stack.web, {});
  });

  it('an empty list lets the device use any sender again', async () => {
    await editDeviceSenders(stack.web, LIMITED.user, '');
    expect(stack.web.lastStatus).toBe(303);
    expect(await storedSenders(LIMITED.user)).toBe('');
    expect((await send(LIMITED, 'anything@anywhere.example', 'any sender again')).ok).toBe(true);
    await editDeviceSenders(stack.web, LIMITED.user, 'scanner@printers.local\n@contoso.example');
  });

  it('invalid entries get a clear field error and change nothing', async () => {
    const before = await storedSenders(LIMITED.user);
    const html = await editDeviceSenders(stack.web, LIMITED.user, 'ok@printers.local\nnot an address\n@\na@b@c');
    expect(stack.web.lastStatus).toBe(400);
    expect(html).toContain('<h1>Edit Device Account</h1>');
    expect(html).toMatch(/<textarea id="allowedSenders"[^>]*aria-invalid="true"/);
    const error = /<p class="field-error" id="allowedSenders-error">([^<]*)<\/p>/.exec(html)?.[1];
    expect(error).toContain('not an address: not an e-mail address or @domain');
    expect(error).toContain('@: a domain must follow the @ (for example @example.com)');
    expect(error).toContain('a@b@c: more than one @ (write one address per line)');
    expect(error).not.toContain('ok@printers.local');
    // What was typed stays in the field, so it can be corrected.
    expect(html).toContain('ok@printers.local\nnot an address\n@\na@b@c</textarea>');
    expect(await storedSenders(LIMITED.user)).toBe(before);

    // The same check when a device account is added: no account is created.
    const added = await addDevice(stack.web, 'scanner-typo', 'typo-password-1', 'a@b@c');
    expect(stack.web.lastStatus).toBe(400);
    expect(added).toContain('id="allowedSenders-error"');
    expect(added).toContain('a@b@c: more than one @');
    expect(await stack.gw.postern.devices.exists('scanner-typo')).toBe(false);
  });

  it('a General User sees the lists but cannot change them', async () => {
    await stack.gw.postern.users.create('viewer', 'viewer-password-1', 'GeneralUser');
    const viewer = new WebClient(stack.gw.url);
    await viewer.login('viewer', 'viewer-password-1');
    const page = await viewer.get('/settings/send/relay');
    expect(page).toContain('data-field="device-allowed-senders">scanner@printers.local, @contoso.example<');
    expect(page).not.toContain(`aria-label="Edit ${LIMITED.user}"`);
    const id = (await stack.gw.postern.store.db.selectFrom('relay_devices').select('id').where('username', '=', LIMITED.user).executeTakeFirstOrThrow()).id;
    const edit = await viewer.get(`/settings/send/relay/devices/${id}/edit`);
    expect(viewer.lastStatus).toBe(403);
    expect(edit).toContain('Administrator or Network Administrator privileges are required');
    const before = await storedSenders(LIMITED.user);
    await viewer.post(`/settings/send/relay/devices/${id}/edit`, { allowedSenders: '' });
    expect(viewer.lastStatus).toBe(403);
    expect(await storedSenders(LIMITED.user)).toBe(before);
  });

  it('a form posted without its CSRF token changes nothing', async () => {
    const id = (await stack.gw.postern.store.db.selectFrom('relay_devices').select('id').where('username', '=', LIMITED.user).executeTakeFirstOrThrow()).id;
    const before = await storedSenders(LIMITED.user);
    const html = await stack.web.post(`/settings/send/relay/devices/${id}/edit`, { _csrf: 'forged', allowedSenders: '' });
    expect(stack.web.lastStatus).toBe(403);
    expect(html).toContain('Form Expired');
    expect(await storedSenders(LIMITED.user)).toBe(before);
  });
});
