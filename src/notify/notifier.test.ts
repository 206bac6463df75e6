/**
 * The notifier against a real store (SQLite in a temporary directory) and a real HTTP receiver: one
 * notification per occurrence and one per resolution, thresholds on an injected clock, two instances on one
 * database, retries with backoff, refusals, batching of bounces. No timers: every pass is a tick(now).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Updateable } from 'kysely';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { startWebhookReceiver, type WebhookReceiver } from '../../test/support/webhook-receiver.js';
import { createLogger } from '../log.js';
import { OAuthAccounts } from '../oauth/accounts.js';
import { AuditLog } from '../store/audit.js';
import type { OAuthAccountsTable, QueueState } from '../store/schema.js';
import { openStore, type Store } from '../store/store.js';
import { NOTIFICATION_EVENTS, type NotificationEvent } from './events.js';
import { MAX_ATTEMPTS, Notifier } from './notifier.js';
import { NotificationSettings } from './settings.js';

const T0 = Date.UTC(2026, 0, 12, 9, 0, 0);
const MINUTE = 60_000;

let receiver: WebhookReceiver;
let store: Store;
let dir: string;
let settings: NotificationSettings;
let accounts: OAuthAccounts;
let audit: AuditLog;

function notifier(instanceId = 'one'): Notifier {
  return new Notifier({
    store,
    settings,
    http: { fetchFor: async () => (url, init) => fetch(url, init) },
    audit,
    log: createLogger('silent'),
    remoteUiBase: () => 'http://fallback.invalid:8080',
    messageLifetimeMs: 5 * 24 * 60 * MINUTE,
    now: () => T0,
    random: () => 0.5,
    instanceId,
  });
}

async function configure(events: readonly NotificationEvent[] = NOTIFICATION_EVENTS, format: 'json' | 'teams' | 'slack' = 'json') {
  await settings.save({ webhookUrl: `${receiver.origin}/hook/secret-path?sig=s3cr3t`, format, events: [...events] }, 'admin', 'https://postern.example:8443');
}

/** Sets the account's columns as given, Token Status included: a fixture, not a transition. */
async function setAccount(patch: Updateable<OAuthAccountsTable>) {
  await store.db.updateTable('oauth_accounts').set({ enabled: 1, ...patch }).where('id', '=', 'microsoft').execute();
}

let queueCounter = 0;
async function queueMessage(state: QueueState, heldAt: number): Promise<string> {
  const id = `00000000-0000-4000-8000-${String(++queueCounter).padStart(12, '0')}`;
  await store.db
    .insertInto('queue_messages')
    .values({
      id,
      node_id: 'node',
      state,
      reverse_path: 'scanner@printers.local',
      recipients: '["bob@example.test"]',
      size: 100,
      body_8bit: 0,
      smtputf8: 0,
      header_from: null,
      subject: `scan ${queueCounter}`,
      message_id_header: null,
      client: 'device scanner',
      is_bounce: 0,
      attempts: 0,
      received_at: heldAt,
      next_attempt_at: heldAt,
      expires_at: heldAt + 5 * 24 * 60 * MINUTE,
      lease_owner: null,
      lease_until: null,
      last_code: null,
      last_reply: 'OAuth 2.0 (Microsoft): the authorization expired; re-authorization is required.',
      last_advice: 'Get a new user code and sign in again.',
      done_at: null,
    })
    .execute();
  if (state === 'held') await log(id, 'held', heldAt);
  return id;
}

async function log(queueId: string, event: 'held' | 'bounced', at: number, reply = '') {
  await store.db
    .insertInto('delivery_log')
    .values({ queue_id: queueId, at, event, recipients: 'bob@example.test', code: event === 'bounced' ? 550 : null, reply, advice: event === 'bounced' ? 'The recipient address does not exist.' : null })
    .execute();
}

const bodies = () => receiver.received.map((r) => r.body);
const events = () => bodies().map((b) => `${b.event}:${b.phase}`);

beforeAll(async () => {
  receiver = await startWebhookReceiver();
});

afterAll(async () => {
  await receiver.close();
});

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'postern-notify-'));
  store = await openStore({ dataDir: dir });
  settings = new NotificationSettings(store);
  accounts = new OAuthAccounts(store);
  audit = new AuditLog(store);
  await accounts.getOrCreate('microsoft');
  await accounts.getOrCreate('google');
  await setAccount({ token_status: 'Active', mailbox: 'alice@example.test', connection_status: 'SuccessfullyConnected', token_status_at: T0 - 60 * MINUTE });
  receiver.received.length = 0;
  receiver.defaultAnswer = { status: 200, body: 'ok' };
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('Token Status', () => {
  test('Expired: one notification with the advice and a link, even from two instances; one when Active again', async () => {
    await configure();
    const [a, b] = [notifier('one'), notifier('two')];
    await Promise.all([a.tick(T0), b.tick(T0)]);
    expect(receiver.received).toHaveLength(0);

    await setAccount({ token_status: 'Expired', token_error: 'invalid_grant: AADSTS50173: The provided grant has expired.', token_advice: 'Get a new user code and sign in again.', token_status_at: T0 });
    await Promise.all([a.tick(T0 + MINUTE), b.tick(T0 + MINUTE)]);
    await a.tick(T0 + 2 * MINUTE);
    await b.tick(T0 + 3 * MINUTE);
    expect(events()).toEqual(['token-expired:problem']);
    const problem = bodies()[0];
    expect(problem.title).toBe('OAuth 2.0 (Microsoft): Token Status is Expired');
    expect(problem.text).toMatch(/re-authorization is required/i);
    expect(problem.text).toMatch(/held in the queue/);
    expect(problem.advice).toBe('Get a new user code and sign in again.');
    expect(problem.link).toBe('https://postern.example:8443/settings/send/oauth-microsoft');
    expect(problem.facts).toContainEqual({ name: 'Provider message', value: 'invalid_grant: AADSTS50173: The provided grant has expired.' });

    // Re-authorization under way: still Expired as far as mail goes, nothing new.
    await setAccount({ token_status: 'WaitingForAuthorization' });
    await a.tick(T0 + 4 * MINUTE);
    expect(receiver.received).toHaveLength(1);

    await setAccount({ token_status: 'Active', token_error: null, token_advice: null });
    await Promise.all([a.tick(T0 + 5 * MINUTE), b.tick(T0 + 5 * MINUTE)]);
    await a.tick(T0 + 6 * MINUTE);
    expect(events()).toEqual(['token-expired:problem', 'token-expired:resolved']);
    expect(bodies()[1].title).toBe('OAuth 2.0 (Microsoft): Token Status is Active again');

    // A second occurrence is a new notification.
    await setAccount({ token_status: 'Expired', token_status_at: T0 + 7 * MINUTE });
    await a.tick(T0 + 8 * MINUTE);
    expect(events()).toEqual(['token-expired:problem', 'token-expired:resolved', 'token-expired:problem']);
    const rows = await store.db.selectFrom('notifications').select(['event', 'status', 'http_status']).orderBy('id').execute();
    expect(rows).toEqual([
      { event: 'token-expired', status: 'delivered', http_status: 200 },
      { event: 'token-expired', status: 'delivered', http_status: 200 },
      { event: 'token-expired', status: 'delivered', http_status: 200 },
    ]);
  });

  test('Error is reported once it has lasted 15 minutes, timed from when it was first seen', async () => {
    await configure();
    const n = notifier();
    await setAccount({ token_status: 'Error', token_error: 'HTTP 503: temporarily_unavailable', token_advice: 'Postern keeps the authorization and retries automatically.', token_status_at: T0 });
    await n.tick(T0);
    // The token service rewrites the status time on every retry; the notifier keeps the first.
    await setAccount({ token_status: 'Error', token_status_at: T0 + 10 * MINUTE });
    await n.tick(T0 + 10 * MINUTE);
    expect(receiver.received).toHaveLength(0);
    await setAccount({ token_status: 'Error', token_status_at: T0 + 15 * MINUTE + 1 });
    await n.tick(T0 + 15 * MINUTE + 1);
    await n.tick(T0 + 20 * MINUTE);
    expect(events()).toEqual(['token-error:problem']);
    expect(bodies()[0].title).toBe('OAuth 2.0 (Microsoft): Token Status has been Error for more than 15 minutes');
    expect(bodies()[0].text).toContain('HTTP 503: temporarily_unavailable');
    expect(bodies()[0].advice).toMatch(/retries automatically/);

    // Error that ends in Expired is reported as Expired, without an "over" for the Error.
    await setAccount({ token_status: 'Expired', token_status_at: T0 + 21 * MINUTE });
    await n.tick(T0 + 21 * MINUTE);
    expect(events()).toEqual(['token-error:problem', 'token-expired:problem']);
  });

  test('a short Error is never reported', async () => {
    await configure();
    const n = notifier();
    await setAccount({ token_status: 'Error', token_status_at: T0 });
    await n.tick(T0);
    await setAccount({ token_status: 'Active' });
    await n.tick(T0 + 5 * MINUTE);
    await setAccount({ token_status: 'Error', token_status_at: T0 + 6 * MINUTE });
    await n.tick(T0 + 16 * MINUTE);
    expect(receiver.received).toHaveLength(0);
  });
});

describe('Server Connection Status', () => {
  test('Connection Failed once, Successfully Connected again once', async () => {
    await configure();
    const n = notifier();
    const detail = 'The server certificate of login.microsoftonline.com is not trusted (SELF_SIGNED_CERT_IN_CHAIN). Register the issuing CA certificate in CA Certificate Settings, or turn off Verify Server Certificate.';
    await setAccount({ connection_status: 'ConnectionFailed', connection_detail: detail, connection_checked_at: T0 });
    await n.tick(T0);
    await n.tick(T0 + MINUTE);
    await setAccount({ connection_status: 'SuccessfullyConnected', connection_detail: 'TLS connection to login.microsoftonline.com established; the server answered HTTP 404.', connection_checked_at: T0 + 2 * MINUTE });
    await n.tick(T0 + 2 * MINUTE);
    expect(events()).toEqual(['connection-failed:problem', 'connection-failed:resolved']);
    expect(bodies()[0].text).toBe(detail);
    expect(bodies()[1].title).toBe('OAuth 2.0 (Microsoft): Successfully Connected again');
  });
});

describe('the queue', () => {
  test('held messages: one notification after 15 minutes, one when they flow again', async () => {
    await configure();
    const n = notifier();
    const first = await queueMessage('held', T0);
    await queueMessage('held', T0 + 5 * MINUTE);
    await n.tick(T0 + 14 * MINUTE);
    expect(receiver.received).toHaveLength(0);
    await n.tick(T0 + 16 * MINUTE);
    await n.tick(T0 + 30 * MINUTE);
    expect(events()).toEqual(['messages-held:problem']);
    const held = bodies()[0];
    expect(held.title).toBe('1 message has been held for more than 15 minutes');
    expect(held.text).toMatch(/^Devices got 250 for this message, but Postern cannot send it: OAuth 2.0 \(Microsoft\): the authorization expired/);
    expect(held.text).toMatch(/returned to their senders after 5 days/);
    expect(held.advice).toBe('Get a new user code and sign in again.');
    expect(held.facts).toContainEqual({ name: 'Held messages', value: '2' });
    expect(held.link).toBe('https://postern.example:8443/settings/queue');

    await store.db.updateTable('queue_messages').set({ state: 'sent' }).where('id', '=', first).execute();
    await n.tick(T0 + 31 * MINUTE);
    expect(receiver.received).toHaveLength(1);
    await store.db.updateTable('queue_messages').set({ state: 'deferred' }).execute();
    await n.tick(T0 + 32 * MINUTE);
    expect(events()).toEqual(['messages-held:problem', 'messages-held:resolved']);
    expect(bodies()[1].title).toBe('Held messages are flowing again');
  });

  test('bounces: the ones since the last pass in one notification; earlier ones are not reported', async () => {
    const before = await queueMessage('bounced', T0 - 10 * MINUTE);
    await log(before, 'bounced', T0 - 10 * MINUTE, '550 5.1.1 User unknown');
    await configure();
    const n = notifier();
    await n.tick(T0);
    expect(receiver.received).toHaveLength(0);

    const one = await queueMessage('bounced', T0);
    await log(one, 'bounced', T0 + MINUTE, '5.1.1 RESOLVER.ADR.RecipientNotFound; Recipient not found');
    await n.tick(T0 + MINUTE);
    expect(events()).toEqual(['message-bounced:problem']);
    expect(bodies()[0].title).toBe('A message could not be delivered and was returned to its sender');
    expect(bodies()[0].text).toMatch(/^From scanner@printers\.local to bob@example\.test, subject "scan \d+": 550 5\.1\.1 RESOLVER\.ADR\.RecipientNotFound; Recipient not found$/);
    expect(bodies()[0].link).toBe(`https://postern.example:8443/settings/log?id=${one}`);
    expect(bodies()[0].advice).toBe('The recipient address does not exist.');

    const two = await queueMessage('bounced', T0);
    const three = await queueMessage('bounced', T0);
    await log(two, 'bounced', T0 + 2 * MINUTE, '550 5.7.1 rejected');
    await log(three, 'bounced', T0 + 2 * MINUTE, '550 5.7.1 rejected');
    await n.tick(T0 + 2 * MINUTE);
    await n.tick(T0 + 3 * MINUTE);
    expect(events()).toEqual(['message-bounced:problem', 'message-bounced:problem']);
    expect(bodies()[1].title).toBe('2 messages could not be delivered and were returned to their senders');
    expect(bodies()[1].link).toBe('https://postern.example:8443/settings/log');
  });
});

describe('delivery', () => {
  test('5xx is retried with backoff (and Retry-After); delivered once', async () => {
    await configure();
    const n = notifier();
    receiver.answerNext(503, { status: 503, headers: { 'retry-after': '120' } });
    await setAccount({ token_status: 'Expired', token_status_at: T0 });
    await n.tick(T0);
    expect(receiver.received.map((r) => r.status)).toEqual([503]);
    let [row] = await store.db.selectFrom('notifications').selectAll().execute();
    expect(row).toMatchObject({ status: 'pending', attempts: 1, http_status: 503 });
    expect(row!.result).toBe('The receiver failed (HTTP 503 Service Unavailable): a problem on the receiver\'s side, not in Postern\'s settings.');
    expect(Number(row!.next_attempt_at)).toBe(T0 + 30_000); // 30 s base, jitter 0.5 → ×1.0

    await n.tick(T0 + 29_000);
    expect(receiver.received).toHaveLength(1);
    await n.tick(T0 + 30_000);
    expect(receiver.received.map((r) => r.status)).toEqual([503, 503]);
    [row] = await store.db.selectFrom('notifications').selectAll().execute();
    expect(Number(row!.next_attempt_at)).toBe(T0 + 30_000 + 120_000); // Retry-After beats the 60 s backoff

    await n.tick(T0 + 150_000);
    await n.tick(T0 + 10 * MINUTE);
    expect(receiver.received.map((r) => r.status)).toEqual([503, 503, 200]);
    [row] = await store.db.selectFrom('notifications').selectAll().execute();
    expect(row).toMatchObject({ status: 'delivered', attempts: 3, http_status: 200, result: 'The receiver accepted the notification (HTTP 200 OK).' });
  });

  test(`gives up after ${MAX_ATTEMPTS} attempts; a 4xx fails at once; neither blocks the next notification`, async () => {
    await configure();
    const n = notifier();
    receiver.defaultAnswer = { status: 502 };
    await setAccount({ token_status: 'Expired', token_status_at: T0 });
    for (let minutes = 0; minutes <= 60; minutes += 10) await n.tick(T0 + minutes * MINUTE);
    expect(receiver.received).toHaveLength(MAX_ATTEMPTS);
    let rows = await store.db.selectFrom('notifications').selectAll().orderBy('id').execute();
    expect(rows[0]).toMatchObject({ status: 'failed', attempts: MAX_ATTEMPTS });
    expect(rows[0]!.result).toMatch(/gave up after 4 attempts/);

    receiver.defaultAnswer = { status: 404, body: 'Not Found: /hook/secret-path?sig=s3cr3t' };
    await setAccount({ token_status: 'Active' });
    await n.tick(T0 + 61 * MINUTE);
    expect(receiver.received).toHaveLength(MAX_ATTEMPTS + 1);
    rows = await store.db.selectFrom('notifications').selectAll().orderBy('id').execute();
    expect(rows[1]).toMatchObject({ status: 'failed', attempts: 1, http_status: 404 });
    expect(rows[1]!.result).toMatch(/^The receiver answered HTTP 404 Not Found: there is no webhook at this address/);
    // The receiver's answer is quoted without the URL's secret.
    expect(rows[1]!.result).not.toContain('s3cr3t');
    expect(rows[1]!.result).not.toContain('secret-path');
    const entries = await audit.recent(10);
    expect(entries.filter((e) => e.action === 'notification.failed')).toHaveLength(2);
    expect(JSON.stringify(entries)).not.toContain('s3cr3t');
  });

  test('a notification waits while an earlier one is being retried (same receiver, same order)', async () => {
    await configure();
    const n = notifier();
    receiver.answerNext(500);
    await setAccount({ token_status: 'Expired', token_status_at: T0 });
    await n.tick(T0);
    await setAccount({ token_status: 'Active' });
    await n.tick(T0 + 1000);
    expect(receiver.received).toHaveLength(1);
    await n.tick(T0 + MINUTE);
    expect(events()).toEqual(['token-expired:problem', 'token-expired:problem', 'token-expired:resolved']);
  });

  test('events that are not selected are not sent; without a Webhook URL nothing happens', async () => {
    const n = notifier();
    await setAccount({ token_status: 'Expired', token_status_at: T0 });
    await n.tick(T0);
    expect(await store.db.selectFrom('notification_state').selectAll().execute()).toEqual([]);
    await configure(['messages-held']);
    await n.tick(T0 + MINUTE);
    expect(receiver.received).toHaveLength(0);
  });

  test('Send Test Notification: one attempt, recorded, with the receiver\'s answer in plain words', async () => {
    const n = notifier();
    expect(await n.sendTest('admin', null)).toEqual({ ok: false, httpStatus: null, summary: 'Save a Webhook URL first.' });
    await configure(NOTIFICATION_EVENTS, 'slack');
    receiver.answerNext({ status: 400, body: 'invalid_payload' });
    const result = await n.sendTest('admin', 'http://10.0.0.5:8080');
    expect(result.ok).toBe(false);
    expect(result.summary).toBe(
      'The receiver answered HTTP 400 Bad Request: the receiver did not accept the message. Check that Format matches the receiver: Microsoft Teams Workflows expects the Adaptive Card format, Slack and its kin expect {"text": …}. The receiver said: "invalid_payload".',
    );
    expect(receiver.received).toHaveLength(1);
    expect(receiver.received[0]!.body.text).toContain('http://10.0.0.5:8080/settings/notifications');
    const [record] = await n.recent(1);
    expect(record).toMatchObject({ event: 'test', status: 'failed', httpStatus: 400, attempts: 1 });
  });
});
