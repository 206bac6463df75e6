/**
 * Delivery through Microsoft Graph against the Graph stand-in over real HTTPS (test CA, Postern's own
 * OAuthHttp), with real tokens: a device sign-in at the Microsoft stand-in, then Graph tokens from the same
 * refresh token. Covers: the MIME delivered byte for byte; the envelope rule (exactly the envelope
 * recipients, whatever the header says); the size limit of sendMail and the upload-session path; Retry-After;
 * the advice for each Graph error; one refresh on 401; held without a token; hostile answers.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpsServer } from 'node:https';
import { Readable } from 'node:stream';
import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, PosternError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { OAuthHttp } from '../src/oauth/http.js';
import { TokenUnavailableError } from '../src/oauth/token-service.js';
import type { SendOutcome } from '../src/smtp-out/delivery.js';
import { GraphDelivery, SENDMAIL_MAX_MIME_BYTES, UPLOAD_CHUNK_BYTES, type GraphTarget } from '../src/smtp-out/graph.js';
import { TrustStore } from '../src/tls/trust.js';
import { startGraphStandin, type GraphStandin } from './support/graph-standin.js';
import { signInForGraph, StandinGraphTokens } from './support/graph-tokens.js';
import { startMicrosoftStandin, type MicrosoftStandin } from './support/oauth-standins.js';
import { createTestPki, type TestPki } from './support/test-ca.js';

const ALICE = { email: 'alice@example.test', password: 'correct horse' };

let pki: TestPki;
let ms: MicrosoftStandin;
let graph: GraphStandin;
let tokens: StandinGraphTokens;
let closeTokens: () => Promise<void>;
let http: OAuthHttp;
let delivery: GraphDelivery;

beforeAll(async () => {
  pki = await createTestPki();
  ms = await startMicrosoftStandin({ pki });
  graph = await startGraphStandin({ introspection: ms.introspection, pki });
  ({ tokens, close: closeTokens } = await signInForGraph(ms, ALICE));
  http = new OAuthHttp(new TrustStore({ pems: async () => [pki.ca.cert] }));
  delivery = new GraphDelivery({ tokens, http, log: createLogger('silent') });
});

afterAll(async () => {
  await http?.close();
  await closeTokens?.();
  await graph?.close();
  await ms?.close();
});

const target = (overrides: Partial<GraphTarget> = {}): GraphTarget => ({
  accountId: 'microsoft',
  baseUrl: graph.baseUrl,
  mailbox: ALICE.email,
  delegated: true,
  tls: { verifyServerCertificate: true, addCnToVerificationItems: true },
  largeMessages: false,
  ...overrides,
});

let counter = 0;
function message(headers: string, body = 'Scanned document attached.\r\n'): { mime: Buffer; subject: string } {
  const subject = `graph ${++counter}`;
  const mime = Buffer.from(`From: Scanner <${ALICE.email}>\r\n${headers}Subject: ${subject}\r\nMessage-ID: <${counter}.${randomBytes(4).toString('hex')}@printers.local>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${body}`);
  return { mime, subject };
}

/** A body stream in several chunks, as the spool hands it over. */
const streamOf = (mime: Buffer) => () => Readable.from([mime.subarray(0, 7), mime.subarray(7, 1000), mime.subarray(1000)]);

function send(mime: Buffer, to: string[], over: Partial<GraphTarget> = {}): Promise<SendOutcome> {
  return delivery.send(target(over), { from: ALICE.email, to, size: mime.length }, streamOf(mime));
}

const sentWith = (subject: string) => graph.messages.filter((m) => m.mime.includes(Buffer.from(`Subject: ${subject}`)) || m.mime.includes(Buffer.from(subject)));

function failureOf(outcome: SendOutcome) {
  if (outcome.kind !== 'failed') throw new Error(`expected a failure, got ${JSON.stringify(outcome)}`);
  return outcome.failure;
}

/** A MIME message of about `size` bytes: a text part and one binary attachment (base64), plus an optional inline image. */
function largeMessage(attachmentBytes: number, headers: string, inline?: Buffer): { mime: Buffer; attachment: Buffer; subject: string } {
  const subject = `large ${++counter}`;
  const attachment = randomBytes(attachmentBytes);
  const wrap = (data: Buffer) => data.toString('base64').replace(/.{76}/g, '$&\r\n');
  const parts = [
    'Content-Type: text/html; charset=utf-8\r\n\r\n<p>Scan attached.</p>\r\n',
    `Content-Type: application/pdf; name="scan.pdf"\r\nContent-Disposition: attachment; filename="scan.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n${wrap(attachment)}\r\n`,
    ...(inline ? [`Content-Type: image/png; name="logo.png"\r\nContent-Disposition: inline; filename="logo.png"\r\nContent-ID: <logo@scan>\r\nContent-Transfer-Encoding: base64\r\n\r\n${wrap(inline)}\r\n`] : []),
  ];
  const mime = Buffer.from(
    `From: <${ALICE.email}>\r\n${headers}Subject: ${subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n${parts.map((p) => `--b1\r\n${p}`).join('')}--b1--\r\n`,
  );
  return { mime, attachment, subject };
}

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('sendMail', () => {
  it('delivers the MIME byte for byte, as the signed-in user (/me), to the envelope, answering 202', async () => {
    const { mime, subject } = message('To: bob@example.test\r\nCc: carol@example.test\r\n');
    const outcome = await send(mime, ['bob@example.test', 'carol@example.test']);
    expect(outcome).toEqual({ kind: 'accepted', code: 202, reply: '202 Accepted by Microsoft Graph (sendMail)', accepted: ['bob@example.test', 'carol@example.test'], rejected: [] });
    const [delivered] = sentWith(subject);
    expect(sentWith(subject)).toHaveLength(1);
    expect(delivered!.mime.equals(mime)).toBe(true);
    expect(delivered).toMatchObject({ mailbox: ALICE.email, via: 'sendMail' });
    expect(delivered!.recipients.sort()).toEqual(['bob@example.test', 'carol@example.test']);
    expect(graph.requests.at(-1)).toMatchObject({ method: 'POST', path: '/v1.0/me/sendMail', status: 202 });
  });

  it('sends as /users/{mailbox} when the target is not delegated', async () => {
    const { mime, subject } = message('To: bob@example.test\r\n');
    const outcome = await send(mime, ['bob@example.test'], { delegated: false });
    expect(outcome.kind).toBe('accepted');
    expect(graph.requests.at(-1)).toMatchObject({ path: `/v1.0/users/${encodeURIComponent(ALICE.email)}/sendMail`, status: 202 });
    expect(sentWith(subject)[0]!.mime.equals(mime)).toBe(true);
  });

  it('8-bit headers and body arrive unchanged (base64 carries every byte)', async () => {
    const { mime, subject } = message('To: =?utf-8?q?B=C3=B6b?= <bob@example.test>\r\n', 'Grüße aus dem Büro – 扫描\r\n');
    expect((await send(mime, ['bob@example.test'])).kind).toBe('accepted');
    expect(sentWith(subject)[0]!.mime.equals(mime)).toBe(true);
  });
});

describe('the envelope rule', () => {
  it('envelope recipients the header does not name go in a Bcc field Postern adds; nothing else changes', async () => {
    const { mime, subject } = message('To: bob@example.test\r\n');
    const outcome = await send(mime, ['bob@example.test', 'dave@example.test', 'Erin@Example.test']);
    expect(outcome).toMatchObject({ kind: 'accepted', accepted: ['bob@example.test', 'dave@example.test', 'Erin@Example.test'] });
    const [delivered] = sentWith(subject);
    expect(delivered!.recipients.sort()).toEqual(['bob@example.test', 'dave@example.test', 'erin@example.test']);
    const text = delivered!.mime.toString('latin1');
    expect(text.startsWith('Bcc: <dave@example.test>,\r\n <Erin@Example.test>\r\n')).toBe(true);
    expect(delivered!.mime.subarray(text.indexOf('\r\nFrom:') + 2).equals(mime)).toBe(true);
  });

  it('a Bcc field of the device is merged into the one Postern writes (one Bcc field, RFC 5322 §3.6)', async () => {
    const { mime, subject } = message('To: bob@example.test\r\nBcc: carol@example.test\r\n');
    expect((await send(mime, ['bob@example.test', 'carol@example.test', 'dave@example.test'])).kind).toBe('accepted');
    const [delivered] = sentWith(subject);
    expect(delivered!.recipients.sort()).toEqual(['bob@example.test', 'carol@example.test', 'dave@example.test']);
    const header = delivered!.mime.toString('latin1').split('\r\n\r\n')[0]!;
    expect(header.match(/^Bcc:/gim)).toHaveLength(1);
    expect(header).toMatch(/^Bcc: <carol@example\.test>,\r\n <dave@example\.test>\r\n/);
  });

  it('a message without To, Cc or Bcc goes to the envelope through the Bcc field', async () => {
    const { mime, subject } = message('');
    expect((await send(mime, ['bob@example.test'])).kind).toBe('accepted');
    expect(sentWith(subject)[0]!.recipients).toEqual(['bob@example.test']);
  });

  it('a header naming someone outside the envelope is refused before anything is sent, without Mail.ReadWrite', async () => {
    const { mime, subject } = message('To: bob@example.test, mallory@example.test\r\n');
    const before = graph.requests.length;
    const failure = failureOf(await send(mime, ['bob@example.test']));
    expect(failure).toMatchObject({ class: 'permanent', code: null, errorCode: ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED });
    expect(failure.reply).toContain('mallory@example.test');
    expect(failure.advice).toContain('Mail.ReadWrite');
    expect(failure.advice).toContain('SMTP (XOAUTH2)');
    expect(graph.requests.length).toBe(before);
    expect(sentWith(subject)).toHaveLength(0);
  });

  it('with Mail.ReadWrite it goes as a draft whose recipients are exactly the envelope (a retry after some were delivered)', async () => {
    const { mime, subject } = message('To: bob@example.test, carol@example.test\r\nCc: dave@example.test\r\nBcc: erin@example.test\r\n');
    const outcome = await send(mime, ['carol@example.test', 'frank@example.test'], { largeMessages: true });
    expect(outcome).toMatchObject({ kind: 'accepted', code: 202, accepted: ['carol@example.test', 'frank@example.test'] });
    const [delivered] = sentWith(subject);
    expect(delivered).toMatchObject({ via: 'draft' });
    expect(delivered!.recipients.sort()).toEqual(['carol@example.test', 'frank@example.test']);
    expect(delivered!.mime.equals(mime)).toBe(true);
    expect(graph.openDrafts).toBe(0);
  });
});

describe('message size', () => {
  it('a 3.5 MB message is refused before sending without Mail.ReadWrite, naming size, limit and what to add', async () => {
    const { mime, subject } = largeMessage(2_560_000, 'To: bob@example.test\r\n');
    expect(mime.length).toBeGreaterThan(3_400_000);
    expect(mime.length).toBeLessThan(3_600_000);
    const before = graph.requests.length;
    const failure = failureOf(await send(mime, ['bob@example.test']));
    expect(failure).toMatchObject({ class: 'permanent', errorCode: ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED });
    expect(failure.reply).toContain('3.5 MB');
    expect(failure.reply).toContain(`${(SENDMAIL_MAX_MIME_BYTES / 1e6).toFixed(1)} MB`);
    expect(failure.advice).toContain('Mail.ReadWrite');
    expect(failure.advice).toContain('SMTP (XOAUTH2)');
    expect(graph.requests.length).toBe(before);
    expect(sentWith(subject)).toHaveLength(0);
  });

  it('with Mail.ReadWrite a 3.5 MB message goes as a draft, its attachment through an upload session', async () => {
    const { mime, attachment, subject } = largeMessage(2_560_000, 'To: bob@example.test\r\n');
    const before = graph.requests.length;
    const outcome = await send(mime, ['bob@example.test', 'dave@example.test'], { largeMessages: true });
    expect(outcome).toMatchObject({ kind: 'accepted', code: 202, accepted: ['bob@example.test', 'dave@example.test'] });
    const [delivered] = sentWith(subject);
    expect(delivered).toMatchObject({ via: 'draft', mailbox: ALICE.email });
    expect(delivered!.recipients.sort()).toEqual(['bob@example.test', 'dave@example.test']);
    expect(delivered!.attachments).toHaveLength(1);
    expect(delivered!.attachments[0]).toMatchObject({ name: 'scan.pdf', contentType: 'application/pdf', uploaded: true });
    expect(sha(delivered!.attachments[0]!.content)).toBe(sha(attachment));
    const parsed = await simpleParser(delivered!.mime);
    expect(parsed.subject).toBe(subject);
    expect(parsed.html).toContain('Scan attached.');
    const puts = graph.requests.slice(before).filter((r) => r.method === 'PUT');
    expect(puts.length).toBe(Math.ceil(attachment.length / UPLOAD_CHUNK_BYTES));
    expect(puts.every((r) => !r.bearer && r.status === 201)).toBe(true);
    expect(graph.openDrafts).toBe(0);
  });

  it('a large message whose header names someone outside the envelope goes to the envelope only', async () => {
    const { mime, subject } = largeMessage(2_600_000, 'To: bob@example.test, mallory@example.test\r\nCc: carol@example.test\r\n');
    expect((await send(mime, ['carol@example.test', 'frank@example.test'], { largeMessages: true })).kind).toBe('accepted');
    const [delivered] = sentWith(subject);
    expect(delivered!.recipients.sort()).toEqual(['carol@example.test', 'frank@example.test']);
    const parsed = await simpleParser(delivered!.mime);
    expect(parsed.text ?? '').not.toContain('mallory');
    expect(parsed.to).toBeUndefined();
    expect(JSON.stringify(parsed.cc)).toContain('carol@example.test');
    expect(delivered!.mime.toString('latin1')).not.toContain('mallory');
  });

  it('a 9 MB attachment goes in 320 KiB-multiple ranges, a small inline image in one request', async () => {
    const inline = randomBytes(20_000);
    const { mime, attachment, subject } = largeMessage(9_000_000, 'To: bob@example.test\r\n', inline);
    const before = graph.requests.length;
    expect((await send(mime, ['bob@example.test'], { largeMessages: true })).kind).toBe('accepted');
    const [delivered] = sentWith(subject);
    const byName = new Map(delivered!.attachments.map((a) => [a.name, a]));
    expect(sha(byName.get('scan.pdf')!.content)).toBe(sha(attachment));
    expect(byName.get('scan.pdf')!.uploaded).toBe(true);
    expect(byName.get('logo.png')).toMatchObject({ uploaded: false, isInline: true });
    expect(sha(byName.get('logo.png')!.content)).toBe(sha(inline));
    const puts = graph.requests.slice(before).filter((r) => r.method === 'PUT');
    expect(puts.map((r) => r.status)).toEqual([200, 200, 201]);
  });

  it('Graph refusing a size (413, ErrorMessageSizeExceeded) is permanent, with size advice', async () => {
    const { mime } = message('To: bob@example.test\r\n');
    graph.failNext({ status: 400, body: { error: { code: 'ErrorMessageSizeExceeded', message: 'The message exceeds the maximum supported size.' } } });
    const failure = failureOf(await send(mime, ['bob@example.test']));
    expect(failure).toMatchObject({ class: 'permanent', code: 400, errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED });
    expect(failure.reply).toBe('400 ErrorMessageSizeExceeded: The message exceeds the maximum supported size.');
    expect(failure.advice).toMatch(/larger than Exchange Online accepts/);
    graph.failNext({ status: 413, body: { error: { code: 'RequestEntityTooLarge', message: 'The maximum request length supported is 4MB.' } } });
    expect(failureOf(await send(mime, ['bob@example.test']))).toMatchObject({ class: 'permanent', code: 413 });
  });
});

describe('throttling', () => {
  it('429 with Retry-After in seconds: transient, not to be retried earlier', async () => {
    const { mime, subject } = message('To: bob@example.test\r\n');
    graph.failNext({ status: 429, headers: { 'Retry-After': '7' }, body: { error: { code: 'ApplicationThrottled', message: 'Application is over its MailboxConcurrency limit.' } } });
    const failure = failureOf(await send(mime, ['bob@example.test']));
    expect(failure).toMatchObject({ class: 'transient', code: 429, retryAfterMs: 7000, errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED });
    expect(failure.advice).toMatch(/after the wait Graph asked for/);
    expect(sentWith(subject)).toHaveLength(0);
    expect((await send(mime, ['bob@example.test'])).kind).toBe('accepted');
  });

  it('503 with Retry-After as an HTTP date, and 504 without one', async () => {
    const { mime } = message('To: bob@example.test\r\n');
    graph.failNext({ status: 503, headers: { 'Retry-After': new Date(Date.now() + 120_000).toUTCString() }, body: '' });
    const failure = failureOf(await send(mime, ['bob@example.test']));
    expect(failure.class).toBe('transient');
    expect(failure.retryAfterMs).toBeGreaterThan(100_000);
    expect(failure.retryAfterMs).toBeLessThanOrEqual(120_000);
    graph.failNext({ status: 504 });
    const plain = failureOf(await send(mime, ['bob@example.test']));
    expect(plain).toMatchObject({ class: 'transient', code: 504 });
    expect(plain.retryAfterMs).toBeUndefined();
  });
});

describe('Graph errors as advice', () => {
  it('ErrorSendAsDenied: permanent, says to give Send As', async () => {
    graph.denyMailbox(ALICE.email, 'ErrorSendAsDenied');
    try {
      const failure = failureOf(await send(message('To: bob@example.test\r\n').mime, ['bob@example.test']));
      expect(failure).toMatchObject({ class: 'permanent', code: 403, errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED });
      expect(failure.advice).toContain('Send As');
      expect(failure.reply).toMatch(/^403 ErrorSendAsDenied: /);
    } finally {
      graph.denyMailbox(ALICE.email, undefined);
    }
  });

  it('ErrorAccessDenied: auth-failed (held for the administrator), names Mail.Send; app-only also RBAC for Applications', async () => {
    graph.denyMailbox(ALICE.email, 'ErrorAccessDenied');
    try {
      const delegated = failureOf(await send(message('To: bob@example.test\r\n').mime, ['bob@example.test']));
      expect(delegated).toMatchObject({ class: 'auth-failed', code: 403, errorCode: ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED });
      expect(delegated.advice).toMatch(/delegated Microsoft Graph permission Mail\.Send/);
      const app = failureOf(await send(message('To: bob@example.test\r\n').mime, ['bob@example.test'], { delegated: false }));
      expect(app.advice).toMatch(/Mail\.Send with admin consent/);
      expect(app.advice).toMatch(/RBAC for Applications/);
    } finally {
      graph.denyMailbox(ALICE.email, undefined);
    }
  });

  it('MailboxNotEnabledForRESTAPI: auth-failed, says the mailbox needs Exchange Online', async () => {
    graph.denyMailbox(ALICE.email, 'MailboxNotEnabledForRESTAPI');
    try {
      const failure = failureOf(await send(message('To: bob@example.test\r\n').mime, ['bob@example.test']));
      expect(failure).toMatchObject({ class: 'auth-failed', code: 404 });
      expect(failure.advice).toMatch(/Exchange Online licence/);
    } finally {
      graph.denyMailbox(ALICE.email, undefined);
    }
  });

  it('a draft that cannot be sent is deleted', async () => {
    const { mime } = message('To: bob@example.test, mallory@example.test\r\n');
    graph.failNext({ status: 500, body: { error: { code: 'ErrorInternalServerError', message: 'boom' } } }, 1, /\/send$/);
    const failure = failureOf(await send(mime, ['bob@example.test'], { largeMessages: true }));
    expect(failure).toMatchObject({ class: 'transient', code: 500 });
    expect(graph.openDrafts).toBe(0);
    expect(graph.requests.at(-1)).toMatchObject({ method: 'DELETE', status: 204 });
  });
});

describe('tokens', () => {
  it('401: one refresh (rejectedAccessToken), the request once more, then success', async () => {
    const { mime, subject } = message('To: bob@example.test\r\n');
    const current = await tokens.getAccessToken('microsoft');
    const refreshes = tokens.refreshes.length;
    graph.failNext({ status: 401, body: { error: { code: 'InvalidAuthenticationToken', message: 'Access token has expired or is not yet valid.' } } });
    expect((await send(mime, ['bob@example.test'])).kind).toBe('accepted');
    expect(tokens.refreshes.slice(refreshes)).toEqual([{ rejectedAccessToken: current.accessToken, scope: expect.stringContaining('https://graph.microsoft.com/Mail.Send') }]);
    expect(sentWith(subject)).toHaveLength(1);
  });

  it('a token for the wrong resource (Outlook) is refused by Graph; the refreshed Graph token is accepted', async () => {
    tokens.use(await tokens.outlookToken());
    const { mime, subject } = message('To: bob@example.test\r\n');
    const before = graph.requests.length;
    expect((await send(mime, ['bob@example.test'])).kind).toBe('accepted');
    expect(graph.requests.slice(before).map((r) => [r.status, r.code])).toEqual([[401, 'InvalidAuthenticationToken'], [202, undefined]]);
    expect(sentWith(subject)).toHaveLength(1);
  });

  it('401 again after the refresh: auth-failed, exactly one refresh', async () => {
    const refreshes = tokens.refreshes.length;
    graph.failNext({ status: 401, body: { error: { code: 'InvalidAuthenticationToken', message: 'Access token validation failure.' } } }, 2);
    const failure = failureOf(await send(message('To: bob@example.test\r\n').mime, ['bob@example.test']));
    expect(failure).toMatchObject({ class: 'auth-failed', code: 401, errorCode: ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED });
    expect(failure.advice).toMatch(/Microsoft Graph refused the token/);
    expect(tokens.refreshes.length - refreshes).toBe(1);
  });

  it('no usable token: held, nothing sent', async () => {
    tokens.unavailable = new TokenUnavailableError('Token Status is Expired.', 'Expired', true);
    const before = graph.requests.length;
    try {
      const outcome = await send(message('To: bob@example.test\r\n').mime, ['bob@example.test']);
      expect(outcome).toEqual({ kind: 'held', error: tokens.unavailable });
      expect(graph.requests.length).toBe(before);
    } finally {
      tokens.unavailable = undefined;
    }
  });
});

describe('hostile or broken answers never throw', () => {
  const mime = () => message('To: bob@example.test\r\n').mime;

  it('a non-JSON error body, a JSON body of the wrong shape, control characters', async () => {
    graph.failNext({ status: 500, headers: { 'content-type': 'text/html' }, body: '<html><body>Service Unavailable</body></html>' });
    expect(failureOf(await send(mime(), ['bob@example.test']))).toMatchObject({ class: 'transient', code: 500, reply: '500' });
    graph.failNext({ status: 400, body: { error: { code: { nested: true }, message: 42 } } });
    expect(failureOf(await send(mime(), ['bob@example.test']))).toMatchObject({ class: 'permanent', code: 400, reply: '400' });
    graph.failNext({ status: 400, body: { error: { code: 'ErrorInvalidRequest', message: 'bad\r\n\u0000250 OK\u001b[31m' } } });
    const failure = failureOf(await send(mime(), ['bob@example.test']));
    expect(failure.reply).toBe('400 ErrorInvalidRequest: bad 250 OK [31m');
  });

  it('a huge error body is read only in part', async () => {
    graph.failNext({ status: 400, body: { error: { code: 'ErrorInvalidRequest', message: 'x'.repeat(3_000_000) } } });
    const failure = failureOf(await send(mime(), ['bob@example.test']));
    expect(failure.class).toBe('permanent');
    expect(failure.reply.length).toBeLessThanOrEqual(500);
    graph.failNext({ status: 503, body: 'y'.repeat(5_000_000) });
    expect(failureOf(await send(mime(), ['bob@example.test']))).toMatchObject({ class: 'transient', code: 503 });
  });

  it('a redirect is not followed (the token would go elsewhere)', async () => {
    const before = graph.requests.length;
    graph.failNext({ status: 307, headers: { location: `${graph.origin}/v1.0/me/sendMail` } });
    expect(failureOf(await send(mime(), ['bob@example.test']))).toMatchObject({ class: 'connection', code: 307, errorCode: ErrorCodes.SMTP_UPSTREAM_CONNECTION });
    expect(graph.requests.length - before).toBe(1);
  });

  it('Retry-After that is not a number or a date is ignored; a huge one is capped at a day', async () => {
    graph.failNext({ status: 429, headers: { 'Retry-After': 'soon' } });
    expect(failureOf(await send(mime(), ['bob@example.test'])).retryAfterMs).toBeUndefined();
    graph.failNext({ status: 429, headers: { 'Retry-After': '99999999999999999999' } });
    expect(failureOf(await send(mime(), ['bob@example.test'])).retryAfterMs).toBe(24 * 3600 * 1000);
  });

  it('a draft without an id, and an upload session without an https uploadUrl', async () => {
    const { mime: crossed } = message('To: bob@example.test, mallory@example.test\r\n');
    graph.failNext({ status: 201, body: { isDraft: true } }, 1, /\/messages$/);
    expect(failureOf(await send(crossed, ['bob@example.test'], { largeMessages: true }))).toMatchObject({ class: 'transient', code: null });
    const { mime: large } = largeMessage(3_000_000, 'To: bob@example.test\r\n');
    graph.failNext({ status: 201, body: { uploadUrl: 'http://127.0.0.1:1/upload' } }, 1, /createUploadSession$/);
    const failure = failureOf(await send(large, ['bob@example.test'], { largeMessages: true }));
    expect(failure).toMatchObject({ class: 'transient', code: null });
    expect(failure.reply).toMatch(/uploadUrl/);
    expect(graph.openDrafts).toBe(0);
  });

  it('Graph not reachable, or its certificate not trusted: connection failures with advice', async () => {
    const closed = await new Promise<number>((resolve) => {
      const probe = createHttpsServer();
      probe.listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    const refused = failureOf(await send(mime(), ['bob@example.test'], { baseUrl: `https://127.0.0.1:${closed}/v1.0` }));
    expect(refused).toMatchObject({ class: 'connection', code: null, errorCode: ErrorCodes.SMTP_UPSTREAM_CONNECTION });
    expect(refused.advice).toMatch(/refused the connection/);
    const untrusting = new OAuthHttp(new TrustStore({ pems: async () => [] }));
    try {
      const strict = new GraphDelivery({ tokens, http: untrusting, log: createLogger('silent') });
      const untrusted = failureOf(await strict.send(target(), { from: ALICE.email, to: ['bob@example.test'] }, streamOf(mime())));
      expect(untrusted).toMatchObject({ class: 'connection' });
      expect(untrusted.advice).toMatch(/not trusted/);
    } finally {
      await untrusting.close();
    }
  });

  it('a body that cannot be read: transient, with the spool error code', async () => {
    const broken = () =>
      new Readable({
        read() {
          this.destroy(new PosternError(ErrorCodes.QUEUE_SPOOL_MISSING, 'spool file gone'));
        },
      });
    const failure = failureOf(await delivery.send(target(), { from: ALICE.email, to: ['bob@example.test'] }, broken));
    expect(failure).toMatchObject({ class: 'transient', code: null, errorCode: ErrorCodes.QUEUE_SPOOL_MISSING });
  });
});
