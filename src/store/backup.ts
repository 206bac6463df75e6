/**
 * `postern backup <directory>`: a consistent copy of a data directory while the gateway keeps running.
 *
 * Purpose: `cp -r` of a live data directory is not a backup. The SQLite file and its `-wal` are copied at
 *   different moments (a torn database), and a spool copied at another moment than the database misses the
 *   bodies of queued messages or holds orphans. Here the database is copied with SQLite's online backup API
 *   (https://sqlite.org/backup.html) and the bodies are chosen from the rows of that copy, so the two agree.
 * Inputs: the data directory (`postern.sqlite`, `spool/` with `node-id` and `<id>.eml`, `secret.key`) or, with
 *   PostgreSQL, the database for this node's queue rows; a target directory that is new or empty.
 * Outputs, in the target: `postern.sqlite` (SQLite only, rollback-journal mode, one self-contained file);
 *   `spool/<id>.eml` for every message of this node that is not finished; `spool/node-id`; `secret.key` when
 *   the key comes from that file; `manifest.json` last (version, time, schema, counts, files). Files 0600,
 *   directories 0700, each fsynced: "written" is said only about bytes on stable storage.
 * How the copy stays consistent: the whole database is copied in one backup step, that is one read
 *   transaction (a snapshot; in WAL mode the gateway keeps writing meanwhile, and a step in smaller pieces
 *   would start over after each of its commits). The bodies to copy are read from that snapshot. A message
 *   finished by the gateway between the snapshot and the copy of its body (delivered, returned or deleted:
 *   its body is gone) makes the snapshot stale, so it is taken again, and only the bodies it adds are copied
 *   (a few rounds at most). Bodies of finished messages are not needed: the gateway removes them itself.
 * Failure modes: a full disk or an I/O error ends the backup with one line, and what was written into the
 *   target is removed. A body still missing after the rounds (the spool lost it) is a warning naming the
 *   message; the rest of the backup is good. A backup without `manifest.json` is incomplete (interrupted).
 * Known limits: PostgreSQL is not copied here (pg_dump does that); only this node's bodies are taken (other
 *   nodes back up their own); the POSTERN_* settings and the files they name are not in the backup; every
 *   backup is a full copy. Restoring is done by hand (README, "Backup and restore").
 */
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import { constants, existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { isPosternError } from '../errors.js';
import { ACTIVE_STATES } from '../queue/queue.js';
import { bodyFileName as bodyFile, NODE_ID_FILE, spoolDirectory } from '../queue/spool.js';
import type { Database, QueueState } from './schema.js';
import { KEY_FILE_NAME, loadOrCreateMasterKey } from './secret-box.js';
import { DATABASE_FILE } from './store.js';

const MANIFEST_FILE = 'manifest.json';
const FORMAT = 'postern-backup/1';
/** better-sqlite3's largest step: every page in one sqlite3_backup_step, i.e. in one read transaction. */
const ALL_PAGES = 0x7fffffff;
/** Snapshots taken at most, when messages finish while their bodies are being copied. */
const MAX_ROUNDS = 5;
const FINISHED_STATES: readonly QueueState[] = ['sent', 'bounced'];
const ALL_STATES: readonly QueueState[] = ['incoming', 'active', 'deferred', 'held', 'sent', 'bounced'];

export type BackupErrorCode =
  | 'POSTERN_BACKUP_NO_DATA'
  | 'POSTERN_BACKUP_NO_KEY'
  | 'POSTERN_BACKUP_TARGET_NOT_EMPTY'
  | 'POSTERN_BACKUP_TARGET_UNUSABLE'
  | 'POSTERN_BACKUP_FAILED';

/** The backup cannot be made; `message` is one line for the administrator. */
export class BackupError extends Error {
  constructor(
    readonly code: BackupErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BackupError';
  }
}

export interface BackupOptions {
  dataDir: string;
  /** PostgreSQL: only this node's files are backed up. */
  databaseUrl?: string | undefined;
  /** POSTERN_SECRET_KEY: the key is then not in the data directory, and not in the backup. */
  secretKey?: Buffer | undefined;
  /** A new or empty directory. */
  target: string;
}

export interface BackupManifest {
  format: typeof FORMAT;
  postern: string;
  createdAt: string;
  dataDir: string;
  database:
    | { dialect: 'sqlite'; included: true; file: string; schemaVersion: string | null }
    | { dialect: 'postgres'; included: false; schemaVersion: string | null; advice: string };
  nodeId: string | null;
  /** Messages by state: of the whole database (SQLite), or of this node's rows (PostgreSQL). */
  queue: { scope: 'database' | 'this node'; counts: Record<QueueState, number> };
  bodies: {
    /** Messages not finished whose body is in the backup. */
    copied: number;
    /** Messages not finished that another node accepted: their bodies are on that node. */
    otherNodes: number;
    /** Finished messages (sent, bounced): already delivered or returned, no body needed. */
    notNeeded: number;
    /** Messages not finished whose body was not in the spool (each also a warning). */
    missing: string[];
  };
  secretKey: 'included' | 'not included: POSTERN_SECRET_KEY';
  /** Every file of the backup but this manifest, relative to the backup directory. */
  files: Array<{ path: string; bytes: number }>;
}

export interface BackupReport {
  target: string;
  manifest: BackupManifest;
  /** Bytes of all files in the backup, the manifest included. */
  bytes: number;
  warnings: string[];
}

interface WaitingRow {
  id: string;
  node_id: string;
  state: QueueState;
  size: number;
}

interface Snapshot {
  schemaVersion: string | null;
  counts: Record<QueueState, number>;
  waiting: WaitingRow[];
}

/** Writes a backup of `options.dataDir` into `options.target`; see the header for what it holds. */
export async function backupDataDirectory(options: BackupOptions): Promise<BackupReport> {
  const dataDir = resolve(options.dataDir);
  const target = resolve(options.target);
  const spoolDir = spoolDirectory(dataDir);
  const nodeIdPath = join(spoolDir, NODE_ID_FILE);
  const keyPath = join(dataDir, KEY_FILE_NAME);
  const databasePath = join(dataDir, DATABASE_FILE);

  // Checked before the target is touched: a refusal leaves nothing behind.
  if (options.databaseUrl ? !existsSync(nodeIdPath) && !existsSync(keyPath) : !existsSync(databasePath)) {
    throw new BackupError('POSTERN_BACKUP_NO_DATA', `there is no Postern data in ${dataDir} (POSTERN_DATA_DIR): nothing to back up`);
  }
  const keyFromFile = !options.secretKey;
  if (keyFromFile) {
    if (!existsSync(keyPath)) {
      throw new BackupError('POSTERN_BACKUP_NO_KEY', `there is no ${KEY_FILE_NAME} in ${dataDir} and POSTERN_SECRET_KEY is not set: the key for this data is missing`);
    }
    loadOrCreateMasterKey(dataDir, undefined); // a malformed key file fails here (POSTERN_STORE_KEY_INVALID)
  }
  const createdAt = new Date();
  const version = await posternVersion();
  const nodeId = existsSync(nodeIdPath) ? (await readFile(nodeIdPath, 'utf8')).trim() : null;

  const createdTarget = await prepareTarget(target);
  try {
    await mkdir(join(target, 'spool'), { mode: 0o700 });
    await chmod(join(target, 'spool'), 0o700);
    const bodies = new BodyCopier(spoolDir, join(target, 'spool'));
    const { database, snapshot, missing, finishedSince, warnings } = options.databaseUrl
      ? await readPostgres(options.databaseUrl, nodeId, bodies)
      : await copySqlite(databasePath, join(target, DATABASE_FILE), nodeId, bodies);
    warnings.push(...bodies.warnings);

    if (nodeId !== null) await copyPrivate(nodeIdPath, join(target, 'spool', NODE_ID_FILE));
    if (keyFromFile) await copyPrivate(keyPath, join(target, KEY_FILE_NAME));
    await syncFile(join(target, 'spool'));

    const waitingHere = snapshot.waiting.filter((row) => row.node_id === nodeId);
    const manifest: BackupManifest = {
      format: FORMAT,
      postern: version,
      createdAt: createdAt.toISOString(),
      dataDir,
      database,
      nodeId,
      queue: { scope: options.databaseUrl ? 'this node' : 'database', counts: snapshot.counts },
      bodies: {
        copied: bodies.copied.size,
        otherNodes: snapshot.waiting.length - waitingHere.length,
        notNeeded: FINISHED_STATES.reduce((n, state) => n + snapshot.counts[state], 0) + finishedSince,
        missing: missing.map((row) => row.id),
      },
      secretKey: keyFromFile ? 'included' : 'not included: POSTERN_SECRET_KEY',
      files: await listFiles(target),
    };
    const manifestPath = join(target, MANIFEST_FILE);
    await writeFile(manifestPath, JSON.stringify(manifest, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
    await chmod(manifestPath, 0o600);
    await syncFile(manifestPath);
    await syncFile(target);
    const bytes = manifest.files.reduce((n, file) => n + file.bytes, 0) + (await stat(manifestPath)).size;
    return { target, manifest, bytes, warnings };
  } catch (error) {
    // The target was new or empty: everything in it now is this backup's, and half a backup must not pass for one.
    if (createdTarget) await rm(target, { recursive: true, force: true }).catch(() => undefined);
    else for (const name of await readdir(target).catch(() => [])) await rm(join(target, name), { recursive: true, force: true }).catch(() => undefined);
    if (error instanceof BackupError || isPosternError(error)) throw error;
    throw new BackupError('POSTERN_BACKUP_FAILED', `the backup failed and was removed: ${oneLine(error)}`, { cause: error });
  }
}

/** What the database part of a backup found: the snapshot the bodies were chosen from, and what was missing. */
interface DatabasePart {
  database: BackupManifest['database'];
  snapshot: Snapshot;
  /** Messages not finished whose body is not in the spool. */
  missing: WaitingRow[];
  /** Messages read as not finished that were finished before their body was looked for (PostgreSQL). */
  finishedSince: number;
  warnings: string[];
}

/**
 * SQLite: the database copied in one backup step, the bodies chosen from the copy. While a message the copy
 * calls waiting has finished meanwhile (its body gone), the copy is taken again, up to MAX_ROUNDS times.
 */
async function copySqlite(databasePath: string, copyPath: string, nodeId: string | null, bodies: BodyCopier): Promise<DatabasePart> {
  const source = new BetterSqlite3(databasePath, { fileMustExist: true });
  source.pragma('busy_timeout = 5000');
  const live = new Kysely<Database>({ dialect: new SqliteDialect({ database: source }) });
  try {
    await writeFile(copyPath, '', { mode: 0o600, flag: 'wx' });
    let snapshot: Snapshot;
    let missing: WaitingRow[];
    for (let round = 1; ; round++) {
      await source.backup(copyPath, { progress: () => ALL_PAGES });
      snapshot = await readCopy(copyPath, nodeId);
      const needed = snapshot.waiting.filter((row) => row.node_id === nodeId);
      await bodies.keepOnly(new Set(needed.map((row) => row.id)));
      missing = await bodies.copyFor(needed);
      if (missing.length === 0 || round === MAX_ROUNDS) break;
      const now = await liveStates(live, missing.map((row) => row.id));
      if (!missing.some((row) => isFinished(now.get(row.id)))) break;
    }
    const now = await liveStates(live, missing.map((row) => row.id));
    await chmod(copyPath, 0o600);
    await syncFile(copyPath);
    return {
      database: { dialect: 'sqlite', included: true, file: DATABASE_FILE, schemaVersion: snapshot.schemaVersion },
      snapshot,
      missing,
      finishedSince: 0,
      warnings: missing.map((row) => missingBodyWarning(row, now.get(row.id), bodies.from)),
    };
  } finally {
    await live.destroy();
  }
}

/** PostgreSQL: pg_dump copies the database; this node's rows are read live, and their bodies copied. */
async function readPostgres(url: string, nodeId: string | null, bodies: BodyCopier): Promise<DatabasePart> {
  const live = await openPostgres(url);
  try {
    const snapshot = await readQueue(live, nodeId);
    const absent = await bodies.copyFor(snapshot.waiting.filter((row) => row.node_id === nodeId));
    // The rows were read live, not from a copy: a message finished since needs no body.
    const now = await liveStates(live, absent.map((row) => row.id));
    const missing = absent.filter((row) => !isFinished(now.get(row.id)));
    return {
      database: { dialect: 'postgres', included: false, schemaVersion: snapshot.schemaVersion, advice: 'Back up the PostgreSQL database with pg_dump, run just before postern backup.' },
      snapshot,
      missing,
      finishedSince: absent.length - missing.length,
      warnings: missing.map((row) => missingBodyWarning(row, now.get(row.id), bodies.from)),
    };
  } finally {
    await live.destroy();
  }
}

/** A few plain lines for the command line: where, what, how big, what is not in it. */
export function formatBackupReport(report: BackupReport): string {
  const { manifest } = report;
  const counts = manifest.queue.counts;
  const waiting = ACTIVE_STATES.reduce((n, state) => n + counts[state], 0);
  const lines = [`Backup of ${manifest.dataDir} written to ${report.target} (${formatBytes(report.bytes)}, ${manifest.files.length + 1} files, listed in ${MANIFEST_FILE}).`];
  lines.push(
    manifest.database.dialect === 'sqlite'
      ? `Database: a consistent copy of ${DATABASE_FILE} (schema ${manifest.database.schemaVersion ?? 'none'}).`
      : `Database: PostgreSQL is not in this backup: back it up with pg_dump (run it just before postern backup).`,
  );
  const { bodies } = manifest;
  const scope = manifest.queue.scope === 'this node' ? "This node's queue" : 'Queue';
  const parts = [`${bodies.copied} ${bodies.copied === 1 ? 'body' : 'bodies'} copied`];
  if (bodies.otherNodes > 0) parts.push(`${bodies.otherNodes} on other nodes (their bodies are there)`);
  if (bodies.missing.length > 0) parts.push(`${bodies.missing.length} missing (see the warnings)`);
  const finished = bodies.notNeeded > 0 ? ` ${bodies.notNeeded} finished (sent ${counts.sent}, bounced ${counts.bounced}): already delivered, not needed.` : '';
  lines.push(
    `${scope}: ${waiting} ${waiting === 1 ? 'message' : 'messages'} not finished ` +
      `(incoming ${counts.incoming}, active ${counts.active}, deferred ${counts.deferred}, held ${counts.held}): ${parts.join(', ')}.${finished}`,
  );
  lines.push(
    manifest.secretKey === 'included'
      ? `Key: ${KEY_FILE_NAME} is included; keep the backup as private as the data directory.`
      : 'Key: not in the backup, it comes from POSTERN_SECRET_KEY: keep that key separately, the backup cannot be read without it.',
  );
  lines.push('Not included: the POSTERN_* settings and the files they name (e.g. POSTERN_HTTPS_CERT); keep them with the backup.');
  return lines.join('\n') + '\n';
}

// ---- the target -------------------------------------------------------------------------------------

/** Creates `target` (0700) or takes an existing empty directory; true when it was created. */
async function prepareTarget(target: string): Promise<boolean> {
  let entries: string[];
  try {
    entries = await readdir(target);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') throw new BackupError('POSTERN_BACKUP_TARGET_UNUSABLE', `${target} is a file: give a new or empty directory for the backup`);
    if (code !== 'ENOENT') throw new BackupError('POSTERN_BACKUP_TARGET_UNUSABLE', `cannot use ${target} for the backup: ${oneLine(error)}`, { cause: error });
    try {
      await mkdir(target, { recursive: true, mode: 0o700 });
      await chmod(target, 0o700);
    } catch (cause) {
      throw new BackupError('POSTERN_BACKUP_TARGET_UNUSABLE', `cannot create ${target} for the backup: ${oneLine(cause)}`, { cause });
    }
    return true;
  }
  if (entries.length > 0) throw new BackupError('POSTERN_BACKUP_TARGET_NOT_EMPTY', `${target} is not empty: give a new or empty directory for the backup`);
  await chmod(target, 0o700);
  return false;
}

/** Copies the bodies of queue rows from the live spool into the backup's spool, once each. */
class BodyCopier {
  /** id → bytes, of the bodies in the backup. */
  readonly copied = new Map<string, number>();
  readonly warnings: string[] = [];

  constructor(
    readonly from: string,
    private readonly to: string,
  ) {}

  /** Copies the bodies of `rows` not copied yet; returns the rows whose body is not in the spool. */
  async copyFor(rows: WaitingRow[]): Promise<WaitingRow[]> {
    const missing: WaitingRow[] = [];
    for (const row of rows) {
      if (this.copied.has(row.id)) continue;
      const destination = join(this.to, bodyFile(row.id));
      try {
        await copyFile(join(this.from, bodyFile(row.id)), destination, constants.COPYFILE_EXCL);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
          missing.push(row);
          continue;
        }
        throw error;
      }
      await chmod(destination, 0o600);
      await syncFile(destination);
      const bytes = (await stat(destination)).size;
      // A body is complete before its row is committed and never changes after: a difference is damage.
      if (bytes !== Number(row.size)) this.warnings.push(`the body of message ${row.id} has ${bytes} bytes, its queue row says ${row.size}: it may be damaged`);
      this.copied.set(row.id, bytes);
    }
    return missing;
  }

  /** Removes copied bodies whose messages are finished in a newer snapshot. */
  async keepOnly(ids: Set<string>): Promise<void> {
    for (const id of [...this.copied.keys()]) {
      if (ids.has(id)) continue;
      await rm(join(this.to, bodyFile(id)), { force: true });
      this.copied.delete(id);
    }
  }
}

async function copyPrivate(from: string, to: string): Promise<void> {
  await copyFile(from, to, constants.COPYFILE_EXCL);
  await chmod(to, 0o600);
  await syncFile(to);
}

/** fsync of a file or a directory (a directory's sync makes the names of new files in it durable). */
async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function listFiles(root: string, dir = root): Promise<Array<{ path: string; bytes: number }>> {
  const files: Array<{ path: string; bytes: number }> = [];
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(root, path)));
    else files.push({ path: relative(root, path), bytes: (await stat(path)).size });
  }
  return files;
}

// ---- the database -----------------------------------------------------------------------------------

/** Reads the copy, and leaves it in rollback-journal mode: one file, no `-wal` beside it. */
async function readCopy(copyPath: string, nodeId: string | null): Promise<Snapshot> {
  const copy = new BetterSqlite3(copyPath, { fileMustExist: true });
  copy.pragma('journal_mode = DELETE');
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: copy }) });
  try {
    return await readQueue(db, nodeId, 'database');
  } finally {
    await db.destroy();
  }
}

async function openPostgres(url: string): Promise<Kysely<Database>> {
  const { default: pg } = await import('pg');
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  pool.on('error', () => undefined); // a dropped idle connection: the next query reports it
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    await sql`select 1`.execute(db);
  } catch (cause) {
    await db.destroy();
    throw new BackupError('POSTERN_BACKUP_FAILED', `cannot reach the PostgreSQL database (POSTERN_DATABASE_URL): ${oneLine(cause)}`, { cause });
  }
  return db;
}

/** Schema version, counts by state and the messages not finished: of the database, or of one node's rows. */
async function readQueue(db: Kysely<Database>, nodeId: string | null, scope: 'database' | 'this node' = 'this node'): Promise<Snapshot> {
  const migration = await sql<{ name: string }>`select name from kysely_migration order by name desc limit 1`.execute(db);
  let counted = db.selectFrom('queue_messages').select(['state', (eb) => eb.fn.countAll<number | string>().as('n')]).groupBy('state');
  let waiting = db.selectFrom('queue_messages').select(['id', 'node_id', 'state', 'size']).where('state', 'in', ACTIVE_STATES).orderBy('received_at');
  if (scope === 'this node') {
    counted = counted.where('node_id', '=', nodeId ?? '');
    waiting = waiting.where('node_id', '=', nodeId ?? '');
  }
  const counts = Object.fromEntries(ALL_STATES.map((state) => [state, 0])) as Record<QueueState, number>;
  for (const row of await counted.execute()) counts[row.state] = Number(row.n);
  const rows = await waiting.execute();
  return { schemaVersion: migration.rows[0]?.name ?? null, counts, waiting: rows.map((row) => ({ ...row, size: Number(row.size) })) };
}

/** The live state of each message now (absent: deleted, or finished and purged). */
async function liveStates(db: Kysely<Database>, ids: string[]): Promise<Map<string, QueueState>> {
  const states = new Map<string, QueueState>();
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db.selectFrom('queue_messages').select(['id', 'state']).where('id', 'in', ids.slice(i, i + 500)).execute();
    for (const row of rows) states.set(row.id, row.state);
  }
  return states;
}

const isFinished = (state: QueueState | undefined) => state === undefined || FINISHED_STATES.includes(state);

function missingBodyWarning(row: WaitingRow, now: QueueState | undefined, spoolDir: string): string {
  const why = now === undefined ? 'it was deleted since' : isFinished(now) ? `it was ${now} since` : 'the gateway still waits to send it, so the spool has lost it';
  return `the body of queued message ${row.id} (${row.state}) is not in ${spoolDir}: ${why}; after a restore, remove it with "postern queue delete ${row.id}"`;
}

// ---- small helpers ----------------------------------------------------------------------------------

async function posternVersion(): Promise<string> {
  // ../../package.json from src/store and from dist/store alike.
  const text = await readFile(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

const oneLine = (error: unknown) => (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim();
