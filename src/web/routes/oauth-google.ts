/**
 * OAuth 2.0 (Google) Settings (seed, Google steps 3–13): the status page, Edit Basic Settings, Register
 * Information for Authorization, and the loopback redirect URI that completes by itself when the admin's
 * browser runs on Postern's host.
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { AuthorizationRejected, GOOGLE_CALLBACK_PATH } from '../../oauth/google.js';
import { GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT, GOOGLE_DEFAULT_TOKEN_ENDPOINT } from '../../oauth/profiles.js';
import { canChangeSendSettings } from '../../store/users.js';
import type { WebPluginOptions } from '../context.js';
import { button, checkbox, formBody, none, text, URL_MAX } from '../form.js';
import { accountStatusRoutes } from './oauth-account.js';

const BASE = '/settings/send/oauth-google';

const editForm = formBody({
  enabled: checkbox(),
  verifyServerCertificate: checkbox(),
  addCnToVerificationItems: checkbox(),
  clientId: text(),
  clientSecret: text(),
  authorizationEndpoint: text(URL_MAX),
  tokenEndpoint: text(URL_MAX),
  cancel: button(),
});

/** The authorization code, or the whole address of the redirect, pasted. */
const registerForm = formBody({ code: text(URL_MAX), cancel: button() });

export const googleRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  const redirectUri = () => `http://127.0.0.1:${web.httpPort()}${GOOGLE_CALLBACK_PATH}`;

  const registerPage = async (request: FastifyRequest, extra: { error?: string; advice?: string; code?: string; fresh?: boolean } = {}) => {
    const status = await web.oauth.status('google');
    const now = Date.now();
    let pending = request.session.googleAuthorization;
    if (extra.fresh || !pending || pending.expiresAt <= now) {
      pending = undefined;
      if (status.settings.clientId && status.settings.hasClientSecret) {
        pending = await web.oauth.google.beginAuthorization(request.session.sessionId, redirectUri());
        request.session.googleAuthorization = pending;
      }
    }
    return {
      title: 'Register Information for Authorization',
      base: BASE,
      status,
      authorizationUrl: pending?.url,
      expiresAt: pending?.expiresAt,
      redirectUri: redirectUri(),
      code: extra.code ?? '',
      error: extra.error,
      advice: extra.advice,
    };
  };

  app.get(BASE, { preValidation: web.requireLogin, schema: { querystring: none } }, async (_request, reply) => {
    const status = await web.oauth.status('google');
    return reply.render('oauth-google', { title: 'OAuth 2.0 (Google) Settings', status, base: BASE, now: Date.now(), redirectUri: redirectUri() });
  });

  await app.register(accountStatusRoutes, { web, provider: 'google', base: BASE });


  app.get(`${BASE}/edit`, { preValidation: web.requireSendSettings, schema: { querystring: none } }, async (_request, reply) => {
    const status = await web.oauth.status('google');
    return reply.render('oauth-google-edit', {
      title: 'Edit Basic Settings',
      base: BASE,
      form: {
        enabled: status.enabled,
        verifyServerCertificate: status.settings.verifyServerCertificate,
        addCnToVerificationItems: status.settings.addCnToVerificationItems,
        clientId: status.settings.clientId ?? '',
        authorizationEndpoint: status.settings.authorizationEndpoint ?? GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT,
        tokenEndpoint: status.settings.tokenEndpoint ?? GOOGLE_DEFAULT_TOKEN_ENDPOINT,
      },
      hasClientSecret: status.settings.hasClientSecret,
      errors: {},
      redirectUri: redirectUri(),
    });
  });

  app.post(`${BASE}/edit`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: editForm } }, async (request, reply) => {
    if (request.body.cancel) return reply.redirect(BASE, 303);
    const form = {
      enabled: request.body.enabled,
      verifyServerCertificate: request.body.verifyServerCertificate,
      addCnToVerificationItems: request.body.addCnToVerificationItems,
      clientId: request.body.clientId,
      clientSecret: request.body.clientSecret,
      authorizationEndpoint: request.body.authorizationEndpoint,
      tokenEndpoint: request.body.tokenEndpoint,
    };
    const result = await web.oauth.google.saveSettings(form, request.user!.username);
    if (!result.ok) {
      const status = await web.oauth.status('google');
      return reply.render(
        'oauth-google-edit',
        {
          title: 'Edit Basic Settings',
          base: BASE,
          form: { ...form, clientSecret: '' },
          hasClientSecret: status.settings.hasClientSecret,
          errors: result.errors,
          redirectUri: redirectUri(),
        },
        400,
      );
    }
    request.session.googleAuthorization = undefined;
    web.setFlash(request, {
      type: 'success',
      text: form.enabled
        ? `Settings saved. Postern is checking the connection.${result.identityChanged ? ' Next, under Information for Authorization, click Register.' : ''}`
        : 'Settings saved. OAuth 2.0 (Google) is not in use.',
    });
    return reply.redirect(BASE, 303);
  });

  app.get(`${BASE}/register`, { preValidation: web.requireSendSettings, schema: { querystring: none } }, async (request, reply) => {
    const data = await registerPage(request, { fresh: true });
    return reply.render('oauth-google-register', data);
  });

  app.post(`${BASE}/register`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: registerForm } }, async (request, reply) => {
    if (request.body.cancel) {
      request.session.googleAuthorization = undefined;
      return reply.redirect(BASE, 303);
    }
    const { code } = request.body;
    try {
      const { mailbox } = await web.oauth.google.completeAuthorization(request.session.sessionId, code, request.user!.username);
      request.session.googleAuthorization = undefined;
      web.setFlash(request, { type: 'success', text: `Authorization registered${mailbox ? ` for ${mailbox}` : ''}. Token Status is Active.` });
      return reply.redirect(BASE, 303);
    } catch (error) {
      if (!(error instanceof AuthorizationRejected)) throw error;
      // A consumed attempt cannot be used again: offer a fresh URL. Otherwise keep the current one, so a
      // mistyped paste can be corrected without signing in again.
      const consumed = error.reason !== 'invalid' && error.reason !== 'state-mismatch' && error.reason !== 'no-attempt';
      const data = await registerPage(request, { error: error.message, advice: error.advice, code: consumed ? '' : code, fresh: consumed });
      return reply.render('oauth-google-register', data, 400);
    }
  });


  // The loopback redirect (http://127.0.0.1:<port>/oauth2/google/callback): reaches Postern only when the
  // admin's browser runs on Postern's host. From anywhere else the browser shows an error page whose
  // address the admin pastes into Authorization Code instead.
  //
  // With the Remote UI on HTTPS this route stays on plain HTTP, where the Secure session cookie is not sent
  // (nor is a cookie of another host name than 127.0.0.1): without a session it shows the address to paste,
  // as from another computer. Where a browser does send the cookie here (some treat 127.0.0.1 as secure),
  // the registration completes, but the session cannot be saved over plain HTTP, so nothing here may rely
  // on that, and no form may be shown that would post over plain HTTP.
  //
  // The query (code, state, iss, or error) is read from the whole address by the authorization response's own
  // checks (RFC 9207, RFC 6749 section 4.1.2), so that a bad one gets the advice of that step; the schema takes
  // no fields of its own.
  app.get(GOOGLE_CALLBACK_PATH, { schema: { querystring: none } }, async (request, reply) => {
    const url = `${redirectUri()}${request.url.slice(GOOGLE_CALLBACK_PATH.length)}`;
    const plainBesideHttps = Boolean(web.httpsPort) && request.protocol !== 'https';
    if (!request.user || !canChangeSendSettings(request.user.role)) {
      return reply.render('oauth-google-callback', {
        title: 'Register Information for Authorization',
        nav: Boolean(request.user),
        pastedUrl: url,
        error: request.user
          ? 'Administrator or Network Administrator privileges are required to register the authorization.'
          : plainBesideHttps
            ? 'This page was reached over plain HTTP, and the Remote UI is served over HTTPS, so your login is not known here. Copy this page\'s address into Authorization Code on the Register Information for Authorization screen.'
            : 'Log in to the Remote UI in this browser, or copy this page\'s address into Authorization Code on the Register Information for Authorization screen.',
      });
    }
    try {
      const { mailbox } = await web.oauth.google.completeAuthorization(request.session.sessionId, url, request.user.username);
      request.session.googleAuthorization = undefined;
      web.setFlash(request, { type: 'success', text: `Authorization registered${mailbox ? ` for ${mailbox}` : ''}. Token Status is Active.` });
      return reply.redirect(BASE, 303);
    } catch (error) {
      if (!(error instanceof AuthorizationRejected)) throw error;
      if (plainBesideHttps) {
        return reply.render(
          'oauth-google-callback',
          { title: 'Register Information for Authorization', nav: false, pastedUrl: url, error: [error.message, error.advice].filter(Boolean).join(' ') },
          400,
        );
      }
      const data = await registerPage(request, { error: error.message, advice: error.advice, fresh: true });
      return reply.render('oauth-google-register', data, 400);
    }
  });
};
