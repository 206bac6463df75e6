/** `GET /accounts`: every sending account (src/oauth/accounts.ts) and which is the Default. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { AUTH_ERRORS, type ApiDependencies } from '../common.js';
import { buildSendingAccounts, SendingAccountsBody } from '../shapes.js';

export const accountRoutes: FastifyPluginAsyncZod<ApiDependencies> = async (app, deps) => {
  app.get(
    '/accounts',
    {
      config: { apiScope: 'read' },
      schema: { summary: 'Every sending account: provider, name, Use, Delivery Method, mailbox, Token Status, and the Default', tags: ['status'], response: { 200: SendingAccountsBody, ...AUTH_ERRORS } },
    },
    async () => buildSendingAccounts({ accounts: deps.accounts, defaultAccountId: () => deps.emailSettings.sendingAccountId() }),
  );
};
