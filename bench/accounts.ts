/**
 * The relay with two sending accounts and routing rules, beside one account, in the same run: the same
 * production process and driver as bench/run.ts's relay figures, after a second Microsoft account (another
 * mailbox, authorized by the device flow) and Sender Routing rules were added to the same data directory.
 * Half the messages come from a sender routed to the second account, half go to the Default; each arrives
 * at the upstream signed in as its own account's mailbox (counted, and checked).
 */
import { performance } from 'node:perf_hooks';
import { createPostern } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import type { MicrosoftStandin } from '../test/support/oauth-standins.js';
import { spawnPostern, type PosternProcess } from '../test/support/postern-process.js';
import type { TestPki } from '../test/support/test-ca.js';
import { approveDeviceCode } from '../test/support/user-agent.js';
import { message, peakRss, percentile, session } from './device-session.js';

const SESSIONS = 10;
const RULES = 200;
export const SECOND_SENDER = 'scanner@second.bench';

export interface AccountsBenchContext {
  pki: TestPki;
  microsoft: MicrosoftStandin;
  upstream: { port: number; messages: number; byUser: ReadonlyMap<string, number>; waitFor(n: number): Promise<void> };
  env: Record<string, string>;
  nodeArgs: string[];
  messages: number;
  one: { accepted: number; delivered: number; p50: number; p99: number; rss: number };
}

/**
 * Adds the second account (bob), a device-independent Sender Routing rule for SECOND_SENDER's domain and
 * RULES other rules, in-process on the stopped gateway's data directory (the relay will read them as any
 * instance would).
 */
async function addSecondAccount(context: AccountsBenchContext): Promise<string> {
  const config = { ...loadConfig(context.env), httpPort: 0, smtpPort: 0 };
  const postern = await createPostern(config, createLogger('silent'));
  await postern.start();
  try {
    const account = await postern.accounts.add('microsoft', 'Second mailbox');
    await postern.emailSettings.save({ ...(await postern.emailSettings.get(account.id)), smtpHost: '127.0.0.1', smtpPort: context.upstream.port, messagesPerMinute: 0 }, { makeDefault: false });
    await postern.oauth
      .microsoftFor(account.id)
      .saveSettings({ enabled: true, verifyServerCertificate: true, addCnToVerificationItems: true, endpoint: context.microsoft.endpoint('organizations'), clientId: context.microsoft.publicClientId }, 'bench');
    let userCode: string | undefined;
    for (let i = 0; i < 100 && !userCode; i++) {
      await postern.oauth.whenIdle(account.id);
      userCode = (await postern.oauth.status(account.id)).device?.userCode;
      if (!userCode) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (!userCode) throw new Error('the second account got no user code');
    await approveDeviceCode({ verificationUri: context.microsoft.verificationUri, userCode, email: 'bob@example.test', password: 'correct horse', ca: context.pki.ca.cert });
    for (let i = 0; i < 100; i++) {
      if ((await postern.oauth.status(account.id)).token.status === 'Active') break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if ((await postern.oauth.status(account.id)).token.status !== 'Active') throw new Error('the second account did not become Active');
    for (let i = 0; i < RULES; i++) await postern.routes.setSenderRoute(`device-${i}@rules.bench`, account.id);
    await postern.routes.setSenderRoute('@second.bench', account.id);
    return account.id;
  } finally {
    await postern.stop();
  }
}

/** Runs the two-account part and prints its rows beside one account's. */
export async function benchAccounts(context: AccountsBenchContext): Promise<void> {
  await addSecondAccount(context);
  let postern: PosternProcess | undefined;
  try {
    postern = await spawnPostern(context.env, { nodeArgs: context.nodeArgs, entry: 'dist' });
    const port = postern.smtpPort;
    // Warm-up, as the one-account run: JIT and both accounts' pooled upstream sessions.
    const warmBaseline = context.upstream.messages;
    await Promise.all(Array.from({ length: 50 }, (_, i) => session(port, message(900_000 + i, 10 * 1024), i % 2 === 0 ? SECOND_SENDER : undefined)));
    await context.upstream.waitFor(warmBaseline + 50);

    const bodies = Array.from({ length: context.messages }, (_, i) => message(500_000 + i, 10 * 1024));
    const baseline = context.upstream.messages;
    const bobBefore = context.upstream.byUser.get('bob@example.test') ?? 0;
    const latencies: number[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: SESSIONS }, async () => {
        while (next < context.messages) {
          const i = next++;
          latencies.push(await session(port, bodies[i]!, i % 2 === 0 ? SECOND_SENDER : undefined));
        }
      }),
    );
    const acceptedMs = performance.now() - t0;
    await context.upstream.waitFor(baseline + context.messages);
    const deliveredMs = performance.now() - t0;
    latencies.sort((a, b) => a - b);
    const viaSecond = (context.upstream.byUser.get('bob@example.test') ?? 0) - bobBefore;
    const two = {
      accepted: context.messages / (acceptedMs / 1000),
      delivered: context.messages / (deliveredMs / 1000),
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      rss: peakRss(postern.child.pid!),
    };
    const mb = (n: number) => `${(n / 1024 / 1024).toFixed(0)} MB`;
    const rows: Array<[string, string, string]> = [
      ['accepted msg/s', context.one.accepted.toFixed(0), two.accepted.toFixed(0)],
      ['delivered msg/s (end to end)', context.one.delivered.toFixed(0), two.delivered.toFixed(0)],
      ['session latency p50', `${context.one.p50.toFixed(1)} ms`, `${two.p50.toFixed(1)} ms`],
      ['session latency p99', `${context.one.p99.toFixed(1)} ms`, `${two.p99.toFixed(1)} ms`],
      ['peak RSS', mb(context.one.rss), mb(two.rss)],
    ];
    process.stdout.write(
      `\n  Two sending accounts and ${RULES + 1} Sender Routing rules beside one account (${context.messages} × 10 KB, 10 sessions, new connection each; ` +
        `${viaSecond} of ${context.messages} went through the second account, as routed)\n`,
    );
    const width = Math.max(...rows.map((r) => r[0].length));
    for (const [name, ...values] of [['', 'one account', 'two accounts'] as [string, string, string], ...rows]) {
      process.stdout.write(`  ${name.padEnd(width)}  ${values.map((v) => v.padStart(14)).join('')}\n`);
    }
    const routed = Math.ceil(context.messages / 2);
    if (viaSecond !== routed) throw new Error(`expected ${routed} messages through the second account, got ${viaSecond}`);
  } finally {
    await postern?.stop().catch(() => undefined);
  }
}
