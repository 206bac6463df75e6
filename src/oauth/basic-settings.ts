/**
 * Edit Basic Settings, as both OAuth settings screens send it: each provider's input, what the two have in
 * common (Use, and the TLS options for the authorization server), and how a refused save answers, field by
 * field. A module of its own so that each provider's authorization and the Remote UI import it, not each other.
 */
import type { OAuthAccountsTable } from '../store/schema.js';

/** Use OAuth 2.0 and the seed's two TLS options, the same on both screens. */
export interface UseAndTlsInput {
  enabled: boolean;
  verifyServerCertificate: boolean;
  /** Meaningful only with Verify Server Certificate on; saved off otherwise. */
  addCnToVerificationItems: boolean;
}

export interface MicrosoftSettingsInput extends UseAndTlsInput {
  endpoint: string;
  clientId: string;
}

export interface GoogleSettingsInput extends UseAndTlsInput {
  clientId: string;
  /** Empty keeps the stored secret. */
  clientSecret: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
}

/** Why a field was refused, by the form field's name, in words for the form. */
export type FieldErrors = Partial<Record<string, string>>;

/** A save either happened (with what the screen needs to know about it) or was refused field by field. */
export type SaveSettingsResult<Saved extends object = object> = ({ ok: true } & Saved) | { ok: false; errors: FieldErrors };

/** The account columns for Use and the TLS options. */
export function useAndTlsColumns(input: UseAndTlsInput): Pick<OAuthAccountsTable, 'enabled' | 'verify_server_certificate' | 'add_cn_to_verification_items'> {
  return {
    enabled: input.enabled ? 1 : 0,
    verify_server_certificate: input.verifyServerCertificate ? 1 : 0,
    add_cn_to_verification_items: input.verifyServerCertificate && input.addCnToVerificationItems ? 1 : 0,
  };
}

/** Use and the TLS options as the audit log records them. */
export function useAndTlsAudit(input: UseAndTlsInput): string {
  const onOff = (value: boolean) => (value ? 'on' : 'off');
  return `Use=${onOff(input.enabled)} Verify=${onOff(input.verifyServerCertificate)} AddCN=${onOff(input.verifyServerCertificate && input.addCnToVerificationItems)}`;
}
