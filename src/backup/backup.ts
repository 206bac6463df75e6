/**
 * `postern backup <directory>`: a consistent copy of a data directory while the gateway keeps running.
 *
 * Purpose: `cp -r` of a live data directory is not a backup. The SQLite file and its `-wal` are copied at
 *   different moments (a torn database), and a spool copied at another moment than the database misses the
 *   bodies of queued messages or holds orphans. Here the database is copied with SQLite's online backup API
 *   (https://sqlite.org/backup.html), through the store's own connection, and the bodies are chosen from the
 *   rows of that copy, so the two agree (backup/database-copy.ts; the files: backup/spool-copy.ts).
 * Inputs: the data directory (`postern.sqlite`, `spool/` with `node-id` and `<id>.eml`, `secret.key`) or, with
 *   PostgreSQL, the database for this node's queue rows; a target directory that is new or empty.
 * Outputs, in the target: `postern.sqlite` (SQLite only, rollback-journal mode, one self-contained file);
 *   `spool/<id>.eml` for every message of this node that is not finished; `spool/node-id`; `secret.key` when
 *   the key comes from that file; `manifest.json` last (version, time, schema, counts, files with their
 *   sizes and SHA-256, which `postern restore` checks: backup/restore.ts). Each file's checksum is computed
 *   from the bytes as they are written, but the database copy's: SQLite's backup API writes that file, so
 *   it is read once more when it is complete. Files 0600,
 *   directories 0700, each fsynced: "written" is said only about bytes on stable storage.
 * How the copy stays consistent: see backup/database-copy.ts (one snapshot, the bodies chosen from it, taken
 *   again when messages finish meanwhile). Bodies of finished messages are not needed: the gateway removes
 *   them itself.
 * Failure modes: a full disk or an I/O error ends the backup with one line (a PosternError with a
 *   POSTERN_BACKUP_* code), and what was written into the target is removed. A key that does not open the
 *   database, or a PostgreSQL server that cannot be reached, is the store's own error. A body still missing
 *   after the rounds (the spool lost it) is a warning naming the message; the rest of the backup is good. A
 *   backup without `manifest.json` is incomplete (interrupted).
 * Known limits: PostgreSQL is not copied here (pg_dump does that); only this node's bodies are taken (other
 *   nodes back up their own); the POSTERN_* settings and the files they name are not in the backup; every
 *   backup is a full copy. The store is opened as the gateway opens it, so a backup by a newer Postern than
 *   the running gateway first brings the database's schema up to date. Restoring is done by hand (README, "Backup and restore").
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ErrorCodes, isPosternError, PosternError } from '../errors.js';
import { NODE_ID_FILE, spoolDirectory } from '../queue/spool.js';
import type { QueueState } from '../store/schema.js';
import { KEY_FILE_NAME, loadOrCreateMasterKey } from '../store/secret-box.js';
import { DATABASE_FILE, openStore } from '../store/store.js';
import { copySqlite, FINISHED_STATES, readPostgres } from './database-copy.js';
import { BodyCopier, copyPrivate, listFilesWithChecksums, sha256Of, syncFile, type Checksums } from './spool-copy.js';
import { packageInfo } from '../package-info.js';

export { formatBackupReport } from './report.js';

export const MANIFEST_FILE = 'manifest.json';
export const FORMAT = 'postern-backup/1';

const BACKUP_CODES: ReadonlySet<string> = new Set([
  ErrorCodes.BACKUP_NO_DATA,
  ErrorCodes.BACKUP_NO_KEY,
  ErrorCodes.BACKUP_TARGET_NOT_EMPTY,
  ErrorCodes.BACKUP_TARGET_UNUSABLE,
  ErrorCodes.BACKUP_FAILED,
  ErrorCodes.BACKUP_NOT_A_BACKUP,
  ErrorCodes.BACKUP_UNVERIFIED,
  ErrorCodes.BACKUP_DAMAGED,
  ErrorCodes.BACKUP_GATEWAY_RUNNING,
  ErrorCodes.BACKUP_DATA_DIR_NOT_EMPTY,
  ErrorCodes.BACKUP_DATABASE_MISMATCH,
  ErrorCodes.BACKUP_RESTORE_FAILED,
]);

/** The backup cannot be made, or restored (a POSTERN_BACKUP_* code); `message` is one line for the administrator. */
export function isBackupError(error: unknown): error is PosternError {
  return isPosternError(error) && BACKUP_CODES.has(error.code);
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
    /** Messages not finished whose body is in the database (PostgreSQL): pg_dump copies those. */
    inDatabase: number;
    /** Finished messages (sent, bounced): already delivered or returned, no body needed. */
    notNeeded: number;
    /** Messages not finished whose body was not in the spool (each also a warning). */
    missing: string[];
  };
  secretKey: 'included' | 'not included: POSTERN_SECRET_KEY';
  /**
   * Every file of the backup but this manifest, relative to the backup directory, with its SHA-256 (hex).
   * Manifests written before checksums were recorded have none: such a backup cannot be verified.
   */
  files: Array<{ path: string; bytes: number; sha256?: string }>;
}

export interface BackupReport {
  target: string;
  manifest: BackupManifest;
  /** Bytes of all files in the backup, the manifest included. */
  bytes: number;
  warnings: string[];
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
    throw new PosternError(ErrorCodes.BACKUP_NO_DATA, `there is no Postern data in ${dataDir} (POSTERN_DATA_DIR): nothing to back up`);
  }
  const keyFromFile = !options.secretKey;
  if (keyFromFile) {
    if (!existsSync(keyPath)) {
      throw new PosternError(ErrorCodes.BACKUP_NO_KEY, `there is no ${KEY_FILE_NAME} in ${dataDir} and POSTERN_SECRET_KEY is not set: the key for this data is missing`);
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
    const checksums: Checksums = new Map();
    const bodies = new BodyCopier(spoolDir, join(target, 'spool'), checksums, 'spool');
    // The gateway's own store: the same database, opened as the gateway opens it (the key is checked), but
    // never migrated: the copy is of the database as it is.
    const store = await openStore({ dataDir, databaseUrl: options.databaseUrl, secretKey: options.secretKey, migrate: false });
    let part: Awaited<ReturnType<typeof copySqlite>>;
    try {
      part = options.databaseUrl ? await readPostgres(store, nodeId, bodies) : await copySqlite(store, join(target, DATABASE_FILE), nodeId, bodies);
    } finally {
      await store.close();
    }
    const { database, snapshot, missing, finishedSince, warnings } = part;
    warnings.push(...bodies.warnings);
    // Written by SQLite's backup API, not by a stream here: read once, now that it is complete.
    if (database.dialect === 'sqlite') checksums.set(DATABASE_FILE, await sha256Of(join(target, DATABASE_FILE)));

    if (nodeId !== null) checksums.set(join('spool', NODE_ID_FILE), await copyPrivate(nodeIdPath, join(target, 'spool', NODE_ID_FILE)));
    if (keyFromFile) checksums.set(KEY_FILE_NAME, await copyPrivate(keyPath, join(target, KEY_FILE_NAME)));
    await syncFile(join(target, 'spool'));

    const waitingHere = snapshot.waiting.filter((message) => message.nodeId === nodeId);
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
        inDatabase: waitingHere.filter((message) => message.bodyInDatabase).length,
        notNeeded: FINISHED_STATES.reduce((n, state) => n + snapshot.counts[state], 0) + finishedSince,
        missing: missing.map((message) => message.id),
      },
      secretKey: keyFromFile ? 'included' : 'not included: POSTERN_SECRET_KEY',
      files: await listFilesWithChecksums(target, checksums),
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
    if (isPosternError(error)) throw error;
    throw new PosternError(ErrorCodes.BACKUP_FAILED, `the backup failed and was removed: ${oneLine(error)}`, { cause: error });
  }
}

/** Creates `target` (0700) or takes an existing empty directory; true when it was created. */
async function prepareTarget(target: string): Promise<boolean> {
  let entries: string[];
  try {
    entries = await readdir(target);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') throw new PosternError(ErrorCodes.BACKUP_TARGET_UNUSABLE, `${target} is a file: give a new or empty directory for the backup`);
    if (code !== 'ENOENT') throw new PosternError(ErrorCodes.BACKUP_TARGET_UNUSABLE, `cannot use ${target} for the backup: ${oneLine(error)}`, { cause: error });
    try {
      await mkdir(target, { recursive: true, mode: 0o700 });
      await chmod(target, 0o700);
    } catch (cause) {
      throw new PosternError(ErrorCodes.BACKUP_TARGET_UNUSABLE, `cannot create ${target} for the backup: ${oneLine(cause)}`, { cause });
    }
    return true;
  }
  if (entries.length > 0) throw new PosternError(ErrorCodes.BACKUP_TARGET_NOT_EMPTY, `${target} is not empty: give a new or empty directory for the backup`);
  await chmod(target, 0o700);
  return false;
}

async function posternVersion(): Promise<string> {
  return packageInfo().version;
}

const oneLine = (error: unknown) => (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim();
