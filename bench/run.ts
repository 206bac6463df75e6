/**
 * `npm run bench`: Postern's relay throughput and latency beside a same-class reference, and its memory
 * footprint. One run, one machine, 127.0.0.1 only, bounded in time.
 *
 * 1. Context (no target): Postfix's `smtp-source` → `smtp-sink` (no TLS, nothing written), and smtp-server
 *    alone discarding each message: what the machine and the SMTP library do with no work at all.
 * 2. Reference: Postfix with its durable queue as the relay, relaying over STARTTLS with SASL PLAIN to an
 *    upstream (bench/postfix-relay.ts; PLAIN stands in for sasl-xoauth2, which Debian does not package),
 *    driven by smtp-source (three runs of 1000 × 10 KB, 10 sessions, a new session per message; the best),
 *    delivered end to end. Postern must deliver at least as many messages per second (target ≥ 1×).
 * 3. Postern (a child process running the production build as `npm start` runs it, built first with
 *    `npm run build`), delivering with XOAUTH2 over STARTTLS to an upstream that checks the token by RFC 7662
 *    introspection at the stand-in Microsoft identity platform: driven by the same smtp-source runs as the
 *    reference (the ratio), and by a Node.js driver (10 device sessions, a new connection per message, 10 KB
 *    messages, from an Allowed Network) for accepted / delivered rates and p50/p99 session latency
 *    (connect → 221; target p50 < 30 ms).
 * 4. Memory of a fresh Postern process: RSS once started (target ≤ 70 MB), peak RSS (VmHWM) while relaying
 *    5 concurrent 25 MB messages end to end and its growth over idle (target ≤ 20 MB), RSS after that run.
 * 5. Two sending accounts with Sender Routing rules beside one account (bench/accounts.ts): the relay figures
 *    again, half the messages routed to a second account, each checked to arrive as its own mailbox.
 * 6. Remote UI: page latency under a small load (4 signed-in administrators fetching the OAuth 2.0
 *    (Microsoft) Settings page and its live status fragment back to back), with the relay idle.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { SMTPServer } from 'smtp-server';
import { OUTLOOK_SMTP_SCOPE, startMicrosoftStandin, type MicrosoftStandin } from '../test/support/oauth-standins.js';
import { spawnPostern, type PosternProcess } from '../test/support/postern-process.js';
import { WebClient } from '../test/support/postern.js';
import { authorizeMicrosoft, saveEmailSettings, saveRelaySettings } from '../test/support/sending.js';
import { createTestPki, type TestPki } from '../test/support/test-ca.js';
import { createIntrospector } from '../test/support/upstream-smtp.js';
import { message, peakRss, percentile, session, settledRss } from './device-session.js';
import { benchAccounts } from './accounts.js';
import { benchPostgres, benchPostgresMemory } from './postgres.js';
import { startPostfixRelay } from './postfix-relay.js';

const HOST = '127.0.0.1';
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 2000);
const SESSIONS = 10;
const SIZE = 10 * 1024;
const BIG = 25_000_000;
const BIG_COUNT = 5;
const DEADLINE_MS = 10 * 60_000;
/**
 * Node options of the Postern process: those of `npm start` (read from package.json, so the bench measures
 * what users run), plus BENCH_NODE_ARGS, e.g. BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'.
 */
const startScript: string = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).scripts.start;
const startCommand = /^((?:[A-Z_]+=\S+\s+)*)node((?:\s+--\S+)*)\s+dist\/main\.js$/.exec(startScript);
if (!startCommand) throw new Error(`package.json's start script is not "[VAR=value …] node [--flag …] dist/main.js": ${startScript}`);
/** Environment assignments before `node` in the start script (e.g. glibc malloc tuning). */
const startEnv: Record<string, string> = Object.fromEntries(
  (startCommand[1] ?? '').trim().split(/\s+/).filter(Boolean).map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
);
const startArgs = (startCommand[2] ?? '').trim().split(/\s+/).filter(Boolean);
const nodeArgs = [...startArgs, ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)];
/** BENCH_MEMORY_ONLY=1: only the memory figures (idle, 5 × 25 MB peak), for working on the footprint. */
const MEMORY_ONLY = process.env.BENCH_MEMORY_ONLY === '1';
/** BENCH_RELAY_ONLY=1: pace deliveries to 1/min and report acceptance only (profiling aid). */
const RELAY_ONLY = process.env.BENCH_RELAY_ONLY === '1';

const children = new Set<ChildProcess>();
const cleanups: Array<() => Promise<unknown> | unknown> = [];
const deadline = setTimeout(() => {
  process.stderr.write('bench: time limit reached, stopping\n');
  for (const child of children) child.kill('SIGKILL');
  process.exit(2);
}, DEADLINE_MS);
deadline.unref();

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function run(command: string, args: string[]): Promise<{ code: number | null; ms: number; output: string }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, ms: performance.now() - started, output }));
  });
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: HOST, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`nothing listens on ${port}`);
}

/** Three runs of smtp-source (1000 × 10 KB, 10 sessions, a new session per message) against a port: the best. */
async function smtpSourceRuns(port: number): Promise<{ perSecond: number; runs: number[] }> {
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const result = await run('/usr/sbin/smtp-source', ['-s', String(SESSIONS), '-m', '1000', '-l', String(SIZE), '-f', 'a@example.test', '-t', 'b@example.test', `${HOST}:${port}`]);
    if (result.code !== 0) throw new Error(`smtp-source failed: ${result.output}`);
    runs.push(1000 / (result.ms / 1000));
  }
  return { perSecond: Math.max(...runs), runs };
}

/** smtp-source → smtp-sink, one session per message: the best of three runs. */
async function ceiling(): Promise<{ perSecond: number; runs: number[] }> {
  const port = await freePort();
  const args = process.getuid?.() === 0 ? ['-u', 'nobody', `${HOST}:${port}`, '256'] : [`${HOST}:${port}`, '256'];
  const sink = spawn('/usr/sbin/smtp-sink', args, { stdio: 'ignore' });
  children.add(sink);
  try {
    await waitForPort(port);
    return await smtpSourceRuns(port);
  } finally {
    sink.kill('SIGTERM');
    children.delete(sink);
  }
}

/**
 * A reference point between the ceiling and Postern: smtp-server itself (the library Postern's relay is built
 * on), in its own process, with the greeting delay removed as in Postern, accepting and discarding each
 * message: no authentication, no disk, no delivery. What no relay built on it can exceed on this machine.
 */
const BARE_SMTP_SERVER = `
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
class Connection extends SMTPConnection { init() { this._setListeners(() => this.connectionReady()); } }
class Server extends SMTPServer {
  connect(socket, options) {
    const connection = new Connection(this, socket, options);
    this.connections.add(connection);
    connection.on('error', () => {});
    connection.on('connect', (data) => this._onClientConnect(data));
    connection.init();
  }
}
const server = new Server({ authOptional: true, disableReverseLookup: true, hideSTARTTLS: true, logger: false,
  onData(stream, _session, callback) { stream.resume(); stream.on('end', () => callback()); } });
server.listen(Number(process.argv[1]), '${HOST}');
`;

async function bareSmtpServer(): Promise<{ perSecond: number; runs: number[] }> {
  const port = await freePort();
  const server = spawn(process.execPath, ['--input-type=module', '-e', BARE_SMTP_SERVER, String(port)], { stdio: 'ignore' });
  children.add(server);
  try {
    await waitForPort(port);
    return await smtpSourceRuns(port);
  } finally {
    server.kill('SIGTERM');
    children.delete(server);
  }
}

/**
 * The upstream for the benchmark: smtp-server with STARTTLS and XOAUTH2 only, checking each distinct token once
 * by introspection (as a provider caches token validation), counting messages without parsing them. With
 * `plain`, SASL PLAIN with that one credential instead (the upstream of the Postfix reference).
 */
async function startUpstream(pki: TestPki, microsoft: MicrosoftStandin, plain?: { username: string; password: string }) {
  const introspector = createIntrospector({ ...microsoft.introspection, ca: pki.ca.cert });
  const valid = new Map<string, Promise<boolean>>();
  let messages = 0;
  let bytes = 0;
  /** Messages by the mailbox they were sent as (the XOAUTH2 user). */
  const byUser = new Map<string, number>();
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const server = new SMTPServer({
    key: pki.server.key,
    cert: pki.server.cert,
    authMethods: plain ? ['PLAIN'] : ['XOAUTH2'],
    size: 157286400,
    disableReverseLookup: true,
    logger: false,
    onAuth(auth, _session, callback) {
      if (plain) {
        const ok = auth.method === 'PLAIN' && auth.username === plain.username && auth.password === plain.password;
        return ok ? callback(null, { user: auth.username }) : callback(new Error('535 5.7.8 Authentication credentials invalid'));
      }
      const token = auth.accessToken ?? '';
      let check = valid.get(token);
      if (!check) {
        check = introspector.introspect(token).then(
          (info) => info.active && String(info.scope).split(' ').includes(OUTLOOK_SMTP_SCOPE) && String(info.email).toLowerCase() === String(auth.username).toLowerCase(),
          () => false,
        );
        valid.set(token, check);
      }
      void check.then((ok) => (ok ? callback(null, { user: auth.username }) : callback(null, { data: { status: '401', schemes: 'bearer', scope: OUTLOOK_SMTP_SCOPE } })));
    },
    onData(stream, smtpSession, callback) {
      stream.on('data', (chunk: Buffer) => (bytes += chunk.length));
      stream.on('end', () => {
        messages++;
        const user = String(smtpSession.user ?? '');
        byUser.set(user, (byUser.get(user) ?? 0) + 1);
        for (const waiter of waiters.splice(0)) {
          if (messages >= waiter.n) waiter.resolve();
          else waiters.push(waiter);
        }
        callback(null, '2.0.0 OK queued');
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  return {
    port: (server.server.address() as AddressInfo).port,
    get messages() {
      return messages;
    },
    get bytes() {
      return bytes;
    },
    byUser: byUser as ReadonlyMap<string, number>,
    waitFor(n: number): Promise<void> {
      if (messages >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await introspector.close();
    },
  };
}






/**
 * smtp-source against Postern, end to end: each of three runs sends 1000 × 10 KB with 10 sessions, a new
 * session per message; accepted = smtp-source's own time, delivered = until the upstream has all 1000. Best run.
 */
async function smtpSourceEndToEnd(port: number, upstream: { messages: number; waitFor(n: number): Promise<void> }) {
  let best = { accepted: 0, delivered: 0 };
  for (let i = 0; i < 3; i++) {
    const baseline = upstream.messages;
    const started = performance.now();
    const result = await run('/usr/sbin/smtp-source', ['-s', String(SESSIONS), '-m', '1000', '-l', String(SIZE), '-f', 'a@example.test', '-t', 'b@example.test', `${HOST}:${port}`]);
    if (result.code !== 0) throw new Error(`smtp-source failed: ${result.output}`);
    await upstream.waitFor(baseline + 1000);
    const delivered = 1000 / ((performance.now() - started) / 1000);
    if (delivered > best.delivered) best = { accepted: 1000 / (result.ms / 1000), delivered };
  }
  return best;
}

/** 4 signed-in administrators, back to back, alternating the settings page and its status fragment. */
async function webLatency(baseUrl: string, password: string): Promise<{ p50: number; p99: number; perSecond: number; requests: number }> {
  const CLIENTS = 4;
  const PER_CLIENT = 150;
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const client = new WebClient(baseUrl);
      await client.login('admin', password);
      return client;
    }),
  );
  const paths = ['/settings/send/oauth-microsoft', '/settings/send/oauth-microsoft/status'];
  for (const client of clients) for (const path of paths) await client.get(path);
  const times: number[] = [];
  const started = performance.now();
  await Promise.all(
    clients.map(async (client) => {
      for (let i = 0; i < PER_CLIENT; i++) {
        const t = performance.now();
        await client.get(paths[i % paths.length]!);
        if (client.lastStatus !== 200) throw new Error(`Remote UI answered HTTP ${client.lastStatus}`);
        times.push(performance.now() - t);
      }
    }),
  );
  const elapsed = performance.now() - started;
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), perSecond: times.length / (elapsed / 1000), requests: times.length };
}

/** Postfix (durable queue) relaying with SASL PLAIN over STARTTLS, driven by smtp-source like Postern: its delivered rate. */
async function postfixReference(pki: TestPki, microsoft: MicrosoftStandin) {
  const credential = { username: 'bob@example.test', password: 'bench-upstream-secret' };
  const upstream = await startUpstream(pki, microsoft, credential);
  const relay = await startPostfixRelay({ port: await freePort(), upstreamPort: upstream.port, ...credential, waitForPort });
  try {
    return await smtpSourceEndToEnd(relay.port, upstream);
  } catch (error) {
    throw new Error(`the Postfix reference failed: ${error instanceof Error ? error.message : String(error)}\n${relay.logs()}`);
  } finally {
    await relay.close();
    await upstream.close();
  }
}


async function main(): Promise<void> {
  const started = performance.now();
  process.stdout.write('Postern benchmark (127.0.0.1, one machine, one run)\n');

  // The production build, as `npm start` runs it (BENCH_NO_BUILD=1: dist/ as it is).
  if (process.env.BENCH_NO_BUILD !== '1') {
    const build = await run('npm', ['run', '--silent', 'build']);
    if (build.code !== 0) throw new Error(`npm run build failed: ${build.output}`);
    process.stdout.write(`  built dist/ in ${(build.ms / 1000).toFixed(0)} s\n`);
  }

  const floor = MEMORY_ONLY ? undefined : await ceiling();
  if (floor) process.stdout.write(`  smtp-source → smtp-sink: ${floor.runs.map((r) => r.toFixed(0)).join(', ')} msg/s\n`);
  const bare = MEMORY_ONLY ? undefined : await bareSmtpServer();
  if (bare) process.stdout.write(`  smtp-source → smtp-server (discarding): ${bare.runs.map((r) => r.toFixed(0)).join(', ')} msg/s\n`);

  const pki = await createTestPki('Postern Bench CA');
  const microsoft = await startMicrosoftStandin({ pki, interval: 1 });
  cleanups.push(() => microsoft.close());

  const reference = MEMORY_ONLY ? undefined : await postfixReference(pki, microsoft);
  if (reference) process.stdout.write(`  smtp-source → Postfix → upstream (SASL PLAIN, STARTTLS): ${reference.delivered.toFixed(0)} msg/s delivered\n`);

  const upstream = await startUpstream(pki, microsoft);
  cleanups.push(() => upstream.close());
  const dataDir = mkdtempSync(join(tmpdir(), 'postern-bench-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  // Every simulated device connects from 127.0.0.1: the per-address session limit (20 by default) would turn
  // away the warm-up's 50 simultaneous sessions; a site with that many devices behind one NAT raises it too.
  const env = {
    POSTERN_DATA_DIR: dataDir,
    POSTERN_ADMIN_PASSWORD: 'bench-admin-password',
    NODE_EXTRA_CA_CERTS: pki.caFile,
    POSTERN_LOG_LEVEL: 'info',
    POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS: '200',
    ...startEnv,
  };

  let postern: PosternProcess = await spawnPostern(env, { nodeArgs, entry: 'dist' });
  children.add(postern.child);
  const web = new WebClient(`http://${HOST}:${postern.httpPort}`);
  await web.login('admin', 'bench-admin-password');
  await authorizeMicrosoft(web, microsoft, pki, postern.log);
  await saveEmailSettings(web, { smtpPort: String(upstream.port), messagesPerMinute: RELAY_ONLY ? '1' : '0' });
  await saveRelaySettings(web, { allowedNetworks: HOST });

  let relay: { accepted: number; delivered: number; latencies: number[]; peak: number } | undefined;
  let viaSource: { accepted: number; delivered: number } | undefined;
  let ui: Awaited<ReturnType<typeof webLatency>> | undefined;
  if (!MEMORY_ONLY) {
    // Warm-up: JIT, the pooled upstream sessions (their TLS handshake and token check).
    const warm = message(0, SIZE);
    await Promise.all(Array.from({ length: 50 }, () => session(postern.smtpPort, warm)));
    if (!RELAY_ONLY) await upstream.waitFor(50);

    // Relay: 10 device sessions, a new connection per message.
    const bodies = Array.from({ length: MESSAGES }, (_, i) => message(i + 1, SIZE));
    const baseline = upstream.messages;
    const latencies: number[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: SESSIONS }, async () => {
        while (next < MESSAGES) {
          const body = bodies[next++]!;
          latencies.push(await session(postern.smtpPort, body));
        }
      }),
    );
    const acceptedMs = performance.now() - t0;
    latencies.sort((a, b) => a - b);
    if (RELAY_ONLY) {
      process.stdout.write(`  relay only: ${(MESSAGES / (acceptedMs / 1000)).toFixed(0)} msg/s accepted, p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms\n`);
      await postern.stop();
      return;
    }
    await upstream.waitFor(baseline + MESSAGES);
    const deliveredMs = performance.now() - t0;
    relay = { accepted: MESSAGES / (acceptedMs / 1000), delivered: MESSAGES / (deliveredMs / 1000), latencies, peak: peakRss(postern.child.pid!) };
    viaSource = await smtpSourceEndToEnd(postern.smtpPort, upstream);
    ui = await webLatency(`http://${HOST}:${postern.httpPort}`, 'bench-admin-password');
  }

  // Memory: a fresh process (same data directory, so the authorization stays), as `npm start` runs it:
  // RSS once started, peak (VmHWM) relaying 5 concurrent 25 MB messages end to end, RSS after the run.
  await postern.stop();
  children.delete(postern.child);
  const big = Array.from({ length: BIG_COUNT }, (_, i) => message(100_000 + i, BIG));
  postern = await spawnPostern(env, { nodeArgs, entry: 'dist' });
  children.add(postern.child);
  const idle = await settledRss(postern.child.pid!);
  const idlePeak = peakRss(postern.child.pid!);
  const bigBaseline = upstream.messages;
  const bigStarted = performance.now();
  await Promise.all(big.map((body) => session(postern.smtpPort, body)));
  await upstream.waitFor(bigBaseline + BIG_COUNT);
  const bigMs = performance.now() - bigStarted;
  const bigPeak = peakRss(postern.child.pid!);
  const after = await settledRss(postern.child.pid!);
  await postern.stop();
  children.delete(postern.child);

  const mb = (n: number) => `${(n / 1024 / 1024).toFixed(0)} MB`;
  const met = (ok: boolean) => (ok ? 'met' : '**not met**');
  const rows: Array<[string, string, string]> = [];
  if (floor && bare && reference && relay && viaSource && ui) {
    const ratio = viaSource.delivered / reference.delivered;
    const p50 = percentile(relay.latencies, 50);
    rows.push(
      ['smtp-source → smtp-sink (1000 × 10 KB, 10 sessions, new session each; no TLS, no disk)', `${floor.perSecond.toFixed(0)} msg/s`, 'context only'],
      ['smtp-source → smtp-server alone, discarding (no disk, no delivery)', `${bare.perSecond.toFixed(0)} msg/s`, 'context only'],
      ['reference: smtp-source → Postfix (durable queue) → upstream, SASL PLAIN over STARTTLS', `${reference.delivered.toFixed(0)} msg/s`, `delivered end to end; accepted ${reference.accepted.toFixed(0)} msg/s`],
      ['Postern driven by smtp-source (1000 × 10 KB, 10 sessions, new session each): accepted', `${viaSource.accepted.toFixed(0)} msg/s`, ''],
      ['  delivered end to end (XOAUTH2 over STARTTLS, token checked by introspection)', `${viaSource.delivered.toFixed(0)} msg/s`, `${ratio.toFixed(2)}× the reference (target ≥ 1×: ${met(ratio >= 1)})`],
      [`Postern, Node.js device driver (${MESSAGES} × 10 KB, 10 sessions, new connection each): accepted`, `${relay.accepted.toFixed(0)} msg/s`, '250 after fsync'],
      ['  delivered end to end', `${relay.delivered.toFixed(0)} msg/s`, ''],
      ['session latency p50 (connect → 221)', `${p50.toFixed(1)} ms`, `target < 30 ms: ${met(p50 < 30)}`],
      ['session latency p99', `${percentile(relay.latencies, 99).toFixed(1)} ms`, ''],
      ['peak RSS during the 10 KB run (includes the first start\'s scrypt hash)', mb(relay.peak), ''],
    );
  }
  const growth = bigPeak - idle;
  rows.push(
    ['idle RSS of a fresh Postern, once started', mb(idle), `target ≤ 70 MB: ${met(idle <= 70 * 1024 * 1024)} (start-up peak ${mb(idlePeak)})`],
    [`peak RSS relaying ${BIG_COUNT} concurrent 25 MB messages end to end`, mb(bigPeak), `${(bigMs / 1000).toFixed(1)} s`],
    ['  growth over idle', mb(growth), `target ≤ 20 MB: ${met(growth <= 20 * 1024 * 1024)}`],
    ['idle RSS after that run', mb(after), ''],
  );
  if (ui) {
    rows.push(
      [`Remote UI page latency p50, 4 administrators back to back (${ui.requests} requests, ${ui.perSecond.toFixed(0)} pages/s)`, `${ui.p50.toFixed(1)} ms`, ''],
      ['Remote UI page latency p99', `${ui.p99.toFixed(1)} ms`, ''],
    );
  }
  const width = Math.max(...rows.map((r) => r[0].length));
  process.stdout.write('\n');
  for (const [name, value, note] of rows) process.stdout.write(`  ${name.padEnd(width)}  ${value.padStart(10)}  ${note}\n`);
  if (relay && process.env.BENCH_NO_ACCOUNTS !== '1') {
    await benchAccounts({ pki, microsoft, upstream, env, nodeArgs, messages: MESSAGES, one: { accepted: relay.accepted, delivered: relay.delivered, p50: percentile(relay.latencies, 50), p99: percentile(relay.latencies, 99), rss: relay.peak } });
  }
  if (relay) {
    await benchPostgres({ pki, microsoft, upstream, nodeArgs, messages: MESSAGES, sqlite: { accepted: relay.accepted, delivered: relay.delivered, p50: percentile(relay.latencies, 50), p99: percentile(relay.latencies, 99), rss: [relay.peak] }, sqliteBigRss: bigPeak });
  }
  if (MEMORY_ONLY) {
    const pg = await benchPostgresMemory({ pki, microsoft, upstream, nodeArgs }, BIG_COUNT, BIG);
    if (pg) {
      process.stdout.write(`\n  PostgreSQL beside SQLite, fresh instance, ${BIG_COUNT} concurrent 25 MB messages (${pg.seconds.toFixed(1)} s on PostgreSQL)\n`);
      for (const [name, a, b] of [['idle RSS', idle, pg.idle], ['peak RSS', bigPeak, pg.peak], ['  growth over idle', bigPeak - idle, pg.peak - pg.idle], ['idle RSS after the run', after, pg.after]] as const) {
        process.stdout.write(`  ${name.padEnd(24)}  ${mb(a).padStart(8)} (SQLite)  ${mb(b).padStart(8)} (PostgreSQL)\n`);
      }
    }
  }
  const envText = Object.entries(startEnv).map(([k, v]) => `${k}=${v} `).join('');
  process.stdout.write(`\n  Postern ran as: ${envText}node ${[...nodeArgs, 'dist/main.js'].join(' ')}\n  node ${process.version}, ${((performance.now() - started) / 1000).toFixed(0)} s in total\n`);
}

main()
  .catch((error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const child of children) child.kill('SIGKILL');
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
    clearTimeout(deadline);
  });
