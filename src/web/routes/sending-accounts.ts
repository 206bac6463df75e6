/**
 * Sending Accounts (Settings/Registration > Send): every account mail can go out through, with its Token
 * Status, Delivery Method, the messages waiting for it and which one is the Default; Add Sending Account,
 * Make Default and Remove.
 *
 * Remove is refused while anything would be left without its account: the Default, a device account, an
 * Allowed Networks entry or a Sender Routing rule naming it (smtp-in/routing.ts `usesOf`), or a message
 * routed to it and not yet delivered or returned (a message is never sent through another account than
 * the one it was routed to). The seed's two accounts are never removed: their Use is turned off instead.
 * The check and the removal are two steps: a route saved between them (another administrator, at the same
 * second) can name an account that is gone, and its messages are then held with the account's error.
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { AccountRow, OAuthAccounts } from '../../oauth/accounts.js';
import type { EmailSettings } from '../../smtp-out/email-settings.js';
import type { SendingRoutes } from '../../smtp-in/routing.js';
import type { AuditLog } from '../../store/audit.js';
import type { ProviderId } from '../../store/schema.js';
import type { WebPluginOptions } from '../context.js';
import { formBody, ignoredWhenInvalid, none, text } from '../form.js';
import type { Translate } from '../i18n/index.js';
import { ACCOUNT_ID, ACCOUNTS_PATH, accountPathOf, displayNameOf, isSeedAccount, oauthPathOf, validateAccountName } from './oauth-account.js';

/** Enough for any office; a bound on what a form (or a script) can make. */
export const MAX_ACCOUNTS = 100;
const PROVIDERS: readonly ProviderId[] = ['microsoft', 'google'];

export interface SendingAccountsPageDependencies {
  accounts: Pick<OAuthAccounts, 'list' | 'listByProvider' | 'get' | 'add' | 'remove'>;
  emailSettings: Pick<EmailSettings, 'sendingAccountId' | 'setDefaultAccount' | 'remove'>;
  routes: Pick<SendingRoutes, 'usesOf'>;
  /** Messages not yet delivered or returned, by account ('' = the Default's). */
  waiting(): Promise<Map<string, number>>;
  audit: Pick<AuditLog, 'record'>;
}

/** Every account, the seed's of each provider first, then in the order they were added. */
export async function orderedAccounts(accounts: Pick<OAuthAccounts, 'listByProvider'>): Promise<AccountRow[]> {
  return [...(await accounts.listByProvider('microsoft')), ...(await accounts.listByProvider('google'))];
}

/** The choices of a select that names an account: the Default first (when `withDefault`), then every account. */
export function accountChoices(rows: AccountRow[], t: Translate, withDefault: boolean): Array<{ value: string; label: string }> {
  const choices = rows.map((row) => ({ value: row.id, label: `${displayNameOf(row, t)} (${providerLabel(row.provider)})` }));
  return withDefault ? [{ value: '', label: t('account.defaultChoice') }, ...choices] : choices;
}

export function providerLabel(provider: ProviderId): string {
  return provider === 'microsoft' ? 'Microsoft' : 'Google';
}

const accountParams = z.object({ account: z.string({ error: 'is not an account id' }).regex(ACCOUNT_ID, { error: 'is not an account id Postern gave out' }) });
const listQuery = z.object({ provider: ignoredWhenInvalid(z.enum(['microsoft', 'google'])) });

export const sendingAccountsRoutes: FastifyPluginAsyncZod<WebPluginOptions & { deps: SendingAccountsPageDependencies }> = async (app, { web, deps }) => {
  const listPage = async (request: FastifyRequest, provider: ProviderId | undefined, refusal?: { name: string; reasons: string[] }) => {
    const t = request.t;
    const [rows, defaultId, waiting] = await Promise.all([orderedAccounts(deps.accounts), deps.emailSettings.sendingAccountId(), deps.waiting()]);
    const accounts = rows
      .filter((row) => !provider || row.provider === provider)
      .map((row) => ({
        id: row.id,
        name: displayNameOf(row, t),
        provider: providerLabel(row.provider),
        mailbox: row.mailbox ?? row.app_mailbox,
        enabled: row.enabled === 1,
        tokenStatus: row.token_status,
        deliveryMethod: row.delivery_method === 'graph' ? t('account.graph') : t('account.smtp'),
        waiting: (waiting.get(row.id) ?? 0) + (row.id === defaultId ? (waiting.get('') ?? 0) : 0),
        isDefault: row.id === defaultId,
        path: oauthPathOf(row.id, row.provider),
        actions: accountPathOf(row.id),
        seed: isSeedAccount(row.id),
      }));
    return { title: t('menu.sendingAccounts'), base: ACCOUNTS_PATH, accounts, provider, providerName: provider ? providerLabel(provider) : undefined, refusal };
  };

  app.get(ACCOUNTS_PATH, { preValidation: web.requireLogin, schema: { querystring: listQuery } }, async (request, reply) =>
    reply.render('sending-accounts', await listPage(request, request.query.provider)),
  );

  // ---- Add Sending Account ---------------------------------------------------------------------------

  const addPage = (request: FastifyRequest, form = { provider: 'microsoft', name: '' }, errors: Record<string, string> = {}) => ({
    title: request.t('account.add'),
    base: ACCOUNTS_PATH,
    form,
    errors,
    providers: PROVIDERS.map((value) => ({ value, label: providerLabel(value) })),
  });

  app.get(`${ACCOUNTS_PATH}/new`, { preValidation: web.requireSendSettings, schema: { querystring: none } }, async (request, reply) => reply.render('sending-account-add', addPage(request)));

  app.post(`${ACCOUNTS_PATH}/new`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: formBody({ provider: text(), name: text() }) } }, async (request, reply) => {
    const { provider, name } = request.body;
    const errors: Record<string, string> = {};
    const chosen = PROVIDERS.find((p) => p === provider);
    if (!chosen) errors.provider = request.t('account.providerInvalid');
    const checked = validateAccountName(name);
    if (!checked.ok) errors.name = checked.error;
    if (Object.keys(errors).length === 0 && (await deps.accounts.list()).length >= MAX_ACCOUNTS) errors.name = request.t('account.tooMany', { max: MAX_ACCOUNTS });
    if (!chosen || !checked.ok || Object.keys(errors).length > 0) {
      return reply.render('sending-account-add', addPage(request, { provider: chosen ?? 'microsoft', name: name.slice(0, 200) }, errors), 400);
    }
    const row = await deps.accounts.add(chosen, checked.name);
    await deps.audit.record(request.user!.username, 'sending-account.added', `${row.id} (${providerLabel(chosen)}) "${checked.name}"`);
    web.setFlash(request, { type: 'success', text: request.t('account.added', { name: checked.name }) });
    return reply.redirect(`${oauthPathOf(row.id, row.provider)}/edit`, 303);
  });

  // ---- Make Default, Remove ----------------------------------------------------------------------------

  app.post(`${ACCOUNTS_PATH}/:account/default`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: accountParams, body: none } }, async (request, reply) => {
    const row = await deps.accounts.get(request.params.account);
    if (!row) return reply.render('error', { title: request.t('error.notFound'), message: request.t('account.notFound') }, 404);
    await deps.emailSettings.setDefaultAccount(row.id);
    const name = displayNameOf(row, request.t);
    await deps.audit.record(request.user!.username, 'sending-account.default', `${row.id} "${row.name}"`);
    web.setFlash(request, { type: 'success', text: request.t('account.madeDefault', { name }) });
    return reply.redirect(ACCOUNTS_PATH, 303);
  });

  app.post(`${ACCOUNTS_PATH}/:account/remove`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: accountParams, body: none } }, async (request, reply) => {
    const t = request.t;
    const row = await deps.accounts.get(request.params.account);
    if (!row) return reply.render('error', { title: t('error.notFound'), message: t('account.notFound') }, 404);
    const name = displayNameOf(row, t);
    const reasons: string[] = [];
    if (isSeedAccount(row.id)) {
      reasons.push(t('account.removeSeed'));
    } else {
      const uses = await deps.routes.usesOf(row.id);
      const defaultId = await deps.emailSettings.sendingAccountId();
      if (uses.isDefault || defaultId === row.id) reasons.push(t('account.removeDefault'));
      const list = (items: string[]) => items.slice(0, 10).join(', ') + (items.length > 10 ? ` (+${items.length - 10})` : '');
      if (uses.devices.length > 0) reasons.push(t('account.removeDevices', { list: list(uses.devices) }));
      if (uses.networks.length > 0) reasons.push(t('account.removeNetworks', { list: list(uses.networks) }));
      if (uses.senderRoutes.length > 0) reasons.push(t('account.removeSenderRoutes', { list: list(uses.senderRoutes) }));
      const waiting = (await deps.waiting()).get(row.id) ?? 0;
      if (waiting > 0) reasons.push(t('account.removeWaiting', { count: waiting }));
    }
    if (reasons.length > 0) return reply.render('sending-accounts', await listPage(request, undefined, { name, reasons }), 409);
    await deps.accounts.remove(row.id);
    await deps.emailSettings.remove(row.id);
    await deps.audit.record(request.user!.username, 'sending-account.removed', `${row.id} (${providerLabel(row.provider)}) "${row.name}"`);
    web.setFlash(request, { type: 'success', text: t('account.removed', { name }) });
    return reply.redirect(ACCOUNTS_PATH, 303);
  });
};
