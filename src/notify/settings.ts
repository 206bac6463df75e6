/**
 * Notifications settings: the webhook that administrators are told through, its format, and which events
 * to send. One row (id 'default').
 *
 * The webhook URL is a secret: Teams Workflows and Slack URLs carry their own access token (`sig=…`,
 * `/services/T…/B…/…`). It is stored encrypted like the Google client secret, decrypted only to send, and
 * shown (and logged) only as scheme://host/… (`displayWebhookUrl`).
 *
 * https:// is required; http:// is accepted only for a receiver on this host or a private network (an IP
 * address: a name cannot be checked without trusting DNS), and is shown with a warning.
 */
import ipaddr from 'ipaddr.js';
import type { Store } from '../store/store.js';
import type { WebhookFormat } from '../store/schema.js';
import { isNotificationEvent, NOTIFICATION_EVENTS, type NotificationEvent } from './events.js';

export const FORMAT_LABELS: Record<WebhookFormat, string> = {
  json: 'JSON (generic)',
  teams: 'Microsoft Teams (Workflows: Adaptive Card)',
  slack: 'Slack-compatible ({"text": …})',
};

const ROW_ID = 'default';
const SECRET_CONTEXT = `notification_settings.webhook_url:${ROW_ID}`;
const MAX_URL_LENGTH = 2048;
/** Address ranges (ipaddr.js names) where a plain-HTTP receiver is accepted. */
const PLAIN_HTTP_RANGES = new Set(['loopback', 'private', 'linkLocal', 'uniqueLocal']);

export interface NotificationSettingsView {
  /** A webhook URL is stored: notifications are on. */
  configured: boolean;
  /** scheme://host[:port]/… of the stored URL; never the whole URL. */
  webhookDisplay: string | null;
  /** The stored URL is http://: notifications cross the network unencrypted. */
  unencrypted: boolean;
  format: WebhookFormat;
  events: NotificationEvent[];
  linkBase: string | null;
  updatedAt: number | null;
  updatedBy: string | null;
}

/** What the form sends (unvalidated). An empty `webhookUrl` keeps the stored one. */
export interface NotificationSettingsInput {
  webhookUrl: string;
  format: string;
  events: string[];
}

export type NotificationSettingsErrors = Partial<Record<'webhookUrl' | 'format' | 'events', string>>;

export interface ValidNotificationSettings {
  /** undefined: keep the stored URL. */
  webhookUrl: string | undefined;
  format: WebhookFormat;
  events: NotificationEvent[];
}

/** scheme://host[:port]/… : enough to recognise the receiver, nothing of its path or query (the secret). */
export function displayWebhookUrl(url: string | URL): string {
  try {
    const parsed = typeof url === 'string' ? new URL(url) : url;
    return `${parsed.protocol}//${parsed.host}/…`;
  } catch {
    return '(not a URL)';
  }
}

export type WebhookUrlCheck = { ok: true; url: string; unencrypted: boolean } | { ok: false; error: string };

/** Checks a webhook URL as the administrator typed it. Error texts never repeat the path or query. */
export function validateWebhookUrl(raw: string): WebhookUrlCheck {
  const text = raw.trim();
  if (text === '') return { ok: false, error: 'Enter the Webhook URL of the receiver (https://…).' };
  if (text.length > MAX_URL_LENGTH) return { ok: false, error: `The Webhook URL is longer than ${MAX_URL_LENGTH} characters.` };
  if (/\s/.test(text)) return { ok: false, error: 'The Webhook URL cannot contain spaces; copy it again from the receiver.' };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { ok: false, error: 'The Webhook URL is not a complete URL. It starts with https:// (copy it from Teams, Slack or your receiver).' };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return { ok: false, error: `The Webhook URL must start with https:// (not ${url.protocol}//).` };
  }
  if (url.username !== '' || url.password !== '') {
    return { ok: false, error: 'The Webhook URL cannot contain a user name or password (user:password@host). Put the secret where the receiver expects it, usually in the path or query.' };
  }
  if (url.hostname === '') return { ok: false, error: 'The Webhook URL has no host name.' };
  url.hash = '';
  if (url.protocol === 'http:' && !isLocalHost(url.hostname)) {
    return {
      ok: false,
      error: `${displayWebhookUrl(url)} uses http://, which is unencrypted: the notification and the secret in the URL could be read on the way. Use https://. Plain http:// is accepted only for a receiver on this computer or on a private network, given by its IP address (for example http://192.168.1.20:8080/…).`,
    };
  }
  return { ok: true, url: url.href, unencrypted: url.protocol === 'http:' };
}

/** Loopback or a private-network address (an IP literal), or the name localhost. */
export function isLocalHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (!ipaddr.isValid(host)) return false;
  return PLAIN_HTTP_RANGES.has(ipaddr.process(host).range());
}

export function validateNotificationSettings(input: NotificationSettingsInput, hasStoredUrl: boolean): { ok: true; value: ValidNotificationSettings } | { ok: false; errors: NotificationSettingsErrors } {
  const errors: NotificationSettingsErrors = {};
  let webhookUrl: string | undefined;
  if (input.webhookUrl.trim() !== '' || !hasStoredUrl) {
    const check = validateWebhookUrl(input.webhookUrl);
    if (check.ok) webhookUrl = check.url;
    else errors.webhookUrl = check.error;
  }
  const format = input.format === 'json' || input.format === 'teams' || input.format === 'slack' ? input.format : undefined;
  if (!format) errors.format = 'Choose the format your receiver expects.';
  const unknown = input.events.filter((e) => !isNotificationEvent(e));
  if (unknown.length > 0) errors.events = 'Choose events from the list.';
  if (Object.keys(errors).length > 0) return { ok: false, errors };
  const events = NOTIFICATION_EVENTS.filter((e) => input.events.includes(e));
  return { ok: true, value: { webhookUrl, format: format!, events } };
}

export class NotificationSettings {
  constructor(private readonly store: Store) {}

  async #row() {
    return this.store.db.selectFrom('notification_settings').selectAll().where('id', '=', ROW_ID).executeTakeFirst();
  }

  async get(): Promise<NotificationSettingsView> {
    const row = await this.#row();
    if (!row) {
      return { configured: false, webhookDisplay: null, unencrypted: false, format: 'json', events: [...NOTIFICATION_EVENTS], linkBase: null, updatedAt: null, updatedBy: null };
    }
    const url = this.#decrypt(row.webhook_url_enc);
    return {
      configured: url !== undefined,
      webhookDisplay: url === undefined ? null : displayWebhookUrl(url),
      unencrypted: url !== undefined && url.startsWith('http:'),
      format: row.format,
      events: row.events.split(',').filter(isNotificationEvent),
      linkBase: row.link_base,
      updatedAt: Number(row.updated_at),
      updatedBy: row.updated_by,
    };
  }

  /** The whole URL, for sending only. Never log or show it (displayWebhookUrl). */
  async webhookUrl(): Promise<string | undefined> {
    return this.#decrypt((await this.#row())?.webhook_url_enc ?? null);
  }

  #decrypt(sealed: string | null): string | undefined {
    return this.store.secrets.decryptOptional(sealed, SECRET_CONTEXT) ?? undefined;
  }

  /** Saves validated settings; `linkBase` is where the administrator reached the Remote UI (links start there). */
  async save(value: ValidNotificationSettings, actor: string, linkBase: string | null): Promise<void> {
    const now = Date.now();
    const row = {
      format: value.format,
      events: value.events.join(','),
      link_base: linkBase,
      updated_at: now,
      updated_by: actor,
      ...(value.webhookUrl !== undefined ? { webhook_url_enc: this.store.secrets.encrypt(value.webhookUrl, SECRET_CONTEXT) } : {}),
    };
    await this.store.db
      .insertInto('notification_settings')
      .values({ id: ROW_ID, webhook_url_enc: null, ...row })
      .onConflict((oc) => oc.column('id').doUpdateSet(row))
      .execute();
  }

  /** Forgets the webhook URL: notifications are off. */
  async deleteWebhook(actor: string): Promise<void> {
    await this.store.db
      .updateTable('notification_settings')
      .set({ webhook_url_enc: null, updated_at: Date.now(), updated_by: actor })
      .where('id', '=', ROW_ID)
      .execute();
  }
}
