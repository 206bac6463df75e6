/**
 * The seed's Google steps 1–14 in Russian, in a real browser (Debian's Chromium) that asks for English: the
 * administrator switches to Russian with the switch on the login page, and the choice is remembered for the
 * whole walk. The Register Information for Authorization screen counts Google's 10-minute window down.
 * As in seed-google.test.ts, the browser runs on "another computer": the loopback redirect shows an error page
 * whose address is pasted.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { launchBrowser, type TestBrowser } from '../support/browser.js';
import { startGoogleStandin, type GoogleStandin } from '../support/oauth-standins.js';
import { ADMIN_PASSWORD, startTestPostern, type TestPostern } from '../support/postern.js';
import { createTestPki } from '../support/test-ca.js';

let google: GoogleStandin;
let gw: TestPostern;
let browser: TestBrowser;

beforeAll(async () => {
  const pki = await createTestPki();
  google = await startGoogleStandin({ pki });
  gw = await startTestPostern({ caPems: [pki.ca.cert] });
  browser = await launchBrowser();
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
  await browser.context.route('**/oauth2/google/callback**', (route) =>
    route.fulfill({ status: 502, contentType: 'text/html; charset=utf-8', body: "<title>This site can't be reached</title><h1>This site can't be reached</h1>" }),
  );
});

afterAll(async () => {
  await browser?.close();
  await gw?.close();
  await google?.close();
});

test('seed steps 1-14 in Russian, switched on the login page: OAuth 2.0 (Google) ends with Token Status Active', async () => {
  const page: Page = await browser.context.newPage();
  await page.setExtraHTTPHeaders({ 'accept-language': 'en-US,en;q=0.9' });
  const h1 = () => page.locator('h1').textContent();

  // The browser asks for English; the administrator switches.
  await page.goto(gw.url);
  await expect.poll(h1).toBe('Login');
  await page.getByRole('link', { name: 'Русский' }).click();
  await expect.poll(h1).toBe('Вход');
  expect(new URL(page.url()).pathname).toBe('/login');

  // 1. Войдите в Remote UI (Удаленный ИП) в качестве администратора.
  await page.getByLabel('Имя пользователя').fill('admin');
  await page.getByLabel('Пароль').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Войти' }).click();
  await expect.poll(h1).toBe('Remote UI (Удаленный ИП)');
  // 2. [Settings/Registration]; 3. [Send] [OAuth 2.0 (Google) Settings].
  await page.getByRole('link', { name: 'Settings/Registration' }).first().click();
  await page.locator('main').getByRole('link', { name: 'Send', exact: true }).click();
  await page.locator('main').getByRole('link', { name: 'OAuth 2.0 (Google) Settings' }).click();
  await expect.poll(h1).toBe('OAuth 2.0 (Google) Settings');
  expect(await page.locator('html').getAttribute('lang')).toBe('ru');
  // 4. В разделе [Basic Settings] щелкните [Edit].
  await page.getByRole('button', { name: 'Edit' }).click();
  await expect.poll(h1).toBe('Edit Basic Settings');
  // 5–6. [Use OAuth 2.0 (Google)], [Verify Server Certificate], [Add CN to Verification Items].
  await page.getByLabel('Use OAuth 2.0 (Google)').check();
  await page.getByLabel('Verify Server Certificate').check();
  await page.getByLabel('Add CN to Verification Items').check();
  // 7. Введите [Client ID] и [Client Secret], а затем нажмите [OK].
  await page.getByLabel('Client ID').fill(google.clientId);
  await page.getByLabel('Client Secret').fill(google.clientSecret);
  await page.getByText('Дополнительные параметры').click();
  await page.getByLabel('Конечная точка авторизации').fill(google.authorizationEndpoint);
  await page.getByLabel('Конечная точка токенов').fill(google.tokenEndpoint);
  await page.getByRole('button', { name: 'OK' }).click();
  await expect.poll(h1).toBe('OAuth 2.0 (Google) Settings');
  expect(await page.locator('.flash').textContent()).toContain('в разделе [Information for Authorization] щелкните [Register]');
  // 8. Подождите несколько секунд, затем щелкните [].
  await gw.postern.oauth.whenIdle('google');
  await page.getByRole('button', { name: 'Refresh' }).click();
  await expect.poll(() => page.locator('[data-field="connection-status"]').textContent()).toBe('Successfully Connected');
  // 9. В разделе [Information for Authorization] щелкните [Register].
  expect(await page.locator('#authorization-heading').textContent()).toBe('Information for Authorization');
  await page.getByRole('button', { name: 'Register' }).click();
  await expect.poll(h1).toBe('Register Information for Authorization');

  // Google's 10-minute window counts down, live.
  const left = page.locator('[data-field="authorization-expires-in"]');
  await expect.poll(() => left.textContent()).toMatch(/^(10:00|09:[0-5]\d)$/);
  const before = await left.textContent();
  await expect.poll(() => left.textContent(), { timeout: 5000 }).not.toBe(before);
  expect(await page.locator('[data-field="authorization-window"]').textContent()).toContain('Осталось времени на авторизацию:');

  // 10. Перейдите по ссылке [URL for Google Authorization Server]; в [Authorization Code] — часть <Authorization Code>.
  const [signIn] = await Promise.all([browser.context.waitForEvent('page'), page.getByRole('link', { name: 'URL for Google Authorization Server' }).click()]);
  await signIn.waitForLoadState();
  await signIn.locator('input[name="login"]').fill('bob@example.test');
  await signIn.locator('input[name="password"]').fill('correct horse');
  await signIn.getByRole('button', { name: 'Sign in' }).click();
  await signIn.getByRole('button', { name: 'Accept' }).click();
  await signIn.waitForURL(/\/oauth2\/google\/callback\?/);
  const code = /[?&]code=([^&]+)/.exec(signIn.url())![1]!;
  await signIn.close();
  await page.getByLabel('Authorization Code').fill(code);
  // 11. Выберите команду [OK]. Снова отобразится экран [OAuth 2.0 (Google) Settings].
  await page.getByRole('button', { name: 'OK' }).click();
  await expect.poll(h1).toBe('OAuth 2.0 (Google) Settings');
  expect(await page.locator('.flash').textContent()).toBe('Авторизация для bob@example.test зарегистрирована. Token Status — Active.');
  // 12–13. Нажмите []; [Active] для [Token Status].
  await page.getByRole('button', { name: 'Refresh' }).click();
  await expect.poll(() => page.locator('[data-field="token-status"]').textContent()).toBe('Active');
  // 14. Выполните выход из Remote UI (Удаленный ИП).
  await page.getByRole('button', { name: 'Выход' }).click();
  await expect.poll(h1).toBe('Вход');
});
