/**
 * What /healthz, /readyz and /metrics answer, without Fastify: the plain listener (src/web/listener.ts) serves
 * them itself, so a load balancer's health checks and a Prometheus scraper never load the Remote UI, and the
 * Remote UI's own routes (src/web/routes/health.ts) give the same answers from the same code.
 *
 * /healthz says the process and its database are alive (restart me if not); /readyz says the gateway takes
 * traffic now: the database answers with its schema migrated, and the relay and the Remote UI listen (send
 * me work if so). While starting and from the first moment of stopping, /readyz answers 503 and /healthz
 * stays 200.
 *
 * /metrics needs `Authorization: Bearer <POSTERN_METRICS_TOKEN>` when that setting is on (RFC 6750 §2.1),
 * compared in constant time; without the setting it is open, as a scrape target on the LAN usually is.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { GatewayMetrics } from '../metrics.js';
import type { Store } from '../store/store.js';

export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

const JSON_TYPE = 'application/json; charset=utf-8';

function json(status: number, value: unknown, cache = true): Answer {
  return { status, headers: { 'content-type': JSON_TYPE, ...(cache ? { 'cache-control': 'no-store' } : {}) }, body: JSON.stringify(value) };
}

/** /healthz: the process answers and so does its database. */
export async function healthAnswer(store: Pick<Store, 'ping'>): Promise<Answer> {
  try {
    await store.ping();
    return json(200, { status: 'ok' });
  } catch {
    return json(503, { status: 'error', reason: 'database unavailable' }, false);
  }
}

/** /readyz: ready, or each reason it is not. */
export async function readinessAnswer(store: Pick<Store, 'schemaVersion'>, notReady: (() => string[]) | undefined): Promise<Answer> {
  const reasons: string[] = [];
  try {
    // One query that needs both: the database answering, and the migrations' own table filled.
    if ((await store.schemaVersion()) === null) reasons.push('database schema not migrated');
  } catch {
    reasons.push('database unavailable');
  }
  reasons.push(...(notReady?.() ?? []));
  return reasons.length > 0 ? json(503, { status: 'not ready', reasons }) : json(200, { status: 'ready' });
}

/** The Authorization header's bearer token (RFC 6750 §2.1; the scheme is case-insensitive, RFC 9110 §11.1). */
function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header ?? '');
  return match?.[1];
}

/** Equal in constant time, whatever the lengths: both sides are hashed first. */
function sameToken(given: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** /metrics: Prometheus' text format, behind the bearer token when one is set. */
export async function metricsAnswer(metrics: GatewayMetrics, token: string | undefined, authorization: string | undefined): Promise<Answer> {
  if (token !== undefined) {
    const given = bearerToken(authorization);
    if (given === undefined || !sameToken(given, token)) {
      // RFC 6750 §3: no credentials, no error code; wrong ones, invalid_token.
      const challenge = given === undefined ? 'Bearer realm="postern metrics"' : 'Bearer realm="postern metrics", error="invalid_token"';
      return {
        status: 401,
        headers: { 'www-authenticate': challenge, 'cache-control': 'no-store', 'content-type': 'text/plain; charset=utf-8' },
        body: 'A bearer token is required for /metrics (POSTERN_METRICS_TOKEN).\n',
      };
    }
  }
  const registry = await metrics.registry();
  return { status: 200, headers: { 'cache-control': 'no-store', 'content-type': registry.contentType }, body: await registry.metrics() };
}
