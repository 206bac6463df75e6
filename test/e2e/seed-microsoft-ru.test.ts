/**
 * The seed's Microsoft steps 1–14 in Russian (the seed's own language), in a real browser (Debian's
 * Chromium) whose Accept-Language asks for Russian: the labels the Russian manual gives in brackets
 * ([Settings/Registration], [Edit Basic Settings], [OK], [Successfully Connected], [Active]) read as it gives
 * them, everything around them is Russian. Then the two ways typed or authorized work could be lost: a
 * changed Application (Client) ID asks before it discards the Active authorization (Cancel keeps the typed
 * values), and a device account or setting typed on Relay Settings survives any other button or link.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { Dialog, Page } from 'playwright-core';
import { launchBrowser, type TestBrowser } from '../support/browser.js';
import { startMicrosoftStandin, type MicrosoftStandin } from '../support/oauth-standins.js';
import { ADMIN_PASSWORD, startTestPostern, type TestPostern } from '../support/postern.js';
import { createTestPki } from '../support/test-ca.js';

let ms: MicrosoftStandin;
let gw: TestPostern;
let browser: TestBrowser;
let page: Page;

const h1 = () => page.locator('h1').textContent();

beforeAll(async () => {
  const pki = await createTestPki();
  ms = await startMicrosoftStandin({ pki, interval: 1 });
  gw = await startTestPostern({ caPems: [pki.ca.cert] });
  browser = await launchBrowser();
  page = await browser.context.newPage();
  await page.setExtraHTTPHeaders({ 'accept-language': 'ru-RU,ru;q=0.9,en;q=0.5' });
});

afterAll(async () => {
  await browser?.close();
  await gw?.close();
  await ms?.close();
});

test('seed steps 1-14 in Russian: OAuth 2.0 (Microsoft) ends with Token Status Active', async () => {
  // 1. Войдите в Remote UI (Удаленный ИП) в качестве администратора.
  await page.goto(gw.url);
  await expect.poll(h1).toBe('Вход');
  expect(await page.locator('html').getAttribute('lang')).toBe('ru');
  expect(await page.locator('.brand').textContent()).toContain('Remote UI (Удаленный ИП)');
  await page.getByLabel('Имя пользователя').fill('admin');
  await page.getByLabel('Пароль').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Войти' }).click();
  await expect.poll(h1).toBe('Remote UI (Удаленный ИП)');

  // 2. На странице портала Remote UI (Удаленный ИП) щелкните [Settings/Registration].
  await page.getByRole('link', { name: 'Settings/Registration' }).first().click();
  await expect.poll(h1).toBe('Settings/Registration');
  expect(await page.locator('main h2').nth(1).textContent()).toBe('Управление');

  // 3. Нажмите [Send] [OAuth 2.0 (Microsoft) Settings].
  await page.locator('main').getByRole('link', { name: 'Send', exact: true }).click();
  await page.locator('main').getByRole('link', { name: 'OAuth 2.0 (Microsoft) Settings' }).click();
  await expect.poll(h1).toBe('OAuth 2.0 (Microsoft) Settings');
  expect(await page.locator('#status-heading').textContent()).toBe('Состояние');

  // 4. В разделе [Basic Settings] щелкните [Edit].
  expect(await page.locator('#basic-settings').textContent()).toBe('Basic Settings');
  await page.getByRole('button', { name: 'Edit' }).click();
  await expect.poll(h1).toBe('Edit Basic Settings');

  // 5–7. Флажки [Use OAuth 2.0 (Microsoft)], [Verify Server Certificate], [Add CN to Verification Items];
  // [Microsoft Entra ID Authorization Server Endpoint] (и Application (Client) ID).
  await page.getByLabel('Use OAuth 2.0 (Microsoft)').check();
  await page.getByLabel('Verify Server Certificate').check();
  await page.getByLabel('Add CN to Verification Items').check();
  expect(await page.locator('#endpoint-help').textContent()).toContain('где вместо <tenant> введите common, consumers, organizations');
  await page.getByLabel('Microsoft Entra ID Authorization Server Endpoint').fill(ms.endpoint('organizations'));
  await page.getByLabel('Application (Client) ID').fill(ms.publicClientId);

  // 8. Выберите команду [OK]. Снова отобразится экран [OAuth 2.0 (Microsoft) Settings].
  await page.getByRole('button', { name: 'OK' }).click();
  await expect.poll(h1).toBe('OAuth 2.0 (Microsoft) Settings');
  expect(await page.locator('.flash').textContent()).toContain('Параметры сохранены.');

  // 9–10. Подождите несколько секунд, затем щелкните []; [Successfully Connected] для [Server Connection Status].
  await gw.postern.oauth.whenIdle('microsoft');
  await page.getByRole('button', { name: 'Refresh' }).click();
  await expect.poll(() => page.locator('[data-field="connection-status"]').textContent()).toBe('Successfully Connected');
  expect(await page.locator('[data-field="connection-detail"]').textContent()).toMatch(/^Соединение TLS с \S+ установлено: сервер ответил/);
  expect(await page.locator('th', { hasText: 'Server Connection Status' }).count()).toBe(1);

  // 11. Следуйте указаниям в [Message] и введите код пользователя, отображаемый в [User Code],
  // в течение периода, указанного в [User Code Expires In].
  const userCode = (await page.locator('[data-field="user-code"]').textContent())!.trim();
  expect(userCode).toMatch(/^[A-Z0-9-]{6,}$/);
  expect(await page.locator('[data-field="message"]').textContent()).toMatch(new RegExp(`Откройте \\S+ и введите код ${userCode}\\.`));
  await expect.poll(() => page.locator('[data-field="expires-in"]').textContent()).toMatch(/^1[45]:\d\d$/);
  expect(await page.locator('[data-field="token-status"]').textContent()).toBe('Waiting for Authorization');
  const [verification] = await Promise.all([browser.context.waitForEvent('page'), page.locator('[data-field="verification-uri"]').click()]);
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

  // 12–13. Подождите несколько минут и затем нажмите []; [Active] для [Token Status].
  await expect.poll(() => page.locator('[data-field="token-status"]').textContent(), { timeout: 20_000 }).toBe('Active');
  await page.getByRole('button', { name: 'Refresh' }).click();
  expect(await page.locator('[data-field="token-status"]').textContent()).toBe('Active');
  expect(await page.locator('[data-field="account"]').textContent()).toMatch(/^Авторизованная учетная запись: alice@example\.test/);

  // The portal shows it too, in the same words.
  await page.getByRole('link', { name: 'Портал' }).click();
  expect(await page.locator('[data-account="microsoft"] [data-field="portal-token-status"]').textContent()).toBe('Active');
});

test('a changed Application (Client) ID asks before the Active authorization is discarded; Cancel keeps what was typed', async () => {
  await page.goto(`${gw.url}/settings/send/oauth-microsoft/edit`);
  const other = '11111111-2222-3333-4444-555555555555';
  await page.getByLabel('Application (Client) ID').fill(other);
  await page.getByRole('button', { name: 'OK' }).click();
  await expect.poll(h1).toBe('Отказаться от авторизации?');
  expect(await page.locator('[data-field="confirm-discard"]').textContent()).toContain('токен alice@example.test будет удален');
  expect(await page.locator('[data-field="confirm-discard"]').textContent()).toContain(`${ms.publicClientId} → ${other}`);

  // Cancel: Edit Basic Settings again, with the typed value; nothing was saved.
  await page.getByRole('button', { name: 'Cancel' }).click();
  await expect.poll(h1).toBe('Edit Basic Settings');
  expect(await page.getByLabel('Application (Client) ID').inputValue()).toBe(other);
  expect((await gw.postern.oauth.status('microsoft')).token.status).toBe('Active');
  await page.getByLabel('Application (Client) ID').fill(ms.publicClientId);
  await page.getByRole('button', { name: 'OK' }).click();
  await expect.poll(h1).toBe('OAuth 2.0 (Microsoft) Settings');
  await gw.postern.oauth.whenIdle('microsoft');
  expect((await gw.postern.oauth.status('microsoft')).token.status).toBe('Active');
});

test('what is typed on Relay Settings survives another form\'s button and a link: the page asks first', async () => {
  const dialogs: string[] = [];
  const dismiss = (dialog: Dialog) => {
    dialogs.push(dialog.type());
    void dialog.dismiss();
  };
  page.on('dialog', dismiss);
  try {
    // The device account has its own page; typed there, Log Out (another form) asks, and dismissing keeps it.
    await page.goto(`${gw.url}/settings/send/relay`);
    await page.getByRole('link', { name: 'Добавить учетную запись устройства' }).click();
    await expect.poll(h1).toBe('Добавить учетную запись устройства');
    await page.getByLabel('User Name').fill('mfp-2nd-floor');
    await page.getByLabel('Password', { exact: true }).fill('mfp-2nd-floor-password');
    await page.getByRole('button', { name: 'Выход' }).click();
    await expect.poll(() => dialogs.length).toBe(1);
    expect(dialogs[0]).toBe('confirm');
    expect(await h1()).toBe('Добавить учетную запись устройства');
    expect(await page.getByLabel('User Name').inputValue()).toBe('mfp-2nd-floor');

    // A link away (the language switch) asks too.
    await page.getByRole('link', { name: 'English' }).click();
    await expect.poll(() => dialogs.length).toBe(2);
    expect(dialogs[1]).toBe('beforeunload');
    expect(await page.getByLabel('User Name').inputValue()).toBe('mfp-2nd-floor');

    // Its own button saves it.
    await page.getByRole('button', { name: 'Добавить', exact: true }).click();
    await expect.poll(h1).toBe('Relay Settings');
    expect(await page.locator('[data-field="device-username"]').allTextContents()).toContain('mfp-2nd-floor');

    // Typed in Allowed Networks: another form's button (Remove) asks before it would discard it.
    await page.getByLabel('Allowed Networks').fill('192.168.10.0/24');
    await page.getByRole('button', { name: 'Удалить mfp-2nd-floor' }).click();
    await expect.poll(() => dialogs.length).toBe(3);
    expect(await page.getByLabel('Allowed Networks').inputValue()).toBe('192.168.10.0/24');
    expect(await gw.postern.devices.exists('mfp-2nd-floor')).toBe(true);
  } finally {
    page.off('dialog', dismiss);
  }
});
