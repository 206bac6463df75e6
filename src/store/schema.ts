/**
 * The database schema as Kysely types. Columns are chosen to mean the same on SQLite and PostgreSQL:
 * timestamps are integer milliseconds since the epoch, flags are integers 0/1, identifiers are text.
 * Columns ending in `_enc` hold SecretBox ciphertexts, never clear text.
 */
import type { Generated } from 'kysely';

export type Role = 'Administrator' | 'NetworkAdministrator' | 'GeneralUser';

export interface UsersTable {
  id: string;
  username: string;
  password_hash: string;
  role: Role;
  created_at: number;
  updated_at: number;
  last_login_at: number | null;
}

export interface SessionsTable {
  id: string;
  /** The session object, encrypted (it holds the CSRF secret and pending authorization attempts). */
  data_enc: string;
  expires_at: number;
}

export interface MetaTable {
  key: string;
  value: string;
}

export type ProviderId = 'microsoft' | 'google';

export interface OAuthAccountsTable {
  /** One account per provider today: 'microsoft' or 'google'. */
  id: string;
  provider: ProviderId;
  enabled: number;
  verify_server_certificate: number;
  add_cn_to_verification_items: number;
  /** Microsoft: the Entra ID authorization server endpoint (…/oauth2/v2.0). */
  endpoint: string | null;
  client_id: string | null;
  client_secret_enc: string | null;
  /** Google: overridable endpoints. */
  authorization_endpoint: string | null;
  token_endpoint: string | null;

  connection_status: string | null;
  connection_detail: string | null;
  connection_checked_at: number | null;

  token_status: string;
  /** The provider's own error text (e.g. AADSTS70008 …), shown as detail. */
  token_error: string | null;
  /** Plain-words advice for the administrator. */
  token_advice: string | null;
  token_status_at: number;

  /** The signed-in mailbox (id_token email / preferred_username). */
  mailbox: string | null;
  display_name: string | null;
  access_token_enc: string | null;
  access_token_expires_at: number | null;
  refresh_token_enc: string | null;
  granted_scope: string | null;
  token_issued_at: number | null;

  refresh_failures: number;
  next_refresh_attempt_at: number | null;
  /** Cross-instance single-flight: who refreshes now, and until when the lease holds. */
  refresh_lease_owner: string | null;
  refresh_lease_until: number | null;

  created_at: number;
  updated_at: number;
}

export type DeviceAuthorizationStatus = 'Pending' | 'Completed' | 'Declined' | 'CodeExpired' | 'Failed' | 'Cancelled';

export interface DeviceAuthorizationsTable {
  account_id: string;
  device_code_enc: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete: string | null;
  message: string | null;
  /** Seconds between polls (RFC 8628 §3.5); raised by 5 on each slow_down. */
  poll_interval: number;
  started_at: number;
  expires_at: number;
  next_poll_at: number;
  status: DeviceAuthorizationStatus;
  detail: string | null;
  network_failures: number;
  poll_lease_owner: string | null;
  poll_lease_until: number | null;
  updated_at: number;
}

export interface AuthorizationAttemptsTable {
  /** SHA-256 of the `state` value, hex (the state itself is a bearer secret until used). */
  state_hash: string;
  account_id: string;
  session_id: string;
  code_verifier_enc: string;
  redirect_uri: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
}

export interface CaCertificatesTable {
  id: string;
  subject: string;
  issuer: string;
  fingerprint256: string;
  valid_from: number;
  valid_to: number;
  pem: string;
  created_at: number;
}

export interface AuditLogTable {
  id: Generated<number>;
  at: number;
  actor: string | null;
  action: string;
  detail: string | null;
}

export interface Database {
  users: UsersTable;
  sessions: SessionsTable;
  meta: MetaTable;
  oauth_accounts: OAuthAccountsTable;
  device_authorizations: DeviceAuthorizationsTable;
  authorization_attempts: AuthorizationAttemptsTable;
  ca_certificates: CaCertificatesTable;
  audit_log: AuditLogTable;
}
