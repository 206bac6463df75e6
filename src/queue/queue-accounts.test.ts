/**
 * The queue manager with several sending accounts, against a scripted transport and a real (SQLite) store
 * and spool: each message goes only through the account it was routed to; an account without a usable token
 * holds only its own messages; a full pace holds up only its own account; a DSN goes back through the
 * original's account.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { QueueTuning } from '../config.js';
import { createLogger } from '../log.js';
import { openStore, type Store } from '../store/store.js';
import { StorePacer } from './pacing.js';
import { QueueManager, type DeliveryResult, type OutboundTransport, type RouteStatus } from './queue-manager.js';
import { MessageQueue, type QueuedMessage } from './queue.js';
import { Spool } from './spool.js';
import { untilQueue } from '../../test/support/queue.js';

const log = createLogger('silent');
const TUNING: QueueTuning = { retryBaseMs: 20, retryMaxMs: 40, lifetimeMs: 60_000, concurrency: 4 };

interface AccountScript {
  ready: boolean;
  limit: number;
  result?: (m: QueuedMessage) => DeliveryResult;
}

class AccountsTransport implements OutboundTransport {
  readonly accounts = new Map<string, AccountScript>([
    ['alpha', { ready: true, limit: 0 }],
    ['beta', { ready: true, limit: 0 }],
  ]);
  /** '' (a row from an older instance) goes to the Default. */
  defaultAccount = 'alpha';
  readonly delivered: Array<{ id: string; routedTo: string; through: string }> = [];

  async route(key: string): Promise<RouteStatus> {
    const accountId = key || this.defaultAccount;
    const script = this.accounts.get(accountId);
    if (!script) return { accountId, ready: false, reason: `There is no sending account "${accountId}".`, messagesPerMinute: 0 };
    return { accountId, ready: script.ready, reason: script.ready ? undefined : `${accountId}: Token Status is Expired`, messagesPerMinute: script.limit, postmaster: `postmaster@${accountId}.test`, remoteMta: `smtp.${accountId}.test` };
  }

  async deliver(message: QueuedMessage, body: () => NodeJS.ReadableStream, route: RouteStatus): Promise<DeliveryResult> {
    for await (const _ of body() as AsyncIterable<Buffer>) void _;
    this.delivered.push({ id: message.id, routedTo: message.accountId, through: route.accountId });
    const script = this.accounts.get(route.accountId);
    return script?.result?.(message) ?? { status: 'delivered', code: 250, reply: '250 2.0.0 OK', accepted: message.recipients, rejected: [] };
  }

  async abort(): Promise<void> {}
}

let dir: string;
let store: Store;
let queue: MessageQueue;
let transport: AccountsTransport;
let manager: QueueManager;

async function enqueue(accountId: string | undefined, reversePath = 'dev@printers.local'): Promise<string> {
  const incoming = await queue.receive();
  await new Promise<void>((resolve, reject) => incoming.body.end(Buffer.from('Subject: Scan\r\n\r\nhello\r\n'), (e?: Error | null) => (e ? reject(e) : resolve())));
  const message = await incoming.commit({ reversePath, recipients: ['bob@example.test'], body8bit: false, smtputf8: false, headerFrom: null, subject: 'Scan', messageId: null, client: 'test', accountId });
  manager.offer(message);
  return message.id;
}

const stateOf = async (id: string) => (await queue.get(id))?.state;
const waitFor = <T>(check: () => Promise<T | undefined | false>, what: string): Promise<T> => untilQueue(manager, check, what);

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'postern-queue-accounts-'));
  store = await openStore({ dataDir: dir });
  queue = new MessageQueue(store, Spool.open(join(dir, 'spool')), { tuning: TUNING });
  transport = new AccountsTransport();
  manager = new QueueManager({ queue, transport, pacer: new StorePacer(store), log, tuning: TUNING, reportingMta: 'postern.test', tickMs: 50, routeCacheMs: 0 });
  await manager.start();
});

afterEach(async () => {
  await manager.stop(1000);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('queue manager with several sending accounts', () => {
  it('sends each message only through the account it was routed to', async () => {
    const ids = await Promise.all([enqueue('alpha'), enqueue('beta'), enqueue('alpha'), enqueue('beta'), enqueue(undefined)]);
    await waitFor(async () => (await Promise.all(ids.map(stateOf))).every((s) => s === 'sent'), 'all sent');
    expect(transport.delivered).toHaveLength(5);
    for (const d of transport.delivered) expect(d.through).toBe(d.routedTo || 'alpha');
    expect(transport.delivered.filter((d) => d.through === 'beta')).toHaveLength(2);
  });

  it('an account without a usable token holds only its own messages, and sends them once it has one', async () => {
    transport.accounts.get('beta')!.ready = false;
    const a = await enqueue('alpha');
    const b = await enqueue('beta');
    await waitFor(async () => (await stateOf(a)) === 'sent' && (await stateOf(b)) === 'held', 'alpha sent, beta held');
    expect((await queue.get(b))!.lastReply).toContain('beta: Token Status is Expired');
    const a2 = await enqueue('alpha');
    await waitFor(async () => (await stateOf(a2)) === 'sent', 'alpha goes on while beta is held');
    expect(await stateOf(b)).toBe('held');
    transport.accounts.get('beta')!.ready = true;
    manager.invalidateRoute();
    await waitFor(async () => (await stateOf(b)) === 'sent', 'beta released and sent');
    expect(transport.delivered.find((d) => d.id === b)!.through).toBe('beta');
  });

  it('a message routed to an account that no longer exists is held, never sent through another', async () => {
    const gone = await enqueue('removed-account');
    const a = await enqueue('alpha');
    await waitFor(async () => (await stateOf(a)) === 'sent' && (await stateOf(gone)) === 'held', 'held');
    expect((await queue.get(gone))!.lastReply).toContain('removed-account');
    expect(transport.delivered.map((d) => d.id)).not.toContain(gone);
  });

  it('a full pace holds up only its own account', async () => {
    transport.accounts.get('alpha')!.limit = 1;
    const first = await enqueue('alpha');
    await waitFor(async () => (await stateOf(first)) === 'sent', 'the first alpha message');
    const second = await enqueue('alpha');
    const betas = await Promise.all([enqueue('beta'), enqueue('beta'), enqueue('beta')]);
    await waitFor(async () => (await Promise.all(betas.map(stateOf))).every((s) => s === 'sent'), 'beta not held up by alpha\'s pace');
    // Alpha's second message waits for its minute; the passes in between start nothing for it.
    expect(await stateOf(second)).not.toBe('sent');
    expect(transport.delivered.filter((d) => d.through === 'alpha')).toHaveLength(1);
  });

  it('a DSN goes back through the account of the message it reports on', async () => {
    transport.accounts.get('beta')!.result = (m) =>
      m.isBounce ? { status: 'delivered', code: 250, reply: '250 OK', accepted: m.recipients, rejected: [] } : { status: 'failed', code: 550, reply: '550 5.1.1 no such user', advice: 'check the address' };
    const failed = await enqueue('beta', 'scanner@example.test');
    await waitFor(async () => (await stateOf(failed)) === 'bounced', 'bounced');
    const bounce = await waitFor(async () => (await queue.list(['incoming', 'active', 'deferred', 'held', 'sent'])).find((m) => m.isBounce && m.state === 'sent'), 'the DSN sent');
    expect(bounce.accountId).toBe('beta');
    expect(transport.delivered.find((d) => d.id === bounce.id)!.through).toBe('beta');
  });
});
