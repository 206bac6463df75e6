/**
 * The same store on PostgreSQL: migrations, encrypted secrets, users, OAuth accounts and leases, against the
 * machine's PostgreSQL (POSTERN_TEST_DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres; .ci/run
 * sets it when a server is running). Each run creates and drops its own database.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLogger } from '../src/log.js';
import { NOTIFICATION_EVENTS } from '../src/notify/events.js';
import { Notifier } from '../src/notify/notifier.js';
import { NotificationSettings } from '../src/notify/settings.js';
import { OAuthAccounts } from '../src/oauth/accounts.js';
import { AuditLog } from '../src/store/audit.js';
import { openStore, type Store } from '../src/store/store.js';
import { Users } from '../src/store/users.js';
import { adminQuery, createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';
import { startWebhookReceiver } from './support/webhook-receiver.js';

let database: TestDatabase;
let store: Store | undefined;
const connectionErrors: Error[] = [];

describe.skipIf(!POSTGRES_ADMIN_URL)('PostgreSQL store (POSTERN_TEST_DATABASE_URL)', () => {
  let url: string;

  beforeAll(async () => {
    database = await createTestDatabase('postern_test');
    url = database.url;
    store = await openStore({
      dataDir: mkdtempSync(join(tmpdir(), 'postern-pg-')),
      databaseUrl: url,
      onConnectionError: (error) => connectionErrors.push(error),
    });
  });

  afterAll(async () => {
    await store?.close();
    await database?.drop();
  });

  test('migrations ran and the key check is stored encrypted', async () => {
    expect(store!.dialect).toBe('postgres');
    const meta = await store!.db.selectFrom('meta').selectAll().execute();
    expect(meta.find((row) => row.key === 'key_check')?.value).toMatch(/^v1\./);
  });

  test('users: first administrator, hashing and authentication', async () => {
    const users = new Users(store!);
    const { generatedPassword } = await users.ensureFirstAdministrator(undefined);
    expect(generatedPassword).toMatch(/^[A-Za-z0-9]{20}$/);
    expect(await users.authenticate('admin', generatedPassword!)).toMatchObject({ username: 'admin', role: 'Administrator' });
    expect(await users.authenticate('admin', 'wrong')).toBeUndefined();
  });

  test('OAuth accounts: tokens round-trip encrypted; the refresh lease is exclusive', async () => {
    const accounts = new OAuthAccounts(store!);
    await accounts.getOrCreate('microsoft');
    const now = Date.now();
    await accounts.transition('microsoft', 'Active', {
      tokens: { accessToken: 'at-secret', refreshToken: 'rt-secret', expiresAt: now + 3_600_000, scope: 'x', mailbox: 'a@example.test', displayName: undefined },
      keepRefreshToken: false,
      at: now,
    });
    const row = (await accounts.get('microsoft'))!;
    expect(row.access_token_expires_at).toBe(now + 3_600_000);
    expect(typeof row.access_token_expires_at).toBe('number');
    expect(row.access_token_enc).not.toContain('at-secret');
    expect(accounts.accessToken(row)).toBe('at-secret');
    expect(accounts.refreshToken(row)).toBe('rt-secret');
    expect(await accounts.acquireRefreshLease('microsoft', 'one', now, 30_000)).toBe(true);
    expect(await accounts.acquireRefreshLease('microsoft', 'two', now, 30_000)).toBe(false);
    await accounts.releaseRefreshLease('microsoft', 'one');
    expect(await accounts.acquireRefreshLease('microsoft', 'two', now, 30_000)).toBe(true);
  });

  test('notifications: two instances that see the same Expired token and held message notify once between them', async () => {
    const receiver = await startWebhookReceiver();
    const second = await openStore({ dataDir: mkdtempSync(join(tmpdir(), 'postern-pg-')), databaseUrl: url, secretKey: store!.masterKey });
    const instance = (on: Store, id: string) =>
      new Notifier({
        store: on,
        settings: new NotificationSettings(on),
        http: { fetchFor: async () => (target, init) => fetch(target, init) },
        audit: new AuditLog(on),
        log: createLogger('silent'),
        remoteUiBase: () => 'http://postern.invalid',
        messageLifetimeMs: 5 * 24 * 60 * 60_000,
        instanceId: id,
      });
    try {
      await new NotificationSettings(store!).save({ webhookUrl: `${receiver.origin}/hook?sig=x`, format: 'json', events: [...NOTIFICATION_EVENTS] }, 'admin', null);
      const [a, b] = [instance(store!, 'a'), instance(second, 'b')];
      await Promise.all([a.tick(), b.tick()]);
      const now = Date.now();
      await new OAuthAccounts(store!).update('microsoft', { enabled: 1 });
      await new OAuthAccounts(store!).transition('microsoft', 'Expired', {});
      await store!.db
        .insertInto('queue_messages')
        .values({
          id: '00000000-0000-4000-8000-000000000001', node_id: 'node', state: 'held', reverse_path: 'scanner@printers.local', recipients: '["bob@example.test"]',
          size: 10, body_8bit: 0, smtputf8: 0, header_from: null, subject: 'scan', message_id_header: null, client: 'device', is_bounce: 0, attempts: 0,
          received_at: now, next_attempt_at: now, expires_at: now + 1, lease_owner: null, lease_until: null, last_code: null,
          last_reply: 'the authorization expired', last_advice: null, done_at: null,
        })
        .execute();
      await store!.db.insertInto('delivery_log').values({ queue_id: '00000000-0000-4000-8000-000000000001', at: now, event: 'held', recipients: null, code: null, reply: null, advice: null }).execute();
      for (const ahead of [0, 0, 16 * 60_000, 16 * 60_000]) await Promise.all([a.tick(now + ahead), b.tick(now + ahead)]);
      expect(receiver.received.map((r) => r.body.event).sort()).toEqual(['messages-held', 'token-expired']);
      expect(await store!.db.selectFrom('notifications').select(['event', 'status']).orderBy('id').execute()).toEqual([
        { event: 'token-expired', status: 'delivered' },
        { event: 'messages-held', status: 'delivered' },
      ]);
    } finally {
      await second.close();
      await receiver.close();
    }
  });

  test('a second instance with another key is refused with a clear message', async () => {
    await expect(
      openStore({ dataDir: mkdtempSync(join(tmpdir(), 'postern-pg-')), databaseUrl: url, secretKey: Buffer.alloc(32, 7) }),
    ).rejects.toThrow(/POSTERN_SECRET_KEY does not match/);
  });

  test('a connection the server terminates is reported and replaced; the process goes on', async () => {
    await store!.db.selectFrom('meta').select('key').execute();
    const [row] = await adminQuery<{ n: number }>(
      'select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()',
      [database.name],
    );
    expect(row!.n).toBeGreaterThan(0);
    await expect.poll(() => connectionErrors.length).toBeGreaterThan(0);
    expect((await store!.db.selectFrom('meta').select('key').execute()).length).toBeGreaterThan(0);
  });
});
