import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ErrorCodes } from '../errors.js';
import { classifyGraphAnswer, MAX_RETRY_AFTER_MS, parseGraphError, parseRetryAfter } from './graph.js';
import { headerEnd, headerRecipients, planRecipients, withBcc } from './graph-recipients.js';

const NOW = Date.parse('2026-12-02T08:00:00Z');

describe('parseRetryAfter (RFC 9110 §10.2.3)', () => {
  it('reads delay-seconds', () => {
    expect(parseRetryAfter('0', NOW)).toBe(0);
    expect(parseRetryAfter('7', NOW)).toBe(7000);
    expect(parseRetryAfter(' 120 ', NOW)).toBe(120_000);
  });

  it('reads an IMF-fixdate, and the obsolete RFC 850 and asctime forms', () => {
    expect(parseRetryAfter('Wed, 02 Dec 2026 08:01:30 GMT', NOW)).toBe(90_000);
    expect(parseRetryAfter('Wednesday, 02-Dec-26 08:01:00 GMT', NOW)).toBe(60_000);
    expect(parseRetryAfter('Wed Dec  2 08:00:10 2026', NOW)).toBeGreaterThanOrEqual(0);
  });

  it('a date in the past means now', () => {
    expect(parseRetryAfter('Tue, 01 Dec 2026 08:00:00 GMT', NOW)).toBe(0);
  });

  it('caps at a day', () => {
    expect(parseRetryAfter('99999999999', NOW)).toBe(MAX_RETRY_AFTER_MS);
    expect(parseRetryAfter('Fri, 01 Jan 2100 00:00:00 GMT', NOW)).toBe(MAX_RETRY_AFTER_MS);
  });

  it('anything else is no Retry-After', () => {
    for (const value of [undefined, null, '', 'soon', '-5', '1.5', '7s', '0x10', 'Wed, 99 Foo 2026', '12:00', 'x'.repeat(100), '5\r\nSet-Cookie: a=b']) {
      expect(parseRetryAfter(value as string | undefined, NOW)).toBeUndefined();
    }
  });

  it('never throws and never answers a negative or non-finite wait', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (value) => {
        const wait = parseRetryAfter(value, NOW);
        return wait === undefined || (Number.isFinite(wait) && wait >= 0 && wait <= MAX_RETRY_AFTER_MS);
      }),
    );
  });
});

describe('parseGraphError', () => {
  it('reads Graph error JSON', () => {
    expect(parseGraphError('{"error":{"code":"ErrorAccessDenied","message":"Access is denied."}}')).toEqual({ code: 'ErrorAccessDenied', message: 'Access is denied.' });
  });

  it('anything else gives nothing, and never throws', () => {
    for (const text of ['', 'null', '[]', '"x"', '<html>', '{"error":"x"}', '{"error":{"code":5}}', '{"error":{"code":"a b c"}}', '{'.repeat(10_000)]) {
      expect(parseGraphError(text).code).toBeUndefined();
    }
    fc.assert(fc.property(fc.string(), (text) => typeof parseGraphError(text) === 'object'));
  });

  it('a message loses its control characters and is bounded', () => {
    const { message } = parseGraphError(JSON.stringify({ error: { code: 'X', message: `a\r\nb\u0000c\u2028d${'e'.repeat(1000)}` } }));
    expect(message).toMatch(/^a b c de+$/);
    expect(message!.length).toBeLessThanOrEqual(300);
  });
});

describe('classifyGraphAnswer', () => {
  const app = { delegated: false, mailbox: 'scanner@contoso.example' };
  const classify = (status: number, code?: string, retryAfterMs?: number) => classifyGraphAnswer({ status, code, message: undefined, retryAfterMs }, app);

  it('throttling and busy: transient, carrying Retry-After', () => {
    for (const status of [429, 503, 504]) expect(classify(status, undefined, 5000)).toMatchObject({ class: 'transient', code: status, retryAfterMs: 5000 });
    expect(classify(429)).not.toHaveProperty('retryAfterMs');
  });

  it('access denied and a mailbox without Exchange Online wait for the administrator (auth-failed)', () => {
    expect(classify(403, 'ErrorAccessDenied')).toMatchObject({ class: 'auth-failed', errorCode: ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED });
    expect(classify(403)).toMatchObject({ class: 'auth-failed' });
    expect(classify(404, 'MailboxNotEnabledForRESTAPI')).toMatchObject({ class: 'auth-failed' });
    expect(classify(401)).toMatchObject({ class: 'auth-failed', errorCode: ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED });
    expect(classify(403, 'ErrorAccessDenied').advice).toContain('scanner@contoso.example');
  });

  it('other 4xx are permanent; 5xx transient; codes match without regard to case', () => {
    expect(classify(403, 'errorsendasdenied')).toMatchObject({ class: 'permanent', errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED });
    expect(classify(400)).toMatchObject({ class: 'permanent' });
    expect(classify(404, 'ErrorInvalidUser').advice).toContain('scanner@contoso.example');
    expect(classify(413).advice).toMatch(/larger than Exchange Online accepts/);
    expect(classify(500)).toMatchObject({ class: 'transient' });
    expect(classify(502, 'ErrorAccessDenied')).toMatchObject({ class: 'transient' });
  });
});

describe('envelope and header recipients', () => {
  const mime = (header: string, body = 'hello\r\n') => Buffer.from(`${header}\r\n${body}`, 'latin1');

  it('reads To, Cc and Bcc: folded, groups, display names, several fields, duplicates once', () => {
    const header = headerRecipients(
      mime('From: a@x\r\nTo: "Bob, B." <bob@x>,\r\n\tcarol@x\r\nCc: Team: dave@x, erin@x;\r\nCc: BOB@x\r\nBcc: undisclosed-recipients:;\r\nSubject: To: nobody@x\r\n'),
    );
    expect(header).toEqual({ to: ['bob@x', 'carol@x'], cc: ['dave@x', 'erin@x'], bcc: [] });
  });

  it('only the header block counts, not the body', () => {
    expect(headerRecipients(mime('To: bob@x\r\n', 'To: mallory@x\r\n'))).toEqual({ to: ['bob@x'], cc: [], bcc: [] });
  });

  it('plans: as it is, a Bcc for the rest, or explicit recipients', () => {
    const header = { to: ['bob@x'], cc: ['carol@x'], bcc: [] };
    expect(planRecipients(['Bob@X', 'carol@x'], header)).toEqual({ kind: 'as-is' });
    expect(planRecipients(['bob@x', 'carol@x', 'dave@x'], header)).toEqual({ kind: 'add-bcc', bcc: ['dave@x'] });
    expect(planRecipients(['carol@x', 'dave@x'], header)).toEqual({ kind: 'explicit', to: [], cc: ['carol@x'], bcc: ['dave@x'], notInEnvelope: ['bob@x'] });
  });

  it('every plan delivers to exactly the envelope', () => {
    const address = fc.constantFrom('a@x', 'b@x', 'c@x', 'd@x', 'E@x', 'e@x');
    fc.assert(
      fc.property(fc.uniqueArray(address, { minLength: 1 }), fc.array(address), fc.array(address), fc.array(address), (envelope, to, cc, bcc) => {
        const header = { to, cc, bcc };
        const plan = planRecipients(envelope, header);
        const delivered =
          plan.kind === 'as-is' ? [...to, ...cc, ...bcc] : plan.kind === 'add-bcc' ? [...to, ...cc, ...plan.bcc] : [...plan.to, ...plan.cc, ...plan.bcc];
        const norm = (list: string[]) => [...new Set(list.map((a) => a.toLowerCase()))].sort();
        expect(norm(delivered)).toEqual(norm(envelope));
      }),
    );
  });

  it('withBcc writes one Bcc field first, drops the old one, keeps every other byte', () => {
    const original = mime('From: a@x\r\nBcc: old@x,\r\n other@x\r\nTo: bob@x\r\nX-8bit: \xe4\r\n', 'body\r\n\r\nBcc: not a header\r\n');
    const result = withBcc(original, ['old@x', 'other@x', 'new@x']).toString('latin1');
    expect(result).toBe('Bcc: <old@x>,\r\n <other@x>,\r\n <new@x>\r\nFrom: a@x\r\nTo: bob@x\r\nX-8bit: \xe4\r\n\r\nbody\r\n\r\nBcc: not a header\r\n');
  });

  it('withBcc on a message that is all header, or has an empty header', () => {
    expect(withBcc(Buffer.from('To: bob@x\r\n'), ['c@x']).toString()).toBe('Bcc: <c@x>\r\nTo: bob@x\r\n');
    expect(withBcc(Buffer.from('\r\nbody'), ['c@x']).toString()).toBe('Bcc: <c@x>\r\n\r\nbody');
    expect(headerEnd(Buffer.from('\r\nbody'))).toBe(2);
  });
});
