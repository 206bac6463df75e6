/**
 * E-Mail Settings (Settings/Registration > Send): the upstream SMTP server, the sending account, the sender
 * address, the seed's TLS options for the SMTP connection, pacing, and Send Test E-Mail.
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Translate } from '../i18n/index.js';
import type { OAuthService } from '../../oauth/service.js';
import type { AuditLog } from '../../store/audit.js';
import { emailSettingsInputOf, isEmailAddress, PROVIDER_SMTP_DEFAULTS, TLS_MODE_LABELS, type EmailSettings, type EmailSettingsErrors, type EmailSettingsInput, type EmailSettingsView } from '../../smtp-out/email-settings.js';
import type { TestEmailResult } from '../../smtp-out/upstream-transport.js';
import { isProviderHost, relayExtensions, targetKey } from '../../smtp-out/extensions.js';
import { PROVIDER_LABELS, accountLabel } from '../../oauth/profiles.js';
import type { WebPluginOptions } from '../context.js';
import { checkbox, formBody, LIST_MAX, none, text } from '../form.js';

export const EMAIL_SETTINGS_PATH = '/settings/send/email';

export interface EmailSettingsPageDependencies {
  emailSettings: EmailSettings;
  oauth: OAuthService;
  audit: AuditLog;
  sendTestEmail(to: string, actor: string): Promise<TestEmailResult>;
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
  const page = async (request: FastifyRequest, extra: { form?: EmailSettingsInput; errors?: EmailSettingsErrors; test?: { to: string; result?: TestEmailResult; error?: string } } = {}) => {
    const settings = await deps.emailSettings.get();
    const account = await deps.oauth.status(settings.accountId);
    return {
      title: request.t('menu.email'),
      base: EMAIL_SETTINGS_PATH,
      form: extra.form ?? emailSettingsInputOf(settings),
      errors: extra.errors ?? {},
      test: extra.test ?? { to: '' },
      account,
      accounts: (['microsoft', 'google'] as const).map((id) => ({ value: id, label: PROVIDER_LABELS[id] })),
      tlsModes: Object.entries(TLS_MODE_LABELS).map(([value, label]) => ({ value, label })),
      defaults: JSON.stringify(PROVIDER_SMTP_DEFAULTS),
      settings,
      upstream: upstreamSupportOf(settings, request.t),
    };
  };

  web.sendMenu.unshift({ href: EMAIL_SETTINGS_PATH, label: 'E-Mail Settings', labelKey: 'menu.email' });

  app.get(EMAIL_SETTINGS_PATH, { preValidation: web.requireLogin, schema: { querystring: none } }, async (request, reply) => reply.render('email-settings', await page(request)));

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
  app.post(EMAIL_SETTINGS_PATH, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: settingsForm } }, async (request, reply) => {
    const form: EmailSettingsInput = request.body;
    const result = deps.emailSettings.validate(form);
    if (!result.ok) return reply.render('email-settings', await page(request, { form, errors: result.errors }), 400);
    await deps.emailSettings.save(result.value);
    const v = result.value;
    await deps.audit.record(
      request.user!.username,
      'email-settings.saved',
      `${accountLabel(v.accountId)} via ${v.smtpHost}:${v.smtpPort} ${TLS_MODE_LABELS[v.tlsMode]}, sender ${v.senderAddress ?? 'the authorized mailbox'}, verify ${v.tls.verifyServerCertificate ? 'on' : 'off'}, CN ${v.tls.addCnToVerificationItems ? 'on' : 'off'}, ${v.messagesPerMinute}/min`,
    );
    web.setFlash(request, { type: 'success', text: request.t('email.saved') });
    return reply.redirect(EMAIL_SETTINGS_PATH, 303);
  });

  app.post(`${EMAIL_SETTINGS_PATH}/test`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: formBody({ testTo: text() }) } }, async (request, reply) => {
    const to = request.body.testTo.trim();
    if (!isEmailAddress(to)) {
      return reply.render('email-settings', await page(request, { test: { to, error: request.t('email.testToMissing') } }), 400);
    }
    const result = await deps.sendTestEmail(to, request.user!.username);
    await deps.audit.record(request.user!.username, 'email-settings.test', `to ${to}: ${result.ok ? 'sent' : 'not sent'}${result.reply ? ` (${result.reply.slice(0, 200)})` : ''}`);
    return reply.render('email-settings', await page(request, { test: { to, result } }));
  });
};
