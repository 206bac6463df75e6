/**
 * The outbound HTTP proxy for Postern's OAuth HTTP requests (connection check, device code, token,
 * refresh): which proxy, with which credentials, and which hosts are reached directly (NO_PROXY).
 *
 * Inputs: POSTERN_HTTPS_PROXY, else the conventional https_proxy / HTTPS_PROXY; no_proxy / NO_PROXY. Read
 * and validated once, by config.ts at start-up. Outputs: an OutboundProxy that src/oauth/http.ts turns into
 * an undici ProxyAgent (an HTTP CONNECT tunnel, RFC 9110 §9.3.6, with the TLS to the authorization server
 * inside it), and a typed ProxyTunnelError that connection-failure classification turns into advice that
 * names the proxy.
 *
 * Secrets: the proxy's user name and password are kept in a private field and leave this module only as
 * the Proxy-Authorization header value; `toJSON` and `util.inspect` show scheme://host:port, so logging
 * the configuration cannot print them.
 *
 * Known limits: the upstream SMTP delivery (src/smtp-out) does not use the proxy. NO_PROXY matches host
 * names as written in the URL (no DNS lookups); IP addresses and CIDR ranges match only IP-literal hosts.
 */
import { STATUS_CODES } from 'node:http';
import { inspect } from 'node:util';
import ipaddr from 'ipaddr.js';
import { ErrorCodes, PosternError } from './errors.js';

/** The environment variable a proxy setting was read from (named in errors and advice). */
export type ProxySetting = 'POSTERN_HTTPS_PROXY' | 'https_proxy' | 'HTTPS_PROXY';

/** One NO_PROXY entry. */
export type NoProxyRule =
  | { type: 'any'; port: number | undefined }
  /** A host name and every name below it (`example.com`, `.example.com` and `*.example.com` all mean this). */
  | { type: 'domain'; domain: string; port: number | undefined }
  | { type: 'address'; range: [ipaddr.IPv4 | ipaddr.IPv6, number]; port: number | undefined };

export class OutboundProxy {
  /** `Basic …` when the URL carried credentials. Private: never part of toJSON or inspect output. */
  readonly #authorization: string | undefined;

  private constructor(
    /** `http://host:port` or `https://host:port`, without credentials: what logs and messages show. */
    readonly origin: string,
    /** `host:port`, as the Remote UI's reasons name the proxy. */
    readonly address: string,
    readonly setting: ProxySetting,
    readonly noProxy: readonly NoProxyRule[],
    /** NO_PROXY as given (for the start-up log line). */
    readonly noProxyText: string,
    authorization: string | undefined,
  ) {
    this.#authorization = authorization;
  }

  /**
   * Parses a proxy URL, `http://[user:password@]host[:port]` (or `https://…`; the port defaults to the
   * scheme's, 80 or 443). Throws POSTERN_CONFIG_INVALID, one line naming `setting`, when the value is not usable.
   */
  static parse(value: string, setting: ProxySetting, noProxy = '', noProxySetting: 'NO_PROXY' | 'no_proxy' = 'NO_PROXY'): OutboundProxy {
    const text = value.trim();
    const expected = `${setting} must be a proxy URL like http://proxy.example.com:3128 or http://user:password@proxy.example.com:3128`;
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new PosternError(ErrorCodes.CONFIG_INVALID, `${expected}, got "${withoutCredentials(text)}"`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new PosternError(ErrorCodes.CONFIG_INVALID, `${expected} (http:// or https://), got "${withoutCredentials(text)}"`);
    }
    if (url.hostname === '' || (url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
      throw new PosternError(ErrorCodes.CONFIG_INVALID, `${expected}, without a path or query, got "${withoutCredentials(text)}"`);
    }
    let authorization: string | undefined;
    if (url.username !== '' || url.password !== '') {
      let user: string;
      let password: string;
      try {
        user = decodeURIComponent(url.username);
        password = decodeURIComponent(url.password);
      } catch {
        throw new PosternError(ErrorCodes.CONFIG_INVALID, `${setting}: the user name or password is not correctly percent-encoded`);
      }
      authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    }
    const port = url.port !== '' ? url.port : url.protocol === 'https:' ? '443' : '80';
    const address = `${url.hostname}:${port}`;
    const rules = parseNoProxy(noProxy, noProxySetting);
    return new OutboundProxy(`${url.protocol}//${address}`, address, setting, rules, noProxy.trim(), authorization);
  }

  /** The Proxy-Authorization header value, for the proxy dispatcher only. */
  get authorization(): string | undefined {
    return this.#authorization;
  }

  get hasCredentials(): boolean {
    return this.#authorization !== undefined;
  }

  /** False when NO_PROXY says `url` is to be reached directly. */
  isUsedFor(url: URL): boolean {
    return !matchesNoProxy(url, this.noProxy);
  }

  toJSON(): Record<string, unknown> {
    return { proxy: this.origin, setting: this.setting, credentials: this.hasCredentials ? '[redacted]' : 'none', noProxy: this.noProxyText };
  }

  [inspect.custom](): string {
    return `OutboundProxy ${JSON.stringify(this.toJSON())}`;
  }
}

/** The value for an error message: anything before the last `@` may be a password, so it goes. */
function withoutCredentials(text: string): string {
  const at = text.lastIndexOf('@');
  if (at === -1) return text;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(text)?.[0] ?? '';
  return `${scheme}[redacted]${text.slice(at)}`;
}

/**
 * Parses NO_PROXY as curl and undici read it: entries separated by commas (or white space); `*` for every
 * host; a host name matching itself and the names below it, with or without a leading `.` or `*.`; an IP
 * address or CIDR range; each with an optional `:port`. Throws POSTERN_CONFIG_INVALID (one line) on an unreadable entry.
 */
export function parseNoProxy(text: string, setting = 'NO_PROXY'): NoProxyRule[] {
  const rules: NoProxyRule[] = [];
  for (const raw of text.split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    const rule = parseNoProxyEntry(entry);
    if (!rule) {
      throw new PosternError(ErrorCodes.CONFIG_INVALID, 
        `${setting}: "${raw.trim()}" is not a host name, domain (.example.com), IP address, CIDR range or *, each with an optional :port`,
      );
    }
    rules.push(rule);
  }
  return rules;
}

const HOST_NAME = /^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

function parseNoProxyEntry(entry: string): NoProxyRule | undefined {
  let host = entry;
  let port: number | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  if (bracketed) {
    host = bracketed[1]!;
    port = bracketed[2] === undefined ? undefined : Number(bracketed[2]);
  } else if ((entry.match(/:/g) ?? []).length === 1) {
    // One colon: host:port. More than one: a bare IPv6 address (or range) without a port.
    const index = entry.lastIndexOf(':');
    if (!/^\d+$/.test(entry.slice(index + 1))) return undefined;
    host = entry.slice(0, index);
    port = Number(entry.slice(index + 1));
  }
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  if (host === '*') return { type: 'any', port };
  if (host.includes('/')) {
    try {
      return { type: 'address', range: ipaddr.parseCIDR(host), port };
    } catch {
      return undefined;
    }
  }
  if (ipaddr.isValid(host) && (host.includes(':') || ipaddr.IPv4.isValidFourPartDecimal(host))) {
    const address = ipaddr.parse(host);
    return { type: 'address', range: [address, address.kind() === 'ipv4' ? 32 : 128], port };
  }
  const domain = host.replace(/^\*?\./, '').replace(/\.$/, '');
  return HOST_NAME.test(domain) ? { type: 'domain', domain, port } : undefined;
}

/** True when a NO_PROXY rule says `url` is reached directly, not through the proxy. */
export function matchesNoProxy(url: URL, rules: readonly NoProxyRule[]): boolean {
  if (rules.length === 0) return false;
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
  const port = url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  let address: ipaddr.IPv4 | ipaddr.IPv6 | undefined;
  try {
    address = ipaddr.isValid(host) ? ipaddr.process(host) : undefined;
  } catch {
    address = undefined;
  }
  return rules.some((rule) => {
    if (rule.port !== undefined && rule.port !== port) return false;
    switch (rule.type) {
      case 'any':
        return true;
      case 'domain':
        return host === rule.domain || host.endsWith(`.${rule.domain}`);
      case 'address': {
        const [network, bits] = rule.range;
        return address !== undefined && address.kind() === network.kind() && address.match(network, bits);
      }
    }
  });
}

/**
 * The proxy did not open the tunnel: it answered CONNECT with a status other than 200 (`statusCode`), or
 * it could not be reached at all (`statusCode` undefined; `cause` says why).
 */
export class ProxyTunnelError extends PosternError {
  constructor(
    readonly proxy: OutboundProxy,
    /** The `host:port` Postern asked the proxy to connect to. */
    readonly target: string,
    readonly statusCode: number | undefined,
    options?: { cause?: unknown },
  ) {
    super(
      statusCode === undefined ? ErrorCodes.PROXY_UNREACHABLE : ErrorCodes.PROXY_CONNECT_REFUSED,
      statusCode === undefined
        ? `Could not reach the proxy at ${proxy.address}`
        : `The proxy at ${proxy.address} answered CONNECT ${target} with ${statusCode} ${STATUS_CODES[statusCode] ?? ''}`.trimEnd(),
      options,
    );
    this.name = 'ProxyTunnelError';
  }

  /** `407 Proxy Authentication Required`. */
  get status(): string | undefined {
    return this.statusCode === undefined ? undefined : `${this.statusCode} ${STATUS_CODES[this.statusCode] ?? ''}`.trimEnd();
  }
}
