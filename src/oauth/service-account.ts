/**
 * Google app-only authorization: a service account with domain-wide delegation signs a JWT for the mailbox
 * it acts as and exchanges it at the token endpoint (RFC 7523 §2.1 JWT bearer grant). No refresh token is
 * issued: a new assertion is signed whenever a token is needed.
 *
 * The JSON key is what the administrator uploads, so parseServiceAccountKey treats it as hostile input: size
 * first, then control characters, JSON, the fields, and the key itself; every refusal is an
 * AppOnlyCredentialError with a sentence the administrator can act on.
 */
import { createPrivateKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import * as oauth from 'oauth4webapi';
import { z } from 'zod';
import { AppOnlyCredentialError, appOnlyTokenSet, withoutChallenge } from './client-credentials.js';
import type { TokenSet } from './grants.js';
import type { HttpOptions } from './http.js';
import { toProviderError } from './provider-errors.js';

export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

/** Google's key files are about 2.3 KB; anything far larger is not one. */
export const SERVICE_ACCOUNT_KEY_MAX_BYTES = 64 * 1024;

/** Google refuses assertions valid for more than an hour. */
export const SERVICE_ACCOUNT_ASSERTION_LIFETIME_S = 3600;

export interface ServiceAccountKey {
  type: 'service_account';
  projectId: string | undefined;
  clientEmail: string;
  /** The numeric client ID an administrator enters for domain-wide delegation. */
  clientId: string;
  privateKeyId: string;
  /** PEM as in the key file (PKCS#8). */
  privateKeyPem: string;
  tokenUri: string;
}

/** No C0/C1 control characters and no line breaks: a value on one line, as a key file's fields are. */
const ONE_LINE = /^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$/;

const oneLine = (what: string, max: number) =>
  z
    .string({ error: `"${what}" is missing or not text.` })
    .min(1, { error: `"${what}" is empty.` })
    .max(max, { error: `"${what}" is too long.` })
    .regex(ONE_LINE, { error: `"${what}" holds control characters.` });

const KEY_FILE = z.object({
  type: z.string({ error: 'The key has no "type".' }),
  project_id: oneLine('project_id', 256).optional(),
  client_email: oneLine('client_email', 320).regex(/^[^\s@]+@[^\s@]+\.[^\s@]+$/, { error: '"client_email" is not an e-mail address.' }),
  client_id: oneLine('client_id', 64).regex(/^[0-9]+$/, { error: '"client_id" is not the numeric client ID of a service account.' }),
  private_key_id: oneLine('private_key_id', 128).regex(/^[A-Za-z0-9_-]+$/, { error: '"private_key_id" is not a key ID.' }),
  private_key: z
    .string({ error: '"private_key" is missing or not text.' })
    .min(1, { error: '"private_key" is empty.' })
    .max(16 * 1024, { error: '"private_key" is too long.' })
    // Line breaks belong in a PEM; no other control character does.
    .regex(/^[^\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]*$/, { error: '"private_key" holds control characters.' }),
  token_uri: oneLine('token_uri', 2048),
});

/** The first problem zod found, as one sentence (zod's own wording names JSON paths, not what to do). */
function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  return issue?.message ?? 'The key is not a service account key.';
}

function checkTokenUri(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new AppOnlyCredentialError('"token_uri" is not a URL.');
  }
  if (url.protocol !== 'https:') throw new AppOnlyCredentialError('"token_uri" must start with https:// (tokens are never requested over plain HTTP).');
  if (url.username || url.password) throw new AppOnlyCredentialError('"token_uri" must not contain a user name or password.');
  if (url.hash) throw new AppOnlyCredentialError('"token_uri" must not contain a fragment (#…).');
  return url.href;
}

function serviceAccountPrivateKey(pem: string): KeyObject {
  if (!/-----BEGIN (RSA )?PRIVATE KEY-----/.test(pem)) {
    throw new AppOnlyCredentialError('"private_key" is not a PEM private key (-----BEGIN PRIVATE KEY----- …).');
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (error) {
    throw new AppOnlyCredentialError('"private_key" does not parse as a private key (damaged, or encrypted with a passphrase).', { cause: error });
  }
  if (key.asymmetricKeyType !== 'rsa') {
    throw new AppOnlyCredentialError(`"private_key" is a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; Google service account keys are RSA.`);
  }
  if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
    throw new AppOnlyCredentialError('"private_key" is an RSA key shorter than 2048 bits; Google service account keys are 2048 bits.');
  }
  return key;
}

/**
 * Reads a service account's JSON key file (Google Cloud console > IAM & Admin > Service Accounts > Keys >
 * Add key > JSON). Throws AppOnlyCredentialError, and nothing else, for anything that is not one.
 */
export function parseServiceAccountKey(text: string): ServiceAccountKey {
  if (typeof text !== 'string') throw new AppOnlyCredentialError('The service account key must be the text of the JSON key file.');
  if (text.length > SERVICE_ACCOUNT_KEY_MAX_BYTES || Buffer.byteLength(text, 'utf8') > SERVICE_ACCOUNT_KEY_MAX_BYTES) {
    throw new AppOnlyCredentialError('The file is larger than 64 KB: a service account JSON key is about 2 KB. Upload the key file itself.');
  }
  // JSON allows only space, tab, CR and LF between its tokens; any other control character means this is not
  // the downloaded file (and would end up in log lines and pages).
  if (/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(text)) {
    throw new AppOnlyCredentialError('The file holds control characters: it is not a JSON key file.');
  }
  let json: unknown;
  try {
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch {
    throw new AppOnlyCredentialError('The file is not JSON. Upload the JSON key exactly as the Google Cloud console downloaded it.');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new AppOnlyCredentialError('The file is not a JSON key: it holds no object.');
  }
  const type = (json as { type?: unknown }).type;
  if (type !== 'service_account') {
    const kind = typeof type === 'string' && ONE_LINE.test(type) && type.length <= 64 ? `a "${type}" key` : 'not a service account key';
    throw new AppOnlyCredentialError(
      `This is ${kind}; a service account's JSON key is needed (its "type" is "service_account"). An OAuth client's client_secret.json is not one.`,
    );
  }
  const parsed = KEY_FILE.safeParse(json);
  if (!parsed.success) throw new AppOnlyCredentialError(`The service account key is incomplete: ${firstIssue(parsed.error)}`);
  const value = parsed.data;
  serviceAccountPrivateKey(value.private_key);
  return {
    type: 'service_account',
    projectId: value.project_id,
    clientEmail: value.client_email,
    clientId: value.client_id,
    privateKeyId: value.private_key_id,
    privateKeyPem: value.private_key,
    tokenUri: checkTokenUri(value.token_uri),
  };
}

/** The mailbox a service account acts as: an address, one line, not huge. */
function checkMailbox(mailbox: string): string {
  const text = mailbox.trim();
  if (text.length > 320 || !ONE_LINE.test(text) || !/^[^\s@]+@[^\s@]+$/.test(text)) {
    throw new AppOnlyCredentialError('The mailbox to act as must be an e-mail address of a user in your Google Workspace domain.');
  }
  return text;
}

export interface ServiceAccountAssertionClaims {
  iss: string;
  sub: string;
  scope: string;
  aud: string;
  iat: number;
  exp: number;
  jti: string;
}

/**
 * RFC 7523 §3 claims and the JWS (RS256, kid = private_key_id), signed with node:crypto. Google wants
 * iss = the service account, sub = the mailbox, aud = token_uri, and exp no more than an hour after iat.
 */
export function signServiceAccountAssertion(key: ServiceAccountKey, mailbox: string, scope: string, issuedAtSeconds: number): string {
  const header = { alg: 'RS256', typ: 'JWT', kid: key.privateKeyId };
  const claims: ServiceAccountAssertionClaims = {
    iss: key.clientEmail,
    sub: checkMailbox(mailbox),
    scope,
    aud: key.tokenUri,
    iat: issuedAtSeconds,
    exp: issuedAtSeconds + SERVICE_ACCOUNT_ASSERTION_LIFETIME_S,
    jti: randomUUID(),
  };
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${encode(header)}.${encode(claims)}`;
  const signature = sign('sha256', Buffer.from(input), serviceAccountPrivateKey(key.privateKeyPem));
  return `${input}.${signature.toString('base64url')}`;
}

/** The assertion authenticates the request; no client authentication is sent (RFC 7523 §3.1 "MAY"). */
const noClientAuthentication: oauth.ClientAuth = () => undefined;

/**
 * RFC 7523 §2.1: `POST token_uri` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`.
 * The token is for `mailbox`, which the XOAUTH2 `user=` then names.
 */
export async function serviceAccountGrant(
  key: ServiceAccountKey,
  mailbox: string,
  scope: string,
  http: HttpOptions,
  now: () => number = Date.now,
): Promise<TokenSet> {
  const sub = checkMailbox(mailbox);
  const host = new URL(key.tokenUri).host;
  const as: oauth.AuthorizationServer = { issuer: new URL(key.tokenUri).origin, token_endpoint: key.tokenUri };
  const client: oauth.Client = { client_id: key.clientId };
  const sentAt = now();
  const assertion = signServiceAccountAssertion(key, sub, scope, Math.floor(sentAt / 1000));
  try {
    const response = await oauth.genericTokenEndpointRequest(as, client, noClientAuthentication, JWT_BEARER_GRANT, { assertion }, http);
    const result = await oauth.processGenericTokenEndpointResponse(as, client, withoutChallenge(response));
    return appOnlyTokenSet(result, sentAt, sub);
  } catch (error) {
    throw toProviderError('google', error, host, 'app-only');
  }
}
