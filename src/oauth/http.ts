/**
 * HTTP for the OAuth protocol steps: undici's fetch with a connection pool whose TLS settings follow the
 * account's Verify Server Certificate / Add CN to Verification Items options and the trusted CAs.
 * Handed to oauth4webapi through its `customFetch` hook.
 *
 * With an outbound proxy configured, requests to hosts not listed in NO_PROXY go through an undici
 * ProxyAgent: an HTTP CONNECT tunnel to the proxy, and inside it the TLS to the authorization server with
 * exactly the direct path's options (`requestTls`). A proxy that refuses the CONNECT or cannot be reached
 * surfaces as a ProxyTunnelError naming the proxy (see docs/decisions/010-outbound-proxy-connect-errors.md).
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import * as oauth from 'oauth4webapi';
import type { Agent, Dispatcher, Pool, ProxyAgent } from 'undici';
import { ProxyTunnelError, type OutboundProxy } from '../outbound-proxy.js';
import { tlsClientOptions, type TlsPolicy, type TrustStore } from '../tls/trust.js';

/** Connect + response limits; the device grant and token requests are small and should be quick. */
export const HTTP_TIMEOUT_MS = 15_000;
const CONNECT_TIMEOUT_MS = 10_000;

export type Fetch = (url: string, init: RequestInit) => Promise<Response>;

type Undici = typeof import('undici');
let undiciModule: Promise<Undici> | undefined;
/**
 * undici is loaded at the first OAuth HTTP request (a token refresh, a sign-in, a webhook), not at start:
 * its fetch, with its WebAssembly HTTP parser, is several MB of a gateway that mostly sits idle
 * (docs/decisions/026-memory-footprint.md).
 */
function loadUndici(): Promise<Undici> {
  // undici is CommonJS: its module.exports is `default` both under Node and in the bundled build (scripts/bundle.mjs).
  return (undiciModule ??= import('undici').then((module) => ((module as { default?: Undici }).default ?? module) as Undici));
}

export interface HttpOptions {
  [oauth.customFetch]: Fetch;
  signal?: AbortSignal;
}

/** The dispatchers of one TLS configuration: direct, and through the proxy when one is configured. */
interface Dispatchers {
  direct: Agent;
  viaProxy: ProxyAgent | undefined;
}

/**
 * Keeps one undici Agent (and, with a proxy, one ProxyAgent) per distinct TLS configuration (policy + CA
 * set), replacing them when CAs change.
 */
export class OAuthHttp {
  readonly #agents = new Map<string, Dispatchers>();

  constructor(
    private readonly trust: TrustStore,
    private readonly proxy?: OutboundProxy,
  ) {}

  async fetchFor(policy: TlsPolicy): Promise<Fetch> {
    const undici = await loadUndici();
    const ca = await this.trust.caList();
    const key = [
      policy.verifyServerCertificate ? 1 : 0,
      policy.addCnToVerificationItems ? 1 : 0,
      createHash('sha256').update(ca.join('\n')).digest('hex'),
    ].join(':');
    let agents = this.#agents.get(key);
    if (!agents) {
      // A CA change makes earlier agents unreachable by key; close those for this policy.
      for (const [otherKey, other] of this.#agents) {
        if (otherKey.startsWith(key.slice(0, 4))) {
          this.#agents.delete(otherKey);
          void closeAll(other);
        }
      }
      const limits = { headersTimeout: HTTP_TIMEOUT_MS, bodyTimeout: HTTP_TIMEOUT_MS, keepAliveTimeout: 10_000 };
      const requestTls = { ...tlsClientOptions(policy, ca), timeout: CONNECT_TIMEOUT_MS };
      agents = {
        direct: new undici.Agent({ connect: requestTls, ...limits }),
        viaProxy: this.proxy ? proxyAgent(undici, this.proxy, requestTls, ca, limits) : undefined,
      };
      this.#agents.set(key, agents);
    }
    const { direct, viaProxy } = agents;
    const proxy = this.proxy;
    return (url, init) =>
      undici.fetch(url, {
        ...(init as object),
        signal: init.signal ?? AbortSignal.timeout(HTTP_TIMEOUT_MS),
        dispatcher: viaProxy && proxy?.isUsedFor(new URL(url)) ? viaProxy : direct,
      } as never) as unknown as Promise<Response>;
  }

  async options(policy: TlsPolicy): Promise<HttpOptions> {
    return { [oauth.customFetch]: await this.fetchFor(policy) };
  }

  async close(): Promise<void> {
    const agents = [...this.#agents.values()];
    this.#agents.clear();
    await Promise.all(agents.map(closeAll));
  }
}

async function closeAll({ direct, viaProxy }: Dispatchers): Promise<void> {
  await Promise.all([direct.close().catch(() => undefined), viaProxy?.close().catch(() => undefined)]);
}

/**
 * A ProxyAgent whose tunnelled TLS follows the account's options (`requestTls`, the same options the direct
 * Agent connects with). The proxy itself, when it is an https:// proxy, is always verified against the
 * trusted CAs: it is the network's, not the account's.
 *
 * undici reports a refused CONNECT only as "Proxy response (407) !== 200 when HTTP Tunneling" and an
 * unreachable proxy as the bare socket error, which reads as if the authorization server were unreachable.
 * The client factory therefore wraps the proxy pool's `connect` (the CONNECT request) so that both become a
 * ProxyTunnelError carrying the status or the cause (decision record 010).
 */
function proxyAgent(
  undici: Undici,
  proxy: OutboundProxy,
  requestTls: ReturnType<typeof tlsClientOptions> & { timeout: number },
  ca: string[],
  limits: { headersTimeout: number; bodyTimeout: number; keepAliveTimeout: number },
): ProxyAgent {
  return new undici.ProxyAgent({
    uri: proxy.origin,
    ...(proxy.authorization ? { token: proxy.authorization } : {}),
    requestTls,
    proxyTls: { minVersion: 'TLSv1.2', rejectUnauthorized: true, ca, timeout: CONNECT_TIMEOUT_MS },
    ...limits,
    // A proxy that accepts the connection but never answers CONNECT must not hold a socket for undici's 300 s default.
    clientFactory: (origin, options) => reportingTunnelFailures(new undici.Pool(origin, { ...options, headersTimeout: HTTP_TIMEOUT_MS }), proxy),
  });
}

function reportingTunnelFailures(pool: Pool, proxy: OutboundProxy): Pool {
  const connect = pool.connect.bind(pool) as (options: Dispatcher.ConnectOptions) => Promise<Dispatcher.ConnectData>;
  const tunnel = async (options: Dispatcher.ConnectOptions): Promise<Dispatcher.ConnectData> => {
    const target = String(options.path ?? '');
    // undici names an https:// proxy given by IP address in SNI, which RFC 6066 forbids and Node reports with a
    // DeprecationWarning (DEP0123) on stderr; without a name it sends no SNI, and the certificate is still checked.
    const { servername, ...rest } = options as Dispatcher.ConnectOptions & { servername?: string };
    let data: Dispatcher.ConnectData;
    try {
      data = await connect(servername && isIP(servername) !== 0 ? rest : options);
    } catch (error) {
      throw new ProxyTunnelError(proxy, target, undefined, { cause: error });
    }
    // undici tunnels only on exactly 200 (RFC 9110 allows any 2xx); anything else is reported here, with its status.
    if (data.statusCode !== 200) {
      data.socket.on('error', () => undefined).destroy();
      throw new ProxyTunnelError(proxy, target, data.statusCode);
    }
    return data;
  };
  // Both forms of Dispatcher#connect, although ProxyAgent uses the promise form.
  pool.connect = ((options: Dispatcher.ConnectOptions, callback?: (error: Error | null, data: Dispatcher.ConnectData | null) => void) => {
    const result = tunnel(options);
    if (!callback) return result;
    result.then(
      (data) => callback(null, data),
      (error: Error) => callback(error, null),
    );
    return undefined;
  }) as Pool['connect'];
  return pool;
}
