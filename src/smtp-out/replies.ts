/**
 * Every upstream failure is classified once, here, and turned into advice in plain words that say what to
 * do: the administrator reads "enable Authenticated SMTP for the mailbox", not "535".
 *
 * Classes: `transient` (4xx, throttling: retry with backoff), `permanent` (5xx after MAIL/RCPT/DATA: return
 * to sender), `auth-failed` (the server refused our token, also after one forced refresh: retried, because
 * the administrator can fix the mailbox or tenant and no message should be lost meanwhile), `connection`
 * (network, TLS, timeout: retried). Each failure also carries its catalogue code (`errorCode`):
 * POSTERN_SMTP_UPSTREAM_AUTH_FAILED for a refused login, _REJECTED for a refused message, _CONNECTION for
 * the way there, _UNSUPPORTED for a server that lacks STARTTLS or an OAuth login.
 */
import { ErrorCodes, type ErrorCode } from '../errors.js';
import { classifyConnectionError } from '../tls/trust.js';

export type ReplyClass = 'transient' | 'permanent' | 'auth-failed' | 'connection';

export interface ClassifiedFailure {
  class: ReplyClass;
  code: number | null;
  /** The server's reply, or a description of what went wrong on the way there. */
  reply: string;
  advice: string;
  /** What went wrong, by the catalogue (POSTERN_SMTP_UPSTREAM_*, POSTERN_QUEUE_SPOOL_MISSING, …). */
  errorCode: ErrorCode;
  /** The server asked not to be tried again before this many milliseconds (HTTP Retry-After, Microsoft Graph). */
  retryAfterMs?: number | undefined;
}

interface AdviceRule {
  test: RegExp;
  advice: string;
}

/** Known provider replies (docs/protocol.md §3.5). The first match wins. */
const ADVICE: AdviceRule[] = [
  {
    test: /\b5\.7\.139\b|SmtpClientAuthentication is disabled/i,
    advice:
      'SMTP AUTH is disabled for this mailbox or tenant: enable Authenticated SMTP for the mailbox (Microsoft 365 admin center > Users > Active users > Mail > Manage email apps, or Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false). Security defaults also turn it off.',
  },
  {
    test: /\b5\.2\.252\b|SendAsDenied|not owned by user|Sender address rejected/i,
    advice:
      'The mailbox is not allowed to send as this sender address: set Sender E-Mail Address in E-Mail Settings to the authorized mailbox, or give the mailbox Send As rights on that address.',
  },
  {
    test: /\b5\.7\.30\b|Basic authentication is not supported/i,
    advice:
      'The server says basic authentication is not supported for client submission. Postern signs in with OAuth 2.0 only; check that E-Mail Settings use the account that holds the token (Sending Account) and the provider\'s SMTP server.',
  },
  {
    test: /\b5\.7\.3\b/,
    advice:
      'Exchange Online refused the OAuth token: check that the app registration has the delegated permission SMTP.Send (with consent) and that the authorized account is the sending mailbox; if it persists, get a new user code in OAuth 2.0 (Microsoft) Settings.',
  },
  {
    test: /\b5\.7\.[18]\b.*(BadCredentials|not accepted)|Username and Password not accepted/i,
    advice:
      'Gmail refused the token: the authorization may have been revoked or may lack Gmail access (https://mail.google.com/). Register the authorization again in OAuth 2.0 (Google) Settings.',
  },
  {
    test: /\b5\.7\.57\b|not authenticated to send/i,
    advice: 'The server wants an authenticated session before MAIL FROM: check the SMTP Server and Port in E-Mail Settings.',
  },
  {
    test: /^55[24]\b.*\b5\.3\.4\b|\b5\.3\.4\b|message size exceeds|too large/i,
    advice: 'The message is larger than the upstream server accepts; ask the sender to send a smaller file (lower the scan resolution or split the document).',
  },
  {
    test: /\b5\.1\.(1|10)\b|RecipientNotFound|User unknown|does not exist|no such user/i,
    advice: 'The recipient address does not exist at its mail server; check the address.',
  },
  {
    test: /\b4\.3\.2\b|\b4\.5\.3\b|throttl|ConcurrentConnection|Too many|rate limit/i,
    advice:
      'The provider is throttling this mailbox (too many messages or connections). Postern retries automatically; lower Maximum Messages per Minute in E-Mail Settings if this keeps happening.',
  },
  {
    test: /^454\b|\b4\.7\.0\b/,
    advice: 'A temporary authentication failure at the server; Postern retries automatically.',
  },
];

/** Advice for a reply text, or a generic sentence by reply class. */
export function adviceFor(code: number | null, reply: string): string {
  for (const rule of ADVICE) if (rule.test.test(reply)) return rule.advice;
  if (code === 535 || code === 534 || code === 530) {
    return 'The server refused the OAuth token, also after a fresh one was obtained: check the mailbox may use SMTP and that the authorization is for this mailbox. Postern retries automatically.';
  }
  if (code !== null && code >= 400 && code < 500) return 'A temporary failure at the server; Postern retries automatically.';
  if (code !== null && code >= 500) return 'The server refused the message permanently; it was returned to its sender.';
  return 'Postern retries automatically.';
}

/** A server reply as one line (multi-line replies are joined). */
export function replyText(response: string | undefined | null): string {
  return (response ?? '').replace(/\r?\n(?=\d{3}[ -])/g, ' ').replace(/\s*\r?\n\s*/g, ' ').trim();
}

/** A nodemailer SMTPConnection error, classified. `host` names the server in connection advice. */
export function classifySmtpError(error: unknown, host: string): ClassifiedFailure {
  const e = error as { code?: string; responseCode?: number; response?: string; message?: string; command?: string };
  const code = typeof e.responseCode === 'number' ? e.responseCode : null;
  const response = replyText(e.response);
  if (e.code === 'EAUTH') {
    const reply = response || e.message || 'authentication failed';
    const errorCode = ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED;
    if (code !== null && code >= 400 && code < 500) return { class: 'transient', code, reply, advice: adviceFor(code, reply), errorCode };
    return { class: 'auth-failed', code, reply, advice: adviceFor(code ?? 535, reply), errorCode };
  }
  if (code !== null && response) {
    const errorCode = ErrorCodes.SMTP_UPSTREAM_REJECTED;
    if (code === 421 || (code >= 400 && code < 500)) return { class: 'transient', code, reply: response, advice: adviceFor(code, response), errorCode };
    if (code >= 500) {
      // A refused STARTTLS is the server's configuration, not this message's fault.
      if (e.code === 'ETLS' || e.command === 'STARTTLS') return startTlsRefused(code, response);
      return { class: 'permanent', code, reply: response, advice: adviceFor(code, response), errorCode };
    }
  }
  if (e.code === 'ETLS' && /STARTTLS/i.test(String(e.message))) return startTlsRefused(code, response || String(e.message));
  // nodemailer keeps the system error's code (ECONNREFUSED, ETIMEDOUT, a certificate error) as originalCode.
  const original = (error as { originalCode?: unknown }).originalCode;
  const failure = classifyConnectionError(typeof original === 'string' ? Object.assign(new Error(String(e.message ?? original)), { code: original }) : error, host);
  let advice = failure.reason;
  if (failure.kind === 'tls-handshake') advice += ' Check that the port and TLS mode match (587 = STARTTLS, 465 = SSL/TLS).';
  if (failure.kind !== 'tls-handshake' && failure.kind !== 'certificate-untrusted' && failure.kind !== 'certificate-expired' && failure.kind !== 'name-mismatch') {
    advice += ' Postern retries automatically.';
  }
  return { class: 'connection', code: null, reply: String(e.message ?? failure.code ?? 'connection failed').slice(0, 500), advice, errorCode: ErrorCodes.SMTP_UPSTREAM_CONNECTION };
}

function startTlsRefused(code: number | null, reply: string): ClassifiedFailure {
  return {
    class: 'connection',
    code,
    reply,
    errorCode: ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED,
    advice:
      'The server did not accept STARTTLS, and Postern never signs in over an unencrypted connection. Check SMTP Server, Port and TLS Mode in E-Mail Settings (587 = STARTTLS, 465 = SSL/TLS).',
  };
}
