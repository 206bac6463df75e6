/**
 * Server Connection Status: can Postern reach the authorization server under the account's TLS options?
 *
 * "Successfully Connected" means the TLS handshake with the endpoint's host succeeded under the chosen
 * options and the host answered HTTP, whatever the status (the bare …/oauth2/v2.0 answers 404 at Microsoft).
 * Anything else is "Connection Failed" with the reason in plain words.
 */
import { classifyConnectionError, type ConnectionFailureKind } from '../tls/trust.js';
import type { Fetch } from './http.js';

export type ConnectionStatus = 'SuccessfullyConnected' | 'ConnectionFailed';

export const CONNECTION_STATUS_LABELS: Record<ConnectionStatus, string> = {
  SuccessfullyConnected: 'Successfully Connected',
  ConnectionFailed: 'Connection Failed',
};

export type ConnectionCheckResult =
  | { status: 'SuccessfullyConnected'; detail: string; httpStatus: number }
  | { status: 'ConnectionFailed'; detail: string; kind: ConnectionFailureKind | 'http'; code: string | undefined };

export async function checkConnection(url: string, fetch: Fetch, timeoutMs = 10_000): Promise<ConnectionCheckResult> {
  const host = new URL(url).host;
  try {
    const response = await fetch(url, { method: 'GET', redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
    // Drain the body so the connection returns to the pool.
    await response.arrayBuffer().catch(() => undefined);
    if (response.status >= 500 && response.status !== 501) {
      return {
        status: 'ConnectionFailed',
        kind: 'http',
        code: String(response.status),
        detail: `${host} answered HTTP ${response.status} (server error). The authorization server or a proxy in between is failing; try again later.`,
      };
    }
    return {
      status: 'SuccessfullyConnected',
      httpStatus: response.status,
      detail: `TLS connection to ${host} established; the server answered HTTP ${response.status}.`,
    };
  } catch (error) {
    const failure = classifyConnectionError(error, host);
    return { status: 'ConnectionFailed', kind: failure.kind, code: failure.code, detail: failure.reason };
  }
}
