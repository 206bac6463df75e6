/**
 * Delivery through Microsoft Graph (Delivery Method: Microsoft Graph), for tenants where SMTP AUTH is off
 * (docs/decisions/029-microsoft-graph-delivery.md).
 *
 * Purpose: hand one message to Exchange Online over HTTPS with a bearer token for
 *   https://graph.microsoft.com (Mail.Send), keeping Postern's promise to deliver to exactly the envelope
 *   recipients.
 * Inputs: the Graph target (base URL, mailbox, delegated or application token, TLS policy, whether the
 *   account may use drafts: Mail.ReadWrite), a token source, the envelope and a body stream.
 * Outputs: `accepted` (202: Graph took the message; it is not yet delivered), `failed` with a classified
 *   failure (POSTERN_SMTP_UPSTREAM_*, advice in plain words, `retryAfterMs` from Retry-After), or `held`
 *   when no token is usable (as SmtpDelivery).
 * Paths:
 *   - sendMail: `POST {base}/users/{mailbox}/sendMail` (or `/me/sendMail`), the MIME in base64 as
 *     text/plain. Used when the header recipients are all in the envelope (missing envelope recipients
 *     go in a Bcc field Postern writes; graph-recipients.ts) and the MIME is at most
 *     SENDMAIL_MAX_MIME_BYTES (a Graph request is limited to 4 MB, base64 grows by 4/3).
 *   - draft from MIME: create a draft from the MIME, set its recipients to the envelope, send it. Used when
 *     the header names someone outside the envelope. Needs Mail.ReadWrite.
 *   - large message: the MIME is parsed (mailparser) into a draft (subject, body, recipients from the
 *     envelope) and its attachments, each uploaded directly or, when large, through an upload session in
 *     ranges of UPLOAD_CHUNK_BYTES; then the draft is sent. Needs Mail.ReadWrite.
 *   Without Mail.ReadWrite, the last two are refused before anything is sent, saying why and what to add.
 * Failure modes: a 401 refreshes the token once (`rejectedAccessToken`) and repeats that request once; 429 /
 *   503 / 504 are transient and carry Retry-After; 4xx are permanent except access denied and a mailbox
 *   without Exchange Online, which the administrator fixes (auth-failed: held and retried, not returned).
 *   Every answer is read to at most MAX_ANSWER_BYTES and never trusted to be JSON; redirects are not
 *   followed (a bearer token goes to the configured base URL only). A failed draft is deleted.
 * Known limits: a request that times out after Graph took it may be sent again by the retry (Graph offers no
 *   idempotency key for sendMail). The large path holds the message and its parsed parts in memory, and it
 *   rebuilds the message from its parts: Graph writes the headers anew (only subject, body, From, Reply-To,
 *   recipients and attachments are carried over).
 */
import type { Readable } from 'node:stream';
import { ErrorCodes, isPosternError, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { Fetch } from '../oauth/http.js';
import { TokenUnavailableError, type AccessToken } from '../oauth/token-service.js';
import { bodyBytesStreamed } from '../queue/body-memory.js';
import { classifyConnectionError, type TlsPolicy } from '../tls/trust.js';
import type { DeliveryEnvelope, SendOutcome, TokenSource } from './delivery.js';
import { headerRecipients, planRecipients, withBcc, type HeaderRecipients } from './graph-recipients.js';
import type { ClassifiedFailure, ReplyClass } from './replies.js';

export const GRAPH_BASE_URL = 'https://graph.microsoft.com/v1.0';
/** Graph's limit for one request body. */
export const GRAPH_REQUEST_LIMIT_BYTES = 4 * 1024 * 1024;
/** The largest MIME sendMail takes: its base64 (4/3) stays under the request limit with room for headers. */
export const SENDMAIL_MAX_MIME_BYTES = 3_000_000;
/** Upload session ranges: Graph wants multiples of 320 KiB; ten of them stay under the 4 MB request limit. */
export const UPLOAD_CHUNK_BYTES = 10 * 320 * 1024;
/** Attachments up to this size go in one request (their base64 under the request limit); larger ones use an upload session. */
export const DIRECT_ATTACHMENT_MAX_BYTES = 2_500_000;
/** What is read of any Graph answer: an error is a few hundred bytes, a draft's JSON a few KB. */
export const MAX_ANSWER_BYTES = 256 * 1024;
/** A Retry-After further away than this is taken as this (a hostile or broken value must not park a message for years). */
export const MAX_RETRY_AFTER_MS = 24 * 60 * 60 * 1000;
const REQUEST_TIMEOUT_MS = 120_000;

export interface GraphTarget {
  accountId: string;
  /** Default https://graph.microsoft.com/v1.0. */
  baseUrl: string;
  /** The user to send as: /users/{mailbox}. */
  mailbox: string;
  /** A delegated (signed-in user) token: /me/sendMail. */
  delegated: boolean;
  tls: TlsPolicy;
  /** The account has Mail.ReadWrite: the draft and upload-session paths are allowed. */
  largeMessages: boolean;
}

export interface GraphDeliveryOptions {
  tokens: TokenSource;
  http: { fetchFor(policy: TlsPolicy): Promise<Fetch> };
  log: Logger;
}

/**
 * RFC 9110 §10.2.3 Retry-After: delay-seconds or an HTTP-date. The wait in milliseconds (0 for a date in the
 * past), at most MAX_RETRY_AFTER_MS; undefined when absent or not one of the two forms.
 */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (text === '' || text.length > 64) return undefined;
  if (/^\d+$/.test(text)) return Math.min(Number(text) * 1000, MAX_RETRY_AFTER_MS);
  // IMF-fixdate, and the obsolete RFC 850 and asctime forms that Date.parse also reads.
  if (!/^[A-Za-z]{3,9},? [\w :-]+$/.test(text)) return undefined;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.min(Math.max(0, at - now), MAX_RETRY_AFTER_MS);
}

/** Graph's error body `{"error":{"code":"…","message":"…"}}`, read defensively: any other body gives nothing. */
export function parseGraphError(text: string): { code: string | undefined; message: string | undefined } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { code: undefined, message: undefined };
  }
  const error = (json as { error?: unknown } | null)?.error;
  if (typeof error !== 'object' || error === null) return { code: undefined, message: undefined };
  const { code, message } = error as { code?: unknown; message?: unknown };
  return {
    code: typeof code === 'string' && /^[A-Za-z0-9_.-]{1,100}$/.test(code) ? code : undefined,
    message: typeof message === 'string' ? clean(message) : undefined,
  };
}

/** One line, no control characters, bounded: a server's text goes into logs and the Remote UI. */
function clean(text: string, max = 300): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').replace(/\s+/g, ' ').trim().slice(0, max);
}

/** A Graph answer as delivery needs it. */
export interface GraphAnswer {
  status: number;
  code: string | undefined;
  message: string | undefined;
  retryAfterMs: number | undefined;
}

interface GraphAdvice {
  class: ReplyClass;
  errorCode: ErrorCode;
  advice: (context: { delegated: boolean; mailbox: string }) => string;
}

const RETRIES = 'Postern retries automatically.';
const SIZE_ADVICE =
  'The message is larger than Exchange Online accepts for this mailbox; ask the sender to send a smaller file (lower the scan resolution or split the document).';

/** Known Graph error codes (the first key that matches wins; matched without regard to case). */
const GRAPH_ADVICE: Record<string, GraphAdvice> = {
  errorsendasdenied: {
    class: 'permanent',
    errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED,
    advice: ({ mailbox }) =>
      `The mailbox ${mailbox} is not allowed to send as the message's From address (ErrorSendAsDenied): give the mailbox Send As rights on that address (Exchange admin center > Recipients > Mailboxes > Delegation), or set the Sender E-Mail Address to the mailbox.`,
  },
  erroraccessdenied: {
    class: 'auth-failed',
    errorCode: ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED,
    advice: ({ delegated, mailbox }) =>
      delegated
        ? `Microsoft Graph denied access: the app registration needs the delegated Microsoft Graph permission Mail.Send, consented for this user or by an administrator; then authorize again. ${RETRIES}`
        : `Microsoft Graph denied access to ${mailbox}: the app registration needs the Microsoft Graph permission Mail.Send with admin consent, and if the tenant limits the app to some mailboxes (Exchange RBAC for Applications management scope, or an application access policy), that scope must include ${mailbox}. ${RETRIES}`,
  },
  mailboxnotenabledforrestapi: {
    class: 'auth-failed',
    errorCode: ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED,
    advice: ({ mailbox }) =>
      `The mailbox ${mailbox} is not in Exchange Online, or has no Exchange Online licence, so Microsoft Graph cannot send from it (MailboxNotEnabledForRESTAPI): assign a licence with Exchange Online, or send from a mailbox that has one. ${RETRIES}`,
  },
  errormessagesizeexceeded: { class: 'permanent', errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED, advice: () => SIZE_ADVICE },
  errormimecontentinvalidbase64string: {
    class: 'permanent',
    errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED,
    advice: () => 'Microsoft Graph could not read the message Postern sent (ErrorMimeContentInvalidBase64String). This is a fault in Postern; the message was returned to its sender.',
  },
  errorinvaliduser: {
    class: 'permanent',
    errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED,
    advice: ({ mailbox }) => `Microsoft Graph knows no user ${mailbox}: check the mailbox of the sending account.`,
  },
  invalidauthenticationtoken: {
    class: 'auth-failed',
    errorCode: ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED,
    advice: () =>
      `Microsoft Graph refused the token, also after a fresh one was obtained: check that the token is for Microsoft Graph (https://graph.microsoft.com) with Mail.Send, and authorize the account again if it persists. ${RETRIES}`,
  },
};

/** Classifies a Graph answer that is not a success. */
export function classifyGraphAnswer(answer: GraphAnswer, context: { delegated: boolean; mailbox: string }): ClassifiedFailure {
  const { status } = answer;
  const reply = clean(`${status}${answer.code ? ` ${answer.code}` : ''}${answer.message ? `: ${answer.message}` : ''}`, 500);
  const failure = (cls: ReplyClass, errorCode: ErrorCode, advice: string): ClassifiedFailure => ({
    class: cls,
    code: status,
    reply,
    advice,
    errorCode,
    ...(answer.retryAfterMs !== undefined ? { retryAfterMs: answer.retryAfterMs } : {}),
  });
  if (status === 429 || status === 503 || status === 504) {
    return failure(
      'transient',
      ErrorCodes.SMTP_UPSTREAM_REJECTED,
      `Microsoft Graph is throttling this mailbox or is busy; Postern retries ${answer.retryAfterMs !== undefined ? 'after the wait Graph asked for' : 'automatically'}. Lower Maximum Messages per Minute if this keeps happening.`,
    );
  }
  const known = answer.code ? GRAPH_ADVICE[answer.code.toLowerCase()] : undefined;
  if (known && (status === 401 || status >= 400 && status < 500)) return failure(known.class, known.errorCode, known.advice(context));
  if (status === 401) return failure('auth-failed', ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED, GRAPH_ADVICE.invalidauthenticationtoken!.advice(context));
  if (status === 403) return failure('auth-failed', ErrorCodes.SMTP_UPSTREAM_AUTH_FAILED, GRAPH_ADVICE.erroraccessdenied!.advice(context));
  if (status === 413) return failure('permanent', ErrorCodes.SMTP_UPSTREAM_REJECTED, SIZE_ADVICE);
  if (status === 408) return failure('transient', ErrorCodes.SMTP_UPSTREAM_REJECTED, `Microsoft Graph timed out. ${RETRIES}`);
  if (status >= 300 && status < 400) {
    return failure('connection', ErrorCodes.SMTP_UPSTREAM_CONNECTION, `Microsoft Graph answered with a redirect, which Postern does not follow with a token: check the Graph address of the account. ${RETRIES}`);
  }
  if (status >= 400 && status < 500) {
    return failure('permanent', ErrorCodes.SMTP_UPSTREAM_REJECTED, 'Microsoft Graph refused the message permanently; it was returned to its sender.');
  }
  return failure('transient', ErrorCodes.SMTP_UPSTREAM_REJECTED, `A temporary failure at Microsoft Graph; ${RETRIES}`);
}

/** A failed step: ends the send with this classified failure. */
class GraphStepFailure extends Error {
  constructor(readonly failure: ClassifiedFailure) {
    super(failure.reply);
  }
}

/** The spooled body could not be read: our side, not Graph's. */
class BodyReadFailure extends Error {
  constructor(readonly original: unknown) {
    super(original instanceof Error ? original.message : String(original));
  }
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

interface SendContext {
  target: GraphTarget;
  fetch: Fetch;
  token: AccessToken;
  refreshed: boolean;
  /** `{base}/me` or `{base}/users/{mailbox}`. */
  user: string;
}

interface Attachment {
  name: string;
  contentType: string;
  content: Buffer;
  isInline: boolean;
  contentId: string | undefined;
}

const MB = (bytes: number) => `${(bytes / 1_000_000).toFixed(1)} MB`;

/** Reads the body once. Stops keeping bytes past `keepAtMost` (it still counts them, to report the size). */
async function readBody(body: () => Readable, keepAtMost: number): Promise<{ mime: Buffer | undefined; size: number }> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body()) {
      const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
      size += buffer.length;
      bodyBytesStreamed(buffer.length);
      if (size <= keepAtMost) chunks.push(buffer);
      else chunks.length = 0;
    }
  } catch (error) {
    throw new BodyReadFailure(error);
  }
  return { mime: size <= keepAtMost ? Buffer.concat(chunks, size) : undefined, size };
}

export class GraphDelivery {
  readonly #tokens: TokenSource;
  readonly #http: GraphDeliveryOptions['http'];
  readonly #log: Logger;

  constructor(options: GraphDeliveryOptions) {
    this.#tokens = options.tokens;
    this.#http = options.http;
    this.#log = options.log.child({ component: 'smtp-out', delivery: 'graph' });
  }

  /** Hands one message to Microsoft Graph. Never throws: every failure comes back classified. */
  async send(target: GraphTarget, envelope: DeliveryEnvelope, body: () => Readable): Promise<SendOutcome> {
    try {
      return await this.#send(target, envelope, body);
    } catch (error) {
      if (error instanceof TokenUnavailableError) return { kind: 'held', error };
      if (error instanceof GraphStepFailure) return { kind: 'failed', failure: error.failure };
      if (error instanceof BodyReadFailure) {
        const errorCode = isPosternError(error.original) ? error.original.code : ErrorCodes.QUEUE_SPOOL_MISSING;
        return { kind: 'failed', failure: { class: 'transient', code: null, reply: `the message could not be read: ${clean(error.message)}`, advice: RETRIES, errorCode } };
      }
      return { kind: 'failed', failure: this.#connectionFailure(error, target) };
    }
  }

  async #send(target: GraphTarget, envelope: DeliveryEnvelope, body: () => Readable): Promise<SendOutcome> {
    if (envelope.to.length === 0) throw this.#refusal('no envelope recipients', 'The message has no recipients; nothing was sent.');
    const keep = target.largeMessages ? Number.MAX_SAFE_INTEGER : SENDMAIL_MAX_MIME_BYTES;
    const { mime, size } = await readBody(body, keep);
    if (!mime) throw this.#tooLarge(size);
    const header = headerRecipients(mime);
    const plan = planRecipients(envelope.to, header);
    if (plan.kind === 'explicit' && !target.largeMessages) {
      throw this.#refusal(
        `the message's header names recipients that are not in its envelope (${plan.notInEnvelope.slice(0, 5).join(', ')}${plan.notInEnvelope.length > 5 ? ', …' : ''}); Microsoft Graph delivers to the header recipients`,
        'Postern delivers only to the envelope recipients, and through Microsoft Graph that takes a draft whose recipients Postern sets: add the Microsoft Graph permission Mail.ReadWrite (with consent) to the app registration and allow it for this account, or set the account\'s Delivery Method to SMTP (XOAUTH2).',
      );
    }
    const context = await this.#context(target);
    const outgoing = plan.kind === 'add-bcc' ? withBcc(mime, plan.bcc) : mime;
    let via: string;
    if (outgoing.length > SENDMAIL_MAX_MIME_BYTES) {
      if (!target.largeMessages) throw this.#tooLarge(outgoing.length);
      await this.#sendLarge(context, outgoing, explicitOf(plan, header));
      via = 'a draft with upload sessions';
    } else if (plan.kind === 'explicit') {
      await this.#sendDraftFromMime(context, outgoing, plan);
      via = 'a draft';
    } else {
      await this.#sendMail(context, outgoing);
      via = 'sendMail';
    }
    this.#log.debug({ accountId: target.accountId, via, recipients: envelope.to.length }, 'accepted by Microsoft Graph');
    return { kind: 'accepted', code: 202, reply: `202 Accepted by Microsoft Graph (${via})`, accepted: [...envelope.to], rejected: [] };
  }

  async #context(target: GraphTarget): Promise<SendContext> {
    const base = target.baseUrl.replace(/\/+$/, '') || GRAPH_BASE_URL;
    const user = target.delegated ? `${base}/me` : `${base}/users/${encodeURIComponent(target.mailbox)}`;
    const token = await this.#tokens.getAccessToken(target.accountId);
    return { target, fetch: await this.#http.fetchFor(target.tls), token, refreshed: false, user };
  }

  /** POST /sendMail with the MIME (base64, text/plain). */
  async #sendMail(context: SendContext, mime: Buffer): Promise<void> {
    const answer = await this.#call(context, 'POST', `${context.user}/sendMail`, { body: mime.toString('base64'), contentType: 'text/plain' });
    this.#expect(context, answer, [200, 202, 204]);
  }

  /** A draft from the MIME, its recipients set to the envelope, then sent. */
  async #sendDraftFromMime(context: SendContext, mime: Buffer, recipients: Recipients): Promise<void> {
    const created = await this.#call(context, 'POST', `${context.user}/messages`, { body: mime.toString('base64'), contentType: 'text/plain' });
    const id = this.#draftId(context, created);
    await this.#withDraft(context, id, async () => {
      const patched = await this.#call(context, 'PATCH', `${context.user}/messages/${encodeURIComponent(id)}`, { body: JSON.stringify(recipientFields(recipients)), contentType: 'application/json' });
      this.#expect(context, patched, [200, 204]);
    });
  }

  /** Over sendMail's size: a draft from the parsed message, its attachments uploaded, then sent. */
  async #sendLarge(context: SendContext, mime: Buffer, recipients: Recipients): Promise<void> {
    const { simpleParser } = await import('mailparser');
    const parsed = await simpleParser(mime, { skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true });
    const from = parsed.from?.value[0];
    const replyTo = parsed.replyTo?.value.filter((a) => a.address) ?? [];
    const draft = {
      subject: parsed.subject ?? '',
      body: typeof parsed.html === 'string' && parsed.html !== '' ? { contentType: 'HTML', content: parsed.html } : { contentType: 'Text', content: parsed.text ?? '' },
      ...recipientFields(recipients),
      ...(from?.address ? { from: { emailAddress: { address: from.address, ...(from.name ? { name: from.name } : {}) } } } : {}),
      ...(replyTo.length ? { replyTo: replyTo.map((a) => ({ emailAddress: { address: a.address!, ...(a.name ? { name: a.name } : {}) } })) } : {}),
    };
    const attachments: Attachment[] = parsed.attachments.map((a, index) => ({
      name: clean(a.filename ?? '', 255) || `attachment-${index + 1}`,
      contentType: a.contentType || 'application/octet-stream',
      content: a.content,
      isInline: a.contentDisposition === 'inline' && Boolean(a.cid),
      contentId: a.cid,
    }));
    const created = await this.#call(context, 'POST', `${context.user}/messages`, { body: JSON.stringify(draft), contentType: 'application/json' });
    const id = this.#draftId(context, created);
    await this.#withDraft(context, id, async () => {
      for (const attachment of attachments) await this.#attach(context, id, attachment);
    });
  }

  /** Runs `prepare` on a created draft, then sends it; a draft that could not be sent is deleted. */
  async #withDraft(context: SendContext, id: string, prepare: () => Promise<void>): Promise<void> {
    const message = `${context.user}/messages/${encodeURIComponent(id)}`;
    try {
      await prepare();
      const sent = await this.#call(context, 'POST', `${message}/send`, { body: '', contentType: 'application/json' });
      this.#expect(context, sent, [200, 202, 204]);
    } catch (error) {
      await this.#call(context, 'DELETE', message, {}).catch((cleanup: unknown) =>
        this.#log.warn({ accountId: context.target.accountId, error: clean(String(cleanup)) }, 'a draft that could not be sent was not deleted'),
      );
      throw error;
    }
  }

  async #attach(context: SendContext, id: string, attachment: Attachment): Promise<void> {
    const attachments = `${context.user}/messages/${encodeURIComponent(id)}/attachments`;
    const common = { name: attachment.name, contentType: attachment.contentType, isInline: attachment.isInline, ...(attachment.contentId ? { contentId: attachment.contentId } : {}) };
    if (attachment.content.length <= DIRECT_ATTACHMENT_MAX_BYTES) {
      const body = JSON.stringify({ '@odata.type': '#microsoft.graph.fileAttachment', ...common, contentBytes: attachment.content.toString('base64') });
      this.#expect(context, await this.#call(context, 'POST', attachments, { body, contentType: 'application/json' }), [200, 201]);
      return;
    }
    const total = attachment.content.length;
    const session = await this.#call(context, 'POST', `${attachments}/createUploadSession`, {
      body: JSON.stringify({ AttachmentItem: { attachmentType: 'file', ...common, size: total } }),
      contentType: 'application/json',
    });
    this.#expect(context, session, [200, 201]);
    const uploadUrl = uploadUrlOf(session.text);
    if (!uploadUrl) throw new GraphStepFailure(this.#protocolFailure('Microsoft Graph answered createUploadSession without a usable https uploadUrl'));
    for (let start = 0; start < total; start += UPLOAD_CHUNK_BYTES) {
      const chunk = attachment.content.subarray(start, Math.min(start + UPLOAD_CHUNK_BYTES, total));
      // The upload URL carries its own authorization; Graph refuses a bearer token on it.
      const answer = await this.#call(context, 'PUT', uploadUrl, {
        body: chunk,
        contentType: 'application/octet-stream',
        headers: { 'content-range': `bytes ${start}-${start + chunk.length - 1}/${total}` },
        anonymous: true,
      });
      this.#expect(context, answer, start + chunk.length >= total ? [200, 201] : [200, 202]);
    }
  }

  #draftId(context: SendContext, answer: Answer): string {
    this.#expect(context, answer, [200, 201]);
    let id: unknown;
    try {
      id = (JSON.parse(answer.text) as { id?: unknown } | null)?.id;
    } catch {
      id = undefined;
    }
    if (typeof id !== 'string' || id === '' || id.length > 512) throw new GraphStepFailure(this.#protocolFailure('Microsoft Graph created a draft but gave no message id'));
    return id;
  }

  /** Throws the classified failure unless the answer's status is one of `ok`. */
  #expect(context: SendContext, answer: Answer, ok: number[]): void {
    if (ok.includes(answer.status)) return;
    const { code, message } = parseGraphError(answer.text);
    const retryAfterMs = parseRetryAfter(answer.headers.get('retry-after'));
    throw new GraphStepFailure(classifyGraphAnswer({ status: answer.status, code, message, retryAfterMs }, { delegated: context.target.delegated, mailbox: context.target.mailbox }));
  }

  /**
   * One HTTP request to Graph. With a token (unless `anonymous`); a 401 gets one fresh token
   * (`rejectedAccessToken`, so that deliveries failing together cause one refresh) and the request once more.
   */
  async #call(
    context: SendContext,
    method: string,
    url: string,
    options: { body?: string | Buffer; contentType?: string; headers?: Record<string, string>; anonymous?: boolean },
  ): Promise<Answer> {
    for (;;) {
      const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
      if (options.contentType) headers['content-type'] = options.contentType;
      if (!options.anonymous) headers.authorization = `Bearer ${context.token.accessToken}`;
      const response = await context.fetch(url, {
        method,
        headers,
        ...(options.body !== undefined ? { body: typeof options.body === 'string' ? options.body : new Uint8Array(options.body) } : {}),
        redirect: 'manual',
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      const text = await readAnswer(response);
      if (response.status === 401 && !options.anonymous && !context.refreshed) {
        context.refreshed = true;
        this.#log.info({ accountId: context.target.accountId, status: 401, code: parseGraphError(text).code }, 'Microsoft Graph refused the token; refreshing it once and retrying');
        context.token = await this.#tokens.getAccessToken(context.target.accountId, { rejectedAccessToken: context.token.accessToken });
        continue;
      }
      return { status: response.status, headers: response.headers, text };
    }
  }

  #tooLarge(size: number): GraphStepFailure {
    return this.#refusal(
      `the message is ${MB(size)}; Microsoft Graph's sendMail takes at most ${MB(SENDMAIL_MAX_MIME_BYTES)} of message (a request is limited to 4 MB, and base64 adds a third)`,
      `Messages over ${MB(SENDMAIL_MAX_MIME_BYTES)} go through Microsoft Graph only as a draft with upload sessions, which needs the Microsoft Graph permission Mail.ReadWrite: add it (with consent) to the app registration and allow it for this account, or set the account's Delivery Method to SMTP (XOAUTH2), which takes messages up to the mailbox's limit.`,
    );
  }

  /** Refused before sending: Graph cannot deliver this message as the account is set up. */
  #refusal(reply: string, advice: string): GraphStepFailure {
    return new GraphStepFailure({ class: 'permanent', code: null, reply, advice, errorCode: ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED });
  }

  #protocolFailure(reply: string): ClassifiedFailure {
    return { class: 'transient', code: null, reply, advice: `Microsoft Graph gave an answer Postern cannot use. ${RETRIES}`, errorCode: ErrorCodes.SMTP_UPSTREAM_REJECTED };
  }

  #connectionFailure(error: unknown, target: GraphTarget): ClassifiedFailure {
    let host = target.baseUrl;
    try {
      host = new URL(target.baseUrl || GRAPH_BASE_URL).host;
    } catch {
      // the address itself is malformed: named as it is
    }
    const failure = classifyConnectionError(error, host);
    const retried = failure.kind === 'certificate-untrusted' || failure.kind === 'certificate-expired' || failure.kind === 'name-mismatch' ? '' : ` ${RETRIES}`;
    const message = error instanceof Error ? error.message : String(error);
    return { class: 'connection', code: null, reply: clean(message || String(failure.code ?? 'connection failed'), 500), advice: `${failure.reason}${retried}`, errorCode: ErrorCodes.SMTP_UPSTREAM_CONNECTION };
  }
}

interface Recipients {
  to: string[];
  cc: string[];
  bcc: string[];
}

/** The recipients to set on a draft: the envelope, in the field the header put each in (Bcc otherwise). */
function explicitOf(plan: ReturnType<typeof planRecipients>, header: HeaderRecipients): Recipients {
  if (plan.kind === 'explicit') return plan;
  if (plan.kind === 'add-bcc') return { to: header.to, cc: header.cc, bcc: plan.bcc };
  return header;
}

function recipientFields(recipients: Recipients) {
  const list = (addresses: string[]) => addresses.map((address) => ({ emailAddress: { address } }));
  return { toRecipients: list(recipients.to), ccRecipients: list(recipients.cc), bccRecipients: list(recipients.bcc) };
}

function uploadUrlOf(text: string): string | undefined {
  try {
    const value = (JSON.parse(text) as { uploadUrl?: unknown } | null)?.uploadUrl;
    if (typeof value !== 'string' || value.length > 8192) return undefined;
    return new URL(value).protocol === 'https:' ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The answer's text, at most MAX_ANSWER_BYTES of it; the rest is not read. */
async function readAnswer(response: Response): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < MAX_ANSWER_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    if (size >= MAX_ANSWER_BYTES) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
  return Buffer.concat(chunks).subarray(0, MAX_ANSWER_BYTES).toString('utf8');
}
