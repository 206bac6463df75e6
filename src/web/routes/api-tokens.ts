/**
 * API Tokens (Settings/Registration > Management, Administrator only): the bearer tokens of the JSON API
 * (src/api). Create (name, scope, expiry in days) shows the token once, on the answer to the form itself,
 * never through the session; Revoke ends a token at once. Both are audited.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { API_SCOPES, DEFAULT_EXPIRY_DAYS, MAX_EXPIRY_DAYS, type ApiTokenErrors, type ApiTokenInput, type ApiTokens } from '../../api/tokens.js';
import type { AuditLog } from '../../store/audit.js';
import type { ApiScope } from '../../store/schema.js';
import { canManageUsers } from '../../store/users.js';
import type { WebContext } from '../context.js';
import { formBody, idParams, none, text } from '../form.js';
import type { MessageKey } from '../i18n/index.js';

export const API_TOKENS_PATH = '/settings/api-tokens';

/** Each scope's words: in full (the form) and short (the list). */
const SCOPE_KEYS: Record<ApiScope, [MessageKey, MessageKey]> = {
  read: ['api.s.read', 'api.s.readShort'],
  operate: ['api.s.operate', 'api.s.operateShort'],
  administer: ['api.s.administer', 'api.s.administerShort'],
};

export interface ApiTokensPageOptions {
  web: WebContext;
  tokens: ApiTokens;
  audit: AuditLog;
}

const day = (ms: number | null) => (ms ? new Date(ms).toISOString().slice(0, 10) : '');
const minute = (ms: number | null) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : '');


export const apiTokensPage: FastifyPluginAsyncZod<ApiTokensPageOptions> = async (app, { web, tokens, audit }) => {
  web.managementMenu.push({ href: API_TOKENS_PATH, label: 'API Tokens', labelKey: 'menu.apiTokens' });

  const requireAdministrator = async (request: FastifyRequest, reply: FastifyReply) => {
    await web.requireLogin(request, reply);
    if (reply.sent) return reply;
    if (!canManageUsers(request.user!.role)) return reply.render('error', { title: request.t('error.notAllowed'), message: request.t('api.notAllowed') }, 403);
  };

  const page = async (request: FastifyRequest, extra: { form?: ApiTokenInput; errors?: ApiTokenErrors; created?: { name: string; secret: string } } = {}) => ({
    title: request.t('menu.apiTokens'),
    base: API_TOKENS_PATH,
    tokens: await tokens.list(),
    scopes: API_SCOPES.map((value) => ({ value, label: request.t(SCOPE_KEYS[value][0]) })),
    scopeShort: (scope: ApiScope) => request.t(SCOPE_KEYS[scope][1]),
    form: extra.form ?? { name: '', scope: 'read', expiresInDays: String(DEFAULT_EXPIRY_DAYS) },
    errors: extra.errors ?? {},
    created: extra.created,
    maxDays: MAX_EXPIRY_DAYS,
    day,
    minute,
  });

  app.get(API_TOKENS_PATH, { preValidation: requireAdministrator, schema: { querystring: none } }, async (request, reply) =>
    reply.render('api-tokens', await page(request)),
  );

  app.post(
    API_TOKENS_PATH,
    {
      preValidation: [requireAdministrator, app.csrfProtection],
      schema: { body: formBody({ name: text(), scope: text(), expiresInDays: text() }) },
    },
    async (request, reply) => {
      const form: ApiTokenInput = { name: request.body.name, scope: request.body.scope, expiresInDays: request.body.expiresInDays };
      const result = await tokens.validate(form);
      if (!result.ok) return reply.render('api-tokens', await page(request, { form, errors: result.errors }), 400);
      const actor = request.user!.username;
      const { token, secret } = await tokens.create({ ...result.value, createdBy: actor });
      await audit.record(actor, 'api-token.created', `${token.name} (${token.scope}, ${token.prefix}…, expires ${day(token.expiresAt)})`);
      return reply.render('api-tokens', await page(request, { created: { name: token.name, secret } }));
    },
  );

  app.post(
    `${API_TOKENS_PATH}/:id/revoke`,
    {
      preValidation: [requireAdministrator, app.csrfProtection],
      schema: { params: idParams, body: none },
    },
    async (request, reply) => {
      const actor = request.user!.username;
      const revoked = await tokens.revoke(request.params.id, actor);
      if (revoked) {
        await audit.record(actor, 'api-token.revoked', `${revoked.name} (${revoked.scope}, ${revoked.prefix}…)`);
        web.setFlash(request, { type: 'success', text: request.t('api.revoked', { name: revoked.name }) });
      } else {
        web.setFlash(request, { type: 'error', text: request.t('api.alreadyRevoked') });
      }
      return reply.redirect(API_TOKENS_PATH, 303);
    },
  );
};
