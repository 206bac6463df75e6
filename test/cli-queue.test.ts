/**
 * `postern queue` as the administrator runs it on the gateway's host: the real command line as a child
 * process, on a data directory whose queue was filled through MessageQueue (as the relay and the queue
 * manager fill it). List, Retry Now, Delete (row, spooled body, delivery log, audit log), and the failures:
 * an unknown id or a message in the wrong state (exit 1), bad usage (exit 64).
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { QueueTuning } from '../src/config.js';
import { MessageQueue, type MessageEnvelope, type QueuedMessage } from '../src/queue/queue.js';
import { Spool, spoolDirectory } from '../src/queue/spool.js';
import { AuditLog } from '../src/store/audit.js';
import { openStore, type Store } from '../src/store/store.js';
import { runCli } from './support/cli.js';
import { enqueueMessage } from './support/queue.js';

const TUNING: QueueTuning = { retryBaseMs: 60_000, retryMaxMs: 60_000, lifetimeMs: 24 * 60 * 60_000, concurrency: 1 };
const OWNER = 'test-delivery';
const HOUR = 60 * 60_000;

let dataDir: string;
let env: Record<string, string>;
let store: Store;
let queue: MessageQueue;
/** A second node on the same database, with its own spool (a multi-node PostgreSQL set-up, in miniature). */
let otherNode: MessageQueue;
const m = {} as Record<'incoming' | 'deferred' | 'held' | 'active' | 'sent' | 'elsewhere', QueuedMessage>;

const enqueue = (into: MessageQueue, envelope: Partial<MessageEnvelope> = {}) =>
  enqueueMessage(into, 'Subject: Scan\r\n\r\nhello\r\n', { reversePath: 'dev@printers.local', headerFrom: 'dev@printers.local', ...envelope });

async function leased(message: QueuedMessage): Promise<QueuedMessage> {
  const [won] = await queue.leaseMany([message], OWNER, HOUR);
  if (!won) throw new Error(`could not lease ${message.id}`);
  return won;
}

const lineOf = (stdout: string, id: string) => stdout.split('\n').find((line) => line.startsWith(id));
const events = async (id: string) => (await queue.logEntries({ queueId: id })).map((e) => ({ event: e.event, reply: e.reply }));
const audit = () => new AuditLog(store).recent(20);
const isoTime = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'postern-cli-queue-'));
  env = { POSTERN_DATA_DIR: dataDir };
  store = await openStore({ dataDir });
  queue = new MessageQueue(store, Spool.open(spoolDirectory(dataDir)), { tuning: TUNING });
  otherNode = new MessageQueue(store, Spool.open(join(mkdtempSync(join(tmpdir(), 'postern-cli-queue-other-')), 'spool')), { tuning: TUNING });

  m.incoming = await enqueue(queue, { reversePath: 'scanner@printers.local', recipients: ['carol@example.test', 'dave@example.test'] });

  const deferred = await leased(await enqueue(queue, { reversePath: 'mfp@printers.local' }));
  const reply = { recipient: 'bob@example.test', code: 451, reply: '451 4.3.0 try later', advice: 'The server is busy; Postern tries again.' };
  await queue.recordOutcome(deferred, OWNER, { delivered: [], retry: [reply], nextAttemptAt: Date.now() + HOUR, failed: [], summary: reply });
  m.deferred = (await queue.get(deferred.id))!;

  const held = await leased(await enqueue(queue, { reversePath: 'app@printers.local' }));
  await queue.hold(held, OWNER, 'Token Status is Expired', 'Sign in again on the E-Mail Settings page.');
  m.held = (await queue.get(held.id))!;

  m.active = await leased(await enqueue(queue, { reversePath: 'busy@printers.local' }));

  const sent = await leased(await enqueue(queue, { reversePath: 'done@printers.local' }));
  await queue.recordOutcome(sent, OWNER, { delivered: sent.recipients, retry: [], failed: [], summary: { code: 250, reply: '250 2.0.0 OK' } });
  m.sent = (await queue.get(sent.id))!;

  m.elsewhere = await enqueue(otherNode, { reversePath: 'far@printers.local' });
  await Promise.all([queue.drain(), otherNode.drain()]);
});

afterAll(async () => {
  await otherNode?.close();
  await queue?.close();
  await store?.close();
});

describe('postern queue', () => {
  test('lists the messages not finished, one line each, with a count by state', async () => {
    const result = await runCli(['queue'], env);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATE\s+RECEIVED\s+SIZE\s+ATTEMPTS\s+NEXT ATTEMPT\s+FROM\s+TO\s+LAST REPLY$/);
    expect(lines).toHaveLength(1 + 5 + 1);

    const incoming = lineOf(result.stdout, m.incoming.id)!;
    expect(incoming.split(/\s{2,}/)).toEqual([m.incoming.id, 'incoming', isoTime(m.incoming.receivedAt), String(m.incoming.size), '0', 'now', 'scanner@printers.local', 'carol@example.test,dave@example.test', '-']);
    const deferred = lineOf(result.stdout, m.deferred.id)!;
    expect(deferred.split(/\s{2,}/)).toEqual([
      m.deferred.id,
      'deferred',
      isoTime(m.deferred.receivedAt),
      String(m.deferred.size),
      '1',
      isoTime(m.deferred.nextAttemptAt),
      'mfp@printers.local',
      'bob@example.test',
      '451 4.3.0 try later; advice: The server is busy; Postern tries again.',
    ]);
    expect(lineOf(result.stdout, m.held.id)).toMatch(/ held .* app@printers\.local .* Token Status is Expired; advice: Sign in again on the E-Mail Settings page\.$/);
    expect(lineOf(result.stdout, m.active.id)).toMatch(/ active .* busy@printers\.local /);
    expect(lineOf(result.stdout, m.elsewhere.id)).toMatch(/ incoming .* far@printers\.local /);
    expect(result.stdout).not.toContain(m.sent.id);
    expect(lines.at(-1)).toBe('5 not finished: incoming 2, active 1, deferred 1, held 1. Finished (kept for the Log page): sent 1, bounced 0.');

    expect((await runCli(['queue', 'list'], env)).stdout).toBe(result.stdout);
  });

  test('--all also lists recently finished messages', async () => {
    for (const args of [['queue', '--all'], ['queue', 'list', '--all']]) {
      const result = await runCli(args, env);
      expect(result.code).toBe(0);
      expect(lineOf(result.stdout, m.sent.id)).toMatch(/ sent .* done@printers\.local .* 250 2\.0\.0 OK$/);
      expect(lineOf(result.stdout, m.deferred.id)).toBeDefined();
    }
  });

  test('retry <id>: Retry Now, as on the Queue page (due now, delivery log, audit log)', async () => {
    expect(m.deferred.nextAttemptAt).toBeGreaterThan(Date.now());
    const result = await runCli(['queue', 'retry', m.deferred.id], env);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`Message ${m.deferred.id} (deferred) is due now (Retry Now).`);
    expect(result.stdout).toContain('A running gateway picks it up');
    const after = (await queue.get(m.deferred.id))!;
    expect(after.state).toBe('deferred');
    expect(after.nextAttemptAt).toBeLessThanOrEqual(Date.now());
    expect(await events(m.deferred.id)).toContainEqual({ event: 'retry', reply: 'Retry Now by the command line' });
    expect(await audit()).toContainEqual(expect.objectContaining({ actor: null, action: 'queue.retry', detail: `${m.deferred.id} (command line)` }));
  });

  test('retry all: every deferred and held message is due now; incoming ones are left as they are', async () => {
    const result = await runCli(['queue', 'retry', 'all'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^2 messages are due now \(Retry Now\)\.\nA running gateway picks them up/);
    expect(result.stdout).toContain('Held messages are held again if the sending account\'s Token Status is still not Active.');
    const held = (await queue.get(m.held.id))!;
    expect(held.state).toBe('deferred');
    expect(held.nextAttemptAt).toBeLessThanOrEqual(Date.now());
    expect(await events(m.held.id)).toContainEqual({ event: 'retry', reply: 'Retry Now by the command line' });
    expect((await queue.get(m.incoming.id))!.state).toBe('incoming');
    expect(await audit()).toContainEqual(expect.objectContaining({ actor: null, action: 'queue.retry', detail: 'all: 2 messages (command line)' }));
  });

  test('delete <id>: the row and the spooled body go, the delivery log and the audit log say so', async () => {
    const bodyFile = queue.spool.path(m.incoming.id);
    expect(existsSync(bodyFile)).toBe(true);
    const result = await runCli(['queue', 'delete', m.incoming.id], env);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(
      `Deleted message ${m.incoming.id} from scanner@printers.local to carol@example.test, dave@example.test without sending it; its sender is not told.\n` +
        `Its body ${bodyFile} was removed.\n`,
    );
    expect(await queue.get(m.incoming.id)).toBeUndefined();
    expect(existsSync(bodyFile)).toBe(false);
    expect(await events(m.incoming.id)).toContainEqual({ event: 'deleted', reply: 'Deleted by the command line (from scanner@printers.local, subject "Scan")' });
    expect(await audit()).toContainEqual(
      expect.objectContaining({ actor: null, action: 'queue.deleted', detail: `${m.incoming.id} from scanner@printers.local to carol@example.test, dave@example.test (command line)` }),
    );
  });

  test("delete <id> of another node's message: the row goes, the body stays for that node", async () => {
    const otherBody = otherNode.spool.path(m.elsewhere.id);
    const result = await runCli(['queue', 'delete', m.elsewhere.id], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("Its body is not in this host's spool");
    expect(await queue.get(m.elsewhere.id)).toBeUndefined();
    expect(existsSync(otherBody)).toBe(true);
  });

  test('a message being sent, or already sent, is neither retried nor deleted: one line, exit 1', async () => {
    for (const [args, message] of [
      [['queue', 'delete', m.active.id], `postern: message ${m.active.id} cannot be deleted: it is being sent right now (only incoming, deferred and held messages can)`],
      [['queue', 'retry', m.active.id], `postern: message ${m.active.id} cannot be retried: it is being sent right now (only incoming, deferred and held messages can)`],
      [['queue', 'retry', m.sent.id], `postern: message ${m.sent.id} cannot be retried: it is already sent (only incoming, deferred and held messages can)`],
    ] as const) {
      const result = await runCli([...args], env);
      expect(result.code).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr).toBe(`${message}\n`);
    }
    expect((await queue.get(m.active.id))!.state).toBe('active');
  });

  test('an unknown id: one line on stderr, exit 1', async () => {
    const unknown = randomUUID();
    for (const args of [['queue', 'retry', unknown], ['queue', 'delete', unknown], ['queue', 'delete', 'not-an-id']]) {
      const result = await runCli(args, env);
      expect(result.code).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr).toBe(`postern: there is no message ${args[2]} in the queue\n`);
    }
  });

  test.each([[['queue', 'retry']], [['queue', 'delete']], [['queue', 'delete', 'a', 'b']], [['queue', 'retry', '--all']], [['queue', 'list', '--bogus']], [['queue', '-a']], [['queue', 'flush']]])(
    'bad usage %j: the usage on stderr, exit 64',
    async (args) => {
      const result = await runCli(args, env);
      expect(result.code).toBe(64);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/^postern: .+\n\nUsage: postern queue \[list\] \[--all\]\n {7}postern queue retry <id\|all>\n {7}postern queue delete <id>\n$/);
    },
  );

  test('the usage names the queue commands', async () => {
    const result = await runCli(['--help'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^ {2}queue \[list\] \[--all\] /m);
    expect(result.stdout).toMatch(/^ {2}queue retry <id\|all> /m);
    expect(result.stdout).toMatch(/^ {2}queue delete <id> /m);
  });
});
