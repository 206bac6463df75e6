/**
 * The durability promise as measured (README, "What Postern promises about your mail"; docs/decisions/020):
 * kill -9 while deliveries are in flight loses nothing, repeats at most what was in flight, and never
 * repeats a message whose outcome was recorded as sent.
 *
 * Postern runs as a child process; a device (nodemailer) submits 200 messages. The upstream stand-in
 * answers the first deliveries at once and then stops answering DATA: every delivery Postern has in flight
 * is then one the upstream has recorded but Postern has not heard `250` for (RFC 1047's window). Postern
 * is killed with all of its delivery slots in that state, its database is read before the restart, and the
 * restart on the same data directory must deliver the rest.
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DATABASE_FILE } from '../src/store/store.js';
import { OUTLOOK_SMTP_SCOPE, startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { spawnPostern, type PosternProcess } from './support/postern-process.js';
import { LOG, Signal, until } from './support/events.js';
import { WebClient } from './support/postern.js';
import { authorizeMicrosoft, saveEmailSettings, saveRelaySettings } from './support/sending.js';
import { createTestPki, type TestPki } from './support/test-ca.js';
import { startUpstreamSmtp, type UpstreamSmtp } from './support/upstream-smtp.js';

const TOTAL = 200;
/** POSTERN_QUEUE_CONCURRENCY: deliveries in flight at once, so the bound on repeats. */
const CONCURRENCY = 4;
/** The upstream answers this many deliveries at once, then leaves DATA unanswered. */
const ANSWERED = 60;
const PASSWORD = 'crash-window-admin-password';

let pki: TestPki;
let microsoft: MicrosoftStandin;
let upstream: UpstreamSmtp;
let dataDir: string;
let postern: PosternProcess | undefined;
/** While true, the upstream answers only the first ANSWERED messages; the rest wait here. */
let withholding = true;
const withheld: string[] = [];
const withheldChanged = new Signal();

/** Message-IDs compare without their angle brackets (mailparser and the queue row may differ). */
const bare = (id: string | null | undefined) => (id ?? '').trim().replace(/^<|>$/g, '');

beforeAll(async () => {
  pki = await createTestPki();
  microsoft = await startMicrosoftStandin({ pki, interval: 1 });
  upstream = await startUpstreamSmtp({
    flavour: 'office365',
    introspection: { ...microsoft.introspection, ca: pki.ca.cert },
    requiredScope: OUTLOOK_SMTP_SCOPE,
    tls: pki.server,
    beforeDataReply: (message) => {
      if (!withholding || upstream.messages.indexOf(message) < ANSWERED) return;
      withheld.push(bare(message.parsed?.messageId));
      withheldChanged.raise();
      return new Promise<void>(() => undefined); // never answered: the client dies waiting
    },
  });
  dataDir = mkdtempSync(join(tmpdir(), 'postern-crash-window-'));
});

afterAll(async () => {
  await postern?.stop();
  await upstream?.close();
  await microsoft?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

const env = () => ({
  POSTERN_DATA_DIR: dataDir,
  POSTERN_ADMIN_PASSWORD: PASSWORD,
  NODE_EXTRA_CA_CERTS: pki.caFile,
  POSTERN_QUEUE_CONCURRENCY: String(CONCURRENCY),
  POSTERN_QUEUE_RETRY_BASE_SECONDS: '0.05',
  POSTERN_QUEUE_RETRY_MAX_SECONDS: '0.2',
});

/** Message-IDs of the rows in state `sent`, read from the database of the stopped process. */
function sentInDatabase(): Set<string> {
  const db = new Database(join(dataDir, DATABASE_FILE));
  try {
    const rows = db.prepare(`SELECT message_id_header AS id FROM queue_messages WHERE state = 'sent'`).all() as Array<{ id: string | null }>;
    return new Set(rows.map((r) => bare(r.id)));
  } finally {
    db.close();
  }
}

it('regression: kill -9 during delivery of 200 messages loses none and repeats only what was in flight', async () => {
  postern = await spawnPostern(env());
  const web = new WebClient(`http://127.0.0.1:${postern.httpPort}`);
  await web.login('admin', PASSWORD);
  await authorizeMicrosoft(web, microsoft, pki, postern.log);
  await saveEmailSettings(web, { smtpPort: String(upstream.port) });
  expect(web.lastStatus).toBe(303);
  await saveRelaySettings(web, { allowedNetworks: '127.0.0.1' });

  // The device: nodemailer over a few pooled sessions, each message with its own Message-ID.
  const device = nodemailer.createTransport({ host: '127.0.0.1', port: postern.smtpPort, secure: false, ignoreTLS: true, pool: true, maxConnections: 5, maxMessages: Infinity });
  const ids = Array.from({ length: TOTAL }, (_, i) => `durable-${String(i).padStart(3, '0')}@printers.local`);
  try {
    const infos = await Promise.all(
      ids.map((id, i) =>
        device.sendMail({ from: 'scanner@printers.local', to: 'bob@example.test', subject: `scan ${i}`, messageId: `<${id}>`, text: 'scan data '.repeat(500) }),
      ),
    );
    expect(infos.every((info) => /^250 /.test(info.response))).toBe(true); // every message acknowledged
  } finally {
    device.close();
  }

  // Every delivery slot holds a message the upstream has and has not answered.
  await until(withheldChanged.subscribe, () => withheld.length === CONCURRENCY, `${CONCURRENCY} deliveries in flight`);
  expect(upstream.messages.length).toBe(ANSWERED + CONCURRENCY);
  const first = postern;
  postern = undefined;
  await first.kill9();

  // What the database says before the restart: every answered delivery is recorded as sent, none of those
  // in flight is.
  const sent = sentInDatabase();
  const beforeKill = upstream.messages.map((m) => bare(m.parsed?.messageId));
  expect(sent.size).toBe(ANSWERED);
  for (const id of withheld) expect(sent.has(id)).toBe(false);
  for (const id of sent) expect(beforeKill).toContain(id);

  withholding = false;
  const deliveredBefore = upstream.messages.length;
  postern = await spawnPostern(env());
  expect(postern.lines.some((l) => l.msg === 'messages that were being delivered when Postern stopped are due again')).toBe(true);
  await until(upstream.onMessage, () => ids.every((id) => upstream.messages.some((m) => bare(m.parsed?.messageId) === id)), 'every message upstream', 60_000);
  // The Queue page is read again after each line about a message, until it is empty.
  const web2 = new WebClient(`http://127.0.0.1:${postern.httpPort}`);
  await web2.login('admin', PASSWORD);
  await postern.log.until(async () => /data-field="queue-empty"/.test(await web2.get('/settings/queue')), 'an empty queue', { when: LOG.queueLine });

  const after = upstream.messages.slice(deliveredBefore).map((m) => bare(m.parsed?.messageId));
  const copies = new Map<string, number>();
  for (const m of upstream.messages) copies.set(bare(m.parsed?.messageId), (copies.get(bare(m.parsed?.messageId)) ?? 0) + 1);
  // 0 lost.
  for (const id of ids) expect(copies.get(id) ?? 0).toBeGreaterThanOrEqual(1);
  // Nothing recorded as sent goes out again.
  expect(after.filter((id) => sent.has(id))).toEqual([]);
  // Repeats: only messages in flight at the kill, at most the delivery concurrency, each once more at most.
  const repeated = [...copies].filter(([, n]) => n > 1);
  expect(repeated.length).toBeLessThanOrEqual(CONCURRENCY);
  for (const [id, n] of repeated) {
    expect(withheld).toContain(id);
    expect(n).toBe(2);
  }
  expect(upstream.messages.length).toBe(TOTAL + repeated.length);
  console.info(`crash window: ${TOTAL} submitted, ${sent.size} recorded as sent before kill -9, ${withheld.length} in flight, ${repeated.length} delivered twice, 0 lost`);
}, 120_000);
