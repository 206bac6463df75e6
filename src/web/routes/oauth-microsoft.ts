/**
 * OAuth 2.0 (Microsoft) Settings (seed steps 3–13): the status page, Edit Basic Settings, Get New User Code
 * and Delete Token, and the status fragment the page re-fetches to update itself. The same screens for every
 * Microsoft account: the seed's at the seed's address, each added one below it under its id.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { MICROSOFT_DEFAULT_ENDPOINT, MICROSOFT_LOGIN_HOSTS, validateMicrosoftClientId, validateMicrosoftEndpoint } from '../../oauth/profiles.js';
import type { WebPluginOptions } from '../context.js';
import { button, checkbox, formBody, none, text, URL_MAX } from '../form.js';
import { accountSection, accountStatusRoutes, hiddenFields, holdsAuthorization, MICROSOFT_PATH, resolveAccount } from './oauth-account.js';

const editForm = formBody({
  enabled: checkbox(),
  verifyServerCertificate: checkbox(),
  addCnToVerificationItems: checkbox(),
  endpoint: text(URL_MAX),
  clientId: text(),
  cancel: button(),
  /** On the confirmation page: save although it discards the authorization. */
  confirmDiscard: button(),
  /** On the confirmation page: back to the form, with what was typed. */
  back: button(),
});

export const microsoftRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  await app.register(microsoftAccountRoutes, { web, route: MICROSOFT_PATH });
  await app.register(microsoftAccountRoutes, { web, route: `${MICROSOFT_PATH}/:account` });
};

/** The screens of one Microsoft account, at `route` (the seed's path, or one with `:account`). */
const microsoftAccountRoutes: FastifyPluginAsyncZod<WebPluginOptions & { route: string }> = async (app, { web, route }) => {
  app.get(route, { preValidation: web.requireLogin, schema: { querystring: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'microsoft');
    if (!account) return reply;
    const status = await web.oauth.status(account.id);
    return reply.render('oauth-microsoft', { title: 'OAuth 2.0 (Microsoft) Settings', status, base: account.base, account: accountSection(account), now: Date.now() });
  });

  await app.register(accountStatusRoutes, { web, provider: 'microsoft', route });


  app.get(`${route}/edit`, { preValidation: web.requireSendSettings, schema: { querystring: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'microsoft');
    if (!account) return reply;
    const base = account.base;
    const status = await web.oauth.status(account.id);
    return reply.render('oauth-microsoft-edit', {
      title: request.t('oauth.editBasicSettings'),
      base: base,
      form: {
        enabled: status.enabled,
        verifyServerCertificate: status.settings.verifyServerCertificate,
        addCnToVerificationItems: status.settings.addCnToVerificationItems,
        endpoint: status.settings.endpoint ?? MICROSOFT_DEFAULT_ENDPOINT,
        clientId: status.settings.clientId ?? '',
      },
      errors: {},
      hosts: MICROSOFT_LOGIN_HOSTS,
      accountName: account.row.name,
    });
  });

  app.post(`${route}/edit`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: editForm } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'microsoft');
    if (!account) return reply;
    const base = account.base;
    const accountName = account.row.name;
    if (request.body.cancel) return reply.redirect(base, 303);
    const form = {
      enabled: request.body.enabled,
      verifyServerCertificate: request.body.verifyServerCertificate,
      addCnToVerificationItems: request.body.addCnToVerificationItems,
      endpoint: request.body.endpoint,
      clientId: request.body.clientId,
    };
    if (request.body.back) {
      return reply.render('oauth-microsoft-edit', { title: request.t('oauth.editBasicSettings'), base: base, form, errors: {}, hosts: MICROSOFT_LOGIN_HOSTS, accountName });
    }
    if (!request.body.confirmDiscard) {
      // A new endpoint or client forgets the tokens (they belong to the client): ask first, and say so.
      const status = await web.oauth.status(account.id);
      const endpoint = validateMicrosoftEndpoint(form.endpoint);
      const clientId = validateMicrosoftClientId(form.clientId);
      if (holdsAuthorization(status.token.status) && endpoint.ok && clientId.ok) {
        const changes: string[] = [];
        if (endpoint.value.endpoint !== (status.settings.endpoint ?? MICROSOFT_DEFAULT_ENDPOINT)) {
          changes.push(request.t('confirm.changed', { field: request.t('oauth.microsoftEndpoint'), from: status.settings.endpoint ?? '', to: endpoint.value.endpoint }));
        }
        if (clientId.value !== status.settings.clientId) {
          changes.push(request.t('confirm.changed', { field: request.t('oauth.microsoftClientId'), from: status.settings.clientId ?? '', to: clientId.value }));
        }
        if (changes.length > 0) {
          return reply.render('oauth-confirm-discard', {
            title: request.t('confirm.title'),
            providerTitle: 'OAuth 2.0 (Microsoft) Settings',
            accountName,
            base: base,
            mailbox: status.token.mailbox,
            changes,
            hidden: hiddenFields(form),
          });
        }
      }
    }
    const result = await web.oauth.microsoftFor(account.id).saveSettings(form, request.user!.username);
    if (!result.ok) {
      return reply.render(
        'oauth-microsoft-edit',
        { title: request.t('oauth.editBasicSettings'), base: base, form, errors: result.errors, hosts: MICROSOFT_LOGIN_HOSTS, accountName },
        400,
      );
    }
    web.setFlash(request, {
      type: 'success',
      text: form.enabled ? request.t('oauth.savedMicrosoft') : request.t('oauth.savedNotInUse', { provider: 'OAuth 2.0 (Microsoft)' }),
    });
    return reply.redirect(base, 303);
  });

  app.post(`${route}/user-code`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'microsoft');
    if (!account) return reply;
    const base = account.base;
    const status = await web.oauth.status(account.id);
    if (!status.enabled) {
      web.setFlash(request, { type: 'error', text: request.t('oauth.selectUseFirst') });
      return reply.redirect(base, 303);
    }
    await web.oauth.microsoftFor(account.id).requestNewUserCode(request.user!.username);
    web.setFlash(request, { type: 'info', text: request.t('oauth.requestingCode') });
    return reply.redirect(base, 303);
  });

};
