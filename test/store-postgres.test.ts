/**
 * The same store on PostgreSQL: migrations, encrypted secrets, users, OAuth accounts and leases, against the
 * machine's PostgreSQL (POSTERN_TEST_DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres; .ci/run
 * sets it when a server is running). Each run creates and drops its own database.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { OAuthAccounts } from '../src/oauth/accounts.js';
import { openStore, type Store } from '../src/store/store.js';
import { Users } from '../src/store/users.js';
import { adminQuery, createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';

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
    await accounts.saveTokens(
      'microsoft',
      { accessToken: 'at-secret', refreshToken: 'rt-secret', expiresAt: now + 3_600_000, scope: 'x', mailbox: 'a@example.test', displayName: undefined },
      { keepRefreshToken: false, now },
    );
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
