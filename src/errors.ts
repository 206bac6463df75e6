/**
 * Postern's error catalogue. Every error the product raises on purpose carries a stable `code`
 * (`POSTERN_<AREA>_<WHAT>`) so that callers branch on codes, tests assert codes, and the Remote UI can map
 * a code to advice. `cause` keeps the underlying error for logs; it is never shown verbatim to a device.
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
  /** The configured authorization server endpoint is not acceptable. */
  OAUTH_ENDPOINT_INVALID: 'POSTERN_OAUTH_ENDPOINT_INVALID',
  /** The authorization server could not be reached (TLS, DNS, timeout, refused). */
  OAUTH_CONNECTION_FAILED: 'POSTERN_OAUTH_CONNECTION_FAILED',
  /** The authorization server answered with an OAuth error. */
  OAUTH_PROVIDER_ERROR: 'POSTERN_OAUTH_PROVIDER_ERROR',
  /** The authorization server's answer did not conform to the protocol. */
  OAUTH_INVALID_RESPONSE: 'POSTERN_OAUTH_INVALID_RESPONSE',
  /** No usable token: the account is not registered, expired, or its provider is turned off. */
  OAUTH_TOKEN_UNAVAILABLE: 'POSTERN_OAUTH_TOKEN_UNAVAILABLE',
  /** A pasted authorization response was refused before any token request. */
  OAUTH_AUTHORIZATION_RESPONSE_REJECTED: 'POSTERN_OAUTH_AUTHORIZATION_RESPONSE_REJECTED',
  /** The outbound HTTP proxy answered CONNECT with a status other than 200 (e.g. 407, 403). */
  PROXY_CONNECT_REFUSED: 'POSTERN_PROXY_CONNECT_REFUSED',
  /** The outbound HTTP proxy could not be reached (DNS, refused, timeout, TLS to the proxy). */
  PROXY_UNREACHABLE: 'POSTERN_PROXY_UNREACHABLE',
  /** A request from the Remote UI failed validation. */
  WEB_INVALID_INPUT: 'POSTERN_WEB_INVALID_INPUT',
  /** Relay: a device sent MAIL without authenticating from a network that is not allowed (530 5.7.0). */
  SMTP_AUTH_REQUIRED: 'POSTERN_SMTP_AUTH_REQUIRED',
  /** Relay: a device's user name or password was wrong (535 5.7.8). */
  SMTP_AUTH_FAILED: 'POSTERN_SMTP_AUTH_FAILED',
  /** Relay: too many failed device logins from an address (454 4.7.0). */
  SMTP_AUTH_THROTTLED: 'POSTERN_SMTP_AUTH_THROTTLED',
  /** Relay: the message is larger than the maximum message size (552 5.3.4). */
  SMTP_MESSAGE_TOO_BIG: 'POSTERN_SMTP_MESSAGE_TOO_BIG',
  /** Relay: the message holds a bare CR or LF and the relay is set to reject those (554 5.6.0). */
  SMTP_BARE_NEWLINE: 'POSTERN_SMTP_BARE_NEWLINE',
  /** Relay: the relay certificate or key given by the administrator is not usable. */
  SMTP_CERTIFICATE_INVALID: 'POSTERN_SMTP_CERTIFICATE_INVALID',
  /** Delivery: the upstream server could not be reached or the session broke (network, TLS, timeout). */
  SMTP_UPSTREAM_CONNECTION: 'POSTERN_SMTP_UPSTREAM_CONNECTION',
  /** Delivery: the upstream server refused the XOAUTH2/OAUTHBEARER login, also after one forced token refresh. */
  SMTP_UPSTREAM_AUTH_FAILED: 'POSTERN_SMTP_UPSTREAM_AUTH_FAILED',
  /** Delivery: the upstream server offers no OAuth SASL mechanism (or no STARTTLS where it is required). */
  SMTP_UPSTREAM_UNSUPPORTED: 'POSTERN_SMTP_UPSTREAM_UNSUPPORTED',
  /** Delivery: the upstream server refused the message (a 4xx or 5xx reply after MAIL, RCPT or DATA). */
  SMTP_UPSTREAM_REJECTED: 'POSTERN_SMTP_UPSTREAM_REJECTED',
  /** Queue: the spooled copy of a message is missing or unreadable. */
  QUEUE_SPOOL_MISSING: 'POSTERN_QUEUE_SPOOL_MISSING',
  /** Queue: the message could not be committed to stable storage (the device gets 451 and keeps it). */
  QUEUE_COMMIT_FAILED: 'POSTERN_QUEUE_COMMIT_FAILED',
  /** Queue: the queue is shutting down and takes no new messages (421 4.3.2). */
  QUEUE_STOPPING: 'POSTERN_QUEUE_STOPPING',
  /** Backup: the data directory holds no Postern data (no database, or for PostgreSQL no node-id or key). */
  BACKUP_NO_DATA: 'POSTERN_BACKUP_NO_DATA',
  /** Backup: the key for the data is neither in the data directory nor in POSTERN_SECRET_KEY. */
  BACKUP_NO_KEY: 'POSTERN_BACKUP_NO_KEY',
  /** Backup: the target directory is not empty (a backup is written only into a new or empty directory). */
  BACKUP_TARGET_NOT_EMPTY: 'POSTERN_BACKUP_TARGET_NOT_EMPTY',
  /** Backup: the target is a file, or cannot be read or created. */
  BACKUP_TARGET_UNUSABLE: 'POSTERN_BACKUP_TARGET_UNUSABLE',
  /** Backup: copying failed (full disk, I/O error, a damaged database); what was written is removed. */
  BACKUP_FAILED: 'POSTERN_BACKUP_FAILED',
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
  /** API: too many failed authentications from this address (429). */
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
