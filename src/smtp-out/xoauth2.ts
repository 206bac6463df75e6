/**
 * SASL for the upstream: XOAUTH2 (Google's mechanism, also Microsoft's) first, OAUTHBEARER (RFC 7628) only
 * where XOAUTH2 is not offered (docs/protocol.md §3.1). Run as a nodemailer `customAuth` handler so
 * that Postern, not nodemailer, decides the wire format and the one retry (all in docs/protocol.md §3.1):
 *
 * - XOAUTH2 initial response: base64(`user=` user ^A `auth=Bearer ` token ^A ^A), standard base64, one
 *   line, mechanism name in upper case.
 * - An error challenge (`334 <base64 JSON>`) is answered with an empty line (XOAUTH2) or `AQ==` (%x01,
 *   OAUTHBEARER, RFC 7628 §3.2.3), then the final reply is read; a 334 is never taken for success.
 * - A `535` on a token believed valid forces one token refresh and one retry; the second failure is
 *   reported with the server's text.
 * - An initial response that would make the AUTH line longer than RFC 4954 §4's 12288 octets is sent after
 *   an empty challenge instead.
 *
 * Tokens never reach a log: nodemailer masks custom-auth commands as `AUTH XOAUTH2 /* secret *\/`, and
 * Postern runs nodemailer's logger off.
 */
import type { SMTPConnectionCustomAuthContext, SMTPConnectionCustomAuthResponse } from 'nodemailer/lib/smtp-connection';

export type BearerMechanism = 'XOAUTH2' | 'OAUTHBEARER';

const MAX_AUTH_LINE = 12288;

/** XOAUTH2 initial client response (base64). */
export function xoauth2Response(user: string, accessToken: string): string {
  return Buffer.from(`user=${user}\x01auth=Bearer ${accessToken}\x01\x01`, 'utf8').toString('base64');
}

/** RFC 7628 §3.1 initial client response (base64); `,` and `=` in the authzid escaped per RFC 5801. */
export function oauthBearerResponse(user: string, accessToken: string, host?: string, port?: number): string {
  const authzid = user.replace(/=/g, '=3D').replace(/,/g, '=2C');
  const fields = [`n,a=${authzid},`];
  if (host) fields.push(`host=${host}`);
  if (port) fields.push(`port=${port}`);
  fields.push(`auth=Bearer ${accessToken}`);
  return Buffer.from(fields.join('\x01') + '\x01\x01', 'utf8').toString('base64');
}

/** The JSON of an error challenge (`{"status":"401","schemes":"bearer","scope":…}`), when it is one. */
export function decodeErrorChallenge(text: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(Buffer.from(text.trim(), 'base64').toString('utf8')) as unknown;
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export function chooseMechanism(advertised: string[]): BearerMechanism | undefined {
  const upper = advertised.map((m) => m.toUpperCase());
  if (upper.includes('XOAUTH2')) return 'XOAUTH2';
  if (upper.includes('OAUTHBEARER')) return 'OAUTHBEARER';
  return undefined;
}

export interface BearerLoginOptions {
  user: string;
  accessToken: string;
  /** Gets a fresh token after the server refused `rejected` (single-flight in the token service). */
  refresh(rejected: string): Promise<string>;
  host?: string;
  port?: number;
  /** Told about each error challenge (its JSON), for the log; never about tokens. */
  onChallenge?(challenge: Record<string, unknown> | undefined): void;
  /** Told when a refresh was forced after a refusal. */
  onRetry?(firstReply: string): void;
  /**
   * The mechanisms the server advertised. nodemailer's `ctx.authMethods` only lists the mechanisms nodemailer
   * implements (never OAUTHBEARER), so the connection's own reading is preferred when there is one.
   */
  advertised?(): string[] | undefined;
}

/**
 * Thrown out of the handler when the server offers no bearer mechanism (nodemailer marks it EAUTH). This and
 * RefreshFailedError stay plain errors: nodemailer overwrites the `code` of what a handler throws, so
 * delivery.ts gives them their catalogue codes (POSTERN_SMTP_UPSTREAM_UNSUPPORTED, the token's own).
 */
export class NoBearerMechanismError extends Error {
  constructor(advertised: string[]) {
    super(`the server offers no OAuth 2.0 login (AUTH XOAUTH2 or OAUTHBEARER); it advertises: ${advertised.join(' ') || 'no AUTH at all'}`);
    this.name = 'NoBearerMechanismError';
  }
}

/** Thrown when getting a fresh token failed during the retry; carries the token service's error. */
export class RefreshFailedError extends Error {
  constructor(readonly original: unknown) {
    super(original instanceof Error ? original.message : String(original));
    this.name = 'RefreshFailedError';
  }
}

/** A nodemailer customAuth handler running XOAUTH2/OAUTHBEARER with one refresh-and-retry. */
export function bearerLogin(options: BearerLoginOptions): (ctx: SMTPConnectionCustomAuthContext) => Promise<void> {
  return async (ctx) => {
    const advertised = options.advertised?.() ?? ctx.authMethods;
    const mechanism = chooseMechanism(advertised);
    if (!mechanism) throw new NoBearerMechanismError(advertised);
    let token = options.accessToken;
    for (let attempt = 1; ; attempt++) {
      const response = mechanism === 'XOAUTH2' ? xoauth2Response(options.user, token) : oauthBearerResponse(options.user, token, options.host, options.port);
      let reply: SMTPConnectionCustomAuthResponse;
      if (`AUTH ${mechanism} ${response}`.length + 2 > MAX_AUTH_LINE) {
        reply = await ctx.sendCommand(`AUTH ${mechanism}`);
        if (reply.status === 334) reply = await ctx.sendCommand(response);
      } else {
        reply = await ctx.sendCommand(`AUTH ${mechanism} ${response}`);
      }
      if (reply.status === 334) {
        options.onChallenge?.(decodeErrorChallenge(reply.text));
        // XOAUTH2 wants an empty response, OAUTHBEARER a single %x01 (RFC 7628 §3.2.3).
        reply = await ctx.sendCommand(mechanism === 'XOAUTH2' ? '' : 'AQ==');
      }
      if (reply.status >= 200 && reply.status < 300) return;
      if (attempt === 1 && (reply.status === 535 || reply.status === 530 || reply.status === 334)) {
        options.onRetry?.(reply.response);
        try {
          token = await options.refresh(token);
        } catch (error) {
          throw new RefreshFailedError(error);
        }
        continue;
      }
      const error = new Error(`the server refused the ${mechanism} login`) as Error & { response?: string };
      throw error;
    }
  };
}
