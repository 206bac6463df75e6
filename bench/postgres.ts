/**
 * `npm run bench`, PostgreSQL part (called from bench/run.ts after the SQLite figures, same run, same
 * upstream and authorization server): the relay with POSTERN_DATABASE_URL, bodies in the database.
 *
 * 1. One instance: the same load as the SQLite relay figures (10 device sessions, a new connection per
 *    message, 10 KB, from an Allowed Network), accepted and delivered msg/s, p50/p99 session latency, RSS.
 * 2. Two instances on the same database, the 10 sessions split between them (5 each, straight to each
 *    instance's port: the figure is of the instances and the database, not of a load balancer), the same
 *    figures, RSS of each.
 *
 * Needs a PostgreSQL server: POSTERN_TEST_DATABASE_URL (as the tests), where a database of the bench's own is
 * created and dropped. Without it the part is skipped and says so. Everything shares the machine's cores
 * (PostgreSQL, both instances, the driver, the upstream): two instances on one machine measure the cost of
 * sharing the work, not a gain in capacity.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { MicrosoftStandin } from '../test/support/oauth-standins.js';
import { createTestDatabase, POSTGRES_ADMIN_URL } from '../test/support/postgres.js';
import { spawnPostern, type PosternProcess } from '../test/support/postern-process.js';
import { WebClient } from '../test/support/postern.js';
import { authorizeMicrosoft, saveEmailSettings, saveRelaySettings } from '../test/support/sending.js';
import type { TestPki } from '../test/support/test-ca.js';
import { message as sizedMessage, peakRss, percentile, session, settledRss } from './device-session.js';

const HOST = '127.0.0.1';
const SESSIONS = 10;
const SIZE = 10 * 1024;
const message = (i: number, size = SIZE) => sizedMessage(i, size);

export interface RelayFigures {
  accepted: number;
  delivered: number;
  p50: number;
  p99: number;
  /** Peak RSS of each instance, bytes. */
  rss: number[];
}

export interface PostgresBenchContext {
  pki: TestPki;
  microsoft: MicrosoftStandin;
  upstream: { port: number; messages: number; waitFor(n: number): Promise<void> };
  nodeArgs: string[];
  messages: number;
  /** The SQLite figures of the same run, printed beside. */
  sqlite: RelayFigures;
  /** SQLite: peak RSS of a fresh instance relaying 5 concurrent 25 MB messages end to end. */
  sqliteBigRss: number;
}




/** `count` messages over 10 sessions, spread over `ports` in turn; waits until the upstream has them all. */
async function load(ports: number[], count: number, first: number, context: PostgresBenchContext, instances: PosternProcess[]): Promise<RelayFigures> {
  const bodies = Array.from({ length: count }, (_, i) => message(first + i));
  const baseline = context.upstream.messages;
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: SESSIONS }, async (_, s) => {
      const port = ports[s % ports.length]!;
      while (next < count) latencies.push(await session(port, bodies[next++]!));
    }),
  );
  const acceptedMs = performance.now() - t0;
  await context.upstream.waitFor(baseline + count);
  const deliveredMs = performance.now() - t0;
  latencies.sort((a, b) => a - b);
  return {
    accepted: count / (acceptedMs / 1000),
    delivered: count / (deliveredMs / 1000),
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    rss: instances.map((p) => peakRss(p.child.pid!)),
  };
}


export interface MemoryFigures {
  /** RSS once started, settled. */
  idle: number;
  /** Peak RSS (VmHWM) relaying `count` concurrent messages of `size` bytes end to end. */
  peak: number;
  /** RSS settled after that run. */
  after: number;
  seconds: number;
}

/**
 * BENCH_MEMORY_ONLY=1, PostgreSQL: a fresh instance on a database of its own, authorized and configured as the
 * SQLite memory figure's, then stopped and started again (so the idle figure is of a plain start, not of the
 * first start's set-up); idle RSS, then the peak relaying `count` concurrent messages of `size` bytes.
 */
export async function benchPostgresMemory(context: Omit<PostgresBenchContext, 'messages' | 'sqlite' | 'sqliteBigRss'>, count: number, size: number): Promise<MemoryFigures | undefined> {
  if (!POSTGRES_ADMIN_URL) {
    process.stdout.write('\n  PostgreSQL: skipped (set POSTERN_TEST_DATABASE_URL to a server where a scratch database may be made)\n');
    return undefined;
  }
  const database = await createTestDatabase('postern_bench_memory');
  const dir = mkdtempSync(join(tmpdir(), 'postern-bench-pg-'));
  const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i)).toString('hex');
  const env = { POSTERN_DATA_DIR: dir, POSTERN_DATABASE_URL: database.url, POSTERN_SECRET_KEY: key, POSTERN_ADMIN_PASSWORD: 'bench-admin-password', NODE_EXTRA_CA_CERTS: context.pki.caFile, POSTERN_LOG_LEVEL: 'info', POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS: '100' };
  let instance: PosternProcess | undefined;
  try {
    instance = await spawnPostern(env, { nodeArgs: context.nodeArgs, entry: 'dist' });
    const web = new WebClient(`http://${HOST}:${instance.httpPort}`);
    await web.login('admin', 'bench-admin-password');
    await authorizeMicrosoft(web, context.microsoft, context.pki, instance.log);
    await saveEmailSettings(web, { smtpPort: String(context.upstream.port), messagesPerMinute: '0' });
    await saveRelaySettings(web, { allowedNetworks: HOST });
    await instance.stop();
    instance = await spawnPostern(env, { nodeArgs: context.nodeArgs, entry: 'dist' });
    const pid = instance.child.pid!;
    const idle = await settledRss(pid);
    const big = Array.from({ length: count }, (_, i) => message(300_000 + i, size));
    const baseline = context.upstream.messages;
    const started = performance.now();
    await Promise.all(big.map((body) => session(instance!.smtpPort, body)));
    await context.upstream.waitFor(baseline + count);
    const seconds = (performance.now() - started) / 1000;
    const peak = peakRss(pid);
    const after = await settledRss(pid);
    return { idle, peak, after, seconds };
  } finally {
    await instance?.stop().catch(() => undefined);
    await database.drop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs the PostgreSQL part and prints its rows beside SQLite's; returns the figures (undefined: skipped). */
export async function benchPostgres(context: PostgresBenchContext): Promise<{ one: RelayFigures; two: RelayFigures; bigRss: number } | undefined> {
  if (!POSTGRES_ADMIN_URL) {
    process.stdout.write('\n  PostgreSQL: skipped (set POSTERN_TEST_DATABASE_URL to a server where a scratch database may be made)\n');
    return undefined;
  }
  const database = await createTestDatabase('postern_bench');
  const dirs: string[] = [];
  const instances: PosternProcess[] = [];
  const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i)).toString('hex');
  const env = () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-bench-pg-'));
    dirs.push(dir);
    return { POSTERN_DATA_DIR: dir, POSTERN_DATABASE_URL: database.url, POSTERN_SECRET_KEY: key, POSTERN_ADMIN_PASSWORD: 'bench-admin-password', NODE_EXTRA_CA_CERTS: context.pki.caFile, POSTERN_LOG_LEVEL: 'info', POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS: '100' };
  };
  try {
    const first = await spawnPostern(env(), { nodeArgs: context.nodeArgs, entry: 'dist' });
    instances.push(first);
    const web = new WebClient(`http://${HOST}:${first.httpPort}`);
    await web.login('admin', 'bench-admin-password');
    await authorizeMicrosoft(web, context.microsoft, context.pki, first.log);
    await saveEmailSettings(web, { smtpPort: String(context.upstream.port), messagesPerMinute: '0' });
    await saveRelaySettings(web, { allowedNetworks: HOST });
    const warm = async (ports: number[]) => {
      const baseline = context.upstream.messages;
      await Promise.all(Array.from({ length: 50 }, (_, i) => session(ports[i % ports.length]!, message(i))));
      await context.upstream.waitFor(baseline + 50);
    };
    await warm([first.smtpPort]);
    const one = await load([first.smtpPort], context.messages, 1, context, instances);
    const second = await spawnPostern(env(), { nodeArgs: context.nodeArgs, entry: 'dist' });
    instances.push(second);
    await warm([first.smtpPort, second.smtpPort]);
    const two = await load([first.smtpPort, second.smtpPort], context.messages, 1 + context.messages, context, instances);

    // Memory: a fresh instance (the second one stopped), 5 concurrent 25 MB messages streamed into the
    // database and out to the upstream, as the SQLite memory figure.
    for (const instance of instances.splice(0)) await instance.stop();
    const fresh = await spawnPostern(env(), { nodeArgs: context.nodeArgs, entry: 'dist' });
    instances.push(fresh);
    const big = Array.from({ length: 5 }, (_, i) => message(200_000 + i, 25_000_000));
    const bigBaseline = context.upstream.messages;
    const bigStarted = performance.now();
    await Promise.all(big.map((body) => session(fresh.smtpPort, body)));
    await context.upstream.waitFor(bigBaseline + big.length);
    const bigMs = performance.now() - bigStarted;
    const bigRss = peakRss(fresh.child.pid!);

    const mb = (n: number) => `${(n / 1024 / 1024).toFixed(0)} MB`;
    const rows: Array<[string, string, string, string]> = [
      ['accepted msg/s', context.sqlite.accepted.toFixed(0), one.accepted.toFixed(0), two.accepted.toFixed(0)],
      ['delivered msg/s (end to end)', context.sqlite.delivered.toFixed(0), one.delivered.toFixed(0), two.delivered.toFixed(0)],
      ['session latency p50', `${context.sqlite.p50.toFixed(1)} ms`, `${one.p50.toFixed(1)} ms`, `${two.p50.toFixed(1)} ms`],
      ['session latency p99', `${context.sqlite.p99.toFixed(1)} ms`, `${one.p99.toFixed(1)} ms`, `${two.p99.toFixed(1)} ms`],
      ['peak RSS per instance', context.sqlite.rss.map(mb).join(' + '), one.rss.map(mb).join(' + '), two.rss.map(mb).join(' + ')],
      [`peak RSS, 5 concurrent 25 MB messages (${(bigMs / 1000).toFixed(1)} s on PostgreSQL)`, mb(context.sqliteBigRss), mb(bigRss), ''],
    ];
    process.stdout.write(`\n  PostgreSQL beside SQLite (${context.messages} × 10 KB, 10 sessions, new connection each; two instances: 5 sessions each)\n`);
    const header: [string, string, string, string] = ['', 'SQLite', 'PostgreSQL ×1', 'PostgreSQL ×2'];
    const width = Math.max(...rows.map((r) => r[0].length));
    for (const [name, ...values] of [header, ...rows]) process.stdout.write(`  ${name.padEnd(width)}  ${values.map((v) => v.padStart(18)).join('')}\n`);
    return { one, two, bigRss };
  } finally {
    for (const instance of instances) await instance.stop().catch(() => undefined);
    await database.drop().catch(() => undefined);
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
}
