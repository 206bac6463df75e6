/**
 * The Remote UI in two languages, and the screens that must never lose typed or authorized work, through the
 * Remote UI's own forms (no browser): the language from Accept-Language and the switch, Relay Settings'
 * device account on a page of its own, the confirmation before a change of client discards an Active
 * authorization, Delete Token without a token, the portal as a status page, the Audit Log's paging, filter
 * and CSV export (CSV injection), the relay certificate as PEM and DER, the favicon, and the services' advice
 * and results (a deferred message, Send Test E-Mail, Server Connection Status) in Russian.
 */
import { X509Certificate } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { LOG } from './support/events.js';
import { startGoogleStandin, startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { field, startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { waitForState } from './support/queue.js';
import { authorizeGoogle, pythonSend, RawSmtp, saveEmailSettings, saveGoogleSettings, saveRelaySettings, startSendingStack, type SendingStack } from './support/sending.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { approveDeviceCode } from './support/user-agent.js';
import { csvCell } from '../src/web/audit-view.js';

const MS = '/settings/send/oauth-microsoft';

let pki: TestPki;
let ms: MicrosoftStandin;
let gw: TestPostern;
let web: WebClient;

beforeAll(async () => {
  pki = await createTestPki();
  ms = await startMicrosoftStandin({ pki, interval: 1 });
  gw = await startTestPostern({ caPems: [pki.ca.cert] });
  web = new WebClient(gw.url);
  await web.login();
});

afterAll(async () => {
  await gw?.close();
  await ms?.close();
});

async function fetchWith(path: string, headers: Record<string, string>): Promise<Response> {
  return fetch(new URL(path, gw.url), { headers: { cookie: web.cookieHeader, ...headers }, redirect: 'manual' });
}

/** The forms of a page that post (their actions), apart from Log Out. */
function postForms(html: string): string[] {
  return [...html.matchAll(/<form method="post" action="([^"]+)"/g)].map((m) => m[1]!).filter((action) => action !== '/logout');
}

describe('the language', () => {
  test('Accept-Language chooses Russian: <html lang>, the seed\'s terms, the bracketed labels kept', async () => {
    const response = await fetchWith('/', { 'accept-language': 'ru-RU,ru;q=0.9,en;q=0.8' });
    const html = await response.text();
    expect(html).toContain('<html lang="ru">');
    expect(html).toContain('Remote UI (Удаленный ИП)');
    expect(html).toContain('>Settings/Registration</a>');
    expect(html).toContain('Выход');
    const english = await (await fetchWith('/', { 'accept-language': 'de, en;q=0.5' })).text();
    expect(english).toContain('<html lang="en">');
    expect(english).toContain('Log Out');
  });

  test('the switch remembers the choice in a cookie and returns to the same page; next stays on this site', async () => {
    const client = new WebClient(gw.url);
    await client.login();
    await client.get('/language?lang=ru&next=%2Fsettings%2Fsend%2Frelay');
    expect(client.lastStatus).toBe(303);
    expect(client.lastLocation).toBe('/settings/send/relay');
    expect(client.cookieHeader).toMatch(/(^|; )lang=ru/);
    const html = await client.get('/settings/send/relay');
    expect(html).toContain('<html lang="ru">');
    expect(html).toContain('Учетные записи устройств');
    // Every page offers the switch back, to this same page.
    expect(html).toContain('href="/language?lang=en&amp;next=%2Fsettings%2Fsend%2Frelay"');
    for (const next of ['//evil.example/', 'https://evil.example/', '/\\evil.example', '/%0d%0aSet-Cookie:x']) {
      await client.get(`/language?lang=en&next=${encodeURIComponent(next)}`);
      expect(client.lastStatus).toBe(303);
      expect(client.lastLocation!.startsWith('/') && !client.lastLocation!.startsWith('//')).toBe(true);
      expect(client.lastLocation).not.toContain('evil.example');
    }
    // A language Postern does not have changes nothing.
    await client.get('/language?lang=xx&next=/');
    expect(client.cookieHeader).toMatch(/(^|; )lang=en/);
  });

  test('messages made by code are translated too: the login error, the form errors, the flash', async () => {
    const client = new WebClient(gw.url);
    await client.get('/language?lang=ru&next=/login');
    await client.get('/login');
    const refused = await client.post('/login', { username: 'admin', password: 'wrong', next: '/' });
    expect(refused).toContain('Неверное имя пользователя или пароль.');
    await client.login();
    const added = await client.post('/settings/send/relay/devices', { username: 'ru-device', password: 'ru-device-password' });
    expect(client.lastStatus).toBe(303);
    expect(added).toBe('');
    expect(await client.page(client.lastLocation!)).toContain('Учетная запись устройства ru-device добавлена.');
    // A field's validation sentence, written by the service in English, reads in Russian with its values.
    const refusedSize = await client.post('/settings/send/relay', { allowedNetworks: '10.0.0.1/8', maxMessageSizeMb: '0', bareNewlines: 'normalize' });
    expect(client.lastStatus).toBe(400);
    expect(field(refusedSize, 'x') ?? refusedSize).toMatch(/Введите размер от 1 до \d+ МБ\./);
    expect(refusedSize).toContain('10.0.0.1/8: сетевой адрес для /8 — 10.0.0.0 (напишите 10.0.0.0/8)');
    const refusedDevice = await client.post('/settings/send/relay/devices', { username: 'bad name!', password: 'short' });
    expect(refusedDevice).toContain('Пароль должен содержать не менее 8 символов.');
  });

  test('dates and numbers follow the language', async () => {
    await gw.postern.audit.record('admin', 'relay-settings.saved', 'dates test');
    const ru = await (await fetchWith('/settings/audit?q=dates+test', { cookie: `${web.cookieHeader}; lang=ru` })).text();
    const en = await (await fetchWith('/settings/audit?q=dates+test', { cookie: `${web.cookieHeader}; lang=en` })).text();
    const year = String(new Date().getUTCFullYear());
    const month = new Intl.DateTimeFormat('ru-RU', { month: 'short', timeZone: 'UTC' }).format(new Date());
    expect(ru).toContain('Сохранены Relay Settings');
    expect(ru).toMatch(new RegExp(`${month}[^<]*${year}`));
    expect(en).toContain('Relay Settings saved');
    expect(en).toMatch(new RegExp(`${new Intl.DateTimeFormat('en-GB', { month: 'short', timeZone: 'UTC' }).format(new Date())} ${year}`));
  });
});

describe('Relay Settings cannot lose a typed device account', () => {
  test('the device account is typed on a page whose only posting form is its own; Relay Settings has none of its fields', async () => {
    const settings = await web.get('/settings/send/relay');
    expect(settings).not.toContain('name="username"');
    expect(settings).not.toContain('name="password"');
    expect(settings).toContain('href="/settings/send/relay/devices/new"');
    const add = await web.get('/settings/send/relay/devices/new');
    expect(web.lastStatus).toBe(200);
    expect(postForms(add)).toEqual(['/settings/send/relay/devices']);
    const certificate = await web.get('/settings/send/relay/certificate');
    expect(certificate).not.toContain('name="username"');
  });

  test('a refused device account comes back with what was typed (not the password)', async () => {
    await web.get('/settings/send/relay/devices/new');
    const html = await web.post('/settings/send/relay/devices', { username: 'kept-name', password: 'short', allowedSenders: 'scanner@example.test\n@kept.example' });
    expect(web.lastStatus).toBe(400);
    expect(html).toContain('value="kept-name"');
    expect(html).toContain('scanner@example.test\n@kept.example</textarea>');
    expect(html).not.toContain('value="short"');
    expect(postForms(html)).toEqual(['/settings/send/relay/devices']);
  });

  test('Cancel on the device page adds nothing and goes back to Relay Settings', async () => {
    await web.get('/settings/send/relay/devices/new');
    await web.post('/settings/send/relay/devices', { username: 'cancelled-device', password: 'cancelled-password', cancel: '1' });
    expect(web.lastStatus).toBe(303);
    expect(web.lastLocation).toBe('/settings/send/relay#device-accounts-heading');
    expect(await gw.postern.devices.exists('cancelled-device')).toBe(false);
  });
});

describe('the relay certificate for devices', () => {
  test('downloads as PEM and as DER, both the certificate the page shows', async () => {
    const page = await web.get('/settings/send/relay');
    const fingerprint = field(page, 'certificate-fingerprint');
    const pem = await fetchWith('/settings/send/relay/certificate.pem', {});
    expect(pem.status).toBe(200);
    expect(pem.headers.get('content-type')).toMatch(/^application\/x-pem-file/);
    expect(pem.headers.get('content-disposition')).toMatch(/attachment; filename="postern-relay\.pem"/);
    const fromPem = new X509Certificate(await pem.text());
    const der = await fetchWith('/settings/send/relay/certificate.der', {});
    expect(der.headers.get('content-type')).toMatch(/^application\/pkix-cert/);
    const fromDer = new X509Certificate(Buffer.from(await der.arrayBuffer()));
    expect(fromPem.fingerprint256).toBe(fingerprint);
    expect(fromDer.fingerprint256).toBe(fingerprint);
    // Not for visitors who are not signed in.
    const anonymous = await fetch(new URL('/settings/send/relay/certificate.der', gw.url), { redirect: 'manual' });
    expect(anonymous.status).toBe(303);
  });
});

describe('the favicon', () => {
  test('is an SVG served with its type, linked from every page', async () => {
    const icon = await fetch(new URL('/static/favicon.svg', gw.url));
    expect(icon.status).toBe(200);
    expect(icon.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    expect(await icon.text()).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    expect(await (await fetch(new URL('/login', gw.url))).text()).toContain('<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">');
  });
});

describe('the Audit Log', () => {
  test('human action names, paging, a filter, and CSV that a spreadsheet cannot run', async () => {
    for (let i = 0; i < 60; i++) await gw.postern.audit.record('admin', 'relay-device.added', `paging-device-${i}`);
    await gw.postern.audit.record('=HYPERLINK("http://evil.example")', 'login.failed', '+cmd|calc');
    let html = await web.get('/settings/audit');
    expect(html).toContain('>Device account added<');
    expect(html).toContain('title="relay-device.added"');
    expect(html).toMatch(/data-field="audit-next"/);
    const next = /href="([^"]+)" rel="next"/.exec(html)![1]!.replace(/&amp;/g, '&');
    html = await web.get(next);
    expect(web.lastStatus).toBe(200);
    expect(html).toMatch(/data-field="audit-prev"/);
    html = await web.get('/settings/audit?q=paging-device-42');
    expect(html).toContain('paging-device-42');
    expect(html).not.toContain('paging-device-41');
    expect(field(html, 'audit-count')).toBe('Entries: 1, page 1 of 1');
    // The filter matches the words shown too.
    expect(await web.get('/settings/audit?q=login+failed')).toContain('+cmd|calc');

    const csv = await fetchWith('/settings/audit?format=csv&q=evil', {});
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    expect(csv.headers.get('content-disposition')).toMatch(/attachment/);
    const text = (await csv.text()).replace(/^\ufeff/, '');
    const lines = text.trimEnd().split('\r\n');
    expect(lines[0]).toBe('Time,User,Action,Code,Detail');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^\d{4}-\d\d-\d\dT[^,]+Z,"'=HYPERLINK\(""http:\/\/evil\.example""\)",Login failed,login\.failed,'\+cmd\|calc$/);
  });

  test('every cell starting with = + - @ (or a tab or CR) is neutralised, and quoting follows RFC 4180', () => {
    expect(csvCell('=1+1')).toBe("'=1+1");
    expect(csvCell('+1')).toBe("'+1");
    expect(csvCell('-1')).toBe("'-1");
    expect(csvCell('@SUM(A1)')).toBe("'@SUM(A1)");
    expect(csvCell('\tx')).toBe("'\tx");
    expect(csvCell('a,b')).toBe('"a,b"');
    expect(csvCell('say "hi"')).toBe('"say ""hi"""');
    expect(csvCell('plain')).toBe('plain');
  });
});

describe('OAuth 2.0 (Microsoft): nothing authorized is discarded without asking', () => {
  const form = (clientId: string) => ({
    enabled: 'on',
    verifyServerCertificate: 'on',
    addCnToVerificationItems: 'on',
    endpoint: ms.endpoint('organizations'),
    clientId,
  });

  test('Delete Token is disabled while there is no token', async () => {
    const html = await web.get(MS);
    expect(field(html, 'token-status')).toBe('Not Registered');
    expect(html).toMatch(/<button type="submit" class="danger" data-field="delete-token" disabled aria-describedby="delete-token-why">Delete Token<\/button>/);
  });

  test('a changed Application (Client) ID asks first, says what it will do; Cancel keeps the typed values and the token', async () => {
    await web.get(`${MS}/edit`);
    await web.post(`${MS}/edit`, form(ms.publicClientId));
    await gw.postern.oauth.whenIdle('microsoft');
    // Successfully Connected reads as a success, even though the endpoint's root answers 404.
    const status = await web.get(`${MS}/status`);
    expect(field(status, 'connection-status')).toBe('Successfully Connected');
    expect(field(status, 'connection-detail')).toMatch(/^Connected to 127\.0\.0\.1:\d+ over TLS: the server answered \(HTTP \d{3} is expected for this address\)\.$|^Connected to 127\.0\.0\.1:\d+ over TLS; the server answered\.$/);
    const userCode = field(status, 'user-code')!;
    const mark = gw.log.mark();
    await approveDeviceCode({ verificationUri: ms.verificationUri, userCode, email: 'alice@example.test', password: 'correct horse', ca: pki.ca.cert });
    await gw.log.waitFor(LOG.authorized, { from: mark });
    let page = await web.get(MS);
    expect(field(page, 'token-status')).toBe('Active');
    expect(page).toMatch(/data-field="delete-token">Delete Token<\/button>/);

    const other = '11111111-2222-3333-4444-555555555555';
    await web.get(`${MS}/edit`);
    const confirm = await web.post(`${MS}/edit`, form(other));
    expect(web.lastStatus).toBe(200);
    expect(confirm).toContain('<h1>Discard the Authorization?</h1>');
    expect(field(confirm, 'confirm-discard')).toContain('deletes the token of alice@example.test');
    expect(confirm).toContain(`${ms.publicClientId} → ${other}`);
    expect(field(await web.get(`${MS}/status`), 'token-status')).toBe('Active');

    // Cancel: back to Edit Basic Settings with what was typed; nothing saved.
    const back = await web.post(`${MS}/edit`, { ...form(other), back: '1' });
    expect(back).toContain('<h1>Edit Basic Settings</h1>');
    expect(back).toContain(`value="${other}"`);
    expect(field(await web.get(`${MS}/status`), 'token-status')).toBe('Active');
    expect((await gw.postern.oauth.status('microsoft')).settings.clientId).toBe(ms.publicClientId);

    // Saving the same client again asks nothing and keeps the token.
    await web.post(`${MS}/edit`, form(ms.publicClientId));
    expect(web.lastStatus).toBe(303);
    await gw.postern.oauth.whenIdle('microsoft');
    expect(field(await web.get(`${MS}/status`), 'token-status')).toBe('Active');

    // Confirmed: saved, and the token is gone, as the page said.
    await web.get(`${MS}/edit`);
    await web.post(`${MS}/edit`, { ...form(other), confirmDiscard: '1' });
    expect(web.lastStatus).toBe(303);
    await gw.postern.oauth.whenIdle('microsoft');
    page = await web.get(MS);
    expect(field(page, 'token-status')).not.toBe('Active');
    expect((await gw.postern.oauth.status('microsoft')).settings.clientId).toBe(other);
  });
});

describe('the portal is a status page', () => {
  test('each account\'s Token Status, the queue\'s counts in the Queue\'s words, the version', async () => {
    const html = await web.get('/');
    expect(html).toMatch(/data-account="microsoft"[\s\S]*data-field="portal-token-status"/);
    for (const state of ['incoming', 'active', 'deferred', 'held']) expect(field(html, `portal-count-${state}`)).toMatch(/^\d+$/);
    expect(html).toContain('<span class="status">Held</span>');
    expect(field(html, 'version')).toMatch(/^Postern version \d+\.\d+\.\d+/);
    const queue = await web.get('/settings/queue');
    expect(queue).toMatch(/Held: <strong data-field="queue-count-held">/);
  });
});

describe('the Log', () => {
  test('event names in words, a filter, paging links that keep it, and CSV that a spreadsheet cannot run', async () => {
    await gw.postern.relaySettings.save({ ...(await gw.postern.relaySettings.get()), allowedNetworks: ['127.0.0.1/32'] });
    for (const subject of ['log filter one', '=HYPERLINK("http://evil.example")']) {
      const sent = await pythonSend({ port: gw.postern.smtpPort, starttls: true, from: 'scanner@printers.local', to: ['bob@example.test'], message: `Subject: ${subject}\r\n\r\nhi\r\n` });
      expect(sent.ok).toBe(true);
    }
    let html = await web.get('/settings/log?q=log+filter+one');
    expect(html).toContain('>log filter one</a>');
    expect(html).not.toContain('HYPERLINK');
    expect(html).toMatch(/data-field="event">Accepted</);
    expect(html).toContain('href="/settings/log?q=log+filter+one&amp;format=csv"');
    // The same filter in Russian words.
    html = await (await fetchWith('/settings/log?q=%D0%9F%D1%80%D0%B8%D0%BD%D1%8F%D1%82%D0%BE', { cookie: `${web.cookieHeader}; lang=ru` })).text();
    expect(html).toMatch(/data-field="event">Принято</);

    const csv = await fetchWith('/settings/log?format=csv&q=evil', {});
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    const lines = (await csv.text()).replace(/^\ufeff/, '').trimEnd().split('\r\n');
    expect(lines[0]).toBe('Time (UTC),Event,Subject,From / To,Recipients,Reply,Advice,ID');
    expect(lines.length).toBeGreaterThan(1);
    for (const line of lines.slice(1)) expect(line).toMatch(/^[^,]+,[^,]+,"'=HYPERLINK\(""http:\/\/evil\.example""\)",scanner@printers\.local,/);
  });
});

describe('OAuth 2.0 (Google): nothing authorized is discarded without asking', () => {
  test('saving the same client and secret again asks nothing; a new secret asks first, and Cancel keeps the token', async () => {
    const google = await startGoogleStandin({ pki });
    try {
      await authorizeGoogle(web, google, pki, 'bob@example.test');
      // The same values again (the secret typed again too): nothing to discard, nothing asked.
      await saveGoogleSettings(web, google);
      expect(web.lastStatus).toBe(303);
      await gw.postern.oauth.whenIdle('google');
      expect((await gw.postern.oauth.status('google')).token.status).toBe('Active');

      const confirm = await saveGoogleSettings(web, google, { clientSecret: 'another-secret' });
      expect(web.lastStatus).toBe(200);
      expect(confirm).toContain('<h1>Discard the Authorization?</h1>');
      expect(field(confirm, 'confirm-discard')).toContain('deletes the token of bob@example.test');
      expect(confirm).toContain('Client Secret: a new secret was entered');
      const back = await web.post('/settings/send/oauth-google/edit', { enabled: 'on', clientId: google.clientId, clientSecret: 'another-secret', authorizationEndpoint: google.authorizationEndpoint, tokenEndpoint: google.tokenEndpoint, back: '1' });
      expect(back).toContain('<h1>Edit Basic Settings</h1>');
      expect(back).toContain(`value="${google.clientId}"`);
      expect((await gw.postern.oauth.status('google')).token.status).toBe('Active');
    } finally {
      await google.close();
    }
  });
});

describe('the services\' advice and results in Russian', () => {
  let stack: SendingStack;

  beforeAll(async () => {
    // A failed attempt is tried again only after an hour: the deferred message waits on the Queue page.
    stack = await startSendingStack({ config: { queue: { retryBaseMs: 3_600_000, retryMaxMs: 3_600_000, lifetimeMs: 86_400_000, concurrency: 2 } } });
    await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.1' });
    await stack.web.get('/language?lang=ru&next=/');
  });

  afterAll(async () => {
    await stack?.close();
  });

  async function submit(subject: string): Promise<string> {
    const smtp = await RawSmtp.open(stack.relayPort);
    await smtp.command('EHLO device.test');
    expect(await smtp.command('MAIL FROM:<scanner@printers.local>')).toMatch(/^250 /);
    expect(await smtp.command('RCPT TO:<bob@example.test>')).toMatch(/^250 /);
    expect(await smtp.command('DATA')).toMatch(/^354 /);
    smtp.write(`From: scanner@printers.local\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nbody\r\n.\r\n`);
    const reply = await smtp.reply();
    smtp.close();
    return /queued as ([0-9a-f-]{36})/.exec(reply)![1]!;
  }

  test('a deferred message\'s advice on the Queue and Log pages, while the JSON-facing row stays English', async () => {
    // Nothing listens on port 1: the upstream connection is refused.
    await saveEmailSettings(stack.web, { smtpPort: '1' });
    const id = await submit('advice in russian');
    const deferred = await waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, id, 'deferred');
    expect(deferred.lastAdvice).toBe('127.0.0.1 refused the connection. Check the URL and port, and any firewall or proxy. Postern retries automatically.');
    const queue = await stack.web.get('/settings/queue');
    expect(queue).toContain('<html lang="ru">');
    expect(field(queue, 'last-advice')).toBe('127.0.0.1 отклонил соединение. Проверьте URL и порт, а также брандмауэр и прокси-сервер. Postern повторяет попытки автоматически.');
    const log = await stack.web.get(`/settings/log?id=${id}`);
    expect(log).toContain('127.0.0.1 отклонил соединение.');
    expect(log).not.toContain('refused the connection');
    // The same page in English shows the service's own sentence.
    await stack.web.get('/language?lang=en&next=/');
    expect(field(await stack.web.get('/settings/queue'), 'last-advice')).toBe(deferred.lastAdvice);
    await stack.web.get('/language?lang=ru&next=/');
  });

  test('Send Test E-Mail: a refused message and an unreachable server in Russian, the server\'s reply verbatim', async () => {
    await saveEmailSettings(stack.web, { smtpPort: String(stack.upstream.port) });
    stack.upstream.failNext({ phase: 'data', code: 554, message: '5.2.252 SendAsDenied; alice@example.test not allowed to send as x@example.test' });
    await stack.web.get('/settings/send/email');
    let html = await stack.web.post('/settings/send/email/test', { testTo: 'bob@example.test' });
    expect(field(html, 'test-result')).toBe(`Не отправлено: 127.0.0.1:${stack.upstream.port} отклонил сообщение.`);
    expect(field(html, 'test-advice')).toMatch(/^Почтовому ящику не разрешено отправлять от имени этого адреса отправителя: укажите в E-Mail Settings/);
    expect(field(html, 'test-reply')).toMatch(/^554 5\.2\.252 SendAsDenied/);

    await saveEmailSettings(stack.web, { smtpPort: '1' });
    html = await stack.web.post('/settings/send/email/test', { testTo: 'bob@example.test' });
    expect(field(html, 'test-result')).toBe('Не отправлено: 127.0.0.1:1 недоступен, или сеанс завершился ошибкой.');
    expect(field(html, 'test-advice')).toBe('127.0.0.1 отклонил соединение. Проверьте URL и порт, а также брандмауэр и прокси-сервер.');
  });

  test('Server Connection Status: a refused connection\'s reason in Russian', async () => {
    // Last in this group: the changed endpoint discards the authorization the tests above send with.
    // A port that was free a moment ago: nothing listens there (fetch itself refuses port 1).
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await stack.web.get(`${MS}/edit`);
    const form = { enabled: 'on', verifyServerCertificate: 'on', addCnToVerificationItems: 'on', endpoint: `https://127.0.0.1:${port}/organizations/oauth2/v2.0`, clientId: stack.microsoft.publicClientId };
    await stack.web.post(`${MS}/edit`, { ...form, confirmDiscard: '1' });
    expect(stack.web.lastStatus).toBe(303);
    await stack.gw.postern.oauth.whenIdle('microsoft');
    const status = await stack.web.get(`${MS}/status`);
    expect(field(status, 'connection-status')).toBe('Connection Failed');
    expect(field(status, 'connection-detail')).toBe(`127.0.0.1:${port} отклонил соединение. Проверьте URL и порт, а также брандмауэр и прокси-сервер.`);
    expect((await stack.gw.postern.oauth.status('microsoft')).connection.detail).toBe(`127.0.0.1:${port} refused the connection. Check the URL and port, and any firewall or proxy.`);
  });
});
