/**
 * A second Microsoft sending account in a real browser (Debian's Chromium): Sending Accounts → Add Sending
 * Account (Microsoft, "Scanners"), its Edit Basic Settings, a user code, bob's sign-in at the stand-in
 * Microsoft identity platform, Token Status Active; then Send → OAuth 2.0 (Microsoft) Settings opens the
 * Sending Accounts list filtered to Microsoft, as it does once a provider has more than one account.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { launchBrowser, type TestBrowser } from '../support/browser.js';
import { startMicrosoftStandin, type MicrosoftStandin } from '../support/oauth-standins.js';
import { ADMIN_PASSWORD, startTestPostern, type TestPostern } from '../support/postern.js';
import { createTestPki } from '../support/test-ca.js';

let ms: MicrosoftStandin;
let gw: TestPostern;
let browser: TestBrowser;

beforeAll(async () => {
  const pki = await createTestPki();
  ms = await startMicrosoftStandin({ pki, interval: 1 });
  gw = await startTestPostern({ caPems: [pki.ca.cert] });
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await gw?.close();
  await ms?.close();
});

test('Add Sending Account "Scanners", authorize it as bob, and find it on the Microsoft list', async () => {
  const page = await browser.context.newPage();
  await page.goto(gw.url);
  await page.getByLabel('User Name').fill('admin');
  await page.getByLabel('Password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Log In' }).click();

  // Settings/Registration > Send > Sending Accounts > Add Sending Account.
  await page.getByRole('link', { name: 'Settings/Registration' }).first().click();
  await page.locator('main').getByRole('link', { name: 'Send', exact: true }).click();
  await page.locator('main').getByRole('link', { name: 'Sending Accounts' }).click();
  await expect.poll(() => page.locator('h1').textContent()).toBe('Sending Accounts');
  await page.getByRole('link', { name: 'Add Sending Account' }).click();
  await expect.poll(() => page.locator('h1').textContent()).toBe('Add Sending Account');
  await page.getByLabel('Provider').selectOption('microsoft');
  await page.getByLabel('Name').fill('Scanners');
  await page.getByRole('button', { name: 'Add', exact: true }).click();

  // Its Edit Basic Settings, with its name under the heading.
  await expect.poll(() => page.locator('h1').textContent()).toBe('Edit Basic Settings');
  expect(await page.locator('[data-field="account-name"]').textContent()).toBe('Scanners');
  const id = /\/oauth-microsoft\/(microsoft-[0-9a-f]{10})\/edit$/.exec(new URL(page.url()).pathname)?.[1];
  expect(id).toBeDefined();
  await page.getByLabel('Use OAuth 2.0 (Microsoft)').check();
  await page.getByLabel('Verify Server Certificate').check();
  await page.getByLabel('Add CN to Verification Items').check();
  await page.getByLabel('Microsoft Entra ID Authorization Server Endpoint').fill(ms.endpoint('organizations'));
  await page.getByLabel('Application (Client) ID').fill(ms.publicClientId);
  await page.getByRole('button', { name: 'OK' }).click();
  await expect.poll(() => page.locator('h1').textContent()).toBe('OAuth 2.0 (Microsoft) Settings');
  expect(await page.locator('[data-field="account-name"]').textContent()).toBe('Scanners');

  // A user code, signed in with at the stand-in as bob.
  await gw.postern.oauth.whenIdle(id!);
  await page.getByRole('button', { name: 'Refresh' }).click();
  await expect.poll(() => page.locator('[data-field="connection-status"]').textContent()).toBe('Successfully Connected');
  const userCode = (await page.locator('[data-field="user-code"]').textContent())!.trim();
  expect(userCode).toMatch(/^[A-Z0-9-]{6,}$/);
  const [verification] = await Promise.all([browser.context.waitForEvent('page'), page.locator('[data-field="verification-uri"]').click()]);
  await verification.waitForLoadState();
  await verification.locator('input[name="user_code"]').fill(userCode);
  await verification.getByRole('button', { name: 'Next' }).click();
  await verification.getByRole('button', { name: 'Continue' }).click();
  await verification.locator('input[name="login"]').fill('bob@example.test');
  await verification.locator('input[name="password"]').fill('correct horse');
  await verification.getByRole('button', { name: 'Sign in' }).click();
  await verification.getByRole('button', { name: 'Accept' }).click();
  await verification.locator('#success').waitFor();
  await verification.close();
  await expect.poll(() => page.locator('[data-field="token-status"]').textContent(), { timeout: 20_000 }).toBe('Active');
  expect(await page.locator('[data-field="account"]').textContent()).toContain('bob@example.test');

  // Two Microsoft accounts now: Send > OAuth 2.0 (Microsoft) Settings opens the list filtered to Microsoft.
  await page.locator('nav.sidenav').getByRole('link', { name: 'Send', exact: true }).click();
  await page.locator('main').getByRole('link', { name: 'OAuth 2.0 (Microsoft) Settings' }).click();
  await expect.poll(() => page.locator('h1').textContent()).toBe('Sending Accounts');
  expect(new URL(page.url()).search).toBe('?provider=microsoft');
  const rows = page.locator('table[data-field="accounts"] tbody tr');
  await expect.poll(() => rows.count()).toBe(2);
  const scanners = page.locator(`tr[data-account="${id}"]`);
  expect(await scanners.locator('[data-field="account-link"]').textContent()).toBe('Scanners');
  expect(await scanners.locator('[data-field="account-token-status"]').textContent()).toBe('Active');
  expect(await scanners.locator('[data-field="account-mailbox"]').textContent()).toBe('bob@example.test');
  expect(await page.locator('tr[data-account="google"]').count()).toBe(0);
  // POSTERN_SCREENSHOTS=docs/images refreshes the picture the documentation shows, as the seed walks do.
  if (process.env.POSTERN_SCREENSHOTS) {
    mkdirSync(process.env.POSTERN_SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: join(process.env.POSTERN_SCREENSHOTS, 'sending-accounts.png'), fullPage: true });
  }

  // The seed's account is still at the seed's address.
  await scanners.page().locator('tr[data-account="microsoft"] [data-field="account-link"]').click();
  await expect.poll(() => new URL(page.url()).pathname).toBe('/settings/send/oauth-microsoft');
  expect(await page.locator('h1').textContent()).toBe('OAuth 2.0 (Microsoft) Settings');
  await page.close();
});
