/**
 * Configuration from the environment, validated once at start-up (README.md, Configuration).
 * An invalid value stops start-up with one line that names the setting.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { z } from 'zod';
import { ErrorCodes, PosternError } from './errors.js';
import { OutboundProxy } from './outbound-proxy.js';
import { parsePemCertificates } from './tls/certificates.js';

export interface Config {
  /** Directory for the SQLite database, the encryption key and generated certificates. */
  dataDir: string;
  /** Address the Remote UI and the relay listen on. */
  host: string;
  httpPort: number;
  smtpPort: number;
  /** `postgres://…` selects PostgreSQL; undefined means SQLite in the data directory. */
  databaseUrl: string | undefined;
  /** The first administrator's password, used only while no administrator exists. */
  adminPassword: string | undefined;
  /** 32-byte key for secrets at rest; when undefined a key file in the data directory is used. */
  secretKey: Buffer | undefined;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** PEM file of extra CAs (Node's NODE_EXTRA_CA_CERTS), trusted in addition to the system roots. */
  extraCaFile: string | undefined;
  /** Outbound HTTP proxy for the OAuth HTTP requests (not for upstream SMTP); undefined: connect directly. */
  outboundProxy?: OutboundProxy | undefined;
  /** Queue retry schedule and concurrency; defaults (QUEUE_DEFAULTS) when absent. */
  queue?: Partial<QueueTuning>;
  /** How long before expiry access tokens are refreshed (POSTERN_TOKEN_REFRESH_AHEAD_SECONDS); default 5 min. */
  tokenRefreshAheadMs?: number;
  /** Microsoft Graph's base address (POSTERN_GRAPH_URL); https://graph.microsoft.com/v1.0 when absent. */
  graphUrl?: string | undefined;
  /** The Remote UI over HTTPS as well (POSTERN_HTTPS_PORT); undefined: plain HTTP only, the default. */
  https?: HttpsConfig | undefined;
  /** The relay's session limits; defaults (RELAY_LIMIT_DEFAULTS) for what is absent. */
  relayLimits?: Partial<RelayLimits>;
  /** Requests each API token may make per minute (POSTERN_API_REQUESTS_PER_MINUTE); default 600. */
  apiRequestsPerMinute?: number | undefined;
  /** POSTERN_METRICS_TOKEN: when set, /metrics answers only requests that carry it as a bearer token. */
  metricsToken?: string | undefined;
  /**
   * POSTERN_QUEUE_LEASE_SECONDS: how long a delivery's lease lasts before another instance may take the
   * message over (renewed every third of it while the delivery runs); default QUEUE_LEASE_DEFAULT_MS.
   */
  queueLeaseMs?: number | undefined;
  /**
   * POSTERN_SMTP_PROXY_PROTOCOL: addresses of load balancers that connect to the relay with a PROXY protocol
   * (v1) header; from them the header is required and names the device. Undefined: no PROXY protocol.
   */
  smtpProxyFrom?: string[] | undefined;
  /**
   * POSTERN_HTTP_TRUSTED_PROXIES: addresses of reverse proxies whose X-Forwarded-For the Remote UI believes
   * (the client address for sign-in throttling and the log). Undefined: the peer address counts.
   */
  httpTrustedProxies?: string[] | undefined;
}

/** Default lease of a delivery: long enough for any delivery between two renewals, short for a take-over. */
export const QUEUE_LEASE_DEFAULT_MS = 60_000;

/** A comma- or space-separated list of IP addresses (no names: a proxy is trusted by its address). */
const addressList = (name: string) =>
  z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value.trim() === '') return undefined;
      const list = value.split(/[\s,]+/).filter(Boolean);
      const bad = list.find((entry) => isIP(entry) === 0);
      if (bad !== undefined) {
        ctx.addIssue({ code: 'custom', message: `${name} must list IP addresses (comma-separated), got "${bad}"` });
        return z.NEVER;
      }
      return list;
    });

/**
 * What one client may take of the relay (smtp-in/relay-server.ts): sessions at once from one address, and how
 * long or how many commands a session may go on without getting anywhere.
 */
export interface RelayLimits {
  /** Sessions at once, all addresses together (smtp-server's maxClients). */
  maxConnections: number;
  /** Sessions at once from one IP address (POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS). */
  maxConnectionsPerAddress: number;
  /** Commands a session may send before AUTH succeeds or MAIL is accepted from an Allowed Network. */
  maxCommandsBeforeAuth: number;
  /** NOOP, RSET, HELP, VRFY, EXPN a session may send between accepted messages. */
  maxIdleCommands: number;
  /** How long a session may go without an accepted message, from connect or its last one (POSTERN_SMTP_SESSION_TIMEOUT_SECONDS). */
  sessionTimeoutMs: number;
}

export const RELAY_LIMIT_DEFAULTS: RelayLimits = {
  maxConnections: 1000,
  maxConnectionsPerAddress: 20,
  maxCommandsBeforeAuth: 25,
  maxIdleCommands: 30,
  sessionTimeoutMs: 10 * 60_000,
};

export interface HttpsConfig {
  /** POSTERN_HTTPS_PORT; 0 picks a free port. */
  port: number;
  /**
   * POSTERN_HTTPS_CERT and POSTERN_HTTPS_KEY, read and checked at start-up; undefined: Postern's own
   * certificate, the one the relay uses for STARTTLS.
   */
  certificate: { certFile: string; keyFile: string; cert: string; key: string } | undefined;
}

/**
 * The retry schedule is data, configurable as RFC 5321 §4.5.4.1 asks: the first retry after `retryBaseMs`,
 * doubling up to `retryMaxMs` (≥ 30 min in steady state), giving up after `lifetimeMs` (4–5 days).
 */
export interface QueueTuning {
  retryBaseMs: number;
  retryMaxMs: number;
  lifetimeMs: number;
  /** Deliveries in progress at once (one upstream connection each). */
  concurrency: number;
}

export const QUEUE_DEFAULTS: QueueTuning = {
  retryBaseMs: 60_000,
  retryMaxMs: 30 * 60_000,
  lifetimeMs: 5 * 24 * 60 * 60_000,
  concurrency: 4,
};

/** Upper bounds of the queue's durations, in seconds: beyond them a value is a typo, not a choice. */
export const QUEUE_BOUNDS = {
  /** A wait between attempts longer than a day would leave a message untried for most of its lifetime. */
  retrySeconds: 24 * 60 * 60,
  /** RFC 5321 §4.5.4.1 suggests 4–5 days; a month is the most any sender should wait to hear of a failure. */
  lifetimeSeconds: 30 * 24 * 60 * 60,
} as const;

/** A duration in seconds, positive (at least a millisecond) and at most `maxSeconds` (`maxLabel` says it in words). */
const seconds = (name: string, maxSeconds: number, maxLabel: string) =>
  z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value.trim() === '') return undefined;
      const n = Number(value.trim());
      // Below half a millisecond the value would round to 0: as good as zero.
      if (!/^\d+(\.\d+)?$/.test(value.trim()) || !Number.isFinite(n) || n * 1000 < 0.5) {
        ctx.addIssue({ code: 'custom', message: `${name} must be a positive number of seconds, got "${value}"` });
        return z.NEVER;
      }
      if (n > maxSeconds) {
        ctx.addIssue({ code: 'custom', message: `${name} must be at most ${maxSeconds} seconds (${maxLabel}), got "${value}"` });
        return z.NEVER;
      }
      return Math.round(n * 1000);
    });

/**
 * A whole number from `min` to `max`; empty or unset gives undefined. `unit` words the range in the error
 * ("seconds" gives "a whole number of seconds from 30 to 86400").
 */
const wholeNumber = (name: string, min: number, max: number, unit?: string) =>
  z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value.trim() === '') return undefined;
      const n = Number(value.trim());
      if (!/^\d+$/.test(value.trim()) || n < min || n > max) {
        ctx.addIssue({ code: 'custom', message: `${name} must be a whole number${unit ? ` of ${unit}` : ''} from ${min} to ${max}, got "${value}"` });
        return z.NEVER;
      }
      return n;
    });

const port = <Fallback extends number | undefined>(name: string, fallback: Fallback) =>
  z
    .string()
    .optional()
    .transform((value, ctx): number | Fallback => {
      if (value === undefined || value.trim() === '') return fallback;
      if (!/^\d+$/.test(value.trim())) {
        ctx.addIssue({ code: 'custom', message: `${name} must be a port number from 0 to 65535, got "${value}"` });
        return z.NEVER;
      }
      const n = Number(value.trim());
      if (n > 65535) {
        ctx.addIssue({ code: 'custom', message: `${name} must be a port number from 0 to 65535, got "${value}"` });
        return z.NEVER;
      }
      return n;
    });

const schema = z.object({
  POSTERN_DATA_DIR: z
    .string()
    .optional()
    .transform((value) => resolve(value && value.trim() !== '' ? value : './data')),
  POSTERN_HOST: z
    .string()
    .optional()
    .transform((value, ctx) => {
      const host = value && value.trim() !== '' ? value.trim() : '0.0.0.0';
      if (isIP(host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(host)) {
        ctx.addIssue({ code: 'custom', message: `POSTERN_HOST must be an IP address or host name, got "${value}"` });
        return z.NEVER;
      }
      return host;
    }),
  POSTERN_HTTP_PORT: port('POSTERN_HTTP_PORT', 8080),
  POSTERN_SMTP_PORT: port('POSTERN_SMTP_PORT', 2525),
  POSTERN_HTTPS_PORT: port('POSTERN_HTTPS_PORT', undefined),
  POSTERN_HTTPS_CERT: z.string().optional(),
  POSTERN_HTTPS_KEY: z.string().optional(),
  POSTERN_DATABASE_URL: z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value.trim() === '') return undefined;
      if (!/^postgres(ql)?:\/\//.test(value.trim())) {
        ctx.addIssue({
          code: 'custom',
          message: 'POSTERN_DATABASE_URL must start with postgres:// or postgresql:// (leave it unset for the embedded SQLite database)',
        });
        return z.NEVER;
      }
      return value.trim();
    }),
  POSTERN_ADMIN_PASSWORD: z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value === '') return undefined;
      if (value.length < 8) {
        ctx.addIssue({ code: 'custom', message: 'POSTERN_ADMIN_PASSWORD must be at least 8 characters long' });
        return z.NEVER;
      }
      return value;
    }),
  POSTERN_SECRET_KEY: z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value.trim() === '') return undefined;
      const text = value.trim();
      const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
      if (key.length !== 32) {
        ctx.addIssue({
          code: 'custom',
          message: 'POSTERN_SECRET_KEY must be 32 bytes, written as 64 hex digits or base64 (e.g. `openssl rand -base64 32`)',
        });
        return z.NEVER;
      }
      return key;
    }),
  POSTERN_LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
      error: (issue) =>
        `POSTERN_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "${String(issue.input)}"`,
    })
    .optional()
    .default('info'),
  NODE_EXTRA_CA_CERTS: z.string().optional(),
  POSTERN_QUEUE_RETRY_BASE_SECONDS: seconds('POSTERN_QUEUE_RETRY_BASE_SECONDS', QUEUE_BOUNDS.retrySeconds, '1 day'),
  POSTERN_QUEUE_RETRY_MAX_SECONDS: seconds('POSTERN_QUEUE_RETRY_MAX_SECONDS', QUEUE_BOUNDS.retrySeconds, '1 day'),
  POSTERN_QUEUE_LIFETIME_SECONDS: seconds('POSTERN_QUEUE_LIFETIME_SECONDS', QUEUE_BOUNDS.lifetimeSeconds, '30 days'),
  POSTERN_QUEUE_CONCURRENCY: wholeNumber('POSTERN_QUEUE_CONCURRENCY', 1, 64),
  POSTERN_QUEUE_LEASE_SECONDS: seconds('POSTERN_QUEUE_LEASE_SECONDS', 60 * 60, '1 hour'),
  POSTERN_SMTP_PROXY_PROTOCOL: addressList('POSTERN_SMTP_PROXY_PROTOCOL'),
  POSTERN_HTTP_TRUSTED_PROXIES: addressList('POSTERN_HTTP_TRUSTED_PROXIES'),
  POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS: wholeNumber('POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS', 1, RELAY_LIMIT_DEFAULTS.maxConnections),
  POSTERN_SMTP_SESSION_TIMEOUT_SECONDS: wholeNumber('POSTERN_SMTP_SESSION_TIMEOUT_SECONDS', 30, 86_400, 'seconds').transform((n) => (n === undefined ? undefined : n * 1000)),
  // Unset: the token service's own default, 5 minutes.
  POSTERN_API_REQUESTS_PER_MINUTE: wholeNumber('POSTERN_API_REQUESTS_PER_MINUTE', 1, 1_000_000),
  // RFC 6750 §2.1's b64token, long enough not to be guessed.
  POSTERN_METRICS_TOKEN: z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value === '') return undefined;
      if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(value) || value.length < 16) {
        ctx.addIssue({
          code: 'custom',
          message: 'POSTERN_METRICS_TOKEN must be at least 16 characters of letters, digits and -._~+/ (e.g. `openssl rand -hex 32`)',
        });
        return z.NEVER;
      }
      return value;
    }),
  POSTERN_TOKEN_REFRESH_AHEAD_SECONDS: wholeNumber('POSTERN_TOKEN_REFRESH_AHEAD_SECONDS', 60, 3000, 'seconds').transform((n) => (n ?? 300) * 1000),
  // Microsoft Graph's address for accounts whose Delivery Method is Microsoft Graph: a national cloud's
  // (https://graph.microsoft.us/v1.0, https://microsoftgraph.chinacloudapi.cn/v1.0) instead of the global one.
  POSTERN_GRAPH_URL: z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value === '') return undefined;
      let url: URL | undefined;
      try {
        url = new URL(value);
      } catch {
        url = undefined;
      }
      if (!url || url.protocol !== 'https:' || url.username || url.password || url.search || url.hash) {
        ctx.addIssue({ code: 'custom', message: 'POSTERN_GRAPH_URL must be an https:// address without user, query or fragment, e.g. https://graph.microsoft.us/v1.0' });
        return z.NEVER;
      }
      return url.href.replace(/\/+$/, '');
    }),
});

/**
 * The outbound proxy: POSTERN_HTTPS_PROXY, else the conventional https_proxy / HTTPS_PROXY (lower case
 * first, as curl and undici read them), with no_proxy / NO_PROXY. An empty value counts as unset.
 */
function outboundProxyFrom(env: NodeJS.ProcessEnv): OutboundProxy | undefined {
  const setting = (['POSTERN_HTTPS_PROXY', 'https_proxy', 'HTTPS_PROXY'] as const).find((name) => (env[name] ?? '').trim() !== '');
  if (!setting) return undefined;
  const noProxySetting = (['no_proxy', 'NO_PROXY'] as const).find((name) => (env[name] ?? '').trim() !== '') ?? 'NO_PROXY';
  try {
    return OutboundProxy.parse(env[setting]!, setting, env[noProxySetting] ?? '', noProxySetting);
  } catch (error) {
    throw new PosternError(ErrorCodes.CONFIG_INVALID, `Invalid configuration: ${(error as Error).message}`);
  }
}

/**
 * The Remote UI over HTTPS: POSTERN_HTTPS_PORT turns it on. POSTERN_HTTPS_CERT and POSTERN_HTTPS_KEY (both or
 * neither) are PEM files, read and checked here, so that a wrong file stops start-up with one line instead of
 * failing every handshake later.
 */
function httpsFrom(
  value: { POSTERN_HTTPS_PORT: number | undefined; POSTERN_HTTPS_CERT?: string | undefined; POSTERN_HTTPS_KEY?: string | undefined },
  otherPorts: number[],
): HttpsConfig | undefined {
  const invalid = (message: string) => new PosternError(ErrorCodes.CONFIG_INVALID, `Invalid configuration: ${message.replace(/\s+/g, ' ').trim()}`);
  const certFile = value.POSTERN_HTTPS_CERT?.trim() ? resolve(value.POSTERN_HTTPS_CERT.trim()) : undefined;
  const keyFile = value.POSTERN_HTTPS_KEY?.trim() ? resolve(value.POSTERN_HTTPS_KEY.trim()) : undefined;
  if (certFile && !keyFile) throw invalid('POSTERN_HTTPS_KEY must be set when POSTERN_HTTPS_CERT is: both or neither (the PEM private key of that certificate)');
  if (keyFile && !certFile) throw invalid('POSTERN_HTTPS_CERT must be set when POSTERN_HTTPS_KEY is: both or neither (the PEM certificate of that key)');
  const port = value.POSTERN_HTTPS_PORT;
  if (port === undefined) {
    if (certFile) throw invalid('POSTERN_HTTPS_PORT must be set to use POSTERN_HTTPS_CERT and POSTERN_HTTPS_KEY (without it the Remote UI is plain HTTP only)');
    return undefined;
  }
  if (port !== 0 && otherPorts.includes(port)) {
    throw invalid(`POSTERN_HTTPS_PORT must differ from POSTERN_HTTP_PORT and POSTERN_SMTP_PORT, got "${port}"`);
  }
  if (!certFile || !keyFile) return { port, certificate: undefined };

  const read = (setting: string, file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied for this user' : code === 'EISDIR' ? 'it is a directory' : (error as Error).message;
      throw invalid(`${setting} cannot be read: ${file}: ${reason}`);
    }
  };
  const cert = read('POSTERN_HTTPS_CERT', certFile);
  const keyPem = read('POSTERN_HTTPS_KEY', keyFile);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(parsePemCertificates(cert)[0]!.pem);
  } catch (error) {
    throw invalid(`POSTERN_HTTPS_CERT must be a PEM certificate file (${certFile}): ${(error as Error).message}`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(keyPem);
  } catch {
    throw invalid(`POSTERN_HTTPS_KEY must be a PEM private key without a passphrase (${keyFile})`);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw invalid(`POSTERN_HTTPS_KEY (${keyFile}) is not the private key of the certificate in POSTERN_HTTPS_CERT (${certFile}); the server certificate must come first in that file`);
  }
  const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  try {
    createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
  } catch (error) {
    throw invalid(`POSTERN_HTTPS_CERT and POSTERN_HTTPS_KEY are refused by Node's TLS: ${(error as Error).message}`);
  }
  return { port, certificate: { certFile, keyFile, cert, key } };
}

/**
 * Settings that are each valid but contradict one another. The retry schedule doubles from the base up to
 * the maximum, within the lifetime (RFC 5321 §4.5.4.1): a maximum below the base, or a lifetime shorter than
 * the first wait, is refused (the defaults count for settings left unset). Two listeners cannot share a port.
 */
function checkCombinations(value: {
  POSTERN_HTTP_PORT: number;
  POSTERN_SMTP_PORT: number;
  POSTERN_QUEUE_RETRY_BASE_SECONDS: number | undefined;
  POSTERN_QUEUE_RETRY_MAX_SECONDS: number | undefined;
  POSTERN_QUEUE_LIFETIME_SECONDS: number | undefined;
}): void {
  const invalid = (message: string) => new PosternError(ErrorCodes.CONFIG_INVALID, `Invalid configuration: ${message}`);
  const shown = (ms: number | undefined, fallbackMs: number) => (ms === undefined ? `${fallbackMs / 1000}, the default` : String(ms / 1000));
  const base = value.POSTERN_QUEUE_RETRY_BASE_SECONDS ?? QUEUE_DEFAULTS.retryBaseMs;
  const max = value.POSTERN_QUEUE_RETRY_MAX_SECONDS ?? QUEUE_DEFAULTS.retryMaxMs;
  const lifetime = value.POSTERN_QUEUE_LIFETIME_SECONDS ?? QUEUE_DEFAULTS.lifetimeMs;
  const baseShown = shown(value.POSTERN_QUEUE_RETRY_BASE_SECONDS, QUEUE_DEFAULTS.retryBaseMs);
  if (max < base) {
    throw invalid(
      `POSTERN_QUEUE_RETRY_MAX_SECONDS must be at least POSTERN_QUEUE_RETRY_BASE_SECONDS (${baseShown}), got ${shown(value.POSTERN_QUEUE_RETRY_MAX_SECONDS, QUEUE_DEFAULTS.retryMaxMs)}`,
    );
  }
  if (lifetime < base) {
    throw invalid(
      `POSTERN_QUEUE_LIFETIME_SECONDS must be at least POSTERN_QUEUE_RETRY_BASE_SECONDS (${baseShown}), got ${shown(value.POSTERN_QUEUE_LIFETIME_SECONDS, QUEUE_DEFAULTS.lifetimeMs)}`,
    );
  }
  if (value.POSTERN_SMTP_PORT !== 0 && value.POSTERN_SMTP_PORT === value.POSTERN_HTTP_PORT) {
    throw invalid(`POSTERN_SMTP_PORT must differ from POSTERN_HTTP_PORT, got "${value.POSTERN_SMTP_PORT}" for both`);
  }
}

/**
 * Reads and validates the configuration. Throws a PosternError whose message is a single line naming the
 * first invalid setting.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const input = Object.fromEntries(
    Object.entries(env).filter(([key]) => key.startsWith('POSTERN_') || key === 'NODE_EXTRA_CA_CERTS'),
  );
  if (input.POSTERN_LOG_LEVEL === '') delete input.POSTERN_LOG_LEVEL;
  const result = schema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const setting = String(issue.path[0] ?? 'configuration');
    const message = issue.message.startsWith(setting) ? issue.message : `${setting}: ${issue.message}`;
    throw new PosternError(ErrorCodes.CONFIG_INVALID, `Invalid configuration: ${message}`);
  }
  const value = result.data;
  checkCombinations(value);
  const outboundProxy = outboundProxyFrom(env);
  const https = httpsFrom(value, [value.POSTERN_HTTP_PORT, value.POSTERN_SMTP_PORT]);
  return {
    dataDir: value.POSTERN_DATA_DIR,
    host: value.POSTERN_HOST,
    httpPort: value.POSTERN_HTTP_PORT,
    smtpPort: value.POSTERN_SMTP_PORT,
    databaseUrl: value.POSTERN_DATABASE_URL,
    adminPassword: value.POSTERN_ADMIN_PASSWORD,
    secretKey: value.POSTERN_SECRET_KEY,
    logLevel: value.POSTERN_LOG_LEVEL,
    extraCaFile: value.NODE_EXTRA_CA_CERTS && value.NODE_EXTRA_CA_CERTS !== '' ? value.NODE_EXTRA_CA_CERTS : undefined,
    outboundProxy,
    queue: {
      ...(value.POSTERN_QUEUE_RETRY_BASE_SECONDS !== undefined ? { retryBaseMs: value.POSTERN_QUEUE_RETRY_BASE_SECONDS } : {}),
      ...(value.POSTERN_QUEUE_RETRY_MAX_SECONDS !== undefined ? { retryMaxMs: value.POSTERN_QUEUE_RETRY_MAX_SECONDS } : {}),
      ...(value.POSTERN_QUEUE_LIFETIME_SECONDS !== undefined ? { lifetimeMs: value.POSTERN_QUEUE_LIFETIME_SECONDS } : {}),
      ...(value.POSTERN_QUEUE_CONCURRENCY !== undefined ? { concurrency: value.POSTERN_QUEUE_CONCURRENCY } : {}),
    },
    tokenRefreshAheadMs: value.POSTERN_TOKEN_REFRESH_AHEAD_SECONDS,
    graphUrl: value.POSTERN_GRAPH_URL,
    apiRequestsPerMinute: value.POSTERN_API_REQUESTS_PER_MINUTE,
    metricsToken: value.POSTERN_METRICS_TOKEN,
    queueLeaseMs: value.POSTERN_QUEUE_LEASE_SECONDS,
    smtpProxyFrom: value.POSTERN_SMTP_PROXY_PROTOCOL,
    httpTrustedProxies: value.POSTERN_HTTP_TRUSTED_PROXIES,
    https,
    relayLimits: {
      ...(value.POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS !== undefined ? { maxConnectionsPerAddress: value.POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS } : {}),
      ...(value.POSTERN_SMTP_SESSION_TIMEOUT_SECONDS !== undefined ? { sessionTimeoutMs: value.POSTERN_SMTP_SESSION_TIMEOUT_SECONDS } : {}),
    },
  };
}
