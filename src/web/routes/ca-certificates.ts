/** CA Certificate Settings: register and remove PEM CA certificates that Verify Server Certificate trusts. */
import type { FastifyInstance } from 'fastify';
import { text, type WebContext } from '../app.js';

const BASE = '/settings/send/ca-certificates';

export function registerCaCertificateRoutes(app: FastifyInstance, web: WebContext): void {
  app.get(BASE, { preHandler: web.requireLogin }, async (_request, reply) => {
    return reply.render('ca-certificates', { title: 'CA Certificate Settings', certificates: await web.caCertificates.list(), pem: '', base: BASE });
  });

  app.post(`${BASE}/add`, { preHandler: [web.requireSendSettings, app.csrfProtection] }, async (request, reply) => {
    const pem = text((request.body ?? {}) as Record<string, unknown>, 'pem');
    try {
      const { added, duplicates } = await web.caCertificates.add(pem);
      for (const cert of added) await web.audit.record(request.user!.username, 'ca.added', `${cert.subject} ${cert.fingerprint256}`);
      web.setFlash(request, {
        type: 'success',
        text:
          added.length > 0
            ? `Registered ${added.map((c) => c.subject).join('; ')}.${duplicates ? ` ${duplicates} already registered.` : ''} Connections trust it from now on.`
            : 'That certificate is already registered.',
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
        { title: 'CA Certificate Settings', certificates: await web.caCertificates.list(), pem, error: (error as Error).message, base: BASE },
        400,
      );
    }
  });

  app.post(`${BASE}/:id/remove`, { preHandler: [web.requireSendSettings, app.csrfProtection] }, async (request, reply) => {
    const { id } = request.params as { id: string };
    const removed = await web.caCertificates.remove(id);
    if (removed) {
      await web.audit.record(request.user!.username, 'ca.removed', `${removed.subject} ${removed.fingerprint256}`);
      web.setFlash(request, { type: 'success', text: `Removed ${removed.subject}.` });
    } else {
      web.setFlash(request, { type: 'error', text: 'That certificate was already removed.' });
    }
    return reply.redirect(BASE, 303);
  });
}
