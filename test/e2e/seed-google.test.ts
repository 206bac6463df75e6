/**
 * The seed's Google steps 1–14 in a real browser (Debian's Chromium), twice: once pasting the whole URL of
 * the browser's error page, once only the code. The administrator's browser is treated as running on
 * another computer, where the loopback redirect cannot reach Postern: the redirect is answered with an
 * error page, as a browser would show, and its address is what the administrator copies.
 */
import { mkdirSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { launchBrowser, type TestBrowser } from '../support/browser.js';
import { startGoogleStandin, type GoogleStandin } from '../support/oauth-standins.js';
import { ADMIN_PASSWORD, startTestPostern, type TestPostern } from '../support/postern.js';
import { createTestPki } from '../support/test-ca.js';

let google: GoogleStandin;
let gw: TestPostern;

beforeAll(async () => {
  const pki = await createTestPki();
  google = await startGoogleStandin({ pki });
  gw = await startTestPostern({ caPems: [pki.ca.cert] });
});

/** A fresh browser, as on the administrator's computer, where the loopback redirect cannot reach Postern. */
async function adminBrowser(): Promise<TestBrowser> {
  const browser = await launchBrowser();
  // Playwright does not route requests that follow an HTTP redirect, so the stand-in's redirects are turned
  // into fresh navigations (a meta refresh) that are routed again.
  await browser.context.route(`${google.origin}/**`, async (route) => {
    if (route.request().resourceType() !== 'document') return route.continue();
    const response = await route.fetch({ maxRedirects: 0 });
    const location = response.headers()['location'];
    if (response.status() >= 300 && response.status() < 400 && location) {
      const target = new URL(location, route.request().url()).href.replace(/&/g, '&amp;').replace(/"/g, '&quot;');
      return route.fulfill({ status: 200, contentType: 'text/html', body: `<meta http-equiv="refresh" content="0;url=${target}">` });
    }
    return route.fulfill({ response });
  });
  // The loopback redirect does not reach Postern from "another computer": the browser shows an error page.
  await browser.context.route('**/oauth2/google/callback**', (route) =>
    route.fulfill({ status: 502, contentType: 'text/html; charset=utf-8', body: "<title>This site can't be reached</title><h1>This site can't be reached</h1><p>127.0.0.1 refused to connect.</p>" }),
  );
  return browser;
}

afterAll(async () => {
  await gw?.close();
  await google?.close();
});

const h1 = (page: Page) => page.locator('h1').textContent();

async function walkSeed(browser: TestBrowser, page: Page, pasteWhat: 'url' | 'code', screenshot?: string) {
  // 1. Log in to Remote UI as an administrator.
  await page.goto(gw.url);
  await page.getByLabel('User Name').fill('admin');
  await page.getByLabel('Password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Log In' }).click();
  // 2. On the portal page, click [Settings/Registration].
  await page.getByRole('link', { name: 'Settings/Registration' }).first().click();
  // 3. Click [Send] > [OAuth 2.0 (Google) Settings].
  await page.locator('main').getByRole('link', { name: 'Send', exact: true }).click();
  await page.locator('main').getByRole('link', { name: 'OAuth 2.0 (Google) Settings' }).click();
  await expect.poll(() => h1(page)).toBe('OAuth 2.0 (Google) Settings');
  // 4. Under [Basic Settings], click [Edit].
  await page.getByRole('button', { name: 'Edit' }).click();
  await expect.poll(() => h1(page)).toBe('Edit Basic Settings');
  // 5. [Use OAuth 2.0 (Google)]; 6. the certificate options.
  await page.getByLabel('Use OAuth 2.0 (Google)').check();
  await page.getByLabel('Verify Server Certificate').check();
  await page.getByLabel('Add CN to Verification Items').check();
  // 7. [Client ID] and [Client Secret] (and, for this offline stand-in, the advanced endpoints), then [OK].
  await page.getByLabel('Client ID').fill(google.clientId);
  await page.getByLabel('Client Secret').fill(google.clientSecret);
  await page.getByText('Advanced Settings').click();
  await page.getByLabel('Authorization Endpoint').fill(google.authorizationEndpoint);
  await page.getByLabel('Token Endpoint').fill(google.tokenEndpoint);
  await page.getByRole('button', { name: 'OK' }).click();
  await expect.poll(() => h1(page)).toBe('OAuth 2.0 (Google) Settings');
  // 8. Wait a few seconds, then click [Refresh].
  await gw.postern.oauth.whenIdle('google');
  await page.getByRole('button', { name: 'Refresh' }).click();
  await expect.poll(() => page.locator('[data-field="connection-status"]').textContent()).toBe('Successfully Connected');
  // 9. Under [Information for Authorization], click [Register].
  await page.getByRole('button', { name: 'Register' }).click();
  await expect.poll(() => h1(page)).toBe('Register Information for Authorization');
  // 10. Open the link in [URL for Google Authorization Server], authorize, and take the code from the error page's URL.
  const [signIn] = await Promise.all([
    browser.context.waitForEvent('page'),
    page.getByRole('link', { name: 'URL for Google Authorization Server' }).click(),
  ]);
  await signIn.waitForLoadState();
  await signIn.locator('input[name="login"]').fill('bob@example.test');
  await signIn.locator('input[name="password"]').fill('correct horse');
  await signIn.getByRole('button', { name: 'Sign in' }).click();
  await signIn.getByRole('button', { name: 'Accept' }).click();
  await signIn.waitForURL(/\/oauth2\/google\/callback\?/);
  const errorPageUrl = signIn.url();
  expect(await signIn.locator('h1').textContent()).toContain("can't be reached");
  await signIn.close();
  const pasted = pasteWhat === 'url' ? errorPageUrl : /[?&]code=([^&]+)/.exec(errorPageUrl)![1]!;
  await page.getByLabel('Authorization Code').fill(pasted);
  // 11. Click [OK]: the settings screen appears again.
  await page.getByRole('button', { name: 'OK' }).click();
  await expect.poll(() => h1(page)).toBe('OAuth 2.0 (Google) Settings');
  // 12–13. Wait, click [Refresh]; [Token Status] is [Active].
  await page.getByRole('button', { name: 'Refresh' }).click();
  await expect.poll(() => page.locator('[data-field="token-status"]').textContent()).toBe('Active');
  expect(await page.locator('[data-field="account"]').textContent()).toContain('bob@example.test');
  if (screenshot) {
    mkdirSync(screenshot, { recursive: true });
    await page.screenshot({ path: `${screenshot}/oauth-google-active.png`, fullPage: true });
  }
  // 14. Log out of Remote UI.
  await page.getByRole('button', { name: 'Log Out' }).click();
  await expect.poll(() => h1(page)).toBe('Login');
}

test('seed steps 1-14 pasting the whole URL of the error page', async () => {
  const browser = await adminBrowser();
  try {
    await walkSeed(browser, await browser.context.newPage(), 'url', process.env.POSTERN_SCREENSHOTS);
  } finally {
    await browser.close();
  }
});

test('seed steps 1-14 pasting only the code', async () => {
  await gw.postern.oauth.deleteToken('google', 'test');
  expect((await gw.postern.oauth.status('google')).token.status).toBe('NotRegistered');
  const browser = await adminBrowser();
  try {
    await walkSeed(browser, await browser.context.newPage(), 'code');
  } finally {
    await browser.close();
  }
});
