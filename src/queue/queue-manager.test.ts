/**
 * The queue manager against a scripted transport and a real (SQLite) store and spool: states, retries,
 * holding, exactly one bounce, expiry, pacing, concurrency and recovery after a crash.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { QueueTuning } from '../config.js';
import { ErrorCodes, isPosternError } from '../errors.js';
import { createLogger } from '../log.js';
import { openStore, type Store } from '../store/store.js';
import { StorePacer } from './pacing.js';
import { QueueManager, type DeliveryResult, type OutboundTransport, type RouteStatus } from './queue-manager.js';
import { LeaseLostError, MessageQueue, type MessageEnvelope, type QueuedMessage } from './queue.js';
import { Spool } from './spool.js';
import { directoryChanges, Signal, until } from '../../test/support/events.js';
import { nextPass, untilQueue } from '../../test/support/queue.js';

const log = createLogger('silent');
const TUNING: QueueTuning = { retryBaseMs: 20, retryMaxMs: 40, lifetimeMs: 60_000, concurrency: 4 };

class ScriptedTransport implements OutboundTransport {
  route: () => Promise<RouteStatus>;
  ready = true;
  limit = 0;
  script: Array<(m: QueuedMessage) => DeliveryResult> = [];
  fallback: (m: QueuedMessage) => DeliveryResult = (m) => ({ status: 'delivered', code: 250, reply: '250 2.0.0 OK', accepted: m.recipients, rejected: [] });
  calls: Array<{ message: QueuedMessage; body: string }> = [];
  inFlight = 0;
  maxInFlight = 0;
  /** While set, deliveries wait for it after reading the body (so that several are in flight at once). */
  gate: Promise<void> | undefined;
  /** Raised when a delivery starts or ends. */
  readonly changed = new Signal();
  /** How often the route was asked for: once at the start of every pass (routeCacheMs 0). */
  routeCalls = 0;

  constructor() {
    this.route = async () => {
      this.routeCalls++;
      return { accountId: 'microsoft', ready: this.ready, reason: this.ready ? undefined : 'Token Status is Expired', messagesPerMinute: this.limit, postmaster: 'alice@example.test', remoteMta: 'smtp.test' };
    };
  }

  async deliver(message: QueuedMessage, body: () => NodeJS.ReadableStream): Promise<DeliveryResult> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.changed.raise();
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of body() as AsyncIterable<Buffer>) chunks.push(chunk);
      await this.gate;
      this.calls.push({ message: { ...message, recipients: [...message.recipients] }, body: Buffer.concat(chunks).toString() });
      const step = this.script.shift() ?? this.fallback;
      return step(message);
    } finally {
      this.inFlight--;
      this.changed.raise();
    }
  }

  async abort(): Promise<void> {}
}

let dir: string;
let store: Store;
let queue: MessageQueue;
let transport: ScriptedTransport;
let manager: QueueManager;

async function enqueue(envelope: Partial<MessageEnvelope> = {}, body = 'From: dev@printers.local\r\nSubject: Scan\r\n\r\nhello\r\n'): Promise<string> {
  const incoming = await queue.receive();
  await new Promise<void>((resolve, reject) => incoming.body.end(Buffer.from(body), (e?: Error | null) => (e ? reject(e) : resolve())));
  await incoming.commit({ reversePath: 'dev@printers.local', recipients: ['bob@example.test'], body8bit: false, smtputf8: false, headerFrom: 'dev@printers.local', subject: 'Scan', messageId: '<1@x>', client: 'test', ...envelope });
  manager.kick();
  return incoming.id;
}

/** `check`'s first value, checked now and after every pass and every recorded delivery of the manager. */
const waitFor = <T>(check: () => Promise<T | undefined | false>, what: string): Promise<T> => untilQueue(manager, check, what);

/** Resolves once no message body is left in the spool, checked at each change of the spool directory. */
const spoolEmpty = (what: string): Promise<true> =>
  until(directoryChanges(join(dir, 'spool')), () => readdirSync(join(dir, 'spool')).filter((n) => n.endsWith('.eml')).length === 0 || undefined, what);

const stateOf = async (id: string) => (await queue.get(id))?.state;
const events = async (id: string) => (await queue.logEntries({ queueId: id })).map((e) => e.event).reverse();

function newManager(tuning: QueueTuning = TUNING, now?: () => number): QueueManager {
  const pacer = new StorePacer(store, now);
  return new QueueManager({ queue, transport, pacer, log, tuning, reportingMta: 'postern.test', tickMs: 50, routeCacheMs: 0, ...(now ? { now } : {}) });
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'postern-queue-'));
  store = await openStore({ dataDir: dir });
  queue = new MessageQueue(store, Spool.open(join(dir, 'spool')), { tuning: TUNING });
  transport = new ScriptedTransport();
  manager = newManager();
  await manager.start();
});

afterEach(async () => {
  await manager.stop(1000);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('queue manager', () => {
  it('delivers a committed message once, records it as sent and removes its body', async () => {
    const id = await enqueue();
    await waitFor(async () => (await stateOf(id)) === 'sent', 'sent');
    expect(transport.calls).toHaveLength(1);
    expect(transport.calls[0]!.body).toContain('hello');
    expect(await events(id)).toEqual(['accepted', 'sent']);
    // The body goes once the outcome is on disk (at most relaxedSyncMs later).
    await spoolEmpty('the body to be removed');
  });

  it('retries a 4xx with backoff, then sends', async () => {
    transport.script.push(() => ({ status: 'deferred', code: 451, reply: '451 4.3.0 try later', advice: 'later' }));
    transport.script.push(() => ({ status: 'deferred', code: null, reply: 'connection reset', advice: 'later' }));
    const id = await enqueue();
    await waitFor(async () => (await stateOf(id)) === 'sent', 'sent');
    expect(transport.calls).toHaveLength(3);
    expect(await events(id)).toEqual(['accepted', 'deferred', 'deferred', 'sent']);
    expect((await queue.get(id))!.attempts).toBe(3);
  });

  it('returns a 5xx to its sender with exactly one DSN, and a failing DSN is not bounced again', async () => {
    transport.script.push(() => ({ status: 'failed', code: 550, reply: '550 5.1.1 no such user', advice: 'check the address' }));
    transport.script.push(() => ({ status: 'failed', code: 550, reply: '550 5.1.1 no such user either', advice: '' }));
    const id = await enqueue();
    await waitFor(async () => (await stateOf(id)) === 'bounced', 'bounced');
    const bounces = await waitFor(async () => {
      const rows = await store.db.selectFrom('queue_messages').selectAll().where('is_bounce', '=', 1).execute();
      return rows.length > 0 && rows.every((r) => r.state === 'bounced') ? rows : undefined;
    }, 'the DSN to fail');
    expect(bounces).toHaveLength(1);
    expect(bounces[0]).toMatchObject({ reverse_path: '', recipients: JSON.stringify(['dev@printers.local']) });
    const dsn = transport.calls[1]!;
    expect(dsn.message.isBounce).toBe(true);
    expect(dsn.body).toContain('multipart/report; report-type=delivery-status');
    expect(dsn.body).toContain('Status: 5.1.1');
    await manager.whenIdle();
    expect(await store.db.selectFrom('queue_messages').select('id').execute()).toHaveLength(2);
    expect(await events(id)).toEqual(['accepted', 'bounced', 'bounce-queued']);
  });

  it('sends no DSN for the null sender <>', async () => {
    transport.script.push(() => ({ status: 'failed', code: 554, reply: '554 5.2.252 SendAsDenied', advice: 'x' }));
    const id = await enqueue({ reversePath: '' });
    await waitFor(async () => (await stateOf(id)) === 'bounced', 'bounced');
    await manager.whenIdle();
    expect(await store.db.selectFrom('queue_messages').select('id').where('is_bounce', '=', 1).execute()).toEqual([]);
  });

  it('holds messages while there is no usable token, and sends them when there is again', async () => {
    transport.ready = false;
    const ids = [await enqueue(), await enqueue()];
    await waitFor(async () => (await Promise.all(ids.map(stateOf))).every((s) => s === 'held'), 'held');
    expect(transport.calls).toHaveLength(0);
    const held = (await queue.get(ids[0]!))!;
    expect(held.lastReply).toBe('Token Status is Expired');
    transport.ready = true;
    manager.invalidateRoute();
    await waitFor(async () => (await Promise.all(ids.map(stateOf))).every((s) => s === 'sent'), 'sent');
    expect(await events(ids[0]!)).toEqual(['accepted', 'held', 'released', 'sent']);
    expect((await queue.get(ids[0]!))!.attempts).toBe(1);
  });

  it('holds a message whose delivery found the token gone, without counting the attempt', async () => {
    transport.script.push(() => {
      transport.ready = false;
      return { status: 'held', reason: 'Token Status is Expired', advice: 'authorize again' };
    });
    const id = await enqueue();
    await waitFor(async () => (await stateOf(id)) === 'held', 'held');
    expect((await queue.get(id))!.attempts).toBe(0);
    transport.ready = true;
    manager.invalidateRoute();
    await waitFor(async () => (await stateOf(id)) === 'sent', 'sent');
  });

  it('splits recipients: accepted ones are sent, 5xx ones bounced, 4xx ones retried alone', async () => {
    transport.script.push(() => ({
      status: 'delivered',
      code: 250,
      reply: '250 OK',
      accepted: ['a@example.test'],
      rejected: [
        { recipient: 'b@example.test', code: 550, reply: '550 5.1.1 unknown' },
        { recipient: 'c@example.test', code: 452, reply: '452 4.2.2 mailbox full' },
      ],
    }));
    const id = await enqueue({ recipients: ['a@example.test', 'b@example.test', 'c@example.test'] });
    await waitFor(async () => (await stateOf(id)) === 'sent', 'sent');
    expect(transport.calls.map((c) => c.message.recipients)).toContainEqual(['c@example.test']);
    expect(transport.calls.filter((c) => !c.message.isBounce)).toHaveLength(2);
    const dsn = transport.calls.find((c) => c.message.isBounce);
    expect(dsn?.body).toContain('Final-Recipient: rfc822; b@example.test');
    expect(dsn?.body).not.toContain('Final-Recipient: rfc822; c@example.test');
  });

  it('returns a message that stays deferred past its lifetime, once', async () => {
    await manager.stop();
    queue = new MessageQueue(store, queue.spool, { tuning: { ...TUNING, lifetimeMs: 80 } });
    manager = new QueueManager({ queue, transport, pacer: new StorePacer(store), log, tuning: { ...TUNING, lifetimeMs: 80 }, reportingMta: 'postern.test', tickMs: 20, routeCacheMs: 0 });
    await manager.start();
    transport.fallback = (m) => (m.isBounce ? { status: 'delivered', code: 250, reply: 'ok', accepted: m.recipients, rejected: [] } : { status: 'deferred', code: 421, reply: '421 4.3.2 busy', advice: 'later' });
    const id = await enqueue();
    await waitFor(async () => (await stateOf(id)) === 'bounced', 'bounced');
    const dsn = await waitFor(async () => transport.calls.find((c) => c.message.isBounce), 'the DSN');
    expect(dsn.body).toContain('Status: 4.4.7');
    expect(dsn.body).toContain('Diagnostic-Code: x-postern; delivery time expired');
  });

  it('keeps to the pace of the account (messages per minute)', async () => {
    await manager.stop();
    let now = Date.now();
    transport.limit = 2;
    manager = newManager(TUNING, () => now);
    await manager.start();
    const ids = await Promise.all([1, 2, 3, 4, 5].map(() => enqueue()));
    await waitFor(async () => transport.calls.length === 2, 'two deliveries');
    await manager.whenIdle();
    // One more pass with the pace full: it starts nothing.
    await nextPass(manager);
    expect(transport.calls).toHaveLength(2);
    now += 61_000;
    manager.kick();
    await waitFor(async () => transport.calls.length === 4, 'two more deliveries');
    // A delivery's outcome is recorded after the transport returns: wait for the records, not just the calls.
    await manager.whenIdle();
    expect((await Promise.all(ids.map(stateOf))).filter((s) => s === 'sent')).toHaveLength(4);
    expect(transport.calls).toHaveLength(4);
  });

  it('gives back the start of a message held before any connection', async () => {
    // Real clock: the held start, if it were not given back, would block the next attempt for a minute.
    transport.limit = 1;
    transport.script.push(() => ({ status: 'held', reason: 'Token Status is Expired', advice: 'authorize again' }));
    const id = await enqueue();
    await waitFor(async () => (await stateOf(id)) === 'sent', 'sent after the hold');
    expect(transport.calls).toHaveLength(2);
    expect(await store.db.selectFrom('pacing_starts').selectAll().execute()).toHaveLength(1);
  });

  it('without a limit, stores no pacing starts', async () => {
    const ids = await Promise.all(Array.from({ length: 5 }, () => enqueue()));
    await waitFor(async () => (await Promise.all(ids.map(stateOf))).every((s) => s === 'sent'), 'all sent');
    expect(await store.db.selectFrom('pacing_starts').selectAll().execute()).toEqual([]);
  });

  it('never runs more deliveries at once than its concurrency', async () => {
    let open!: () => void;
    transport.gate = new Promise<void>((resolve) => (open = resolve));
    const ids = await Promise.all(Array.from({ length: 12 }, () => enqueue()));
    await until(transport.changed.subscribe, () => transport.inFlight === TUNING.concurrency, 'every delivery slot taken');
    // A pass that runs while every slot is taken starts no delivery.
    const passed = new Promise<void>((resolve) => {
      const off = manager.onEvent((event) => {
        if (event.type !== 'pass') return;
        off();
        resolve();
      });
    });
    manager.kick();
    await passed;
    expect(transport.inFlight).toBe(TUNING.concurrency);
    open();
    await waitFor(async () => (await Promise.all(ids.map(stateOf))).every((s) => s === 'sent'), 'all sent');
    expect(transport.maxInFlight).toBeLessThanOrEqual(TUNING.concurrency);
    expect(transport.calls).toHaveLength(12);
  });

  it('after a crash: requeues active messages, removes unacknowledged spool files, delivers each once', async () => {
    await manager.stop();
    transport.ready = false; // nothing gets delivered while we set the scene
    manager = newManager();
    const a = await enqueue();
    const b = await enqueue();
    // A process that died while delivering `a`: an active row with its lease.
    const row = (await queue.get(a))!;
    expect(await queue.lease(row, 'a-dead-process', 15 * 60_000)).toBe(true);
    // A body spooled whose row never committed (the device got no 250).
    writeFileSync(join(dir, 'spool', '0b0b0b0b-0000-4000-8000-000000000000.eml'), 'orphan');
    mkdirSync(join(dir, 'spool', 'tmp'));
    writeFileSync(join(dir, 'spool', 'tmp', 'half-written'), 'x');
    transport.ready = true;
    manager = newManager();
    await manager.start();
    await waitFor(async () => (await stateOf(a)) === 'sent' && (await stateOf(b)) === 'sent', 'both sent');
    expect(transport.calls.map((c) => c.message.id).sort()).toEqual([a, b].sort());
    expect(await events(a)).toEqual(['accepted', 'requeued', 'sent']);
    await spoolEmpty('the bodies to be removed');
    expect(existsSync(join(dir, 'spool', 'tmp'))).toBe(false);
  });

  it('a partly refused message: the accepted recipient is sent, the refused one returned, the row keeps its whole envelope', async () => {
    transport.script.push(() => ({ status: 'delivered', code: 250, reply: '250 OK', accepted: ['a@example.test'], rejected: [{ recipient: 'b@example.test', code: 550, reply: '550 5.1.1 unknown' }] }));
    const id = await enqueue({ recipients: ['a@example.test', 'b@example.test'] });
    await waitFor(async () => (await stateOf(id)) === 'sent', 'sent');
    expect(await events(id)).toEqual(['accepted', 'sent', 'bounced', 'bounce-queued']);
    const row = (await queue.get(id))!;
    expect(row.recipients).toEqual(['a@example.test', 'b@example.test']); // the final row keeps the whole envelope
  });

  it('after a crash between recording the accepted recipients and the DSN: only the others are tried again', async () => {
    await manager.stop();
    transport.ready = false;
    manager = newManager();
    const id = await enqueue({ recipients: ['a@example.test', 'b@example.test'] });
    // A process that died after the upstream accepted a@ and its outcome was recorded, before b@'s DSN.
    const row = (await queue.get(id))!;
    expect(await queue.lease(row, 'a-dead-process', 15 * 60_000)).toBe(true);
    await queue.recordDelivered(row, 'a-dead-process', ['a@example.test'], { code: 250, reply: '250 OK' });
    transport.ready = true;
    manager = newManager();
    await manager.start();
    await waitFor(async () => (await stateOf(id)) === 'sent', 'sent');
    expect(transport.calls.map((c) => c.message.recipients)).toEqual([['b@example.test']]);
    expect(await events(id)).toEqual(['accepted', 'sent', 'requeued', 'sent']);
  });

  it('Retry Now and Delete from the Queue page', async () => {
    transport.fallback = () => ({ status: 'deferred', code: 451, reply: '451 later', advice: 'later' });
    await manager.stop();
    manager = newManager({ ...TUNING, retryBaseMs: 30_000, retryMaxMs: 30_000 });
    await manager.start();
    const id = await enqueue();
    await waitFor(async () => (await stateOf(id)) === 'deferred', 'deferred');
    const before = transport.calls.length;
    expect(await queue.retryNow(id, 'admin')).toBe(true);
    manager.kick();
    await waitFor(async () => transport.calls.length > before, 'a retry');
    await waitFor(async () => (await stateOf(id)) === 'deferred', 'deferred again');
    const removed = await queue.remove(id, 'admin');
    expect(removed?.id).toBe(id);
    expect(await queue.get(id)).toBeUndefined();
    expect((await queue.logEntries({ queueId: id }))[0]).toMatchObject({ event: 'deleted' });
    expect(await queue.remove(id, 'admin')).toBeUndefined();
  });
});

describe('queue errors carry their catalogue codes (docs/errors.md)', () => {
  it('a message that cannot be recorded fails with POSTERN_QUEUE_COMMIT_FAILED and leaves no spool file', async () => {
    const incoming = await queue.receive();
    await new Promise<void>((resolve, reject) => incoming.body.end(Buffer.from('Subject: x\r\n\r\nx\r\n'), (e?: Error | null) => (e ? reject(e) : resolve())));
    // The database refuses the write, as on a full or failing disk.
    await sql`ALTER TABLE delivery_log RENAME TO delivery_log_away`.execute(store.db);
    try {
      const commit = incoming.commit({ reversePath: 'a@b.test', recipients: ['c@d.test'], body8bit: false, smtputf8: false, headerFrom: null, subject: null, messageId: null, client: 'test' });
      await expect(commit).rejects.toMatchObject({ code: ErrorCodes.QUEUE_COMMIT_FAILED });
    } finally {
      await sql`ALTER TABLE delivery_log_away RENAME TO delivery_log`.execute(store.db);
    }
    expect(await queue.get(incoming.id)).toBeUndefined();
    expect(existsSync(queue.spool.path(incoming.id))).toBe(false);
  });

  it('a body whose spool file is gone fails its stream with POSTERN_QUEUE_SPOOL_MISSING', async () => {
    const error = await new Promise<unknown>((resolve) => queue.spool.read(Spool.newId()).on('error', resolve).resume());
    expect(isPosternError(error, ErrorCodes.QUEUE_SPOOL_MISSING)).toBe(true);
    expect((error as Error).message).toMatch(/^the spooled copy of queue message [0-9a-f-]{36} is missing$/);
  });

  it('a lost lease is POSTERN_QUEUE_LEASE_LOST', () => {
    expect(new LeaseLostError('x')).toMatchObject({ code: ErrorCodes.QUEUE_LEASE_LOST, name: 'LeaseLostError' });
  });
});
