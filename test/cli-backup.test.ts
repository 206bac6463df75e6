/**
 * `postern backup <directory>` as the administrator runs it on the gateway's host: the real command line as a
 * child process, against a data directory whose store is open in this test process and written to while the
 * backup runs (messages accepted and delivered through MessageQueue, as the relay and the queue manager do).
 * The copy is a consistent database with exactly the bodies its waiting messages need, owner-only, described
 * by its manifest; a restore drill opens it as a data directory and finds the queue and its bodies. Also: the
 * key from POSTERN_SECRET_KEY (not copied, and said so), a lost body (a warning), refusals, and PostgreSQL
 * (pg_dump for the database, this node's files here) when POSTERN_TEST_DATABASE_URL is set.
 */
import BetterSqlite3 from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { QueueTuning } from '../src/config.js';
import { ACTIVE_STATES, MessageQueue, type MessageEnvelope, type QueuedMessage } from '../src/queue/queue.js';
import { Spool, spoolDirectory } from '../src/queue/spool.js';
import type { BackupManifest } from '../src/backup/backup.js';
import { migrationProvider } from '../src/store/migrations.js';
import type { QueueState } from '../src/store/schema.js';
import { openStore, type Store } from '../src/store/store.js';
import { runCli } from './support/cli.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';
import { enqueueMessage } from './support/queue.js';

const TUNING: QueueTuning = { retryBaseMs: 60_000, retryMaxMs: 60_000, lifetimeMs: 24 * 60 * 60_000, concurrency: 1 };
const OWNER = 'test-delivery';
const HOUR = 60 * 60_000;
const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const scratch = (name: string) => mkdtempSync(join(tmpdir(), `postern-cli-backup-${name}-`));
const modeOf = (path: string) => statSync(path).mode & 0o777;
const bodyOf = (n: number | string) => Buffer.from(`Subject: Scan ${n}\r\nMessage-ID: <${n}@printers.local>\r\n\r\n${randomBytes(64).toString('base64')}\r\n`);
const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as BackupManifest;
const keyOf = (dataDir: string) => Buffer.from(readFileSync(join(dataDir, 'secret.key'), 'utf8').trim(), 'base64');

/** Every file under `dir`, relative to it. */
function filesUnder(dir: string, root = dir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? filesUnder(join(dir, entry.name), root) : [relative(root, join(dir, entry.name))],
  );
}

const enqueue = enqueueMessage;

async function leased(queue: MessageQueue, message: QueuedMessage): Promise<QueuedMessage> {
  const [won] = await queue.leaseMany([message], OWNER, HOUR);
  if (!won) throw new Error(`could not lease ${message.id}`);
  return won;
}

async function deliver(queue: MessageQueue, message: QueuedMessage): Promise<void> {
  const active = await leased(queue, message);
  await queue.recordOutcome(active, OWNER, { delivered: active.recipients, retry: [], failed: [], summary: { code: 250, reply: '250 2.0.0 OK' } });
}

async function bytesOf(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The rows of a backup's database, read without writing to it (no journal, no -wal beside it). */
function rowsOfBackup(backupDir: string): Array<{ id: string; node_id: string; state: QueueState }> {
  const db = new BetterSqlite3(join(backupDir, 'postern.sqlite'), { readonly: true, fileMustExist: true });
  try {
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    return db.prepare('select id, node_id, state from queue_messages').all() as Array<{ id: string; node_id: string; state: QueueState }>;
  } finally {
    db.close();
  }
}

describe('postern backup (SQLite)', () => {
  let dataDir: string;
  let env: Record<string, string>;
  let store: Store;
  let queue: MessageQueue;
  let otherNode: MessageQueue;
  /** Every body this test ever queued, by message id. */
  const bodies = new Map<string, Buffer>();
  const m = {} as Record<'incoming' | 'deferred' | 'held' | 'active' | 'sent' | 'elsewhere', QueuedMessage>;
  let backupDir: string;
  let backupRun: Awaited<ReturnType<typeof runCli>>;
  let startedAt: number;

  const queued = async (into: MessageQueue, n: number | string, envelope: Partial<MessageEnvelope> = {}) => {
    const body = bodyOf(n);
    const message = await enqueue(into, body, envelope);
    bodies.set(message.id, body);
    return message;
  };

  beforeAll(async () => {
    dataDir = scratch('data');
    env = { POSTERN_DATA_DIR: dataDir };
    store = await openStore({ dataDir });
    queue = new MessageQueue(store, Spool.open(spoolDirectory(dataDir)), { tuning: TUNING });
    // A second node on the same database, with its own spool: its bodies are not this data directory's.
    otherNode = new MessageQueue(store, Spool.open(join(scratch('other'), 'spool')), { tuning: TUNING });

    m.incoming = await queued(queue, 'incoming', { recipients: ['carol@example.test', 'dave@example.test'] });
    const deferred = await leased(queue, await queued(queue, 'deferred'));
    const reply = { recipient: 'bob@example.test', code: 451, reply: '451 4.3.0 try later', advice: 'The server is busy; Postern tries again.' };
    await queue.recordOutcome(deferred, OWNER, { delivered: [], retry: [reply], nextAttemptAt: Date.now() + HOUR, failed: [], summary: reply });
    m.deferred = (await queue.get(deferred.id))!;
    const held = await leased(queue, await queued(queue, 'held'));
    await queue.hold(held, OWNER, 'Token Status is Expired', 'Sign in again on the E-Mail Settings page.');
    m.held = (await queue.get(held.id))!;
    m.active = await leased(queue, await queued(queue, 'active'));
    const sent = await queued(queue, 'sent');
    await deliver(queue, sent);
    m.sent = (await queue.get(sent.id))!;
    m.elsewhere = await queued(otherNode, 'elsewhere');
    await Promise.all([queue.drain(), otherNode.drain()]);

    // The backup runs while this process keeps accepting messages and delivering the oldest of them, as a
    // busy gateway does: bodies appear and disappear in the spool while the copy is made.
    backupDir = join(scratch('target'), 'postern-backup');
    let writing = true;
    let n = 0;
    const pending: QueuedMessage[] = [];
    let twentyWritten!: () => void;
    const busy = new Promise<void>((resolve) => (twentyWritten = resolve));
    const writer = (async () => {
      while (writing) {
        pending.push(await queued(queue, n++));
        if (n === 20) twentyWritten();
        if (n % 3 === 0) await deliver(queue, pending.shift()!);
      }
    })();
    await Promise.race([busy, writer]); // the writer has committed twenty messages (or failed)
    startedAt = Date.now();
    const before = (await store.db.selectFrom('queue_messages').select('id').execute()).map((row) => row.id);
    backupRun = await runCli(['backup', backupDir], env);
    const during = n;
    writing = false;
    await writer;
    await queue.drain();
    expect(during, 'the writer kept writing while the backup ran').toBeGreaterThan(20);
    const copied = new Set(rowsOfBackup(backupDir).map((row) => row.id));
    expect(before.filter((id) => !copied.has(id)), 'rows committed before the backup are in it').toEqual([]);
  });

  afterAll(async () => {
    await otherNode?.close();
    await queue?.close();
    await store?.close();
  });

  test('a consistent copy while the store is open and written to: each waiting message of this node has its body, nothing more', () => {
    expect(backupRun.stderr).toBe('');
    expect(backupRun.code).toBe(0);
    const rows = rowsOfBackup(backupDir);
    const byId = new Map(rows.map((row) => [row.id, row]));
    expect(byId.get(m.incoming.id)?.state).toBe('incoming');
    expect(byId.get(m.deferred.id)?.state).toBe('deferred');
    expect(byId.get(m.held.id)?.state).toBe('held');
    expect(byId.get(m.active.id)?.state).toBe('active');
    expect(byId.get(m.sent.id)?.state).toBe('sent');
    expect(byId.get(m.elsewhere.id)?.state).toBe('incoming');

    const needed = rows.filter((row) => row.node_id === queue.nodeId && ACTIVE_STATES.includes(row.state)).map((row) => row.id);
    expect(needed.length).toBeGreaterThan(4);
    const eml = readdirSync(join(backupDir, 'spool')).filter((name) => name.endsWith('.eml')).map((name) => name.slice(0, -4));
    expect(eml.sort()).toEqual([...needed].sort());
    for (const id of needed) expect(readFileSync(join(backupDir, 'spool', `${id}.eml`)).equals(bodies.get(id)!), id).toBe(true);
    expect(eml).not.toContain(m.sent.id);
    expect(eml).not.toContain(m.elsewhere.id);
    expect(readFileSync(join(backupDir, 'spool', 'node-id'), 'utf8').trim()).toBe(queue.nodeId);
    expect(readFileSync(join(backupDir, 'secret.key'))).toEqual(readFileSync(join(dataDir, 'secret.key')));
  });

  test('says where the backup is, what is in it, its size and what is not included', () => {
    const manifest = manifestOf(backupDir);
    const c = manifest.queue.counts;
    const waiting = c.incoming + c.active + c.deferred + c.held;
    const lines = backupRun.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatch(new RegExp(`^Backup of ${dataDir} written to ${backupDir} \\(\\d+\\.\\d (KB|MB), \\d+ files, listed in manifest\\.json\\)\\.$`));
    expect(lines[1]).toBe(`Database: a consistent copy of postern.sqlite (schema ${manifest.database.schemaVersion}).`);
    expect(lines[2]).toBe(
      `Queue: ${waiting} messages not finished (incoming ${c.incoming}, active ${c.active}, deferred ${c.deferred}, held ${c.held}): ` +
        `${waiting - 1} bodies copied, 1 on other nodes (their bodies are there). ` +
        `${c.sent + c.bounced} finished (sent ${c.sent}, bounced ${c.bounced}): already delivered, not needed.`,
    );
    expect(lines[3]).toBe('Key: secret.key is included; keep the backup as private as the data directory.');
    expect(lines[4]).toBe('Not included: the POSTERN_* settings and the files they name (e.g. POSTERN_HTTPS_CERT); keep them with the backup.');
  });

  test('owner-only: the directories 0700, every file 0600; one database file, no -wal or -shm', () => {
    expect(modeOf(backupDir)).toBe(0o700);
    expect(modeOf(join(backupDir, 'spool'))).toBe(0o700);
    const files = filesUnder(backupDir);
    for (const file of files) expect(modeOf(join(backupDir, file)), file).toBe(0o600);
    expect(files.filter((file) => !file.startsWith('spool/')).sort()).toEqual(['manifest.json', 'postern.sqlite', 'secret.key']);
  });

  test('the manifest: version, time, schema version, counts by state, the files', async () => {
    const manifest = manifestOf(backupDir);
    const migrations = Object.keys(await migrationProvider('sqlite').getMigrations()).sort();
    expect(manifest).toMatchObject({
      format: 'postern-backup/1',
      postern: VERSION,
      dataDir,
      database: { dialect: 'sqlite', included: true, file: 'postern.sqlite', schemaVersion: migrations.at(-1) },
      nodeId: queue.nodeId,
      secretKey: 'included',
    });
    expect(Date.parse(manifest.createdAt)).toBeGreaterThanOrEqual(startedAt - 1000);
    expect(Date.parse(manifest.createdAt)).toBeLessThanOrEqual(Date.now());

    const rows = rowsOfBackup(backupDir);
    const counts = Object.fromEntries((['incoming', 'active', 'deferred', 'held', 'sent', 'bounced'] as const).map((s) => [s, rows.filter((r) => r.state === s).length]));
    expect(manifest.queue).toEqual({ scope: 'database', counts });
    const needed = rows.filter((row) => row.node_id === queue.nodeId && ACTIVE_STATES.includes(row.state));
    expect(manifest.bodies).toEqual({ copied: needed.length, otherNodes: 1, inDatabase: 0, notNeeded: counts.sent! + counts.bounced!, missing: [] });

    const files = filesUnder(backupDir).filter((file) => file !== 'manifest.json').sort();
    expect(manifest.files.map((file) => file.path).sort()).toEqual(files);
    for (const file of manifest.files) expect(file.bytes, file.path).toBe(statSync(join(backupDir, file.path)).size);
  });

  test('the copy opens with openStore and the same key, and has the rows', async () => {
    const copy = scratch('open');
    cpSync(backupDir, copy, { recursive: true });
    rmSync(join(copy, 'secret.key'));
    const opened = await openStore({ dataDir: copy, secretKey: keyOf(dataDir) });
    try {
      const ids = (await opened.db.selectFrom('queue_messages').select('id').execute()).map((row) => row.id);
      expect(ids).toEqual(expect.arrayContaining(Object.values(m).map((message) => message.id)));
      expect(await opened.db.selectFrom('meta').select('value').where('key', '=', 'key_check').executeTakeFirst()).toBeDefined();
    } finally {
      await opened.close();
    }
  });

  test('restore drill: the backup as a fresh data directory holds the queued messages and their bodies', async () => {
    const restored = scratch('restored');
    cpSync(backupDir, restored, { recursive: true });
    const restoredStore = await openStore({ dataDir: restored });
    expect(restoredStore.keySource).toBe('file');
    const restoredQueue = new MessageQueue(restoredStore, Spool.open(spoolDirectory(restored)), { tuning: TUNING });
    try {
      expect(restoredQueue.nodeId).toBe(queue.nodeId);
      expect(await restoredQueue.removeOrphans()).toBe(0);
      const waiting = (await restoredQueue.list(ACTIVE_STATES, 100_000)).filter((message) => message.id !== m.elsewhere.id);
      expect(waiting.map((message) => message.id)).toEqual(expect.arrayContaining([m.incoming.id, m.deferred.id, m.held.id, m.active.id]));
      for (const message of waiting) expect((await bytesOf(restoredQueue.body(message))).equals(bodies.get(message.id)!), message.id).toBe(true);
      expect((await restoredQueue.get(m.incoming.id))!.recipients).toEqual(['carol@example.test', 'dave@example.test']);
    } finally {
      await restoredQueue.close();
      await restoredStore.close();
    }
  });

  test('a non-empty target is refused with one line, and left as it was', async () => {
    const target = scratch('full');
    writeFileSync(join(target, 'notes.txt'), 'keep me');
    const result = await runCli(['backup', target], env);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(`postern: ${target} is not empty: give a new or empty directory for the backup\n`);
    expect(readdirSync(target)).toEqual(['notes.txt']);
  });

  test.each([[['backup']], [['backup', 'a', 'b']], [['backup', '--force']]])('bad usage %j: the usage on stderr, exit 64', async (args) => {
    const result = await runCli(args, env);
    expect(result.code).toBe(64);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe('postern: backup needs one directory, new or empty\n\nUsage: postern backup <directory>\n');
  });

  test('the usage names the backup command', async () => {
    const result = await runCli(['--help'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^ {2}backup <directory> +Back up the data directory/m);
  });
});

describe('postern backup with the key in POSTERN_SECRET_KEY, and a lost body', () => {
  const key = randomBytes(32);
  let dataDir: string;
  let store: Store;
  let queue: MessageQueue;
  const bodies = new Map<string, Buffer>();
  let kept: QueuedMessage;
  let lost: QueuedMessage;

  beforeAll(async () => {
    dataDir = scratch('env-key');
    store = await openStore({ dataDir, secretKey: key });
    queue = new MessageQueue(store, Spool.open(spoolDirectory(dataDir)), { tuning: TUNING });
    for (const name of ['kept', 'lost', 'sent'] as const) {
      const body = bodyOf(name);
      const message = await enqueue(queue, body);
      bodies.set(message.id, body);
      if (name === 'kept') kept = message;
      if (name === 'lost') lost = message;
      if (name === 'sent') await deliver(queue, message);
    }
    await queue.drain();
  });

  afterAll(async () => {
    await queue?.close();
    await store?.close();
  });

  test('the key is not copied, and the output says it must be kept separately; an existing empty directory is used', async () => {
    const target = join(scratch('env-target'), 'empty');
    mkdirSync(target);
    chmodSync(target, 0o755);
    const result = await runCli(['backup', target], { POSTERN_DATA_DIR: dataDir, POSTERN_SECRET_KEY: key.toString('hex') });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('\nKey: not in the backup, it comes from POSTERN_SECRET_KEY: keep that key separately, the backup cannot be read without it.\n');
    expect(result.stdout).toContain('Queue: 2 messages not finished (incoming 2, active 0, deferred 0, held 0): 2 bodies copied. 1 finished (sent 1, bounced 0): already delivered, not needed.\n');
    expect(existsSync(join(target, 'secret.key'))).toBe(false);
    expect(existsSync(join(dataDir, 'secret.key'))).toBe(false);
    expect(manifestOf(target).secretKey).toBe('not included: POSTERN_SECRET_KEY');
    expect(modeOf(target)).toBe(0o700);

    const copy = scratch('env-open');
    cpSync(target, copy, { recursive: true });
    const opened = await openStore({ dataDir: copy, secretKey: key });
    expect(opened.keySource).toBe('environment');
    expect(await opened.db.selectFrom('queue_messages').select('id').where('id', '=', kept.id).executeTakeFirst()).toEqual({ id: kept.id });
    await opened.close();
  });

  test('a waiting message whose body is gone from the spool: a warning naming it, the rest is backed up', async () => {
    rmSync(queue.spool.path(lost.id));
    const target = join(scratch('lost-target'), 'backup');
    const result = await runCli(['backup', target], { POSTERN_DATA_DIR: dataDir, POSTERN_SECRET_KEY: key.toString('base64') });
    expect(result.code).toBe(0);
    expect(result.stderr).toBe(
      `postern: warning: the body of queued message ${lost.id} (incoming) is not in ${spoolDirectory(dataDir)}: ` +
        `the gateway still waits to send it, so the spool has lost it; after a restore, remove it with "postern queue delete ${lost.id}"\n`,
    );
    expect(result.stdout).toContain('): 1 body copied, 1 missing (see the warnings).');
    expect(manifestOf(target).bodies.missing).toEqual([lost.id]);
    expect(readFileSync(join(target, 'spool', `${kept.id}.eml`)).equals(bodies.get(kept.id)!)).toBe(true);
  });

  test('a database that cannot be copied: one line, exit 1, and what was written is removed', async () => {
    const broken = scratch('broken');
    writeFileSync(join(broken, 'postern.sqlite'), 'not a database, but long enough to be read as one by SQLite'.repeat(100));
    writeFileSync(join(broken, 'secret.key'), randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
    const target = join(scratch('broken-target'), 'backup');
    const result = await runCli(['backup', target], { POSTERN_DATA_DIR: broken });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe('postern: the backup failed and was removed: file is not a database\n');
    expect(existsSync(target)).toBe(false);
  });

  test('no database in the data directory: one line, exit 1, no target created', async () => {
    const empty = scratch('no-data');
    const target = join(scratch('no-data-target'), 'backup');
    const result = await runCli(['backup', target], { POSTERN_DATA_DIR: empty });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`postern: there is no Postern data in ${empty} (POSTERN_DATA_DIR): nothing to back up\n`);
    expect(existsSync(target)).toBe(false);
  });
});

describe.skipIf(!POSTGRES_ADMIN_URL)('postern backup on PostgreSQL (POSTERN_TEST_DATABASE_URL)', () => {
  let database: TestDatabase;
  let dataDir: string;
  let store: Store;
  let queue: MessageQueue;
  let otherNode: MessageQueue;
  const bodies = new Map<string, Buffer>();
  const ids: Record<'first' | 'second' | 'sent' | 'elsewhere', string> = { first: '', second: '', sent: '', elsewhere: '' };

  beforeAll(async () => {
    database = await createTestDatabase('postern_backup');
    dataDir = scratch('pg');
    store = await openStore({ dataDir, databaseUrl: database.url });
    // Spooled bodies, as messages accepted before the database held them have (and one in the database).
    queue = new MessageQueue(store, Spool.open(spoolDirectory(dataDir)), { tuning: TUNING, bodies: 'spool' });
    otherNode = new MessageQueue(store, Spool.open(join(scratch('pg-other'), 'spool')), { tuning: TUNING, bodies: 'spool' });
    for (const name of ['first', 'second', 'sent', 'elsewhere'] as const) {
      const body = bodyOf(name);
      const message = await enqueue(name === 'elsewhere' ? otherNode : queue, body);
      bodies.set(message.id, body);
      ids[name] = message.id;
      if (name === 'sent') await deliver(queue, message);
    }
    await Promise.all([queue.drain(), otherNode.drain()]);
  });

  afterAll(async () => {
    await otherNode?.close();
    await queue?.close();
    await store?.close();
    await database?.drop();
  });

  test("says to use pg_dump for the database, and backs up this node's bodies, node-id and key", async () => {
    const target = join(scratch('pg-target'), 'backup');
    const result = await runCli(['backup', target], { POSTERN_DATA_DIR: dataDir, POSTERN_DATABASE_URL: database.url });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines[1]).toBe('Database: PostgreSQL is not in this backup: back it up with pg_dump (run it just before postern backup); it holds the message bodies too (only older messages have theirs in this node\'s spool).');
    expect(lines[2]).toBe("This node's queue: 2 messages not finished (incoming 2, active 0, deferred 0, held 0): 2 bodies copied. 1 finished (sent 1, bounced 0): already delivered, not needed.");

    expect(filesUnder(target).sort()).toEqual(['manifest.json', 'secret.key', `spool/${ids.first}.eml`, `spool/${ids.second}.eml`, 'spool/node-id'].sort());
    for (const id of [ids.first, ids.second]) expect(readFileSync(join(target, 'spool', `${id}.eml`)).equals(bodies.get(id)!)).toBe(true);
    expect(readFileSync(join(target, 'spool', 'node-id'), 'utf8').trim()).toBe(queue.nodeId);
    for (const file of filesUnder(target)) expect(modeOf(join(target, file)), file).toBe(0o600);
    expect(modeOf(target)).toBe(0o700);

    const manifest = manifestOf(target);
    const migrations = Object.keys(await migrationProvider('postgres').getMigrations()).sort();
    expect(manifest.database).toMatchObject({ dialect: 'postgres', included: false, schemaVersion: migrations.at(-1) });
    expect(manifest.queue).toEqual({ scope: 'this node', counts: { incoming: 2, active: 0, deferred: 0, held: 0, sent: 1, bounced: 0 } });
    expect(manifest.bodies).toEqual({ copied: 2, otherNodes: 0, inDatabase: 0, notNeeded: 1, missing: [] });
    expect(manifest.secretKey).toBe('included');
  });

  test('a body in the database is left to pg_dump: counted, not copied, not missing', async () => {
    const shared = new MessageQueue(store, Spool.open(spoolDirectory(dataDir)), { tuning: TUNING });
    const message = await enqueue(shared, bodyOf('in the database'));
    await shared.drain();
    const target = join(scratch('pg-target-db'), 'backup');
    const result = await runCli(['backup', target], { POSTERN_DATA_DIR: dataDir, POSTERN_DATABASE_URL: database.url });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.trimEnd().split('\n')[2]).toBe("This node's queue: 3 messages not finished (incoming 3, active 0, deferred 0, held 0): 2 bodies copied, 1 in the database (pg_dump copies their bodies). 1 finished (sent 1, bounced 0): already delivered, not needed.");
    expect(filesUnder(target)).not.toContain(`spool/${message.id}.eml`);
    expect(manifestOf(target).bodies).toEqual({ copied: 2, otherNodes: 0, inDatabase: 1, notNeeded: 1, missing: [] });
  });
});
