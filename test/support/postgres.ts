/**
 * A PostgreSQL database of a test's own on the server POSTERN_TEST_DATABASE_URL names (the machine's local
 * server in CI, trust auth; .ci/run sets it). Tests that need one skip without it.
 */
import pg from 'pg';

export const POSTGRES_ADMIN_URL = process.env.POSTERN_TEST_DATABASE_URL;

/** Runs one statement as the administrator (the database named in POSTERN_TEST_DATABASE_URL). */
export async function adminQuery<Row extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<Row[]> {
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  try {
    return (await admin.query<Row>(text, values)).rows;
  } finally {
    await admin.end();
  }
}

export interface TestDatabase {
  name: string;
  /** Connection URL of the new database. */
  url: string;
  /** Drops it, closing whatever is still connected. */
  drop(): Promise<void>;
}

/** Creates a fresh database `<prefix>_<pid>_<time>`. */
export async function createTestDatabase(prefix: string): Promise<TestDatabase> {
  if (!POSTGRES_ADMIN_URL) throw new Error('POSTERN_TEST_DATABASE_URL is not set');
  const name = `${prefix}_${process.pid}_${Date.now()}`;
  await adminQuery(`create database ${name}`);
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  return { name, url: url.href, drop: () => adminQuery(`drop database if exists ${name} with (force)`).then(() => undefined) };
}
