/**
 * Token service with a controlled clock and hand-made token endpoint answers: when a token is refreshed ahead
 * of its expiry (POSTERN_TOKEN_REFRESH_AHEAD_SECONDS, and half the lifetime for short-lived tokens), and the
 * token endpoint's Date header compared with this host's clock on every refresh.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import * as oauth from 'oauth4webapi';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createLogger } from '../log.js';
import { AuditLog } from '../store/audit.js';
import { openStore, type Store } from '../store/store.js';
import { OAuthAccounts } from './accounts.js';
import { clockSkewWarningOf } from './clock-skew.js';
import type { OAuthHttp } from './http.js';
import { DEFAULT_REFRESH_AHEAD_MS, refreshDueAt, TokenService } from './token-service.js';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const T0 = Date.UTC(2026, 0, 15, 9, 0, 0);

let store: Store;
let accounts: OAuthAccounts;
let clock: number;
/** Offset of the token endpoint's Date header from `clock`; null sends no Date at all. */
let serverClockOffset: number | null;
let expiresIn: number;
let sent: { at: number; body: URLSearchParams }[];
let lines: string[];
/** An OAuth error the token endpoint answers instead of tokens (400), or none. */
let refusal: { error: string; error_description: string } | undefined;

const http = {
  async options() {
    return {
      [oauth.customFetch]: async (_url: string, init: RequestInit) => {
        sent.push({ at: clock, body: new URLSearchParams(String(init.body)) });
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (serverClockOffset !== null) headers.date = new Date(clock + serverClockOffset).toUTCString();
        if (refusal) return new Response(JSON.stringify(refusal), { status: 400, headers });
        const body = { token_type: 'Bearer', access_token: `at-${sent.length + 1}`, expires_in: expiresIn };
        return new Response(JSON.stringify(body), { status: 200, headers });
      },
    };
  },
} as unknown as OAuthHttp;

function tokenService(refreshAheadMs?: number): TokenService {
  const sink = new Writable({ write: (chunk, _encoding, done) => (lines.push(chunk.toString()), done()) });
  return new TokenService({ accounts, http, audit: new AuditLog(store), log: createLogger('info', sink), now: () => clock, refreshAheadMs });
}

/** An Active Microsoft account whose access token was issued at `clock` and lives `lifetimeSeconds`. */
async function authorized(lifetimeSeconds: number) {
  await accounts.getOrCreate('microsoft');
  await accounts.update('microsoft', { enabled: 1, endpoint: 'https://login.microsoftonline.com/organizations/oauth2/v2.0', client_id: 'client' });
  await accounts.transition('microsoft', 'Active', {
    tokens: { accessToken: 'at-1', refreshToken: 'rt-1', expiresAt: clock + lifetimeSeconds * SECOND, scope: undefined, mailbox: 'printer@contoso.example', displayName: undefined },
    keepRefreshToken: false,
    at: clock,
  });
}

const refreshes = () => sent.filter((s) => s.body.get('grant_type') === 'refresh_token').length;

beforeEach(async () => {
  store = await openStore({ dataDir: mkdtempSync(join(tmpdir(), 'postern-tokens-')) });
  accounts = new OAuthAccounts(store);
  clock = T0;
  serverClockOffset = 0;
  expiresIn = 3600;
  sent = [];
  lines = [];
  refusal = undefined;
});

afterEach(async () => {
  await store.close();
});

describe('refreshDueAt', () => {
  test('the window before expiry, or half the lifetime when the lifetime is shorter than twice the window', () => {
    expect(refreshDueAt(T0, T0 + 60 * MINUTE, 5 * MINUTE)).toBe(T0 + 55 * MINUTE);
    expect(refreshDueAt(T0, T0 + 60 * MINUTE, 30 * MINUTE)).toBe(T0 + 30 * MINUTE);
    expect(refreshDueAt(T0, T0 + 60 * MINUTE, 50 * MINUTE)).toBe(T0 + 30 * MINUTE);
    expect(refreshDueAt(T0, T0 + 5 * MINUTE, 5 * MINUTE)).toBe(T0 + 2.5 * MINUTE);
    expect(refreshDueAt(null, T0 + 60 * MINUTE, 5 * MINUTE)).toBe(T0 + 55 * MINUTE);
  });
});

describe('refresh ahead of expiry', () => {
  test('by default five minutes before expiry', async () => {
    expect(DEFAULT_REFRESH_AHEAD_MS).toBe(5 * MINUTE);
    await authorized(3600);
    const tokens = tokenService();
    clock = T0 + 55 * MINUTE - 1;
    expect((await tokens.getAccessToken('microsoft')).accessToken).toBe('at-1');
    await tokens.refreshDue();
    expect(refreshes()).toBe(0);
    clock = T0 + 55 * MINUTE;
    await tokens.refreshDue();
    expect(refreshes()).toBe(1);
  });

  test('at the configured window, in the background and on demand', async () => {
    await authorized(3600);
    const tokens = tokenService(15 * MINUTE);
    clock = T0 + 45 * MINUTE - 1;
    await tokens.refreshDue();
    expect((await tokens.getAccessToken('microsoft')).accessToken).toBe('at-1');
    expect(refreshes()).toBe(0);

    clock = T0 + 45 * MINUTE;
    await tokens.refreshDue();
    expect(refreshes()).toBe(1);
    expect(sent[0]!.at).toBe(T0 + 45 * MINUTE);
    const row = (await accounts.get('microsoft'))!;
    expect(row.access_token_expires_at).toBe(T0 + 105 * MINUTE);

    // The next one on demand: a send at the new token's window start gets a fresh token.
    clock = T0 + 90 * MINUTE;
    expect((await tokens.getAccessToken('microsoft')).accessToken).toBe('at-3');
    expect(refreshes()).toBe(2);
  });

  test('a token living less than twice the window is refreshed at half its lifetime, not on every use', async () => {
    expiresIn = 300;
    await authorized(300);
    const tokens = tokenService(5 * MINUTE);
    clock = T0 + 150 * SECOND - 1;
    expect((await tokens.getAccessToken('microsoft')).accessToken).toBe('at-1');
    await tokens.refreshDue();
    expect(refreshes()).toBe(0);

    clock = T0 + 150 * SECOND;
    expect((await tokens.getAccessToken('microsoft')).accessToken).toBe('at-2');
    // The fresh five-minute token is used, not refreshed again, until half of it has passed.
    for (const later of [1, 60, 149]) {
      clock = T0 + 150 * SECOND + later * SECOND;
      expect((await tokens.getAccessToken('microsoft')).accessToken).toBe('at-2');
      await tokens.refreshDue();
    }
    expect(refreshes()).toBe(1);
  });
});

describe('clock skew seen on token responses', () => {
  const warnings = () => lines.map((line) => JSON.parse(line) as { level: number; msg: string }).filter((l) => l.level === 40 && /clock/.test(l.msg));

  test('a Date seven minutes ahead warns once; a right one clears the warning', async () => {
    await authorized(3600);
    const tokens = tokenService();
    serverClockOffset = 7 * MINUTE;
    await tokens.refresh('microsoft');
    let row = (await accounts.get('microsoft'))!;
    expect(row.token_status).toBe('Active');
    expect(clockSkewWarningOf(row)).toBe(
      "This computer's clock is 7 minutes behind the authorization server's (login.microsoftonline.com). " +
        'Set the time automatically (NTP): tokens may be refused or expire unexpectedly.',
    );

    clock += 10 * MINUTE;
    await tokens.refresh('microsoft');
    expect(warnings()).toHaveLength(1);

    // A response without a Date proves nothing either way.
    serverClockOffset = null;
    await tokens.refresh('microsoft');
    expect(clockSkewWarningOf((await accounts.get('microsoft'))!)).toMatch(/7 minutes behind/);

    serverClockOffset = 0;
    await tokens.refresh('microsoft');
    row = (await accounts.get('microsoft'))!;
    expect(row.clock_offset_ms).toBe(0);
    expect(clockSkewWarningOf(row)).toBeNull();
    expect(warnings()).toHaveLength(1);
  });

  test('a clock ahead of the server is measured the same way', async () => {
    await authorized(3600);
    serverClockOffset = -12 * MINUTE;
    await tokenService().refresh('microsoft');
    expect(clockSkewWarningOf((await accounts.get('microsoft'))!)).toMatch(/is 12 minutes ahead of the authorization server's/);
  });
});

describe('a refused grant', () => {
  test('regression: a refresh that starts just after another found the grant revoked says Expired with the advice, not Not Registered', async () => {
    await authorized(3600);
    const tokens = tokenService();
    clock += 2 * 3600 * SECOND;
    refusal = { error: 'invalid_grant', error_description: 'AADSTS50173: The provided grant has expired due to it being revoked.' };
    await expect(tokens.getAccessToken('microsoft')).rejects.toMatchObject({ status: 'Expired' });
    // A second caller (the queue's route check) read the row before the refusal was saved and refreshes now.
    const late = tokens.refresh('microsoft');
    await expect(late).rejects.toMatchObject({ status: 'Expired', advice: expect.stringMatching(/Get a new user code and sign in again/) });
    expect(refreshes()).toBe(1);
  });
});

describe('one refresh per expiry across instances', () => {
  test('a refresh that takes the lease after another instance refreshed sends no second request', async () => {
    await authorized(3600);
    clock += 3600 * SECOND; // expired
    const a = tokenService();
    const b = tokenService();
    const first = await a.getAccessToken('microsoft');
    expect(refreshes()).toBe(1);
    // Instance B read the row before A's refresh landed and asks for a refresh once A's lease is released.
    const second = await b.refresh('microsoft', { ifStillDue: true });
    expect(second.accessToken).toBe(first.accessToken);
    expect(refreshes()).toBe(1);
    // A refused token is refreshed all the same.
    await b.refresh('microsoft', { ifStillDue: true, rejectedAccessToken: first.accessToken });
    expect(refreshes()).toBe(2);
  });
});
