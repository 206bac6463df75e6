/**
 * The queue manager (Postfix's qmgr): picks due messages, leases them, hands them to the outbound
 * transport, and records what happened.
 *
 * Purpose: deliver every committed message exactly as often as SMTP allows (once, barring the RFC 1047
 *   window between the upstream's `250` and our commit), within the provider's pace, retrying transient
 *   failures and returning permanent ones to their sender with one DSN.
 * Inputs: due rows of this node's queue; the transport's route status (is there a usable token? which
 *   account, what pace?); the pacer, whose window every instance on the database shares (pacing.ts).
 * Outputs: outcomes and DSNs recorded through MessageQueue; log lines; events for observers (onEvent).
 * Failure modes: no usable token → messages are held (not failed) and released when the token is usable
 *   again; 4xx, network errors and timeouts → deferred with exponential backoff and jitter until
 *   `lifetimeMs`, then bounced; 5xx → bounced at once. A crash leaves active rows behind: `start()`
 *   requeues them (leases of a dead process mean nothing), and orphaned spool files are removed.
 * Pacing: with a limit, starts are taken from the shared window before the messages are leased; starts the
 *   window refuses put the messages back, and a message held before any connection gives its start back.
 *   Without a limit (0) the pacer is not asked at all.
 * Known limits: the Queue page's Retry Now takes effect on the next pass (at most `tickMs` later, usually at
 *   once). A start another instance gives back is used here only once this instance's wait for the window
 *   is over (under a minute): pacing errs towards later.
 */
import type { Readable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import type { QueueTuning } from '../config.js';
import { isPosternError, ErrorCodes, type ErrorCode } from '../errors.js';
import { describeError, type Logger } from '../log.js';
import { buildDsn, statusOf, type FailedRecipient } from './dsn.js';
import type { Pacer, PacingGrant, PacingSlot } from './pacing.js';
import { LeaseLostError, type MessageQueue, type QueuedMessage, type RecipientReply } from './queue.js';
import { nextAttemptAt } from './retry-schedule.js';

/** Where mail goes now, as the transport sees it. */
export interface RouteStatus {
  /** Pacing key: the sending account. */
  accountId: string;
  /** False while no usable token can be had (Token Status not Active, Use off, not authorized). */
  ready: boolean;
  /** Why not ready, for the Queue page and the Log. */
  reason?: string | undefined;
  advice?: string | undefined;
  messagesPerMinute: number;
  /** The address DSNs come from (the sender mailbox), when known. */
  postmaster?: string | undefined;
  /** The upstream host, for the DSN's Remote-MTA field. */
  remoteMta?: string | undefined;
}

/** `errorCode`: the catalogue's name for what went wrong (POSTERN_SMTP_UPSTREAM_*, …), for the log. */
export type DeliveryResult =
  | { status: 'delivered'; code: number | null; reply: string; accepted: string[]; rejected: RecipientReply[] }
  | {
      status: 'deferred';
      code: number | null;
      reply: string;
      advice: string;
      errorCode?: ErrorCode | undefined;
      /** The upstream asked not to be tried again before this long (HTTP Retry-After). */
      retryAfterMs?: number | undefined;
    }
  | { status: 'failed'; code: number | null; reply: string; advice: string; errorCode?: ErrorCode | undefined }
  | { status: 'held'; reason: string; advice?: string | undefined; errorCode?: ErrorCode | undefined };

/** The queue's view of smtp-out (wired in app.ts). */
export interface OutboundTransport {
  /**
   * Where the messages routed to `accountId` go now ('' and an unknown id included: the Default, and a
   * route that is not ready with the reason).
   */
  route(accountId: string): Promise<RouteStatus>;
  deliver(message: QueuedMessage, body: () => Readable, route: RouteStatus): Promise<DeliveryResult>;
  /** Ends in-flight sessions at once (shutdown after the grace period). */
  abort(): Promise<void>;
}

/** A recorded delivery attempt as observers see it (metrics): the state it left the message in, and why. */
export interface RecordedOutcome {
  /** The sending account (RouteStatus.accountId). */
  accountId: string;
  state: 'sent' | 'deferred' | 'bounced';
  /** The catalogue's name for what went wrong, when something did (as logged). */
  errorCode?: ErrorCode | undefined;
  /** Recipients were given up because the message's lifetime is over. */
  expired: boolean;
  receivedAt: number;
  at: number;
}

/**
 * What observers of the queue manager are told (onEvent): a pass ended, or a delivery's outcome is recorded
 * (`outcome`; absent when the message was held or given back).
 */
export type QueueManagerEvent = { type: 'pass' } | { type: 'delivery'; queueId: string; outcome?: RecordedOutcome | undefined };

export interface QueueManagerOptions {
  queue: MessageQueue;
  transport: OutboundTransport;
  /** Per-account pacing; in production the store's window, shared by every instance (StorePacer). */
  pacer: Pacer;
  log: Logger;
  tuning: QueueTuning;
  /** The name DSNs are reported from. */
  reportingMta: string;
  tickMs?: number;
  leaseMs?: number;
  /** How long a route status is reused before asking the transport again. */
  routeCacheMs?: number;
  /** Finished messages and log entries are kept this long. */
  retentionMs?: number;
  now?: () => number;
  random?: () => number;
}

const PRUNE_EVERY_MS = 60 * 60_000;
/** Freshly accepted messages remembered for the fast path; more wait for a database scan. */
const MAX_FRESH = 2000;

export class QueueManager {
  readonly owner = `qmgr-${randomUUID()}`;
  readonly #queue: MessageQueue;
  readonly #transport: OutboundTransport;
  readonly #log: Logger;
  readonly #tuning: QueueTuning;
  readonly #pacer: Pacer;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #tickMs: number;
  readonly #leaseMs: number;
  readonly #routeCacheMs: number;
  readonly #retentionMs: number;
  readonly #reportingMta: string;
  readonly #active = new Map<string, Promise<void>>();
  /** Route status by account key (a message's account_id), with when it was asked. */
  readonly #routes = new Map<string, { status: RouteStatus; at: number }>();
  /**
   * Each pace's last "wait", by sending account: until then the shared window has no start for it, so passes
   * do not ask the database for one. Starts leave the window by time; a give-back here clears this, one by
   * another instance is noticed when it runs out.
   */
  readonly #paceFullUntil = new Map<string, number>();
  #heldMayExist = true;
  /** After a delivery found no usable token, held messages wait at least this long (no hot loop). */
  #releaseNotBefore = 0;
  #running = false;
  #stopping = false;
  #passing: Promise<void> | undefined;
  #again = false;
  #kickScheduled = false;
  #timer: NodeJS.Timeout | undefined;
  #wake: NodeJS.Timeout | undefined;
  #wakeAt = Infinity;
  /** Messages just committed by the relay: delivered without reading them back from the database. */
  #fresh: QueuedMessage[] = [];
  /** Whether the next pass must look in the database for due messages (timers, retries, Retry Now). */
  #scanNeeded = true;
  #lastPrune = 0;
  #idleWaiters: Array<() => void> = [];
  /** Give-backs still writing (stop() waits for them before the store may close). */
  readonly #givingBack = new Set<Promise<void>>();
  readonly #observers = new Set<(event: QueueManagerEvent) => void>();

  constructor(options: QueueManagerOptions) {
    this.#queue = options.queue;
    this.#transport = options.transport;
    this.#log = options.log.child({ component: 'queue' });
    this.#tuning = options.tuning;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.#pacer = options.pacer;
    this.#tickMs = options.tickMs ?? 1000;
    this.#leaseMs = options.leaseMs ?? 15 * 60_000;
    this.#routeCacheMs = options.routeCacheMs ?? 1000;
    this.#retentionMs = options.retentionMs ?? 30 * 24 * 60 * 60_000;
    this.#reportingMta = options.reportingMta;
  }

  get activeCount(): number {
    return this.#active.size;
  }

  async start(): Promise<void> {
    if (this.#running) return;
    const requeued = await this.#queue.requeueActive();
    const orphans = await this.#queue.removeOrphans();
    if (requeued > 0) this.#log.warn({ requeued }, 'messages that were being delivered when Postern stopped are due again');
    if (orphans > 0) this.#log.info({ orphans }, 'removed spool files of messages that were never acknowledged');
    this.#running = true;
    this.#stopping = false;
    this.#scanNeeded = true;
    this.#timer = setInterval(() => {
      this.kick();
      this.#renewLeases();
    }, this.#tickMs);
    this.#timer.unref();
    this.kick();
  }

  #leasesRenewedAt = 0;

  /**
   * Keeps the leases of deliveries in progress from running out: every third of the lease, each is extended
   * by a whole lease. Another instance takes over a message only when its lease ran out, that is when this
   * process stopped renewing it (it died, or lost the database for longer than two thirds of a lease).
   */
  #renewLeases(): void {
    const now = this.#now();
    if (this.#active.size === 0 || now - this.#leasesRenewedAt < this.#leaseMs / 3) return;
    this.#leasesRenewedAt = now;
    this.#queue.renewLeases([...this.#active.keys()], this.owner, now + this.#leaseMs).catch((error: unknown) =>
      this.#log.warn({ err: describeError(error) }, 'could not renew the leases of deliveries in progress'),
    );
  }

  /** Asks for a pass soon that also looks in the database (timer, Retry Now, settings changed). */
  kick(): void {
    this.#scanNeeded = true;
    this.#poke();
  }

  /** Hands over a message the relay just committed: the fast path, no database read before its lease. */
  offer(message: QueuedMessage): void {
    if (!this.#running || this.#stopping || this.#fresh.length >= MAX_FRESH) {
      // The database has it; a scan finds it.
      this.#queue.forgetBody(message);
      this.#scanNeeded = true;
      return;
    }
    this.#fresh.push(message);
    this.#poke();
  }

  /** Asks for a pass soon (a message arrived, a delivery finished). */
  #poke(): void {
    if (!this.#running || this.#stopping) return;
    if (this.#passing) {
      this.#again = true;
      return;
    }
    if (this.#kickScheduled) return;
    this.#kickScheduled = true;
    setImmediate(() => {
      this.#kickScheduled = false;
      this.#runPass();
    });
  }

  /** Forget the cached route status (E-Mail Settings or a token changed). */
  invalidateRoute(): void {
    this.#routes.clear();
    this.#paceFullUntil.clear(); // the limit may have been raised
    this.#heldMayExist = true;
    this.#releaseNotBefore = 0;
    this.kick();
  }

  /**
   * Tells `observer` after every pass and after every delivery whose outcome is recorded (or whose message
   * was given back), so that tests wait for what the queue did instead of polling it. Returns the removal.
   */
  onEvent(observer: (event: QueueManagerEvent) => void): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  #emit(event: QueueManagerEvent): void {
    for (const observer of this.#observers) observer(event);
  }

  #runPass(): void {
    if (this.#passing || !this.#running || this.#stopping) return;
    this.#passing = this.#pass()
      .catch((error) => this.#log.error({ err: describeError(error) }, 'queue pass failed'))
      .finally(() => {
        this.#passing = undefined;
        if (this.#again) {
          this.#again = false;
          this.#poke();
        }
        this.#notifyIdle();
        this.#emit({ type: 'pass' });
      });
  }

  /** The route of one account key (a message's account_id; '' is the Default), cached for a moment. */
  async #routeStatus(key: string): Promise<RouteStatus> {
    const cached = this.#routes.get(key);
    if (cached && this.#now() - cached.at < this.#routeCacheMs) return cached.status;
    const status = await this.#transport.route(key);
    this.#routes.set(key, { status, at: this.#now() });
    return status;
  }

  /** The account keys whose pace is full now (their messages wait; others go on), soonest first. */
  #paceFullKeys(): { keys: Set<string>; until: number } {
    const now = this.#now();
    const keys = new Set<string>();
    let until = Infinity;
    for (const [accountId, at] of this.#paceFullUntil) {
      if (at <= now) {
        this.#paceFullUntil.delete(accountId);
        continue;
      }
      until = Math.min(until, at);
      for (const [key, cached] of this.#routes) if (cached.status.accountId === accountId) keys.add(key);
      keys.add(accountId);
    }
    return { keys, until };
  }

  /** Holds the due messages of each account that has no usable token. */
  async #holdUnready(unready: Map<string, RouteStatus>): Promise<void> {
    for (const [key, route] of unready) {
      const held = await this.#queue.holdDue(route.reason ?? 'The sending account has no usable token.', route.advice, key);
      if (held > 0) {
        this.#heldMayExist = true;
        this.#log.warn({ held, account: route.accountId, reason: route.reason }, 'messages held until the sending account has a usable token');
      }
    }
  }

  /** Held messages of accounts whose token is usable again become due. */
  async #releaseReady(): Promise<void> {
    if (!this.#heldMayExist || this.#now() < this.#releaseNotBefore) return;
    this.#heldMayExist = false;
    for (const key of await this.#queue.heldAccounts()) {
      const route = await this.#routeStatus(key);
      if (!route.ready) {
        this.#heldMayExist = true;
        continue;
      }
      const released = await this.#queue.releaseHeld(key);
      if (released > 0) {
        this.#scanNeeded = true;
        this.#log.info({ released, account: route.accountId }, 'held messages released: the sending account has a usable token again');
      }
    }
  }

  /**
   * One pass: every due message goes to the account it was routed to, each account with its own route
   * (token), hold and pace; an account that cannot send (no token, pace full) holds up none of the others.
   */
  async #pass(): Promise<void> {
    const now = this.#now();
    if (now - this.#lastPrune > PRUNE_EVERY_MS) {
      this.#lastPrune = now;
      await this.#queue.prune(now - this.#retentionMs);
    }
    if (this.#scanNeeded) await this.#releaseReady();
    /** Accounts without a usable token found in this pass: their due messages are held at the end. */
    const unready = new Map<string, RouteStatus>();
    try {
      for (;;) {
        if (this.#stopping) return;
        const free = this.#tuning.concurrency - this.#active.size;
        if (free <= 0) return;
        const full = this.#paceFullKeys();
        const blocked = new Set([...full.keys, ...unready.keys()]);
        const batch: QueuedMessage[] = [];
        const waiting: QueuedMessage[] = [];
        while (batch.length < free && this.#fresh.length > 0) {
          const message = this.#fresh.shift()!;
          if (this.#active.has(message.id)) continue;
          if (unready.has(message.accountId)) this.#queue.forgetBody(message); // a due row: held below
          else if (blocked.has(message.accountId)) waiting.push(message);
          else batch.push(message);
        }
        this.#fresh.unshift(...waiting);
        let scanned = false;
        if (batch.length < free && this.#scanNeeded) {
          scanned = true;
          const want = free - batch.length;
          const due = await this.#queue.due(want, [...this.#active.keys(), ...batch.map((m) => m.id), ...waiting.map((m) => m.id)], blocked);
          if (due.length < want) this.#scanNeeded = false;
          batch.push(...due);
        }
        if (batch.length === 0) {
          // Paced accounts go on when their pace has room; the others when their next message is due.
          if (full.until !== Infinity) this.#wakeIn(full.until - this.#now());
          if (scanned) {
            const next = await this.#queue.nextDueAt(blocked);
            if (next !== undefined) this.#wakeIn(next - this.#now());
          }
          return;
        }
        // Each account on its own: its route (token), its pace.
        const byKey = new Map<string, QueuedMessage[]>();
        for (const message of batch) {
          const group = byKey.get(message.accountId);
          if (group) group.push(message);
          else byKey.set(message.accountId, [message]);
        }
        let started = 0;
        for (const [key, group] of byKey) {
          const route = await this.#routeStatus(key);
          if (!route.ready) {
            unready.set(key, route);
            for (const message of group) this.#queue.forgetBody(message); // due rows: held below
            continue;
          }
          started += await this.#start(group, route);
        }
        if (started === 0 && !this.#scanNeeded && this.#fresh.every((m) => blocked.has(m.accountId) || unready.has(m.accountId))) return;
      }
    } finally {
      if (unready.size > 0) {
        for (const message of this.#fresh) if (unready.has(message.accountId)) this.#queue.forgetBody(message);
        this.#fresh = this.#fresh.filter((m) => !unready.has(m.accountId));
        await this.#holdUnready(unready);
      }
    }
  }

  /** Takes starts from the account's pace, leases the messages and starts their deliveries. Returns how many started. */
  async #start(group: QueuedMessage[], route: RouteStatus): Promise<number> {
    const slots: PacingSlot[] = [];
    if (route.messagesPerMinute > 0) {
      // Starts first, leases second: a start the window refuses costs nothing to put back, a lease would.
      let grant: PacingGrant;
      try {
        grant = await this.#pacer.take(route.accountId, route.messagesPerMinute, group.length);
      } catch (error) {
        for (const message of group) this.#queue.forgetBody(message);
        this.#scanNeeded = true; // they are due rows: a later scan finds them
        throw error;
      }
      slots.push(...grant.slots);
      if (slots.length < group.length) {
        this.#paceFullUntil.set(route.accountId, this.#now() + grant.waitMs);
        this.#fresh.unshift(...group.splice(slots.length));
        this.#wakeIn(grant.waitMs);
        if (group.length === 0) return 0;
      }
    }
    const leased = await this.#queue.leaseMany(group, this.owner, this.#leaseMs);
    if (leased.length < group.length) for (const message of group) if (!leased.includes(message)) this.#queue.forgetBody(message);
    // Starts are alike (one key): each delivery takes one; those of messages not leased go back.
    let started = 0;
    for (const message of leased) {
      if (this.#active.has(message.id)) continue;
      started++;
      let outcome: RecordedOutcome | undefined;
      const run = this.#deliver(message, route, slots.pop())
        .then((recorded) => {
          outcome = recorded;
        })
        .finally(() => {
          this.#active.delete(message.id);
          this.#poke();
          this.#notifyIdle();
          this.#emit({ type: 'delivery', queueId: message.id, outcome });
        });
      this.#active.set(message.id, run);
    }
    if (slots.length > 0) this.#giveBack(slots);
    return started;
  }

  /** A pass with a database scan in `ms` (a retry or the pace comes due), unless one comes sooner anyway. */
  #wakeIn(ms: number): void {
    if (ms >= this.#tickMs) return; // the periodic tick comes first
    const at = this.#now() + Math.max(1, ms);
    if (this.#wake && this.#wakeAt <= at) return;
    if (this.#wake) clearTimeout(this.#wake);
    this.#wakeAt = at;
    this.#wake = setTimeout(() => {
      this.#wake = undefined;
      this.#wakeAt = Infinity;
      this.kick();
    }, Math.max(1, ms));
    this.#wake.unref();
  }

  /** Returns starts that did not become deliveries; a failure only leaves them counted until they age out. */
  #giveBack(slots: PacingSlot[]): void {
    if (slots.length === 0) return;
    this.#paceFullUntil.clear();
    const done: Promise<void> = this.#pacer
      .giveBack(slots)
      .then(
        () => this.#poke(),
        (error: unknown) => this.#log.warn({ err: describeError(error) }, 'could not give pacing starts back; they count until they leave the window'),
      )
      .finally(() => this.#givingBack.delete(done));
    this.#givingBack.add(done);
  }

  async #deliver(message: QueuedMessage, route: RouteStatus, slot: PacingSlot | undefined): Promise<RecordedOutcome | undefined> {
    let result: DeliveryResult;
    try {
      result = await this.#transport.deliver(message, () => this.#queue.body(message), route);
    } catch (error) {
      result = { status: 'deferred', code: null, reply: describeError(error).message, advice: 'Postern retries automatically.', errorCode: isPosternError(error) ? error.code : undefined };
    } finally {
      this.#queue.forgetBody(message);
    }
    // Held: no usable token, so nothing reached the upstream and the start was not used.
    if (result.status === 'held' && slot) this.#giveBack([slot]);
    try {
      if (this.#stopping && result.status === 'deferred' && result.code === null) {
        // The session was cut short by shutdown: not an attempt worth counting.
        await this.#queue.release(message, this.owner);
        return undefined;
      }
      return await this.#record(message, route, result);
    } catch (error) {
      if (error instanceof LeaseLostError) {
        this.#log.warn({ queueId: message.id, errorCode: ErrorCodes.QUEUE_LEASE_LOST }, 'lease lost while delivering; another pass took the message over');
      } else {
        this.#log.error({ err: describeError(error), queueId: message.id }, 'could not record a delivery outcome; the message will be tried again');
      }
      return undefined;
    }
  }

  async #record(message: QueuedMessage, route: RouteStatus, result: DeliveryResult): Promise<RecordedOutcome | undefined> {
    const now = this.#now();
    if (result.status === 'held') {
      this.#routes.delete(message.accountId);
      this.#heldMayExist = true;
      this.#releaseNotBefore = this.#now() + 5 * this.#tickMs;
      await this.#queue.hold(message, this.owner, result.reason, result.advice);
      this.#log.warn({ queueId: message.id, reason: result.reason, errorCode: result.errorCode }, 'message held: no usable token');
      return undefined;
    }
    let delivered: string[] = [];
    let retry: RecipientReply[] = [];
    let failed: RecipientReply[] = [];
    let deliveredReply: { code: number | null; reply: string } | undefined;
    if (result.status === 'delivered') {
      delivered = result.accepted;
      deliveredReply = { code: result.code, reply: result.reply };
      for (const r of result.rejected) (r.code !== null && r.code >= 500 ? failed : retry).push(r);
    } else if (result.status === 'deferred') {
      retry = message.recipients.map((recipient) => ({ recipient, code: result.code, reply: result.reply, advice: result.advice }));
    } else {
      failed = message.recipients.map((recipient) => ({ recipient, code: result.code, reply: result.reply, advice: result.advice }));
    }
    let next: number | undefined;
    const expired: RecipientReply[] = [];
    if (retry.length > 0) {
      next = nextAttemptAt(message.attempts, now, message.expiresAt, this.#tuning, this.#random);
      const notBefore = result.status === 'deferred' && result.retryAfterMs ? now + result.retryAfterMs : undefined;
      if (next !== undefined && notBefore !== undefined && next < notBefore) next = notBefore <= message.expiresAt ? notBefore : undefined;
      if (next === undefined) {
        for (const r of retry) expired.push(r);
        retry = [];
      }
    }
    const allFailed = [...failed, ...expired];
    const failures: FailedRecipient[] = [
      ...failed.map((r) => ({ recipient: r.recipient, status: statusOf(r.reply, r.code), diagnostic: r.reply })),
      ...expired.map((r) => ({
        recipient: r.recipient,
        status: '4.4.7',
        diagnostic: `delivery time expired after ${Math.round((now - message.receivedAt) / 3_600_000)} hours; last reply: ${r.reply}`,
        diagnosticType: 'x-postern' as const,
      })),
    ];
    const bounceTo = allFailed.length > 0 && !message.isBounce && message.reversePath !== '' ? message.reversePath : undefined;
    // The upstream took the message for some recipients: that is recorded first, before the DSN for the
    // others is read, built and spooled (docs/decisions/020).
    const deliveredRecorded = delivered.length > 0 && bounceTo !== undefined;
    if (deliveredRecorded) await this.#queue.recordDelivered(message, this.owner, delivered, deliveredReply);
    let bounce: { to: string; body: Buffer } | undefined;
    if (bounceTo) {
      const headers = await this.#queue.readHeaders(message.id, undefined, message.bodyInDatabase).catch(() => Buffer.alloc(0));
      bounce = {
        to: bounceTo,
        body: buildDsn({
          reportingMta: this.#reportingMta,
          remoteMta: route.remoteMta,
          from: route.postmaster ?? bounceTo,
          to: bounceTo,
          queueId: message.id,
          arrivalDate: new Date(message.receivedAt),
          recipients: failures,
          originalHeaders: headers,
          originalSubject: message.subject,
        }),
      };
    }
    const summary =
      result.status === 'delivered'
        ? { code: result.code, reply: result.reply, advice: retry[0]?.advice ?? allFailed[0]?.advice }
        : { code: result.code, reply: result.reply, advice: result.advice };
    const outcome = await this.#queue.recordOutcome(message, this.owner, {
      delivered,
      deliveredReply,
      retry,
      nextAttemptAt: next,
      failed: [
        ...failed,
        ...expired.map((r) => ({ ...r, reply: `delivery time expired; last reply: ${r.reply}` })),
      ],
      bounce,
      summary,
      deliveredRecorded,
    });
    // `replyCode`, not `code`: the log redacts `code` fields (OAuth authorization codes).
    // Recipients the upstream refused in a delivered outcome: the refusal is the upstream's (RCPT / DATA).
    const errorCode = result.status !== 'delivered' ? result.errorCode : retry.length + allFailed.length > 0 ? ErrorCodes.SMTP_UPSTREAM_REJECTED : undefined;
    const fields = { queueId: message.id, state: outcome.state, replyCode: summary.code, reply: summary.reply, attempts: message.attempts, ...(errorCode ? { errorCode } : {}) };
    if (outcome.state === 'sent' && retry.length === 0 && allFailed.length === 0) this.#log.info(fields, 'message delivered');
    else if (outcome.state === 'deferred') this.#log.warn({ ...fields, nextAttemptAt: next, advice: summary.advice }, 'delivery deferred');
    else this.#log.warn({ ...fields, failed: allFailed.map((r) => r.recipient), bounceId: outcome.bounceId, advice: summary.advice }, 'delivery failed for some recipients');
    if (outcome.bounceId) this.kick();
    if (outcome.state === 'deferred' && next !== undefined) this.#wakeIn(next - this.#now());
    return { accountId: route.accountId, state: outcome.state, errorCode, expired: expired.length > 0, receivedAt: message.receivedAt, at: this.#now() };
  }

  #notifyIdle(): void {
    if (this.#active.size > 0 || this.#passing) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /** Resolves when no delivery and no pass is running (tests). */
  whenIdle(): Promise<void> {
    if (this.#active.size === 0 && !this.#passing) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Stops taking work; lets deliveries in flight finish for up to `graceMs`, then ends their sessions and
   * gives their messages back (due again at the next start).
   */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.#running) return;
    this.#stopping = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#wake) clearTimeout(this.#wake);
    this.#timer = this.#wake = undefined;
    await this.#passing;
    if (this.#active.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), graceMs);
      });
      const outcome = await Promise.race([Promise.allSettled([...this.#active.values()]).then(() => 'done' as const), graceOver]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        this.#log.warn({ active: this.#active.size }, 'ending deliveries still in progress at shutdown; their messages stay queued');
        await this.#transport.abort();
        await Promise.allSettled([...this.#active.values()]);
      }
    }
    await this.#transport.abort();
    await Promise.all(this.#givingBack);
    await this.#queue.close();
    this.#running = false;
  }
}
