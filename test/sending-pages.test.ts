/**
 * The Remote UI pages of the sending path, browser-less: E-Mail Settings (defaults per provider, labels,
 * validation), Relay Settings (device accounts, Allowed Networks, the relay certificate: generated, then
 * uploaded and presented at once), Queue and Log, menus, and what a General User may do.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { pythonSend } from './support/sending.js';
import { createTestPki, type TestPki } from './support/test-ca.js';

let gw: TestPostern;
let web: WebClient;
let pki: TestPki;

const selected = (html: string, name: string) => new RegExp(`<select id="${name}"[\\s\\S]*?<option value="([^"]+)" selected`).exec(html)?.[1];
const value = (html: string, id: string) => new RegExp(`id="${id}" name="${id}" value="([^"]*)"`).exec(html)?.[1];

beforeAll(async () => {
  pki = await createTestPki();
  gw = await startTestPostern();
  web = new WebClient(gw.url);
  await web.login();
});

afterAll(async () => {
  await gw?.close();
});

describe('menus', () => {
  it('E-Mail Settings and Relay Settings come first under Send; Queue and Log under Management', async () => {
    const html = await web.get('/settings');
    const send = /<h2><a href="\/settings\/send">Send<\/a><\/h2>\s*<ul>([\s\S]*?)<\/ul>/.exec(html)![1]!;
    const labels = [...send.matchAll(/>([^<>]+)<\/a>/g)].map((m) => m[1]);
    expect(labels.slice(0, 2)).toEqual(['E-Mail Settings', 'Relay Settings']);
    expect(labels).toContain('OAuth 2.0 (Microsoft) Settings');
    expect(html).toContain('<a href="/settings/queue">Queue</a>');
    expect(html).toContain('<a href="/settings/log">Log</a>');
  });
});

describe('E-Mail Settings', () => {
  it('defaults to OAuth 2.0 (Microsoft) through smtp.office365.com:587 with STARTTLS', async () => {
    const html = await web.get('/settings/send/email');
    expect(html).toContain('<h1>E-Mail Settings</h1>');
    for (const label of ['SMTP Server', 'Port', 'Sender E-Mail Address', 'Sending Account', 'Verify Server Certificate', 'Add CN to Verification Items']) {
      expect(html).toMatch(new RegExp(`<label for="\\w+">${label}</label>`));
    }
    expect(selected(html, 'accountId')).toBe('microsoft');
    expect(value(html, 'smtpHost')).toBe('smtp.office365.com');
    expect(value(html, 'smtpPort')).toBe('587');
    expect(selected(html, 'tlsMode')).toBe('starttls');
    expect(value(html, 'messagesPerMinute')).toBe('30');
    expect(html).toMatch(/id="verifyServerCertificate"[^>]* checked/);
    expect(html).toContain('data-field="token-status">Not Registered<');
    expect(html).toContain('<button type="submit">Send Test E-Mail</button>');
  });

  it('refuses bad input with messages on the fields and saves nothing', async () => {
    await web.get('/settings/send/email');
    const html = await web.post('/settings/send/email', {
      accountId: 'microsoft',
      smtpHost: 'smtp office365 com',
      smtpPort: '70000',
      tlsMode: 'starttls',
      senderAddress: 'not-an-address',
      allowedFromAddresses: 'ok@example.test\nbad address',
      messagesPerMinute: '-1',
    });
    expect(web.lastStatus).toBe(400);
    for (const id of ['smtpHost', 'smtpPort', 'senderAddress', 'allowedFromAddresses', 'messagesPerMinute']) {
      expect(html).toMatch(new RegExp(`id="${id}"[^>]*aria-invalid="true"|aria-invalid="true"[^>]*id="${id}"|id="${id}" name="${id}"[^>]*aria-invalid="true"`));
      expect(html).toContain(`id="${id}-error"`);
    }
    expect(html).toContain('is not an e-mail address');
    expect(html).not.toMatch(/at .*\.ts:\d+/);
    expect((await gw.postern.emailSettings.get()).smtpHost).toBe('smtp.office365.com');
  });

  it("choosing Google with the server left empty takes Google's defaults (smtp.gmail.com:465, SSL/TLS)", async () => {
    await web.get('/settings/send/email');
    await web.post('/settings/send/email', { accountId: 'google', smtpHost: '', smtpPort: '', tlsMode: 'tls', verifyServerCertificate: 'on', addCnToVerificationItems: 'on', senderAddress: 'Scans@Example.test', allowedFromAddresses: '', messagesPerMinute: '' });
    expect(web.lastStatus).toBe(303);
    const saved = await gw.postern.emailSettings.get();
    expect(saved).toMatchObject({ accountId: 'google', smtpHost: 'smtp.gmail.com', smtpPort: 465, tlsMode: 'tls', senderAddress: 'Scans@Example.test', messagesPerMinute: 60 });
    const html = await web.get('/settings/send/email');
    expect(html).toContain('data-field="sending-account"><a href="/settings/send/oauth-google">OAuth 2.0 (Google)</a>');
    // Verify off disables Add CN, and the page says what that means.
    await web.post('/settings/send/email', { accountId: 'microsoft', smtpHost: '', smtpPort: '', tlsMode: 'starttls', addCnToVerificationItems: 'on', senderAddress: '', allowedFromAddresses: '', messagesPerMinute: '' });
    expect((await gw.postern.emailSettings.get()).tls).toEqual({ verifyServerCertificate: false, addCnToVerificationItems: false });
    expect(await web.get('/settings/send/email')).toContain('the connection is encrypted, but the server is not authenticated');
    const audit = await web.get('/settings/audit');
    expect(audit).toContain('email-settings.saved');
  });

  it('Send Test E-Mail without an authorized account says so in plain words', async () => {
    await web.get('/settings/send/email');
    const html = await web.post('/settings/send/email/test', { testTo: 'bob@example.test' });
    expect(html).toMatch(/data-field="test-result">Not sent: OAuth 2\.0 \(Microsoft\) has no usable token\./);
  });
});

describe('Relay Settings', () => {
  it('shows the listener, the generated certificate and labelled fields', async () => {
    const html = await web.get('/settings/send/relay');
    expect(html).toContain('<h1>Relay Settings</h1>');
    expect(html).toContain(`data-field="relay-port">${gw.postern.smtpPort}<`);
    for (const label of ['Allowed Networks', 'Maximum Message Size \\(MB\\)']) expect(html).toMatch(new RegExp(`<label for="\\w+">${label}</label>`));
    // A device account is typed on a page of its own (no other form's button can discard it).
    const add = await web.get('/settings/send/relay/devices/new');
    for (const label of ['User Name', 'Password']) expect(add).toMatch(new RegExp(`<label for="\\w+">${label}</label>`));
    expect(html).toMatch(/data-field="certificate-fingerprint">[0-9A-F:]{95}</);
    expect(html).toContain('self-signed, generated by Postern');
  });

  it('adds device accounts with hashed passwords, refuses bad ones, removes them', async () => {
    await web.get('/settings/send/relay');
    let html = await web.post('/settings/send/relay/devices', { username: 'bad name!', password: 'short' });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('id="username-error"');
    expect(html).toContain('at least 8 characters');
    await web.post('/settings/send/relay/devices', { username: 'mfp-lobby', password: 'lobby-password-1' });
    expect(web.lastStatus).toBe(303);
    html = await web.post('/settings/send/relay/devices', { username: 'mfp-lobby', password: 'lobby-password-2' });
    expect(html).toContain('already exists');
    const stored = await gw.postern.store.db.selectFrom('relay_devices').selectAll().where('username', '=', 'mfp-lobby').executeTakeFirstOrThrow();
    expect(stored.password_hash).toMatch(/^scrypt\$/);
    expect(stored.password_hash).not.toContain('lobby-password-1');
    html = await web.get('/settings/send/relay');
    expect(html).toContain('data-field="device-username">mfp-lobby<');
    await web.post(`/settings/send/relay/devices/${stored.id}/remove`);
    expect(await web.get('/settings/send/relay')).not.toContain('data-field="device-username">mfp-lobby<');
  });

  it('an uploaded certificate is checked against its key and presented at once by STARTTLS', async () => {
    const other = await pki.ca.issue(['other.test']);
    await web.get('/settings/send/relay');
    let html = await web.post('/settings/send/relay/certificate', { certificate: pki.server.cert, privateKey: other.key });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('The private key does not belong to the first certificate');
    html = await web.post('/settings/send/relay/certificate', { certificate: pki.server.cert + pki.ca.cert, privateKey: pki.server.key });
    expect(web.lastStatus).toBe(303);
    html = await web.get('/settings/send/relay');
    expect(html).toContain('data-field="certificate-subject">CN=localhost<');
    // A device that trusts the test CA now verifies the relay (Python smtplib, STARTTLS).
    await gw.postern.relaySettings.save({ ...(await gw.postern.relaySettings.get()), allowedNetworks: ['127.0.0.1/32'] });
    const result = await pythonSend({ port: gw.postern.smtpPort, starttls: true, cadata: pki.ca.cert, from: 'a@printers.local', to: ['bob@example.test'], message: 'Subject: verified\r\n\r\nhi\r\n' });
    expect(result.error).toBeUndefined();
    expect(result.ok).toBe(true);
  });
});

describe('Queue and Log', () => {
  it('show what waits and what happened; the message accepted above is held (no token)', async () => {
    const queue = await web.get('/settings/queue');
    expect(queue).toContain('<h1>Queue</h1>');
    expect(queue).toContain('verified');
    const log = await web.get('/settings/log');
    expect(log).toContain('<h1>Log</h1>');
    expect(log).toMatch(/data-field="event">Accepted</);
  });

  it('a General User may look but not change anything', async () => {
    await gw.postern.users.create('viewer', 'viewer-password-1', 'GeneralUser');
    const viewer = new WebClient(gw.url);
    await viewer.login('viewer', 'viewer-password-1');
    const html = await viewer.get('/settings/send/email');
    expect(html).toContain('<h1>E-Mail Settings</h1>');
    expect(html).not.toContain('<form method="post" action="/settings/send/email"');
    expect(html).toContain('Administrator or Network Administrator privileges are required');
    const before = await gw.postern.emailSettings.get();
    await viewer.post('/settings/send/email', { accountId: 'google', smtpHost: 'evil.example', smtpPort: '25', tlsMode: 'starttls', senderAddress: '', allowedFromAddresses: '', messagesPerMinute: '0' });
    expect(viewer.lastStatus).toBe(403);
    expect(await gw.postern.emailSettings.get()).toEqual(before);
    expect(await viewer.get('/settings/queue')).not.toContain('Retry Now</button>');
  });
});
