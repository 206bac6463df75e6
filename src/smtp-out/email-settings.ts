/**
 * E-Mail Settings: each sending account's upstream SMTP server, sender and pace, one row per account (id =
 * the account's id), and which account is the Default (the row with is_default: where mail goes that no
 * route sends elsewhere).
 * Defaults per provider (docs/protocol.md §3.2): Microsoft `smtp.office365.com:587` STARTTLS, Google
 * `smtp.gmail.com:465` implicit TLS; pacing 30 messages/minute for Exchange Online (§3.4).
 * The same row keeps what sessions last saw the upstream advertise (8BITMIME / SMTPUTF8, extensions.ts),
 * forgotten when the SMTP Server or Port changes.
 */
import { isIP } from 'node:net';
import type { EmailSettingsTable, ProviderId, UpstreamTlsMode } from '../store/schema.js';
import type { Store } from '../store/store.js';
import type { TlsPolicy } from '../tls/trust.js';
import { AccountNotFoundError, OAuthAccounts } from '../oauth/accounts.js';
import { formatExtensions, parseStoredExtensions, targetKey, type SeenExtensions, type UpstreamExtension } from './extensions.js';

export interface ProviderDefaults {
  host: string;
  port: number;
  tlsMode: UpstreamTlsMode;
  messagesPerMinute: number;
}

export const PROVIDER_SMTP_DEFAULTS: Record<ProviderId, ProviderDefaults> = {
  microsoft: { host: 'smtp.office365.com', port: 587, tlsMode: 'starttls', messagesPerMinute: 30 },
  // Google publishes daily limits only; one a second stays well inside them.
  google: { host: 'smtp.gmail.com', port: 465, tlsMode: 'tls', messagesPerMinute: 60 },
};

export const TLS_MODE_LABELS: Record<UpstreamTlsMode, string> = {
  starttls: 'STARTTLS',
  tls: 'SSL/TLS (implicit)',
};

export interface EmailSettingsView {
  accountId: string;
  smtpHost: string;
  smtpPort: number;
  tlsMode: UpstreamTlsMode;
  tls: TlsPolicy;
  /** null: the authorized mailbox. */
  senderAddress: string | null;
  allowedFromAddresses: string[];
  messagesPerMinute: number;
  /** What sessions last saw the upstream advertise; null until one reached it. Filled by get(), ignored by save(). */
  upstreamExtensions?: SeenExtensions | null;
}

/** What the form sends (all strings/booleans, unvalidated). */
export interface EmailSettingsInput {
  accountId: string;
  smtpHost: string;
  smtpPort: string;
  tlsMode: string;
  verifyServerCertificate: boolean;
  addCnToVerificationItems: boolean;
  senderAddress: string;
  allowedFromAddresses: string;
  messagesPerMinute: string;
}

export type EmailSettingsErrors = Partial<Record<keyof EmailSettingsInput, string>>;

/** The Default account until one is chosen: the seed's Microsoft account, as before there were several. */
const FIRST_DEFAULT = 'microsoft';
const ADDRESS = /^[^\s@<>()",;:\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/u;
const HOST = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

export function isEmailAddress(value: string): boolean {
  return ADDRESS.test(value) && value.length <= 254;
}

function toView(row: EmailSettingsTable): EmailSettingsView {
  return {
    accountId: row.account_id,
    smtpHost: row.smtp_host,
    smtpPort: row.smtp_port,
    tlsMode: row.tls_mode,
    tls: {
      verifyServerCertificate: row.verify_server_certificate === 1,
      addCnToVerificationItems: row.verify_server_certificate === 1 && row.add_cn_to_verification_items === 1,
    },
    senderAddress: row.sender_address,
    allowedFromAddresses: row.allowed_from_addresses.split('\n').map((a) => a.trim()).filter(Boolean),
    messagesPerMinute: row.messages_per_minute,
    upstreamExtensions:
      row.upstream_extensions_target === null || row.upstream_extensions_seen_at === null
        ? null
        : { target: row.upstream_extensions_target, extensions: parseStoredExtensions(row.upstream_extensions), seenAt: Number(row.upstream_extensions_seen_at) },
  };
}

/** A confirmation of the same extensions is written again after this long, so "seen at" stays meaningful. */
const RESEEN_AFTER_MS = 60 * 60_000;

function defaultRow(accountId: string, provider: ProviderId): EmailSettingsTable {
  const defaults = PROVIDER_SMTP_DEFAULTS[provider];
  return {
    id: accountId,
    account_id: accountId,
    smtp_host: defaults.host,
    smtp_port: defaults.port,
    tls_mode: defaults.tlsMode,
    verify_server_certificate: 1,
    add_cn_to_verification_items: 1,
    sender_address: null,
    allowed_from_addresses: '',
    messages_per_minute: defaults.messagesPerMinute,
    updated_at: Date.now(),
    upstream_extensions_target: null,
    upstream_extensions: null,
    upstream_extensions_seen_at: null,
    is_default: 0,
  };
}

export class EmailSettings {
  readonly #cache = new Map<string, { view: EmailSettingsView; at: number }>();
  #defaultCache: { id: string; at: number } | undefined;
  readonly #listeners: Array<() => void> = [];
  readonly #extensionListeners: Array<() => void | Promise<void>> = [];

  readonly #accounts: OAuthAccounts;

  constructor(
    private readonly store: Store,
    private readonly cacheMs = 2000,
  ) {
    this.#accounts = new OAuthAccounts(store);
  }

  /** Called after every save (the queue forgets its route, the pool its sessions). */
  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  /** Called when a session saw the upstream advertise something other than what was known (the relay listens). */
  onExtensionsChange(listener: () => void | Promise<void>): void {
    this.#extensionListeners.push(listener);
  }

  /** Forgets what was read (another instance changed settings). */
  forget(): void {
    this.#cache.clear();
    this.#defaultCache = undefined;
  }

  /**
   * Records what a session of `accountId` to `host:port` advertised. Written only when it differs from what
   * is stored (or to refresh an hour-old "seen at"), and only while that target is still the account's upstream.
   */
  async recordExtensions(host: string, port: number, extensions: readonly UpstreamExtension[], accountId?: string): Promise<boolean> {
    const view = await this.get(accountId);
    if (targetKey(view.smtpHost, view.smtpPort) !== targetKey(host, port)) return false;
    const target = targetKey(host, port);
    const text = formatExtensions(extensions);
    const seen = view.upstreamExtensions;
    const same = seen?.target === target && formatExtensions(seen.extensions) === text;
    if (same && Date.now() - seen.seenAt < RESEEN_AFTER_MS) return false;
    await this.store.db
      .updateTable('email_settings')
      .set({ upstream_extensions_target: target, upstream_extensions: text, upstream_extensions_seen_at: Date.now() })
      .where('id', '=', view.accountId)
      .where('smtp_host', '=', view.smtpHost)
      .where('smtp_port', '=', view.smtpPort)
      .execute();
    this.#cache.delete(view.accountId);
    if (!same) await Promise.all(this.#extensionListeners.map(async (listener) => listener()));
    return !same;
  }

  /**
   * The Default sending account, read afresh (no cache, no row written): what another instance saved counts
   * at once. The seed's Microsoft account until one is chosen.
   */
  async sendingAccountId(): Promise<string> {
    const row = await this.store.db.selectFrom('email_settings').select('id').where('is_default', '=', 1).orderBy('id').executeTakeFirst();
    return row?.id ?? FIRST_DEFAULT;
  }

  /** The Default sending account, from a short cache (deliveries, the relay). */
  async defaultAccountId(): Promise<string> {
    if (this.#defaultCache && Date.now() - this.#defaultCache.at < this.cacheMs) return this.#defaultCache.id;
    const id = await this.sendingAccountId();
    this.#defaultCache = { id, at: Date.now() };
    return id;
  }

  /** Makes `accountId` the Default sending account. */
  async setDefaultAccount(accountId: string): Promise<void> {
    await this.#writeDefault(accountId);
    for (const listener of this.#listeners) listener();
  }

  async #writeDefault(accountId: string): Promise<void> {
    await this.get(accountId); // its row, with the provider's defaults if it has none yet
    await this.store.db.transaction().execute(async (trx) => {
      await trx.updateTable('email_settings').set({ is_default: 0 }).where('is_default', '=', 1).where('id', '!=', accountId).execute();
      await trx.updateTable('email_settings').set({ is_default: 1 }).where('id', '=', accountId).execute();
    });
    this.#defaultCache = undefined;
  }


  /**
   * The E-Mail Settings of `accountId` ('' or absent: the Default account), created with the provider's
   * defaults on first read. Throws AccountNotFoundError for an account that does not exist.
   */
  async get(accountId?: string): Promise<EmailSettingsView> {
    const id = accountId || (await this.defaultAccountId());
    const cached = this.#cache.get(id);
    if (cached && Date.now() - cached.at < this.cacheMs) return cached.view;
    let row = await this.store.db.selectFrom('email_settings').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) {
      const account = await this.#accounts.get(id);
      const provider: ProviderId | undefined = account?.provider ?? (id === 'microsoft' || id === 'google' ? id : undefined);
      if (!provider) throw new AccountNotFoundError(id);
      row = defaultRow(id, provider);
      await this.store.db.insertInto('email_settings').values(row).onConflict((oc) => oc.column('id').doNothing()).execute();
    }
    const view = toView(row);
    this.#cache.set(id, { view, at: Date.now() });
    return view;
  }

  /** The E-Mail Settings of every account that has them (the relay's extensions, the Sending Accounts page). */
  async all(): Promise<EmailSettingsView[]> {
    return (await this.store.db.selectFrom('email_settings').selectAll().orderBy('id').execute()).map(toView);
  }

  /** Forgets a removed account's settings. */
  async remove(accountId: string): Promise<void> {
    await this.store.db.deleteFrom('email_settings').where('id', '=', accountId).execute();
    this.#cache.delete(accountId);
    for (const listener of this.#listeners) listener();
  }

  validate(input: EmailSettingsInput): { ok: true; value: EmailSettingsView } | { ok: false; errors: EmailSettingsErrors } {
    const errors: EmailSettingsErrors = {};
    const accountId = /^[a-z0-9-]{1,64}$/.test(input.accountId) ? input.accountId : undefined;
    if (!accountId) errors.accountId = 'Choose the sending account.';
    // An account's id starts with its provider's ('google', 'google-3f…'): the defaults are that provider's.
    const provider: ProviderId = accountId?.startsWith('google') ? 'google' : 'microsoft';
    const defaults = PROVIDER_SMTP_DEFAULTS[provider];
    const host = input.smtpHost.trim() || defaults.host;
    if (!(isIP(host) !== 0 || HOST.test(host))) errors.smtpHost = `"${host}" is not a host name or IP address (for example ${defaults.host}).`;
    const portText = input.smtpPort.trim() || String(defaults.port);
    const port = Number(portText);
    if (!/^\d+$/.test(portText) || port < 1 || port > 65535) errors.smtpPort = 'Enter a port number from 1 to 65535 (587 for STARTTLS, 465 for SSL/TLS).';
    const tlsMode = input.tlsMode === 'tls' || input.tlsMode === 'starttls' ? input.tlsMode : undefined;
    if (!tlsMode) errors.tlsMode = 'Choose STARTTLS or SSL/TLS.';
    const sender = input.senderAddress.trim();
    if (sender !== '' && !isEmailAddress(sender)) errors.senderAddress = `"${sender}" is not an e-mail address. Leave the field empty to send as the authorized mailbox.`;
    const allowed = input.allowedFromAddresses.split(/[\s,;]+/).map((a) => a.trim()).filter(Boolean);
    const bad = allowed.filter((a) => !isEmailAddress(a));
    if (bad.length > 0) errors.allowedFromAddresses = `Not e-mail addresses: ${bad.slice(0, 5).join(', ')}. Write one address per line.`;
    const rateText = input.messagesPerMinute.trim() || String(defaults.messagesPerMinute);
    const rate = Number(rateText);
    if (!/^\d+$/.test(rateText) || rate > 100_000) errors.messagesPerMinute = 'Enter a whole number of messages per minute (0 for no limit).';
    if (Object.keys(errors).length > 0) return { ok: false, errors };
    return {
      ok: true,
      value: {
        accountId: accountId!,
        smtpHost: host,
        smtpPort: port,
        tlsMode: tlsMode!,
        tls: { verifyServerCertificate: input.verifyServerCertificate, addCnToVerificationItems: input.verifyServerCertificate && input.addCnToVerificationItems },
        senderAddress: sender === '' ? null : sender,
        allowedFromAddresses: [...new Set(allowed)],
        messagesPerMinute: rate,
      },
    };
  }

  /**
   * Saves the settings of `value.accountId`. `makeDefault` (the seed's E-Mail Settings page, whose Sending
   * Account chooses where all mail goes): the account becomes the Default too.
   */
  async save(value: EmailSettingsView, options: { makeDefault?: boolean } = {}): Promise<void> {
    const before = await this.get(value.accountId);
    if (options.makeDefault ?? true) await this.#writeDefault(value.accountId);
    // Another upstream: what the old one advertised says nothing about it (the relay falls back to defaults).
    const forget = targetKey(before.smtpHost, before.smtpPort) !== targetKey(value.smtpHost, value.smtpPort);
    await this.store.db
      .updateTable('email_settings')
      .set({
        smtp_host: value.smtpHost,
        smtp_port: value.smtpPort,
        tls_mode: value.tlsMode,
        verify_server_certificate: value.tls.verifyServerCertificate ? 1 : 0,
        add_cn_to_verification_items: value.tls.addCnToVerificationItems ? 1 : 0,
        sender_address: value.senderAddress,
        allowed_from_addresses: value.allowedFromAddresses.join('\n'),
        messages_per_minute: value.messagesPerMinute,
        updated_at: Date.now(),
        ...(forget ? { upstream_extensions_target: null, upstream_extensions: null, upstream_extensions_seen_at: null } : {}),
      })
      .where('id', '=', value.accountId)
      .execute();
    this.#cache.delete(value.accountId);
    for (const listener of this.#listeners) listener();
    if (forget) await Promise.all(this.#extensionListeners.map(async (listener) => listener()));
  }
}

/** The form's fields for saved settings (what the E-Mail Settings page shows, what the API patches onto). */
export function emailSettingsInputOf(settings: EmailSettingsView): EmailSettingsInput {
  return {
    accountId: settings.accountId,
    smtpHost: settings.smtpHost,
    smtpPort: String(settings.smtpPort),
    tlsMode: settings.tlsMode,
    verifyServerCertificate: settings.tls.verifyServerCertificate,
    addCnToVerificationItems: settings.tls.addCnToVerificationItems,
    senderAddress: settings.senderAddress ?? '',
    allowedFromAddresses: settings.allowedFromAddresses.join('\n'),
    messagesPerMinute: String(settings.messagesPerMinute),
  };
}
