/**
 * OAuth 2.0 (Google) Settings (seed, Google steps 3–13): the status page, Edit Basic Settings, Register
 * Information for Authorization, and the loopback redirect URI that completes by itself when the admin's
 * browser runs on Postern's host. The same screens for every Google account: the seed's at the seed's
 * address, each added one below it under its id; the one redirect URI serves them all, the attempt's `state`
 * saying which account it completes.
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { AuthorizationRejected, GOOGLE_CALLBACK_PATH } from '../../oauth/google.js';
import { GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT, GOOGLE_DEFAULT_TOKEN_ENDPOINT } from '../../oauth/profiles.js';
import { canChangeSendSettings } from '../../store/users.js';
import type { WebPluginOptions } from '../context.js';
import { button, checkbox, formBody, none, text, URL_MAX } from '../form.js';
import { accountSection, accountStatusRoutes, GOOGLE_PATH, hiddenFields, oauthPathOf, resolveAccount, type ResolvedAccount } from './oauth-account.js';
import type { MessageKey } from '../i18n/index.js';

const editForm = formBody({
  enabled: checkbox(),
  verifyServerCertificate: checkbox(),
  addCnToVerificationItems: checkbox(),
  clientId: text(),
  clientSecret: text(),
  authorizationEndpoint: text(URL_MAX),
  tokenEndpoint: text(URL_MAX),
  cancel: button(),
  confirmDiscard: button(),
  back: button(),
});

/** The authorization code, or the whole address of the redirect, pasted. */
const registerForm = formBody({ code: text(URL_MAX), cancel: button() });

export const googleRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  const redirectUri = () => `http://127.0.0.1:${web.httpPort()}${GOOGLE_CALLBACK_PATH}`;

  const registerPage = async (request: FastifyRequest, account: ResolvedAccount, extra: { error?: string; advice?: string; code?: string; fresh?: boolean } = {}) => {
    const status = await web.oauth.status(account.id);
    const now = Date.now();
    let pending = request.session.googleAuthorization;
    // The session's pending URL is one account's: another account's screen starts its own.
    if (extra.fresh || !pending || pending.expiresAt <= now || (pending.accountId ?? 'google') !== account.id) {
      pending = undefined;
      if (status.settings.clientId && status.settings.hasClientSecret) {
        pending = { ...(await web.oauth.googleFor(account.id).beginAuthorization(request.session.sessionId, redirectUri())), accountId: account.id };
        request.session.googleAuthorization = pending;
      }
    }
    const remaining = pending ? Math.max(0, Math.floor((pending.expiresAt - now) / 1000)) : 0;
    return {
      title: request.t('oauth.registerTitle'),
      base: account.base,
      accountName: account.row.name,
      status,
      now,
      authorizationUrl: pending?.url,
      expiresAt: pending?.expiresAt,
      remaining: `${String(Math.floor(remaining / 60)).padStart(2, '0')}:${String(remaining % 60).padStart(2, '0')}`,
      redirectUri: redirectUri(),
      code: extra.code ?? '',
      error: extra.error,
      advice: extra.advice,
    };
  };

  await app.register(googleAccountRoutes, { web, route: GOOGLE_PATH, redirectUri, registerPage });
  await app.register(googleAccountRoutes, { web, route: `${GOOGLE_PATH}/:account`, redirectUri, registerPage });


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
        title: request.t('oauth.registerTitle'),
        nav: Boolean(request.user),
        pastedUrl: url,
        error: request.user
          ? request.t('oauth.callbackNotAllowed')
          : plainBesideHttps
            ? request.t('oauth.callbackPlainHttp')
            : request.t('oauth.callbackLogIn'),
      });
    }
    // The attempt says which account it was started for; without one, the seed's account refuses it as its own.
    const query = request.url.indexOf('?');
    const state = query < 0 ? null : new URLSearchParams(request.url.slice(query + 1)).get('state');
    const accountId = (state ? await web.oauth.accountOfAttempt(state) : undefined) ?? 'google';
    const row = await web.accounts.get(accountId);
    const account: ResolvedAccount | undefined = row && row.provider === 'google' ? { id: row.id, row, base: oauthPathOf(row.id, row.provider) } : undefined;
    if (!account) return reply.render('error', { title: request.t('error.notFound'), message: request.t('account.notFound') }, 404);
    try {
      const { mailbox } = await web.oauth.googleFor(account.id).completeAuthorization(request.session.sessionId, url, request.user.username);
      request.session.googleAuthorization = undefined;
      web.setFlash(request, { type: 'success', text: mailbox ? request.t('oauth.registeredFor', { mailbox }) : request.t('oauth.registered') });
      return reply.redirect(account.base, 303);
    } catch (error) {
      if (!(error instanceof AuthorizationRejected)) throw error;
      if (plainBesideHttps) {
        return reply.render(
          'oauth-google-callback',
          { title: request.t('oauth.registerTitle'), nav: false, pastedUrl: url, error: [error.message, error.advice].filter(Boolean).join(' ') },
          400,
        );
      }
      const data = await registerPage(request, account, { error: error.message, advice: error.advice, fresh: true });
      return reply.render('oauth-google-register', data, 400);
    }
  });
};

type RegisterPage = (request: FastifyRequest, account: ResolvedAccount, extra?: { error?: string; advice?: string; code?: string; fresh?: boolean }) => Promise<Record<string, unknown>>;

/** The screens of one Google account, at `route` (the seed's path, or one with `:account`). */
const googleAccountRoutes: FastifyPluginAsyncZod<WebPluginOptions & { route: string; redirectUri: () => string; registerPage: RegisterPage }> = async (
  app,
  { web, route, redirectUri, registerPage },
) => {
  app.get(route, { preValidation: web.requireLogin, schema: { querystring: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'google');
    if (!account) return reply;
    const status = await web.oauth.status(account.id);
    return reply.render('oauth-google', { title: 'OAuth 2.0 (Google) Settings', status, base: account.base, account: accountSection(account), now: Date.now(), redirectUri: redirectUri() });
  });

  await app.register(accountStatusRoutes, { web, provider: 'google', route });

  app.get(`${route}/edit`, { preValidation: web.requireSendSettings, schema: { querystring: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'google');
    if (!account) return reply;
    const base = account.base;
    const status = await web.oauth.status(account.id);
    return reply.render('oauth-google-edit', {
      title: request.t('oauth.editBasicSettings'),
      base: base,
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
      accountName: account.row.name,
    });
  });

  app.post(`${route}/edit`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: editForm } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'google');
    if (!account) return reply;
    const base = account.base;
    const accountName = account.row.name;
    const google = web.oauth.googleFor(account.id);
    if (request.body.cancel) return reply.redirect(base, 303);
    const form = {
      enabled: request.body.enabled,
      verifyServerCertificate: request.body.verifyServerCertificate,
      addCnToVerificationItems: request.body.addCnToVerificationItems,
      clientId: request.body.clientId,
      clientSecret: request.body.clientSecret,
      authorizationEndpoint: request.body.authorizationEndpoint,
      tokenEndpoint: request.body.tokenEndpoint,
    };
    const editAgain = async (errors: Record<string, string | undefined>, status = 400) => {
      const current = await web.oauth.status(account.id);
      return reply.render(
        'oauth-google-edit',
        { title: request.t('oauth.editBasicSettings'), base: base, form: { ...form, clientSecret: '' }, hasClientSecret: current.settings.hasClientSecret, errors, redirectUri: redirectUri(), accountName },
        status,
      );
    };
    if (request.body.back) return editAgain({}, 200);
    // Google's refresh tokens belong to the OAuth client: a new client, secret or endpoint discards them. Ask
    // first, and say what changes.
    if (!request.body.confirmDiscard && (await google.wouldForgetAuthorization(form))) {
      const status = await web.oauth.status(account.id);
      const changes: string[] = [];
      const field = (key: MessageKey, from: string, to: string) => changes.push(request.t('confirm.changed', { field: request.t(key), from, to }));
      if (form.clientId.trim() !== (status.settings.clientId ?? '')) field('oauth.googleClientId', status.settings.clientId ?? '', form.clientId.trim());
      const authorizationEndpoint = new URL(form.authorizationEndpoint.trim() || GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT).href;
      const tokenEndpoint = new URL(form.tokenEndpoint.trim() || GOOGLE_DEFAULT_TOKEN_ENDPOINT).href;
      const storedAuthorization = status.settings.authorizationEndpoint ?? GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT;
      const storedToken = status.settings.tokenEndpoint ?? GOOGLE_DEFAULT_TOKEN_ENDPOINT;
      if (authorizationEndpoint !== storedAuthorization) field('oauth.authorizationEndpoint', storedAuthorization, authorizationEndpoint);
      if (tokenEndpoint !== storedToken) field('oauth.tokenEndpoint', storedToken, tokenEndpoint);
      if (changes.length === 0) changes.push(request.t('confirm.newSecret'));
      return reply.render('oauth-confirm-discard', {
        title: request.t('confirm.title'),
        providerTitle: 'OAuth 2.0 (Google) Settings',
        accountName,
        base,
        mailbox: status.token.mailbox,
        changes,
        hidden: hiddenFields(form),
      });
    }
    const result = await google.saveSettings(form, request.user!.username);
    if (!result.ok) {
      const status = await web.oauth.status(account.id);
      return reply.render(
        'oauth-google-edit',
        {
          title: request.t('oauth.editBasicSettings'),
          base: base,
          form: { ...form, clientSecret: '' },
          hasClientSecret: status.settings.hasClientSecret,
          errors: result.errors,
          redirectUri: redirectUri(),
          accountName,
        },
        400,
      );
    }
    request.session.googleAuthorization = undefined;
    web.setFlash(request, {
      type: 'success',
      text: form.enabled
        ? request.t(result.identityChanged ? 'oauth.savedGoogleRegister' : 'oauth.savedGoogle')
        : request.t('oauth.savedNotInUse', { provider: 'OAuth 2.0 (Google)' }),
    });
    return reply.redirect(base, 303);
  });

  app.get(`${route}/register`, { preValidation: web.requireSendSettings, schema: { querystring: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'google');
    if (!account) return reply;
    const data = await registerPage(request, account, { fresh: true });
    return reply.render('oauth-google-register', data);
  });

  app.post(`${route}/register`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: registerForm } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'google');
    if (!account) return reply;
    const base = account.base;
    if (request.body.cancel) {
      request.session.googleAuthorization = undefined;
      return reply.redirect(base, 303);
    }
    const { code } = request.body;
    try {
      const { mailbox } = await web.oauth.googleFor(account.id).completeAuthorization(request.session.sessionId, code, request.user!.username);
      request.session.googleAuthorization = undefined;
      web.setFlash(request, { type: 'success', text: mailbox ? request.t('oauth.registeredFor', { mailbox }) : request.t('oauth.registered') });
      return reply.redirect(base, 303);
    } catch (error) {
      if (!(error instanceof AuthorizationRejected)) throw error;
      // A consumed attempt cannot be used again: offer a fresh URL. Otherwise keep the current one, so a
      // mistyped paste can be corrected without signing in again.
      const consumed = error.reason !== 'invalid' && error.reason !== 'state-mismatch' && error.reason !== 'no-attempt';
      const data = await registerPage(request, account, { error: error.message, advice: error.advice, code: consumed ? '' : code, fresh: consumed });
      return reply.render('oauth-google-register', data, 400);
    }
  });
};
