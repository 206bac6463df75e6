/** /healthz for load balancers and service managers; /metrics for Prometheus. */
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import client from 'prom-client';
import type { WebContext } from '../app.js';

const TOKEN_STATUSES = ['NotRegistered', 'WaitingForAuthorization', 'Active', 'Expired', 'Error'] as const;

export function registerHealthRoutes(app: FastifyInstance, web: WebContext): void {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'postern_' });
  new client.Gauge({
    name: 'postern_oauth_token_status',
    help: 'Token Status of each OAuth account (1 for the current status).',
    labelNames: ['provider', 'status'],
    registers: [registry],
    async collect() {
      this.reset();
      const rows = await web.store.db.selectFrom('oauth_accounts').select(['id', 'token_status', 'enabled']).execute();
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
      const rows = await web.store.db.selectFrom('oauth_accounts').select(['id', 'access_token_expires_at']).execute();
      for (const row of rows) {
        if (row.access_token_expires_at) this.set({ provider: row.id }, Math.round((row.access_token_expires_at - Date.now()) / 1000));
      }
    },
  });
  app.decorate('metricsRegistry', registry);

  app.get('/healthz', async (_request, reply) => {
    try {
      await sql`select 1`.execute(web.store.db);
      return reply.header('cache-control', 'no-store').send({ status: 'ok' });
    } catch {
      return reply.code(503).send({ status: 'error', reason: 'database unavailable' });
    }
  });

  app.get('/metrics', async (_request, reply) => {
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}

declare module 'fastify' {
  interface FastifyInstance {
    metricsRegistry: client.Registry;
  }
}
