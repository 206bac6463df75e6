/**
 * /healthz for load balancers and service managers; /metrics for Prometheus.
 *
 * The metrics registry (prom-client) is created at the first scrape: every value is computed when scraped,
 * and a gateway that is never scraped should not carry the library in memory.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import type { QueueState } from '../../store/schema.js';
import type { WebContext, WebPluginOptions } from '../context.js';
import { none } from '../form.js';

const TOKEN_STATUSES = ['NotRegistered', 'WaitingForAuthorization', 'Active', 'Expired', 'Error'] as const;
const QUEUE_STATES: readonly QueueState[] = ['incoming', 'active', 'deferred', 'held', 'sent', 'bounced'];

async function createRegistry(web: WebContext): Promise<Registry> {
  const { default: client } = await import('prom-client');
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'postern_' });
  new client.Gauge({
    name: 'postern_oauth_token_status',
    help: 'Token Status of each OAuth account (1 for the current status).',
    labelNames: ['provider', 'status'],
    registers: [registry],
    async collect() {
      this.reset();
      const rows = await web.accounts.list();
      for (const row of rows) {
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
      const rows = await web.accounts.list();
      for (const row of rows) {
        if (row.access_token_expires_at) this.set({ provider: row.id }, Math.round((row.access_token_expires_at - Date.now()) / 1000));
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
      const counts = await web.queue.counts();
      for (const state of QUEUE_STATES) this.set({ state }, counts[state]);
    },
  });
  new client.Gauge({
    name: 'postern_queue_oldest_waiting_seconds',
    help: 'Age of the oldest message not yet delivered or bounced (0 when none waits).',
    registers: [registry],
    async collect() {
      const oldest = await web.queue.oldestWaitingSince();
      this.set(oldest === undefined ? 0 : Math.max(0, Math.round((Date.now() - oldest) / 1000)));
    },
  });
  return registry;
}

/** What /healthz answers (JSON, for load balancers and service managers). */
const health = {
  200: z.object({ status: z.literal('ok') }),
  503: z.object({ status: z.literal('error'), reason: z.string() }),
};

export const healthRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  let registry: Promise<Registry> | undefined;

  app.get('/healthz', { schema: { querystring: none, response: health } }, async (_request, reply) => {
    try {
      await web.store.ping();
      return reply.header('cache-control', 'no-store').send({ status: 'ok' });
    } catch {
      return reply.code(503).send({ status: 'error', reason: 'database unavailable' });
    }
  });

  app.get('/metrics', { schema: { querystring: none } }, async (_request, reply) => {
    const metrics = await (registry ??= createRegistry(web));
    return reply.type(metrics.contentType).send(await metrics.metrics());
  });
};
