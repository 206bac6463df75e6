/** What both OAuth settings screens share: the status fragment the page re-fetches, and Delete Token. */
import type { FastifyInstance } from 'fastify';
import type { ProviderId } from '../../store/schema.js';
import type { WebContext } from '../app.js';

export function registerAccountStatusRoutes(app: FastifyInstance, web: WebContext, provider: ProviderId, base: string): void {
  app.get(`${base}/status`, { preHandler: web.requireLogin }, async (_request, reply) => {
    const status = await web.oauth.status(provider);
    return reply.render('partials/oauth-status', { status, base, now: Date.now() });
  });

  app.post(`${base}/token/delete`, { preHandler: [web.requireSendSettings, app.csrfProtection] }, async (request, reply) => {
    await web.oauth.deleteToken(provider, request.user!.username);
    web.setFlash(request, { type: 'success', text: 'The token was deleted. Token Status is Not Registered.' });
    return reply.redirect(base, 303);
  });
}
