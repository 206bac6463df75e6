/**
 * E-Mail Settings (Settings/Registration > Send): the upstream SMTP server, the sending account, the sender
 * address, the seed's TLS options for the SMTP connection, pacing, and Send Test E-Mail.
 *
 * Each sending account has its own; this page shows the Default account's, and its Sending Account chooses
 * the Default (saving makes the chosen account the Default, as with one account it chose where all mail
 * went). Each account's page links to its own E-Mail Settings (/settings/send/accounts/<id>/email), which
 * leave the Default as it is, and whose Send Test E-Mail goes through that account.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Translate } from '../i18n/index.js';
import type { OAuthService } from '../../oauth/service.js';
import type { AuditLog } from '../../store/audit.js';
import { emailSettingsInputOf, isEmailAddress, PROVIDER_SMTP_DEFAULTS, TLS_MODE_LABELS, type EmailSettings, type EmailSettingsErrors, type EmailSettingsInput, type EmailSettingsView } from '../../smtp-out/email-settings.js';
import type { TestEmailResult } from '../../smtp-out/upstream-transport.js';
import { isProviderHost, relayExtensions, targetKey } from '../../smtp-out/extensions.js';
import type { OAuthAccounts } from '../../oauth/accounts.js';
import { accountLabel } from '../../oauth/profiles.js';
import type { WebPluginOptions } from '../context.js';
import { checkbox, formBody, ignoredWhenInvalid, LIST_MAX, none, text } from '../form.js';
import { ACCOUNT_ID, accountPathOf, oauthPathOf } from './oauth-account.js';
import { accountChoices, orderedAccounts } from './sending-accounts.js';

export const EMAIL_SETTINGS_PATH = '/settings/send/email';

export interface EmailSettingsPageDependencies {
  emailSettings: EmailSettings;
  oauth: OAuthService;
  audit: AuditLog;
  accounts: Pick<OAuthAccounts, 'listByProvider' | 'get'>;
  /** Through `accountId`'s settings and token; absent: the Default account's. */
  sendTestEmail(to: string, actor: string, accountId?: string): Promise<TestEmailResult>;
}


/** "Upstream supports" on the page: what a session last saw, or what the relay assumes until one has. */
function upstreamSupportOf(settings: EmailSettingsView, t: Translate): { supports: string; seenAt?: string; note: string } {
  const seen = settings.upstreamExtensions;
  const advertised = relayExtensions(settings.smtpHost, settings.smtpPort, seen);
  const list = (['8BITMIME', 'SMTPUTF8'] as const).filter((e) => advertised[e]);
  const supports = list.length > 0 ? list.join(', ') : t('email.supportsNeither');
  if (seen && seen.target === targetKey(settings.smtpHost, settings.smtpPort)) {
    return {
      supports,
      seenAt: new Date(seen.seenAt).toISOString().replace('T', ' ').slice(0, 16) + ' UTC',
      note: list.length === 2 ? t('email.offersBoth') : t('email.offersOnly'),
    };
  }
  return isProviderHost(settings.smtpHost)
    ? { supports, note: t('email.notSeenProvider') }
    : { supports: t('email.notKnownYet'), note: t('email.notSeenOther') };
}

export const emailSettingsRoutes: FastifyPluginAsyncZod<WebPluginOptions & { deps: EmailSettingsPageDependencies }> = async (app, { web, deps }) => {
  /** `own`: one account's page (its id fixed, the Default left alone); absent: the Default account's page. */
  const page = async (
    request: FastifyRequest,
    extra: { form?: EmailSettingsInput; errors?: EmailSettingsErrors; test?: { to: string; result?: TestEmailResult; error?: string } } = {},
    own?: string,
    /** On the Default's page: another account's saved settings, chosen in Sending Account (not saved yet). */
    shown?: string,
  ) => {
    const settings = await deps.emailSettings.get(own ?? shown);
    const account = await deps.oauth.status(settings.accountId);
    const rows = await orderedAccounts(deps.accounts);
    return {
      title: request.t('menu.email'),
      base: own ? `${accountPathOf(own)}/email` : EMAIL_SETTINGS_PATH,
      own: Boolean(own),
      showUrl: `${EMAIL_SETTINGS_PATH}?account=`,
      form: extra.form ?? emailSettingsInputOf(settings),
      errors: extra.errors ?? {},
      test: extra.test ?? { to: '' },
      account,
      accountPath: oauthPathOf(account.id, account.provider),
      accounts: accountChoices(rows, request.t, false),
      tlsModes: Object.entries(TLS_MODE_LABELS).map(([value, label]) => ({ value, label })),
      defaults: JSON.stringify(PROVIDER_SMTP_DEFAULTS),
      settings,
      upstream: upstreamSupportOf(settings, request.t),
    };
  };

  web.sendMenu.unshift({ href: EMAIL_SETTINGS_PATH, label: 'E-Mail Settings', labelKey: 'menu.email' });

  /** The account a page's address names, or undefined (and a Not Found page sent). */
  const ownAccount = async (request: FastifyRequest, reply: FastifyReply) => {
    const id = (request.params as { account: string }).account;
    const row = ACCOUNT_ID.test(id) ? await deps.accounts.get(id) : undefined;
    if (!row) {
      await reply.render('error', { title: request.t('error.notFound'), message: request.t('account.notFound') }, 404);
      return undefined;
    }
    return row.id;
  };

  const settingsForm = formBody({
    accountId: text(),
    smtpHost: text(),
    smtpPort: text(),
    tlsMode: text(),
    verifyServerCertificate: checkbox(),
    addCnToVerificationItems: checkbox(),
    senderAddress: text(),
    allowedFromAddresses: text(LIST_MAX),
    messagesPerMinute: text(),
  });
  const ownParams = z.object({ account: z.string({ error: 'is not an account id' }).max(100, { error: 'is not an account id' }) });

  /** Validates and saves; the page again with the errors (400) when the form does not hold settings. */
  const save = async (request: FastifyRequest, reply: FastifyReply, form: EmailSettingsInput, own?: string) => {
    const result = deps.emailSettings.validate(form);
    const errors: EmailSettingsErrors = result.ok ? {} : { ...result.errors };
    // A select's value that names no account (removed meanwhile, or never one) is refused, never stored.
    if (!errors.accountId && !(await deps.accounts.get(form.accountId))) errors.accountId = request.t('account.unknownChoice');
    if (!result.ok || Object.keys(errors).length > 0) return reply.render('email-settings', await page(request, { form, errors }, own), 400);
    const v = result.value;
    await deps.emailSettings.save(v, { makeDefault: !own });
    await deps.audit.record(
      request.user!.username,
      'email-settings.saved',
      `${accountLabel(v.accountId)}${own ? ` (${v.accountId})` : ''} via ${v.smtpHost}:${v.smtpPort} ${TLS_MODE_LABELS[v.tlsMode]}, sender ${v.senderAddress ?? 'the authorized mailbox'}, verify ${v.tls.verifyServerCertificate ? 'on' : 'off'}, CN ${v.tls.addCnToVerificationItems ? 'on' : 'off'}, ${v.messagesPerMinute}/min`,
    );
    web.setFlash(request, { type: 'success', text: request.t('email.saved') });
    return reply.redirect(own ? `${accountPathOf(own)}/email` : EMAIL_SETTINGS_PATH, 303);
  };

  const test = async (request: FastifyRequest, reply: FastifyReply, testTo: string, own?: string) => {
    const to = testTo.trim();
    if (!isEmailAddress(to)) {
      return reply.render('email-settings', await page(request, { test: { to, error: request.t('email.testToMissing') } }, own), 400);
    }
    const result = await deps.sendTestEmail(to, request.user!.username, own);
    await deps.audit.record(request.user!.username, 'email-settings.test', `${own ? `${own} ` : ''}to ${to}: ${result.ok ? 'sent' : 'not sent'}${result.reply ? ` (${result.reply.slice(0, 200)})` : ''}`);
    return reply.render('email-settings', await page(request, { test: { to, result } }, own));
  };

  // `account`: show that account's saved settings in the form; an id that names no account shows the Default's.
  const shownQuery = z.object({ account: ignoredWhenInvalid(z.string().regex(ACCOUNT_ID)) });
  app.get(EMAIL_SETTINGS_PATH, { preValidation: web.requireLogin, schema: { querystring: shownQuery } }, async (request, reply) => {
    const shown = request.query.account && (await deps.accounts.get(request.query.account)) ? request.query.account : undefined;
    return reply.render('email-settings', await page(request, {}, undefined, shown));
  });
  app.post(EMAIL_SETTINGS_PATH, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: settingsForm } }, async (request, reply) => save(request, reply, request.body));
  app.post(`${EMAIL_SETTINGS_PATH}/test`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: formBody({ testTo: text() }) } }, async (request, reply) =>
    test(request, reply, request.body.testTo),
  );

  const OWN = '/settings/send/accounts/:account/email';
  app.get(OWN, { preValidation: web.requireLogin, schema: { params: ownParams, querystring: none } }, async (request, reply) => {
    const own = await ownAccount(request, reply);
    if (!own) return reply;
    return reply.render('email-settings', await page(request, {}, own));
  });
  app.post(OWN, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: ownParams, body: settingsForm } }, async (request, reply) => {
    const own = await ownAccount(request, reply);
    if (!own) return reply;
    // The account is the page's, whatever the form says.
    return save(request, reply, { ...request.body, accountId: own }, own);
  });
  app.post(`${OWN}/test`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: ownParams, body: formBody({ testTo: text() }) } }, async (request, reply) => {
    const own = await ownAccount(request, reply);
    if (!own) return reply;
    return test(request, reply, request.body.testTo, own);
  });
};
