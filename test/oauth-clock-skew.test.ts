/**
 * Clock-skew warning end to end: the Microsoft stand-in (oidc-provider over HTTPS) answers with a Date header
 * minutes off this host's clock; the connection check (OK on Edit Basic Settings) and the token refresh read
 * it, the status block and `postern status` warn, and the warning clears once the clocks agree again. Only
 * the stand-in's Date header moves, so the result does not depend on the real time.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli } from './support/cli.js';
import { startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { LOG } from './support/events.js';
import { field, startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { approveDeviceCode } from './support/user-agent.js';

const BASE = '/settings/send/oauth-microsoft';
const MINUTE = 60_000;

let pki: TestPki;
let ms: MicrosoftStandin;
let gw: TestPostern;
let web: WebClient;
let host: string;

const warning = (size: string) =>
  `This computer's clock is ${size} the authorization server's (${host}). Set the time automatically (NTP): tokens may be refused or expire unexpectedly.`;

/** OK on Edit Basic Settings (Use on), then wait for the connection check to finish. */
async function pressOk() {
  await web.get(`${BASE}/edit`);
  await web.post(`${BASE}/edit`, {
    enabled: 'on',
    verifyServerCertificate: 'on',
    addCnToVerificationItems: 'on',
    endpoint: ms.endpoint('organizations'),
    clientId: ms.publicClientId,
  });
  expect(web.lastStatus).toBe(303);
  await gw.postern.oauth.whenIdle('microsoft');
}

const statusHtml = () => web.get(`${BASE}/status`);
const clockWarnings = () =>
  gw
    .logs()
    .split('\n')
    .filter((line) => line.includes("This computer's clock is"))
    .map((line) => JSON.parse(line) as { level: number; msg: string });

beforeAll(async () => {
  pki = await createTestPki();
  ms = await startMicrosoftStandin({ pki, interval: 1 });
  host = new URL(ms.origin).host;
  gw = await startTestPostern({ caPems: [pki.ca.cert] });
  web = new WebClient(gw.url);
  await web.login();
});

afterAll(async () => {
  await gw?.close();
  await ms?.close();
});

describe('clock-skew warning', () => {
  test('the connection check warns beside the status values, and the warning clears when the clocks agree', async () => {
    ms.setClockOffset(7 * MINUTE);
    await pressOk();
    let html = await statusHtml();
    expect(field(html, 'clock-skew')).toBe(warning('7 minutes behind'));
    // The verbatim status values stay as they are.
    expect(field(html, 'connection-status')).toBe('Successfully Connected');
    expect(field(html, 'token-status')).toBe('Waiting for Authorization');
    // The whole page (not only the live fragment) shows it.
    expect(field(await web.page(BASE), 'clock-skew')).toBe(warning('7 minutes behind'));
    expect(clockWarnings()).toEqual([expect.objectContaining({ level: 40, msg: warning('7 minutes behind') })]);

    // A second check that finds the same skew does not log it again.
    await pressOk();
    expect(clockWarnings()).toHaveLength(1);

    ms.setClockOffset(0);
    await pressOk();
    html = await statusHtml();
    expect(field(html, 'clock-skew')).toBeUndefined();
    expect(html).not.toContain("This computer's clock");
    expect(field(html, 'connection-status')).toBe('Successfully Connected');
    expect(gw.logs()).toContain(`This computer's clock agrees with the authorization server's (${host}) again.`);

    ms.setClockOffset(-10 * MINUTE);
    await pressOk();
    expect(field(await statusHtml(), 'clock-skew')).toBe(warning('10 minutes ahead of'));
    ms.setClockOffset(0);
    await pressOk();
    expect(field(await statusHtml(), 'clock-skew')).toBeUndefined();
  });

  test('token responses are read too, and `postern status` prints the warning', async () => {
    // Authorize with the clocks in agreement.
    // The last OK (pressOk waits for its background work) requested the user code shown.
    const userCode = field(await statusHtml(), 'user-code')?.match(/^[A-Z0-9-]{6,}$/)?.[0];
    if (!userCode) throw new Error('no user code on the status page');
    const mark = gw.log.mark();
    await approveDeviceCode({ verificationUri: ms.verificationUri, userCode, email: 'alice@example.test', password: 'correct horse', ca: pki.ca.cert });
    await gw.log.waitFor(LOG.authorized, { from: mark });
    expect(field(await statusHtml(), 'token-status')).toBe('Active');

    ms.setClockOffset(9 * MINUTE);
    await gw.postern.tokens.refresh('microsoft');
    let html = await statusHtml();
    expect(field(html, 'token-status')).toBe('Active');
    expect(field(html, 'clock-skew')).toBe(warning('9 minutes behind'));

    const cli = await runCli(['status'], { POSTERN_DATA_DIR: gw.dataDir });
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain(`OAuth 2.0 (Microsoft): in use\n`);
    expect(cli.stdout).toContain(`  Warning: ${warning('9 minutes behind')}\n`);

    ms.setClockOffset(0);
    await gw.postern.tokens.refresh('microsoft');
    html = await statusHtml();
    expect(field(html, 'clock-skew')).toBeUndefined();
    expect((await runCli(['status'], { POSTERN_DATA_DIR: gw.dataDir })).stdout).not.toContain('Warning:');
  });
});
