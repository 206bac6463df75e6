/**
 * Two Postern instances (child processes) on one PostgreSQL database behind Debian's HAProxy: TCP mode with
 * the PROXY protocol (v1) for the relay, HTTP mode for the Remote UI, round robin, no stickiness.
 *
 * - 500 messages from Postfix's smtp-source through HAProxy: every one delivered, once.
 * - An Allowed Networks entry saved through instance A is in force on B at once, and the relay sees the
 *   device's address through HAProxy: 127.0.0.2 allowed, 127.0.0.3 refused.
 * - A Remote UI session made through HAProxy works on both instances (requests alternate between them).
 * - 50 concurrent sends across both instances at the token's expiry: exactly one refresh request reaches the
 *   authorization server.
 * - kill -9 of instance A while deliveries are in flight: B delivers every message A had accepted or leased
 *   (0 lost); the only repeats are of messages the upstream had taken when A died (RFC 1047's window).
 *
 * The upstream is the Office 365 stand-in checking XOAUTH2 tokens by introspection at the Microsoft stand-in.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Signal, until } from './support/events.js';
import { startHaproxy, type Haproxy } from './support/haproxy.js';
import { OUTLOOK_SMTP_SCOPE, startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';
import { spawnPostern, type PosternProcess } from './support/postern-process.js';
import { WebClient } from './support/postern.js';
import { addDevice, authorizeMicrosoft, pythonSend, RawSmtp, run, saveEmailSettings, saveRelaySettings } from './support/sending.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { startUpstreamSmtp, type UpstreamMessage, type UpstreamSmtp } from './support/upstream-smtp.js';

const ADMIN_PASSWORD = 'several-instances-admin';
const APPLIED = 'settings changed in the database: applied';

describe.skipIf(!POSTGRES_ADMIN_URL)('several instances on one PostgreSQL behind HAProxy', () => {
  let pki: TestPki;
  let microsoft: MicrosoftStandin;
  let upstream: UpstreamSmtp;
  let database: TestDatabase;
  let sql: pg.Client;
  let haproxy: Haproxy;
  let a: PosternProcess;
  let b: PosternProcess;
  const dirs: string[] = [];
  const secretKey = randomBytes(32).toString('hex');
  /** While set, the upstream records each message but holds its reply (deliveries stay in flight). */
  let hold: Promise<void> | undefined;
  const held: UpstreamMessage[] = [];
  const heldChanged = new Signal();

  const env = (name: string) => {
    const dir = mkdtempSync(join(tmpdir(), `postern-ha-${name}-`));
    dirs.push(dir);
    return {
      POSTERN_DATA_DIR: dir,
      POSTERN_DATABASE_URL: database.url,
      POSTERN_SECRET_KEY: secretKey,
      POSTERN_ADMIN_PASSWORD: ADMIN_PASSWORD,
      NODE_EXTRA_CA_CERTS: pki.caFile,
      POSTERN_QUEUE_RETRY_BASE_SECONDS: '0.05',
      POSTERN_QUEUE_RETRY_MAX_SECONDS: '0.2',
      POSTERN_QUEUE_CONCURRENCY: '4',
      POSTERN_QUEUE_LEASE_SECONDS: '2',
      POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS: '200',
      // HAProxy connects from 127.0.0.1: only from there is a PROXY header read (and required).
      POSTERN_SMTP_PROXY_PROTOCOL: '127.0.0.1',
      POSTERN_HTTP_TRUSTED_PROXIES: '127.0.0.1',
    };
  };

  /** A new log line of either instance. */
  const eitherLog = (listener: () => void) => {
    const offA = a.log.subscribe(listener);
    const offB = b.log.subscribe(listener);
    return () => {
      offA();
      offB();
    };
  };
  const count = async (text: string, values: unknown[] = []) => Number((await sql.query<{ n: string }>(text, values)).rows[0]!.n);
  const waiting = () => count(`select count(*) as n from queue_messages where state in ('incoming', 'active', 'deferred', 'held')`);

  beforeAll(async () => {
    pki = await createTestPki();
    microsoft = await startMicrosoftStandin({ pki, interval: 1 });
    upstream = await startUpstreamSmtp({
      flavour: 'office365',
      introspection: { ...microsoft.introspection, ca: pki.ca.cert },
      requiredScope: OUTLOOK_SMTP_SCOPE,
      tls: pki.server,
      beforeDataReply: async (message) => {
        if (!hold) return;
        held.push(message);
        heldChanged.raise();
        await hold;
      },
    });
    database = await createTestDatabase('postern_ha');
    sql = new pg.Client({ connectionString: database.url });
    // Instance A migrates the database and is configured through its own Remote UI; B starts on it after.
    a = await spawnPostern(env('a'));
    await sql.connect();
    const web = new WebClient(`http://127.0.0.1:${a.httpPort}`);
    await web.login('admin', ADMIN_PASSWORD);
    await authorizeMicrosoft(web, microsoft, pki, a.log);
    await saveEmailSettings(web, { smtpPort: String(upstream.port) });
    expect(web.lastStatus).toBe(303);
    await saveRelaySettings(web, { allowedNetworks: '127.0.0.1' });
    expect(web.lastStatus).toBe(303);
    b = await spawnPostern(env('b'));
    haproxy = await startHaproxy([
      { name: 'a', smtpPort: a.smtpPort, httpPort: a.httpPort },
      { name: 'b', smtpPort: b.smtpPort, httpPort: b.httpPort },
    ]);
  }, 90_000);

  afterAll(async () => {
    await haproxy?.stop();
    await Promise.all([a?.stop(), b?.stop()]);
    await sql?.end();
    await database?.drop();
    await upstream?.close();
    await microsoft?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  test('500 messages from smtp-source through HAProxy are delivered, each once, by both instances', async () => {
    const before = upstream.messages.length;
    const source = await run('smtp-source', ['-s', '10', '-m', '500', '-l', '10240', '-f', 'scanner@printers.local', '-t', 'bob@example.test', '-S', 'through haproxy', `127.0.0.1:${haproxy.ports.smtp}`], undefined, 120_000);
    expect(source.code, source.stderr).toBe(0);
    await until(upstream.onMessage, () => upstream.messages.length - before >= 500, '500 messages upstream', 60_000);
    const mine = upstream.messages.slice(before);
    expect(mine).toHaveLength(500);
    // Postern gave each message its own Message-ID (smtp-source sends none): 500 distinct ones, no repeats.
    expect(new Set(mine.map((m) => m.parsed?.messageId)).size).toBe(500);
    // HAProxy shared the devices out: both instances accepted and delivered.
    expect(a.count('message accepted')).toBeGreaterThan(100);
    expect(b.count('message accepted')).toBeGreaterThan(100);
    expect(a.count('message accepted') + b.count('message accepted')).toBe(500);
    await until(eitherLog, async () => (await waiting()) === 0, 'an empty queue');
    expect(await count(`select count(*) as n from queue_messages where state = 'sent'`)).toBe(500);
    expect(await count('select count(*) as n from message_bodies')).toBe(0);
  }, 120_000);

  test('Allowed Networks saved through A is in force on B at once, and the relay sees the device address through HAProxy', async () => {
    const web = new WebClient(`http://127.0.0.1:${a.httpPort}`);
    await web.login('admin', ADMIN_PASSWORD);
    const mark = b.log.mark();
    await saveRelaySettings(web, { allowedNetworks: '127.0.0.2' });
    expect(web.lastStatus).toBe(303);
    await b.log.waitFor(APPLIED, { from: mark });
    const send = (sourceAddress: string, port: number) =>
      pythonSend({ port, sourceAddress, from: 'scanner@printers.local', to: ['bob@example.test'], message: `Subject: from ${sourceAddress}\r\n\r\nhello\r\n` });
    for (const port of [haproxy.ports.smtpTo.b!, haproxy.ports.smtpTo.a!]) {
      const allowed = await send('127.0.0.2', port);
      expect(allowed.ok, JSON.stringify(allowed)).toBe(true);
      const refused = await send('127.0.0.3', port);
      expect(refused.ok).toBe(false);
      expect(refused.error?.code).toBe(530);
    }
    expect(b.lines.some((l) => l.msg === 'message accepted' && l.client === 'network 127.0.0.2')).toBe(true);
    expect(b.lines.some((l) => l.address === '127.0.0.3' && String(l.msg).includes('not allowed'))).toBe(true);
    const again = b.log.mark();
    await saveRelaySettings(web, { allowedNetworks: '127.0.0.1' });
    await b.log.waitFor(APPLIED, { from: again });

    // A PROXY header from a peer that is not the load balancer is not read: 127.0.0.2 claiming to be
    // 127.0.0.1 (allowed) stays 127.0.0.2 (not allowed).
    const forger = await RawSmtp.open(b.smtpPort, { localAddress: '127.0.0.2' });
    try {
      expect(await forger.command(`PROXY TCP4 127.0.0.1 127.0.0.1 40000 ${b.smtpPort}`)).toMatch(/^5/);
      await forger.command('EHLO forger.test');
      expect(await forger.command('MAIL FROM:<scanner@printers.local>')).toMatch(/^530/);
    } finally {
      forger.close();
    }
  }, 60_000);

  test('a Remote UI session works on both instances: HAProxy alternates requests, no stickiness', async () => {
    const web = new WebClient(`http://127.0.0.1:${haproxy.ports.http}`);
    await web.login('admin', ADMIN_PASSWORD);
    const servedBy = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const response = await fetch(`http://127.0.0.1:${haproxy.ports.http}/settings/queue`, { headers: { cookie: web.cookieHeader }, redirect: 'manual' });
      expect(response.status).toBe(200);
      servedBy.add(response.headers.get('x-served-by') ?? '');
      await response.text();
    }
    expect([...servedBy].sort()).toEqual(['a', 'b']);
    // A form fetched from one instance is posted to the other (HAProxy alternates): the CSRF token holds.
    await addDevice(web, 'mfp-ha', 'device-password-ha');
    expect(web.lastStatus).toBe(303);
  });

  test('50 concurrent sends across both instances at the token expiry cause exactly one refresh request', async () => {
    const refreshes = () => microsoft.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;
    const before = refreshes();
    const sentBefore = upstream.messages.length;
    // The access token expires now (as far as Postern knows); idle upstream sessions close on both instances
    // (a setting changed), so every delivery needs a token again.
    await sql.query(`update oauth_accounts set access_token_expires_at = $1 where provider = 'microsoft'`, [Date.now() - 1000]);
    const marks = [a.log.mark(), b.log.mark()];
    await sql.query(`update email_settings set updated_at = updated_at + 1`);
    await Promise.all([a.log.waitFor(APPLIED, { from: marks[0] }), b.log.waitFor(APPLIED, { from: marks[1] })]);
    const source = await run('smtp-source', ['-s', '50', '-m', '50', '-l', '2048', '-f', 'scanner@printers.local', '-t', 'bob@example.test', '-S', 'at expiry', `127.0.0.1:${haproxy.ports.smtp}`], undefined, 60_000);
    expect(source.code, source.stderr).toBe(0);
    await until(upstream.onMessage, () => upstream.messages.length - sentBefore >= 50, '50 messages upstream');
    expect(refreshes() - before).toBe(1);
  }, 60_000);

  test('kill -9 of one instance mid-delivery: the other delivers every message it had (0 lost)', async () => {
    let release!: () => void;
    hold = new Promise<void>((resolve) => (release = resolve));
    held.length = 0;
    const acked = new Map<string, string>();
    const subjects = Array.from({ length: 100 }, (_, i) => `failover ${String(i).padStart(3, '0')}`);
    let next = 0;
    const sender = async () => {
      while (next < subjects.length) {
        const subject = subjects[next++]!;
        const smtp = await RawSmtp.open(haproxy.ports.smtp);
        try {
          await smtp.command('EHLO mfp.test');
          expect(await smtp.command('MAIL FROM:<scanner@printers.local>')).toMatch(/^250/);
          expect(await smtp.command('RCPT TO:<bob@example.test>')).toMatch(/^250/);
          expect(await smtp.command('DATA')).toMatch(/^354/);
          smtp.write(`From: scanner@printers.local\r\nSubject: ${subject}\r\n\r\n${'scan data '.repeat(500)}\r\n.\r\n`);
          const reply = await smtp.reply();
          const id = /^250 .*queued as ([0-9a-f-]{36})/.exec(reply)?.[1];
          expect(id, reply).toBeDefined();
          acked.set(subject, id!);
          await smtp.command('QUIT').catch(() => undefined);
        } finally {
          smtp.close();
        }
      }
    };
    await Promise.all(Array.from({ length: 10 }, () => sender()));
    expect(acked.size).toBe(100);
    // Both instances have their four deliveries in flight, each held by the upstream after it took the message.
    await until(heldChanged.subscribe, () => held.length >= 8, 'eight deliveries in flight');
    const heldSubjects = new Set(held.map((m) => m.parsed?.subject));
    const acceptedByA = [...acked.values()].filter((id) => a.lines.some((l) => l.msg === 'message accepted' && l.queueId === id));
    expect(acceptedByA.length).toBeGreaterThan(10);
    await a.kill9();
    hold = undefined;
    release();

    await until(upstream.onMessage, () => subjects.every((s) => upstream.messages.some((m) => m.parsed?.subject === s)), 'every acknowledged message upstream', 60_000);
    await b.log.until(async () => (await waiting()) === 0, 'an empty queue', { when: () => true, timeoutMs: 30_000 });
    const copies = new Map<string, number>();
    for (const m of upstream.messages) if (m.parsed?.subject?.startsWith('failover')) copies.set(m.parsed.subject, (copies.get(m.parsed.subject) ?? 0) + 1);
    for (const subject of subjects) expect(copies.get(subject) ?? 0).toBeGreaterThanOrEqual(1);
    // Repeats only of what A had in flight: the upstream took those messages, A died before its reply came.
    const repeated = [...copies].filter(([, n]) => n > 1).map(([s]) => s);
    for (const subject of repeated) expect(heldSubjects.has(subject)).toBe(true);
    expect(repeated.length).toBeLessThanOrEqual(4);
    // B took over A's messages: it delivered messages A had accepted. B writes its log line after the outcome
    // is committed, so the empty queue above can be seen before B's last lines have come through its pipe.
    const deliveredByB = (id: string) => b.lines.some((l) => l.queueId === id && l.msg === 'message delivered');
    await b.log.until(() => acceptedByA.every(deliveredByB), "B's delivery of every message A had accepted", { when: 'message delivered', timeoutMs: 30_000 });
    console.info(`failover: ${acceptedByA.length} of 100 accepted by A, ${repeated.length} repeated from A's in-flight deliveries`);
  }, 120_000);
});
