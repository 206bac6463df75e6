/**
 * Several sending accounts through the Remote UI, as an administrator sets them up: Add Sending Account, its
 * own OAuth 2.0 (Microsoft) screens (authorized at the stand-in as bob, while the seed's account is alice's),
 * its own E-Mail Settings, then routing: a device account's Sending Account, a Sender Routing rule that beats
 * it, an Allowed Networks entry's Sending Account. Each message is seen at the Office 365 stand-in upstream
 * signed in as the mailbox of the account it was routed to, never the other. Remove is refused while
 * anything routes to an account; every select refuses an account that does not exist; hostile names and
 * many adds at once get 400s, never 500s, and leave nothing half-written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOG } from './support/events.js';
import { field, type WebClient } from './support/postern.js';
import type { GoogleStandin } from './support/oauth-standins.js';
import { addDevice, ALICE, authorizationUrlOf, PASSWORD, pythonSend, saveGoogleSettings, saveRelaySettings, startGoogleStandin, startSendingStack, type SendingStack } from './support/sending.js';
import { approveDeviceCode, authorizeInBrowserlessAgent } from './support/user-agent.js';

const BOB = 'bob@example.test';
const SEED_DEVICE = { user: 'scanner-seed', password: 'seed-password-1' };
const SCANNER_DEVICE = { user: 'scanner-second', password: 'second-password-1' };
const UNKNOWN = 'microsoft-0123456789';

let stack: SendingStack;
let web: WebClient;
/** The added account's id and its OAuth 2.0 (Microsoft) Settings screen. */
let scanners: { id: string; base: string };

const csrfOf = (html: string) => /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
const accountRows = () => stack.gw.postern.store.db.selectFrom('oauth_accounts').selectAll().execute();
const defaultAccount = () => stack.gw.postern.emailSettings.sendingAccountId();

function send(options: { device?: { user: string; password: string }; from: string; subject: string; sourceAddress?: string }) {
  return pythonSend({
    port: stack.relayPort,
    starttls: true,
    cadata: stack.relayCert,
    ...(options.device ? { auth: { mechanism: 'PLAIN' as const, user: options.device.user, password: options.device.password } } : {}),
    ...(options.sourceAddress ? { sourceAddress: options.sourceAddress } : {}),
    from: options.from,
    to: ['carol@example.test'],
    message: `From: <${options.from}>\r\nTo: carol@example.test\r\nSubject: ${options.subject}\r\n\r\nScanned document attached.\r\n`,
  });
}

async function deliveredAs(subject: string): Promise<string> {
  const message = await stack.upstream.waitForMessage((m) => m.parsed?.subject === subject, `"${subject}" upstream`);
  expect(message.envelope.mailFrom, subject).toBe(message.authUser);
  return message.authUser;
}

/** The Edit button's address of a device account on Relay Settings. */
async function deviceEditPath(username: string): Promise<string> {
  const list = await web.get('/settings/send/relay');
  const action = new RegExp(`<form method="get" action="([^"]+)" class="inline"><button type="submit" aria-label="Edit ${username}">`).exec(list)?.[1];
  if (!action) throw new Error(`no Edit button for ${username}`);
  return action;
}

beforeAll(async () => {
  stack = await startSendingStack();
  web = stack.web;
});

afterAll(async () => {
  await stack?.close();
});

describe('a second Microsoft account, set up through the Remote UI', () => {
  it('Add Sending Account creates it and opens its Edit Basic Settings', async () => {
    const form = await web.get('/settings/send/accounts/new');
    expect(form).toContain('<h1 id="add-account-heading">Add Sending Account</h1>');
    await web.post('/settings/send/accounts/new', { provider: 'microsoft', name: 'Scanners' });
    expect(web.lastStatus).toBe(303);
    const match = /^\/settings\/send\/oauth-microsoft\/(microsoft-[0-9a-f]{10})\/edit$/.exec(web.lastLocation ?? '');
    expect(match, web.lastLocation).not.toBeNull();
    scanners = { id: match![1]!, base: `/settings/send/oauth-microsoft/${match![1]!}` };
    const edit = await web.get(`${scanners.base}/edit`);
    expect(edit).toContain('<h1>Edit Basic Settings</h1>');
    expect(field(edit, 'account-name')).toBe('Scanners');
    const row = (await accountRows()).find((r) => r.id === scanners.id);
    expect(row).toMatchObject({ provider: 'microsoft', name: 'Scanners', enabled: 0, token_status: 'NotRegistered' });
    expect((await stack.gw.postern.audit.recent(20)).some((e) => e.action === 'sending-account.added' && e.detail?.includes(scanners.id))).toBe(true);
  });

  it('is authorized as bob through its own screens, the seed account staying alice\'s', async () => {
    const saved = stack.gw.log.mark();
    await web.post(`${scanners.base}/edit`, {
      enabled: 'on',
      verifyServerCertificate: 'on',
      addCnToVerificationItems: 'on',
      endpoint: stack.microsoft.endpoint('organizations'),
      clientId: stack.microsoft.publicClientId,
    });
    expect(web.lastStatus).toBe(303);
    expect(web.lastLocation).toBe(scanners.base);
    await stack.gw.log.waitFor(LOG.userCodeIssued, { from: saved });
    const userCode = field(await web.get(`${scanners.base}/status`), 'user-code');
    expect(userCode).toMatch(/^[A-Z0-9-]{6,}$/);
    const signingIn = stack.gw.log.mark();
    await approveDeviceCode({ verificationUri: stack.microsoft.verificationUri, userCode: userCode!, email: BOB, password: PASSWORD, ca: stack.pki.ca.cert });
    await stack.gw.log.waitFor(LOG.authorized, { from: signingIn });

    const page = await web.get(scanners.base);
    expect(page).toContain('<h1>OAuth 2.0 (Microsoft) Settings</h1>');
    expect(field(page, 'account-name')).toBe('Scanners');
    expect(field(page, 'token-status')).toBe('Active');
    expect(field(page, 'account')).toContain(BOB);
    const seed = await web.get('/settings/send/oauth-microsoft/status');
    expect(field(seed, 'token-status')).toBe('Active');
    expect(await web.get('/settings/send/oauth-microsoft/status')).toContain(ALICE);
  });

  it('gets E-Mail Settings of its own; the Default stays the seed account', async () => {
    const own = await web.get(`/settings/send/accounts/${scanners.id}/email`);
    expect(own).toContain('<h1>E-Mail Settings</h1>');
    expect(field(own, 'account-name')).toBe('Scanners');
    await web.post(`/settings/send/accounts/${scanners.id}/email`, {
      // The page's account is the address's, whatever the form says.
      accountId: 'microsoft',
      smtpHost: '127.0.0.1',
      smtpPort: String(stack.upstream.port),
      tlsMode: 'starttls',
      verifyServerCertificate: 'on',
      addCnToVerificationItems: 'on',
      senderAddress: '',
      allowedFromAddresses: '',
      messagesPerMinute: '0',
    });
    expect(web.lastStatus).toBe(303);
    expect(await defaultAccount()).toBe('microsoft');
    expect(await stack.gw.postern.emailSettings.get(scanners.id)).toMatchObject({ accountId: scanners.id, smtpPort: stack.upstream.port, messagesPerMinute: 0 });
    // The Default's page shows another account's saved settings when it is chosen (what its select does).
    const selectedAccount = (html: string) => /<select id="accountId"[\s\S]*?<option value="([^"]+)" selected/.exec(html)?.[1];
    const shown = await web.get(`/settings/send/email?account=${scanners.id}`);
    expect(selectedAccount(shown)).toBe(scanners.id);
    expect(shown).toContain(`id="smtpPort" name="smtpPort" value="${stack.upstream.port}"`);
    expect(selectedAccount(await web.get(`/settings/send/email?account=${UNKNOWN}`))).toBe('microsoft');
    expect(selectedAccount(await web.get('/settings/send/email?account=%0d%0a'))).toBe('microsoft');
    expect(await defaultAccount()).toBe('microsoft');
  });

  it('the Sending Accounts list shows both, and Send → OAuth 2.0 (Microsoft) Settings opens it filtered to Microsoft', async () => {
    const list = await web.get('/settings/send/accounts');
    expect(list).toContain('<h1>Sending Accounts</h1>');
    const rowOf = (id: string) => new RegExp(`<tr data-account="${id}">[\\s\\S]*?</tr>`).exec(list)?.[0] ?? '';
    expect(field(rowOf('microsoft'), 'account-default')).toContain('Default');
    expect(field(rowOf('microsoft'), 'account-mailbox')).toBe(ALICE);
    expect(field(rowOf(scanners.id), 'account-link')).toBe('Scanners');
    expect(field(rowOf(scanners.id), 'account-mailbox')).toBe(BOB);
    expect(field(rowOf(scanners.id), 'account-token-status')).toBe('Active');
    expect(field(rowOf(scanners.id), 'account-delivery')).toBe('SMTP (XOAUTH2)');
    expect(field(rowOf(scanners.id), 'account-waiting')).toBe('0');
    const send = await web.get('/settings/send');
    expect(send).toContain('<a href="/settings/send/accounts?provider=microsoft">OAuth 2.0 (Microsoft) Settings</a>');
    // Google still has one account: its entry opens it, as the seed's menu does.
    expect(send).toContain('<a href="/settings/send/oauth-google">OAuth 2.0 (Google) Settings</a>');
    const filtered = await web.get('/settings/send/accounts?provider=microsoft');
    expect(filtered).toContain(`data-account="${scanners.id}"`);
    expect(filtered).not.toContain('data-account="google"');
  });
});

describe('routing, each message through the account it was routed to', () => {
  beforeAll(async () => {
    await addDevice(web, SEED_DEVICE.user, SEED_DEVICE.password);
    expect(web.lastStatus).toBe(303);
    await web.get('/settings/send/relay/devices/new');
    await web.post('/settings/send/relay/devices', { username: SCANNER_DEVICE.user, password: SCANNER_DEVICE.password, allowedSenders: '', sendingAccountId: scanners.id });
    expect(web.lastStatus).toBe(303);
  });

  it('the device list shows each device\'s account', async () => {
    const page = await web.get('/settings/send/relay');
    const rowOf = (name: string) => new RegExp(`<td data-field="device-username">${name}</td>[\\s\\S]*?</tr>`).exec(page)?.[0] ?? '';
    expect(field(rowOf(SEED_DEVICE.user), 'device-sending-account')).toBe('Default');
    expect(rowOf(SCANNER_DEVICE.user)).toContain('>Scanners</a>');
  });

  it('two devices, two accounts: alice for the Default device, bob for the routed one, never crossed', async () => {
    const results = await Promise.all([
      send({ device: SEED_DEVICE, from: 'mfp@printers.local', subject: 'from the seed device' }),
      send({ device: SCANNER_DEVICE, from: 'mfp@printers.local', subject: 'from the scanner device' }),
      send({ device: SEED_DEVICE, from: 'mfp@printers.local', subject: 'from the seed device again' }),
      send({ device: SCANNER_DEVICE, from: 'mfp@printers.local', subject: 'from the scanner device again' }),
    ]);
    for (const result of results) expect(result.error).toBeUndefined();
    expect(await deliveredAs('from the seed device')).toBe(ALICE);
    expect(await deliveredAs('from the seed device again')).toBe(ALICE);
    expect(await deliveredAs('from the scanner device')).toBe(BOB);
    expect(await deliveredAs('from the scanner device again')).toBe(BOB);
    // The Queue and the Log say which account each message went through.
    const queued = await stack.gw.postern.store.db.selectFrom('queue_messages').select(['id', 'subject', 'account_id']).execute();
    expect(queued.find((m) => m.subject === 'from the scanner device')?.account_id).toBe(scanners.id);
    const id = queued.find((m) => m.subject === 'from the scanner device')!.id;
    expect(await web.get(`/settings/log?id=${id}`)).toContain('through Scanners');
  });

  it('a Sender Routing rule beats the device\'s account', async () => {
    const page = await web.get('/settings/send/sender-routing');
    expect(page).toContain('<h1>Sender Routing</h1>');
    expect(field(page, 'routing-precedence')).toContain('take precedence over device and network routing');
    await web.post('/settings/send/sender-routing', { pattern: '@Finance.Example', accountId: 'microsoft' });
    expect(web.lastStatus).toBe(303);
    expect(field(await web.get('/settings/send/sender-routing'), 'rule-pattern')).toBe('@finance.example');
    const result = await send({ device: SCANNER_DEVICE, from: 'ledger@finance.example', subject: 'routed by sender' });
    expect(result.error).toBeUndefined();
    expect(await deliveredAs('routed by sender')).toBe(ALICE);
  });

  it('an Allowed Networks entry routes the mail of devices that send without signing in', async () => {
    await saveRelaySettings(web, { allowedNetworks: '127.0.0.7/32' });
    expect(web.lastStatus).toBe(303);
    const page = await web.get('/settings/send/relay');
    expect(page).toContain('<input type="hidden" name="networkEntry" value="127.0.0.7/32">');
    await web.post('/settings/send/relay', { allowedNetworks: '127.0.0.7/32', maxMessageSizeMb: '25', bareNewlines: 'normalize', networkEntry: '127.0.0.7/32', networkAccount: scanners.id });
    expect(web.lastStatus).toBe(303);
    expect(await stack.gw.postern.store.db.selectFrom('relay_settings').select('network_accounts').executeTakeFirst()).toEqual({ network_accounts: JSON.stringify({ '127.0.0.7/32': scanners.id }) });
    const result = await send({ sourceAddress: '127.0.0.7', from: 'copier@printers.local', subject: 'from the allowed network' });
    expect(result.error).toBeUndefined();
    expect(await deliveredAs('from the allowed network')).toBe(BOB);
  });
});

describe('a second Google account', () => {
  let google: GoogleStandin;
  let office: { id: string; base: string };

  beforeAll(async () => {
    google = await startGoogleStandin({ pki: stack.pki });
    await web.get('/settings/send/accounts/new');
    await web.post('/settings/send/accounts/new', { provider: 'google', name: 'Office' });
    const id = /\/oauth-google\/(google-[0-9a-f]{10})\/edit$/.exec(web.lastLocation ?? '')![1]!;
    office = { id, base: `/settings/send/oauth-google/${id}` };
    await saveGoogleSettings(web, google, {}, office.base);
    expect(web.lastStatus).toBe(303);
    await stack.gw.postern.oauth.whenIdle(id);
  });

  afterAll(async () => {
    await google?.close();
  });

  const signIn = async () => {
    const register = await web.get(`${office.base}/register`);
    expect(field(register, 'account-name')).toBe('Office');
    return authorizeInBrowserlessAgent({ authorizationUrl: authorizationUrlOf(register), email: BOB, password: PASSWORD, ca: stack.pki.ca.cert });
  };

  it('an attempt of this account pasted on the seed account\'s screen is refused there, and registers nothing', async () => {
    const redirect = await signIn();
    await web.get('/settings/send/oauth-google/register');
    const html = await web.post('/settings/send/oauth-google/register', { code: redirect.href });
    expect(web.lastStatus).toBe(400);
    expect(field(html, 'register-error')).toContain('state does not match');
    expect((await accountRows()).find((r) => r.id === 'google')?.token_status).toBe('NotRegistered');
  });

  it('the loopback redirect completes the account the attempt was started for', async () => {
    const redirect = await signIn();
    expect(redirect.pathname).toBe('/oauth2/google/callback');
    await web.get(`${redirect.pathname}${redirect.search}`);
    expect(web.lastStatus).toBe(303);
    expect(web.lastLocation).toBe(office.base);
    const page = await web.get(office.base);
    expect(field(page, 'token-status')).toBe('Active');
    expect(field(page, 'account')).toContain(BOB);
    expect((await accountRows()).find((r) => r.id === 'google')?.token_status).toBe('NotRegistered');
  });

  it('the pasted-URL step completes this account on its own screen', async () => {
    const redirect = await signIn();
    await web.post(`${office.base}/register`, { code: redirect.href });
    expect(web.lastStatus).toBe(303);
    expect(web.lastLocation).toBe(office.base);
    expect((await accountRows()).find((r) => r.id === office.id)).toMatchObject({ token_status: 'Active', mailbox: BOB });
  });
});

describe('GET /api/v1/accounts', () => {
  it('lists every account with its Token Status and the Default, and no secret', async () => {
    const { secret } = await stack.gw.postern.apiTokens.create({ name: 'accounts', scope: 'read', expiresInDays: 1, createdBy: 'admin' });
    const response = await fetch(new URL('/api/v1/accounts', stack.gw.url), { headers: { authorization: `Bearer ${secret}` } });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { accounts: Array<Record<string, unknown>> };
    expect(body.accounts.slice(0, 2)).toEqual([
      { id: 'microsoft', provider: 'microsoft', name: '', use: true, authorizationType: 'delegated', deliveryMethod: 'smtp', mailbox: ALICE, tokenStatus: 'Active', isDefault: true },
      { id: scanners.id, provider: 'microsoft', name: 'Scanners', use: true, authorizationType: 'delegated', deliveryMethod: 'smtp', mailbox: BOB, tokenStatus: 'Active', isDefault: false },
    ]);
    expect(body.accounts.map((a) => a.id)).toContain('google');
    expect(JSON.stringify(body)).not.toMatch(/token_enc|secret/i);
    expect((await fetch(new URL('/api/v1/accounts', stack.gw.url))).status).toBe(401);
  });
});

describe('Remove', () => {
  it('is refused while a device account or a network entry routes to the account, with the reasons', async () => {
    await web.get('/settings/send/accounts');
    const html = await web.post(`/settings/send/accounts/${scanners.id}/remove`);
    expect(web.lastStatus).toBe(409);
    const refused = /data-field="remove-refused">([\s\S]*?)<\/div>/.exec(html)?.[1] ?? '';
    expect(refused).toContain('Scanners was not removed');
    expect(refused).toContain(`Device accounts send through it: ${SCANNER_DEVICE.user}.`);
    expect(refused).toContain('Allowed Networks entries are routed to it: 127.0.0.7/32.');
    expect((await accountRows()).some((r) => r.id === scanners.id)).toBe(true);
  });

  it('of the Default, or of a seed account, is refused too', async () => {
    await web.post(`/settings/send/accounts/${scanners.id}/default`);
    expect(web.lastStatus).toBe(303);
    expect(await defaultAccount()).toBe(scanners.id);
    await web.get('/settings/send/accounts');
    expect(await web.post(`/settings/send/accounts/${scanners.id}/remove`)).toContain('It is the Default account.');
    await web.post('/settings/send/accounts/microsoft/default');
    expect(await defaultAccount()).toBe('microsoft');
    await web.get('/settings/send/accounts');
    expect(await web.post('/settings/send/accounts/google/remove')).toContain('turn off Use instead');
    expect(web.lastStatus).toBe(409);
  });

  it('goes through once nothing routes to the account, and forgets its E-Mail Settings', async () => {
    await web.post('/settings/send/accounts/new', { provider: 'microsoft', name: 'Short-lived' });
    const id = /(microsoft-[0-9a-f]{10})/.exec(web.lastLocation ?? '')![1]!;
    await stack.gw.postern.emailSettings.get(id);
    await web.get('/settings/send/accounts');
    await web.post(`/settings/send/accounts/${id}/remove`);
    expect(web.lastStatus).toBe(303);
    expect((await accountRows()).some((r) => r.id === id)).toBe(false);
    expect(await stack.gw.postern.store.db.selectFrom('email_settings').select('id').where('id', '=', id).execute()).toEqual([]);
    expect((await stack.gw.postern.audit.recent(20)).some((e) => e.action === 'sending-account.removed' && e.detail?.includes(id))).toBe(true);
  });
});

describe('the account page', () => {
  it('renames the account; a name that is not one is refused with 400 and changes nothing', async () => {
    await web.get(scanners.base);
    await web.post(`/settings/send/accounts/${scanners.id}/name`, { name: '  Scanners, 2nd floor  ' });
    expect(web.lastStatus).toBe(303);
    expect(field(await web.get(scanners.base), 'account-name')).toBe('Scanners, 2nd floor');
    for (const name of ['', '   ', 'x'.repeat(65), 'bell\x07', 'two\nlines', 'rtl\u202eoverride', 'nul\u0000']) {
      await web.post(`/settings/send/accounts/${scanners.id}/name`, { name });
      expect(web.lastStatus, JSON.stringify(name)).toBe(400);
    }
    await web.post(`/settings/send/accounts/${scanners.id}/name`, { name: 'x'.repeat(5000) });
    expect(web.lastStatus).toBe(400);
    expect((await accountRows()).find((r) => r.id === scanners.id)?.name).toBe('Scanners, 2nd floor');
  });

  it('Delivery Method: Microsoft Graph forgets the access token, never the refresh token; back to SMTP', async () => {
    const before = (await accountRows()).find((r) => r.id === scanners.id)!;
    expect(before.access_token_enc).not.toBeNull();
    await web.get(scanners.base);
    await web.post(`/settings/send/accounts/${scanners.id}/delivery`, { deliveryMethod: 'graph', graphLargeMessages: 'on' });
    expect(web.lastStatus).toBe(303);
    const after = (await accountRows()).find((r) => r.id === scanners.id)!;
    expect(after).toMatchObject({ delivery_method: 'graph', graph_large_messages: 1, access_token_enc: null, access_token_expires_at: null, token_status: 'Active' });
    expect(after.refresh_token_enc).toBe(before.refresh_token_enc);
    expect(field(await web.get(scanners.base), 'delivery-method')).toContain('Microsoft Graph');
    await web.post(`/settings/send/accounts/${scanners.id}/delivery`, { deliveryMethod: 'pigeon' });
    expect(web.lastStatus).toBe(400);
    await web.post(`/settings/send/accounts/${scanners.id}/delivery`, { deliveryMethod: 'smtp' });
    expect((await accountRows()).find((r) => r.id === scanners.id)).toMatchObject({ delivery_method: 'smtp', graph_large_messages: 0 });
    expect((await stack.gw.postern.audit.recent(20)).filter((e) => e.action === 'oauth.delivery-method.changed')).toHaveLength(2);
    // Google accounts have no Delivery Method.
    await web.post('/settings/send/accounts/google/delivery', { deliveryMethod: 'graph' });
    expect(web.lastStatus).toBe(404);
  });

  it('the seed\'s screen keeps its address, and an address naming no account is Not Found', async () => {
    expect(await web.get('/settings/send/oauth-microsoft')).toContain('<h1>OAuth 2.0 (Microsoft) Settings</h1>');
    expect(web.lastStatus).toBe(200);
    await web.get(`/settings/send/accounts/${scanners.id}`);
    expect(web.lastLocation).toBe(scanners.base);
    for (const path of [
      `/settings/send/oauth-microsoft/${UNKNOWN}`,
      `/settings/send/oauth-microsoft/${UNKNOWN}/status`,
      `/settings/send/oauth-google/${scanners.id}`,
      '/settings/send/oauth-microsoft/google',
      '/settings/send/oauth-microsoft/..%2F..%2Fsettings',
      `/settings/send/accounts/${UNKNOWN}/email`,
      '/settings/send/accounts/microsoft-%00%0d%0a/email',
    ]) {
      await web.get(path);
      expect([400, 404], path).toContain(web.lastStatus);
    }
  });
});

describe('hostile input', () => {
  it('an account id that does not exist is refused (400) by every select, and nothing is saved', async () => {
    const devicesBefore = await stack.gw.postern.devices.list();
    await web.get('/settings/send/relay/devices/new');
    const add = await web.post('/settings/send/relay/devices', { username: 'ghost-device', password: 'ghost-password-1', allowedSenders: '', sendingAccountId: UNKNOWN });
    expect(web.lastStatus).toBe(400);
    expect(add).toContain('There is no such sending account');
    expect(await stack.gw.postern.devices.exists('ghost-device')).toBe(false);

    const edit = await deviceEditPath(SEED_DEVICE.user);
    await web.get(edit);
    await web.post(edit, { allowedSenders: 'changed@printers.local', sendingAccountId: UNKNOWN });
    expect(web.lastStatus).toBe(400);
    expect(await stack.gw.postern.devices.list()).toEqual(devicesBefore);

    await web.get('/settings/send/relay');
    await web.post('/settings/send/relay', { allowedNetworks: '127.0.0.7/32\n10.9.0.0/16', maxMessageSizeMb: '25', bareNewlines: 'normalize', networkEntry: '127.0.0.7/32', networkAccount: UNKNOWN });
    expect(web.lastStatus).toBe(400);
    expect((await stack.gw.postern.relaySettings.get()).allowedNetworks).toEqual(['127.0.0.7/32']);

    await web.get('/settings/send/sender-routing');
    await web.post('/settings/send/sender-routing', { pattern: '@ghost.example', accountId: UNKNOWN });
    expect(web.lastStatus).toBe(400);
    await web.post('/settings/send/sender-routing', { pattern: '@ghost.example', accountId: '' });
    expect(web.lastStatus).toBe(400);
    for (const pattern of ['', 'not an address', '@', 'a@b@c', `@${'x'.repeat(300)}.example`, 'evil\r\n@x.example']) {
      await web.post('/settings/send/sender-routing', { pattern, accountId: 'microsoft' });
      expect(web.lastStatus, JSON.stringify(pattern)).toBe(400);
    }
    expect((await stack.gw.postern.store.db.selectFrom('sender_routes').select('pattern').execute()).map((r) => r.pattern)).toEqual(['@finance.example']);

    await web.get('/settings/send/email');
    await web.post('/settings/send/email', { accountId: UNKNOWN, smtpHost: '', smtpPort: '', tlsMode: 'starttls', senderAddress: '', allowedFromAddresses: '', messagesPerMinute: '' });
    expect(web.lastStatus).toBe(400);
    expect(await defaultAccount()).toBe('microsoft');
  });

  it('Add Sending Account refuses what is not a provider and a name, 50 at once, never with a 500, making nothing', async () => {
    const before = (await accountRows()).length;
    const csrf = csrfOf(await web.get('/settings/send/accounts/new'));
    const hostile = [
      { provider: 'yahoo', name: 'Mail' },
      { provider: '', name: 'Mail' },
      { provider: 'microsoft', name: '' },
      { provider: 'microsoft', name: 'x'.repeat(65) },
      { provider: 'google', name: 'x'.repeat(5000) },
      { provider: 'microsoft', name: 'tab\there' },
      { provider: 'google', name: 'esc\x1b[31m' },
      { provider: 'microsoft\r\nX-Evil: 1', name: 'Mail' },
    ];
    // One administrator's session, 50 forms at once (the sign-in throttle would refuse 50 sign-ins).
    const statuses = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const response = await fetch(new URL('/settings/send/accounts/new', stack.gw.url), {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: web.cookieHeader },
          body: new URLSearchParams({ _csrf: csrf, ...hostile[i % hostile.length]! }),
          redirect: 'manual',
        });
        await response.text();
        return response.status;
      }),
    );
    expect(new Set(statuses)).toEqual(new Set([400]));
    expect(stack.gw.logs()).not.toContain('unexpected error in the Remote UI');
    expect((await accountRows()).length).toBe(before);
  });

  it('50 adds at once each make one whole account, and each can be removed', async () => {
    const before = (await accountRows()).length;
    const csrf = csrfOf(await web.get('/settings/send/accounts/new'));
    const made = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const response = await fetch(new URL('/settings/send/accounts/new', stack.gw.url), {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: web.cookieHeader },
          body: new URLSearchParams({ _csrf: csrf, provider: i % 2 === 0 ? 'microsoft' : 'google', name: `Batch ${i}` }),
          redirect: 'manual',
        });
        await response.text();
        expect(response.status).toBe(303);
        return /oauth-(?:microsoft|google)\/((?:microsoft|google)-[0-9a-f]{10})\/edit$/.exec(response.headers.get('location') ?? '')![1]!;
      }),
    );
    expect(new Set(made).size).toBe(50);
    const rows = (await accountRows()).filter((r) => made.includes(r.id));
    expect(rows).toHaveLength(50);
    for (const row of rows) {
      expect(row.name).toMatch(/^Batch \d+$/);
      expect(row.provider).toBe(row.id.split('-')[0]);
      expect(row.token_status).toBe('NotRegistered');
    }
    await web.get('/settings/send/accounts');
    for (const id of made) {
      await web.post(`/settings/send/accounts/${id}/remove`);
      expect(web.lastStatus).toBe(303);
    }
    expect((await accountRows()).length).toBe(before);
  });

  it('an id in the address that is not one is refused before anything is looked up', async () => {
    await web.get('/settings/send/accounts');
    for (const id of ['microsoft-XYZ', '../microsoft', 'microsoft%0d%0a', 'x'.repeat(3000)]) {
      // A very long one is refused by the router itself (414 URI Too Long).
      await web.post(`/settings/send/accounts/${id}/remove`);
      expect([400, 404, 414], id.slice(0, 20)).toContain(web.lastStatus);
      await web.post(`/settings/send/accounts/${id}/default`);
      expect([400, 404, 414], id.slice(0, 20)).toContain(web.lastStatus);
    }
    expect(await defaultAccount()).toBe('microsoft');
  });
});
