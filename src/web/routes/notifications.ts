/**
 * Notifications (Settings/Registration > Management): the webhook that tells administrators when sending
 * needs attention, its format, which events to send, Send Test Notification, and the latest notifications
 * with the receiver's answer. The webhook URL is never shown back (only scheme://host/…).
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { EVENT_LABELS, isNotificationEvent, NOTIFICATION_EVENTS, type NotificationEvent } from '../../notify/events.js';
import type { MessageKey } from '../i18n/index.js';
import type { WebhookFormat } from '../../store/schema.js';
import type { NotificationRecord, TestResult } from '../../notify/notifier.js';
import {
  FORMAT_LABELS,
  validateNotificationSettings,
  type NotificationSettings,
  type NotificationSettingsErrors,
  type NotificationSettingsInput,
} from '../../notify/settings.js';
import type { WebPluginOptions } from '../context.js';
import { checkbox, formBody, none, text, URL_MAX } from '../form.js';

export const NOTIFICATIONS_PATH = '/settings/notifications';

export interface NotificationsPageDependencies {
  settings: NotificationSettings;
  notifier: {
    sendTest(actor: string, linkBase: string | null): Promise<TestResult>;
    recent(limit?: number): Promise<NotificationRecord[]>;
    cancelPending(reason: string): Promise<void>;
  };
  audit: { record(actor: string | null, action: string, detail?: string): Promise<void> };
}

const time = (ms: number | null | undefined) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '');
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/** scheme://host[:port] as the administrator reached the Remote UI (links in notifications start there). */
function linkBaseOf(request: FastifyRequest): string | null {
  const host = request.host;
  return typeof host === 'string' && HOST.test(host) ? `${request.protocol}://${host}` : null;
}

/** The settings form: the Webhook URL, its format, and one check box per event, named `event-<event>`. */
const settingsForm = formBody({
  webhookUrl: text(URL_MAX),
  format: text(),
  ...Object.fromEntries(NOTIFICATION_EVENTS.map((event) => [`event-${event}`, checkbox()])),
});

const FORMAT_KEYS: Record<WebhookFormat, MessageKey> = { json: 'notify.f.json', teams: 'notify.f.teams', slack: 'notify.f.slack' };
const EVENT_KEYS: Record<NotificationEvent, MessageKey> = {
  'token-expired': 'notify.e.token-expired',
  'token-error': 'notify.e.token-error',
  'connection-failed': 'notify.e.connection-failed',
  'messages-held': 'notify.e.messages-held',
  'message-bounced': 'notify.e.message-bounced',
};

function eventsOf(body: Record<string, unknown>): string[] {
  return NOTIFICATION_EVENTS.filter((event) => body[`event-${event}`] === true);
}

export const notificationRoutes: FastifyPluginAsyncZod<WebPluginOptions & { deps: NotificationsPageDependencies }> = async (app, { web, deps }) => {
  web.managementMenu.push({ href: NOTIFICATIONS_PATH, label: 'Notifications', labelKey: 'menu.notifications' });

  const page = async (request: FastifyRequest, extra: { form?: { format: string; events: string[] }; errors?: NotificationSettingsErrors; test?: TestResult } = {}) => {
    const settings = await deps.settings.get();
    const recent = await deps.notifier.recent(10);
    return {
      title: request.t('menu.notifications'),
      base: NOTIFICATIONS_PATH,
      settings,
      form: extra.form ?? { format: settings.format, events: settings.events },
      errors: extra.errors ?? {},
      test: extra.test,
      recent,
      last: recent[0],
      formats: Object.keys(FORMAT_LABELS),
      events: NOTIFICATION_EVENTS,
      formatLabel: (format: string) => (format in FORMAT_KEYS ? request.t(FORMAT_KEYS[format as WebhookFormat]) : format),
      eventLabel: (event: string) => (isNotificationEvent(event) ? request.t(EVENT_KEYS[event]) : event),
      time,
    };
  };

  app.get(NOTIFICATIONS_PATH, { preValidation: web.requireLogin, schema: { querystring: none } }, async (request, reply) => reply.render('notifications', await page(request)));

  app.post(NOTIFICATIONS_PATH, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: settingsForm } }, async (request, reply) => {
    const { webhookUrl, format } = request.body;
    const input: NotificationSettingsInput = { webhookUrl, format, events: eventsOf(request.body) };
    const before = await deps.settings.get();
    const result = validateNotificationSettings(input, before.configured);
    // The URL typed is not echoed back: it holds the receiver's secret.
    if (!result.ok) return reply.render('notifications', await page(request, { form: { format: input.format, events: input.events }, errors: result.errors }), 400);
    await deps.settings.save(result.value, request.user!.username, linkBaseOf(request));
    const after = await deps.settings.get();
    await deps.audit.record(
      request.user!.username,
      'notifications.saved',
      `webhook ${after.webhookDisplay}${result.value.webhookUrl !== undefined && before.configured ? ' (replaced)' : ''}, format ${FORMAT_LABELS[after.format]}, events: ${after.events.map((e) => EVENT_LABELS[e]).join('; ') || 'none'}`,
    );
    web.setFlash(request, {
      type: after.unencrypted ? 'info' : 'success',
      text: after.unencrypted
        ? request.t('notify.savedUnencrypted')
        : request.t('notify.saved'),
    });
    return reply.redirect(NOTIFICATIONS_PATH, 303);
  });

  app.post(`${NOTIFICATIONS_PATH}/test`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: none } }, async (request, reply) => {
    const result = await deps.notifier.sendTest(request.user!.username, linkBaseOf(request));
    await deps.audit.record(request.user!.username, 'notifications.test', result.summary);
    return reply.render('notifications', await page(request, { test: result }));
  });

  app.post(`${NOTIFICATIONS_PATH}/delete`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: none } }, async (request, reply) => {
    const before = await deps.settings.get();
    if (before.configured) {
      await deps.settings.deleteWebhook(request.user!.username);
      await deps.notifier.cancelPending('Not sent: the Webhook URL was deleted.');
      await deps.audit.record(request.user!.username, 'notifications.deleted', `webhook ${before.webhookDisplay}`);
    }
    web.setFlash(request, { type: 'success', text: request.t('notify.deleted') });
    return reply.redirect(NOTIFICATIONS_PATH, 303);
  });
};
