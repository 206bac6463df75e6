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
  /** A request from the Remote UI failed validation. */
  WEB_INVALID_INPUT: 'POSTERN_WEB_INVALID_INPUT',
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
