/**
 * `postern restore <backup-directory>` as the administrator runs it: the real command line as a child process,
 * on a backup made by `postern backup`. The restored directory is the data (every table, the queue with its
 * bodies, the users, the settings) and a real gateway process starts on it. Refusals, each with nothing
 * written: a flipped byte in a body or in the database copy, a missing or an extra file, an older manifest
 * without checksums (unless --no-verify), a data directory in use by a running gateway, a data directory that
 * is not empty (unless --force, which moves the old contents aside). A pid file left by a killed gateway
 * does not block. With PostgreSQL (POSTERN_TEST_DATABASE_URL set): this node's files come back, the rows
 * are pg_dump's.
 */
import BetterSqlite3 from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { BackupManifest } from '../src/backup/backup.js';
import type { QueueTuning } from '../src/config.js';
import { MessageQueue, type QueuedMessage } from '../src/queue/queue.js';
import { Spool, spoolDirectory } from '../src/queue/spool.js';
import { RelaySettings } from '../src/smtp-in/relay-settings.js';
import { openStore } from '../src/store/store.js';
import { Users } from '../src/store/users.js';
import { runCli } from './support/cli.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';
import { spawnPostern } from './support/postern-process.js';
import { enqueueMessage } from './support/queue.js';

const TUNING: QueueTuning = { retryBaseMs: 60_000, retryMaxMs: 60_000, lifetimeMs: 24 * 60 * 60_000, concurrency: 1 };
const OWNER = 'test-delivery';
const HOUR = 60 * 60_000;

const scratch = (name: string) => mkdtempSync(join(tmpdir(), `postern-cli-restore-${name}-`));
const bodyOf = (n: string) => Buffer.from(`Subject: Scan ${n}\r\nMessage-ID: <${n}@printers.local>\r\n\r\n${randomBytes(64).toString('base64')}\r\n`);
const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as BackupManifest;
const modeOf = (path: string) => statSync(path).mode & 0o777;

function filesUnder(dir: string, root = dir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? filesUnder(join(dir, entry.name), root) : [relative(root, join(dir, entry.name))],
  );
}

/** Every row of every table of a SQLite data directory, read without writing to it. */
function tablesOf(dataDir: string): Record<string, unknown[]> {
  const db = new BetterSqlite3(join(dataDir, 'postern.sqlite'), { readonly: true, fileMustExist: true });
  try {
    const names = (db.prepare("select name from sqlite_master where type = 'table' order by name").all() as Array<{ name: string }>).map((row) => row.name);
    return Object.fromEntries(names.map((name) => [name, db.prepare(`select * from "${name}" order by rowid`).all()]));
  } finally {
    db.close();
  }
}

/** Flips one bit of a file, keeping its size. */
function flipByte(path: string, at = 0): void {
  const bytes = readFileSync(path);
  bytes[at] = bytes[at]! ^ 0x01;
  writeFileSync(path, bytes);
}

describe('postern restore (SQLite)', () => {
  let dataDir: string;
  let backupDir: string;
  const bodies = new Map<string, Buffer>();
  const m = {} as Record<'incoming' | 'deferred' | 'held', QueuedMessage>;
  let tablesAtBackup: Record<string, unknown[]>;

  /** A copy of the good backup, to damage. */
  const copyOfBackup = () => {
    const copy = join(scratch('copy'), 'backup');
    cpSync(backupDir, copy, { recursive: true });
    return copy;
  };
  const restore = (args: string[], target: string, env: Record<string, string> = {}) => runCli(['restore', ...args], { POSTERN_DATA_DIR: target, ...env });

  beforeAll(async () => {
    // A stopped gateway's data directory: queued messages in three states, two users, saved Relay Settings.
    dataDir = scratch('data');
    const store = await openStore({ dataDir });
    const queue = new MessageQueue(store, Spool.open(spoolDirectory(dataDir)), { tuning: TUNING });
    const users = new Users(store);
    await users.create('admin', 'admin-password-for-tests', 'Administrator');
    await users.create('operator', 'operator-password-for-tests', 'GeneralUser');
    const relaySettings = new RelaySettings(store);
    await relaySettings.save({ ...(await relaySettings.get()), allowedNetworks: ['10.1.2.0/24'] });
    for (const name of ['incoming', 'deferred', 'held'] as const) {
      const body = bodyOf(name);
      const message = await enqueueMessage(queue, body, name === 'incoming' ? { recipients: ['carol@example.test', 'dave@example.test'] } : {});
      bodies.set(message.id, body);
      m[name] = message;
    }
    // Far in the future, so that the gateway started on the restored copy leaves them as they are.
    const [deferred] = await queue.leaseMany([m.deferred], OWNER, HOUR);
    const reply = { recipient: 'bob@example.test', code: 451, reply: '451 4.3.0 try later', advice: 'The server is busy; Postern tries again.' };
    await queue.recordOutcome(deferred!, OWNER, { delivered: [], retry: [reply], nextAttemptAt: Date.now() + 24 * HOUR, failed: [], summary: reply });
    const [held] = await queue.leaseMany([m.held], OWNER, HOUR);
    await queue.hold(held!, OWNER, 'Token Status is Expired', 'Sign in again on the E-Mail Settings page.');
    await queue.drain();
    await queue.close();
    await store.close();

    backupDir = join(scratch('backup'), 'postern-backup');
    const made = await runCli(['backup', backupDir], { POSTERN_DATA_DIR: dataDir });
    expect(made.stderr).toBe('');
    expect(made.code).toBe(0);
    tablesAtBackup = tablesOf(backupDir);
  });

  test('the manifest records the SHA-256 of every file it lists, and they match the files', async () => {
    const { createHash } = await import('node:crypto');
    const manifest = manifestOf(backupDir);
    expect(manifest.files.map((file) => file.path).sort()).toEqual(filesUnder(backupDir).filter((path) => path !== 'manifest.json').sort());
    for (const file of manifest.files) {
      expect(file.sha256, file.path).toBe(createHash('sha256').update(readFileSync(join(backupDir, file.path))).digest('hex'));
    }
    expect(manifest.files.map((file) => file.path)).toEqual(expect.arrayContaining(['postern.sqlite', 'secret.key', 'spool/node-id', `spool/${m.held.id}.eml`]));
  });

  test('into a new data directory: the same tables, queue, bodies, users and settings; a gateway starts on it and keeps them', async () => {
    const target = join(scratch('target'), 'data');
    const result = await restore([backupDir], target);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const manifest = manifestOf(backupDir);
    expect(result.stdout).toBe(
      `Restored ${backupDir} (made ${manifest.createdAt} by Postern ${manifest.postern}) into ${target}: ${manifest.files.length} files, each matching its checksum.\n` +
        'Queue: 3 messages not finished (incoming 1, active 0, deferred 1, held 1); the gateway sends them when it starts.\n',
    );
    expect(filesUnder(target).sort()).toEqual(manifest.files.map((file) => file.path).sort());
    for (const file of filesUnder(target)) expect(modeOf(join(target, file)), file).toBe(0o600);
    expect(modeOf(target)).toBe(0o700);
    expect(modeOf(join(target, 'spool'))).toBe(0o700);
    expect(tablesOf(target)).toEqual(tablesAtBackup);
    // Nothing left beside it: the staging directory was renamed into place.
    expect(readdirSync(dirname(target))).toEqual(['data']);

    const gateway = await spawnPostern({ POSTERN_DATA_DIR: target });
    expect(existsSync(join(target, 'postern.pid'))).toBe(true);
    expect(await gateway.stop()).toBe(0);
    expect(existsSync(join(target, 'postern.pid')), 'a stopped gateway removes its pid file').toBe(false);

    const store = await openStore({ dataDir: target });
    const queue = new MessageQueue(store, Spool.open(spoolDirectory(target)), { tuning: TUNING });
    try {
      expect(queue.nodeId).toBe(manifest.nodeId);
      expect((await queue.get(m.deferred.id))?.state).toBe('deferred');
      expect((await queue.get(m.held.id))?.state).toBe('held');
      expect((await queue.get(m.incoming.id))?.recipients).toEqual(['carol@example.test', 'dave@example.test']);
      for (const id of [m.incoming.id, m.deferred.id, m.held.id]) expect(readFileSync(queue.spool.path(id)).equals(bodies.get(id)!), id).toBe(true);
      expect((await new Users(store).list()).map((user) => [user.username, user.role]).sort()).toEqual([['admin', 'Administrator'], ['operator', 'GeneralUser']]);
      expect(await new Users(store).authenticate('operator', 'operator-password-for-tests')).toBeDefined();
      expect((await new RelaySettings(store).get()).allowedNetworks).toEqual(['10.1.2.0/24']);
    } finally {
      await queue.close();
      await store.close();
    }
  });

  test.each([
    ['a spool file', (id: string) => `spool/${id}.eml`],
    ['the database copy', () => 'postern.sqlite'],
  ])('a flipped byte in %s: refused naming the file, nothing written', async (_what, fileOf) => {
    const damaged = copyOfBackup();
    const file = fileOf(m.held.id);
    flipByte(join(damaged, file), 100);
    const target = join(scratch('flipped'), 'data');
    const result = await restore([damaged], target);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(`postern: the backup ${damaged} is damaged: ${file} does not match its checksum; nothing was restored\n`);
    expect(readdirSync(dirname(target))).toEqual([]);
  });

  test('a missing file, a file cut short, or a file the manifest does not list: refused naming it', async () => {
    const missing = copyOfBackup();
    rmSync(join(missing, 'spool', `${m.incoming.id}.eml`));
    const extra = copyOfBackup();
    writeFileSync(join(extra, 'spool', 'stray.eml'), 'Subject: not backed up\r\n\r\n');
    const short = copyOfBackup();
    writeFileSync(join(short, 'secret.key'), '');
    const target = join(scratch('incomplete'), 'data');
    const cases: Array<[string, string]> = [
      [missing, `spool/${m.incoming.id}.eml is missing`],
      [extra, 'spool/stray.eml is not listed in manifest.json'],
      [short, `secret.key has 0 bytes, the manifest says ${statSync(join(backupDir, 'secret.key')).size}`],
    ];
    for (const [backup, why] of cases) {
      const result = await restore([backup], target);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(`postern: the backup ${backup} is damaged: ${why}; nothing was restored\n`);
    }
    expect(existsSync(target)).toBe(false);
  });

  test('a manifest without checksums (an older backup): refused, unless --no-verify', async () => {
    const older = copyOfBackup();
    const manifest = manifestOf(older);
    writeFileSync(join(older, 'manifest.json'), JSON.stringify({ ...manifest, files: manifest.files.map(({ path, bytes }) => ({ path, bytes })) }, null, 2));
    const target = join(scratch('older'), 'data');
    const refused = await restore([older], target);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(`postern: the manifest of ${older} has no checksums (an older backup): it cannot be verified; give --no-verify to restore it as it is\n`);
    expect(existsSync(target)).toBe(false);

    const accepted = await restore([older, '--no-verify'], target);
    expect(accepted.stderr).toBe('');
    expect(accepted.code).toBe(0);
    expect(accepted.stdout).toContain(`: ${manifest.files.length} files, NOT verified (--no-verify: the manifest has no checksums).\n`);
    expect(tablesOf(target)).toEqual(tablesAtBackup);
  });

  test('not a backup (no manifest.json): refused', async () => {
    const notBackup = scratch('not-backup');
    const result = await restore([notBackup], join(scratch('nb-target'), 'data'));
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`postern: ${notBackup} is not a complete Postern backup: it has no manifest.json\n`);
  });

  test('a running gateway\'s data directory is refused; once it is killed, its stale pid file does not block, and --force moves the old contents aside', async () => {
    const live = scratch('live');
    const gateway = await spawnPostern({ POSTERN_DATA_DIR: live, POSTERN_ADMIN_PASSWORD: 'live-admin-password' });
    let before: string[];
    try {
      before = filesUnder(live).sort();
      expect(before).toContain('postern.pid');
      const refused = await restore([backupDir, '--force'], live);
      expect(refused.code).toBe(1);
      expect(refused.stdout).toBe('');
      expect(refused.stderr).toBe(`postern: a gateway (pid ${gateway.child.pid}) is running on ${live}: stop it first (e.g. systemctl stop postern), then restore\n`);
      expect(filesUnder(live).sort()).toEqual(before);
      expect(readdirSync(dirname(live)).filter((name) => name.startsWith(basename(live)))).toEqual([basename(live)]);
    } finally {
      await gateway.kill9();
    }
    const liveTables = tablesOf(live);
    expect(existsSync(join(live, 'postern.pid')), 'SIGKILL leaves the pid file behind').toBe(true);

    const notEmpty = await restore([backupDir], live);
    expect(notEmpty.code).toBe(1);
    expect(notEmpty.stderr).toBe(`postern: ${live} (POSTERN_DATA_DIR) is not empty: give --force to move its contents aside and restore\n`);

    const forced = await restore([backupDir, '--force'], live);
    expect(forced.stderr).toBe('');
    expect(forced.code).toBe(0);
    const [aside, ...more] = readdirSync(dirname(live)).filter((name) => name.startsWith(`${basename(live)}.before-restore-`));
    expect(more).toEqual([]);
    const asidePath = join(dirname(live), aside!);
    expect(forced.stdout).toContain(`\nThe previous contents of ${basename(live)} are in ${asidePath}; remove them when the gateway runs well.\n`);
    // Everything the killed gateway left (its -wal and -shm come and go with its checkpoints), the stale pid file too.
    expect(filesUnder(asidePath)).toEqual(expect.arrayContaining(before.filter((file) => !/-(wal|shm)$/.test(file))));
    expect(tablesOf(asidePath)).toEqual(liveTables);
    expect(tablesOf(live)).toEqual(tablesAtBackup);
  });

  test('an empty data directory is taken without --force', async () => {
    const empty = scratch('empty');
    const result = await restore([backupDir], empty);
    expect(result.code).toBe(0);
    expect(tablesOf(empty)).toEqual(tablesAtBackup);
    expect(readdirSync(dirname(empty)).filter((name) => name.startsWith(basename(empty)))).toEqual([basename(empty)]);
  });

  test('a SQLite backup with POSTERN_DATABASE_URL set: refused', async () => {
    const target = join(scratch('pg-mismatch'), 'data');
    const result = await restore([backupDir], target, { POSTERN_DATABASE_URL: 'postgres://postern@127.0.0.1:1/postern' });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`postern: ${backupDir} holds a SQLite database, but POSTERN_DATABASE_URL is set: unset it to restore this backup\n`);
    expect(existsSync(target)).toBe(false);
  });

  test.each([[[]], [['a', 'b']], [['--force']], [['dir', '--fast']]])('bad usage %j: the usage on stderr, exit 64', async (args) => {
    const result = await restore(args, scratch('usage'));
    expect(result.code).toBe(64);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/^postern: restore (needs one backup directory|does not take "--fast")\n\nUsage: postern restore <backup-directory> \[--force\] \[--no-verify\]\n$/);
  });

  test('the usage names the restore command', async () => {
    const result = await runCli(['--help'], {});
    expect(result.stdout).toMatch(/^ {2}restore <backup-directory> \[--force\] \[--no-verify\]\n +Verify a backup and put it back as the data directory/m);
  });
});

describe('postern restore of a backup made with POSTERN_SECRET_KEY', () => {
  test('refused without the key (a new one could not read the data); with it, restored, and the output names the key', async () => {
    const key = randomBytes(32);
    const dataDir = scratch('env-key');
    const store = await openStore({ dataDir, secretKey: key });
    await new Users(store).create('admin', 'admin-password-for-tests', 'Administrator');
    await store.close();
    const backupDir = join(scratch('env-key-backup'), 'backup');
    expect((await runCli(['backup', backupDir], { POSTERN_DATA_DIR: dataDir, POSTERN_SECRET_KEY: key.toString('hex') })).code).toBe(0);

    const target = join(scratch('env-key-target'), 'data');
    const refused = await runCli(['restore', backupDir], { POSTERN_DATA_DIR: target });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(`postern: ${backupDir} holds no secret.key (it was made with POSTERN_SECRET_KEY), and POSTERN_SECRET_KEY is not set: set it as it was when the backup was made\n`);
    expect(existsSync(target)).toBe(false);

    const restored = await runCli(['restore', backupDir], { POSTERN_DATA_DIR: target, POSTERN_SECRET_KEY: key.toString('hex') });
    expect(restored.stderr).toBe('');
    expect(restored.code).toBe(0);
    expect(restored.stdout).toContain('\nKey: not in the backup: start the gateway with the same POSTERN_SECRET_KEY as this command.\n');
    const opened = await openStore({ dataDir: target, secretKey: key });
    try {
      expect((await new Users(opened).list()).map((user) => user.username)).toEqual(['admin']);
    } finally {
      await opened.close();
    }
  });
});

describe.skipIf(!POSTGRES_ADMIN_URL)('postern restore on PostgreSQL (POSTERN_TEST_DATABASE_URL)', () => {
  let database: TestDatabase;
  let dataDir: string;
  let backupDir: string;
  let queued: QueuedMessage;

  beforeAll(async () => {
    database = await createTestDatabase('postern_restore');
    dataDir = scratch('pg');
    const store = await openStore({ dataDir, databaseUrl: database.url });
    // A spooled body, as a message accepted before the database held bodies has one.
    const queue = new MessageQueue(store, Spool.open(spoolDirectory(dataDir)), { tuning: TUNING, bodies: 'spool' });
    queued = await enqueueMessage(queue, bodyOf('pg'));
    await queue.drain();
    await queue.close();
    await store.close();
    backupDir = join(scratch('pg-backup'), 'backup');
    const made = await runCli(['backup', backupDir], { POSTERN_DATA_DIR: dataDir, POSTERN_DATABASE_URL: database.url });
    expect(made.code).toBe(0);
  });

  afterAll(async () => {
    await database?.drop();
  });

  test("this node's files come back, and the output says the rows come from the pg_dump", async () => {
    const target = join(scratch('pg-target'), 'data');
    const result = await runCli(['restore', backupDir], { POSTERN_DATA_DIR: target, POSTERN_DATABASE_URL: database.url });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('\nDatabase: PostgreSQL is not in the backup: restore the pg_dump taken with it (pg_restore or psql) before starting the gateway.\n');
    expect(filesUnder(target).sort()).toEqual(['secret.key', `spool/${queued.id}.eml`, 'spool/node-id']);
    for (const file of filesUnder(target)) expect(readFileSync(join(target, file)).equals(readFileSync(join(dataDir, file))), file).toBe(true);
  });

  test('without POSTERN_DATABASE_URL: refused, the backup holds no database', async () => {
    const target = join(scratch('pg-no-url'), 'data');
    const result = await runCli(['restore', backupDir], { POSTERN_DATA_DIR: target });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`postern: ${backupDir} was made with PostgreSQL and holds no database: set POSTERN_DATABASE_URL (and restore the pg_dump taken with it)\n`);
    expect(existsSync(target)).toBe(false);
  });
});
