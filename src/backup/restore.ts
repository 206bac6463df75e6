/**
 * `postern restore <backup-directory>`: a backup made by `postern backup` put back as the data directory.
 *
 * Purpose: "stop, replace the data directory, start" by hand copies whatever is in the backup, damaged or
 *   not, and can be run under a live gateway. Here every file is checked against the manifest first, the
 *   data directory is taken only when no gateway runs on it, and it changes in one rename at the end.
 * Inputs: the backup directory (`manifest.json` and the files it lists), the data directory
 *   (POSTERN_DATA_DIR), whether PostgreSQL is configured (POSTERN_DATABASE_URL), and the options `force`
 *   (take a data directory that is not empty) and `noVerify` (accept a manifest without checksums).
 * Outputs: the backup's files in the data directory (directories 0700, files 0600, each fsynced). With
 *   `force`, the old contents moved, never deleted, to `<data-dir>.before-restore-<time>`.
 * Order, so that a refusal or an interruption leaves the old data intact: (1) the manifest is read and every
 *   file verified (present, listed, same size and SHA-256); (2) the data directory is checked (no running
 *   gateway: backup/running-gateway.ts; empty unless `force`); (3) the files are copied into a new directory
 *   beside the data directory, hashed again on the way, and fsynced; (4) the old directory is renamed aside
 *   and the new one renamed into place. Until (4) nothing in the data directory changed; a failure removes
 *   the new directory. An interruption between the two renames of (4) leaves the old data aside and the
 *   restored copy complete beside it (`<data-dir>.restore-*`).
 * PostgreSQL: the backup holds no database rows (pg_dump copies them: backup/database-copy.ts), so the rows
 *   come back with pg_restore or psql, and this command puts back this node's files (bodies, node-id, key).
 * Failure modes: every refusal is a PosternError with a POSTERN_BACKUP_* code and a one-line message naming
 *   the file or the directory.
 * Known limits: the pid file is the only sign of a running gateway; a gateway of an older Postern (which
 *   writes none) is not detected. The settings (POSTERN_*) are not in the backup and not restored.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { ErrorCodes, PosternError } from '../errors.js';
import { KEY_FILE_NAME } from '../store/secret-box.js';
import { FORMAT, MANIFEST_FILE, type BackupManifest } from './backup.js';
import { runningGateway } from './running-gateway.js';
import { copyHashed, listFiles, sha256Of, syncFile } from './spool-copy.js';

export interface RestoreOptions {
  /** The backup directory, as `postern backup` wrote it. */
  backup: string;
  /** POSTERN_DATA_DIR. */
  dataDir: string;
  /** POSTERN_DATABASE_URL: the database rows are restored from pg_dump, not from here. */
  databaseUrl?: string | undefined;
  /** Whether POSTERN_SECRET_KEY is set: a backup made with it holds no key file. */
  secretKeySet?: boolean;
  /** Take a data directory that is not empty: its contents are moved aside. */
  force?: boolean;
  /** Accept a manifest without checksums (an older backup) without verifying the files. */
  noVerify?: boolean;
  /** For the name of the directory the old contents are moved to. */
  now?: () => Date;
}

export interface RestoreReport {
  backup: string;
  dataDir: string;
  manifest: BackupManifest;
  /** Files restored (the manifest is not one of them). */
  files: number;
  /** False when the manifest had no checksums and `noVerify` was given. */
  verified: boolean;
  /** Where the data directory's old contents are, when it was not empty. */
  movedAside: string | null;
}

/** Restores `options.backup` into `options.dataDir`; see the header for the order and the refusals. */
export async function restoreDataDirectory(options: RestoreOptions): Promise<RestoreReport> {
  const backup = resolve(options.backup);
  const dataDir = resolve(options.dataDir);
  const manifest = await readManifest(backup);

  const postgres = Boolean(options.databaseUrl);
  if (manifest.database.dialect === 'sqlite' && postgres) {
    throw new PosternError(ErrorCodes.BACKUP_DATABASE_MISMATCH, `${backup} holds a SQLite database, but POSTERN_DATABASE_URL is set: unset it to restore this backup`);
  }
  if (manifest.database.dialect === 'postgres' && !postgres) {
    throw new PosternError(ErrorCodes.BACKUP_DATABASE_MISMATCH, `${backup} was made with PostgreSQL and holds no database: set POSTERN_DATABASE_URL (and restore the pg_dump taken with it)`);
  }

  if (manifest.secretKey !== 'included' && !options.secretKeySet) {
    // Started without it, the gateway would make a new key, which cannot read the restored tokens.
    throw new PosternError(ErrorCodes.BACKUP_NO_KEY, `${backup} holds no ${KEY_FILE_NAME} (it was made with POSTERN_SECRET_KEY), and POSTERN_SECRET_KEY is not set: set it as it was when the backup was made`);
  }

  // (1) Every file, before anything is written.
  const verified = manifest.files.every((file) => typeof file.sha256 === 'string');
  if (!verified && !options.noVerify) {
    throw new PosternError(ErrorCodes.BACKUP_UNVERIFIED, `the manifest of ${backup} has no checksums (an older backup): it cannot be verified; give --no-verify to restore it as it is`);
  }
  await verifyFiles(backup, manifest);

  // (2) The data directory.
  await refuseRunningGateway(dataDir);
  const existing = await entriesOf(dataDir);
  if (existing !== null && existing.length > 0 && !options.force) {
    throw new PosternError(ErrorCodes.BACKUP_DATA_DIR_NOT_EMPTY, `${dataDir} (POSTERN_DATA_DIR) is not empty: give --force to move its contents aside and restore`);
  }

  // (3) A new directory beside the data directory, so that the final rename stays on one file system.
  const stamp = (options.now?.() ?? new Date()).toISOString().replace(/[:.]/g, '-');
  const staging = `${dataDir}.restore-${stamp}-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(dirname(dataDir), { recursive: true });
    await mkdir(staging, { mode: 0o700 });
    await chmod(staging, 0o700);
    await copyFiles(backup, staging, manifest);
  } catch (error) {
    await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    if (error instanceof PosternError) throw error;
    throw new PosternError(ErrorCodes.BACKUP_RESTORE_FAILED, `the restore failed, ${dataDir} is as it was: ${oneLine(error)}`, { cause: error });
  }

  // (4) Checked again: a gateway may have started while the files were copied.
  let movedAside: string | null = null;
  try {
    await refuseRunningGateway(dataDir);
    if (existing !== null && existing.length > 0) {
      movedAside = `${dataDir}.before-restore-${stamp}`;
      if (existsSync(movedAside)) movedAside = `${movedAside}-${randomBytes(4).toString('hex')}`;
      await rename(dataDir, movedAside);
    } else if (existing !== null) {
      await rmdir(dataDir); // empty: rename() would replace it, but not on every platform
    }
  } catch (error) {
    await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    if (error instanceof PosternError) throw error;
    throw new PosternError(ErrorCodes.BACKUP_RESTORE_FAILED, `the restore failed, ${dataDir} is as it was: ${oneLine(error)}`, { cause: error });
  }
  try {
    await rename(staging, dataDir);
    await syncFile(dirname(dataDir));
  } catch (error) {
    const where = movedAside ? `the old contents are in ${movedAside}, ` : '';
    throw new PosternError(ErrorCodes.BACKUP_RESTORE_FAILED, `the restore could not be put in place: ${where}the restored copy is in ${staging}: ${oneLine(error)}`, { cause: error });
  }
  return { backup, dataDir, manifest, files: manifest.files.length, verified, movedAside };
}

async function readManifest(backup: string): Promise<BackupManifest> {
  let text: string;
  try {
    text = await readFile(join(backup, MANIFEST_FILE), 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new PosternError(ErrorCodes.BACKUP_NOT_A_BACKUP, `${backup} is not a complete Postern backup: it has no ${MANIFEST_FILE}`);
    }
    throw new PosternError(ErrorCodes.BACKUP_NOT_A_BACKUP, `cannot read ${join(backup, MANIFEST_FILE)}: ${oneLine(error)}`, { cause: error });
  }
  let manifest: BackupManifest;
  try {
    manifest = JSON.parse(text) as BackupManifest;
  } catch (cause) {
    throw new PosternError(ErrorCodes.BACKUP_NOT_A_BACKUP, `${join(backup, MANIFEST_FILE)} is damaged: it is not JSON`, { cause });
  }
  const files = (manifest as Partial<BackupManifest> | null)?.files;
  if (manifest?.format !== FORMAT || !Array.isArray(files) || !manifest.database || !files.every(isFileEntry)) {
    throw new PosternError(ErrorCodes.BACKUP_NOT_A_BACKUP, `${join(backup, MANIFEST_FILE)} is not the manifest of a ${FORMAT} backup`);
  }
  return manifest;
}

/** A manifest entry whose path stays inside the backup (a hand-edited manifest must not name ../ files). */
function isFileEntry(file: unknown): file is BackupManifest['files'][number] {
  const entry = file as { path?: unknown; bytes?: unknown; sha256?: unknown } | null;
  if (typeof entry?.path !== 'string' || typeof entry.bytes !== 'number') return false;
  if (entry.sha256 !== undefined && (typeof entry.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(entry.sha256))) return false;
  const parts = entry.path.split(sep);
  return entry.path !== '' && !entry.path.startsWith(sep) && !parts.includes('..') && !parts.includes('.') && !parts.includes('') && entry.path !== MANIFEST_FILE;
}

/** Every listed file present with its size (and checksum, when recorded); no file that is not listed. */
async function verifyFiles(backup: string, manifest: BackupManifest): Promise<void> {
  const present = new Map((await listFiles(backup)).map((file) => [file.path, file.bytes]));
  present.delete(MANIFEST_FILE);
  for (const file of manifest.files) {
    const bytes = present.get(file.path);
    if (bytes === undefined) throw damaged(backup, file.path, 'is missing');
    if (bytes !== file.bytes) throw damaged(backup, file.path, `has ${bytes} bytes, the manifest says ${file.bytes}`);
    if (file.sha256 !== undefined && (await sha256Of(join(backup, file.path))) !== file.sha256) throw damaged(backup, file.path, 'does not match its checksum');
    present.delete(file.path);
  }
  const [extra] = present.keys();
  if (extra !== undefined) throw damaged(backup, extra, `is not listed in ${MANIFEST_FILE}`);
}

/** The files into `staging`, hashed on their way; a file changed since it was verified stops the restore. */
async function copyFiles(backup: string, staging: string, manifest: BackupManifest): Promise<void> {
  const directories = new Set<string>();
  for (const file of manifest.files) {
    const directory = dirname(join(staging, file.path));
    if (directory !== staging && !directories.has(directory)) {
      await mkdir(directory, { recursive: true, mode: 0o700 });
      await chmod(directory, 0o700);
      directories.add(directory);
    }
    const copied = await copyHashed(join(backup, file.path), join(staging, file.path));
    if (copied === null) throw damaged(backup, file.path, 'is missing');
    if (file.sha256 !== undefined && copied.sha256 !== file.sha256) throw damaged(backup, file.path, 'changed while it was restored');
  }
  for (const directory of directories) await syncFile(directory);
  await syncFile(staging);
}

async function refuseRunningGateway(dataDir: string): Promise<void> {
  const pid = await runningGateway(dataDir);
  if (pid !== null) {
    throw new PosternError(ErrorCodes.BACKUP_GATEWAY_RUNNING, `a gateway (pid ${pid}) is running on ${dataDir}: stop it first (e.g. systemctl stop postern), then restore`);
  }
}

/** The names in `dir`; null when it does not exist. */
async function entriesOf(dir: string): Promise<string[] | null> {
  try {
    if (!(await stat(dir)).isDirectory()) throw new PosternError(ErrorCodes.BACKUP_TARGET_UNUSABLE, `${dir} (POSTERN_DATA_DIR) is a file, not a directory`);
    return await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    if (error instanceof PosternError) throw error;
    throw new PosternError(ErrorCodes.BACKUP_TARGET_UNUSABLE, `cannot use ${dir} (POSTERN_DATA_DIR): ${oneLine(error)}`, { cause: error });
  }
}

const damaged = (backup: string, path: string, what: string) =>
  new PosternError(ErrorCodes.BACKUP_DAMAGED, `the backup ${backup} is damaged: ${path} ${what}; nothing was restored`);

const oneLine = (error: unknown) => (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim();

/** A few plain lines for the command line: what was restored, from when, and what to do next. */
export function formatRestoreReport(report: RestoreReport): string {
  const { manifest } = report;
  const counts = manifest.queue.counts;
  const waiting = counts.incoming + counts.active + counts.deferred + counts.held;
  const lines = [
    `Restored ${report.backup} (made ${manifest.createdAt} by Postern ${manifest.postern}) into ${report.dataDir}: ` +
      `${report.files} files, ${report.verified ? 'each matching its checksum' : 'NOT verified (--no-verify: the manifest has no checksums)'}.`,
  ];
  if (report.movedAside) lines.push(`The previous contents of ${basename(report.dataDir)} are in ${report.movedAside}; remove them when the gateway runs well.`);
  lines.push(
    manifest.database.dialect === 'sqlite'
      ? `Queue: ${waiting} ${waiting === 1 ? 'message' : 'messages'} not finished (incoming ${counts.incoming}, active ${counts.active}, deferred ${counts.deferred}, held ${counts.held}); the gateway sends them when it starts.`
      : 'Database: PostgreSQL is not in the backup: restore the pg_dump taken with it (pg_restore or psql) before starting the gateway.',
  );
  if (manifest.secretKey !== 'included') lines.push('Key: not in the backup: start the gateway with the same POSTERN_SECRET_KEY as this command.');
  return lines.join('\n') + '\n';
}
