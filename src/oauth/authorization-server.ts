/** From an account's stored settings to the protocol-level configuration of its authorization server. */
import { ErrorCodes, PosternError } from '../errors.js';
import type { AccountRow } from './accounts.js';
import type { AuthorizationServerConfig, ClientConfig } from './grants.js';
import {
  GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT,
  GOOGLE_DEFAULT_TOKEN_ENDPOINT,
  GOOGLE_ISSUER,
  PROVIDER_LABELS,
  validateMicrosoftEndpoint,
} from './profiles.js';

export function authorizationServerOf(row: AccountRow): AuthorizationServerConfig {
  if (row.provider === 'microsoft') {
    const endpoint = validateMicrosoftEndpoint(row.endpoint ?? '');
    if (!endpoint.ok) throw new PosternError(ErrorCodes.OAUTH_ENDPOINT_INVALID, endpoint.error);
    const origin = new URL(endpoint.value.endpoint).origin;
    return {
      provider: 'microsoft',
      issuer: `${origin}/${endpoint.value.tenant}/v2.0`,
      tokenEndpoint: endpoint.value.tokenEndpoint,
      deviceAuthorizationEndpoint: endpoint.value.deviceAuthorizationEndpoint,
    };
  }
  const authorizationEndpoint = row.authorization_endpoint ?? GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT;
  const tokenEndpoint = row.token_endpoint ?? GOOGLE_DEFAULT_TOKEN_ENDPOINT;
  const origin = new URL(authorizationEndpoint).origin;
  return {
    provider: 'google',
    // Google's id_tokens are issued by accounts.google.com; a Google-compatible provider's by its own origin.
    issuer: origin === GOOGLE_ISSUER ? GOOGLE_ISSUER : origin,
    tokenEndpoint,
    authorizationEndpoint,
  };
}

/** The URL whose host the Server Connection Status check probes. */
export function connectionCheckUrl(row: AccountRow): string {
  const config = authorizationServerOf(row);
  return config.provider === 'microsoft' ? row.endpoint!.replace(/\/+$/, '') : config.tokenEndpoint;
}

export function clientOf(row: AccountRow, clientSecret: string | undefined): ClientConfig {
  if (!row.client_id) {
    throw new PosternError(ErrorCodes.OAUTH_ENDPOINT_INVALID, `${PROVIDER_LABELS[row.provider]} has no client ID.`);
  }
  return { clientId: row.client_id, clientSecret };
}
