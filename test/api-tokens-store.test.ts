/**
 * The API token owner (src/api/tokens.ts) on both stores: only a hash is kept, a presented token is found by
 * its prefix and checked, and the three refusals (invalid, expired, revoked) are told apart. PostgreSQL runs
 * when POSTERN_TEST_DATABASE_URL is set (its bigint columns come back as strings).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ApiTokens, isWellFormedToken } from '../src/api/tokens.js';
import { openStore, type Store } from '../src/store/store.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';

const DAY = 24 * 60 * 60_000;

const backends = [
  { name: 'SQLite', postgres: false },
  ...(POSTGRES_ADMIN_URL ? [{ name: 'PostgreSQL', postgres: true }] : []),
];

describe.each(backends)('API tokens on $name', ({ postgres }) => {
  let store: Store;
  let database: TestDatabase | undefined;
  let now = Date.UTC(2026, 11, 1, 12, 0, 0);
  let tokens: ApiTokens;

  beforeAll(async () => {
    database = postgres ? await createTestDatabase('postern_api_tokens') : undefined;
    store = await openStore({ dataDir: mkdtempSync(join(tmpdir(), 'postern-api-tokens-')), databaseUrl: database?.url });
    tokens = new ApiTokens(store, { now: () => now });
  });

  afterAll(async () => {
    await store?.close();
    await database?.drop();
  });

  test('a created token authenticates; the store keeps its hash and prefix, never the token', async () => {
    const { token, secret } = await tokens.create({ name: 'nightly', scope: 'operate', expiresInDays: 90, createdBy: 'admin' });
    expect(isWellFormedToken(secret)).toBe(true);
    expect(token).toMatchObject({ name: 'nightly', scope: 'operate', prefix: secret.slice(0, 12), createdBy: 'admin', status: 'Active', expiresAt: now + 90 * DAY });
    const result = await tokens.authenticate(secret);
    expect(result).toMatchObject({ ok: true, token: { id: token.id, lastUsedAt: now } });
    expect(typeof (await tokens.find(token.id))!.createdAt).toBe('number');
    const dump = JSON.stringify(await store.db.selectFrom('api_tokens').selectAll().execute());
    expect(dump).not.toContain(secret.slice(12));
  });

  test('malformed, unknown (even with a known prefix), expired and revoked tokens are told apart', async () => {
    const { token, secret } = await tokens.create({ name: 'short', scope: 'read', expiresInDays: 1, createdBy: 'admin' });
    expect(await tokens.authenticate('pst_short')).toEqual({ ok: false, reason: 'invalid' });
    expect(await tokens.authenticate(`Bearer ${secret}`)).toEqual({ ok: false, reason: 'invalid' });
    const samePrefix = secret.slice(0, 12) + 'A'.repeat(secret.length - 12);
    expect(await tokens.authenticate(samePrefix === secret ? `${secret.slice(0, -1)}B` : samePrefix)).toEqual({ ok: false, reason: 'invalid' });
    now += DAY;
    expect(await tokens.authenticate(secret)).toMatchObject({ ok: false, reason: 'expired', token: { id: token.id, status: 'Expired' } });
    expect(await tokens.revoke(token.id, 'admin')).toMatchObject({ status: 'Revoked', revokedBy: 'admin' });
    expect(await tokens.authenticate(secret)).toMatchObject({ ok: false, reason: 'revoked' });
    expect(await tokens.revoke(token.id, 'admin')).toBeUndefined();
    expect((await tokens.list()).map((t) => t.name)).toEqual(['nightly']);
  });

  test('the form is checked: name, unique among tokens not revoked, scope, 1 to 365 days', async () => {
    expect(await tokens.validate({ name: ' ops ', scope: 'administer', expiresInDays: '' })).toEqual({ ok: true, value: { name: 'ops', scope: 'administer', expiresInDays: 90 } });
    const refused = await tokens.validate({ name: 'Nightly', scope: 'root', expiresInDays: '0' });
    expect(refused).toEqual({
      ok: false,
      errors: {
        name: 'A token named Nightly already exists. Revoke it first or choose another name.',
        scope: 'Choose Read, Operate or Administer.',
        expiresInDays: 'Enter a whole number of days from 1 to 365.',
      },
    });
    expect((await tokens.validate({ name: 'short', scope: 'read', expiresInDays: '365' })).ok).toBe(true);
    expect((await tokens.validate({ name: 'x\u0000y', scope: 'read', expiresInDays: '366' })).ok).toBe(false);
  });
});
