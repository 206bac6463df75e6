/** `GET /status`: each OAuth account and the queue counts (the shape `postern status --json` prints). */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { AUTH_ERRORS, type ApiDependencies } from '../common.js';
import { buildStatus, StatusBody } from '../shapes.js';

export const statusRoutes: FastifyPluginAsyncZod<ApiDependencies> = async (app, deps) => {
  app.get(
    '/status',
    {
      config: { apiScope: 'read' },
      schema: { summary: 'Each OAuth account (Use, mailbox, Token Status, Server Connection Status) and the queue counts', tags: ['status'], response: { 200: StatusBody, ...AUTH_ERRORS } },
    },
    async () => buildStatus({ accounts: deps.accounts, oauth: deps.oauth, queue: deps.queue }),
  );
};
