/**
 * Postern's error catalogue. Every error the product raises on purpose carries a stable `code`
 * (`POSTERN_<AREA>_<WHAT>`) so that callers branch on codes, tests assert codes, log lines name them
 * (`errorCode`), and the Remote UI can map a code to advice. `cause` keeps the underlying error for logs; it
 * is never shown verbatim to a device. What each code means to an administrator, and what to do about it,
 * is in docs/errors.md; test/errors-catalogue.test.ts keeps the two in step and fails on a code nothing uses.
 *
 * One entry per code, each with its doc comment. A new code is added with its section in docs/errors.md.
 */

export const ErrorCodes = {
  /** An environment setting is missing or invalid. */
  CONFIG_INVALID: 'POSTERN_CONFIG_INVALID',
  /** The encryption key does not decrypt what the database holds. */
  STORE_KEY_MISMATCH: 'POSTERN_STORE_KEY_MISMATCH',
  /** The encryption key file or setting is malformed. */
  STORE_KEY_INVALID: 'POSTERN_STORE_KEY_INVALID',
  /** The data directory is a file, cannot be created, or cannot be written. */
  STORE_DATA_DIR_UNUSABLE: 'POSTERN_STORE_DATA_DIR_UNUSABLE',
  /** The database could not be opened or reached at start-up (PostgreSQL refused, unknown host, bad login). */
  STORE_UNAVAILABLE: 'POSTERN_STORE_UNAVAILABLE',
  /** A ciphertext failed authentication (tampered or wrong key). */
  STORE_DECRYPT_FAILED: 'POSTERN_STORE_DECRYPT_FAILED',
  /** PEM text given by the administrator holds no certificate, one that does not parse, or not a CA where one is needed. */
  TLS_CERTIFICATE_INVALID: 'POSTERN_TLS_CERTIFICATE_INVALID',
  /** The configured authorization server endpoint is not acceptable. */
  OAUTH_ENDPOINT_INVALID: 'POSTERN_OAUTH_ENDPOINT_INVALID',
  /** The authorization server could not be reached (TLS, DNS, timeout, refused), or answered 5xx/429. */
  OAUTH_CONNECTION_FAILED: 'POSTERN_OAUTH_CONNECTION_FAILED',
  /** The authorization server answered with an OAuth error. */
  OAUTH_PROVIDER_ERROR: 'POSTERN_OAUTH_PROVIDER_ERROR',
  /** The authorization server's answer did not conform to the protocol (not an OAuth server, a web page, a proxy). */
  OAUTH_INVALID_RESPONSE: 'POSTERN_OAUTH_INVALID_RESPONSE',
  /** No usable token: the account is not registered, expired, or its provider is turned off. */
  OAUTH_TOKEN_UNAVAILABLE: 'POSTERN_OAUTH_TOKEN_UNAVAILABLE',
  /** A sending account named by a route, a device account or a message no longer exists. */
  OAUTH_ACCOUNT_NOT_FOUND: 'POSTERN_OAUTH_ACCOUNT_NOT_FOUND',
  /** A pasted authorization response was refused before any token request. */
  OAUTH_AUTHORIZATION_RESPONSE_REJECTED: 'POSTERN_OAUTH_AUTHORIZATION_RESPONSE_REJECTED',
  /** An app-only credential given by the administrator is not usable: a service account key, a certificate or its private key. */
  OAUTH_CREDENTIAL_INVALID: 'POSTERN_OAUTH_CREDENTIAL_INVALID',
  /** The outbound HTTP proxy answered CONNECT with a status other than 200 (e.g. 407, 403). */
  PROXY_CONNECT_REFUSED: 'POSTERN_PROXY_CONNECT_REFUSED',
  /** The outbound HTTP proxy could not be reached (DNS, refused, timeout, TLS to the proxy). */
  PROXY_UNREACHABLE: 'POSTERN_PROXY_UNREACHABLE',
  /** A request from the Remote UI failed validation. */
  WEB_INVALID_INPUT: 'POSTERN_WEB_INVALID_INPUT',
  /** Remote UI: a response would have carried a header Node refuses to write (a control character from input). */
  WEB_INVALID_HEADER: 'POSTERN_WEB_INVALID_HEADER',
  /** Relay: a session was closed with 421 because a limit was reached (sessions per address, commands, time). */
  SMTP_SESSION_LIMIT: 'POSTERN_SMTP_SESSION_LIMIT',
  /** Relay: a device sent MAIL without authenticating from a network that is not allowed (530 5.7.0). */
  SMTP_AUTH_REQUIRED: 'POSTERN_SMTP_AUTH_REQUIRED',
  /** Relay: a device's user name or password was wrong, or it asked to act as someone else (535 5.7.8). */
  SMTP_AUTH_FAILED: 'POSTERN_SMTP_AUTH_FAILED',
  /** Relay: too many failed device logins from an address (454 4.7.0). */
  SMTP_AUTH_THROTTLED: 'POSTERN_SMTP_AUTH_THROTTLED',
  /** Relay: a device account's Allowed Sender Addresses do not include the MAIL FROM address (550 5.7.1). */
  SMTP_SENDER_NOT_ALLOWED: 'POSTERN_SMTP_SENDER_NOT_ALLOWED',
  /** Relay: the relay could not check a login or read a device's settings (database failure; 454 / 451). */
  SMTP_LOCAL_ERROR: 'POSTERN_SMTP_LOCAL_ERROR',
  /** Relay: the message is larger than the maximum message size (552 5.3.4). */
  SMTP_MESSAGE_TOO_BIG: 'POSTERN_SMTP_MESSAGE_TOO_BIG',
  /** Relay / delivery: the header block is too large (over 256 KiB at the relay: 552 5.3.4; over 1 MiB for the sender policy: 554 5.6.0). */
  SMTP_HEADER_TOO_BIG: 'POSTERN_SMTP_HEADER_TOO_BIG',
  /** Relay: the message holds NUL bytes (554 5.6.0). */
  SMTP_NUL_BYTES: 'POSTERN_SMTP_NUL_BYTES',
  /** Relay: the message holds a bare CR or LF and the relay is set to reject those (554 5.6.0). */
  SMTP_BARE_NEWLINE: 'POSTERN_SMTP_BARE_NEWLINE',
  /** Relay: the relay certificate or key given by the administrator is not usable. */
  SMTP_CERTIFICATE_INVALID: 'POSTERN_SMTP_CERTIFICATE_INVALID',
  /** Delivery: the upstream server could not be reached or the session broke (network, TLS, timeout). */
  SMTP_UPSTREAM_CONNECTION: 'POSTERN_SMTP_UPSTREAM_CONNECTION',
  /** Delivery: the upstream server refused the XOAUTH2/OAUTHBEARER login, also after one forced token refresh. */
  SMTP_UPSTREAM_AUTH_FAILED: 'POSTERN_SMTP_UPSTREAM_AUTH_FAILED',
  /** Delivery: the upstream lacks what Postern needs: an OAuth SASL mechanism, STARTTLS, 8BITMIME/SMTPUTF8 for this message, or (Microsoft Graph) Mail.ReadWrite for it. */
  SMTP_UPSTREAM_UNSUPPORTED: 'POSTERN_SMTP_UPSTREAM_UNSUPPORTED',
  /** Delivery: the upstream server refused the message (a 4xx or 5xx reply after MAIL, RCPT or DATA). */
  SMTP_UPSTREAM_REJECTED: 'POSTERN_SMTP_UPSTREAM_REJECTED',
  /** Queue: a delivery's lease was taken over (by a later pass or another instance) before its outcome was recorded. */
  QUEUE_LEASE_LOST: 'POSTERN_QUEUE_LEASE_LOST',
  /** Queue: the spooled copy of a message is missing or unreadable. */
  QUEUE_SPOOL_MISSING: 'POSTERN_QUEUE_SPOOL_MISSING',
  /** Queue: the message could not be committed to stable storage (the device gets 451 and keeps it). */
  QUEUE_COMMIT_FAILED: 'POSTERN_QUEUE_COMMIT_FAILED',
  /** Queue: the queue is shutting down and takes no new messages (421 4.3.2). */
  QUEUE_STOPPING: 'POSTERN_QUEUE_STOPPING',
  /** Backup: the data directory holds no Postern data (no database, or for PostgreSQL no node-id or key). */
  BACKUP_NO_DATA: 'POSTERN_BACKUP_NO_DATA',
  /** Backup: the key for the data is neither in the data directory nor in POSTERN_SECRET_KEY (restore: neither in the backup nor set). */
  BACKUP_NO_KEY: 'POSTERN_BACKUP_NO_KEY',
  /** Backup: the target directory is not empty (a backup is written only into a new or empty directory). */
  BACKUP_TARGET_NOT_EMPTY: 'POSTERN_BACKUP_TARGET_NOT_EMPTY',
  /** Backup: the target is a file, or cannot be read or created (restore: the data directory is a file or unreadable). */
  BACKUP_TARGET_UNUSABLE: 'POSTERN_BACKUP_TARGET_UNUSABLE',
  /** Backup: copying failed (full disk, I/O error, a damaged database); what was written is removed. */
  BACKUP_FAILED: 'POSTERN_BACKUP_FAILED',
  /** Restore: the directory is not a complete Postern backup (no or unreadable manifest.json, unknown format). */
  BACKUP_NOT_A_BACKUP: 'POSTERN_BACKUP_NOT_A_BACKUP',
  /** Restore: the manifest has no checksums (an older backup), and --no-verify was not given. */
  BACKUP_UNVERIFIED: 'POSTERN_BACKUP_UNVERIFIED',
  /** Restore: a file of the backup differs from its checksum or size, is missing, or is not in the manifest. */
  BACKUP_DAMAGED: 'POSTERN_BACKUP_DAMAGED',
  /** Restore: a gateway is running on the data directory (its pid file names a live process). */
  BACKUP_GATEWAY_RUNNING: 'POSTERN_BACKUP_GATEWAY_RUNNING',
  /** Restore: the data directory is not empty, and --force was not given. */
  BACKUP_DATA_DIR_NOT_EMPTY: 'POSTERN_BACKUP_DATA_DIR_NOT_EMPTY',
  /** Restore: the backup's database (SQLite or PostgreSQL) is not the kind the configuration uses. */
  BACKUP_DATABASE_MISMATCH: 'POSTERN_BACKUP_DATABASE_MISMATCH',
  /** Restore: copying into place failed (full disk, I/O error); the data directory is as it was. */
  BACKUP_RESTORE_FAILED: 'POSTERN_BACKUP_RESTORE_FAILED',
  /** API: the request carries no `Authorization: Bearer` token (401). */
  API_TOKEN_MISSING: 'POSTERN_API_TOKEN_MISSING',
  /** API: the bearer token is malformed or unknown (401). */
  API_TOKEN_INVALID: 'POSTERN_API_TOKEN_INVALID',
  /** API: the bearer token is past its expiry (401). */
  API_TOKEN_EXPIRED: 'POSTERN_API_TOKEN_EXPIRED',
  /** API: the bearer token was revoked on the API Tokens page (401). */
  API_TOKEN_REVOKED: 'POSTERN_API_TOKEN_REVOKED',
  /** API: the token's scope does not allow this request (403). */
  API_SCOPE_INSUFFICIENT: 'POSTERN_API_SCOPE_INSUFFICIENT',
  /** API: too many failed authentications from this address, or too many requests from this token (429). */
  API_RATE_LIMITED: 'POSTERN_API_RATE_LIMITED',
  /** API: no such endpoint, message or device account (404). */
  API_NOT_FOUND: 'POSTERN_API_NOT_FOUND',
  /** API: the request conflicts with the current state (a message being sent, a device name taken) (409). */
  API_CONFLICT: 'POSTERN_API_CONFLICT',
  /** API: an unexpected failure inside Postern (500); logged with the reference the answer gives. */
  API_UNEXPECTED: 'POSTERN_API_UNEXPECTED',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class PosternError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PosternError';
    this.code = code;
  }
}

export function isPosternError(error: unknown, code?: ErrorCode): error is PosternError {
  return error instanceof PosternError && (code === undefined || error.code === code);
}
