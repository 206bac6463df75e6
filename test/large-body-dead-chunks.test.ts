/**
 * Defect: dead body chunks were kept until V8's next collection. Bodies stream in chunks of at most 64 KiB,
 * yet relaying five 25 MB messages at once grew Postern by ~40 MB: the chunks were already dead, but the
 * small objects holding them hardly fill V8's young generation, so nothing collected them for a long while
 * (docs/decisions/026-memory-footprint.md). Postern now has the young generation collected every few MB of
 * body bytes (src/queue/body-memory.ts), with the node options of `npm start`.
 *
 * Postern runs as a child process with the start script's node options; a real client (nodemailer) submits
 * five 25 MB messages at once from an Allowed Network, and Postern delivers them with XOAUTH2 over STARTTLS
 * to an smtp-server upstream that counts bytes. The child's peak RSS (VmHWM, reset once the process is warm)
 * must stay within a ceiling well above the 20 MB aim and well below the defect's ~40 MB.
 */
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer, { type Transporter } from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Signal, until } from './support/events.js';
import { startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { spawnPostern, type PosternProcess } from './support/postern-process.js';
import { WebClient } from './support/postern.js';
import { authorizeMicrosoft, saveEmailSettings, saveRelaySettings } from './support/sending.js';
import { createTestDatabase, POSTGRES_ADMIN_URL } from './support/postgres.js';
import { createTestPki, type TestPki } from './support/test-ca.js';

const PASSWORD = 'dead-chunks-admin-password';
const BIG = 25_000_000;
const COUNT = 5;
/**
 * Growth over the warm process allowed at peak, with bodies on the spool or in PostgreSQL: the aim is 20 MB,
 * the spool's defect measured ~40 MB, PostgreSQL's 68–102 MB. Measured here on Node 20: SQLite 10.4–13.1 MB,
 * PostgreSQL 8.6–13.3 MB in the same runs (15.6–17.2 MB while a long body's first chunk was read by query).
 */
const CEILING_MB = 28;

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

beforeAll(async () => {
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
  dataDir = mkdtempSync(join(tmpdir(), 'postern-dead-chunks-'));
});

afterAll(async () => {
  await postern?.stop();
  await new Promise<void>((resolve) => (upstream ? upstream.close(() => resolve()) : resolve()));
  await microsoft?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
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

/**
 * Starts Postern with `env`, authorizes it, relays five 25 MB messages at once and returns the growth of its
 * peak RSS over the warm process, in MB.
 */
async function peakGrowthMb(env: Record<string, string>): Promise<number> {
  postern = await spawnPostern({ POSTERN_DATA_DIR: dataDir, POSTERN_ADMIN_PASSWORD: PASSWORD, NODE_EXTRA_CA_CERTS: pki.caFile, ...env }, { nodeArgs });
  const web = new WebClient(`http://127.0.0.1:${postern.httpPort}`);
  await web.login('admin', PASSWORD);
  await authorizeMicrosoft(web, microsoft, pki, postern.log);
  await saveEmailSettings(web, { smtpPort: String(upstreamPort), messagesPerMinute: '0' });
  await saveRelaySettings(web, { allowedNetworks: '127.0.0.1' });

  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: postern.smtpPort, secure: false, ignoreTLS: true, pool: false });
  const pid = postern.child.pid!;
  const before = { delivered, deliveredBytes };
  // Warm: the delivery path, its token and its upstream session exist before the measurement.
  await relay(transport, bigMessage(0).subarray(0, 200_000));
  await until(deliveredChanged.subscribe, () => delivered >= before.delivered + 1, 'the warm-up message delivered');

  // Linux: "5" resets the peak RSS (VmHWM) to the current RSS (proc(5), clear_refs).
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
  const warm = status(pid, 'VmRSS');
  const bodies = Array.from({ length: COUNT }, (_, i) => bigMessage(i + 1));
  await Promise.all(bodies.map((body) => relay(transport, body)));
  await until(deliveredChanged.subscribe, () => delivered >= before.delivered + 1 + COUNT, `the ${COUNT} large messages delivered`);
  const growth = status(pid, 'VmHWM') - warm;
  transport.close();
  await postern.stop();
  postern = undefined;

  expect(deliveredBytes - before.deliveredBytes).toBeGreaterThan(COUNT * BIG);
  process.stdout.write(`5 × 25 MB, ${env.POSTERN_DATABASE_URL ? 'PostgreSQL' : 'SQLite'}: peak RSS grew ${(growth / 1024 / 1024).toFixed(1)} MB over the warm process\n`);
  return growth / 1024 / 1024;
}

it('relays five concurrent 25 MB messages end to end within a bounded growth of its peak RSS', { timeout: 180_000 }, async () => {
  expect(await peakGrowthMb({}), 'growth of the peak RSS over the warm process, in MB').toBeLessThan(CEILING_MB);
});

/**
 * Defect: with bodies in PostgreSQL the same five messages grew an instance by 68–102 MB (every chunk and
 * the driver's copies of it outlived a round trip and waited for V8's own full collection; then 26–34 MB with
 * collections asked for, 22–30 MB with long bodies through binary COPY, as on SQLite since they are read
 * whole through it: docs/decisions/028).
 */
it.skipIf(!POSTGRES_ADMIN_URL)('regression: with bodies in PostgreSQL, five concurrent 25 MB messages grow the instance within the same ceiling as on SQLite', { timeout: 180_000 }, async () => {
  const database = await createTestDatabase('postern_peak_rss');
  try {
    dataDir = mkdtempSync(join(tmpdir(), 'postern-dead-chunks-pg-'));
    expect(await peakGrowthMb({ POSTERN_DATABASE_URL: database.url }), 'growth of the peak RSS over the warm process, in MB').toBeLessThan(CEILING_MB);
  } finally {
    await postern?.stop();
    postern = undefined;
    rmSync(dataDir, { recursive: true, force: true });
    await database.drop();
  }
});
