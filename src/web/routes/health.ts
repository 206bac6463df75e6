/**
 * /healthz, /readyz and /metrics as routes of the Remote UI, for requests the plain listener hands on (any
 * with a query string, which the schemas refuse) and for `inject()` in tests. The answers themselves are in
 * src/web/health-answers.ts, which the plain listener also serves without loading the Remote UI.
 */
import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { GatewayMetrics } from '../../metrics.js';
import type { WebPluginOptions } from '../context.js';
import { none } from '../form.js';
import { healthAnswer, metricsAnswer, readinessAnswer, type Answer } from '../health-answers.js';

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

function send(reply: FastifyReply, answer: Answer) {
  return reply.code(answer.status).headers(answer.headers).send(answer.body);
}

export const healthRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  const metrics = web.metrics ?? new GatewayMetrics({ sources: { accounts: web.accounts, queue: web.queue } });
  app.get('/healthz', { schema: { querystring: none, response: health } }, async (_request, reply) => send(reply, await healthAnswer(web.store)));
  app.get('/readyz', { schema: { querystring: none, response: readiness } }, async (_request, reply) => send(reply, await readinessAnswer(web.store, web.notReady)));
  app.get('/metrics', { schema: { querystring: none } }, async (request, reply) => send(reply, await metricsAnswer(metrics, web.metricsToken, request.headers.authorization)));
};
