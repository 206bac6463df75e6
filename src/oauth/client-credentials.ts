/**
 * Microsoft app-only authorization: the client credentials grant (RFC 6749 §4.4) at a tenant's token
 * endpoint, the application authenticating with a client secret (client_secret_post) or with a private key
 * JWT (RFC 7523 §2.2, RS256) signed by the key of a certificate uploaded to the app registration. No user signs in
 * and no refresh token is issued: a new token is asked for whenever one is needed
 * (docs/decisions/030-app-only-authorization.md).
 *
 * Also the certificate Postern offers the administrator to upload (generateClientCertificate).
 */
import { createHash, createPrivateKey, createPublicKey, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import * as oauth from 'oauth4webapi';
import { ErrorCodes, PosternError } from '../errors.js';
import type { TokenSet } from './grants.js';
import type { HttpOptions } from './http.js';
import { toProviderError } from './provider-errors.js';
import { loadX509 } from '../tls/certificates.js';

/** A credential given by the administrator is unusable (parsing, pairing); never thrown for a server's answer. */
export class AppOnlyCredentialError extends PosternError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.OAUTH_CREDENTIAL_INVALID, message, options);
    this.name = 'AppOnlyCredentialError';
  }
}

export type ClientCredential =
  | { kind: 'secret'; secret: string }
  /** PEM: the certificate uploaded to the app registration, and its private key (PKCS#8 or PKCS#1, RSA). */
  | { kind: 'certificate'; privateKeyPem: string; certificatePem: string };

export interface AppOnlyClient {
  clientId: string;
  credential: ClientCredential;
}

/**
 * Lifetime of the client assertion. Entra ID accepts up to 10 minutes and allows 5 minutes of clock skew;
 * oauth4webapi's 60 s would make a gateway whose clock is a minute behind fail for no good reason.
 */
export const CLIENT_ASSERTION_LIFETIME_S = 600;

/** The thumbprints Entra ID matches an assertion's `x5t#S256` / `x5t` header against. */
export interface CertificateThumbprints {
  /** Hex SHA-1 of the DER certificate, as Entra ID lists it under Certificates & secrets. */
  sha1Hex: string;
  /** base64url SHA-1: the legacy `x5t` header (RFC 7515 §4.1.7). */
  sha1Base64url: string;
  /** base64url SHA-256: the `x5t#S256` header (RFC 7515 §4.1.8). */
  sha256Base64url: string;
}

function parseCertificate(certificatePem: string): X509Certificate {
  try {
    return new X509Certificate(certificatePem);
  } catch (error) {
    throw new AppOnlyCredentialError('The client certificate is not a PEM certificate (-----BEGIN CERTIFICATE----- …).', { cause: error });
  }
}

export function certificateThumbprints(certificatePem: string): CertificateThumbprints {
  const der = parseCertificate(certificatePem).raw;
  const sha1 = createHash('sha1').update(der).digest();
  return {
    sha1Hex: sha1.toString('hex').toUpperCase(),
    sha1Base64url: sha1.toString('base64url'),
    sha256Base64url: createHash('sha256').update(der).digest('base64url'),
  };
}

function rsaPrivateKey(privateKeyPem: string, what: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: privateKeyPem, format: 'pem' });
  } catch (error) {
    throw new AppOnlyCredentialError(`${what} is not an unencrypted PEM private key.`, { cause: error });
  }
  // Plain RSA keys only, signing RS256, which every Entra ID tenant takes; an RSA-PSS-only key (PS256) would
  // be one more algorithm to get right for no gain in a key Postern generates itself.
  if (key.asymmetricKeyType !== 'rsa') {
    throw new AppOnlyCredentialError(`${what} is a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; an RSA key is needed (RS256).`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < 2048) throw new AppOnlyCredentialError(`${what} is an RSA key of ${bits} bits; at least 2048 bits are needed.`);
  return key;
}

/**
 * The signing key for the client assertion, checked against the certificate before anything is sent: a key
 * that is not the certificate's own would only come back as AADSTS700027, which reads like a missing upload.
 */
async function assertionKey(credential: Extract<ClientCredential, { kind: 'certificate' }>): Promise<{ key: CryptoKey; thumbprints: CertificateThumbprints }> {
  const privateKey = rsaPrivateKey(credential.privateKeyPem, 'The certificate\'s private key');
  const certificate = parseCertificate(credential.certificatePem);
  const spki = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });
  if (!spki(createPublicKey(privateKey)).equals(spki(certificate.publicKey))) {
    throw new AppOnlyCredentialError('The private key does not belong to the client certificate.');
  }
  // oauth4webapi names the algorithm after the CryptoKey: RSASSA-PKCS1-v1_5 with SHA-256 is RS256.
  const der = privateKey.export({ type: 'pkcs8', format: 'der' });
  const key = await webcrypto.subtle.importKey('pkcs8', der, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['sign']);
  return { key: key as CryptoKey, thumbprints: certificateThumbprints(credential.certificatePem) };
}

/**
 * A token endpoint's 401 carries the OAuth error in its body (RFC 6749 §5.2); a WWW-Authenticate header on it
 * would make oauth4webapi report a bare challenge instead, and the administrator would lose the AADSTS text.
 */
export function withoutChallenge(response: Response): Response {
  if (response.status === 200 || !response.headers.has('www-authenticate')) return response;
  const headers = new Headers(response.headers);
  headers.delete('www-authenticate');
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

/** The TokenSet of an app-only token response: no refresh token, no mailbox. */
export function appOnlyTokenSet(result: oauth.TokenEndpointResponse, sentAt: number, mailbox?: string): TokenSet {
  return {
    accessToken: result.access_token,
    refreshToken: undefined,
    expiresAt: sentAt + (typeof result.expires_in === 'number' && result.expires_in > 0 ? result.expires_in : 3600) * 1000,
    scope: result.scope,
    mailbox,
    displayName: undefined,
  };
}

/**
 * RFC 6749 §4.4: `grant_type=client_credentials&scope=<resource>/.default` at
 * `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`. With a certificate the client assertion
 * (RFC 7523 §2.2, §3) carries aud = the token endpoint, iss = sub = client id, jti, nbf, iat, exp, and names
 * the certificate by `x5t#S256` and, for Entra ID's older key lookup, `x5t`.
 *
 * The endpoint is taken as given; validateMicrosoftAppOnlyEndpoint (profiles.ts) is where the administrator's
 * input is refused when it names no tenant.
 */
export async function clientCredentialsGrant(
  server: { tokenEndpoint: string },
  client: AppOnlyClient,
  scope: string,
  http: HttpOptions,
  now: () => number = Date.now,
): Promise<TokenSet> {
  const host = new URL(server.tokenEndpoint).host;
  const as: oauth.AuthorizationServer = { issuer: new URL(server.tokenEndpoint).origin, token_endpoint: server.tokenEndpoint };
  if (client.clientId === '') throw new AppOnlyCredentialError('Enter the Application (Client) ID of the app registration.');
  const oauthClient: oauth.Client = { client_id: client.clientId };
  let authentication: oauth.ClientAuth;
  if (client.credential.kind === 'secret') {
    if (client.credential.secret === '') throw new AppOnlyCredentialError('Enter the client secret\'s Value.');
    authentication = oauth.ClientSecretPost(client.credential.secret);
  } else {
    const { key, thumbprints } = await assertionKey(client.credential);
    authentication = oauth.PrivateKeyJwt(key, {
      [oauth.modifyAssertion]: (header, payload) => {
        const issuedAt = Math.floor(now() / 1000);
        header.typ = 'JWT';
        header['x5t#S256'] = thumbprints.sha256Base64url;
        header.x5t = thumbprints.sha1Base64url;
        payload.aud = server.tokenEndpoint;
        payload.iat = issuedAt;
        payload.nbf = issuedAt;
        payload.exp = issuedAt + CLIENT_ASSERTION_LIFETIME_S;
      },
    });
  }
  const sentAt = now();
  try {
    const response = await oauth.clientCredentialsGrantRequest(as, oauthClient, authentication, { scope }, http);
    const result = await oauth.processClientCredentialsResponse(as, oauthClient, withoutChallenge(response));
    return appOnlyTokenSet(result, sentAt);
  } catch (error) {
    throw toProviderError('microsoft', error, host, 'app-only');
  }
}

// ---------------------------------------------------------------------------------------------------------
// The certificate the administrator uploads to the app registration

export interface ClientCertificate {
  /** PKCS#8 PEM; kept by Postern (encrypted at rest by the caller), never shown again. */
  privateKeyPem: string;
  /** PEM, for upload to Microsoft Entra ID > App registrations > your app > Certificates & secrets. */
  certificatePem: string;
  /** What Entra ID lists as the certificate's Thumbprint (hex SHA-1, upper case). */
  thumbprintSha1Hex: string;
  thumbprintSha256Base64url: string;
  notAfter: Date;
}


const CERTIFICATE_VALIDITY_YEARS = 2;

function escapeDnValue(value: string): string {
  return value.replace(/([,+"\\<>;=#])/g, '\\$1');
}

/**
 * A self-signed RSA 2048 certificate, valid for 2 years, whose key signs Postern's client assertions. Entra ID
 * checks only that the certificate is registered and its validity dates, not who issued it.
 */
export async function generateClientCertificate(commonName: string, now: () => number = Date.now): Promise<ClientCertificate> {
  const name = commonName.trim();
  if (name === '' || name.length > 64 || /[\x00-\x1f\x7f-\x9f]/.test(name)) {
    throw new AppOnlyCredentialError('The certificate name must be 1 to 64 characters without control characters.');
  }
  const x509 = await loadX509();
  const algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
  const issued = new Date(now());
  const notBefore = new Date(issued.getTime() - 60 * 60 * 1000);
  const notAfter = new Date(issued);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CERTIFICATE_VALIDITY_YEARS);
  const serial = webcrypto.getRandomValues(new Uint8Array(16));
  serial[0] = serial[0]! & 0x7f;
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(serial).toString('hex'),
    name: `CN=${escapeDnValue(name)}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certificatePem = certificate.toString('pem') + '\n';
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const privateKeyPem = `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
  const thumbprints = certificateThumbprints(certificatePem);
  return {
    privateKeyPem,
    certificatePem,
    thumbprintSha1Hex: thumbprints.sha1Hex,
    thumbprintSha256Base64url: thumbprints.sha256Base64url,
    notAfter,
  };
}
