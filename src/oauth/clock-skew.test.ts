/** Reading the authorization server's clock from its Date header, and what the administrator is told. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createLogger } from '../log.js';
import { openStore, type Store } from '../store/store.js';
import { OAuthAccounts } from './accounts.js';
import { clockOffset, clockSkewWarning, clockSkewWarningOf, recordServerClock, ServerClockProbe } from './clock-skew.js';

const MINUTE = 60_000;
/** A local time on a whole second, so that a Date header can say it exactly. */
const T = Date.UTC(2026, 0, 15, 9, 30, 0);
const httpDate = (ms: number) => new Date(ms).toUTCString();

describe('clockOffset', () => {
  test('a server ahead gives a positive offset, a server behind a negative one', () => {
    expect(clockOffset(httpDate(T + 7 * MINUTE), T, T)).toBe(7 * MINUTE);
    expect(clockOffset(httpDate(T - 7 * MINUTE), T, T)).toBe(-7 * MINUTE + 999);
  });

  test('the round trip and the one-second resolution count in the clocks\' favour', () => {
    // Sent at T, answered 30 s later (a slow proxy): a Date anywhere in that span means the clocks may agree.
    for (const date of [T, T + 15_000, T + 30_000]) expect(clockOffset(httpDate(date), T, T + 30_000)).toBe(0);
    // The Date is truncated to the second: the server may have read T + 999 when it wrote "T".
    expect(clockOffset(httpDate(T), T + 999, T + 999)).toBe(0);
    // Beyond the span, only the part the span cannot explain counts.
    expect(clockOffset(httpDate(T + 5 * MINUTE), T, T + 30_000)).toBe(5 * MINUTE - 30_000);
    expect(clockOffset(httpDate(T - 5 * MINUTE), T, T + 30_000)).toBe(-5 * MINUTE + 999);
  });

  test('no usable Date, or a local clock that stepped back during the request, measures nothing', () => {
    expect(clockOffset(null, T, T)).toBeUndefined();
    expect(clockOffset('', T, T)).toBeUndefined();
    expect(clockOffset('yesterday-ish', T, T)).toBeUndefined();
    expect(clockOffset(httpDate(T), T, T - 1)).toBeUndefined();
  });
});

describe('clockSkewWarning', () => {
  test('names the direction, the size and the server, and says what to do', () => {
    expect(clockSkewWarning(7 * MINUTE, 'login.microsoftonline.com')).toBe(
      "This computer's clock is 7 minutes behind the authorization server's (login.microsoftonline.com). " +
        'Set the time automatically (NTP): tokens may be refused or expire unexpectedly.',
    );
    expect(clockSkewWarning(-10 * MINUTE, 'oauth2.googleapis.com')).toMatch(/^This computer's clock is 10 minutes ahead of the authorization server's \(oauth2\.googleapis\.com\)\./);
    expect(clockSkewWarning(-3 * 60 * MINUTE, 'h')).toMatch(/is 3 hours ahead of/);
    expect(clockSkewWarning(400 * 24 * 60 * MINUTE, 'h')).toMatch(/is 400 days behind/);
  });

  test('2 minutes or less is within the limit', () => {
    expect(clockSkewWarning(2 * MINUTE, 'h')).toBeNull();
    expect(clockSkewWarning(-2 * MINUTE, 'h')).toBeNull();
    expect(clockSkewWarning(2 * MINUTE + 1, 'h')).toMatch(/2 minutes behind/);
    expect(clockSkewWarningOf({ clock_offset_ms: null, clock_server_host: null })).toBeNull();
  });
});

describe('ServerClockProbe', () => {
  test('keeps the last response\'s Date with the local times around its request, and passes the response on', async () => {
    let clock = T;
    const probe = new ServerClockProbe(() => clock);
    const fetch = probe.fetch(async () => {
      clock += 250; // the round trip
      return new Response('{}', { status: 404, headers: { date: httpDate(T + 7 * MINUTE) } });
    });
    const response = await fetch('https://login.microsoftonline.com/common/oauth2/v2.0', { method: 'GET' });
    expect(response.status).toBe(404);
    expect(probe.last).toEqual({ host: 'login.microsoftonline.com', date: httpDate(T + 7 * MINUTE), sentAt: T, receivedAt: T + 250 });
  });

  test('a request that fails leaves nothing to record', async () => {
    const probe = new ServerClockProbe(() => T);
    const fetch = probe.fetch(async () => {
      throw new TypeError('fetch failed');
    });
    await expect(fetch('https://login.microsoftonline.com/', {})).rejects.toThrow('fetch failed');
    expect(probe.last).toBeUndefined();
  });
});

describe('recordServerClock', () => {
  let store: Store;
  let accounts: OAuthAccounts;
  let lines: string[];
  const log = () => createLogger('info', new Writable({ write: (chunk, _e, done) => (lines.push(chunk.toString()), done()) }));
  const logged = (level: number) => lines.map((line) => JSON.parse(line) as { level: number; msg: string }).filter((l) => l.level === level);
  const seen = (offset: number) => ({ host: 'login.microsoftonline.com', date: httpDate(T + offset), sentAt: T, receivedAt: T });

  beforeEach(async () => {
    store = await openStore({ dataDir: mkdtempSync(join(tmpdir(), 'postern-clock-')) });
    accounts = new OAuthAccounts(store);
    await accounts.getOrCreate('microsoft');
    lines = [];
  });

  afterEach(async () => {
    await store.close();
  });

  test('stores the offset with the account, warns once per change, and says when the clocks agree again', async () => {
    const logger = log();
    await recordServerClock(accounts, logger, 'microsoft', seen(7 * MINUTE));
    let row = (await accounts.get('microsoft'))!;
    expect(row).toMatchObject({ clock_offset_ms: 7 * MINUTE, clock_server_host: 'login.microsoftonline.com', clock_checked_at: T });
    expect(clockSkewWarningOf(row)).toMatch(/7 minutes behind/);

    await recordServerClock(accounts, logger, 'microsoft', seen(7 * MINUTE));
    expect(logged(40).map((l) => l.msg)).toEqual([clockSkewWarning(7 * MINUTE, 'login.microsoftonline.com')]);

    await recordServerClock(accounts, logger, 'microsoft', seen(9 * MINUTE));
    expect(logged(40)).toHaveLength(2);

    await recordServerClock(accounts, logger, 'microsoft', seen(0));
    row = (await accounts.get('microsoft'))!;
    expect(row.clock_offset_ms).toBe(0);
    expect(clockSkewWarningOf(row)).toBeNull();
    expect(logged(30).map((l) => l.msg)).toEqual(["This computer's clock agrees with the authorization server's (login.microsoftonline.com) again."]);

    await recordServerClock(accounts, logger, 'microsoft', seen(30_000));
    expect(logged(30)).toHaveLength(1);
    expect(logged(40)).toHaveLength(2);
  });

  test('a response without a Date changes nothing', async () => {
    await recordServerClock(accounts, log(), 'microsoft', seen(7 * MINUTE));
    await recordServerClock(accounts, log(), 'microsoft', { host: 'login.microsoftonline.com', date: null, sentAt: T + 1, receivedAt: T + 1 });
    expect((await accounts.get('microsoft'))!).toMatchObject({ clock_offset_ms: 7 * MINUTE, clock_checked_at: T });
  });
});
