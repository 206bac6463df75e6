/**
 * Structured logging (pino). Secrets never reach a log line: known secret fields are redacted wherever they
 * appear, and errors from the OAuth and SMTP libraries are reduced to safe summaries by `describeError`
 * before they are logged, because their `cause` can carry whole token responses.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

const SECRET_KEYS = [
  'access_token',
  'accessToken',
  'refresh_token',
  'refreshToken',
  'id_token',
  'idToken',
  'device_code',
  'deviceCode',
  'user_code',
  'userCode',
  'authorization_code',
  'authorizationCode',
  'code_verifier',
  'codeVerifier',
  'client_secret',
  'clientSecret',
  'password',
  'pass',
  'secret',
  'token',
  'authorization',
  'proxy-authorization',
  'proxyAuthorization',
  'cookie',
  'set-cookie',
];

const SECRET_KEY_SET: ReadonlySet<string> = new Set(SECRET_KEYS);
const CENSOR = '[redacted]';
/** Secret keys are looked for at the top level and one or two levels down (as in `*.*.key`). */
const DEEPEST_LEVEL = 2;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function redactLevel(value: unknown, level: number): unknown {
  if (Array.isArray(value)) {
    if (level >= DEEPEST_LEVEL) return value;
    let copy: unknown[] | undefined;
    value.forEach((item: unknown, i) => {
      const redacted = redactLevel(item, level + 1);
      if (redacted !== item) (copy ??= [...value])[i] = redacted;
    });
    return copy ?? value;
  }
  if (!isPlainObject(value)) return value;
  let copy: Record<string, unknown> | undefined;
  for (const key of Object.keys(value)) {
    const item = value[key];
    let redacted = item;
    if (SECRET_KEY_SET.has(key)) redacted = item === undefined ? item : CENSOR;
    else if (level < DEEPEST_LEVEL && typeof item === 'object' && item !== null) redacted = redactLevel(item, level + 1);
    if (redacted !== item) (copy ??= { ...value })[key] = redacted;
  }
  return copy ?? value;
}

/**
 * A log line's fields with every secret key (SECRET_KEYS) at the top level or one or two levels down, in
 * plain objects and arrays, replaced by "[redacted]". Copies only what it changes: a line without secrets
 * is passed through as it is, at the cost of a look at its keys (pino's wildcard paths, `*.key` and
 * `*.*.key`, cost ~100 µs a line: about a tenth of the processor time relaying a message took).
 */
export function redactSecrets<T extends object>(fields: T): T {
  return redactLevel(fields, 0) as T;
}

/**
 * Logs go to stdout as JSON lines. Without a given destination they are written asynchronously (pino's
 * sonic-boom): lines logged while a write is in flight are joined into the next one, so that under load
 * logging does not cost the relay a write system call per line, and when idle each line appears at once.
 * The buffer is flushed on a normal stop; after a crash (kill -9) the last lines may be missing, while the
 * queue and its Log page, which live in the database, are not affected.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'postern' },
      // Top-level keys by pino's own redaction, which covers child loggers' bindings too (cheap without
      // wildcards); the levels below by redactSecrets, which looks at a line's keys only (pino's wildcard
      // paths cost ~100 µs a line).
      redact: { paths: [...SECRET_KEYS], censor: CENSOR },
      formatters: { log: redactSecrets },
      // Idempotent: many call sites hand over describeError(error) already, and describing a summary again
      // used to print "[object Object]" in place of the reason.
      serializers: { err: (error: unknown) => (isErrorSummary(error) ? error : describeError(error)) },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

export interface ErrorSummary {
  type: string;
  message: string;
  code?: string;
  /** For system errors: the call that failed, and the address, port or host name it was about. */
  syscall?: string;
  address?: string;
  port?: number;
  hostname?: string;
  cause?: ErrorSummary;
}

/** A summary made by describeError (a plain object, not an Error), as opposed to an error still to describe. */
function isErrorSummary(value: unknown): value is ErrorSummary {
  return (
    typeof value === 'object' &&
    value !== null &&
    !(value instanceof Error) &&
    typeof (value as ErrorSummary).type === 'string' &&
    typeof (value as ErrorSummary).message === 'string'
  );
}

const TOKEN_LIKE = /\b(?:eyJ[\w-]+\.[\w-]+\.[\w-]*|ya29\.[\w.-]+|[A-Za-z0-9_-]{40,})\b/g;
/** The user:password part of a URL such as a proxy URL (http://user:password@proxy:3128). */
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]+@/gi;

/** Removes anything that looks like a bearer token, a JWT or a URL's credentials from free text. */
export function scrubSecrets(text: string): string {
  return text.replace(TOKEN_LIKE, '[redacted]').replace(URL_CREDENTIALS, '$1[redacted]@');
}

/** A loggable summary of an error: type, message, code and the cause chain; never response bodies. */
export function describeError(error: unknown, depth = 0): ErrorSummary {
  if (!(error instanceof Error)) return { type: typeof error, message: scrubSecrets(String(error)) };
  const summary: ErrorSummary = { type: error.name, message: scrubSecrets(error.message) };
  const { code, syscall, address, port, hostname } = error as { code?: unknown; syscall?: unknown; address?: unknown; port?: unknown; hostname?: unknown };
  if (typeof code === 'string') summary.code = code;
  if (typeof syscall === 'string') summary.syscall = syscall;
  if (typeof address === 'string') summary.address = address;
  if (typeof port === 'number') summary.port = port;
  if (typeof hostname === 'string') summary.hostname = hostname;
  // AggregateError (a connection tried over IPv6 and IPv4): the first attempt's error says why.
  const cause = error.cause instanceof Error ? error.cause : error instanceof AggregateError && error.errors[0] instanceof Error ? error.errors[0] : undefined;
  if (depth < 3 && cause) summary.cause = describeError(cause, depth + 1);
  return summary;
}
