/** CA Certificate Settings: register and remove PEM CA certificates that Verify Server Certificate trusts. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { WebPluginOptions } from '../context.js';
import { formBody, idParams, none, PEM_MAX, text } from '../form.js';

const BASE = '/settings/send/ca-certificates';

export const caCertificateRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  app.get(BASE, { preValidation: web.requireLogin, schema: { querystring: none } }, async (request, reply) => {
    return reply.render('ca-certificates', { title: request.t('menu.caCertificates'), certificates: await web.caCertificates.list(), pem: '', base: BASE });
  });

  app.post(`${BASE}/add`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: formBody({ pem: text(PEM_MAX) }) } }, async (request, reply) => {
    const { pem } = request.body;
    try {
      const { added, duplicates } = await web.caCertificates.add(pem);
      for (const cert of added) await web.audit.record(request.user!.username, 'ca.added', `${cert.subject} ${cert.fingerprint256}`);
      web.setFlash(request, {
        type: 'success',
        text:
          added.length > 0
            ? request.t('ca.registered', { subjects: added.map((c) => c.subject).join('; '), duplicates: duplicates ? request.t('ca.duplicates', { count: duplicates }) : '' })
            : request.t('ca.alreadyRegistered'),
      });
      // Connection statuses may change with the new trust: check again.
      for (const id of ['microsoft', 'google'] as const) {
        const status = await web.oauth.status(id);
        if (status.enabled) await web.oauth.recheckConnection(id);
      }
      return reply.redirect(BASE, 303);
    } catch (error) {
      if ((error as { code?: unknown } | undefined)?.code !== 'POSTERN_TLS_CERTIFICATE_INVALID') throw error;
      return reply.render(
        'ca-certificates',
        { title: request.t('menu.caCertificates'), certificates: await web.caCertificates.list(), pem, error: (error as Error).message, base: BASE },
        400,
      );
    }
  });

  app.post(`${BASE}/:id/remove`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: idParams, body: none } }, async (request, reply) => {
    const { id } = request.params;
    const removed = await web.caCertificates.remove(id);
    if (removed) {
      await web.audit.record(request.user!.username, 'ca.removed', `${removed.subject} ${removed.fingerprint256}`);
      web.setFlash(request, { type: 'success', text: request.t('ca.removed', { subject: removed.subject }) });
    } else {
      web.setFlash(request, { type: 'error', text: request.t('ca.alreadyRemoved') });
    }
    return reply.redirect(BASE, 303);
  });
};
