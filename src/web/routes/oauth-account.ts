/** What both OAuth settings screens share: the status fragment the page re-fetches, and Delete Token. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { ProviderId } from '../../store/schema.js';
import type { WebPluginOptions } from '../context.js';
import { none } from '../form.js';

export interface AccountStatusOptions extends WebPluginOptions {
  provider: ProviderId;
  /** The settings screen's path; the routes are below it. */
  base: string;
}

export const accountStatusRoutes: FastifyPluginAsyncZod<AccountStatusOptions> = async (app, { web, provider, base }) => {
  app.get(`${base}/status`, { preValidation: web.requireLogin, schema: { querystring: none } }, async (_request, reply) => {
    const status = await web.oauth.status(provider);
    return reply.render('partials/oauth-status', { status, base, now: Date.now() });
  });

  app.post(`${base}/token/delete`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: none } }, async (request, reply) => {
    await web.oauth.deleteToken(provider, request.user!.username);
    web.setFlash(request, { type: 'success', text: 'The token was deleted. Token Status is Not Registered.' });
    return reply.redirect(base, 303);
  });
};
