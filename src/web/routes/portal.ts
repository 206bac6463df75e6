/** The portal page and Settings/Registration, the entry points of the seed's steps 1–3. */
import type { FastifyInstance } from 'fastify';
import type { WebContext } from '../app.js';

export function registerPortalRoutes(app: FastifyInstance, web: WebContext): void {
  app.get('/', { preHandler: web.requireLogin }, async (_request, reply) => {
    const [microsoft, google] = await Promise.all([web.oauth.status('microsoft'), web.oauth.status('google')]);
    return reply.render('portal', { title: 'Remote UI', accounts: [microsoft, google] });
  });

  app.get('/settings', { preHandler: web.requireLogin }, async (_request, reply) => {
    return reply.render('settings', { title: 'Settings/Registration' });
  });

  app.get('/settings/send', { preHandler: web.requireLogin }, async (_request, reply) => {
    return reply.render('send', { title: 'Send' });
  });

  app.get('/settings/audit', { preHandler: web.requireLogin }, async (_request, reply) => {
    return reply.render('audit', { title: 'Audit Log', entries: await web.audit.recent(200) });
  });
}
