/** The portal page and Settings/Registration, the entry points of the seed's steps 1–3. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { WebPluginOptions } from '../context.js';
import { none } from '../form.js';

export const portalRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  const schema = { querystring: none };

  app.get('/', { preValidation: web.requireLogin, schema }, async (_request, reply) => {
    const [microsoft, google] = await Promise.all([web.oauth.status('microsoft'), web.oauth.status('google')]);
    return reply.render('portal', { title: 'Remote UI', accounts: [microsoft, google] });
  });

  app.get('/settings', { preValidation: web.requireLogin, schema }, async (_request, reply) => {
    return reply.render('settings', { title: 'Settings/Registration' });
  });

  app.get('/settings/send', { preValidation: web.requireLogin, schema }, async (_request, reply) => {
    return reply.render('send', { title: 'Send' });
  });

  app.get('/settings/audit', { preValidation: web.requireLogin, schema }, async (_request, reply) => {
    return reply.render('audit', { title: 'Audit Log', entries: await web.audit.recent(200) });
  });
};
