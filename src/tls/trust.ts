/**
 * The seed's two TLS options, mapped onto Node's TLS settings for every outbound connection they govern
 * (the authorization server and the upstream SMTP server):
 *
 * - **Verify Server Certificate** on: the chain must build to a trusted root: the system roots, the CAs in
 *   NODE_EXTRA_CA_CERTS, and the CAs registered in CA Certificate Settings. Off: encrypted but unverified,
 *   no certificate or name check at all (shown as a warning).
 * - **Add CN to Verification Items** on (only meaningful with Verify on): the certificate must also name the
 *   host (subjectAltName, or CN where there is no SAN: Node's `tls.checkServerIdentity`).
 *
 * Node replaces its default roots when `ca` is given, so the system roots are passed explicitly, together
 * with NODE_EXTRA_CA_CERTS (which Node would otherwise lose too). See docs/protocol.md §7.1.
 */
import { readFileSync } from 'node:fs';
import tls, { type ConnectionOptions } from 'node:tls';
import { ProxyTunnelError } from '../outbound-proxy.js';

export interface TlsPolicy {
  verifyServerCertificate: boolean;
  addCnToVerificationItems: boolean;
}

export interface CaSource {
  pems(): Promise<string[]>;
}

/** System roots + NODE_EXTRA_CA_CERTS + registered CAs. */
export class TrustStore {
  readonly #extra: string[];

  constructor(
    private readonly registered: CaSource,
    extraCaFile?: string,
  ) {
    this.#extra = [];
    if (extraCaFile) {
      try {
        this.#extra.push(readFileSync(extraCaFile, 'utf8'));
      } catch {
        // Node itself only warns about an unreadable NODE_EXTRA_CA_CERTS; so do we (see main.ts).
      }
    }
  }

  get hasExtraCaFile(): boolean {
    return this.#extra.length > 0;
  }

  async caList(): Promise<string[]> {
    return [...tls.rootCertificates, ...this.#extra, ...(await this.registered.pems())];
  }
}

/** Node TLS client options for a policy. `ca` is only used when verification is on. */
export function tlsClientOptions(policy: TlsPolicy, ca: string[], servername?: string): ConnectionOptions {
  const base: ConnectionOptions = { minVersion: 'TLSv1.2' };
  if (servername) base.servername = servername;
  if (!policy.verifyServerCertificate) {
    return { ...base, rejectUnauthorized: false, checkServerIdentity: () => undefined };
  }
  if (!policy.addCnToVerificationItems) {
    return { ...base, rejectUnauthorized: true, ca, checkServerIdentity: () => undefined };
  }
  return { ...base, rejectUnauthorized: true, ca };
}

export type ConnectionFailureKind =
  | 'certificate-untrusted'
  | 'certificate-expired'
  | 'name-mismatch'
  | 'dns'
  | 'refused'
  | 'timeout'
  | 'reset'
  | 'tls-handshake'
  | 'network'
  | 'proxy-refused'
  | 'proxy-unreachable';

export interface ConnectionFailure {
  kind: ConnectionFailureKind;
  /** One sentence for the administrator, with what to do. */
  reason: string;
  /** The underlying error code, for the log. */
  code: string | undefined;
}

const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REJECTED',
  'INVALID_CA',
]);
const EXPIRED = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);
const TIMEOUT = new Set([
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ABORT_ERR',
  'ESOCKETTIMEDOUT',
  'ETIMEOUT',
]);

/** Finds the most specific error code along an error's cause chain (fetch wraps socket errors). */
export function innermostCode(error: unknown): { code: string | undefined; message: string } {
  let current: unknown = error;
  let found: { code: string | undefined; message: string } = { code: undefined, message: String(error) };
  for (let depth = 0; current && depth < 6; depth++) {
    const candidate = current as { code?: unknown; message?: unknown; name?: unknown; cause?: unknown };
    if (typeof candidate.code === 'string') found = { code: candidate.code, message: String(candidate.message ?? '') };
    else if (candidate.name === 'TimeoutError' || candidate.name === 'AbortError')
      found = { code: 'ETIMEDOUT', message: String(candidate.message ?? '') };
    else if (found.code === undefined && typeof candidate.message === 'string') found.message = candidate.message;
    current = candidate.cause;
  }
  return found;
}

/** Classifies a failed connection and says, in plain words, what went wrong and what to do. */
export function classifyConnectionError(error: unknown, host: string): ConnectionFailure {
  // A failure at the proxy is named as one: its cause (e.g. ECONNREFUSED) is the proxy's, not the host's.
  const tunnel = findProxyTunnelError(error);
  if (tunnel) return classifyProxyTunnelError(tunnel);
  const { code, message } = innermostCode(error);
  if (code && UNTRUSTED.has(code)) {
    return {
      kind: 'certificate-untrusted',
      code,
      reason: `The server certificate of ${host} is not trusted (${code}). Register the issuing CA certificate in CA Certificate Settings, or turn off Verify Server Certificate.`,
    };
  }
  if (code && EXPIRED.has(code)) {
    return {
      kind: 'certificate-expired',
      code,
      reason: `The server certificate of ${host} is ${code === 'CERT_HAS_EXPIRED' ? 'expired' : 'not yet valid'}. Check the server's certificate and this computer's date and time.`,
    };
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return {
      kind: 'name-mismatch',
      code,
      reason: `The server certificate does not match the host name ${host} (${message.replace(/^Hostname\/IP does not match certificate's altnames: /, '')}). Check the URL, or turn off Add CN to Verification Items.`,
    };
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME' || code === 'EAI_FAIL') {
    return {
      kind: 'dns',
      code,
      reason: `The host name ${host} could not be resolved (DNS${code === 'EAI_AGAIN' ? ', temporary failure' : ''}). Check the URL and this computer's DNS settings.`,
    };
  }
  if (code === 'ECONNREFUSED') {
    return { kind: 'refused', code, reason: `${host} refused the connection. Check the URL and port, and any firewall or proxy.` };
  }
  if (code && TIMEOUT.has(code)) {
    return { kind: 'timeout', code, reason: `The connection to ${host} timed out. Check the network path, firewall and proxy.` };
  }
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET') {
    return { kind: 'reset', code, reason: `${host} closed the connection unexpectedly. A firewall or TLS-inspecting proxy may be interfering.` };
  }
  if (code && (code.startsWith('ERR_SSL') || code === 'EPROTO' || code.startsWith('ERR_TLS'))) {
    return { kind: 'tls-handshake', code, reason: `The TLS handshake with ${host} failed (${code}).` };
  }
  return { kind: 'network', code, reason: `Could not connect to ${host}: ${message || code || 'network error'}.` };
}

function findProxyTunnelError(error: unknown): ProxyTunnelError | undefined {
  let current: unknown = error;
  for (let depth = 0; current && depth < 6; depth++) {
    if (current instanceof ProxyTunnelError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The proxy refused the CONNECT or could not be reached: say so, naming the proxy as host:port. */
function classifyProxyTunnelError(error: ProxyTunnelError): ConnectionFailure {
  const { proxy, target, statusCode } = error;
  const where = proxy.setting;
  if (statusCode !== undefined) {
    const status = error.status!;
    let advice: string;
    if (statusCode === 407) {
      advice = proxy.hasCredentials
        ? `The proxy did not accept the user name and password in ${where}; check them (percent-encode special characters).`
        : `The proxy requires a user name and password: give them in ${where} as http://user:password@${proxy.address}.`;
    } else if (statusCode === 403) {
      advice = `The proxy does not allow connections to ${target}; ask its administrator to allow it, or list the host in NO_PROXY if it can be reached directly.`;
    } else if (statusCode >= 500 || statusCode === 404) {
      advice = `The proxy could not open a connection to ${target}; check the endpoint URL and the proxy's own network access.`;
    } else {
      advice = `Check the proxy's settings and ${where}.`;
    }
    return { kind: 'proxy-refused', code: String(statusCode), reason: `The proxy at ${proxy.address} refused the connection: ${status}. ${advice}` };
  }
  const cause = classifyConnectionError(error.cause, proxy.address);
  const why: Partial<Record<ConnectionFailureKind, string>> = {
    dns: 'its host name could not be resolved',
    refused: 'connection refused',
    timeout: 'timed out',
    reset: 'it closed the connection',
    'certificate-untrusted': `its certificate is not trusted: ${cause.code}`,
    'certificate-expired': `its certificate is expired or not yet valid: ${cause.code}`,
    'name-mismatch': `its certificate does not match its host name`,
    'tls-handshake': `the TLS handshake with the proxy failed: ${cause.code}`,
  };
  const detail = why[cause.kind] ?? (innermostCode(error.cause).message || cause.code || 'network error');
  const advice =
    cause.kind === 'certificate-untrusted'
      ? 'Register the CA that issued the proxy’s certificate in CA Certificate Settings (or NODE_EXTRA_CA_CERTS).'
      : `Check ${where} and that the proxy is running; hosts reached directly belong in NO_PROXY.`;
  return {
    kind: 'proxy-unreachable',
    code: cause.code,
    reason: `Could not reach the proxy at ${proxy.address} (${detail}). ${advice}`,
  };
}
