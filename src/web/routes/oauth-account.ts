/** What both OAuth settings screens share: the status fragment the page re-fetches, and Delete Token. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { ProviderId, TokenStatus } from '../../store/schema.js';
import type { WebPluginOptions } from '../context.js';
import { none } from '../form.js';

/** Token Status values under which a refresh token is held: a change of client would discard it. */
export function holdsAuthorization(status: TokenStatus): boolean {
  return status === 'Active' || status === 'Error';
}

/** Edit Basic Settings' typed values as the confirmation page's hidden fields (check boxes only when on). */
export function hiddenFields(form: Record<string, string | boolean>): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const [name, value] of Object.entries(form)) {
    if (value === true) fields[name] = 'on';
    else if (typeof value === 'string') fields[name] = value;
  }
  return fields;
}

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
    web.setFlash(request, { type: 'success', text: request.t('oauth.tokenDeleted') });
    return reply.redirect(base, 303);
  });
};
