/**
 * Metrics for Prometheus: what Postern counts as it works, and the registry /metrics serves.
 *
 * Purpose: let an operator see traffic, failures and token health over time without reading logs.
 * Inputs: events from the parts, told through the observer methods below (wired in app.ts from the queue
 *   manager's onEvent, the relay's onAccepted / onAuthFailure and the token service's onRefresh, so that no
 *   part but this one knows prom-client); the OAuth accounts and the queue, read at each scrape.
 * Outputs: the Prometheus text exposition (registry()).
 * Design: counters and the latency histogram are plain numbers here from start-up; prom-client is imported
 *   at the first scrape and reads them (docs/decisions/007-runtime-memory-and-logging.md: a gateway that is
 *   never scraped does not carry the library). Every label value comes from a small fixed set (account ids,
 *   outcome names, reason classes), never from free text such as a server's reply.
 * Failure modes: a gauge whose source fails makes that scrape fail (Prometheus records the scrape as down);
 *   counters are never lost to a failed scrape.
 * Known limits: counters count what this process saw since it started (Prometheus' rate() handles
 *   restarts); on a shared database each instance reports its own traffic.
 */
import type { MetricValueWithName, Registry } from 'prom-client';
import { ErrorCodes, type ErrorCode } from './errors.js';
import type { OAuthAccounts } from './oauth/accounts.js';
import type { RefreshOutcome } from './oauth/token-service.js';
import type { RecordedOutcome } from './queue/queue-manager.js';
import type { MessageQueue } from './queue/queue.js';
import type { RelayAuthFailure } from './smtp-in/relay-server.js';
import type { QueueState } from './store/schema.js';
import { packageInfo } from './package-info.js';

/**
 * Why a message was deferred or returned, as a small fixed set: the upstream refused it (`rejected`),
 * refused our login (`auth-failed`), could not be reached (`connection`), lacks what the message needs
 * (`unsupported`), Postern itself could not send it (`local`: spool file missing, header too large), its
 * lifetime ran out (`expired`), or anything else (`other`).
 */
export type ReasonClass = 'rejected' | 'auth-failed' | 'connection' | 'unsupported' | 'local' | 'expired' | 'other';

const REASON_OF_CODE: Partial<Record<ErrorCode, ReasonClass>> = {
  [ErrorCodes.SMTP_UPSTREAM_REJECTED]: 'rejected',
  [ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED]: 'auth-failed',
  [ErrorCodes.SMTP_UPSTREAM_CONNECTION]: 'connection',
  [ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED]: 'unsupported',
  [ErrorCodes.SMTP_HEADER_TOO_BIG]: 'local',
  [ErrorCodes.QUEUE_SPOOL_MISSING]: 'local',
};

/** The reason class of a deferred or returned outcome: the lifetime first, then the catalogue code. */
export function reasonClass(outcome: Pick<RecordedOutcome, 'errorCode' | 'expired'>): ReasonClass {
  if (outcome.expired) return 'expired';
  return (outcome.errorCode && REASON_OF_CODE[outcome.errorCode]) || 'other';
}

/**
 * Seconds from acceptance to delivery: a first attempt takes about a second, a retry minutes, a held
 * message hours. The last bucket is the default lifetime (5 days).
 */
export const DELIVERY_BUCKETS = [0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86_400, 5 * 86_400];

const TOKEN_STATUSES = ['NotRegistered', 'WaitingForAuthorization', 'Active', 'Expired', 'Error'] as const;
const QUEUE_STATES: readonly QueueState[] = ['incoming', 'active', 'deferred', 'held', 'sent', 'bounced'];

/** The event-loop delay statistics of prom-client's default metrics: NaN (mean, stddev) until a sample. */
const EVENT_LOOP_STATS = ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99'].map((s) => `nodejs_eventloop_lag_${s}_seconds`);

/** What the registry reads at each scrape. */
export interface MetricSources {
  accounts: Pick<OAuthAccounts, 'list'>;
  queue: Pick<MessageQueue, 'counts' | 'oldestWaitingSince'>;
}

/** Counts by label set; the key is the label values joined. */
class Counts<Labels extends Record<string, string>> {
  readonly #entries = new Map<string, { labels: Labels; value: number }>();

  add(labels: Labels, value = 1): void {
    const key = JSON.stringify(Object.values(labels));
    const entry = this.#entries.get(key);
    if (entry) entry.value += value;
    else this.#entries.set(key, { labels, value });
  }

  entries(): Iterable<{ labels: Labels; value: number }> {
    return this.#entries.values();
  }
}

interface Latency {
  /** Observations at or below each bound of DELIVERY_BUCKETS, above the bound before (not cumulative). */
  buckets: number[];
  /** Observations above the last bound. */
  over: number;
  sum: number;
  count: number;
}

export interface GatewayMetricsOptions {
  sources: MetricSources;
  now?: () => number;
}

export class GatewayMetrics {
  readonly #sources: MetricSources;
  readonly #now: () => number;
  readonly #accepted = new Counts<{ account: string }>();
  readonly #delivered = new Counts<{ account: string }>();
  readonly #deferred = new Counts<{ account: string; reason: ReasonClass }>();
  readonly #bounced = new Counts<{ account: string; reason: ReasonClass }>();
  readonly #authFailures = new Counts<{ reason: RelayAuthFailure }>();
  readonly #refreshes = new Counts<{ account: string; outcome: RefreshOutcome }>();
  readonly #latency: Latency = { buckets: DELIVERY_BUCKETS.map(() => 0), over: 0, sum: 0, count: 0 };
  #registry: Promise<Registry> | undefined;

  constructor(options: GatewayMetricsOptions) {
    this.#sources = options.sources;
    this.#now = options.now ?? Date.now;
  }

  // ---- observers ------------------------------------------------------------------------------------

  /** The relay committed a message that goes out through `account` (the sending account). */
  onAccepted(account: string): void {
    this.#accepted.add({ account });
  }

  /** The queue manager recorded a delivery attempt. */
  onOutcome(outcome: RecordedOutcome): void {
    const account = outcome.accountId;
    if (outcome.state === 'sent') {
      this.#delivered.add({ account });
      this.#observeLatency(Math.max(0, outcome.at - outcome.receivedAt) / 1000);
    } else if (outcome.state === 'deferred') {
      this.#deferred.add({ account, reason: reasonClass(outcome) });
    } else {
      this.#bounced.add({ account, reason: reasonClass(outcome) });
    }
  }

  /** A device's AUTH at the relay was refused. */
  onRelayAuthFailure(reason: RelayAuthFailure): void {
    this.#authFailures.add({ reason });
  }

  /** A token request for `account` ended. */
  onTokenRefresh(account: string, outcome: RefreshOutcome): void {
    this.#refreshes.add({ account, outcome });
  }

  #observeLatency(seconds: number): void {
    const series = this.#latency;
    const index = DELIVERY_BUCKETS.findIndex((bound) => seconds <= bound);
    if (index === -1) series.over++;
    else series.buckets[index]!++;
    series.sum += seconds;
    series.count++;
  }

  // ---- exposition -----------------------------------------------------------------------------------

  /** The registry /metrics serves, created (and prom-client imported) at the first call. */
  registry(): Promise<Registry> {
    this.#registry ??= this.#createRegistry().catch((error: unknown) => {
      this.#registry = undefined; // the next scrape tries again
      throw error;
    });
    return this.#registry;
  }

  async #createRegistry(): Promise<Registry> {
    const { default: client } = await import('prom-client');
    const registry = new client.Registry();
    // Node's process metrics under their standard names, as every Node dashboard expects them.
    client.collectDefaultMetrics({ register: registry });
    const sources = this.#sources;
    const now = this.#now;

    new client.Gauge({
      name: 'postern_build_info',
      help: 'Always 1; the labels say which Postern and which Node.js run.',
      labelNames: ['version', 'node'],
      registers: [registry],
    }).set({ version: await posternVersion(), node: process.version }, 1);

    const counter = <L extends Record<string, string>>(name: string, help: string, labelNames: (keyof L & string)[], counts: Counts<L>) =>
      new client.Counter({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          this.reset();
          for (const { labels, value } of counts.entries()) this.inc(labels, value);
        },
      });
    counter('postern_messages_accepted_total', 'Messages the relay accepted (250 after they were on stable storage), by sending account.', ['account'], this.#accepted);
    counter('postern_messages_delivered_total', 'Messages the upstream accepted, by sending account.', ['account'], this.#delivered);
    counter(
      'postern_messages_deferred_total',
      'Delivery attempts that left the message deferred (retried later), by sending account and reason class.',
      ['account', 'reason'],
      this.#deferred,
    );
    counter(
      'postern_messages_bounced_total',
      'Messages returned to their sender (failed for good), by sending account and reason class.',
      ['account', 'reason'],
      this.#bounced,
    );
    counter('postern_relay_auth_failures_total', 'Device logins the relay refused: wrong credentials, another identity, or throttled.', ['reason'], this.#authFailures);
    counter('postern_token_refreshes_total', 'Access-token refreshes, by account and outcome (success, error: retried, definitive: Expired).', ['account', 'outcome'], this.#refreshes);

    const latency = this.#latency;
    const latencyName = 'postern_delivery_duration_seconds';
    const latencyHelp = 'Seconds from acceptance by the relay to delivery upstream (every account together).';
    // The histogram's numbers are kept above from start-up; prom-client's own only counts from its creation.
    // The registry writes the text from getForPromString() (prom-client's histograms have it; get() reads it
    // too, for JSON), so the numbers above replace the histogram's own there.
    class StoredHistogram extends client.Histogram {
      async getForPromString() {
        const name = latencyName;
        const values: (MetricValueWithName<string> & { sharedLabels: Record<string, never> })[] = [];
        let cumulative = 0;
        DELIVERY_BUCKETS.forEach((bound, i) => {
          cumulative += latency.buckets[i]!;
          values.push({ metricName: `${name}_bucket`, labels: { le: bound }, sharedLabels: {}, value: cumulative });
        });
        values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, sharedLabels: {}, value: cumulative + latency.over });
        values.push({ metricName: `${name}_sum`, labels: {}, sharedLabels: {}, value: latency.sum });
        values.push({ metricName: `${name}_count`, labels: {}, sharedLabels: {}, value: latency.count });
        return { name, help: latencyHelp, type: 'histogram', aggregator: 'sum', values };
      }
    }
    new StoredHistogram({
      name: latencyName,
      help: latencyHelp,
      buckets: DELIVERY_BUCKETS,
      registers: [registry],
    });

    new client.Gauge({
      name: 'postern_oauth_token_status',
      help: 'Token Status of each OAuth account (1 for the current status).',
      labelNames: ['provider', 'status'],
      registers: [registry],
      async collect() {
        this.reset();
        for (const row of await sources.accounts.list()) {
          for (const status of TOKEN_STATUSES) this.set({ provider: row.id, status }, row.token_status === status ? 1 : 0);
        }
      },
    });
    new client.Gauge({
      name: 'postern_oauth_access_token_expiry_seconds',
      help: 'Seconds until the stored access token expires (negative when expired).',
      labelNames: ['provider'],
      registers: [registry],
      async collect() {
        this.reset();
        for (const row of await sources.accounts.list()) {
          if (row.access_token_expires_at) this.set({ provider: row.id }, Math.round((Number(row.access_token_expires_at) - now()) / 1000));
        }
      },
    });
    new client.Gauge({
      name: 'postern_queue_messages',
      help: 'Messages in the queue by state (sent and bounced: kept for the Log until cleaned up).',
      labelNames: ['state'],
      registers: [registry],
      async collect() {
        this.reset();
        const counts = await sources.queue.counts();
        for (const state of QUEUE_STATES) this.set({ state }, counts[state]);
      },
    });
    new client.Gauge({
      name: 'postern_queue_oldest_waiting_seconds',
      help: 'Age of the oldest message not yet delivered or bounced (0 when none waits).',
      registers: [registry],
      async collect() {
        const oldest = await sources.queue.oldestWaitingSince();
        this.set(oldest === undefined ? 0 : Math.max(0, Math.round((now() - oldest) / 1000)));
      },
    });

    withoutNaN(registry);
    return registry;
  }
}

/**
 * A sample without a value yet is left out rather than written as NaN, which alerting rules cannot compare.
 * prom-client's event-loop statistics have no sample between two scrapes closer than its 10 ms resolution
 * (and at the first scrape, since the registry is made then): mean and stddev are NaN and min is a sentinel
 * (2^63 ns), so all seven are left out for that scrape.
 */
function withoutNaN(registry: Registry): void {
  const mean = registry.getSingleMetric('nodejs_eventloop_lag_mean_seconds');
  const meanValues = mean ? mean.get.bind(mean) : undefined;
  for (const { name } of registry.getMetricsAsArray()) {
    const metric = registry.getSingleMetric(name);
    if (!metric) continue;
    const get: () => Promise<{ values: { value: number }[] }> = metric.get.bind(metric);
    const isEventLoopStat = EVENT_LOOP_STATS.includes(name);
    // Registered after the lag gauge whose collect() sets them, so they are read after it ran.
    Object.assign(metric, {
      async get() {
        const result = await get();
        const noSample = isEventLoopStat && meanValues !== undefined && (await meanValues()).values.some((v) => Number.isNaN(v.value));
        return { ...result, values: noSample ? [] : result.values.filter((v) => !Number.isNaN(v.value)) };
      },
    });
  }
}

async function posternVersion(): Promise<string> {
  return packageInfo().version;
}
