/**
 * The seed's Microsoft steps 1–14 in a real browser (Debian's Chromium), with the verbatim labels, against
 * the stand-in Microsoft identity platform; the end user's sign-in happens in the same browser.
 */
import { mkdirSync } from 'node:fs';
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

test('seed steps 1-14: OAuth 2.0 (Microsoft) ends with Token Status Active', async () => {
  const page = await browser.context.newPage();

  // 1. Log in to Remote UI as an administrator.
  await page.goto(gw.url);
  await expect.poll(() => page.locator('h1').textContent()).toBe('Login');
  await page.getByLabel('User Name').fill('admin');
  await page.getByLabel('Password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Log In' }).click();

  // 2. On the portal page, click [Settings/Registration].
  await page.getByRole('link', { name: 'Settings/Registration' }).first().click();
  await expect.poll(() => page.locator('h1').textContent()).toBe('Settings/Registration');

  // 3. Click [Send] > [OAuth 2.0 (Microsoft) Settings].
  await page.locator('main').getByRole('link', { name: 'Send', exact: true }).click();
  await page.locator('main').getByRole('link', { name: 'OAuth 2.0 (Microsoft) Settings' }).click();
  await expect.poll(() => page.locator('h1').textContent()).toBe('OAuth 2.0 (Microsoft) Settings');

  // 4. Under [Basic Settings], click [Edit].
  await page.getByRole('button', { name: 'Edit' }).click();
  await expect.poll(() => page.locator('h1').textContent()).toBe('Edit Basic Settings');

  // 5. Select [Use OAuth 2.0 (Microsoft)].
  await page.getByLabel('Use OAuth 2.0 (Microsoft)').check();
  // 6. [Verify Server Certificate] and [Add CN to Verification Items].
  await page.getByLabel('Verify Server Certificate').check();
  await page.getByLabel('Add CN to Verification Items').check();
  // 7. [Microsoft Entra ID Authorization Server Endpoint] (and the Application (Client) ID of the app registration).
  await page.getByLabel('Microsoft Entra ID Authorization Server Endpoint').fill(ms.endpoint('organizations'));
  await page.getByLabel('Application (Client) ID').fill(ms.publicClientId);

  // 8. Click [OK]: the settings screen appears again.
  await page.getByRole('button', { name: 'OK' }).click();
  await expect.poll(() => page.locator('h1').textContent()).toBe('OAuth 2.0 (Microsoft) Settings');

  // 9–10. Wait a few seconds, click [Refresh]; Server Connection Status is Successfully Connected.
  await gw.postern.oauth.whenIdle('microsoft');
  await page.getByRole('button', { name: 'Refresh' }).click();
  await expect.poll(() => page.locator('[data-field="connection-status"]').textContent()).toBe('Successfully Connected');
  const userCode = (await page.locator('[data-field="user-code"]').textContent())!.trim();
  expect(userCode).toMatch(/^[A-Z0-9-]{6,}$/);
  await expect.poll(() => page.locator('[data-field="expires-in"]').textContent()).toMatch(/^1[45]:\d\d$/);
  expect(await page.locator('[data-field="message"]').textContent()).toContain(userCode);
  expect(await page.locator('[data-field="token-status"]').textContent()).toBe('Waiting for Authorization');

  // The countdown is live: it changes without a reload.
  const before = await page.locator('[data-field="expires-in"]').textContent();
  await expect.poll(() => page.locator('[data-field="expires-in"]').textContent(), { timeout: 5000 }).not.toBe(before);

  // 11. Open the link shown (the verification page), follow the Message, enter the User Code and sign in.
  const [verification] = await Promise.all([
    browser.context.waitForEvent('page'),
    page.locator('[data-field="verification-uri"]').click(),
  ]);
  await verification.waitForLoadState();
  await verification.locator('input[name="user_code"]').fill(userCode);
  await verification.getByRole('button', { name: 'Next' }).click();
  await verification.getByRole('button', { name: 'Continue' }).click();
  await verification.locator('input[name="login"]').fill('alice@example.test');
  await verification.locator('input[name="password"]').fill('correct horse');
  await verification.getByRole('button', { name: 'Sign in' }).click();
  await verification.getByRole('button', { name: 'Accept' }).click();
  await verification.locator('#success').waitFor();
  await verification.close();

  // 12–13. Wait, click [Refresh]; Token Status is Active. (The page also updates by itself.)
  await expect.poll(() => page.locator('[data-field="token-status"]').textContent(), { timeout: 20_000 }).toBe('Active');
  await page.getByRole('button', { name: 'Refresh' }).click();
  expect(await page.locator('[data-field="token-status"]').textContent()).toBe('Active');
  expect(await page.locator('[data-field="account"]').textContent()).toContain('alice@example.test');
  if (process.env.POSTERN_SCREENSHOTS) {
    mkdirSync(process.env.POSTERN_SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: `${process.env.POSTERN_SCREENSHOTS}/oauth-microsoft-active.png`, fullPage: true });
  }

  // 14. Log out of Remote UI.
  await page.getByRole('button', { name: 'Log Out' }).click();
  await expect.poll(() => page.locator('h1').textContent()).toBe('Login');
  await page.goto(`${gw.url}/settings/send/oauth-microsoft`);
  await expect.poll(() => page.locator('h1').textContent()).toBe('Login');
});

test('a narrow window keeps every status readable and the form usable with the keyboard', async () => {
  const page = await browser.context.newPage();
  await page.setViewportSize({ width: 360, height: 780 });
  await page.goto(`${gw.url}/login`);
  await page.keyboard.press('Tab'); // skip link
  await page.getByLabel('User Name').focus();
  await page.keyboard.type('admin');
  await page.keyboard.press('Tab');
  await page.keyboard.type(ADMIN_PASSWORD);
  await page.keyboard.press('Enter');
  await page.waitForURL((url) => url.pathname === '/');
  await page.goto(`${gw.url}/settings/send/oauth-microsoft`);
  expect(await page.locator('h1').textContent()).toBe('OAuth 2.0 (Microsoft) Settings');
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  expect(width).toBeLessThanOrEqual(360);
  expect(await page.locator('[data-field="token-status"]').isVisible()).toBe(true);
  await page.close();
});
