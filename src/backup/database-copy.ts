/**
 * The database half of a backup, and the choice of bodies that must agree with it.
 *
 * SQLite: the whole database is copied by the store in one online backup step, one read transaction, so the
 *   copy is a snapshot while the gateway keeps writing (Store.copyDatabase). The bodies to copy are read from
 *   that snapshot. A message finished by the gateway between the snapshot and the copy of its body (delivered,
 *   returned or deleted: its body is gone) makes the snapshot stale, so it is taken again, and only the bodies
 *   it adds are copied (MAX_ROUNDS at most).
 * PostgreSQL: pg_dump copies the database; this node's rows are read live, and their bodies copied. A message
 *   finished before its body was looked for needs none.
 * Inputs: the live store (the gateway's database, through the store's own connection) and the body copier.
 * Outputs: the manifest's database entry, the snapshot (counts by state, the messages not finished), the
 *   messages whose body is missing and a warning for each.
 */
import { chmod, writeFile } from 'node:fs/promises';
import { QueueReads, type QueueCensus, type WaitingMessage } from '../queue/queue.js';
import type { QueueState } from '../store/schema.js';
import { DATABASE_FILE, openDatabaseCopy, type Store } from '../store/store.js';
import type { BackupManifest } from './backup.js';
import { syncFile, type BodyCopier } from './spool-copy.js';

/** Snapshots taken at most, when messages finish while their bodies are being copied. */
const MAX_ROUNDS = 5;
export const FINISHED_STATES: readonly QueueState[] = ['sent', 'bounced'];

export interface Snapshot extends QueueCensus {
  schemaVersion: string | null;
}

/** What the database part of a backup found: the snapshot the bodies were chosen from, and what was missing. */
export interface DatabasePart {
  database: BackupManifest['database'];
  snapshot: Snapshot;
  /** Messages not finished whose body is not in the spool. */
  missing: WaitingMessage[];
  /** Messages read as not finished that were finished before their body was looked for (PostgreSQL). */
  finishedSince: number;
  warnings: string[];
}

/**
 * SQLite: the database copied in one backup step, the bodies chosen from the copy. While a message the copy
 * calls waiting has finished meanwhile (its body gone), the copy is taken again, up to MAX_ROUNDS times.
 */
export async function copySqlite(store: Store, copyPath: string, nodeId: string | null, bodies: BodyCopier): Promise<DatabasePart> {
  const live = new QueueReads(store);
  await writeFile(copyPath, '', { mode: 0o600, flag: 'wx' });
  let snapshot: Snapshot;
  let missing: WaitingMessage[];
  for (let round = 1; ; round++) {
    await store.copyDatabase(copyPath);
    snapshot = await readCopy(copyPath);
    const needed = snapshot.waiting.filter((message) => message.nodeId === nodeId);
    await bodies.keepOnly(new Set(needed.map((message) => message.id)));
    missing = await bodies.copyFor(needed);
    if (missing.length === 0 || round === MAX_ROUNDS) break;
    const now = await live.statesOf(missing.map((message) => message.id));
    if (!missing.some((message) => isFinished(now.get(message.id)))) break;
  }
  const now = await live.statesOf(missing.map((message) => message.id));
  await chmod(copyPath, 0o600);
  await syncFile(copyPath);
  return {
    database: { dialect: 'sqlite', included: true, file: DATABASE_FILE, schemaVersion: snapshot.schemaVersion },
    snapshot,
    missing,
    finishedSince: 0,
    warnings: missing.map((message) => missingBodyWarning(message, now.get(message.id), bodies.from)),
  };
}

/** PostgreSQL: pg_dump copies the database; this node's rows are read live, and their bodies copied. */
export async function readPostgres(store: Store, nodeId: string | null, bodies: BodyCopier): Promise<DatabasePart> {
  const live = new QueueReads(store);
  const snapshot: Snapshot = { ...(await live.census(nodeId ?? '')), schemaVersion: await store.schemaVersion() };
  // Bodies in the database (message_bodies) are rows like the others: pg_dump has them, no spool does.
  const absent = await bodies.copyFor(snapshot.waiting.filter((message) => message.nodeId === nodeId && !message.bodyInDatabase));
  // The rows were read live, not from a copy: a message finished since needs no body.
  const now = await live.statesOf(absent.map((message) => message.id));
  const missing = absent.filter((message) => !isFinished(now.get(message.id)));
  return {
    database: { dialect: 'postgres', included: false, schemaVersion: snapshot.schemaVersion, advice: 'Back up the PostgreSQL database with pg_dump, run just before postern backup; it also holds the message bodies accepted since Postern keeps them in the database.' },
    snapshot,
    missing,
    finishedSince: absent.length - missing.length,
    warnings: missing.map((message) => missingBodyWarning(message, now.get(message.id), bodies.from)),
  };
}

/** Reads the copy (the whole database's queue, every node), and leaves it in rollback-journal mode. */
async function readCopy(copyPath: string): Promise<Snapshot> {
  const copy = await openDatabaseCopy(copyPath);
  try {
    return { ...(await new QueueReads(copy).census()), schemaVersion: await copy.schemaVersion() };
  } finally {
    await copy.close();
  }
}

const isFinished = (state: QueueState | undefined) => state === undefined || FINISHED_STATES.includes(state);

function missingBodyWarning(message: WaitingMessage, now: QueueState | undefined, spoolDir: string): string {
  const why = now === undefined ? 'it was deleted since' : isFinished(now) ? `it was ${now} since` : 'the gateway still waits to send it, so the spool has lost it';
  return `the body of queued message ${message.id} (${message.state}) is not in ${spoolDir}: ${why}; after a restore, remove it with "postern queue delete ${message.id}"`;
}
