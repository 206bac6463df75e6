/**
 * What every sending account's OAuth settings screen shares, whichever provider: where its screens are, the
 * account a request names, the status fragment the page re-fetches, Delete Token, and the account's own
 * settings below the seed's (Name, Delivery Method).
 *
 * The seed's two accounts keep the seed's addresses (/settings/send/oauth-microsoft, …/oauth-google); an
 * account added later has the same screens one level down, under its id (/settings/send/oauth-microsoft/<id>).
 * What is the account's own beyond the seed's screens (Name, Delivery Method, its E-Mail Settings) is under
 * /settings/send/accounts/<id> for every account.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { AccountRow } from '../../oauth/accounts.js';
import type { DeliveryMethod, ProviderId, TokenStatus } from '../../store/schema.js';
import type { WebContext, WebPluginOptions } from '../context.js';
import { checkbox, formBody, none, text } from '../form.js';
import type { Translate } from '../i18n/index.js';

export const ACCOUNTS_PATH = '/settings/send/accounts';
export const MICROSOFT_PATH = '/settings/send/oauth-microsoft';
export const GOOGLE_PATH = '/settings/send/oauth-google';
/** The route of an account's own settings. */
export const ACCOUNT_ROUTE = `${ACCOUNTS_PATH}/:account`;

/** Account ids as OAuthAccounts makes them: the provider's name, then `-` and ten hex digits for later ones. */
export const ACCOUNT_ID = /^(?:microsoft|google)(?:-[0-9a-f]{10})?$/;
export const NAME_MAX = 64;

/** The seed's two accounts (they cannot be removed: their Use is turned off instead). */
export function isSeedAccount(id: string): boolean {
  return id === 'microsoft' || id === 'google';
}

/** Where an account's OAuth settings screen is. */
export function oauthPathOf(id: string, provider: ProviderId): string {
  const seedPath = provider === 'microsoft' ? MICROSOFT_PATH : GOOGLE_PATH;
  return id === provider ? seedPath : `${seedPath}/${id}`;
}

/** Where an account's own settings (Name, Delivery Method, its E-Mail Settings) are posted. */
export function accountPathOf(id: string): string {
  return `${ACCOUNTS_PATH}/${id}`;
}

/** How a page names an account: its name, or for a seed account without one, its screen's title. */
export function displayNameOf(row: Pick<AccountRow, 'provider' | 'name'>, t: Translate): string {
  return row.name || t(row.provider === 'microsoft' ? 'menu.oauthMicrosoft' : 'menu.oauthGoogle');
}

/**
 * A sending account's name: 1 to 64 printable characters (no control or format characters, no line breaks),
 * without spaces around it. Returns the name, or why it is not one.
 */
export function validateAccountName(input: string): { ok: true; name: string } | { ok: false; error: string } {
  const name = input.trim();
  if (name === '') return { ok: false, error: 'Enter a name for the sending account (1 to 64 characters).' };
  if ([...name].length > NAME_MAX) return { ok: false, error: `A name has at most ${NAME_MAX} characters.` };
  if (/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}\p{Cn}]/u.test(name)) return { ok: false, error: 'A name must not contain control characters or line breaks.' };
  return { ok: true, name };
}

/** Token Status values under which a refresh token is held: a change of client would discard it. */
export function holdsAuthorization(status: TokenStatus): boolean {
  return status === 'Active' || status === 'Error';
}

/** Edit Basic Settings' typed values as the confirmation page's hidden fields (check boxes only when on). */
export function hiddenFields(form: Record<string, string | boolean>): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const [name, value] of Object.entries(form)) {
    if (value === true) fields[name] = 'on';
    else if (typeof value === 'string') fields[name] = value;
  }
  return fields;
}

export interface ResolvedAccount {
  id: string;
  row: AccountRow;
  /** Its OAuth settings screen. */
  base: string;
}

/**
 * The account a request is for: the seed's for a seed address, else the `:account` in the address, which
 * must name an existing account of `provider`. Undefined (and a Not Found page sent) otherwise.
 */
export async function resolveAccount(web: WebContext, request: FastifyRequest, reply: FastifyReply, provider?: ProviderId): Promise<ResolvedAccount | undefined> {
  const param = (request.params as { account?: unknown } | undefined)?.account;
  const id = param === undefined ? provider : param;
  const row = typeof id === 'string' && ACCOUNT_ID.test(id) ? await web.accounts.get(id) : undefined;
  if (!row || (provider && row.provider !== provider)) {
    await reply.render('error', { title: request.t('error.notFound'), message: request.t('account.notFound') }, 404);
    return undefined;
  }
  return { id: row.id, row, base: oauthPathOf(row.id, row.provider) };
}

/** What the account section of an OAuth settings screen shows (partials/account-settings.eta). */
export function accountSection(account: ResolvedAccount) {
  return {
    id: account.id,
    name: account.row.name,
    provider: account.row.provider,
    path: accountPathOf(account.id),
    deliveryMethod: account.row.delivery_method,
    graphLargeMessages: account.row.graph_large_messages === 1,
    seed: isSeedAccount(account.id),
  };
}

export interface AccountStatusOptions extends WebPluginOptions {
  provider: ProviderId;
  /** The route of the settings screen (the seed's path, or that path with `/:account`); the routes are below it. */
  route: string;
}

export const accountStatusRoutes: FastifyPluginAsyncZod<AccountStatusOptions> = async (app, { web, provider, route }) => {
  app.get(`${route}/status`, { preValidation: web.requireLogin, schema: { querystring: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, provider);
    if (!account) return reply;
    const status = await web.oauth.status(account.id);
    return reply.render('partials/oauth-status', { status, base: account.base, now: Date.now() });
  });

  app.post(`${route}/token/delete`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, provider);
    if (!account) return reply;
    await web.oauth.deleteToken(account.id, request.user!.username);
    web.setFlash(request, { type: 'success', text: request.t('oauth.tokenDeleted') });
    return reply.redirect(account.base, 303);
  });
};

const accountParams = z.object({ account: z.string({ error: 'is not an account id' }).regex(ACCOUNT_ID, { error: 'is not an account id Postern gave out' }) });
const DELIVERY_METHODS: readonly DeliveryMethod[] = ['smtp', 'graph'];

/** Name and Delivery Method of any account, posted from its OAuth settings screen. */
export const accountSettingsRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  app.get(ACCOUNT_ROUTE, { preValidation: web.requireLogin, schema: { params: accountParams, querystring: none } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply);
    if (!account) return reply;
    return reply.redirect(account.base, 303);
  });

  const nameForm = formBody({ name: text() });
  app.post(`${ACCOUNT_ROUTE}/name`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: accountParams, body: nameForm } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply);
    if (!account) return reply;
    const result = validateAccountName(request.body.name);
    if (!result.ok) return reply.render('error', { title: request.t('error.notAccepted'), message: request.t('account.nameInvalid', { reason: result.error }) }, 400);
    await web.accounts.update(account.id, { name: result.name, updated_at: Date.now() });
    await web.audit.record(request.user!.username, 'sending-account.renamed', `${account.id}: "${account.row.name}" → "${result.name}"`);
    web.setFlash(request, { type: 'success', text: request.t('account.renamed', { name: result.name }) });
    return reply.redirect(account.base, 303);
  });

  const deliveryForm = formBody({ deliveryMethod: text(), graphLargeMessages: checkbox() });
  app.post(`${ACCOUNT_ROUTE}/delivery`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: accountParams, body: deliveryForm } }, async (request, reply) => {
    const account = await resolveAccount(web, request, reply, 'microsoft');
    if (!account) return reply;
    const method = DELIVERY_METHODS.find((m) => m === request.body.deliveryMethod);
    if (!method) return reply.render('error', { title: request.t('error.notAccepted'), message: request.t('account.deliveryInvalid') }, 400);
    await web.oauth.setDeliveryMethod(account.id, method, method === 'graph' && request.body.graphLargeMessages, request.user!.username);
    web.setFlash(request, { type: 'success', text: request.t(method === 'graph' ? 'account.deliveryGraph' : 'account.deliverySmtp') });
    return reply.redirect(account.base, 303);
  });
};
