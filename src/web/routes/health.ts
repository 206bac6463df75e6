/**
 * /healthz and /readyz for load balancers and service managers; /metrics for Prometheus (src/metrics.ts).
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
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { GatewayMetrics } from '../../metrics.js';
import type { WebContext, WebPluginOptions } from '../context.js';
import { none } from '../form.js';

/** What /healthz answers (JSON, for load balancers and service managers). */
const health = {
  200: z.object({ status: z.literal('ok') }),
  503: z.object({ status: z.literal('error'), reason: z.string() }),
};

/** What /readyz answers: ready, or each reason it is not. */
const readiness = {
  200: z.object({ status: z.literal('ready') }),
  503: z.object({ status: z.literal('not ready'), reasons: z.array(z.string()) }),
};

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

async function notReady(web: WebContext): Promise<string[]> {
  const reasons: string[] = [];
  try {
    // One query that needs both: the database answering, and the migrations' own table filled.
    if ((await web.store.schemaVersion()) === null) reasons.push('database schema not migrated');
  } catch {
    reasons.push('database unavailable');
  }
  reasons.push(...(web.notReady?.() ?? []));
  return reasons;
}

export const healthRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  const metrics = web.metrics ?? new GatewayMetrics({ sources: { accounts: web.accounts, queue: web.queue } });

  app.get('/healthz', { schema: { querystring: none, response: health } }, async (_request, reply) => {
    try {
      await web.store.ping();
      return reply.header('cache-control', 'no-store').send({ status: 'ok' });
    } catch {
      return reply.code(503).send({ status: 'error', reason: 'database unavailable' });
    }
  });

  app.get('/readyz', { schema: { querystring: none, response: readiness } }, async (_request, reply) => {
    const reasons = await notReady(web);
    reply.header('cache-control', 'no-store');
    if (reasons.length > 0) return reply.code(503).send({ status: 'not ready', reasons });
    return reply.send({ status: 'ready' });
  });

  app.get('/metrics', { schema: { querystring: none } }, async (request, reply) => {
    if (web.metricsToken !== undefined) {
      const given = bearerToken(request.headers.authorization);
      if (given === undefined || !sameToken(given, web.metricsToken)) {
        // RFC 6750 §3: no credentials, no error code; wrong ones, invalid_token.
        const challenge = given === undefined ? 'Bearer realm="postern metrics"' : 'Bearer realm="postern metrics", error="invalid_token"';
        return reply.code(401).header('www-authenticate', challenge).header('cache-control', 'no-store').type('text/plain; charset=utf-8').send('A bearer token is required for /metrics (POSTERN_METRICS_TOKEN).\n');
      }
    }
    const registry = await metrics.registry();
    return reply.header('cache-control', 'no-store').type(registry.contentType).send(await registry.metrics());
  });
};
