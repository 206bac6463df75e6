/**
 * Defect: with bodies in PostgreSQL, dead body chunks piled up in the old generation. Relaying five 25 MB
 * messages at once grew an instance by 68-102 MB with PostgreSQL against ~13 MB with SQLite: each 256 KB
 * chunk of a body in the database (and the driver's copies of it) outlives a database round trip, so the
 * scavenges that keep the SQLite path small promote it, and only V8's own full collection freed it, after
 * tens of MB. DatabaseBodies now asks for a full collection every few MB of body bytes in and out
 * (src/queue/body-memory.ts, databaseBodyBytes), with the node options of `npm start`.
 *
 * As test/large-body-dead-chunks.test.ts, with POSTERN_DATABASE_URL on a PostgreSQL database of the test's
 * own: a real client (nodemailer) submits five 25 MB messages at once, Postern delivers them with XOAUTH2 over
 * STARTTLS to an smtp-server upstream that counts bytes; the child's peak RSS growth over the warm process
 * must stay well below the defect's.
 */
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer, { type Transporter } from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, POSTGRES_ADMIN_URL, type TestDatabase } from './support/postgres.js';
import { Signal, until } from './support/events.js';
import { startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { spawnPostern, type PosternProcess } from './support/postern-process.js';
import { WebClient } from './support/postern.js';
import { authorizeMicrosoft, saveEmailSettings, saveRelaySettings } from './support/sending.js';
import { createTestPki, type TestPki } from './support/test-ca.js';

const PASSWORD = 'dead-chunks-admin-password';
const BIG = 25_000_000;
const COUNT = 5;
/** Growth over the warm process allowed at peak: measured 26-29 MB with the fix, 68-102 MB with the defect. */
const CEILING_MB = 48;

/** The node options of package.json's start script (what users run). */
const startScript: string = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).scripts.start;
const nodeArgs = (/node((?:\s+--\S+)*)\s+dist\/main\.js$/.exec(startScript)?.[1] ?? '').trim().split(/\s+/).filter(Boolean);

let pki: TestPki;
let microsoft: MicrosoftStandin;
let upstream: SMTPServer;
let upstreamPort: number;
let delivered = 0;
let deliveredBytes = 0;
const deliveredChanged = new Signal();
let dataDir: string;
let postern: PosternProcess | undefined;
let database: TestDatabase | undefined;

describe.skipIf(!POSTGRES_ADMIN_URL)('bodies in PostgreSQL (POSTERN_TEST_DATABASE_URL)', () => {
beforeAll(async () => {
  database = await createTestDatabase('postern_pg_dead_chunks');
  pki = await createTestPki();
  microsoft = await startMicrosoftStandin({ pki, interval: 1 });
  upstream = new SMTPServer({
    key: pki.server.key,
    cert: pki.server.cert,
    authMethods: ['XOAUTH2'],
    size: 157286400,
    disableReverseLookup: true,
    logger: false,
    // The token is Postern's business here; this test is about memory, the XOAUTH2 tests check tokens.
    onAuth: (auth, _session, callback) => callback(null, { user: auth.username }),
    onData(stream, _session, callback) {
      stream.on('data', (chunk: Buffer) => (deliveredBytes += chunk.length));
      stream.on('end', () => {
        delivered++;
        deliveredChanged.raise();
        callback(null, '2.0.0 OK queued');
      });
    },
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  upstreamPort = (upstream.server.address() as AddressInfo).port;
  dataDir = mkdtempSync(join(tmpdir(), 'postern-pg-dead-chunks-'));
});

afterAll(async () => {
  await postern?.stop();
  await new Promise<void>((resolve) => (upstream ? upstream.close(() => resolve()) : resolve()));
  await microsoft?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  await database?.drop();
});

function status(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)![1]) * 1024;
}

function bigMessage(i: number): Buffer {
  const head = `From: scanner@printers.local\r\nTo: bob@example.test\r\nSubject: large ${i}\r\n\r\n`;
  const line = 'a'.repeat(76) + '\r\n';
  return Buffer.from(head + line.repeat(Math.floor((BIG - head.length) / line.length)));
}

async function relay(transport: Transporter, raw: Buffer): Promise<void> {
  await transport.sendMail({ envelope: { from: 'scanner@printers.local', to: ['bob@example.test'] }, raw });
}

it('relays five concurrent 25 MB messages with bodies in PostgreSQL within a bounded growth of its peak RSS', { timeout: 180_000 }, async () => {
  postern = await spawnPostern(
    { POSTERN_DATA_DIR: dataDir, POSTERN_DATABASE_URL: database!.url, POSTERN_ADMIN_PASSWORD: PASSWORD, NODE_EXTRA_CA_CERTS: pki.caFile },
    { nodeArgs },
  );
  const web = new WebClient(`http://127.0.0.1:${postern.httpPort}`);
  await web.login('admin', PASSWORD);
  await authorizeMicrosoft(web, microsoft, pki, postern.log);
  await saveEmailSettings(web, { smtpPort: String(upstreamPort), messagesPerMinute: '0' });
  await saveRelaySettings(web, { allowedNetworks: '127.0.0.1' });

  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: postern.smtpPort, secure: false, ignoreTLS: true, pool: false });
  const pid = postern.child.pid!;
  // Warm: the delivery path, its token and its upstream session exist before the measurement.
  await relay(transport, bigMessage(0).subarray(0, 200_000));
  await until(deliveredChanged.subscribe, () => delivered >= 1, 'the warm-up message delivered');

  // Linux: "5" resets the peak RSS (VmHWM) to the current RSS (proc(5), clear_refs).
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
  const warm = status(pid, 'VmRSS');
  const bodies = Array.from({ length: COUNT }, (_, i) => bigMessage(i + 1));
  await Promise.all(bodies.map((body) => relay(transport, body)));
  await until(deliveredChanged.subscribe, () => delivered >= 1 + COUNT, `the ${COUNT} large messages delivered`);
  const growth = status(pid, 'VmHWM') - warm;
  transport.close();

  expect(deliveredBytes).toBeGreaterThan(COUNT * BIG);
  expect(growth / 1024 / 1024, 'growth of the peak RSS over the warm process, in MB').toBeLessThan(CEILING_MB);
});
});
