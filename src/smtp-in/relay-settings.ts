/**
 * Relay Settings: Allowed Networks, maximum message size, the legacy switches, the bare CR/LF policy and
 * the relay's STARTTLS certificate, stored in one row. The certificate is generated at first start
 * (self-signed, for the host's names) unless the administrator uploads one; its key is sealed with the
 * store's SecretBox like every other secret.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { hostname } from 'node:os';
import { createSecureContext } from 'node:tls';
import { ErrorCodes, PosternError } from '../errors.js';
import type { BareNewlinePolicy, RelaySettingsTable } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { createSelfSignedCertificate, parsePemCertificates } from '../tls/certificates.js';
import { parseNetworks } from './networks.js';

/** 25 MiB: what devices send (scans) and what both providers take after base64 (Gmail ~34 MiB). */
export const DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024;
/** Gmail's advertised SIZE (docs/protocol.md §3.3); Exchange takes 150 MiB. The relay never promises more. */
export const MAX_MESSAGE_SIZE_LIMIT = 35_882_577;

const ROW_ID = 'default';
const KEY_CONTEXT = 'relay_settings.tls_key';

export interface RelaySettingsView {
  allowedNetworks: string[];
  maxMessageSize: number;
  allowInsecureAuth: boolean;
  allowLegacyTls: boolean;
  bareNewlines: BareNewlinePolicy;
}

export interface RelayCertificate {
  cert: string;
  key: string;
  source: 'generated' | 'uploaded';
  subject: string;
  issuer: string;
  validTo: Date;
  fingerprint256: string;
  names: string[];
}

export interface RelaySettingsInput {
  allowedNetworks: string;
  maxMessageSizeMb: string;
  allowInsecureAuth: boolean;
  allowLegacyTls: boolean;
  bareNewlines: string;
}

export type RelaySettingsErrors = Partial<Record<keyof RelaySettingsInput, string>>;

function toView(row: RelaySettingsTable): RelaySettingsView {
  return {
    allowedNetworks: row.allowed_networks.split('\n').map((n) => n.trim()).filter(Boolean),
    maxMessageSize: Number(row.max_message_size),
    allowInsecureAuth: row.allow_insecure_auth === 1,
    allowLegacyTls: row.allow_legacy_tls === 1,
    bareNewlines: row.bare_newlines,
  };
}

/** Host names the generated certificate names: this host, localhost and the listen address. */
export function relayCertificateNames(listenHost: string): string[] {
  const names = [hostname(), 'localhost', '127.0.0.1', '::1'];
  if (listenHost !== '0.0.0.0' && listenHost !== '::' && !names.includes(listenHost)) names.unshift(listenHost);
  return [...new Set(names.filter((n) => n && /^[A-Za-z0-9.:-]+$/.test(n)))];
}

export class RelaySettings {
  readonly #listeners: Array<() => void | Promise<void>> = [];

  constructor(private readonly store: Store) {}

  /** Called after every change; a save returns once the listeners are done (the relay applies it first). */
  onChange(listener: () => void | Promise<void>): void {
    this.#listeners.push(listener);
  }

  async #changed(): Promise<void> {
    await Promise.all(this.#listeners.map((listener) => listener()));
  }

  async #row(): Promise<RelaySettingsTable> {
    const row = await this.store.db.selectFrom('relay_settings').selectAll().where('id', '=', ROW_ID).executeTakeFirst();
    if (row) return row;
    const fresh: RelaySettingsTable = {
      id: ROW_ID,
      allowed_networks: '',
      max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
      allow_insecure_auth: 0,
      allow_legacy_tls: 0,
      bare_newlines: 'normalize',
      tls_cert: null,
      tls_key_enc: null,
      tls_cert_source: null,
      network_accounts: '{}',
      updated_at: Date.now(),
    };
    await this.store.db.insertInto('relay_settings').values(fresh).onConflict((oc) => oc.column('id').doNothing()).execute();
    return (await this.store.db.selectFrom('relay_settings').selectAll().where('id', '=', ROW_ID).executeTakeFirstOrThrow());
  }

  /** Allowed Networks entry → sending account id, as stored (JSON; routing.ts reads it). */
  async networkAccountsText(): Promise<string> {
    const row = await this.store.db.selectFrom('relay_settings').select('network_accounts').where('id', '=', ROW_ID).executeTakeFirst();
    return row?.network_accounts ?? '{}';
  }

  /** Replaces the Allowed Networks entry → sending account map (JSON). */
  async setNetworkAccountsText(json: string): Promise<void> {
    await this.#row();
    await this.store.db.updateTable('relay_settings').set({ network_accounts: json, updated_at: Date.now() }).where('id', '=', ROW_ID).execute();
  }

  async get(): Promise<RelaySettingsView> {
    return toView(await this.#row());
  }

  /**
   * The maximum message size the relay takes, read without writing (no default row is created): for a
   * reader beside the gateway, such as the command line's `send`.
   */
  async maxMessageSize(): Promise<number> {
    const row = await this.store.db.selectFrom('relay_settings').select('max_message_size').where('id', '=', ROW_ID).executeTakeFirst();
    return row ? Number(row.max_message_size) : DEFAULT_MAX_MESSAGE_SIZE;
  }

  validate(input: RelaySettingsInput): { ok: true; value: RelaySettingsView } | { ok: false; errors: RelaySettingsErrors } {
    const errors: RelaySettingsErrors = {};
    const networks = parseNetworks(input.allowedNetworks);
    if (networks.errors.length > 0) errors.allowedNetworks = networks.errors.slice(0, 5).join('; ');
    const sizeText = input.maxMessageSizeMb.trim();
    const sizeMb = Number(sizeText);
    const limitMb = Math.floor(MAX_MESSAGE_SIZE_LIMIT / 1024 / 1024);
    if (!/^\d+(\.\d+)?$/.test(sizeText) || sizeMb < 1 || sizeMb > limitMb) errors.maxMessageSizeMb = `Enter a size from 1 to ${limitMb} MB.`;
    const bare = input.bareNewlines === 'reject' ? 'reject' : input.bareNewlines === 'normalize' ? 'normalize' : undefined;
    if (!bare) errors.bareNewlines = 'Choose Normalize or Reject.';
    if (Object.keys(errors).length > 0) return { ok: false, errors };
    return {
      ok: true,
      value: {
        allowedNetworks: networks.entries,
        maxMessageSize: Math.round(sizeMb * 1024 * 1024),
        allowInsecureAuth: input.allowInsecureAuth,
        allowLegacyTls: input.allowLegacyTls,
        bareNewlines: bare!,
      },
    };
  }

  async save(value: RelaySettingsView): Promise<void> {
    await this.#row();
    await this.store.db
      .updateTable('relay_settings')
      .set({
        allowed_networks: value.allowedNetworks.join('\n'),
        max_message_size: value.maxMessageSize,
        allow_insecure_auth: value.allowInsecureAuth ? 1 : 0,
        allow_legacy_tls: value.allowLegacyTls ? 1 : 0,
        bare_newlines: value.bareNewlines,
        updated_at: Date.now(),
      })
      .where('id', '=', ROW_ID)
      .execute();
    await this.#changed();
  }

  // ---- the relay certificate ------------------------------------------------------------------------

  async certificate(): Promise<RelayCertificate | undefined> {
    const row = await this.#row();
    if (!row.tls_cert || !row.tls_key_enc) return undefined;
    return describe(row.tls_cert, this.store.secrets.decrypt(row.tls_key_enc, KEY_CONTEXT), row.tls_cert_source ?? 'generated');
  }

  /** The certificate, generated (self-signed for `names`) and stored at first start. */
  async ensureCertificate(names: string[]): Promise<RelayCertificate> {
    const existing = await this.certificate();
    if (existing) return existing;
    return this.generateCertificate(names);
  }

  async generateCertificate(names: string[]): Promise<RelayCertificate> {
    const { key, cert } = await createSelfSignedCertificate(names);
    await this.#saveCertificate(cert, key, 'generated');
    return describe(cert, key, 'generated');
  }

  /** Validates and stores an uploaded certificate chain and key; throws POSTERN_SMTP_CERTIFICATE_INVALID. */
  async uploadCertificate(certPem: string, keyPem: string): Promise<RelayCertificate> {
    let chain;
    try {
      chain = parsePemCertificates(certPem);
    } catch (error) {
      throw new PosternError(ErrorCodes.SMTP_CERTIFICATE_INVALID, (error as Error).message);
    }
    let privateKey;
    try {
      privateKey = createPrivateKey(keyPem);
    } catch {
      throw new PosternError(ErrorCodes.SMTP_CERTIFICATE_INVALID, 'The private key is not a PEM private key (expected "-----BEGIN PRIVATE KEY-----" or an RSA/EC key, not encrypted).');
    }
    const leaf = new X509Certificate(chain[0]!.pem);
    if (!leaf.checkPrivateKey(privateKey)) {
      throw new PosternError(ErrorCodes.SMTP_CERTIFICATE_INVALID, 'The private key does not belong to the first certificate (the server certificate must come first, then its intermediates).');
    }
    if (new Date(leaf.validTo).getTime() < Date.now()) {
      throw new PosternError(ErrorCodes.SMTP_CERTIFICATE_INVALID, `The certificate expired on ${new Date(leaf.validTo).toISOString().slice(0, 10)}.`);
    }
    const cert = chain.map((c) => c.pem).join('');
    const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    try {
      createSecureContext({ cert, key });
    } catch (error) {
      throw new PosternError(ErrorCodes.SMTP_CERTIFICATE_INVALID, `Node's TLS refuses this certificate and key: ${(error as Error).message}`);
    }
    await this.#saveCertificate(cert, key, 'uploaded');
    return describe(cert, key, 'uploaded');
  }

  async #saveCertificate(cert: string, key: string, source: 'generated' | 'uploaded'): Promise<void> {
    await this.#row();
    await this.store.db
      .updateTable('relay_settings')
      .set({ tls_cert: cert, tls_key_enc: this.store.secrets.encrypt(key, KEY_CONTEXT), tls_cert_source: source, updated_at: Date.now() })
      .where('id', '=', ROW_ID)
      .execute();
    await this.#changed();
  }
}

function describe(cert: string, key: string, source: 'generated' | 'uploaded'): RelayCertificate {
  const leaf = new X509Certificate(cert);
  const names = (leaf.subjectAltName ?? '')
    .split(/,\s*/)
    .map((entry) => entry.replace(/^(DNS|IP Address):/, ''))
    .filter(Boolean);
  return {
    cert,
    key,
    source,
    subject: leaf.subject.replace(/\n/g, ', '),
    issuer: leaf.issuer.replace(/\n/g, ', '),
    validTo: new Date(leaf.validTo),
    fingerprint256: leaf.fingerprint256,
    names,
  };
}

/** The form's fields for saved settings (what the Relay Settings page shows, what the API patches onto). */
export function relaySettingsInputOf(settings: RelaySettingsView): RelaySettingsInput {
  return {
    allowedNetworks: settings.allowedNetworks.join('\n'),
    maxMessageSizeMb: String(Math.round((settings.maxMessageSize / 1024 / 1024) * 100) / 100),
    allowInsecureAuth: settings.allowInsecureAuth,
    allowLegacyTls: settings.allowLegacyTls,
    bareNewlines: settings.bareNewlines,
  };
}
