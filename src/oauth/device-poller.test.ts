/**
 * RFC 8628 §3.5 polling rules with a controlled clock and hand-made token endpoint answers: interval,
 * cumulative slow_down, backoff on network errors, nothing sent after expires_in.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as oauth from 'oauth4webapi';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createLogger } from '../log.js';
import { AuditLog } from '../store/audit.js';
import { openStore, type Store } from '../store/store.js';
import { OAuthAccounts } from './accounts.js';
import { DevicePoller } from './device-poller.js';
import type { OAuthHttp } from './http.js';

let store: Store;
let accounts: OAuthAccounts;
let clock: number;
let answers: (() => Response)[];
let sent: { at: number; body: string }[];
let poller: DevicePoller;
/** Told after each request the token endpoint gets. */
let onSent: (() => void) | undefined;

const http = {
  async options() {
    return {
      [oauth.customFetch]: async (_url: string, init: RequestInit) => {
        sent.push({ at: clock, body: String(init.body) });
        onSent?.();
        const next = answers.shift();
        if (!next) throw new Error('no answer scripted');
        return next();
      },
    };
  },
} as unknown as OAuthHttp;

const error = (body: object, status = 400) => () => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
const networkDown = () => {
  throw Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
};

async function start(interval: number, expiresIn: number) {
  await accounts.getOrCreate('microsoft');
  await accounts.update('microsoft', { enabled: 1, endpoint: 'https://login.microsoftonline.com/organizations/oauth2/v2.0', client_id: 'client' });
  await accounts.saveDeviceAuthorization(
    'microsoft',
    { deviceCode: 'device-code', userCode: 'ABCD-EFGH', verificationUri: 'https://microsoft.com/devicelogin', verificationUriComplete: undefined, interval, expiresAt: clock + expiresIn * 1000, message: 'hi' },
    clock,
  );
}

/** Advances the clock to the next scheduled poll and runs it. */
async function tick() {
  const grant = (await accounts.deviceAuthorization('microsoft'))!;
  clock = Math.max(clock, grant.next_poll_at);
  await poller.pollOnce('microsoft');
  return (await accounts.deviceAuthorization('microsoft'))!;
}

beforeEach(async () => {
  store = await openStore({ dataDir: mkdtempSync(join(tmpdir(), 'postern-poller-')) });
  accounts = new OAuthAccounts(store);
  clock = 1_000_000;
  answers = [];
  sent = [];
  poller = new DevicePoller({ accounts, http, audit: new AuditLog(store), log: createLogger('silent'), now: () => clock, autoSchedule: false });
});

afterEach(async () => {
  await store.close();
});

describe('device code polling', () => {
  test('the first poll waits one interval; each poll sends exactly the device_code grant and no secret', async () => {
    await start(5, 900);
    await poller.pollOnce('microsoft');
    expect(sent).toHaveLength(0); // too early
    answers.push(error({ error: 'authorization_pending' }));
    await tick();
    expect(sent).toHaveLength(1);
    expect(sent[0]!.at).toBe(1_000_000 + 5000);
    const body = new URLSearchParams(sent[0]!.body);
    expect(Object.fromEntries(body)).toEqual({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', client_id: 'client', device_code: 'device-code' });
  });

  test('slow_down adds 5 s for this and every later poll', async () => {
    await start(5, 900);
    answers.push(error({ error: 'slow_down' }), error({ error: 'authorization_pending' }), error({ error: 'slow_down' }), error({ error: 'authorization_pending' }));
    let grant = await tick();
    expect(grant.poll_interval).toBe(10);
    grant = await tick();
    expect(grant.poll_interval).toBe(10);
    grant = await tick();
    expect(grant.poll_interval).toBe(15);
    await tick();
    const gaps = sent.slice(1).map((s, i) => s.at - sent[i]!.at);
    expect(gaps).toEqual([10_000, 10_000, 15_000]);
  });

  test('network errors back off and polling goes on', async () => {
    await start(5, 900);
    answers.push(networkDown, networkDown, error({ error: 'authorization_pending' }));
    let grant = await tick();
    expect(grant.status).toBe('Pending');
    expect(grant.network_failures).toBe(1);
    expect(grant.next_poll_at - clock).toBe(10_000);
    grant = await tick();
    expect(grant.next_poll_at - clock).toBe(20_000);
    grant = await tick();
    expect(grant.network_failures).toBe(0);
    expect(grant.next_poll_at - clock).toBe(5_000);
  });

  test('nothing is sent once expires_in has elapsed', async () => {
    await start(5, 12);
    answers.push(error({ error: 'authorization_pending' }), error({ error: 'authorization_pending' }), error({ error: 'authorization_pending' }));
    await tick(); // t=5
    await tick(); // t=10
    const grant = await tick(); // next would be t=15 > expiry at t=12
    expect(grant.status).toBe('CodeExpired');
    expect(sent).toHaveLength(2);
    expect((await accounts.get('microsoft'))!.token_status).toBe('NotRegistered');
  });

  test.each([
    [{ error: 'authorization_declined' }, 'Declined', /declined/],
    [{ error: 'expired_token' }, 'CodeExpired', /expired/],
    [{ error: 'bad_verification_code' }, 'Failed', /bad_verification_code/],
    [{ error: 'invalid_request', error_description: 'AADSTS900144: something' }, 'Failed', /AADSTS900144/],
  ])('%o stops polling with a distinct status', async (body, status, detail) => {
    await start(5, 900);
    answers.push(error(body));
    const grant = await tick();
    expect(grant.status).toBe(status);
    expect(grant.detail).toMatch(detail);
    clock += 60_000;
    await poller.pollOnce('microsoft');
    expect(sent).toHaveLength(1);
  });

  test('a success without a refresh token is a configuration error, not Active', async () => {
    await start(5, 900);
    answers.push(() => new Response(JSON.stringify({ token_type: 'Bearer', access_token: 'at', expires_in: 3600 }), { status: 200, headers: { 'content-type': 'application/json' } }));
    const grant = await tick();
    expect(grant.status).toBe('Failed');
    expect(grant.detail).toMatch(/no refresh token/);
    const account = (await accounts.get('microsoft'))!;
    expect(account.token_status).toBe('NotRegistered');
    expect(account.access_token_enc).toBeNull();
  });
});

describe('one poller across instances', () => {
  test('an instance polls a code started through another one, at the interval the database says, once that one stops', async () => {
    // Instance B runs its timers; it has no code of its own and learns of A's by looking for pending ones.
    const b = new DevicePoller({ accounts, http, audit: new AuditLog(store), log: createLogger('silent'), now: () => clock, instanceId: 'b', rescanMs: 10 });
    const a = new DevicePoller({ accounts, http, audit: new AuditLog(store), log: createLogger('silent'), now: () => clock, instanceId: 'a', autoSchedule: false });
    await b.start();
    try {
      await start(1, 900);
      clock += 1000;
      answers.push(error({ error: 'authorization_pending' }));
      await a.pollOnce('microsoft'); // under the poll lease; sets the next poll time in the row
      expect(sent).toHaveLength(1);
      // A dies here. B, which found the code by looking for pending ones, polls it at the next poll time.
      const polledByB = new Promise<void>((resolve) => (onSent = resolve));
      answers.push(error({ error: 'authorization_pending' }));
      expect(sent).toHaveLength(1); // not before the interval
      clock += 1000;
      await polledByB;
      expect(sent).toHaveLength(2);
    } finally {
      onSent = undefined;
      await b.stop();
    }
  });
});
