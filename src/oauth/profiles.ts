/**
 * Provider profiles: where each provider's endpoints are, which scopes Postern asks for, and validation of
 * what the administrator types into the Edit Basic Settings screens.
 */
import type { ProviderId } from '../store/schema.js';

export type { ProviderId };

export const PROVIDER_LABELS: Record<ProviderId, string> = {
  microsoft: 'OAuth 2.0 (Microsoft)',
  google: 'OAuth 2.0 (Google)',
};

/**
 * The provider of an account id. Ids are made by OAuthAccounts: the seed's are the provider's own name, and
 * every later one starts with it (`microsoft-3fa9…`).
 */
export function providerOf(accountId: string): ProviderId {
  return accountId.startsWith('google') ? 'google' : 'microsoft';
}

/** How an account is named in sentences: its screen's title, and its name when it has one. */
export function accountLabel(accountId: string, name?: string | null): string {
  const label = PROVIDER_LABELS[providerOf(accountId)];
  return name ? `${label} "${name}"` : label;
}

/**
 * Outlook-resource scopes only (mixing Graph scopes would yield a token for the wrong resource,
 * docs/protocol.md §1.3); offline_access for a refresh token, openid email profile to learn which mailbox
 * signed in.
 */
export const MICROSOFT_SCOPE = 'https://outlook.office.com/SMTP.Send offline_access openid email profile';
export const MICROSOFT_SMTP_SCOPE = 'https://outlook.office.com/SMTP.Send';
/** Microsoft Graph's delegated permissions for sending (Mail.ReadWrite: drafts for messages over one request). */
export const MICROSOFT_GRAPH_SEND_SCOPE = 'https://graph.microsoft.com/Mail.Send';
export const MICROSOFT_GRAPH_READWRITE_SCOPE = 'https://graph.microsoft.com/Mail.ReadWrite';

/**
 * The delegated scope of an account that delivers by Microsoft Graph: Graph's permissions only (one resource
 * per request), with offline_access, and for a sign-in also the OpenID scopes that name the mailbox.
 */
export function microsoftGraphScope(largeMessages: boolean, signIn: boolean): string {
  return [MICROSOFT_GRAPH_SEND_SCOPE, ...(largeMessages ? [MICROSOFT_GRAPH_READWRITE_SCOPE] : []), 'offline_access', ...(signIn ? ['openid', 'email', 'profile'] : [])].join(' ');
}

export const MICROSOFT_DEFAULT_ENDPOINT = 'https://login.microsoftonline.com/common/oauth2/v2.0';

/** Hosts of Microsoft's public and national clouds, shown as help; other hosts are accepted (proxies, tests). */
export const MICROSOFT_LOGIN_HOSTS = [
  'login.microsoftonline.com',
  'login.microsoftonline.us',
  'login.chinacloudapi.cn',
  'login.partner.microsoftonline.cn',
];

export const GOOGLE_SCOPE = 'https://mail.google.com/ openid email';
export const GOOGLE_MAIL_SCOPE = 'https://mail.google.com/';
export const GOOGLE_DEFAULT_AUTHORIZATION_ENDPOINT = 'https://accounts.google.com/o/oauth2/v2/auth';
export const GOOGLE_DEFAULT_TOKEN_ENDPOINT = 'https://oauth2.googleapis.com/token';
export const GOOGLE_ISSUER = 'https://accounts.google.com';

export type Validation<T> = { ok: true; value: T } | { ok: false; error: string };

export interface MicrosoftEndpoint {
  /** Normalised endpoint, without a trailing slash: https://host/{tenant}/oauth2/v2.0 */
  endpoint: string;
  tenant: string;
  host: string;
  deviceAuthorizationEndpoint: string;
  tokenEndpoint: string;
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i;
const TENANT_ALIASES = ['common', 'consumers', 'organizations'];

export function isValidTenant(tenant: string): boolean {
  return TENANT_ALIASES.includes(tenant.toLowerCase()) || GUID.test(tenant) || DOMAIN.test(tenant);
}

/**
 * Validates the Microsoft Entra ID Authorization Server Endpoint: `https://<host>/<tenant>/oauth2/v2.0`, where
 * tenant is common, consumers, organizations, a tenant GUID or a domain (docs/protocol.md §1.2).
 */
export function validateMicrosoftEndpoint(input: string): Validation<MicrosoftEndpoint> {
  const text = input.trim();
  if (text === '') return { ok: false, error: 'Enter the authorization server endpoint.' };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return {
      ok: false,
      error: `"${text}" is not a URL. Enter it as https://login.microsoftonline.com/<tenant>/oauth2/v2.0.`,
    };
  }
  if (url.protocol !== 'https:') {
    return { ok: false, error: 'The endpoint must start with https:// (tokens are never requested over plain HTTP).' };
  }
  if (url.username || url.password) return { ok: false, error: 'The endpoint must not contain a user name or password.' };
  if (url.search || url.hash) {
    return { ok: false, error: 'The endpoint must not contain a query (?…) or fragment (#…).' };
  }
  const path = url.pathname.replace(/\/+$/, '');
  const match = /^\/([^/]+)\/oauth2\/v2\.0$/.exec(path);
  if (!match) {
    return {
      ok: false,
      error: 'The endpoint must end in /<tenant>/oauth2/v2.0, for example https://login.microsoftonline.com/organizations/oauth2/v2.0.',
    };
  }
  const tenant = decodeURIComponent(match[1]!);
  if (!isValidTenant(tenant)) {
    return {
      ok: false,
      error: `"${tenant}" is not a valid tenant. Use common, consumers, organizations, your tenant ID (a GUID) or your tenant's domain (e.g. contoso.onmicrosoft.com).`,
    };
  }
  const endpoint = `${url.origin}/${tenant}/oauth2/v2.0`;
  return {
    ok: true,
    value: {
      endpoint,
      tenant,
      host: url.host,
      deviceAuthorizationEndpoint: `${endpoint}/devicecode`,
      tokenEndpoint: `${endpoint}/token`,
    },
  };
}

/** Validates an https endpoint URL typed into the Google advanced settings. */
export function validateHttpsEndpoint(input: string, label: string): Validation<string> {
  const text = input.trim();
  if (text === '') return { ok: false, error: `Enter the ${label}.` };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { ok: false, error: `The ${label} "${text}" is not a URL.` };
  }
  if (url.protocol !== 'https:') return { ok: false, error: `The ${label} must start with https://.` };
  if (url.username || url.password) return { ok: false, error: `The ${label} must not contain a user name or password.` };
  if (url.hash) return { ok: false, error: `The ${label} must not contain a fragment (#…).` };
  return { ok: true, value: url.href };
}

const CLIENT_ID = /^[A-Za-z0-9._~:/@+-]{1,256}$/;

export function validateMicrosoftClientId(input: string): Validation<string> {
  const text = input.trim();
  if (text === '') {
    return {
      ok: false,
      error: 'Enter the Application (Client) ID of your app registration in Microsoft Entra ID (Overview page, a GUID).',
    };
  }
  if (!GUID.test(text) && !CLIENT_ID.test(text)) {
    return { ok: false, error: 'The Application (Client) ID should be a GUID such as 00000000-0000-0000-0000-000000000000.' };
  }
  return { ok: true, value: text };
}

export function validateGoogleClientId(input: string): Validation<string> {
  const text = input.trim();
  if (text === '') return { ok: false, error: 'Enter the Client ID of your OAuth client (Google Cloud console > Credentials).' };
  if (!CLIENT_ID.test(text)) return { ok: false, error: 'The Client ID contains characters that a Client ID never has.' };
  return { ok: true, value: text };
}

// ---------------------------------------------------------------------------------------------------------
// App-only authorization (Microsoft client credentials, Google service accounts)

/** Exchange Online for app-only SMTP: the token's audience is `https://outlook.office365.com`, role SMTP.SendAsApp. */
export const MICROSOFT_APP_ONLY_SMTP_SCOPE = 'https://outlook.office365.com/.default';
/** Microsoft Graph for app-only sending (Mail.Send application permission). */
export const MICROSOFT_APP_ONLY_GRAPH_SCOPE = 'https://graph.microsoft.com/.default';

/**
 * Validates the endpoint of an app-only (client credentials) account. The same form as
 * validateMicrosoftEndpoint, but the tenant must name one directory: common, organizations and consumers
 * only tell Entra ID to find the tenant from the signed-in user, and an app signs in as itself, so Entra
 * refuses them for the client credentials grant (AADSTS50059).
 */
export function validateMicrosoftAppOnlyEndpoint(input: string): Validation<MicrosoftEndpoint> {
  const result = validateMicrosoftEndpoint(input);
  if (!result.ok) return result;
  if (TENANT_ALIASES.includes(result.value.tenant.toLowerCase())) {
    return {
      ok: false,
      error: `"${result.value.tenant}" cannot be used for app-only authorization: the application signs in as itself, so the endpoint must name your tenant. Use your tenant ID (Directory (tenant) ID on the app registration's Overview page, a GUID) or your tenant's domain (e.g. contoso.onmicrosoft.com).`,
    };
  }
  return result;
}
