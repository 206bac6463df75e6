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
  /** Sessions of this user that signed in before this time (ms) are ended; null: none are. */
  sessions_not_before: number | null;
}

export interface SessionsTable {
  id: string;
  /** The session object, encrypted (it holds the CSRF secret and pending authorization attempts). */
  data_enc: string;
  expires_at: number;
  /** The signed-in user, or null before login. */
  user_id: string | null;
}

export interface MetaTable {
  key: string;
  value: string;
}

export type ProviderId = 'microsoft' | 'google';

/** Token Status, as the seed names it (docs/protocol.md §4.1); written only by OAuthAccounts.transition. */
export type TokenStatus = 'NotRegistered' | 'WaitingForAuthorization' | 'Active' | 'Expired' | 'Error';

/**
 * How an account is authorized: a person signs in (the seed's device code for Microsoft, authorization code
 * for Google), or the application itself with its own credential (Microsoft client credentials; a Google
 * service account with domain-wide delegation).
 */
export type AuthorizationType = 'delegated' | 'client-credentials' | 'service-account';

/** How a Microsoft account delivers: SMTP with XOAUTH2 (the seed's), or Microsoft Graph sendMail. */
export type DeliveryMethod = 'smtp' | 'graph';

export interface OAuthAccountsTable {
  /** The seed's accounts are 'microsoft' and 'google'; accounts added later have ids of their own. */
  id: string;
  provider: ProviderId;
  /** The administrator's name for the account ('' for the seed's accounts until one is given). */
  name: string;
  authorization_type: AuthorizationType;
  delivery_method: DeliveryMethod;
  /** Client credentials by certificate: the certificate uploaded to Entra ID (PEM) and its key (SecretBox). */
  client_certificate: string | null;
  client_key_enc: string | null;
  /** A Google service account's JSON key (SecretBox). */
  service_account_key_enc: string | null;
  /** The mailbox an application (client credentials, service account) sends as. */
  app_mailbox: string | null;
  /** Graph: the account has Mail.ReadWrite, so messages too large for one request go through a draft. */
  graph_large_messages: number;
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

  token_status: TokenStatus;
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

  /**
   * The authorization server's clock minus this host's, in ms, as last measured from its Date header
   * (oauth/clock-skew.ts); beyond ±2 minutes the status block warns. Null until first measured.
   */
  clock_offset_ms: number | null;
  /** The host whose Date header was compared. */
  clock_server_host: string | null;
  clock_checked_at: number | null;

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

/** How Postern reaches the upstream SMTP server: STARTTLS on 587, or implicit TLS on 465. */
export type UpstreamTlsMode = 'starttls' | 'tls';

/** E-Mail Settings: one row per sending account (id = account_id), its upstream SMTP server, sender and pace. */
export interface EmailSettingsTable {
  id: string;
  /** The sending account these settings belong to. */
  account_id: string;
  /**
   * 1 on the row of the Default account (where mail goes that no rule, device account or network routes
   * elsewhere); no row has it until a Default is chosen, and then the seed's Microsoft account is meant.
   */
  is_default: number;
  smtp_host: string;
  smtp_port: number;
  tls_mode: UpstreamTlsMode;
  verify_server_certificate: number;
  add_cn_to_verification_items: number;
  /** Sender E-Mail Address; null means the authorized mailbox. */
  sender_address: string | null;
  /** Other header From addresses a device may keep (Send As / "Send mail as"), one per line. */
  allowed_from_addresses: string;
  /** Pacing of the sending account; 0 = no limit. */
  messages_per_minute: number;
  updated_at: number;
  /** `host:port` the extensions below were seen at; null until a session reached the upstream. */
  upstream_extensions_target: string | null;
  /** The extensions of interest the upstream advertised after EHLO, space-separated (`8BITMIME SMTPUTF8`). */
  upstream_extensions: string | null;
  upstream_extensions_seen_at: number | null;
}

/** How the relay treats a bare CR or LF inside DATA (SMTP smuggling defence, docs/protocol.md §5.1). */
export type BareNewlinePolicy = 'normalize' | 'reject';

/** Relay Settings: one row (id 'default'). */
export interface RelaySettingsTable {
  id: string;
  /** CIDR ranges whose devices may send without AUTH, one per line. */
  allowed_networks: string;
  max_message_size: number;
  /** Legacy switch: AUTH PLAIN/LOGIN without STARTTLS. */
  allow_insecure_auth: number;
  /** Legacy switch: TLS 1.0/1.1 and weak ciphers for old devices. */
  allow_legacy_tls: number;
  bare_newlines: BareNewlinePolicy;
  /** The relay's STARTTLS certificate chain (PEM) and its key (SecretBox ciphertext). */
  tls_cert: string | null;
  tls_key_enc: string | null;
  tls_cert_source: 'generated' | 'uploaded' | null;
  /** JSON: Allowed Networks entry (as written) → sending account id; an entry not named sends through the Default. */
  network_accounts: string;
  updated_at: number;
}

/** Relay device accounts (AUTH PLAIN/LOGIN); passwords hashed with scrypt (store/passwords.ts). */
export interface RelayDevicesTable {
  id: string;
  username: string;
  password_hash: string;
  /** Allowed Sender Addresses (MAIL FROM), one per line: `local@domain` or `@domain`; empty = any sender. */
  allowed_senders: string;
  /** The sending account this device's mail goes through; null: the Default. */
  sending_account_id: string | null;
  created_at: number;
  updated_at: number;
  last_login_at: number | null;
}

/** Queue states, named as Postfix names its queues (docs/decisions/005-queue-states-leases-holds-and-bounces.md). */
export type QueueState = 'incoming' | 'active' | 'deferred' | 'held' | 'sent' | 'bounced';

/**
 * One relayed message. Its body is a file in the spool directory of the node that accepted it (SQLite), or
 * rows of `message_bodies` that every instance reads (PostgreSQL, `body_in_database` = 1).
 */
export interface QueueMessagesTable {
  id: string;
  /** The Postern node that accepted it; with a spooled body the only node that delivers it. */
  node_id: string;
  /** 1 when the body is in `message_bodies` (any instance delivers it); 0 (the default) for a spool file. */
  body_in_database: Generated<number>;
  /**
   * The sending account it was routed to when accepted; it is never sent through another. '' (a row written
   * by an older instance during an upgrade): the Default account.
   */
  account_id: Generated<string>;
  state: QueueState;
  /** The device's envelope sender (MAIL FROM); '' for the null sender. Bounces go here. */
  reverse_path: string;
  /** JSON array of the recipients still to deliver. */
  recipients: string;
  /** Bytes of the spooled (normalized) message. */
  size: number;
  body_8bit: number;
  smtputf8: number;
  header_from: string | null;
  subject: string | null;
  message_id_header: string | null;
  /** Who submitted it: `device <user name>` or the client address. */
  client: string;
  /** 1 for a delivery status notification Postern generated (never bounced itself). */
  is_bounce: number;
  attempts: number;
  received_at: number;
  next_attempt_at: number;
  /** After this a deferred message is returned to its sender (RFC 5321 §4.5.4.1: 4-5 days). */
  expires_at: number;
  lease_owner: string | null;
  lease_until: number | null;
  last_code: number | null;
  last_reply: string | null;
  last_advice: string | null;
  done_at: number | null;
}

export type DeliveryEvent = 'accepted' | 'sent' | 'deferred' | 'held' | 'bounced' | 'bounce-queued' | 'deleted' | 'retry' | 'released' | 'requeued';

/** The Log page: what happened to each message, with the upstream's reply. */
export interface DeliveryLogTable {
  id: Generated<number>;
  queue_id: string;
  at: number;
  event: DeliveryEvent;
  recipients: string | null;
  code: number | null;
  reply: string | null;
  advice: string | null;
}

/**
 * Pacing: when a delivery started for a pacing key (the sending account), kept while it is inside the sliding
 * 60-second window. Shared by every instance on the database (queue/pacing.ts).
 */
export interface PacingStartsTable {
  id: Generated<number>;
  pacing_key: string;
  started_at: number;
}

/** How a notification is written for its receiver (notify/payloads.ts). */
export type WebhookFormat = 'json' | 'teams' | 'slack';

/** Notifications: one row (id 'default'); the webhook URL may hold a secret token, so it is kept encrypted. */
export interface NotificationSettingsTable {
  id: string;
  webhook_url_enc: string | null;
  format: WebhookFormat;
  /** The events to send, comma-separated (notify/events.ts). */
  events: string;
  /** scheme://host[:port] of the Remote UI as the administrator reached it when saving; links start here. */
  link_base: string | null;
  updated_at: number;
  updated_by: string | null;
}

/**
 * What the notifier last decided for one event key (e.g. `token-expired:microsoft`): every change is a
 * conditional write on `version`, so of several instances on one database only one notifies (notify/outbox.ts).
 */
export interface NotificationStateTable {
  key: string;
  /** idle: nothing to report; pending: seen, not long enough to report; open: reported, not yet resolved. */
  phase: 'idle' | 'pending' | 'open';
  /** When the condition began (pending/open). */
  since: number | null;
  opened_at: number | null;
  /** Bounces: the last delivery_log id already reported. */
  cursor: number | null;
  version: number;
  updated_at: number;
}

/** One notification: the outbox while it is being delivered, then the record the Notifications page shows. */
export interface NotificationsTable {
  id: Generated<number>;
  event: string;
  phase: 'problem' | 'resolved' | 'test';
  title: string;
  /** The notice (JSON), rendered in the receiver's format at each attempt. */
  notice: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  next_attempt_at: number;
  lease_owner: string | null;
  lease_until: number | null;
  /** The receiver's last HTTP status, null for a network failure or before the first attempt. */
  http_status: number | null;
  /** The last answer in plain words. */
  result: string | null;
  created_at: number;
  done_at: number | null;
}

/** A message body in the database (PostgreSQL), in chunks of at most 256 KB (queue/database-bodies.ts). */
export interface MessageBodiesTable {
  message_id: string;
  /** 0, 1, 2, …: the chunks in order. */
  seq: number;
  data: Buffer;
}

/** One row, bumped by a trigger whenever a setting changes (PostgreSQL): what other instances poll. */
export interface SettingsVersionTable {
  id: number;
  version: number;
}

/** Sender Routing: an envelope sender (`user@domain`) or a whole domain (`@domain`) → sending account. */
export interface SenderRoutesTable {
  id: string;
  /** Lower case: `user@domain` or `@domain`. */
  pattern: string;
  account_id: string;
  created_at: number;
}

export interface Database {
  sender_routes: SenderRoutesTable;
  message_bodies: MessageBodiesTable;
  settings_version: SettingsVersionTable;
  email_settings: EmailSettingsTable;
  relay_settings: RelaySettingsTable;
  relay_devices: RelayDevicesTable;
  queue_messages: QueueMessagesTable;
  delivery_log: DeliveryLogTable;
  pacing_starts: PacingStartsTable;
  users: UsersTable;
  sessions: SessionsTable;
  meta: MetaTable;
  oauth_accounts: OAuthAccountsTable;
  device_authorizations: DeviceAuthorizationsTable;
  authorization_attempts: AuthorizationAttemptsTable;
  ca_certificates: CaCertificatesTable;
  audit_log: AuditLogTable;
  notification_settings: NotificationSettingsTable;
  notification_state: NotificationStateTable;
  notifications: NotificationsTable;
  api_tokens: ApiTokensTable;
}

/** API scopes, each including the one before: read (GET only), operate (+ queue retry/delete), administer. */
export type ApiScope = 'read' | 'operate' | 'administer';

/**
 * A bearer token for the JSON API (src/api/tokens.ts is the only reader). The token itself is never stored:
 * only its SHA-256 and its first characters (`prefix`), by which a presented token is found.
 */
export interface ApiTokensTable {
  id: string;
  name: string;
  scope: ApiScope;
  /** The token's first characters (`pst_` and 8 more): the lookup key, and how the page tells tokens apart. */
  prefix: string;
  /** SHA-256 of the whole token, hex. */
  token_hash: string;
  created_at: number;
  created_by: string;
  expires_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
  revoked_by: string | null;
}
