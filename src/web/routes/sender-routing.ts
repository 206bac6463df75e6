/**
 * Sender Routing (Settings/Registration > Send): rules that send mail from an address, or from anyone at a
 * domain, through a chosen sending account. They come first in the order smtp-in/routing.ts applies: the
 * sender's exact address, then its domain, then the device account's Sending Account, then the Allowed
 * Networks entry's, then the Default.
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { OAuthAccounts } from '../../oauth/accounts.js';
import { parseSenderPattern, type SendingRoutes } from '../../smtp-in/routing.js';
import type { AuditLog } from '../../store/audit.js';
import type { WebPluginOptions } from '../context.js';
import { formBody, idParams, none, text } from '../form.js';
import { ACCOUNTS_PATH, displayNameOf, oauthPathOf } from './oauth-account.js';
import { accountChoices, orderedAccounts } from './sending-accounts.js';

export const SENDER_ROUTING_PATH = '/settings/send/sender-routing';

export interface SenderRoutingPageDependencies {
  routes: Pick<SendingRoutes, 'senderRoutes' | 'setSenderRoute' | 'removeSenderRoute'>;
  accounts: Pick<OAuthAccounts, 'listByProvider' | 'get'>;
  audit: Pick<AuditLog, 'record'>;
}

export const senderRoutingRoutes: FastifyPluginAsyncZod<WebPluginOptions & { deps: SenderRoutingPageDependencies }> = async (app, { web, deps }) => {
  const at = web.sendMenu.findIndex((item) => item.href === ACCOUNTS_PATH);
  web.sendMenu.splice(at + 1, 0, { href: SENDER_ROUTING_PATH, label: 'Sender Routing', labelKey: 'menu.senderRouting' });

  const page = async (request: FastifyRequest, form = { pattern: '', accountId: '' }, errors: Record<string, string> = {}) => {
    const rows = await orderedAccounts(deps.accounts);
    const byId = new Map(rows.map((row) => [row.id, row]));
    const rules = (await deps.routes.senderRoutes()).map((rule) => {
      const row = byId.get(rule.accountId);
      return { ...rule, account: row ? displayNameOf(row, request.t) : rule.accountId, accountPath: row ? oauthPathOf(row.id, row.provider) : undefined };
    });
    return { title: request.t('menu.senderRouting'), base: SENDER_ROUTING_PATH, rules, choices: accountChoices(rows, request.t, false), form, errors };
  };

  app.get(SENDER_ROUTING_PATH, { preValidation: web.requireLogin, schema: { querystring: none } }, async (request, reply) => reply.render('sender-routing', await page(request)));

  app.post(SENDER_ROUTING_PATH, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: formBody({ pattern: text(), accountId: text() }) } }, async (request, reply) => {
    const { pattern, accountId } = request.body;
    const errors: Record<string, string> = {};
    const parsed = parseSenderPattern(pattern);
    if (!parsed.ok) errors.pattern = parsed.error;
    const account = accountId === '' ? undefined : await deps.accounts.get(accountId);
    if (!account) errors.accountId = request.t('account.unknownChoice');
    const form = { pattern: pattern.slice(0, 300), accountId: account ? account.id : '' };
    if (!parsed.ok || !account) return reply.render('sender-routing', await page(request, form, errors), 400);
    try {
      await deps.routes.setSenderRoute(parsed.pattern, account.id);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      return reply.render('sender-routing', await page(request, form, { pattern: error.message }), 400);
    }
    await deps.audit.record(request.user!.username, 'sender-route.saved', `${parsed.pattern} → ${account.id}`);
    web.setFlash(request, { type: 'success', text: request.t('routing.saved', { pattern: parsed.pattern, name: displayNameOf(account, request.t) }) });
    return reply.redirect(SENDER_ROUTING_PATH, 303);
  });

  app.post(`${SENDER_ROUTING_PATH}/:id/remove`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: idParams, body: none } }, async (request, reply) => {
    const removed = await deps.routes.removeSenderRoute(request.params.id);
    if (removed) {
      await deps.audit.record(request.user!.username, 'sender-route.removed', `${removed.pattern} → ${removed.accountId}`);
      web.setFlash(request, { type: 'success', text: request.t('routing.removed', { pattern: removed.pattern }) });
    } else {
      web.setFlash(request, { type: 'error', text: request.t('routing.alreadyRemoved') });
    }
    return reply.redirect(SENDER_ROUTING_PATH, 303);
  });
};
