/**
 * The store: one Kysely database (SQLite embedded by default, PostgreSQL when POSTERN_DATABASE_URL is set),
 * migrated at start-up, plus the SecretBox that seals secrets at rest.
 *
 * SQLite runs in WAL mode with synchronous=FULL: a commit that returned is on stable storage, which the
 * relay relies on before it answers 250 (docs/decisions/002-store-sqlite-wal-full-and-secrets.md).
 */
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type SqliteDatabase } from 'kysely';
import { chmodSync, closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import type { PoolClient } from 'pg';
import { ErrorCodes, PosternError } from '../errors.js';
import { ensureDataDirectory } from './data-dir.js';
import { migrationProvider, type DialectName } from './migrations.js';
import type { Database } from './schema.js';
import { SecretBox, loadOrCreateMasterKey } from './secret-box.js';

export interface StoreOptions {
  dataDir: string;
  databaseUrl?: string | undefined;
  secretKey?: Buffer | undefined;
  /**
   * Called when an idle PostgreSQL connection fails (server restart, network cut, a terminated backend). The
   * pool drops that connection and the next query opens a new one; without a listener the error would end the
   * process.
   */
  onConnectionError?: ((error: Error) => void) | undefined;
  /**
   * Bring the schema up to date (default). The backup opens the gateway's database with `false`: a copy
   * must be of the database as it is, and a backup run by a newer Postern must not change a running
   * gateway's schema under it.
   */
  migrate?: boolean | undefined;
}

export interface Store {
  db: Kysely<Database>;
  dialect: DialectName;
  secrets: SecretBox;
  /** Master key, for deriving other keys (session cookie signing). */
  masterKey: Buffer;
  keySource: 'environment' | 'file' | 'generated';
  /** Where the SQLite file lives (undefined for PostgreSQL). */
  databaseFile: string | undefined;
  /** Resolves when the database answers a trivial query (/healthz); rejects otherwise. */
  ping(): Promise<void>;
  /** The latest migration applied: the schema version (null before the first). */
  schemaVersion(): Promise<string | null>;
  /**
   * SQLite: copies the whole database into the file `path` with SQLite's online backup API
   * (https://sqlite.org/backup.html) in one step, that is in one read transaction: a snapshot, while writers
   * go on (a step in smaller pieces would start over after each of their commits). The copy keeps the
   * source's journal mode until it is opened with `openDatabaseCopy`. PostgreSQL: rejects (pg_dump copies it).
   */
  copyDatabase(path: string): Promise<void>;
  /**
   * PostgreSQL: LISTEN on `channel` on a connection of its own; `onNotify` gets each payload, `onError` a
   * lost connection (the listener is then closed; listen again). SQLite: undefined (one process per file).
   */
  listen?: ((channel: string, onNotify: (payload: string) => void, onError: (error: Error) => void) => Promise<{ close(): Promise<void> }>) | undefined;
  /**
   * PostgreSQL: one connection of the pool, for the caller alone until it calls `release()` (pass an error to
   * close the connection instead of giving it back: after an interrupted COPY, say). The body store streams
   * long bodies over it with COPY. SQLite: undefined.
   */
  connect?: (() => Promise<PoolClient>) | undefined;
  close(): Promise<void>;
}

/** A copy of the SQLite database (`Store.copyDatabase`), opened as it is: no migration, no key. */
export interface DatabaseCopy {
  db: Kysely<Database>;
  schemaVersion(): Promise<string | null>;
  close(): Promise<void>;
}

/** The SQLite database's file name in the data directory. */
export const DATABASE_FILE = 'postern.sqlite';

/** better-sqlite3's largest backup step: every page in one sqlite3_backup_step, i.e. in one read transaction. */
const ALL_PAGES = 0x7fffffff;

const KEY_CHECK = 'key_check';
const KEY_CHECK_PLAINTEXT = 'postern key check';

export async function openStore(options: StoreOptions): Promise<Store> {
  ensureDataDirectory(options.dataDir);
  const { key, source } = loadOrCreateMasterKey(options.dataDir, options.secretKey);
  const secrets = new SecretBox(key);

  let db: Kysely<Database>;
  let dialect: DialectName;
  let databaseFile: string | undefined;
  let sqlite: BetterSqlite3.Database | undefined;
  let listen: Store['listen'];
  let connect: Store['connect'];
  if (options.databaseUrl) {
    dialect = 'postgres';
    // Loaded only for PostgreSQL: the embedded default has no use for it.
    const { default: pg } = await import('pg');
    // int8 (bigint) columns hold millisecond timestamps, well inside Number's safe range.
    pg.types.setTypeParser(20, (value) => Number(value));
    // A server that does not answer fails the connection after 10 s instead of never (pg waits for ever by default).
    const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 12, connectionTimeoutMillis: 10_000 });
    pool.on('error', (error) => options.onConnectionError?.(error));
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    connect = () => pool.connect();
    const url = options.databaseUrl;
    listen = async (channel, onNotify, onError) => {
      if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new TypeError(`not a channel name: ${channel}`);
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
      let closed = false;
      const close = async () => {
        if (closed) return;
        closed = true;
        await client.end().catch(() => undefined);
      };
      client.on('notification', (message) => {
        if (message.channel === channel) onNotify(message.payload ?? '');
      });
      client.on('error', (error) => {
        void close();
        onError(error);
      });
      client.on('end', () => {
        if (!closed) {
          closed = true;
          onError(new Error('the LISTEN connection ended'));
        }
      });
      await client.connect();
      await client.query(`listen ${channel}`);
      return { close };
    };
  } else {
    dialect = 'sqlite';
    databaseFile = join(options.dataDir, DATABASE_FILE);
    // Owner-only, whatever the umask or the data directory's own mode: the file holds password hashes, the
    // audit log and message metadata. SQLite gives its -wal and -shm files the database file's mode.
    closeSync(openSync(databaseFile, 'a', 0o600));
    chmodSync(databaseFile, 0o600);
    sqlite = new BetterSqlite3(databaseFile);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = FULL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
  }

  try {
    if (options.migrate === false) {
      await sql`select 1`.execute(db).catch((error: unknown) => {
        throw dialect === 'postgres' ? postgresUnavailable(options.databaseUrl!, error) : error;
      });
    } else {
      const migrator = new Migrator({ db, provider: migrationProvider(dialect) });
      const { error } = await migrator.migrateToLatest();
      if (error) throw dialect === 'postgres' ? postgresUnavailable(options.databaseUrl!, error) : error;
    }

    const check = await db.selectFrom('meta').select('value').where('key', '=', KEY_CHECK).executeTakeFirst();
    if (check) {
      try {
        secrets.decrypt(check.value, 'meta.key_check');
      } catch (cause) {
        throw new PosternError(
          ErrorCodes.STORE_KEY_MISMATCH,
          source === 'environment'
            ? 'POSTERN_SECRET_KEY does not match the key this database was created with; set the original key.'
            : `The key file in ${options.dataDir} does not match the key this database was created with; restore the original secret.key.`,
          { cause },
        );
      }
    } else {
      await db
        .insertInto('meta')
        .values({ key: KEY_CHECK, value: secrets.encrypt(KEY_CHECK_PLAINTEXT, 'meta.key_check') })
        .execute();
    }
  } catch (error) {
    await db.destroy();
    throw error;
  }

  return {
    db,
    dialect,
    secrets,
    masterKey: key,
    keySource: source,
    databaseFile,
    async ping() {
      await sql`select 1`.execute(db);
    },
    schemaVersion: () => schemaVersionOf(db),
    listen,
    connect,
    async copyDatabase(path) {
      if (!sqlite) throw new Error('a PostgreSQL database is copied with pg_dump, not by Postern');
      await sqlite.backup(path, { progress: () => ALL_PAGES });
    },
    async close() {
      await db.destroy();
    },
  };
}

/**
 * Opens a copy made by `Store.copyDatabase` (the file must exist) and leaves it in rollback-journal mode: one
 * self-contained file, no `-wal` beside it.
 */
export async function openDatabaseCopy(path: string): Promise<DatabaseCopy> {
  const copy = new BetterSqlite3(path, { fileMustExist: true });
  try {
    copy.pragma('journal_mode = DELETE');
  } catch (error) {
    copy.close();
    throw error;
  }
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: copy }) });
  return { db, schemaVersion: () => schemaVersionOf(db), close: () => db.destroy() };
}

async function schemaVersionOf(db: Kysely<Database>): Promise<string | null> {
  const migration = await sql<{ name: string }>`select name from kysely_migration order by name desc limit 1`.execute(db);
  return migration.rows[0]?.name ?? null;
}

/**
 * Kysely's SQLite driver prepares every query anew; the relay runs the same few statements for every message.
 * Prepared statements are kept by SQL text (bounded). Safe because Kysely runs one query at a time on the
 * single SQLite connection.
 */
function withStatementCache(sqlite: BetterSqlite3.Database, limit = 256): SqliteDatabase {
  const cache = new Map<string, BetterSqlite3.Statement>();
  return {
    close: () => sqlite.close(),
    prepare(text: string) {
      let statement = cache.get(text);
      if (!statement) {
        if (cache.size >= limit) cache.clear();
        statement = sqlite.prepare(text);
        cache.set(text, statement);
      }
      return statement as unknown as ReturnType<SqliteDatabase['prepare']>;
    },
  };
}

/** Runs `fn` in a transaction; on SQLite an immediate one, so concurrent writers queue instead of failing. */
export async function inTransaction<T>(store: Store, fn: (trx: Kysely<Database>) => Promise<T>): Promise<T> {
  if (store.dialect === 'sqlite') {
    // better-sqlite3 is synchronous under the hood; Kysely serialises access to the single connection, so a
    // plain transaction is already exclusive within this process.
    return store.db.transaction().execute(fn);
  }
  return store.db.transaction().setIsolationLevel('read committed').execute(fn);
}

export { sql };

/** Where a PostgreSQL URL points, without its user name or password. */
function serverOf(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname || 'localhost'}:${parsed.port || '5432'}${parsed.pathname}`;
  } catch {
    return 'the configured server';
  }
}

/**
 * A failure to reach or log in to PostgreSQL at start-up, in one line that names the server and the reason.
 * Other errors (a failed migration, say) pass through unchanged.
 */
export function postgresUnavailable(url: string, error: unknown): unknown {
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  const at = `PostgreSQL at ${serverOf(url)} (POSTERN_DATABASE_URL)`;
  let reason: string | undefined;
  if (code === 'ECONNREFUSED') reason = 'refused the connection: is the server running and listening on that address and port?';
  else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') reason = 'cannot be reached: the host name was not found';
  else if (code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || /timeout/i.test(message)) reason = 'did not answer in time';
  else if (code === 'ECONNRESET') reason = 'closed the connection (does it require TLS? add ?sslmode=require)';
  else if (code === '28P01' || code === '28000') reason = `refused the login: ${message}`;
  else if (code === '3D000') reason = `has no such database: ${message}`;
  else if (code === '53300') reason = 'has no connection slot free (too many connections)';
  else if (code === '57P03') reason = 'is starting up or shutting down; try again shortly';
  if (!reason) return error;
  return new PosternError(ErrorCodes.STORE_UNAVAILABLE, `${at} ${reason}`, { cause: error });
}
