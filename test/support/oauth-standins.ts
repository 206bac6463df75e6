/**
 * Stand-in authorization servers for tests: a real OAuth 2.0 / OpenID Connect server (oidc-provider) dressed up
 * in Microsoft's identity platform URL layout and error vocabulary, and another in Google's. Postern's own OAuth
 * code talks to these exactly as it would talk to login.microsoftonline.com or accounts.google.com, so tests
 * exercise real HTTP, real TLS, real RFC 8628 device flow and real authorization-code + PKCE exchanges.
 *
 * TEST INFRASTRUCTURE ONLY. Nothing in `src/` may import this file.
 *
 * How the pieces fit:
 * - oidc-provider does the protocol work (device authorization, token issuance, refresh rotation, PKCE,
 *   RFC 9207 `iss`, RFC 7662 introspection). Its routes are configured to the vendor's paths where possible.
 * - A front middleware (`provider.use`, which oidc-provider runs before its own router) rewrites vendor paths
 *   onto the provider's routes (Microsoft tenant aliases), records requests, injects scripted failures, and
 *   rewrites responses into the vendor's flavour (AADSTS error descriptions, `interval`/`message` in the
 *   device authorization response, Google's refresh error text).
 * - A small login/consent UI (`/interaction/:uid`) checks e-mail + password and records consent; the scripted
 *   end user in `user-agent.ts` walks it.
 * - Storage is an in-memory adapter owned by each stand-in, so tests can revoke refresh tokens or expire
 *   device codes directly.
 */
import { constants, createHash, generateKeyPairSync, randomBytes, randomUUID, verify, X509Certificate, type KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type Koa from 'koa';
import Provider, {
  errors,
  type Account,
  type Adapter,
  type AdapterPayload,
  type ClientMetadata,
  type Configuration,
  type Interaction,
  type KoaContextWithOIDC,
  type ResourceServer,
} from 'oidc-provider';
import { createTestPki, type TestPki } from './test-ca.js';

// ---------------------------------------------------------------------------------------------------------------
// Public types shared by both stand-ins
// ---------------------------------------------------------------------------------------------------------------

/** An end user who can sign in at a stand-in. The account id (and `sub`) is the e-mail address. */
export interface StandinUser {
  email: string;
  password: string;
  /** Display name for the `name` claim; derived from the e-mail when omitted. */
  name?: string;
}

/** Default users: alice and bob, password `correct horse`. */
export const DEFAULT_USERS: readonly StandinUser[] = Object.freeze([
  { email: 'alice@example.test', password: 'correct horse', name: 'Alice Example' },
  { email: 'bob@example.test', password: 'correct horse', name: 'Bob Example' },
]);

/** One request seen at a token or device authorization endpoint. */
export interface RecordedRequest {
  time: Date;
  /** The path as the client sent it (before any tenant rewriting). */
  path: string;
  /** Microsoft only: the `{tenant}` path segment. */
  tenant?: string;
  /** `grant_type` form parameter (token endpoint only). */
  grantType?: string;
  /** From the form body or the Basic authorization header. */
  clientId?: string;
  /** `scope` form parameter, if any. */
  scope?: string;
  /** HTTP status of the response that was sent. */
  status: number;
  /** OAuth `error` of the response that was sent, if it was an error. */
  error?: string;
  /** True when the response came from `failNext` rather than from the authorization server. */
  injected: boolean;
}

/** A canned response for `failNext`. A non-string body is sent as JSON. */
export interface InjectedResponse {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

/** What a resource server (e.g. a stand-in SMTP server) needs to introspect access tokens (RFC 7662). */
export interface IntrospectionAccess {
  url: string;
  clientId: string;
  clientSecret: string;
}

/** TLS material: pass an existing test PKI to share one CA across several servers in a test. */
export interface StandinTlsOptions {
  pki?: TestPki;
}

/** Controls common to both stand-ins. */
export interface StandinControls<P extends string> {
  /** `https://127.0.0.1:PORT` */
  readonly origin: string;
  readonly issuer: string;
  /** The CA certificate (PEM) that signed the server certificate: give it to clients as their trust anchor. */
  readonly ca: string;
  readonly pki: TestPki;
  readonly users: readonly StandinUser[];
  readonly jwksUri: string;
  readonly introspection: IntrospectionAccess;
  /** Every token endpoint request, in arrival order, including injected failures. */
  readonly tokenRequests: RecordedRequest[];
  /**
   * Make the next `times` requests to `path` answer `response` without reaching the authorization server
   * (5xx, 429, `slow_down`, `temporarily_unavailable`, any JSON). Queued injections are used in order.
   */
  failNext(path: P, response: InjectedResponse, times?: number): void;
  /**
   * Destroy every refresh token of `email` (like a password reset), so the next refresh gets `invalid_grant`.
   * Access tokens already issued stay valid until they expire, as at the real providers. Returns how many
   * refresh tokens were revoked.
   */
  revokeRefreshTokens(email: string): number;
  /** Lifetime of access tokens issued from now on. */
  setAccessTokenTtl(seconds: number): void;
  /**
   * Shift the `Date` header of every response by `ms` (positive: the server's clock runs ahead of the client's),
   * which is what a client on a host with a wrong clock sees. Only the header moves; tokens, their lifetimes and
   * id_token timestamps stay on the real clock. 0 puts it right again.
   */
  setClockOffset(ms: number): void;
  /** The underlying oidc-provider instance, for anything not covered here. */
  readonly provider: Provider;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------------
// Microsoft
// ---------------------------------------------------------------------------------------------------------------

/** Exchange Online delegated scopes; all belong to the `https://outlook.office.com` resource. */
export const OUTLOOK_RESOURCE = 'https://outlook.office.com';
export const OUTLOOK_SMTP_SCOPE = 'https://outlook.office.com/SMTP.Send';
export const OUTLOOK_SCOPES = [
  OUTLOOK_SMTP_SCOPE,
  'https://outlook.office.com/IMAP.AccessAsUser.All',
  'https://outlook.office.com/POP.AccessAsUser.All',
] as const;

export interface MicrosoftStandinOptions extends StandinTlsOptions {
  users?: readonly StandinUser[];
  /** The directory (tenant) id; the issuer is `https://127.0.0.1:PORT/<tenantId>/v2.0`. */
  tenantId?: string;
  /** A verified domain that also names the tenant in URLs. Default `contoso.example`. */
  tenantDomain?: string;
  publicClientId?: string;
  /** An app registration with "Allow public client flows" off: device code polling fails with AADSTS7000218. */
  confidentialClientId?: string;
  /** `interval` in the device authorization response (seconds). Microsoft sends 5; default 1 for fast tests. */
  interval?: number;
  /** `expires_in` of device codes (seconds). Default 900 like Microsoft. */
  deviceCodeExpiresIn?: number;
  /** Access token lifetime in seconds. Default 3600 (Microsoft: 60–90 min). */
  accessTokenTtl?: number;
  /**
   * The error a declined device authorization polls into. Microsoft documents `authorization_declined`;
   * RFC 8628 §3.5 says `access_denied`. Default: Microsoft's.
   */
  declineError?: 'authorization_declined' | 'access_denied';
  /**
   * Microsoft Graph permissions of the app registration (`Mail.Send`, `Mail.ReadWrite`), consented with the
   * sign-in. Default both; `[]`: the app has none, and a refresh for Graph scopes fails with invalid_scope.
   */
  graphPermissions?: readonly string[];
}

export interface MicrosoftStandin extends StandinControls<'token' | 'devicecode'> {
  readonly tenantId: string;
  readonly tenantDomain: string;
  /** Every tenant value the URLs accept: common, organizations, consumers, the GUID and the domain. */
  readonly tenants: readonly string[];
  readonly publicClientId: string;
  /** An app registration with "Allow public client flows" off (device code polling without a secret fails). */
  readonly confidentialClientId: string;
  /** Its secret; with it (HTTP Basic) the token endpoint does accept the confidential client. */
  readonly confidentialClientSecret: string;
  /** The user page the device authorization response points at: `https://127.0.0.1:PORT/devicelogin`. */
  readonly verificationUri: string;
  /** Every device authorization request, in arrival order, including injected failures. */
  readonly deviceCodeRequests: RecordedRequest[];
  /** `https://127.0.0.1:PORT/<tenant>/oauth2/v2.0` (append `/devicecode`, `/token`, `/authorize`). */
  endpoint(tenant?: string): string;
  /** Make every outstanding device code expired, so polling answers `expired_token`. */
  expireDeviceCodes(): void;
  setDeclineError(error: 'authorization_declined' | 'access_denied'): void;
  /** App-only: confidential app registrations for the client credentials grant (see MicrosoftAppOnlyControls). */
  readonly appOnly: MicrosoftAppOnlyControls;
}

const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/**
 * Starts an authorization server that answers like the Microsoft identity platform v2.0 endpoints
 * (`/{tenant}/oauth2/v2.0/devicecode`, `/{tenant}/oauth2/v2.0/token`, `/{tenant}/v2.0/.well-known/openid-configuration`).
 *
 * The provider natively lives at the GUID tenant's paths; the other tenant values are aliases rewritten onto them
 * (so a device code from `/common` can be polled at `/organizations`, which Microsoft would refuse; Postern
 * always uses one tenant per account, so this leniency does not hide anything).
 */
export async function startMicrosoftStandin(options: MicrosoftStandinOptions = {}): Promise<MicrosoftStandin> {
  const users = options.users ?? DEFAULT_USERS;
  const tenantId = options.tenantId ?? '8f3c1c9e-5d2a-4b7e-9a61-3e0f2b7c4d15';
  const tenantDomain = options.tenantDomain ?? 'contoso.example';
  const tenants = ['common', 'organizations', 'consumers', tenantId, tenantDomain] as const;
  const publicClientId = options.publicClientId ?? '2f7c4e1a-9b3d-4c8e-a5f6-0d1e2c3b4a59';
  const confidentialClientId = options.confidentialClientId ?? '6b9e2d4f-1a3c-4e5b-8d7f-9c0a1b2e3f48';
  const confidentialClientSecret = randomBytes(24).toString('base64url');
  const introspectionClientId = 'postern-smtp-resource-server';
  const introspectionClientSecret = randomBytes(24).toString('base64url');
  const interval = options.interval ?? 1;
  const deviceCodeExpiresIn = options.deviceCodeExpiresIn ?? 900;
  let accessTokenTtl = options.accessTokenTtl ?? 3600;
  let declineError = options.declineError ?? 'authorization_declined';
  const graphPermissions = options.graphPermissions ?? GRAPH_PERMISSIONS;

  const pki = options.pki ?? (await createTestPki());
  const listening = await listenHttps(pki);
  const { origin } = listening;
  const issuer = `${origin}/${tenantId}/v2.0`;
  const base = `/${tenantId}/oauth2/v2.0`;

  const store = new MemoryStore();
  const revokedRefreshTokens = new Set<string>();
  const controls = new RequestControls<'token' | 'devicecode'>();
  const deviceCodeRequests: RecordedRequest[] = [];
  const usersByEmail = indexUsers(users);
  const appOnly = createMicrosoftAppOnly({
    origin,
    tenantId,
    tenantDomain,
    accessTokenTtl: () => accessTokenTtl,
    delegatedClientIds: [publicClientId, confidentialClientId],
  });

  const clients: ClientMetadata[] = [
    {
      // The "Mobile and desktop applications" registration with "Allow public client flows" on.
      client_id: publicClientId,
      client_name: 'Postern (test)',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: [DEVICE_CODE_GRANT, 'refresh_token', 'authorization_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/oauth2/microsoft/callback'],
    },
    {
      // The same app with public client flows off: Entra ID then insists on a secret at /token.
      client_id: confidentialClientId,
      client_secret: confidentialClientSecret,
      client_name: 'Postern (web app registration)',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [DEVICE_CODE_GRANT, 'refresh_token'],
      response_types: [],
      redirect_uris: [],
    },
    introspectionClient(introspectionClientId, introspectionClientSecret),
    ...appOnly.clients,
  ];

  const configuration: Configuration = {
    ...commonConfiguration(store, usersByEmail, (email) => ({ tid: tenantId, preferred_username: email })),
    clients,
    claims: {
      openid: ['sub', 'tid'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    routes: {
      authorization: `${base}/authorize`,
      token: `${base}/token`,
      device_authorization: `${base}/devicecode`,
      code_verification: '/devicelogin',
      introspection: `${base}/introspect`,
      revocation: `${base}/revoke`,
      end_session: `${base}/logout`,
      jwks: `/${tenantId}/discovery/v2.0/keys`,
      userinfo: '/oidc/userinfo',
    },
    features: {
      ...commonFeatures(introspectionClientId),
      clientCredentials: { enabled: true },
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '****-****',
        userCodeInputSource: renderUserCodeInput,
        userCodeConfirmSource: renderUserCodeConfirm,
        successSource: renderDeviceSuccess,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, _client, oneOf) => graphAwareDefaultResource(ctx, oneOf, graphPermissions),
        // Refresh and code exchange requests carry no `resource`: keep issuing for the granted one.
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, indicator) => {
          const appOnlyResource = appOnly.resourceServerInfo(ctx, indicator);
          if (appOnlyResource) return appOnlyResource;
          if (indicator === GRAPH_RESOURCE && graphPermissions.length > 0) return graphResourceServer(graphPermissions, accessTokenTtl);
          if (indicator !== OUTLOOK_RESOURCE) throw new errors.InvalidTarget();
          // Opaque, so that introspection works (it refuses structured tokens).
          return { audience: OUTLOOK_RESOURCE, scope: OUTLOOK_SCOPES.join(' '), accessTokenFormat: 'opaque', accessTokenTTL: accessTokenTtl };
        },
      },
    },
    ttl: {
      ...commonTtl(() => accessTokenTtl),
      DeviceCode: () => deviceCodeExpiresIn,
    },
    // Microsoft returns a refresh token only when offline_access was asked for ("Refresh tokens are long-lived").
    // Note: oidc-provider drops offline_access from /authorize requests without prompt=consent.
    issueRefreshToken: (_ctx, client, source) =>
      client.grantTypeAllowed('refresh_token') && source.scopes.has('offline_access'),
    // "Refresh tokens replace themselves with a fresh token upon every use." Unlike Microsoft, oidc-provider
    // treats reuse of a rotated token as replay and revokes the grant: stricter, which only catches bugs.
    rotateRefreshToken: true,
  };

  const provider = new Provider(issuer, configuration);

  const verificationUri = `${origin}/devicelogin`;
  const aliasPattern = /^\/([^/]+)\/(oauth2\/v2\.0(?:\/.*)?|v2\.0\/\.well-known\/openid-configuration|discovery\/v2\.0\/keys)$/;

  provider.use(interactionMiddleware(provider, usersByEmail, (grant, details) => grantEverything(grant, details)));

  // Tenant router, recorder, fault injector and Microsoft flavouring, in front of oidc-provider's router.
  provider.use(async (ctx, next) => {
    const match = aliasPattern.exec(ctx.path);
    if (!match) return next();
    const tenant = decodeURIComponent(match[1] ?? '');
    const rest = match[2] ?? '';
    if (!tenants.some((known) => known.toLowerCase() === tenant.toLowerCase())) {
      // What login.microsoftonline.com answers for a tenant that does not exist.
      sendJson(ctx, 400, microsoftError('invalid_request', 90002, `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.`));
      return;
    }
    if (rest === 'oauth2/v2.0' || rest === 'oauth2/v2.0/') {
      sendJson(ctx, 404, { error: 'not_found', error_description: 'The bare v2.0 endpoint is not an endpoint.' });
      return;
    }

    const kind = rest === 'oauth2/v2.0/token' ? 'token' : rest === 'oauth2/v2.0/devicecode' ? 'devicecode' : undefined;
    const isDiscovery = rest.startsWith('v2.0/');
    const originalPath = ctx.path;
    ctx.path = isDiscovery ? '/.well-known/openid-configuration' : `/${tenantId}/${rest}`;

    if (kind === undefined || ctx.method !== 'POST') {
      await next();
      if (isDiscovery && ctx.status === 200 && isRecord(ctx.body)) {
        ctx.body = microsoftDiscoveryFor(ctx.body, tenant);
      }
      return;
    }

    const form = await takeFormBody(ctx);
    const record: RecordedRequest = {
      time: new Date(),
      path: originalPath,
      tenant,
      grantType: form.get('grant_type') ?? undefined,
      clientId: clientIdOf(ctx, form),
      scope: form.get('scope') ?? undefined,
      status: 0,
      injected: false,
    };
    (kind === 'token' ? controls.tokenRequests : deviceCodeRequests).push(record);
    if (kind === 'devicecode') withGraphPermissions(ctx, form, graphPermissions);

    const injected = controls.take(kind);
    if (injected) {
      record.injected = true;
      sendInjected(ctx, injected, record);
      return;
    }

    if (kind === 'token' && record.grantType === 'client_credentials' && appOnly.answerTokenRequest(ctx, form, tenant)) {
      record.status = ctx.status;
      record.error = isRecord(ctx.body) && typeof ctx.body.error === 'string' ? ctx.body.error : undefined;
      return;
    }

    if (kind === 'devicecode' && record.clientId === confidentialClientId && !hasClientSecret(ctx, form)) {
      // Entra ID hands out device codes to such an app without any secret and only refuses at /token.
      // oidc-provider authenticates clients at the device authorization endpoint too, so supply the secret here.
      ctx.req.headers.authorization = basicAuthorization(confidentialClientId, confidentialClientSecret);
    }

    await next();

    if (kind === 'devicecode') {
      if (ctx.status === 200 && isRecord(ctx.body)) {
        ctx.body = microsoftDeviceAuthorizationResponse(ctx.body, interval);
      }
    } else if (isRecord(ctx.body)) {
      if (typeof ctx.body.error === 'string') {
        const mapped = microsoftTokenError(ctx.body, {
          grantType: record.grantType,
          clientId: record.clientId,
          confidentialClientId,
          declineError,
          refreshTokenRevoked: revokedRefreshTokens.has(form.get('refresh_token') ?? ''),
        });
        ctx.status = mapped.status ?? ctx.status;
        ctx.body = mapped.body;
      } else if (typeof ctx.body.expires_in === 'number') {
        ctx.body = { ...ctx.body, ext_expires_in: ctx.body.expires_in };
      }
    }
    record.status = ctx.status;
    record.error = isRecord(ctx.body) && typeof ctx.body.error === 'string' ? ctx.body.error : undefined;
  });

  // Koa composes middleware when callback() is called: only after every provider.use().
  listening.setHandler(provider.callback());

  /** Rewrites discovery metadata for a tenant alias, as login.microsoftonline.com serves per-tenant documents. */
  function microsoftDiscoveryFor(body: Record<string, unknown>, tenant: string): Record<string, unknown> {
    const rewritten: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(body)) {
      // Endpoints (…/oauth2/v2.0/…, …/discovery/v2.0/keys) name the tenant the document was asked for.
      rewritten[key] = typeof value === 'string' && key !== 'issuer' ? value.replace(`${origin}/${tenantId}/`, `${origin}/${tenant}/`) : value;
    }
    if (['common', 'organizations', 'consumers'].includes(tenant.toLowerCase())) {
      // Multi-tenant documents carry a template issuer; the id_token's `iss` names the user's real tenant.
      rewritten.issuer = `${origin}/{tenantid}/v2.0`;
    }
    return rewritten;
  }

  return {
    origin,
    issuer,
    ca: pki.ca.cert,
    pki,
    users,
    tenantId,
    tenantDomain,
    tenants,
    publicClientId,
    confidentialClientId,
    confidentialClientSecret,
    verificationUri,
    jwksUri: `${origin}/${tenantId}/discovery/v2.0/keys`,
    introspection: { url: `${origin}${base}/introspect`, clientId: introspectionClientId, clientSecret: introspectionClientSecret },
    tokenRequests: controls.tokenRequests,
    deviceCodeRequests,
    provider,
    endpoint: (tenant = 'common') => `${origin}/${tenant}/oauth2/v2.0`,
    failNext: (path, response, times = 1) => controls.failNext(path, response, times),
    revokeRefreshTokens: (email) => {
      const revoked = store.revokeRefreshTokens(email);
      for (const id of revoked) revokedRefreshTokens.add(id);
      return revoked.length;
    },
    expireDeviceCodes: () => store.expireDeviceCodes(),
    setAccessTokenTtl: (seconds) => {
      accessTokenTtl = positiveInteger(seconds, 'access token TTL');
    },
    setDeclineError: (error) => {
      declineError = error;
    },
    setClockOffset: (ms) => listening.setDateOffset(ms),
    appOnly: appOnly.controls,
    close: () => listening.close(),
  };
}

/** Adds what Microsoft's /devicecode answer has and oidc-provider's lacks (RFC 8628 §3.2 makes `interval` optional). */
function microsoftDeviceAuthorizationResponse(body: Record<string, unknown>, interval: number): Record<string, unknown> {
  const { verification_uri_complete: _notSentByMicrosoft, ...rest } = body;
  return {
    ...rest,
    interval,
    message: `To sign in, use a web browser to open the page ${String(body.verification_uri)} and enter the code ${String(body.user_code)} to authenticate.`,
  };
}

interface TokenErrorContext {
  grantType: string | undefined;
  clientId: string | undefined;
  confidentialClientId: string;
  declineError: 'authorization_declined' | 'access_denied';
  refreshTokenRevoked: boolean;
}

/**
 * Translates oidc-provider's token endpoint errors into what Entra ID sends for the same situation (the `error`
 * values Microsoft documents for device flow polling, AADSTS numbers in `error_description`). Microsoft's wording
 * is reproduced where it is documented; the rest is close paraphrase. Postern must branch on `error` only.
 */
function microsoftTokenError(body: Record<string, unknown>, context: TokenErrorContext): { status?: number; body: Record<string, unknown> } {
  const error = String(body.error);
  const description = typeof body.error_description === 'string' ? body.error_description : '';
  if (error === 'invalid_client' && context.clientId === context.confidentialClientId) {
    return { status: 401, body: microsoftError('invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.") };
  }
  switch (error) {
    case 'authorization_pending':
      return { body: microsoftError('authorization_pending', 70016, 'OAuth 2.0 device flow error. Authorization is pending. Continue polling.') };
    case 'access_denied':
      return { body: microsoftError(context.declineError, 70000, 'The user declined the authorization request.') };
    case 'expired_token':
      return { body: microsoftError('expired_token', 70019, 'Verification code expired.') };
    case 'invalid_grant':
      if (context.grantType === DEVICE_CODE_GRANT) {
        return /not found/.test(description)
          ? { body: microsoftError('bad_verification_code', 70018, 'Invalid verification code was entered.') }
          : { body: microsoftError('invalid_grant', 90120, 'The device code was already used: the request was already authorized or declined.') };
      }
      if (context.grantType === 'refresh_token') {
        return context.refreshTokenRevoked
          ? { body: microsoftError('invalid_grant', 50173, "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.") }
          : { body: microsoftError('invalid_grant', 70008, 'The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.') };
      }
      if (context.grantType === 'authorization_code' && /consumed|already used/.test(description)) {
        return { body: microsoftError('invalid_grant', 54005, 'OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.') };
      }
      return { body: microsoftError('invalid_grant', 70000, `The provided value for the input parameter is not valid. (${description})`) };
    default:
      return { body };
  }
}

/** The JSON error body shape of login.microsoftonline.com. */
function microsoftError(error: string, code: number, text: string): Record<string, unknown> {
  const now = new Date();
  const traceId = randomUUID();
  const correlationId = randomUUID();
  const timestamp = `${now.toISOString().slice(0, 19).replace('T', ' ')}Z`;
  return {
    error,
    error_description: `AADSTS${code}: ${text} Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${timestamp}`,
    error_codes: [code],
    timestamp,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `https://login.microsoftonline.com/error?code=${code}`,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Microsoft app-only: the client credentials grant (RFC 6749 §4.4) for confidential app registrations
// ---------------------------------------------------------------------------------------------------------------

/** The Exchange Online resource of app-only tokens (their `aud`); its application permission is SMTP.SendAsApp. */
export const APP_ONLY_EXCHANGE_RESOURCE = 'https://outlook.office365.com';
/** Microsoft Graph as a resource of app-only tokens; its application permission for sending is Mail.Send. */
export const APP_ONLY_GRAPH_RESOURCE = 'https://graph.microsoft.com';
/** The application permissions (app roles) an app-only token carries, per resource, once admin consent is given. */
export const APP_ONLY_ROLES: Readonly<Record<string, readonly string[]>> = Object.freeze({
  [APP_ONLY_EXCHANGE_RESOURCE]: ['SMTP.SendAsApp'],
  [APP_ONLY_GRAPH_RESOURCE]: ['Mail.Send'],
});

const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export interface MicrosoftAppOnlyControls {
  /** An app registration that authenticates with a client secret (client_secret_post or HTTP Basic). */
  readonly secretClientId: string;
  /** Its secret's Value. */
  readonly clientSecret: string;
  /** The secret's Secret ID, which administrators paste by mistake (AADSTS7000215). */
  readonly clientSecretId: string;
  /** An app registration that authenticates with a private key JWT; it has no certificate until one is registered. */
  readonly certificateClientId: string;
  /** `https://127.0.0.1:PORT/<tenant>/oauth2/v2.0/token`, by default for the tenant GUID. */
  tokenEndpoint(tenant?: string): string;
  /** Upload a certificate (PEM) to an app registration's Certificates & secrets; Entra ID finds it by thumbprint. */
  registerAppCertificate(clientId: string, certificatePem: string): void;
  /** Remove every certificate of an app registration. */
  removeAppCertificates(clientId: string): void;
  /** Let the secret expire (AADSTS7000222), or renew it. */
  expireClientSecret(expired?: boolean): void;
  /**
   * Admin consent for the app's application permissions (SMTP.SendAsApp, Mail.Send). Without it Entra ID still
   * issues a token, but one without roles, which Exchange refuses with 535 5.7.3. Given by default.
   */
  setAdminConsent(clientId: string, granted: boolean): void;
}

interface AppRegistration {
  clientId: string;
  /** What oidc-provider knows the client by: the front middleware checks Entra's credentials, then hands this on. */
  internalSecret: string;
  credential: 'secret' | 'certificate';
  certificates: Map<string, { x5tS256: string; x5t: string; sha1Hex: string; publicKey: KeyObject }>;
  consented: boolean;
}

interface MicrosoftAppOnly {
  clients: ClientMetadata[];
  /** Resource server info for client credentials grants; undefined for every other grant. */
  resourceServerInfo(ctx: KoaContextWithOIDC, indicator: string): ResourceServer | undefined;
  /**
   * Checks a client credentials request as Entra ID does. Answers it with Entra's error (returns true), or
   * rewrites the form for oidc-provider (resource indicator, roles as scope, the internal secret) and returns false.
   */
  answerTokenRequest(ctx: Koa.Context, form: URLSearchParams, tenant: string): boolean;
  controls: MicrosoftAppOnlyControls;
}

/**
 * Entra ID's side of the client credentials grant. oidc-provider issues the tokens (opaque, introspectable,
 * with `aud` = the resource, `scope` = the app roles and no `sub`); Entra's checks and errors are made here
 * because Entra picks the certificate by the assertion's `x5t#S256`/`x5t` thumbprint and names the
 * unregistered one in AADSTS700027, and because certificates are uploaded while the stand-in runs, which
 * oidc-provider's static clients do not allow.
 */
function createMicrosoftAppOnly(options: {
  origin: string;
  tenantId: string;
  tenantDomain: string;
  accessTokenTtl: () => number;
  /** The delegated registrations, whose client credentials requests oidc-provider itself refuses. */
  delegatedClientIds: readonly string[];
}): MicrosoftAppOnly {
  const { origin, tenantId, tenantDomain } = options;
  const secretClientId = '3c8d5e2f-7a1b-4c9d-8e6f-1a2b3c4d5e61';
  const certificateClientId = '9a4e6c2d-3b5f-4a7e-9c1d-2e3f4a5b6c72';
  const clientSecret = `${randomBytes(3).toString('hex')}~${randomBytes(27).toString('base64url')}`;
  const clientSecretId = randomUUID();
  let secretExpired = false;
  const registrations = new Map<string, AppRegistration>(
    [
      { clientId: secretClientId, credential: 'secret' as const },
      { clientId: certificateClientId, credential: 'certificate' as const },
    ].map(({ clientId, credential }) => [
      clientId,
      { clientId, credential, internalSecret: randomBytes(24).toString('base64url'), certificates: new Map(), consented: true },
    ]),
  );
  const seenAssertions = new Set<string>();
  const tokenEndpoints = [tenantId, tenantDomain].map((tenant) => `${origin}/${tenant}/oauth2/v2.0/token`.toLowerCase());

  const registration = (clientId: string): AppRegistration => {
    const found = registrations.get(clientId);
    if (!found) throw new Error(`no app-only app registration ${clientId}`);
    return found;
  };

  const reply = (ctx: Koa.Context, status: number, error: string, code: number, text: string): true => {
    sendJson(ctx, status, microsoftError(error, code, text));
    return true;
  };

  /** RFC 7523 §3 as Entra ID applies it; returns an error reply, or undefined when the assertion is good. */
  const checkAssertion = (ctx: Koa.Context, app: AppRegistration, form: URLSearchParams): boolean | undefined => {
    if (form.get('client_assertion_type') !== CLIENT_ASSERTION_TYPE || !form.get('client_assertion')) {
      return reply(ctx, 401, 'invalid_client', 7000216, "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.");
    }
    const parts = (form.get('client_assertion') ?? '').split('.');
    const header = parts.length === 3 ? decodeJsonPart(parts[0]!) : undefined;
    const claims = parts.length === 3 ? decodeJsonPart(parts[1]!) : undefined;
    if (!header || !claims) {
      return reply(ctx, 400, 'invalid_request', 50027, 'JWT token is invalid or malformed.');
    }
    const x5tS256 = typeof header['x5t#S256'] === 'string' ? header['x5t#S256'] : undefined;
    const x5t = typeof header.x5t === 'string' ? header.x5t : undefined;
    const certificate = [...app.certificates.values()].find((c) => (x5tS256 !== undefined && c.x5tS256 === x5tS256) || (x5tS256 === undefined && c.x5t === x5t));
    if (!certificate) {
      const thumbprint = x5t ? Buffer.from(x5t, 'base64url').toString('hex').toUpperCase() : (x5tS256 ?? 'none');
      return reply(
        ctx,
        401,
        'invalid_client',
        700027,
        `Client assertion failed signature validation. (Reason - The key was not found., Thumbprint of key used by client: '${thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '${app.clientId}'.)`,
      );
    }
    const input = Buffer.from(`${parts[0]}.${parts[1]}`);
    const signature = Buffer.from(parts[2]!, 'base64url');
    const verified =
      header.alg === 'RS256'
        ? verify('sha256', input, certificate.publicKey, signature)
        : header.alg === 'PS256'
          ? verify('sha256', input, { key: certificate.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature)
          : false;
    if (!verified) {
      return reply(ctx, 401, 'invalid_client', 700027, 'Client assertion failed signature validation. (Reason - The provided signature value did not match the expected signature value.)');
    }
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.some((value) => typeof value === 'string' && tokenEndpoints.includes(value.toLowerCase()))) {
      return reply(ctx, 401, 'invalid_client', 700021, `Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials.`);
    }
    if (claims.iss !== app.clientId || claims.sub !== app.clientId) {
      return reply(ctx, 401, 'invalid_client', 700023, 'Client assertion issuer or subject claim is not the client id of the application.');
    }
    const nowS = Math.floor(Date.now() / 1000);
    const skew = 300;
    const exp = typeof claims.exp === 'number' ? claims.exp : NaN;
    const nbf = typeof claims.nbf === 'number' ? claims.nbf : typeof claims.iat === 'number' ? claims.iat : nowS;
    if (!(exp + skew > nowS) || nbf - skew > nowS) {
      return reply(ctx, 400, 'invalid_client', 700024, `Client assertion is not within its valid time range. Current time: ${new Date(nowS * 1000).toISOString()}, assertion valid from ${new Date(nbf * 1000).toISOString()}, expiry time of assertion ${Number.isFinite(exp) ? new Date(exp * 1000).toISOString() : 'none'}.`);
    }
    const jti = typeof claims.jti === 'string' ? claims.jti : '';
    if (!jti || seenAssertions.has(`${app.clientId}:${jti}`)) {
      return reply(ctx, 400, 'invalid_client', 700027, 'The jti claim of the client assertion is missing or was already used.');
    }
    seenAssertions.add(`${app.clientId}:${jti}`);
    return undefined;
  };

  const checkSecret = (ctx: Koa.Context, app: AppRegistration, form: URLSearchParams): boolean | undefined => {
    const secret = form.get('client_secret') ?? basicSecretOf(ctx);
    if (secret === undefined) {
      return reply(ctx, 401, 'invalid_client', 7000216, "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.");
    }
    if (secret !== clientSecret) {
      return reply(ctx, 401, 'invalid_client', 7000215, `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${app.clientId}'.`);
    }
    if (secretExpired) {
      return reply(ctx, 401, 'invalid_client', 7000222, `The provided client secret keys for app '${app.clientId}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.`);
    }
    return undefined;
  };

  return {
    clients: [...registrations.values()].map((app) => ({
      client_id: app.clientId,
      client_secret: app.internalSecret,
      client_name: `Postern app-only (${app.credential})`,
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    })),
    resourceServerInfo: (ctx, indicator) => {
      if (ctx.oidc.params?.grant_type !== 'client_credentials') return undefined;
      const roles = APP_ONLY_ROLES[indicator];
      if (!roles) throw new errors.InvalidTarget();
      return { audience: indicator, scope: roles.join(' '), accessTokenFormat: 'opaque', accessTokenTTL: options.accessTokenTtl() };
    },
    answerTokenRequest: (ctx, form, tenant) => {
      if (['common', 'organizations', 'consumers'].includes(tenant.toLowerCase())) {
        return reply(ctx, 400, 'invalid_request', 50059, 'No tenant-identifying information found in either the request or implied by any provided credentials.');
      }
      const clientId = form.get('client_id') ?? clientIdOf(ctx, form) ?? issuerOfAssertion(form.get('client_assertion'));
      const app = clientId === undefined ? undefined : registrations.get(clientId);
      if (!app) {
        // The delegated registrations of this stand-in are left to oidc-provider, which refuses the grant.
        if (clientId !== undefined && !options.delegatedClientIds.includes(clientId)) {
          return reply(ctx, 400, 'unauthorized_client', 700016, `Application with identifier '${clientId}' was not found in the directory '${tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`);
        }
        return false;
      }
      const scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
      const notDefault = scopes.find((scope) => !scope.endsWith('/.default'));
      if (scopes.length === 0 || notDefault !== undefined) {
        return reply(ctx, 400, 'invalid_scope', 1002012, `The provided value for scope ${notDefault ?? "''"} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
      }
      if (scopes.length > 1) {
        return reply(ctx, 400, 'invalid_scope', 70011, `The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope ${scopes.join(' ')} is not valid: ask for one resource per request.`);
      }
      const resource = scopes[0]!.slice(0, -'/.default'.length);
      if (!APP_ONLY_ROLES[resource]) {
        return reply(ctx, 400, 'invalid_resource', 500011, `The resource principal named ${resource} was not found in the tenant named ${tenantDomain}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.`);
      }
      const refused = app.credential === 'secret' ? checkSecret(ctx, app, form) : checkAssertion(ctx, app, form);
      if (refused) return true;
      const handedOn = new URLSearchParams({
        grant_type: 'client_credentials',
        client_id: app.clientId,
        client_secret: app.internalSecret,
        resource,
        scope: app.consented ? APP_ONLY_ROLES[resource]!.join(' ') : '',
      });
      if (!app.consented) handedOn.delete('scope');
      delete ctx.req.headers.authorization;
      (ctx.req as IncomingMessage & { body?: unknown }).body = handedOn.toString();
      return false;
    },
    controls: {
      secretClientId,
      clientSecret,
      clientSecretId,
      certificateClientId,
      tokenEndpoint: (tenant = tenantId) => `${origin}/${tenant}/oauth2/v2.0/token`,
      registerAppCertificate: (clientId, certificatePem) => {
        const certificate = new X509Certificate(certificatePem);
        const sha1 = createHash('sha1').update(certificate.raw).digest();
        const x5tS256 = createHash('sha256').update(certificate.raw).digest('base64url');
        registration(clientId).certificates.set(x5tS256, {
          x5tS256,
          x5t: sha1.toString('base64url'),
          sha1Hex: sha1.toString('hex').toUpperCase(),
          publicKey: certificate.publicKey,
        });
      },
      removeAppCertificates: (clientId) => registration(clientId).certificates.clear(),
      expireClientSecret: (expired = true) => {
        secretExpired = expired;
      },
      setAdminConsent: (clientId, granted) => {
        registration(clientId).consented = granted;
      },
    },
  };
}

function decodeJsonPart(part: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return isRecord(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function issuerOfAssertion(assertion: string | null): string | undefined {
  const claims = assertion ? decodeJsonPart(assertion.split('.')[1] ?? '') : undefined;
  return typeof claims?.iss === 'string' ? claims.iss : undefined;
}

/** The secret of an HTTP Basic client authentication (RFC 6749 §2.3.1), if one was sent. */
function basicSecretOf(ctx: Koa.Context): string | undefined {
  const match = /^basic\s+(.+)$/i.exec(ctx.get('authorization'));
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon > 0 ? decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, '%20')) : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Microsoft Graph resource (tokens for graph.microsoft.com from the same sign-in)
// ---------------------------------------------------------------------------------------------------------------

/**
 * Entra ID refresh tokens are multi-resource: one sign-in to an app registration that has Graph permissions
 * gives a refresh token that also buys a Graph token (`scope=https://graph.microsoft.com/Mail.Send
 * offline_access` at /token). oidc-provider ties a refresh token to the resources and scopes of its
 * authorization, so a device authorization here also names the Graph resource and the app's Graph
 * permissions, as Microsoft's consent covers the app's configured permissions. The token endpoint issues
 * for the resource the requested scopes belong to (Outlook when none is named), one resource per token.
 */
export const GRAPH_RESOURCE = 'https://graph.microsoft.com';
export const GRAPH_MAIL_SEND_SCOPE = 'https://graph.microsoft.com/Mail.Send';
export const GRAPH_MAIL_READWRITE_SCOPE = 'https://graph.microsoft.com/Mail.ReadWrite';
const GRAPH_PERMISSIONS: readonly string[] = ['Mail.Send', 'Mail.ReadWrite'];

function graphAwareDefaultResource(ctx: KoaContextWithOIDC, oneOf: readonly string[] | undefined, graphPermissions: readonly string[]): string | string[] {
  if (oneOf) {
    const asked = String(ctx.oidc.params?.scope ?? '').split(' ');
    if (oneOf.includes(GRAPH_RESOURCE) && asked.some((scope) => scope.startsWith(`${GRAPH_RESOURCE}/`))) return GRAPH_RESOURCE;
    return oneOf.includes(OUTLOOK_RESOURCE) ? OUTLOOK_RESOURCE : (oneOf[0] ?? OUTLOOK_RESOURCE);
  }
  return ctx.oidc.route === 'device_authorization' && graphPermissions.length > 0 ? [OUTLOOK_RESOURCE, GRAPH_RESOURCE] : OUTLOOK_RESOURCE;
}

function graphResourceServer(graphPermissions: readonly string[], accessTokenTtl: number) {
  const scope = graphPermissions.map((permission) => `${GRAPH_RESOURCE}/${permission}`).join(' ');
  return { audience: GRAPH_RESOURCE, scope, accessTokenFormat: 'opaque' as const, accessTokenTTL: accessTokenTtl };
}

/** Adds the app's Graph permissions to a device authorization request (the client's own request is recorded as sent). */
function withGraphPermissions(ctx: Koa.Context, form: URLSearchParams, graphPermissions: readonly string[]): void {
  if (graphPermissions.length === 0 || !form.has('scope')) return;
  const scopes = new Set((form.get('scope') ?? '').split(' ').filter(Boolean));
  for (const permission of graphPermissions) scopes.add(`${GRAPH_RESOURCE}/${permission}`);
  form.set('scope', [...scopes].join(' '));
  (ctx.req as IncomingMessage & { body?: unknown }).body = form.toString();
}

// ---------------------------------------------------------------------------------------------------------------
// Google
// ---------------------------------------------------------------------------------------------------------------

export const GMAIL_SCOPE = 'https://mail.google.com/';
/** Google spells the OIDC `email`/`profile` scopes as these URLs in token responses. */
const GOOGLE_SCOPE_NAMES: Record<string, string> = {
  email: 'https://www.googleapis.com/auth/userinfo.email',
  profile: 'https://www.googleapis.com/auth/userinfo.profile',
};

export interface GoogleStandinOptions extends StandinTlsOptions {
  users?: readonly StandinUser[];
  clientId?: string;
  clientSecret?: string;
  /** Registered loopback redirect URIs; any port matches (RFC 8252 §7.3). Default `…/oauth2/google/callback`. */
  redirectUris?: string[];
  /** Google keeps the refresh token on refresh; set true to rotate like Microsoft. Default false. */
  rotateRefreshTokens?: boolean;
  /** Start in granular-consent mode where the user leaves Gmail access unticked. Default false. */
  withholdMailScope?: boolean;
  accessTokenTtl?: number;
}

export interface GoogleStandin extends StandinControls<'token'> {
  readonly clientId: string;
  readonly clientSecret: string;
  /** `https://127.0.0.1:PORT/o/oauth2/v2/auth` */
  readonly authorizationEndpoint: string;
  /** `https://127.0.0.1:PORT/token` */
  readonly tokenEndpoint: string;
  /**
   * Simulate granular consent: users consent to `openid email` but leave `https://mail.google.com/` unticked,
   * so the token response `scope` lacks it. Applies to consents given from now on.
   */
  grantScopeWithoutMail(withhold?: boolean): void;
  /** App-only: service accounts with domain-wide delegation (see GoogleServiceAccountControls). */
  readonly serviceAccounts: GoogleServiceAccountControls;
}

/**
 * Starts an authorization server in Google's layout: `/o/oauth2/v2/auth`, `/token`, issuer = origin,
 * a confidential "Desktop app" client (secret via client_secret_post or client_secret_basic, PKCE S256 required,
 * loopback redirect on any port), refresh tokens that do not rotate, and Google's `invalid_grant` text.
 */
export async function startGoogleStandin(options: GoogleStandinOptions = {}): Promise<GoogleStandin> {
  const users = options.users ?? DEFAULT_USERS;
  const clientId = options.clientId ?? '123456789012-postern0test0client.apps.googleusercontent.com';
  const clientSecret = options.clientSecret ?? `GOCSPX-${randomBytes(21).toString('base64url')}`;
  const redirectUris = options.redirectUris ?? ['http://127.0.0.1/oauth2/google/callback', 'http://[::1]/oauth2/google/callback'];
  const introspectionClientId = 'postern-smtp-resource-server';
  const introspectionClientSecret = randomBytes(24).toString('base64url');
  let accessTokenTtl = options.accessTokenTtl ?? 3599;
  let withholdMailScope = options.withholdMailScope ?? false;

  const pki = options.pki ?? (await createTestPki());
  const listening = await listenHttps(pki);
  const { origin } = listening;
  const issuer = origin;

  const store = new MemoryStore();
  const controls = new RequestControls<'token'>();
  const usersByEmail = indexUsers(users);
  const serviceAccounts = createGoogleServiceAccounts({
    store,
    tokenEndpoint: `${origin}/token`,
    users: usersByEmail,
    accessTokenTtl: () => accessTokenTtl,
  });

  const configuration: Configuration = {
    ...commonConfiguration(store, usersByEmail, () => ({})),
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        client_name: 'Postern (test)',
        // Native: loopback redirect URIs match on any port. Both client_secret_basic and client_secret_post are
        // accepted for a client registered with either one (oidc-provider treats them as interchangeable).
        application_type: 'native',
        token_endpoint_auth_method: 'client_secret_post',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: redirectUris,
      },
      introspectionClient(introspectionClientId, introspectionClientSecret),
    ],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    scopes: ['openid', 'email', 'profile'],
    routes: {
      authorization: '/o/oauth2/v2/auth',
      token: '/token',
      revocation: '/revoke',
      introspection: '/introspect',
      jwks: '/oauth2/v3/certs',
      userinfo: '/v1/userinfo',
      end_session: '/logout',
    },
    pkce: { required: () => true },
    features: {
      ...commonFeatures(introspectionClientId),
      resourceIndicators: {
        enabled: true,
        defaultResource: () => GMAIL_SCOPE,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, indicator) => {
          if (indicator !== GMAIL_SCOPE) throw new errors.InvalidTarget();
          return { audience: GMAIL_SCOPE, scope: GMAIL_SCOPE, accessTokenFormat: 'opaque', accessTokenTTL: accessTokenTtl };
        },
      },
    },
    ttl: commonTtl(() => accessTokenTtl),
    // "Note that refresh tokens are always returned for installed applications."
    issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: options.rotateRefreshTokens ?? false,
  };

  const provider = new Provider(issuer, configuration);
  serviceAccounts.register(provider);

  // Granular consent (when withholding): the Gmail box stays unticked while openid/email are granted.
  provider.use(
    interactionMiddleware(provider, usersByEmail, (grant, details) =>
      grantEverything(grant, details, (_indicator, scope) => withholdMailScope && scope === GMAIL_SCOPE),
    ),
  );

  provider.use(async (ctx, next) => {
    if (ctx.path !== '/token' || ctx.method !== 'POST') return next();
    const form = await takeFormBody(ctx);
    const record: RecordedRequest = {
      time: new Date(),
      path: ctx.path,
      grantType: form.get('grant_type') ?? undefined,
      clientId: clientIdOf(ctx, form),
      scope: form.get('scope') ?? undefined,
      status: 0,
      injected: false,
    };
    controls.tokenRequests.push(record);
    const injected = controls.take('token');
    if (injected) {
      record.injected = true;
      sendInjected(ctx, injected, record);
      return;
    }
    serviceAccounts.routeTokenRequest(ctx, form);

    await next();

    if (isRecord(ctx.body)) {
      if (typeof ctx.body.error === 'string') {
        ctx.body = googleTokenError(ctx.body, record.grantType);
      } else {
        ctx.body = googleTokenResponse(ctx as unknown as KoaContextWithOIDC, ctx.body);
      }
    }
    record.status = ctx.status;
    record.error = isRecord(ctx.body) && typeof ctx.body.error === 'string' ? ctx.body.error : undefined;
  });

  // Koa composes middleware when callback() is called: only after every provider.use().
  listening.setHandler(provider.callback());

  return {
    origin,
    issuer,
    ca: pki.ca.cert,
    pki,
    users,
    clientId,
    clientSecret,
    authorizationEndpoint: `${origin}/o/oauth2/v2/auth`,
    tokenEndpoint: `${origin}/token`,
    jwksUri: `${origin}/oauth2/v3/certs`,
    introspection: { url: `${origin}/introspect`, clientId: introspectionClientId, clientSecret: introspectionClientSecret },
    tokenRequests: controls.tokenRequests,
    provider,
    failNext: (path, response, times = 1) => controls.failNext(path, response, times),
    revokeRefreshTokens: (email) => store.revokeRefreshTokens(email).length,
    setAccessTokenTtl: (seconds) => {
      accessTokenTtl = positiveInteger(seconds, 'access token TTL');
    },
    grantScopeWithoutMail: (withhold = true) => {
      withholdMailScope = withhold;
    },
    serviceAccounts: serviceAccounts.controls,
    setClockOffset: (ms) => listening.setDateOffset(ms),
    close: () => listening.close(),
  };
}

/**
 * Google's token response: `scope` lists the resource scope plus the identity scopes in Google's spelling
 * (e.g. `https://mail.google.com/ openid https://www.googleapis.com/auth/userinfo.email`), and a refresh response
 * carries no `refresh_token` unless it was rotated.
 */
function googleTokenResponse(ctx: KoaContextWithOIDC, body: Record<string, unknown>): Record<string, unknown> {
  const oidc = ctx.oidc as KoaContextWithOIDC['oidc'] | undefined;
  const grant = oidc?.entities.Grant;
  const resourceScopes = typeof body.scope === 'string' && body.scope ? body.scope.split(' ') : [];
  const identityScopes = grant ? grant.getOIDCScope().split(' ').filter(Boolean).map((s) => GOOGLE_SCOPE_NAMES[s] ?? s) : [];
  const result: Record<string, unknown> = { ...body, scope: [...resourceScopes, ...identityScopes].join(' ') };
  if (oidc?.params?.grant_type === 'refresh_token' && !oidc.entities.RotatedRefreshToken) {
    delete result.refresh_token;
  }
  return result;
}

/** Google's token endpoint error texts. */
function googleTokenError(body: Record<string, unknown>, grantType: string | undefined): Record<string, unknown> {
  if (body.error === 'invalid_grant' && grantType === 'refresh_token') {
    return { error: 'invalid_grant', error_description: 'Token has been expired or revoked.' };
  }
  if (body.error === 'invalid_grant' && grantType === 'authorization_code') {
    return { error: 'invalid_grant', error_description: `Bad Request (${String(body.error_description ?? '')})` };
  }
  if (body.error === 'invalid_client') {
    return { error: 'invalid_client', error_description: 'Unauthorized' };
  }
  return body;
}

// ---------------------------------------------------------------------------------------------------------------
// Google app-only: service accounts with domain-wide delegation (RFC 7523 §2.1 JWT bearer grant)
// ---------------------------------------------------------------------------------------------------------------

const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

export interface GoogleServiceAccountControls {
  /**
   * A new service account with one key; returns the key file's text, as the Google Cloud console downloads it
   * (IAM & Admin > Service Accounts > Keys > Add key > JSON).
   */
  createServiceAccount(name?: string): string;
  /** Another key for an existing service account (by client_email); returns the new key file's text. */
  addServiceAccountKey(clientEmail: string): string;
  /** Delete a key (by private_key_id): assertions it signs no longer verify. */
  deleteServiceAccountKey(privateKeyId: string): void;
  /** The Admin console's domain-wide delegation entry: client ID and the scopes it may ask for. */
  authorizeDelegation(clientId: string, scopes: readonly string[]): void;
  revokeDelegation(clientId: string): void;
}

interface ServiceAccount {
  clientEmail: string;
  clientId: string;
  projectId: string;
  /** private_key_id → public key: Google keeps only the public half. */
  keys: Map<string, KeyObject>;
}

const GOOGLE_UNAUTHORIZED_CLIENT =
  'Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.';

/** An error with Google's own error_description (oidc-provider's error classes carry their own fixed texts). */
function googleGrantError(error: string, description: string): Error {
  return new errors.CustomOIDCProviderError(error, description);
}

/**
 * Google's token endpoint for service accounts. The front middleware finds the service account named by the
 * assertion's `iss` and names its client for oidc-provider (the request itself has no client authentication);
 * the grant handler checks the assertion (RS256 with the account's public key, iss, aud, iat, exp), the
 * domain-wide delegation and the mailbox, and issues an opaque token for `sub` with scope
 * https://mail.google.com/. Service account clients live in the stand-in's store, since they are made while it runs.
 */
function createGoogleServiceAccounts(options: {
  store: MemoryStore;
  tokenEndpoint: string;
  users: Map<string, StandinUser>;
  accessTokenTtl: () => number;
}): {
  register(provider: Provider): void;
  /** Adds `client_id` to a JWT bearer request whose assertion names a known service account. */
  routeTokenRequest(ctx: Koa.Context, form: URLSearchParams): void;
  controls: GoogleServiceAccountControls;
} {
  const accounts = new Map<string, ServiceAccount>();
  const delegations = new Map<string, Set<string>>();
  const clientAdapter = options.store.adapterFor('Client');

  const keyFile = (account: ServiceAccount): string => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const privateKeyId = randomBytes(20).toString('hex');
    account.keys.set(privateKeyId, publicKey);
    return `${JSON.stringify(
      {
        type: 'service_account',
        project_id: account.projectId,
        private_key_id: privateKeyId,
        private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        client_email: account.clientEmail,
        client_id: account.clientId,
        auth_uri: 'https://accounts.google.com/o/oauth2/auth',
        token_uri: options.tokenEndpoint,
        auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
        client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(account.clientEmail)}`,
        universe_domain: 'googleapis.com',
      },
      null,
      2,
    )}\n`;
  };

  const accountByEmail = (clientEmail: string): ServiceAccount => {
    const account = [...accounts.values()].find((a) => a.clientEmail === clientEmail);
    if (!account) throw new Error(`no service account ${clientEmail}`);
    return account;
  };

  /** RFC 7523 §3 checks, with Google's texts. Returns the verified claims. */
  const verifyAssertion = (assertion: string): { account: ServiceAccount; claims: Record<string, unknown> } => {
    const parts = assertion.split('.');
    const header = parts.length === 3 ? decodeJsonPart(parts[0]!) : undefined;
    const claims = parts.length === 3 ? decodeJsonPart(parts[1]!) : undefined;
    if (!header || !claims) throw googleGrantError('invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.');
    const account = typeof claims.iss === 'string' ? [...accounts.values()].find((a) => a.clientEmail === claims.iss) : undefined;
    if (!account) throw googleGrantError('invalid_grant', 'Invalid grant: account not found');
    const publicKey = typeof header.kid === 'string' ? account.keys.get(header.kid) : undefined;
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
    if (header.alg !== 'RS256' || !publicKey || !verify('sha256', signed, publicKey, Buffer.from(parts[2]!, 'base64url'))) {
      throw googleGrantError('invalid_grant', 'Invalid JWT Signature.');
    }
    if (claims.aud !== options.tokenEndpoint) throw googleGrantError('invalid_grant', `Invalid JWT: Failed audience check. The right audience is ${options.tokenEndpoint}`);
    const nowS = Math.floor(Date.now() / 1000);
    const { iat, exp } = claims;
    if (typeof iat !== 'number' || typeof exp !== 'number' || exp - iat > 3600 || exp <= iat || iat > nowS + 300 || exp < nowS - 300) {
      throw googleGrantError('invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.');
    }
    return { account, claims };
  };

  return {
    register(provider) {
      provider.registerGrantType(
        JWT_BEARER_GRANT,
        async (ctx) => {
          const { account, claims } = verifyAssertion(String(ctx.oidc.params.assertion ?? ''));
          const requested = typeof claims.scope === 'string' ? claims.scope.split(' ').filter(Boolean) : [];
          const delegated = delegations.get(account.clientId);
          if (!delegated || requested.length === 0 || !requested.every((scope) => delegated.has(scope))) {
            throw googleGrantError('unauthorized_client', GOOGLE_UNAUTHORIZED_CLIENT);
          }
          const user = typeof claims.sub === 'string' ? options.users.get(claims.sub.toLowerCase()) : undefined;
          if (!user) throw googleGrantError('invalid_grant', 'Invalid email or User ID');
          // The delegation stands in for the user's consent: a grant of Gmail to this service account.
          const grant = new ctx.oidc.provider.Grant({ accountId: user.email, clientId: ctx.oidc.client.clientId });
          grant.addResourceScope(GMAIL_SCOPE, GMAIL_SCOPE);
          const grantId = await grant.save();
          const token = new ctx.oidc.provider.AccessToken({
            accountId: user.email,
            client: ctx.oidc.client,
            grantId,
            gty: JWT_BEARER_GRANT,
            scope: requested.filter((scope) => scope === GMAIL_SCOPE).join(' ') || undefined,
          });
          token.resourceServer = new ctx.oidc.provider.ResourceServer(GMAIL_SCOPE, {
            audience: GMAIL_SCOPE,
            scope: GMAIL_SCOPE,
            accessTokenFormat: 'opaque',
            accessTokenTTL: options.accessTokenTtl(),
          });
          const value = await token.save();
          ctx.body = { access_token: value, expires_in: token.expiration, scope: token.scope, token_type: 'Bearer' };
        },
        ['assertion'],
      );
    },
    routeTokenRequest(ctx, form) {
      if (form.get('grant_type') !== JWT_BEARER_GRANT || form.has('client_id')) return;
      const claims = decodeJsonPart(form.get('assertion')?.split('.')[1] ?? '');
      const account = typeof claims?.iss === 'string' ? [...accounts.values()].find((a) => a.clientEmail === claims.iss) : undefined;
      if (!account) return;
      form.set('client_id', account.clientId);
      (ctx.req as IncomingMessage & { body?: unknown }).body = form.toString();
    },
    controls: {
      createServiceAccount(name = `postern-${accounts.size + 1}`) {
        const clientId = `1${Array.from(randomBytes(20), (b) => String(b % 10)).join('')}`;
        const account: ServiceAccount = { clientEmail: `${name}@postern-test.iam.gserviceaccount.com`, clientId, projectId: 'postern-test', keys: new Map() };
        accounts.set(clientId, account);
        void clientAdapter.upsert(clientId, {
          client_id: clientId,
          client_name: account.clientEmail,
          token_endpoint_auth_method: 'none',
          grant_types: [JWT_BEARER_GRANT],
          response_types: [],
          redirect_uris: [],
        });
        return keyFile(account);
      },
      addServiceAccountKey: (clientEmail) => keyFile(accountByEmail(clientEmail)),
      deleteServiceAccountKey(privateKeyId) {
        for (const account of accounts.values()) account.keys.delete(privateKeyId);
      },
      authorizeDelegation(clientId, scopes) {
        delegations.set(clientId, new Set(scopes));
      },
      revokeDelegation(clientId) {
        delegations.delete(clientId);
      },
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Shared provider configuration
// ---------------------------------------------------------------------------------------------------------------

type ExtraClaims = (email: string) => Record<string, unknown>;

function commonConfiguration(store: MemoryStore, users: Map<string, StandinUser>, extraClaims: ExtraClaims): Configuration {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    adapter: (model: string) => store.adapterFor(model),
    // Own keys and cookie keys: keeps oidc-provider from printing its development-only warnings.
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' }] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    findAccount: (_ctx, sub) => accountFor(users, sub, extraClaims),
    // Access tokens carry the mailbox for resource servers (SMTP's XOAUTH2 `user=` must match it).
    extraTokenClaims: (_ctx, token) =>
      token.kind === 'AccessToken' && token.accountId
        ? { email: token.accountId, username: token.accountId, ...extraClaims(token.accountId) }
        : undefined,
    // id_tokens carry profile/email claims directly (Postern shows which account signed in from the id_token).
    conformIdTokenClaims: false,
    // Tokens outlive the browser session at both vendors.
    expiresWithSession: () => false,
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError: (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Sign-in error', `<h1>Sorry, something went wrong</h1>${Object.entries(out)
        .map(([key, value]) => `<p class="error"><strong>${escapeHtml(key)}</strong>: ${escapeHtml(String(value))}</p>`)
        .join('')}`);
    },
  };
}

function commonFeatures(introspectionClientId: string): NonNullable<Configuration['features']> {
  return {
    devInteractions: { enabled: false },
    introspection: {
      enabled: true,
      // Only the resource server (and a client asking about its own tokens) may introspect.
      allowedPolicy: (ctx, client, token) => client.clientId === introspectionClientId || token.clientId === client.clientId,
    },
    revocation: {
      enabled: true,
      allowedPolicy: (_ctx, client, token) => token.clientId === client.clientId,
    },
    userinfo: { enabled: true },
  };
}

function commonTtl(accessTokenTtl: () => number): NonNullable<Configuration['ttl']> {
  return {
    AccessToken: () => accessTokenTtl(),
    AuthorizationCode: 600,
    IdToken: 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 90 * 24 * 3600,
    RefreshToken: 90 * 24 * 3600,
  };
}

function introspectionClient(clientId: string, clientSecret: string): ClientMetadata {
  return {
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  };
}

function indexUsers(users: readonly StandinUser[]): Map<string, StandinUser> {
  return new Map(users.map((user) => [user.email.toLowerCase(), user]));
}

function accountFor(users: Map<string, StandinUser>, email: string, extraClaims: ExtraClaims): Account | undefined {
  const user = users.get(email.toLowerCase());
  if (!user) return undefined;
  return {
    accountId: user.email,
    claims: () => ({
      sub: user.email,
      email: user.email,
      email_verified: true,
      name: user.name ?? user.email.split('@')[0],
      ...extraClaims(user.email),
    }),
  };
}

function positiveInteger(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${what} must be a positive integer, got ${value}`);
  return value;
}

// ---------------------------------------------------------------------------------------------------------------
// Login and consent pages
// ---------------------------------------------------------------------------------------------------------------

type ConsentPolicy = (grant: InstanceType<Provider['Grant']>, details: Interaction['prompt']['details']) => void;

/**
 * Consents to everything the consent prompt says is missing (OIDC scopes, claims, resource scopes), except
 * resource scopes for which `withhold` answers true: those are rejected rather than left out, so that the
 * prompt counts them as answered and does not ask again.
 */
function grantEverything(
  grant: InstanceType<Provider['Grant']>,
  details: Interaction['prompt']['details'],
  withhold: (indicator: string, scope: string) => boolean = () => false,
): void {
  const missingOIDCScope = details.missingOIDCScope as string[] | undefined;
  const missingOIDCClaims = details.missingOIDCClaims as string[] | undefined;
  const missingResourceScopes = details.missingResourceScopes as Record<string, string[]> | undefined;
  if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
  if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
    const granted = scopes.filter((scope) => !withhold(indicator, scope));
    const rejected = scopes.filter((scope) => withhold(indicator, scope));
    if (granted.length) grant.addResourceScope(indicator, granted.join(' '));
    if (rejected.length) grant.rejectResourceScope(indicator, rejected.join(' '));
  }
}

/**
 * The sign-in UI at `/interaction/:uid`: a login form (e-mail + password, checked against the stand-in's users),
 * then a consent form with Accept and Cancel. Cancel ends the request with `access_denied`
 * (RFC 6749 §4.1.2.1), which oidc-provider delivers to the redirect URI or to the polling device.
 *
 * Forms: `#login` POST `/interaction/:uid/login` (`login`, `password`), `#consent` POST `/interaction/:uid/confirm`,
 * `#deny` POST `/interaction/:uid/abort`.
 */
function interactionMiddleware(provider: Provider, users: Map<string, StandinUser>, consentPolicy: ConsentPolicy): Koa.Middleware {
  const pattern = /^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/;
  return async (ctx, next) => {
    const match = pattern.exec(ctx.path);
    if (!match) return next();
    const uid = match[1] ?? '';
    const action = match[2];
    const req = ctx.req as IncomingMessage;
    const res = ctx.res as ServerResponse;
    let interaction: Interaction;
    try {
      interaction = await provider.interactionDetails(req, res);
    } catch (err) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Sign-in error', `<h1>Your sign-in session has expired</h1><p class="error">${escapeHtml(String(err))}</p>`);
      return;
    }
    if (interaction.uid !== uid) ctx.throw(400, 'interaction mismatch');
    const clientId = String(interaction.params.client_id ?? '');

    const finish = async (result: Parameters<Provider['interactionResult']>[2], merge: boolean): Promise<void> => {
      const returnTo = await provider.interactionResult(req, res, result, { mergeWithLastSubmission: merge });
      ctx.redirect(returnTo);
      ctx.status = 303;
    };

    if (action === undefined && ctx.method === 'GET') {
      ctx.type = 'html';
      ctx.body = interaction.prompt.name === 'login' ? loginPage(uid, clientId) : consentPage(uid, clientId, interaction);
      return;
    }
    if (ctx.method !== 'POST' && action !== 'abort') ctx.throw(405);

    if (action === 'abort') {
      await finish({ error: 'access_denied', error_description: 'End-User aborted interaction' }, false);
      return;
    }
    const form = new URLSearchParams(await readBody(req));
    if (action === 'login') {
      const email = form.get('login') ?? '';
      const user = users.get(email.toLowerCase());
      if (!user || user.password !== form.get('password')) {
        ctx.type = 'html';
        ctx.body = loginPage(uid, clientId, email, 'Your account or password is incorrect.');
        return;
      }
      await finish({ login: { accountId: user.email } }, false);
      return;
    }
    if (action === 'confirm') {
      if (interaction.prompt.name !== 'consent') ctx.throw(400, 'nothing to consent to');
      const accountId = interaction.session?.accountId;
      if (!accountId) ctx.throw(400, 'not signed in');
      const grant = interaction.grantId
        ? ((await provider.Grant.find(interaction.grantId)) ?? new provider.Grant({ accountId, clientId }))
        : new provider.Grant({ accountId, clientId });
      consentPolicy(grant, interaction.prompt.details);
      const grantId = await grant.save();
      await finish({ consent: { grantId } }, true);
      return;
    }
    ctx.throw(404);
  };
}

function loginPage(uid: string, clientId: string, email = '', error?: string): string {
  return page(
    'Sign in to your account',
    `<h1>Sign in</h1>
<p>to continue to <strong>${escapeHtml(clientId)}</strong></p>
${error ? `<p class="error" id="error">${escapeHtml(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <input type="hidden" name="prompt" value="login"/>
  <input type="email" name="login" placeholder="Email, phone, or Skype" value="${escapeHtml(email)}" required autofocus/>
  <input type="password" name="password" placeholder="Password" required/>
  <button type="submit">Sign in</button>
</form>
<form id="deny" method="post" action="/interaction/${escapeHtml(uid)}/abort"><button type="submit">Cancel</button></form>`,
  );
}

function consentPage(uid: string, clientId: string, interaction: Interaction): string {
  const requested = String(interaction.params.scope ?? '').split(' ').filter(Boolean);
  return page(
    'Permissions requested',
    `<h1>Permissions requested</h1>
<p><strong>${escapeHtml(clientId)}</strong> would like to:</p>
<ul>${requested.map((scope) => `<li>${escapeHtml(scope)}</li>`).join('')}</ul>
<form id="consent" method="post" action="/interaction/${escapeHtml(uid)}/confirm">
  <input type="hidden" name="prompt" value="consent"/>
  <button type="submit">Accept</button>
</form>
<form id="deny" method="post" action="/interaction/${escapeHtml(uid)}/abort"><button type="submit">Cancel</button></form>`,
  );
}

/** Microsoft's "Enter code" page at /devicelogin. `form` is oidc-provider's (xsrf + user_code, id op.deviceInputForm). */
async function renderUserCodeInput(ctx: KoaContextWithOIDC, form: string, _out?: unknown, err?: unknown): Promise<void> {
  const name = err instanceof Error ? err.name : undefined;
  let message = '<p>Enter the code displayed on your app or device.</p>';
  if (name === 'AbortedError') message = '<p class="error" id="aborted">You cancelled the sign-in request.</p>';
  else if (name === 'ExpiredError') message = '<p class="error" id="expired">That code has expired. Get a new code from your device.</p>';
  else if (err) message = '<p class="error" id="error">That code didn\'t work. Check the code and try again.</p>';
  ctx.type = 'html';
  ctx.body = page('Enter code', `<h1>Enter code</h1>${message}${form}<button type="submit" form="op.deviceInputForm">Next</button>`);
}

/** "Are you trying to sign in to …?" with Continue and Cancel (Cancel posts `abort=yes`). */
async function renderUserCodeConfirm(ctx: KoaContextWithOIDC, form: string, client: { clientName?: string | undefined; clientId: string }, _deviceInfo: unknown, userCode: string): Promise<void> {
  ctx.type = 'html';
  ctx.body = page(
    'Confirm sign-in',
    `<h1>Are you trying to sign in to ${escapeHtml(client.clientName ?? client.clientId)}?</h1>
<p>Only continue if you downloaded the app from a store or website that you trust. Code: <code>${escapeHtml(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Cancel</button>`,
  );
}

async function renderDeviceSuccess(ctx: KoaContextWithOIDC): Promise<void> {
  const name = ctx.oidc.client?.clientName ?? ctx.oidc.client?.clientId ?? 'the application';
  ctx.type = 'html';
  ctx.body = page('Sign-in complete', `<h1 id="success">You have signed in to the ${escapeHtml(name)} application on your device.</h1><p>You may now close this window.</p>`);
}

function page(title: string, body: string): string {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
${body}
</body></html>`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// ---------------------------------------------------------------------------------------------------------------
// Request plumbing: body capture, client id, fault injection
// ---------------------------------------------------------------------------------------------------------------

/** Queues of injected failures per endpoint, and the token request log. */
class RequestControls<P extends string> {
  readonly tokenRequests: RecordedRequest[] = [];
  readonly #queues = new Map<P, InjectedResponse[]>();

  failNext(path: P, response: InjectedResponse, times: number): void {
    const queue = this.#queues.get(path) ?? [];
    for (let i = 0; i < times; i++) queue.push(response);
    this.#queues.set(path, queue);
  }

  take(path: P): InjectedResponse | undefined {
    return this.#queues.get(path)?.shift();
  }
}

function sendInjected(ctx: Koa.Context, injected: InjectedResponse, record: RecordedRequest): void {
  ctx.status = injected.status;
  for (const [name, value] of Object.entries(injected.headers ?? {})) ctx.set(name, value);
  if (typeof injected.body === 'string') {
    ctx.body = injected.body;
  } else if (injected.body !== undefined) {
    ctx.body = injected.body as object;
    ctx.type = 'application/json';
  }
  record.status = injected.status;
  if (isRecord(injected.body) && typeof injected.body.error === 'string') record.error = injected.body.error;
}

function sendJson(ctx: Koa.Context, status: number, body: Record<string, unknown>): void {
  ctx.status = status;
  ctx.body = body;
  ctx.set('Cache-Control', 'no-store');
}

/**
 * Reads the form body so the front middleware can see `grant_type`, `client_id` and `refresh_token`, then hands
 * the raw text on: oidc-provider's body parser uses `req.body` when the stream was already consumed (it prints a
 * one-time "already parsed request body detected" warning, which is expected here).
 */
async function takeFormBody(ctx: Koa.Context): Promise<URLSearchParams> {
  const req = ctx.req as IncomingMessage & { body?: unknown };
  const raw = await readBody(req);
  req.body = raw;
  return new URLSearchParams(raw);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    size += buffer.length;
    if (size > 64 * 1024) throw new Error('request body too large for a stand-in');
    chunks.push(buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The client id from the form (`client_id`) or from HTTP Basic authentication (RFC 6749 §2.3.1). */
function clientIdOf(ctx: Koa.Context, form: URLSearchParams): string | undefined {
  const fromForm = form.get('client_id');
  if (fromForm) return fromForm;
  const header = ctx.get('authorization');
  const match = /^basic\s+(.+)$/i.exec(header);
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon > 0 ? decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, '%20')) : undefined;
}

function hasClientSecret(ctx: Koa.Context, form: URLSearchParams): boolean {
  return form.has('client_secret') || form.has('client_assertion') || ctx.get('authorization') !== '';
}

/** RFC 6749 §2.3.1: form-urlencode id and secret before base64. */
function basicAuthorization(clientId: string, clientSecret: string): string {
  const encode = (value: string) => encodeURIComponent(value).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${encode(clientId)}:${encode(clientSecret)}`).toString('base64')}`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

// ---------------------------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------------------------

interface StoredEntry {
  model: string;
  id: string;
  payload: AdapterPayload;
  /** Epoch milliseconds, or Infinity. */
  expiresAt: number;
}

/** Models whose entries hang off a grant (revoked together by `revokeByGrantId`). */
const GRANT_BOUND_MODELS = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);

/**
 * In-memory storage for one stand-in. Unlike oidc-provider's built-in development adapter (one process-wide
 * LRU), each stand-in owns its store, and tests can reach into it (`revokeRefreshTokens`, `expireDeviceCodes`).
 * Secondary lookups scan; the stores in tests hold a few dozen entries.
 */
class MemoryStore {
  readonly #entries = new Map<string, StoredEntry>();

  adapterFor(model: string): Adapter {
    const key = (id: string) => `${model}:${id}`;
    const live = (entry: StoredEntry | undefined): AdapterPayload | undefined => {
      if (!entry) return undefined;
      if (entry.expiresAt <= Date.now()) {
        this.#entries.delete(key(entry.id));
        return undefined;
      }
      return entry.payload;
    };
    const findBy = (predicate: (payload: AdapterPayload) => boolean): AdapterPayload | undefined => {
      for (const entry of this.#entries.values()) {
        if (entry.model === model && predicate(entry.payload)) return live(entry);
      }
      return undefined;
    };
    return {
      upsert: async (id, payload, expiresIn) => {
        const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
        this.#entries.set(key(id), { model, id, payload, expiresAt });
      },
      find: async (id) => live(this.#entries.get(key(id))),
      findByUid: async (uid) => findBy((payload) => payload.uid === uid),
      findByUserCode: async (userCode) => findBy((payload) => payload.userCode === userCode),
      consume: async (id) => {
        const entry = this.#entries.get(key(id));
        if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
      },
      destroy: async (id) => {
        this.#entries.delete(key(id));
      },
      revokeByGrantId: async (grantId) => {
        for (const [k, entry] of this.#entries) {
          if (entry.model === model && GRANT_BOUND_MODELS.has(model) && entry.payload.grantId === grantId) this.#entries.delete(k);
        }
      },
    };
  }

  /** Deletes the refresh tokens of an account; returns their ids (= the opaque token values). */
  revokeRefreshTokens(email: string): string[] {
    const revoked: string[] = [];
    for (const [k, entry] of this.#entries) {
      if (entry.model === 'RefreshToken' && entry.payload.accountId?.toLowerCase() === email.toLowerCase()) {
        this.#entries.delete(k);
        revoked.push(entry.id);
      }
    }
    return revoked;
  }

  /** Backdates `exp` of every device code; the entries stay so polling sees `expired_token`, not "not found". */
  expireDeviceCodes(): void {
    const past = Math.floor(Date.now() / 1000) - 1;
    for (const entry of this.#entries.values()) {
      if (entry.model === 'DeviceCode') entry.payload.exp = past;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTPS listener
// ---------------------------------------------------------------------------------------------------------------

type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * Listens on 127.0.0.1 port 0 first, so the issuer (which contains the port) is known before the provider is
 * built; requests are handed to whatever handler is set afterwards.
 */
async function listenHttps(
  pki: TestPki,
): Promise<{ origin: string; setHandler(handler: RequestHandler): void; setDateOffset(ms: number): void; close(): Promise<void> }> {
  let handler: RequestHandler = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  let dateOffsetMs = 0;
  const server: Server = createServer({ key: pki.server.key, cert: pki.server.cert }, (req, res) => {
    // Node writes its own Date only when none was set; Koa keeps headers set before it runs.
    if (dateOffsetMs !== 0) res.setHeader('Date', new Date(Date.now() + dateOffsetMs).toUTCString());
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `https://127.0.0.1:${port}`,
    setHandler: (next) => {
      handler = next;
    },
    setDateOffset: (ms) => {
      dateOffsetMs = ms;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
