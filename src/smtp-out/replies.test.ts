import { describe, expect, it } from 'vitest';
import { adviceFor, classifySmtpError } from './replies.js';

const error = (code: string, responseCode?: number, response?: string, extra: Record<string, unknown> = {}) =>
  Object.assign(new Error(response ?? code), { code, responseCode, response, ...extra });

describe('upstream replies in plain words', () => {
  it.each([
    [535, '535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.', /enable Authenticated SMTP for the mailbox/],
    [535, '535 5.7.3 Authentication unsuccessful [SN2PR00CA0018.namprd00.prod.outlook.com]', /SMTP\.Send/],
    [554, '554 5.2.252 SendAsDenied; alice@example.test not allowed to send as x@y.test; STOREDRV.Submission.Exception:SendAsDeniedException', /Sender E-Mail Address/],
    [550, '550 5.7.30 Basic authentication is not supported for Client Submission.', /OAuth 2\.0 only/],
    [535, '535-5.7.8 Username and Password not accepted. For more information, go to 535 5.7.8 https://support.google.com/mail/?p=BadCredentials - gsmtp', /Register the authorization again in OAuth 2\.0 \(Google\) Settings/],
    [550, '550 5.1.1 RESOLVER.ADR.RecipientNotFound; Recipient not found', /recipient address does not exist/],
    [452, '452 4.3.2 Too many messages', /throttling/],
    [451, '451 4.3.0 Try later', /temporary failure/],
  ])('%s %s', (code, reply, advice) => {
    expect(adviceFor(code, reply)).toMatch(advice);
  });

  it('classifies by phase and code', () => {
    expect(classifySmtpError(error('EAUTH', 535, '535 5.7.3 Authentication unsuccessful'), 'h').class).toBe('auth-failed');
    expect(classifySmtpError(error('EAUTH', 454, '454 4.7.0 Temporary authentication failure'), 'h').class).toBe('transient');
    expect(classifySmtpError(error('EENVELOPE', 550, '550 5.1.1 no such user'), 'h').class).toBe('permanent');
    expect(classifySmtpError(error('EMESSAGE', 451, '451 4.3.0 later'), 'h').class).toBe('transient');
    expect(classifySmtpError(error('EPROTOCOL', 421, '421 4.4.2 closing'), 'h').class).toBe('transient');
    const refused = classifySmtpError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ESOCKET', originalCode: 'ECONNREFUSED', cause: Object.assign(new Error('x'), { code: 'ECONNREFUSED' }) }), 'smtp.example');
    expect(refused.class).toBe('connection');
  });

  it('names each failure with its catalogue code (docs/errors.md)', () => {
    expect(classifySmtpError(error('EAUTH', 535, '535 5.7.3 Authentication unsuccessful'), 'h').errorCode).toBe('POSTERN_SMTP_UPSTREAM_AUTH_FAILED');
    expect(classifySmtpError(error('EAUTH', 454, '454 4.7.0 Temporary authentication failure'), 'h').errorCode).toBe('POSTERN_SMTP_UPSTREAM_AUTH_FAILED');
    expect(classifySmtpError(error('EENVELOPE', 550, '550 5.1.1 no such user'), 'h').errorCode).toBe('POSTERN_SMTP_UPSTREAM_REJECTED');
    expect(classifySmtpError(error('EMESSAGE', 451, '451 4.3.0 later'), 'h').errorCode).toBe('POSTERN_SMTP_UPSTREAM_REJECTED');
    const refused = classifySmtpError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ESOCKET', originalCode: 'ECONNREFUSED' }), 'smtp.example');
    expect(refused.errorCode).toBe('POSTERN_SMTP_UPSTREAM_CONNECTION');
    const noStartTls = classifySmtpError(error('ETLS', 502, '502 5.5.1 Error: command not implemented', { command: 'STARTTLS' }), 'h');
    expect(noStartTls.errorCode).toBe('POSTERN_SMTP_UPSTREAM_UNSUPPORTED');
  });

  it('says STARTTLS was refused and never signs in without it', () => {
    const failure = classifySmtpError(error('ETLS', 502, '502 5.5.1 Error: command not implemented', { command: 'STARTTLS', message: 'Error upgrading connection with STARTTLS' }), 'h');
    expect(failure.class).toBe('connection');
    expect(failure.advice).toMatch(/never signs in over an unencrypted connection/);
  });

  it('names certificate problems with what to do', () => {
    const failure = classifySmtpError(Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'ESOCKET', cause: Object.assign(new Error('x'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }) }), 'smtp.example');
    expect(failure.advice).toMatch(/CA Certificate Settings/);
  });
});
