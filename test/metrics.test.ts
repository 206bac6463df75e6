/**
 * /metrics, /readyz and /healthz as an operator's tools read them: the exposition parsed with a Prometheus
 * text parser (names, types, labels), the counters moved by a message relayed end to end, a deferral, a
 * return to sender, a refused device login and a token refresh; POSTERN_METRICS_TOKEN (401 without, 200
 * with); /readyz before the listeners are up, while up and while stopping; and never a NaN.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostern } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { ErrorCodes } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { reasonClass } from '../src/metrics.js';
import { ADMIN_PASSWORD, startTestPostern } from './support/postern.js';
import { untilQueue, waitForState } from './support/queue.js';
import { RawSmtp, saveRelaySettings, startSendingStack, type SendingStack } from './support/sending.js';

interface Sample {
  labels?: Record<string, string>;
  value?: string;
  buckets?: Record<string, string>;
  count?: string;
  sum?: string;
}
interface Family {
  name: string;
  help: string;
  type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
  metrics: Sample[];
}
// The parser ships without type declarations.
const parsePrometheusTextFormat = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];

const TOKEN = 'metrics-token-for-tests-0123456789';
const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

let stack: SendingStack;

async function scrapeText(): Promise<string> {
  const response = await fetch(`${stack.gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return response.text();
}

async function scrape(): Promise<Map<string, Family>> {
  return new Map(parsePrometheusTextFormat(await scrapeText()).map((family) => [family.name, family]));
}

/** The value of `name`'s sample whose labels include `labels` (0 when there is none yet). */
function valueOf(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(name);
  if (!family) throw new Error(`no metric family ${name}`);
  const sample = family.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return sample ? Number(sample.value) : 0;
}

const histogramCount = (families: Map<string, Family>) => Number(families.get('postern_delivery_duration_seconds')!.metrics[0]!.count);

/** Waits, after each queue pass and recorded delivery, until `check` holds for a fresh scrape. */
const untilScraped = (check: (families: Map<string, Family>) => boolean, what: string) =>
  untilQueue(stack.gw.postern.queueManager, async () => {
    const families = await scrape();
    return check(families) ? families : undefined;
  }, what);

/** One message through the relay from an allowed network; returns its queue id. */
async function submit(subject: string): Promise<string> {
  const smtp = await RawSmtp.open(stack.relayPort);
  await smtp.command('EHLO device.test');
  expect(await smtp.command('MAIL FROM:<scanner@printers.local>')).toMatch(/^250 /);
  expect(await smtp.command('RCPT TO:<bob@example.test>')).toMatch(/^250 /);
  expect(await smtp.command('DATA')).toMatch(/^354 /);
  smtp.write(`From: scanner@printers.local\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n\r\nbody\r\n.\r\n`);
  const reply = await smtp.reply();
  smtp.close();
  const id = /queued as ([0-9a-f-]{36})/.exec(reply)?.[1];
  if (!id) throw new Error(`not queued: ${reply}`);
  return id;
}

beforeAll(async () => {
  stack = await startSendingStack({ config: { metricsToken: TOKEN } });
  await saveRelaySettings(stack.web, { allowedNetworks: '127.0.0.1' });
});

afterAll(async () => {
  await stack?.close();
});

describe('/metrics', () => {
  it('serves every family with its type and labels, Node\'s under their standard names, and no NaN', async () => {
    // The first scrape creates the registry: the event-loop statistics have no sample yet.
    const first = await scrapeText();
    const second = await scrapeText();
    for (const text of [first, second]) expect(text).not.toMatch(/\bNaN\b/i);
    const families = new Map(parsePrometheusTextFormat(second).map((family) => [family.name, family]));
    const types = Object.fromEntries([...families.values()].map((f) => [f.name, f.type]));
    expect(types).toMatchObject({
      postern_messages_accepted_total: 'COUNTER',
      postern_messages_delivered_total: 'COUNTER',
      postern_messages_deferred_total: 'COUNTER',
      postern_messages_bounced_total: 'COUNTER',
      postern_relay_auth_failures_total: 'COUNTER',
      postern_token_refreshes_total: 'COUNTER',
      postern_delivery_duration_seconds: 'HISTOGRAM',
      postern_build_info: 'GAUGE',
      postern_oauth_token_status: 'GAUGE',
      postern_oauth_access_token_expiry_seconds: 'GAUGE',
      postern_queue_messages: 'GAUGE',
      postern_queue_oldest_waiting_seconds: 'GAUGE',
      process_resident_memory_bytes: 'GAUGE',
      process_cpu_seconds_total: 'COUNTER',
      nodejs_eventloop_lag_seconds: 'GAUGE',
      nodejs_heap_size_used_bytes: 'GAUGE',
    });
    expect([...families.keys()].filter((name) => /^postern_(process|nodejs)_/.test(name))).toEqual([]);
    expect(families.get('postern_build_info')!.metrics).toEqual([{ labels: { version: VERSION, node: process.version }, value: '1' }]);
    expect(valueOf(families, 'postern_oauth_token_status', { provider: 'microsoft', status: 'Active' })).toBe(1);
    const histogram = families.get('postern_delivery_duration_seconds')!.metrics[0]!;
    expect(Object.keys(histogram.buckets!)).toContain('+Inf');
    expect(Number(histogram.count)).toBe(Number(histogram.buckets!['+Inf']));
    for (const family of families.values()) {
      for (const sample of family.metrics) {
        for (const value of [sample.value, sample.count, sample.sum, ...Object.values(sample.buckets ?? {})]) {
          if (value !== undefined) expect(Number.isNaN(Number(value)), `${family.name} ${JSON.stringify(sample)}`).toBe(false);
        }
      }
    }
  });

  it('a message relayed end to end moves accepted, delivered and the latency histogram', async () => {
    const before = await scrape();
    const id = await submit('counted');
    await waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, id, 'sent');
    const after = await untilScraped(
      (f) => valueOf(f, 'postern_messages_delivered_total', { account: 'microsoft' }) === valueOf(before, 'postern_messages_delivered_total', { account: 'microsoft' }) + 1,
      'the delivered counter to move',
    );
    expect(valueOf(after, 'postern_messages_accepted_total', { account: 'microsoft' })).toBe(valueOf(before, 'postern_messages_accepted_total', { account: 'microsoft' }) + 1);
    expect(histogramCount(after)).toBe(histogramCount(before) + 1);
    const sum = Number(after.get('postern_delivery_duration_seconds')!.metrics[0]!.sum);
    expect(sum).toBeGreaterThan(0);
  });

  it('a deferral and a return to sender are counted by account and reason class', async () => {
    await stack.gw.postern.queueManager.whenIdle();
    const before = await scrape();
    stack.upstream.failNext({ phase: 'data', code: 451, message: '4.3.0 Temporary server error. Please try again later' });
    const deferredThenSent = await submit('deferred once');
    await waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, deferredThenSent, 'sent');
    await stack.gw.postern.queueManager.whenIdle();
    stack.upstream.failNext({ phase: 'rcpt', code: 550, message: '5.1.1 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup' });
    const returned = await submit('returned');
    await waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, returned, 'bounced');
    const labels = { account: 'microsoft', reason: 'rejected' };
    const after = await untilScraped(
      (f) => valueOf(f, 'postern_messages_bounced_total', labels) === valueOf(before, 'postern_messages_bounced_total', labels) + 1,
      'the bounced counter to move',
    );
    expect(valueOf(after, 'postern_messages_deferred_total', labels)).toBe(valueOf(before, 'postern_messages_deferred_total', labels) + 1);
    for (const name of ['postern_messages_deferred_total', 'postern_messages_bounced_total']) {
      for (const sample of after.get(name)!.metrics) {
        expect(Object.keys(sample.labels!).sort()).toEqual(['account', 'reason']);
        expect(['rejected', 'auth-failed', 'connection', 'unsupported', 'local', 'expired', 'other']).toContain(sample.labels!.reason);
      }
    }
  });

  it('a refused device login moves the relay auth-failures counter', async () => {
    const before = valueOf(await scrape(), 'postern_relay_auth_failures_total', { reason: 'credentials' });
    const smtp = await RawSmtp.open(stack.relayPort);
    await smtp.command('EHLO device.test');
    expect(await smtp.starttls()).toMatch(/^220 /);
    await smtp.command('EHLO device.test');
    const credentials = Buffer.from('\0no-such-device\0wrong password').toString('base64');
    expect(await smtp.command(`AUTH PLAIN ${credentials}`)).toMatch(/^535 /);
    smtp.close();
    expect(valueOf(await scrape(), 'postern_relay_auth_failures_total', { reason: 'credentials' })).toBe(before + 1);
  });

  it('a token refresh is counted by account and outcome', async () => {
    const before = valueOf(await scrape(), 'postern_token_refreshes_total', { account: 'microsoft', outcome: 'success' });
    await stack.gw.postern.tokens.refresh('microsoft');
    expect(valueOf(await scrape(), 'postern_token_refreshes_total', { account: 'microsoft', outcome: 'success' })).toBe(before + 1);
  });

  it('with POSTERN_METRICS_TOKEN: 401 with a Bearer challenge without it or with another, 200 with it', async () => {
    const without = await fetch(`${stack.gw.url}/metrics`);
    expect(without.status).toBe(401);
    expect(without.headers.get('www-authenticate')).toBe('Bearer realm="postern metrics"');
    expect(await without.text()).not.toContain('postern_');
    const wrong = await fetch(`${stack.gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}x` } });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('www-authenticate')).toBe('Bearer realm="postern metrics", error="invalid_token"');
    const basic = await fetch(`${stack.gw.url}/metrics`, { headers: { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` } });
    expect(basic.status).toBe(401);
    const right = await fetch(`${stack.gw.url}/metrics`, { headers: { authorization: `bearer ${TOKEN}` } });
    expect(right.status).toBe(200);
    expect(await right.text()).toContain('postern_build_info');
    // The token guards /metrics only.
    expect((await fetch(`${stack.gw.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${stack.gw.url}/readyz`)).status).toBe(200);
  });
});

describe('/readyz', () => {
  it('200 ready while running', async () => {
    const response = await fetch(`${stack.gw.url}/readyz`);
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(await response.json()).toEqual({ status: 'ready' });
  });

  it('503 before the listeners are up, with the reasons', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'postern-readyz-'));
    const postern = await createPostern(
      { dataDir, host: '127.0.0.1', httpPort: 0, smtpPort: 0, databaseUrl: undefined, adminPassword: ADMIN_PASSWORD, secretKey: undefined, logLevel: 'silent', extraCaFile: undefined },
      createLogger('silent'),
    );
    try {
      const response = await (await postern.web.app()).inject({ method: 'GET', url: '/readyz' });
      expect(response.statusCode).toBe(503);
      expect(response.json()).toEqual({ status: 'not ready', reasons: ['starting', 'SMTP relay not listening', 'Remote UI not listening'] });
      expect((await (await postern.web.app()).inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
      // Without POSTERN_METRICS_TOKEN, /metrics is open, as before.
      expect((await (await postern.web.app()).inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
    } finally {
      await postern.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('503 from the moment stopping begins, while /healthz stays 200', async () => {
    const gw = await startTestPostern();
    // An open relay session keeps the relay (and so the Remote UI after it) from closing until it quits.
    const session = await RawSmtp.open(gw.postern.smtpPort);
    const stopped = gw.close();
    try {
      const response = await fetch(`${gw.url}/readyz`);
      expect(response.status).toBe(503);
      const body = (await response.json()) as { status: string; reasons: string[] };
      expect(body.status).toBe('not ready');
      expect(body.reasons).toEqual(expect.arrayContaining(['stopping', 'SMTP relay not listening']));
      expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    } finally {
      await session.command('QUIT').catch(() => undefined);
      session.close();
      await stopped;
    }
  });
});

describe('the reason class and the setting', () => {
  it('a deferred or returned outcome is classed by its catalogue code, an expired lifetime first', () => {
    expect(reasonClass({ errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED, expired: false })).toBe('rejected');
    expect(reasonClass({ errorCode: ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED, expired: false })).toBe('auth-failed');
    expect(reasonClass({ errorCode: ErrorCodes.SMTP_UPSTREAM_CONNECTION, expired: false })).toBe('connection');
    expect(reasonClass({ errorCode: ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED, expired: false })).toBe('unsupported');
    expect(reasonClass({ errorCode: ErrorCodes.QUEUE_SPOOL_MISSING, expired: false })).toBe('local');
    expect(reasonClass({ errorCode: ErrorCodes.SMTP_UPSTREAM_CONNECTION, expired: true })).toBe('expired');
    expect(reasonClass({ errorCode: undefined, expired: false })).toBe('other');
  });

  it('POSTERN_METRICS_TOKEN: unset or empty leaves /metrics open; a short or malformed token stops start-up naming it', () => {
    expect(loadConfig({}).metricsToken).toBeUndefined();
    expect(loadConfig({ POSTERN_METRICS_TOKEN: '' }).metricsToken).toBeUndefined();
    expect(loadConfig({ POSTERN_METRICS_TOKEN: TOKEN }).metricsToken).toBe(TOKEN);
    expect(() => loadConfig({ POSTERN_METRICS_TOKEN: 'short' })).toThrow(/^Invalid configuration: POSTERN_METRICS_TOKEN must be at least 16 characters/);
    expect(() => loadConfig({ POSTERN_METRICS_TOKEN: 'has a space in it, sixteen+' })).toThrow(/POSTERN_METRICS_TOKEN/);
  });
});
