/**
 * Token Status transitions against a real store (SQLite in a temporary directory): what each status is
 * entered with, what becomes of the stored tokens, that `update` cannot write the status, and that every
 * change reaches the onTokenChange listeners.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, expectTypeOf, test } from 'vitest';
import { openStore, type Store } from '../store/store.js';
import { OAuthAccounts, type AccountPatch, type AccountRow, type TokenStatus } from './accounts.js';
import type { TokenSet } from './grants.js';

const T0 = Date.UTC(2026, 0, 15, 9, 0, 0);

let dir: string;
let store: Store;
let accounts: OAuthAccounts;
let changes: string[];

const tokenSet = (overrides: Partial<TokenSet> = {}): TokenSet => ({
  accessToken: 'at-1',
  refreshToken: 'rt-1',
  expiresAt: T0 + 3_600_000,
  scope: 'https://outlook.office.com/SMTP.Send offline_access',
  mailbox: 'printer@contoso.example',
  displayName: 'Printer',
  ...overrides,
});

const row = async () => (await accounts.get('microsoft'))!;

/** An Active account, as after a completed sign-in at T0. */
async function active(): Promise<void> {
  await accounts.transition('microsoft', 'Active', { tokens: tokenSet(), keepRefreshToken: false, at: T0 });
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'postern-accounts-'));
  store = await openStore({ dataDir: dir });
  accounts = new OAuthAccounts(store);
  await accounts.getOrCreate('microsoft');
  changes = [];
  accounts.onTokenChange((id) => changes.push(id));
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('transition', () => {
  test('a new account is Not Registered, without tokens', async () => {
    expect(await row()).toMatchObject({ token_status: 'NotRegistered', token_error: null, token_advice: null, refresh_token_enc: null });
  });

  test('Active saves the token set, encrypted, and clears the words and the retry state', async () => {
    await accounts.transition('microsoft', 'Error', { error: 'HTTP 503', advice: 'retrying', failures: 3, nextAttemptAt: T0 });
    await active();
    const account = await row();
    expect(account).toMatchObject({
      token_status: 'Active',
      token_error: null,
      token_advice: null,
      token_status_at: T0,
      token_issued_at: T0,
      access_token_expires_at: T0 + 3_600_000,
      mailbox: 'printer@contoso.example',
      display_name: 'Printer',
      refresh_failures: 0,
      next_refresh_attempt_at: null,
    });
    expect(account.access_token_enc).not.toContain('at-1');
    expect(accounts.accessToken(account)).toBe('at-1');
    expect(accounts.refreshToken(account)).toBe('rt-1');
  });

  test('a refresh answered without a refresh token keeps the stored one; a first sign-in without one leaves none', async () => {
    await active();
    await accounts.transition('microsoft', 'Active', { tokens: tokenSet({ accessToken: 'at-2', refreshToken: undefined }), keepRefreshToken: true, at: T0 + 1 });
    expect(accounts.refreshToken(await row())).toBe('rt-1');
    expect(accounts.accessToken(await row())).toBe('at-2');
    await accounts.transition('microsoft', 'Active', { tokens: tokenSet({ accessToken: 'at-3', refreshToken: undefined }), keepRefreshToken: false, at: T0 + 2 });
    expect((await row()).refresh_token_enc).toBeNull();
  });

  test('Error keeps the tokens and records the retry', async () => {
    await active();
    const before = Date.now();
    await accounts.transition('microsoft', 'Error', { error: 'HTTP 503: temporarily_unavailable', advice: 'Postern retries.', failures: 2, nextAttemptAt: T0 + 60_000 });
    const account = await row();
    expect(account).toMatchObject({
      token_status: 'Error',
      token_error: 'HTTP 503: temporarily_unavailable',
      token_advice: 'Postern retries.',
      refresh_failures: 2,
      next_refresh_attempt_at: T0 + 60_000,
    });
    expect(account.token_status_at).toBeGreaterThanOrEqual(before);
    expect(accounts.refreshToken(account)).toBe('rt-1');
  });

  test('Expired forgetting the tokens keeps the mailbox on show', async () => {
    await active();
    await accounts.transition('microsoft', 'Expired', { error: 'invalid_grant: AADSTS70008', advice: 'Sign in again.', forget: 'tokens' });
    expect(await row()).toMatchObject({
      token_status: 'Expired',
      token_error: 'invalid_grant: AADSTS70008',
      token_advice: 'Sign in again.',
      access_token_enc: null,
      refresh_token_enc: null,
      access_token_expires_at: null,
      mailbox: 'printer@contoso.example',
    });
  });

  test('Not Registered forgetting tokens and mailbox leaves nothing of the authorization', async () => {
    await active();
    await accounts.transition('microsoft', 'NotRegistered', { forget: 'tokens-and-mailbox' });
    expect(await row()).toMatchObject({
      token_status: 'NotRegistered',
      token_error: null,
      token_advice: null,
      access_token_enc: null,
      refresh_token_enc: null,
      mailbox: null,
      display_name: null,
    });
  });

  test('a status without `forget` keeps the tokens', async () => {
    await active();
    await accounts.transition('microsoft', 'WaitingForAuthorization', { advice: 'Sign in with the user code.' });
    const account = await row();
    expect(account).toMatchObject({ token_status: 'WaitingForAuthorization', token_advice: 'Sign in with the user code.' });
    expect(accounts.refreshToken(account)).toBe('rt-1');
  });

  test('Unchanged adds advice and keeps the status, its words and its time', async () => {
    await accounts.transition('microsoft', 'Error', { error: 'HTTP 503', advice: 'retrying', failures: 1, nextAttemptAt: T0 });
    const before = await row();
    await accounts.transition('microsoft', 'Unchanged', { advice: 'A new user code could not be requested: HTTP 503' });
    expect(await row()).toMatchObject({
      token_status: 'Error',
      token_error: 'HTTP 503',
      token_advice: 'A new user code could not be requested: HTTP 503',
      token_status_at: before.token_status_at,
      refresh_failures: 1,
    });
  });

  test('every transition reaches the onTokenChange listeners', async () => {
    await active();
    await accounts.transition('microsoft', 'Error', { error: 'e', advice: 'a', failures: 1, nextAttemptAt: T0 });
    await accounts.transition('microsoft', 'Unchanged', { advice: 'b' });
    await accounts.transition('microsoft', 'Expired', { forget: 'tokens' });
    expect(changes).toEqual(['microsoft', 'microsoft', 'microsoft', 'microsoft']);
  });

  test('Token Status is a closed set of names: a typo fails typecheck', () => {
    expectTypeOf<AccountRow['token_status']>().toEqualTypeOf<TokenStatus>();
    // Never called: `npm run typecheck` fails if 'Actve' were accepted.
    const typo = () =>
      // @ts-expect-error 'Actve' is not a Token Status
      accounts.transition('microsoft', 'Actve', {});
    expect(typo).toBeTypeOf('function');
  });
});

describe('update', () => {
  test('refuses the Token Status columns, so that only transition writes them', async () => {
    for (const patch of [{ token_status: 'Active' }, { token_error: 'x' }, { token_advice: 'x' }, { token_status_at: T0 }]) {
      await expect(accounts.update('microsoft', patch as AccountPatch)).rejects.toThrow(/only through transition/);
    }
    expect((await row()).token_status).toBe('NotRegistered');
    expect(changes).toEqual([]);
  });

  test('tells the listeners when Use changes, not when only the connection does', async () => {
    await accounts.update('microsoft', { enabled: 1 });
    await accounts.setConnection('microsoft', { status: 'SuccessfullyConnected', detail: 'ok' });
    expect(changes).toEqual(['microsoft']);
  });
});
