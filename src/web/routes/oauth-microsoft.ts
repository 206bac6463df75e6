/**
 * OAuth 2.0 (Microsoft) Settings (seed steps 3–13): the status page, Edit Basic Settings, Get New User Code
 * and Delete Token, and the status fragment the page re-fetches to update itself.
 */
import type { FastifyInstance } from 'fastify';
import { MICROSOFT_DEFAULT_ENDPOINT, MICROSOFT_LOGIN_HOSTS } from '../../oauth/profiles.js';
import { checkbox, text, type WebContext } from '../app.js';
import { registerAccountStatusRoutes } from './oauth-account.js';

const BASE = '/settings/send/oauth-microsoft';

export function registerMicrosoftRoutes(app: FastifyInstance, web: WebContext): void {
  app.get(BASE, { preHandler: web.requireLogin }, async (_request, reply) => {
    const status = await web.oauth.status('microsoft');
    return reply.render('oauth-microsoft', { title: 'OAuth 2.0 (Microsoft) Settings', status, base: BASE, now: Date.now() });
  });

  registerAccountStatusRoutes(app, web, 'microsoft', BASE);


  app.get(`${BASE}/edit`, { preHandler: web.requireSendSettings }, async (_request, reply) => {
    const status = await web.oauth.status('microsoft');
    return reply.render('oauth-microsoft-edit', {
      title: 'Edit Basic Settings',
      base: BASE,
      form: {
        enabled: status.enabled,
        verifyServerCertificate: status.settings.verifyServerCertificate,
        addCnToVerificationItems: status.settings.addCnToVerificationItems,
        endpoint: status.settings.endpoint ?? MICROSOFT_DEFAULT_ENDPOINT,
        clientId: status.settings.clientId ?? '',
      },
      errors: {},
      hosts: MICROSOFT_LOGIN_HOSTS,
    });
  });

  app.post(`${BASE}/edit`, { preHandler: [web.requireSendSettings, app.csrfProtection] }, async (request, reply) => {
    const body = (request.body ?? {}) as Record<string, unknown>;
    if (checkbox(body, 'cancel')) return reply.redirect(BASE, 303);
    const form = {
      enabled: checkbox(body, 'enabled'),
      verifyServerCertificate: checkbox(body, 'verifyServerCertificate'),
      addCnToVerificationItems: checkbox(body, 'addCnToVerificationItems'),
      endpoint: text(body, 'endpoint'),
      clientId: text(body, 'clientId'),
    };
    const result = await web.oauth.microsoft.saveSettings(form, request.user!.username);
    if (!result.ok) {
      return reply.render(
        'oauth-microsoft-edit',
        { title: 'Edit Basic Settings', base: BASE, form, errors: result.errors, hosts: MICROSOFT_LOGIN_HOSTS },
        400,
      );
    }
    web.setFlash(request, {
      type: 'success',
      text: form.enabled
        ? 'Settings saved. Postern is checking the connection and requesting a user code; the status below updates by itself.'
        : 'Settings saved. OAuth 2.0 (Microsoft) is not in use.',
    });
    return reply.redirect(BASE, 303);
  });

  app.post(`${BASE}/user-code`, { preHandler: [web.requireSendSettings, app.csrfProtection] }, async (request, reply) => {
    const status = await web.oauth.status('microsoft');
    if (!status.enabled) {
      web.setFlash(request, { type: 'error', text: 'Select Use OAuth 2.0 (Microsoft) under Basic Settings first.' });
      return reply.redirect(BASE, 303);
    }
    await web.oauth.microsoft.requestNewUserCode(request.user!.username);
    web.setFlash(request, { type: 'info', text: 'Requesting a new user code…' });
    return reply.redirect(BASE, 303);
  });

}
