/**
 * HTTP for the OAuth protocol steps: undici's fetch with a connection pool whose TLS settings follow the
 * account's Verify Server Certificate / Add CN to Verification Items options and the trusted CAs.
 * Handed to oauth4webapi through its `customFetch` hook.
 */
import { createHash } from 'node:crypto';
import * as oauth from 'oauth4webapi';
import { Agent, fetch as undiciFetch } from 'undici';
import { tlsClientOptions, type TlsPolicy, type TrustStore } from '../tls/trust.js';

/** Connect + response limits; the device grant and token requests are small and should be quick. */
export const HTTP_TIMEOUT_MS = 15_000;
const CONNECT_TIMEOUT_MS = 10_000;

export type Fetch = (url: string, init: RequestInit) => Promise<Response>;

export interface HttpOptions {
  [oauth.customFetch]: Fetch;
  signal?: AbortSignal;
}

/** Keeps one undici Agent per distinct TLS configuration (policy + CA set), replacing it when CAs change. */
export class OAuthHttp {
  readonly #agents = new Map<string, Agent>();

  constructor(private readonly trust: TrustStore) {}

  async fetchFor(policy: TlsPolicy): Promise<Fetch> {
    const ca = await this.trust.caList();
    const key = [
      policy.verifyServerCertificate ? 1 : 0,
      policy.addCnToVerificationItems ? 1 : 0,
      createHash('sha256').update(ca.join('\n')).digest('hex'),
    ].join(':');
    let agent = this.#agents.get(key);
    if (!agent) {
      // A CA change makes earlier agents unreachable by key; close those for this policy.
      for (const [otherKey, other] of this.#agents) {
        if (otherKey.startsWith(key.slice(0, 4))) {
          this.#agents.delete(otherKey);
          void other.close().catch(() => undefined);
        }
      }
      agent = new Agent({
        connect: { ...tlsClientOptions(policy, ca), timeout: CONNECT_TIMEOUT_MS },
        headersTimeout: HTTP_TIMEOUT_MS,
        bodyTimeout: HTTP_TIMEOUT_MS,
        keepAliveTimeout: 10_000,
      });
      this.#agents.set(key, agent);
    }
    const dispatcher = agent;
    return (url, init) =>
      undiciFetch(url, {
        ...(init as object),
        signal: init.signal ?? AbortSignal.timeout(HTTP_TIMEOUT_MS),
        dispatcher,
      } as never) as unknown as Promise<Response>;
  }

  async options(policy: TlsPolicy): Promise<HttpOptions> {
    return { [oauth.customFetch]: await this.fetchFor(policy) };
  }

  async close(): Promise<void> {
    const agents = [...this.#agents.values()];
    this.#agents.clear();
    await Promise.all(agents.map((agent) => agent.close().catch(() => undefined)));
  }
}
