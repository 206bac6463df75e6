/**
 * Errors from the authorization server, classified once: is it worth retrying, and what should the
 * administrator do? Branches on the OAuth `error` field (RFC 6749 §5.2, RFC 8628 §3.5); Microsoft's AADSTS
 * numbers are used only to choose advice, as Microsoft asks, and to keep a few known passing troubles
 * retried (docs/protocol.md §1.5).
 */
import * as oauth from 'oauth4webapi';
import { classifyConnectionError } from '../tls/trust.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { scrubSecrets } from '../log.js';

export type ProviderErrorKind =
  /** The grant or client is dead: re-authorization (or a configuration fix) is needed; never retried. */
  | 'definitive'
  /** Server trouble, throttling or the network: retry with backoff, keep credentials. */
  | 'transient';

export class ProviderError extends PosternError {
  constructor(
    message: string,
    readonly kind: ProviderErrorKind,
    /** OAuth `error`, e.g. invalid_grant; undefined for network failures. */
    readonly error: string | undefined,
    /** The provider's own text (error_description), secrets scrubbed. */
    readonly description: string | undefined,
    readonly httpStatus: number | undefined,
    /** Plain-words advice for the administrator. */
    readonly advice: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(
      error !== undefined ? ErrorCodes.OAUTH_PROVIDER_ERROR : kind === 'transient' ? ErrorCodes.OAUTH_CONNECTION_FAILED : ErrorCodes.OAUTH_INVALID_RESPONSE,
      message,
      options,
    );
    this.name = 'ProviderError';
  }

  /** What the status page shows as the provider's error: "invalid_grant: AADSTS70008: …". */
  get providerText(): string {
    if (this.error) return this.description ? `${this.error}: ${this.description}` : this.error;
    return this.message;
  }
}

const TRANSIENT_ERRORS = new Set(['temporarily_unavailable', 'server_error', 'slow_down']);

/** AADSTS numbers that mean the same thing as a transient error although `error` may say otherwise. */
const TRANSIENT_AADSTS = new Set(['50033', '90024', '90055', '50196']);

export function aadstsCode(description: string | undefined): string | undefined {
  return description ? /AADSTS(\d+)/.exec(description)?.[1] : undefined;
}

const MICROSOFT_ADVICE: Record<string, string> = {
  '7000218':
    'The app registration does not allow public client flows. In Microsoft Entra ID > App registrations > your app > Authentication > Advanced settings, set "Allow public client flows" to Yes, save, then get a new user code.',
  '700025':
    'The app registration is public, so no client secret may be sent. Check that the Application (Client) ID is the one you registered for Postern.',
  '700016':
    'The application was not found in this tenant. Check the Application (Client) ID, and that the tenant in the endpoint is the one the app is registered in.',
  '50194':
    'The app is registered for a single tenant, so "common" cannot be used. Put your tenant ID or domain in the endpoint instead of common.',
  '9002332':
    'The app registration only accepts work or school accounts. Use organizations or your tenant in the endpoint, not consumers.',
  '500208': 'This account cannot sign in to this tenant. Use the endpoint tenant that matches the account type.',
  '90002': 'The tenant in the endpoint was not found. Check the tenant name or ID in Microsoft Entra ID Authorization Server Endpoint.',
  '65001':
    'Consent for SMTP.Send is missing. In the app registration add the delegated permission Office 365 Exchange Online > SMTP.Send (grant admin consent if your tenant requires it), then authorize again.',
  '90094': 'An administrator must grant consent to this app (API permissions > Grant admin consent), then authorize again.',
  '70008': 'The refresh token expired because it was not used for a long time. Get a new user code and sign in again.',
  '700082': 'The refresh token expired because it was not used for 90 days. Get a new user code and sign in again.',
  '50173':
    'The authorization was revoked (for example after a password change or an administrator revoking sessions). Get a new user code and sign in again.',
  '70000': 'The refresh token is no longer valid. Get a new user code and sign in again.',
  '70043':
    'A Conditional Access sign-in frequency policy ended the session. Sign in again; consider excluding the gateway mailbox from that policy.',
  '50076': 'Multi-factor authentication is now required. Get a new user code and sign in again, completing MFA.',
  '50079': 'The account must register for multi-factor authentication. Complete registration, then sign in again.',
  '53003': 'Conditional Access blocked the sign-in. Ask your Entra ID administrator to allow this sign-in for the gateway mailbox.',
  '7000112': 'The application is disabled in the tenant. Enable it in Microsoft Entra ID > Enterprise applications.',
  '50057': 'The user account is disabled. Enable it, or sign in with another mailbox.',
  '700022':
    'The scopes mix resources. Postern asks only for Outlook scopes; check that no proxy rewrites the request.',
  '70011': 'The requested scope was refused. Check the delegated permission SMTP.Send in the app registration.',
  '50059': 'No tenant could be determined for the account. Use your tenant ID or domain in the endpoint.',
};

function microsoftAdvice(error: string | undefined, description: string | undefined): string | undefined {
  const code = aadstsCode(description);
  if (code && MICROSOFT_ADVICE[code]) return MICROSOFT_ADVICE[code];
  switch (error) {
    case 'invalid_grant':
      return 'The authorization is no longer valid. Get a new user code and sign in again.';
    case 'invalid_client':
      return 'The application was refused. Check the Application (Client) ID, and that "Allow public client flows" is enabled in the app registration.';
    case 'unauthorized_client':
      return 'The app registration may not use this flow. Enable "Allow public client flows" in the app registration.';
    case 'invalid_scope':
      return 'The scope was refused. Add the delegated permission SMTP.Send (Office 365 Exchange Online) to the app registration.';
    case 'interaction_required':
    case 'consent_required':
      return 'The user must sign in again. Get a new user code.';
    default:
      return undefined;
  }
}

function googleAdvice(error: string | undefined, description: string | undefined): string | undefined {
  switch (error) {
    case 'invalid_grant':
      if (description && /malformed/i.test(description)) {
        return 'The authorization code was damaged in copying. Register again and paste the whole URL from the browser.';
      }
      return 'The authorization is no longer valid (revoked, the Gmail password was changed, or the consent screen is in "Testing" status, which limits refresh tokens to 7 days). Register the authorization information again.';
    case 'invalid_client':
    case 'unauthorized_client':
      return 'Google refused the client. Check the Client ID and Client Secret (Google Cloud console > APIs & Services > Credentials; the client type must be "Desktop app").';
    case 'admin_policy_enforced':
      return 'A Google Workspace administrator restricted this app. Allow it in the Admin console (Security > API controls).';
    case 'invalid_scope':
      return 'The scope https://mail.google.com/ was refused. Add it to the OAuth consent screen.';
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------
// App-only authorization: the application signs in as itself (Microsoft client credentials, RFC 6749 §4.4
// with a secret or a private key JWT) or a Google service account signs a JWT for the mailbox it acts as
// (RFC 7523 §2.1). The same AADSTS numbers then call for other advice: no user signs in, and the permission
// is an application permission that an administrator consents to.

/** Delegated: a user signed in (device code, authorization code). App-only: the application itself. */
export type AuthorizationFlow = 'delegated' | 'app-only';

const MICROSOFT_APP_ONLY_ADVICE: Record<string, string> = {
  '7000215':
    'The client secret was refused. Enter the secret\'s Value (shown only once, when the secret is created), not its Secret ID; if it has expired, create a new secret under Certificates & secrets in the app registration.',
  '7000222':
    'The client secret has expired. Create a new client secret under Certificates & secrets in the app registration and enter its Value here.',
  '700027':
    'The certificate that signed the request is not registered on the app registration. Upload Postern\'s certificate under Certificates & secrets > Certificates; if it is uploaded, check that this computer\'s clock is right.',
  '700024':
    'The signed request is outside its time window. Check this computer\'s date, time and time zone (set the time automatically), then try again.',
  '700016':
    'The application was not found in this tenant. Check the Application (Client) ID, and that the tenant in the endpoint is the Directory (tenant) ID the app is registered in.',
  '90002': 'The tenant in the endpoint was not found. Use the Directory (tenant) ID from the app registration\'s Overview page.',
  '50059':
    'App-only authorization needs the tenant in the endpoint: replace common, organizations or consumers with your Directory (tenant) ID or domain.',
  '90130':
    'App-only authorization needs the tenant in the endpoint: replace common, organizations or consumers with your Directory (tenant) ID or domain.',
  '1002012':
    'App-only authorization asks for the resource\'s .default scope (https://outlook.office365.com/.default for SMTP, https://graph.microsoft.com/.default for Microsoft Graph); individual permissions are granted in the app registration.',
  '70011':
    'The scope was refused. App-only authorization asks for the resource\'s .default scope (https://outlook.office365.com/.default for SMTP, https://graph.microsoft.com/.default for Microsoft Graph).',
  '500011':
    'Office 365 Exchange Online (or Microsoft Graph) is not known in this tenant. Check that the tenant has Exchange Online, and that the endpoint names the right tenant.',
  '65001':
    'Admin consent is missing. In the app registration > API permissions add the application permission Office 365 Exchange Online > SMTP.SendAsApp (for Graph: Microsoft Graph > Mail.Send) and select "Grant admin consent".',
  '7000112': 'The application is disabled in the tenant. Enable it in Microsoft Entra ID > Enterprise applications.',
  '53003': 'Conditional Access blocked the application. Ask your Entra ID administrator to allow this application (workload identity policies).',
};

function microsoftAppOnlyAdvice(error: string | undefined, description: string | undefined): string | undefined {
  const code = aadstsCode(description);
  if (code && MICROSOFT_APP_ONLY_ADVICE[code]) return MICROSOFT_APP_ONLY_ADVICE[code];
  switch (error) {
    case 'invalid_client':
      return 'The application\'s credentials were refused. Check the Application (Client) ID and the client secret, or that Postern\'s certificate is uploaded to the app registration.';
    case 'unauthorized_client':
      return 'The application may not use the client credentials grant in this tenant. Check the Application (Client) ID and the tenant in the endpoint.';
    case 'invalid_scope':
      return MICROSOFT_APP_ONLY_ADVICE['1002012'];
    case 'invalid_resource':
      return MICROSOFT_APP_ONLY_ADVICE['500011'];
    default:
      return undefined;
  }
}

function googleServiceAccountAdvice(error: string | undefined, description: string | undefined): string | undefined {
  switch (error) {
    case 'unauthorized_client':
      return 'Domain-wide delegation is missing for this service account. In the Google Admin console > Security > Access and data control > API controls > Domain-wide delegation, add the service account\'s client ID with the scope https://mail.google.com/.';
    case 'invalid_grant':
      if (description && /invalid email or user id/i.test(description)) {
        return 'The mailbox is not a user of your Google Workspace domain. A service account can act only for Workspace users of the domain that granted the delegation, not for consumer Gmail addresses.';
      }
      if (description && /signature/i.test(description)) {
        return 'Google did not accept the key\'s signature: the key was deleted or belongs to another service account. Create a new JSON key for the service account (Google Cloud console > IAM & Admin > Service Accounts > Keys) and upload it.';
      }
      if (description && /(iat|exp|timeframe|short-lived)/i.test(description)) {
        return 'Google refused the signed request\'s time window. Check this computer\'s date, time and time zone (set the time automatically), then try again.';
      }
      return 'Google refused the service account\'s request. Check the JSON key, the mailbox and the domain-wide delegation entry in the Admin console.';
    case 'invalid_client':
      return 'Google does not know this service account (it was deleted, or the key is for another project). Create a new JSON key and upload it.';
    case 'invalid_scope':
      return 'The scope https://mail.google.com/ was refused. Add it to the domain-wide delegation entry of the service account in the Admin console.';
    case 'access_denied':
      return 'Access was denied for this mailbox. Check that Gmail is turned on for the user, and the domain-wide delegation entry in the Admin console.';
    default:
      return undefined;
  }
}

export function adviceFor(
  provider: 'microsoft' | 'google',
  error: string | undefined,
  description: string | undefined,
  flow: AuthorizationFlow = 'delegated',
): string | undefined {
  if (flow === 'app-only') return provider === 'microsoft' ? microsoftAppOnlyAdvice(error, description) : googleServiceAccountAdvice(error, description);
  return provider === 'microsoft' ? microsoftAdvice(error, description) : googleAdvice(error, description);
}

/**
 * Turns whatever a protocol step threw (oauth4webapi errors, fetch/TLS errors) into a ProviderError with a
 * kind and advice.
 */
export function toProviderError(provider: 'microsoft' | 'google', thrown: unknown, host: string, flow: AuthorizationFlow = 'delegated'): ProviderError {
  if (thrown instanceof ProviderError) return thrown;
  if (thrown instanceof oauth.ResponseBodyError) {
    const description = thrown.error_description ? scrubSecrets(thrown.error_description) : undefined;
    const aadsts = aadstsCode(description);
    const transient =
      TRANSIENT_ERRORS.has(thrown.error) || thrown.status >= 500 || thrown.status === 429 || (aadsts !== undefined && TRANSIENT_AADSTS.has(aadsts));
    return new ProviderError(
      `${host} answered ${thrown.error}${description ? `: ${description}` : ''}`,
      transient ? 'transient' : 'definitive',
      thrown.error,
      description,
      thrown.status,
      adviceFor(provider, thrown.error, description, flow),
      { cause: thrown },
    );
  }
  if (thrown instanceof oauth.OperationProcessingError && thrown.code === oauth.JWT_TIMESTAMP_CHECK) {
    // The id_token is "issued in the future" or "already expired" by this computer's clock: the clock is
    // wrong, not the server or the settings. Transient: nothing is dropped, and it works once the time is set.
    return new ProviderError(
      `The sign-in from ${host} is dated outside this computer's clock (${scrubSecrets(thrown.message)})`,
      'transient',
      undefined,
      undefined,
      undefined,
      "Check this computer's date, time and time zone, and set the time automatically (NTP); then try again.",
      { cause: thrown },
    );
  }
  if (thrown instanceof oauth.OperationProcessingError) {
    const response = (thrown.cause as { status?: unknown } | undefined) ?? undefined;
    const status = response instanceof Response ? response.status : typeof response?.status === 'number' ? response.status : undefined;
    if (status !== undefined && (status >= 500 || status === 429)) {
      return new ProviderError(
        `${host} answered HTTP ${status}${status === 429 ? ' (too many requests)' : ''}`,
        'transient',
        undefined,
        undefined,
        status,
        'The authorization server is busy or failing. Postern retries with backoff.',
        { cause: thrown },
      );
    }
    return new ProviderError(
      `${host} gave an answer Postern could not use${status ? ` (HTTP ${status})` : ''}: ${scrubSecrets(thrown.message)}`,
      'definitive',
      undefined,
      undefined,
      status,
      'Check that the endpoint URL points at the authorization server itself and not at a web page or proxy.',
      { cause: thrown },
    );
  }
  const failure = classifyConnectionError(thrown, host);
  return new ProviderError(failure.reason, 'transient', undefined, undefined, undefined, undefined, { cause: thrown });
}
