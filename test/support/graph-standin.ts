/**
 * A stand-in for Microsoft Graph's mail sending (https://graph.microsoft.com/v1.0) on a real HTTPS server:
 * `sendMail` with MIME, drafts (from MIME or JSON), recipients set on a draft, file attachments, attachment
 * upload sessions with byte ranges, and `send`. Enough of Graph, checked as strictly as Graph checks it, for
 * Postern's Graph delivery to be tested against it.
 *
 * TEST INFRASTRUCTURE ONLY. Nothing in `src/` may import this file.
 *
 * - Every bearer token is introspected (RFC 7662) at the Microsoft stand-in, on every request. It must be
 *   active, for the audience https://graph.microsoft.com, and carry Mail.Send (delegated: the scope
 *   `https://graph.microsoft.com/Mail.Send`; application tokens: `Mail.Send` in the `roles` member, or the
 *   same scope); drafts and attachments need Mail.ReadWrite the same way. A token whose introspection
 *   names a user (`email`) is delegated: `/me` is that user, and `/users/{id}` must be that user.
 * - A request body over 4 MB gets 413; malformed base64 gets 400 ErrorMimeContentInvalidBase64String.
 * - What Graph would deliver is recorded: the recipients are read from the MIME's To, Cc and Bcc (sendMail)
 *   or taken from the draft's recipient properties (send), with mailparser, independently of Postern's
 *   own header reading.
 * - Upload URLs carry their own authorization (a bearer token on them is refused with 401, as Graph does),
 *   and each range is checked: Content-Range present and well-formed, starting where the last one ended,
 *   as long as its body, a multiple of 320 KiB unless it is the last, the total as announced.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { simpleParser, type AddressObject } from 'mailparser';
import MailComposer from 'nodemailer/lib/mail-composer';
import { GRAPH_RESOURCE, type IntrospectionAccess } from './oauth-standins.js';
import type { TestPki } from './test-ca.js';
import { createIntrospector, type IntrospectionResponse } from './upstream-smtp.js';

export const GRAPH_REQUEST_LIMIT = 4 * 1024 * 1024;
/** Graph's unit for upload ranges. */
export const UPLOAD_RANGE_UNIT = 320 * 1024;
/** Graph's largest range in one PUT. */
const MAX_UPLOAD_RANGE = 60 * 1024 * 1024;
/** Bytes of an oversized body read (and discarded) before answering 413, so the client gets the answer. */
const DISCARD_LIMIT = 64 * 1024 * 1024;

export interface GraphMessage {
  /** The mailbox that sent: `/users/{id}`, or the token's user for `/me`. */
  mailbox: string;
  /** The message as Graph got it (sendMail, draft from MIME) or as it composed it (draft from JSON). */
  mime: Buffer;
  /** Where Graph delivers it (lower case). */
  recipients: string[];
  via: 'sendMail' | 'draft';
  /** The draft's attachments (draft path), with their content. */
  attachments: Array<{ name: string; contentType: string; content: Buffer; isInline: boolean; uploaded: boolean }>;
}

export interface GraphRequest {
  method: string;
  path: string;
  status: number;
  /** The Graph error code sent, if any. */
  code?: string;
  bearer: boolean;
  injected: boolean;
}

export interface InjectedGraphResponse {
  status: number;
  headers?: Record<string, string>;
  /** A string is sent as it is; anything else as JSON. */
  body?: unknown;
}

export type DenyCode = 'ErrorSendAsDenied' | 'ErrorAccessDenied' | 'MailboxNotEnabledForRESTAPI';

export interface GraphStandinOptions {
  /** The Microsoft stand-in's introspection endpoint and client (`standin.introspection`). */
  introspection: IntrospectionAccess;
  /** TLS: the server certificate, and the CA that verifies the introspection endpoint. */
  pki: TestPki;
}

export interface GraphStandin {
  /** `https://127.0.0.1:PORT` */
  readonly origin: string;
  /** `https://127.0.0.1:PORT/v1.0`: the base URL for GraphTarget. */
  readonly baseUrl: string;
  readonly messages: GraphMessage[];
  readonly requests: GraphRequest[];
  /** Drafts created and neither sent nor deleted. */
  readonly openDrafts: number;
  /** The next `times` API requests (matching `where`, a path pattern, when given) get `response` instead. */
  failNext(response: InjectedGraphResponse, times?: number, where?: RegExp): void;
  /** Requests to send from mailbox `m` fail with this Graph error (undefined: allow again). */
  denyMailbox(mailbox: string, code: DenyCode | undefined): void;
  close(): Promise<void>;
}

interface Draft {
  id: string;
  mailbox: string;
  mime: Buffer | undefined;
  json: Record<string, unknown>;
  recipients: { to: string[]; cc: string[]; bcc: string[] };
  attachments: GraphMessage['attachments'];
}

interface UploadSession {
  id: string;
  draft: Draft;
  name: string;
  contentType: string;
  isInline: boolean;
  size: number;
  received: Buffer[];
  next: number;
}

class GraphError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export async function startGraphStandin(options: GraphStandinOptions): Promise<GraphStandin> {
  const introspector = createIntrospector({ ...options.introspection, ca: options.pki.ca.cert });
  const messages: GraphMessage[] = [];
  const requests: GraphRequest[] = [];
  const drafts = new Map<string, Draft>();
  const uploads = new Map<string, UploadSession>();
  const injected: Array<{ response: InjectedGraphResponse; where: RegExp | undefined }> = [];
  const denied = new Map<string, DenyCode>();
  let origin = '';

  async function authorize(req: IncomingMessage, permission: 'Mail.Send' | 'Mail.ReadWrite'): Promise<{ user: string | undefined }> {
    const match = /^Bearer ([\x21-\x7e]+)$/.exec(req.headers.authorization ?? '');
    if (!match) throw new GraphError(401, 'InvalidAuthenticationToken', 'Access token is empty.');
    let info: IntrospectionResponse;
    try {
      info = await introspector.introspect(match[1]!);
    } catch (error) {
      throw new GraphError(503, 'ServiceUnavailable', `token validation failed: ${String(error)}`);
    }
    const audiences = Array.isArray(info.aud) ? info.aud : [info.aud];
    if (!info.active || !audiences.includes(GRAPH_RESOURCE)) {
      throw new GraphError(401, 'InvalidAuthenticationToken', info.active ? 'Invalid audience.' : 'Lifetime validation failed, the token is expired.');
    }
    const scopes = typeof info.scope === 'string' ? info.scope.split(' ') : [];
    const roles = Array.isArray(info.roles) ? info.roles.map(String) : [];
    const user = typeof info.email === 'string' ? info.email : undefined;
    // An application token (no user) carries its application permissions as roles, or (the Microsoft
    // stand-in's client credentials tokens) as bare scope names.
    const has = (p: string) => scopes.includes(`${GRAPH_RESOURCE}/${p}`) || roles.includes(p) || (user === undefined && scopes.includes(p));
    // Mail.ReadWrite does not imply Mail.Send at Graph: sending always needs Mail.Send.
    if (!has('Mail.Send') || (permission === 'Mail.ReadWrite' && !has('Mail.ReadWrite'))) {
      throw new GraphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.');
    }
    return { user };
  }

  /** The mailbox a `/me` or `/users/{id}` path names, for this token. */
  function mailboxOf(segment: string, id: string | undefined, user: string | undefined): string {
    if (segment === 'me') {
      if (!user) throw new GraphError(400, 'BadRequest', '/me request is only valid with delegated authentication flow.');
      return user.toLowerCase();
    }
    const mailbox = decodeURIComponent(id ?? '').toLowerCase();
    if (!/^[^@\s]+@[^@\s]+$/.test(mailbox)) throw new GraphError(404, 'ErrorInvalidUser', `The requested user '${mailbox}' is invalid.`);
    if (user && user.toLowerCase() !== mailbox) throw new GraphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.');
    return mailbox;
  }

  function checkDenied(mailbox: string): void {
    const code = denied.get(mailbox);
    if (!code) return;
    if (code === 'ErrorSendAsDenied') throw new GraphError(403, code, 'The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account.');
    if (code === 'ErrorAccessDenied') throw new GraphError(403, code, 'Access is denied. Check credentials and try again.');
    throw new GraphError(404, code, 'The mailbox is either inactive, soft-deleted, or is hosted on-premise.');
  }

  function decodeMime(text: string): Buffer {
    const compact = text.replace(/\r?\n/g, '');
    if (compact === '' || compact.length % 4 !== 0 || !BASE64.test(compact)) {
      throw new GraphError(400, 'ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.');
    }
    return Buffer.from(compact, 'base64');
  }

  async function mimeRecipients(mime: Buffer): Promise<{ to: string[]; cc: string[]; bcc: string[] }> {
    const parsed = await simpleParser(mime, { skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true });
    const list = (field: AddressObject | AddressObject[] | undefined) =>
      (Array.isArray(field) ? field : field ? [field] : [])
        .flatMap((o) => o.value)
        .flatMap((a) => (a.group ? a.group : [a]))
        .map((a) => (a.address ?? '').toLowerCase())
        .filter((a) => a.includes('@'));
    return { to: list(parsed.to), cc: list(parsed.cc), bcc: list(parsed.bcc) };
  }

  function jsonRecipients(value: unknown): string[] {
    if (!Array.isArray(value)) return [];
    return value.map((r) => String((r as { emailAddress?: { address?: unknown } })?.emailAddress?.address ?? '').toLowerCase()).filter((a) => a.includes('@'));
  }

  function deliverable(recipients: { to: string[]; cc: string[]; bcc: string[] }): string[] {
    const all = [...new Set([...recipients.to, ...recipients.cc, ...recipients.bcc])];
    if (all.length === 0) throw new GraphError(400, 'ErrorInvalidRecipients', 'At least one recipient is required.');
    return all;
  }

  function parseJson(body: Buffer): Record<string, unknown> {
    try {
      const value = JSON.parse(body.toString('utf8')) as unknown;
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
    } catch {
      // answered below
    }
    throw new GraphError(400, 'BadRequest', 'Unable to read JSON request payload.');
  }

  async function composed(draft: Draft): Promise<Buffer> {
    const body = (draft.json.body ?? {}) as { contentType?: string; content?: string };
    const from = (draft.json.from as { emailAddress?: { address?: string } } | undefined)?.emailAddress?.address ?? draft.mailbox;
    const composer = new MailComposer({
      from,
      to: draft.recipients.to,
      cc: draft.recipients.cc,
      subject: String(draft.json.subject ?? ''),
      ...(String(body.contentType).toLowerCase() === 'html' ? { html: String(body.content ?? '') } : { text: String(body.content ?? '') }),
      attachments: draft.attachments.map((a) => ({ filename: a.name, contentType: a.contentType, content: a.content, contentDisposition: a.isInline ? 'inline' : 'attachment' })),
    });
    return composer.compile().build();
  }

  async function api(req: IncomingMessage, path: string, body: Buffer): Promise<{ status: number; json?: unknown }> {
    const m = /^\/v1\.0\/(me|users\/([^/]+))\/(sendMail|messages)(?:\/([^/]+))?(?:\/(send|attachments))?(?:\/(createUploadSession))?$/.exec(path);
    if (!m) throw new GraphError(400, 'BadRequest', `Resource not found for the segment '${path.split('/').at(-1) ?? ''}'.`);
    const [, segment, id, collection, messageId, action, sub] = m;
    const method = req.method ?? '';
    const contentType = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const needs = collection === 'sendMail' ? 'Mail.Send' : 'Mail.ReadWrite';
    const { user } = await authorize(req, needs);
    const mailbox = mailboxOf(segment === 'me' ? 'me' : 'users', id, user);

    if (collection === 'sendMail') {
      if (method !== 'POST' || messageId) throw new GraphError(405, 'Request_BadRequest', 'Method not allowed.');
      if (contentType !== 'text/plain') throw new GraphError(400, 'ErrorInvalidRequest', 'A MIME message must be sent as text/plain, base64.');
      const mime = decodeMime(body.toString('latin1'));
      checkDenied(mailbox);
      const recipients = deliverable(await mimeRecipients(mime));
      messages.push({ mailbox, mime, recipients, via: 'sendMail', attachments: [] });
      return { status: 202 };
    }

    if (!messageId) {
      if (method !== 'POST') throw new GraphError(405, 'Request_BadRequest', 'Method not allowed.');
      const draft: Draft = { id: randomBytes(24).toString('base64url'), mailbox, mime: undefined, json: {}, recipients: { to: [], cc: [], bcc: [] }, attachments: [] };
      if (contentType === 'text/plain') {
        draft.mime = decodeMime(body.toString('latin1'));
        draft.recipients = await mimeRecipients(draft.mime);
      } else if (contentType === 'application/json') {
        draft.json = parseJson(body);
        draft.recipients = { to: jsonRecipients(draft.json.toRecipients), cc: jsonRecipients(draft.json.ccRecipients), bcc: jsonRecipients(draft.json.bccRecipients) };
      } else {
        throw new GraphError(415, 'UnsupportedMediaType', 'Content-Type must be application/json or text/plain.');
      }
      drafts.set(draft.id, draft);
      return { status: 201, json: { id: draft.id, isDraft: true } };
    }

    const draft = drafts.get(decodeURIComponent(messageId));
    if (!draft || draft.mailbox !== mailbox) throw new GraphError(404, 'ErrorItemNotFound', 'The specified object was not found in the store.');

    if (!action) {
      if (method === 'DELETE') {
        drafts.delete(draft.id);
        return { status: 204 };
      }
      if (method !== 'PATCH') throw new GraphError(405, 'Request_BadRequest', 'Method not allowed.');
      const patch = parseJson(body);
      for (const [field, key] of [['toRecipients', 'to'], ['ccRecipients', 'cc'], ['bccRecipients', 'bcc']] as const) {
        if (field in patch) draft.recipients[key] = jsonRecipients(patch[field]);
      }
      return { status: 200, json: { id: draft.id } };
    }

    if (action === 'send') {
      if (method !== 'POST') throw new GraphError(405, 'Request_BadRequest', 'Method not allowed.');
      if ([...uploads.values()].some((u) => u.draft === draft)) throw new GraphError(400, 'ErrorInvalidRequest', 'An attachment upload is not finished.');
      checkDenied(mailbox);
      const recipients = deliverable(draft.recipients);
      const mime = draft.mime ?? (await composed(draft));
      drafts.delete(draft.id);
      messages.push({ mailbox, mime, recipients, via: 'draft', attachments: draft.attachments });
      return { status: 202 };
    }

    // attachments
    if (method !== 'POST') throw new GraphError(405, 'Request_BadRequest', 'Method not allowed.');
    const json = parseJson(body);
    if (sub === 'createUploadSession') {
      const item = (json.AttachmentItem ?? {}) as Record<string, unknown>;
      const size = item.size;
      if (item.attachmentType !== 'file' || typeof item.name !== 'string' || typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size > 150 * 1024 * 1024) {
        throw new GraphError(400, 'ErrorInvalidRequest', 'AttachmentItem needs attachmentType file, a name and a size up to 150 MB.');
      }
      const session: UploadSession = {
        id: randomUUID(),
        draft,
        name: item.name,
        contentType: typeof item.contentType === 'string' ? item.contentType : 'application/octet-stream',
        isInline: item.isInline === true,
        size,
        received: [],
        next: 0,
      };
      uploads.set(session.id, session);
      const expirationDateTime = new Date(Date.now() + 15 * 60_000).toISOString();
      return { status: 201, json: { uploadUrl: `${origin}/upload/${session.id}?authtoken=${randomBytes(16).toString('base64url')}`, expirationDateTime, nextExpectedRanges: ['0-'] } };
    }
    if (json['@odata.type'] !== '#microsoft.graph.fileAttachment' || typeof json.name !== 'string' || typeof json.contentBytes !== 'string') {
      throw new GraphError(400, 'ErrorInvalidRequest', 'A file attachment needs @odata.type, name and contentBytes.');
    }
    if (!BASE64.test(json.contentBytes) || json.contentBytes.length % 4 !== 0) throw new GraphError(400, 'ErrorInvalidRequest', 'contentBytes is not base64.');
    draft.attachments.push({
      name: json.name,
      contentType: typeof json.contentType === 'string' ? json.contentType : 'application/octet-stream',
      content: Buffer.from(json.contentBytes, 'base64'),
      isInline: json.isInline === true,
      uploaded: false,
    });
    return { status: 201, json: { id: randomUUID() } };
  }

  function upload(req: IncomingMessage, sessionId: string, body: Buffer): { status: number; json?: unknown } {
    const session = uploads.get(sessionId);
    if (!session) throw new GraphError(404, 'ErrorItemNotFound', 'The upload session was not found or has expired.');
    if (req.headers.authorization) throw new GraphError(401, 'InvalidAuthenticationToken', 'An upload URL carries its own authorization; do not send an Authorization header.');
    if (req.method !== 'PUT') throw new GraphError(405, 'Request_BadRequest', 'Method not allowed.');
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(req.headers['content-range'] ?? ''));
    if (!range) throw new GraphError(400, 'InvalidContentRange', 'The Content-Range header is missing or malformed.');
    const [start, end, total] = [Number(range[1]), Number(range[2]), Number(range[3])];
    const length = end - start + 1;
    if (total !== session.size) throw new GraphError(400, 'InvalidContentRange', `The total ${total} differs from the announced size ${session.size}.`);
    if (start !== session.next) throw new GraphError(416, 'InvalidContentRange', `Expected the range starting at ${session.next}.`);
    if (end < start || end >= total || length !== body.length || length > MAX_UPLOAD_RANGE) {
      throw new GraphError(400, 'InvalidContentRange', 'The Content-Range does not match the body.');
    }
    const last = end === total - 1;
    if (!last && length % UPLOAD_RANGE_UNIT !== 0) throw new GraphError(400, 'InvalidContentRange', 'Every range but the last must be a multiple of 320 KiB.');
    session.received.push(body);
    session.next = end + 1;
    if (!last) return { status: 200, json: { expirationDateTime: new Date(Date.now() + 15 * 60_000).toISOString(), nextExpectedRanges: [`${session.next}-`] } };
    uploads.delete(session.id);
    session.draft.attachments.push({ name: session.name, contentType: session.contentType, content: Buffer.concat(session.received), isInline: session.isInline, uploaded: true });
    return { status: 201 };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://graph.invalid');
    const record: GraphRequest = { method: req.method ?? '', path: url.pathname, status: 0, bearer: Boolean(req.headers.authorization), injected: false };
    requests.push(record);
    const reply = (status: number, json?: unknown, headers: Record<string, string> = {}) => {
      record.status = status;
      const text = json === undefined ? '' : typeof json === 'string' ? json : JSON.stringify(json);
      res.writeHead(status, { ...(json === undefined || typeof json === 'string' ? {} : { 'content-type': 'application/json' }), ...headers, 'request-id': randomUUID() });
      res.end(text);
    };
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size <= GRAPH_REQUEST_LIMIT) chunks.push(chunk as Buffer);
      if (size > DISCARD_LIMIT) {
        req.destroy();
        return;
      }
    }
    const index = injected.findIndex((entry) => !entry.where || entry.where.test(url.pathname));
    if (index >= 0) {
      const { response } = injected.splice(index, 1)[0]!;
      record.injected = true;
      return reply(response.status, response.body, response.headers);
    }
    try {
      if (size > GRAPH_REQUEST_LIMIT) throw new GraphError(413, 'RequestEntityTooLarge', 'The maximum request length supported is 4MB.');
      const body = Buffer.concat(chunks);
      const uploadMatch = /^\/upload\/([0-9a-f-]{36})$/.exec(url.pathname);
      const result = uploadMatch ? upload(req, uploadMatch[1]!, body) : await api(req, url.pathname, body);
      reply(result.status, result.json);
    } catch (error) {
      if (!(error instanceof GraphError)) {
        record.code = 'InternalServerError';
        return reply(500, { error: { code: 'InternalServerError', message: String(error) } });
      }
      record.code = error.code;
      const headers = error.status === 401 ? { 'www-authenticate': 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"', ...error.headers } : error.headers;
      reply(error.status, { error: { code: error.code, message: error.message, innerError: { date: new Date().toISOString(), 'request-id': randomUUID() } } }, headers);
    }
  }

  const server: Server = createServer({ key: options.pki.server.key, cert: options.pki.server.cert }, (req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    origin,
    baseUrl: `${origin}/v1.0`,
    messages,
    requests,
    get openDrafts() {
      return drafts.size;
    },
    failNext: (response, times = 1, where) => {
      for (let i = 0; i < times; i++) injected.push({ response, where });
    },
    denyMailbox: (mailbox, code) => {
      if (code) denied.set(mailbox.toLowerCase(), code);
      else denied.delete(mailbox.toLowerCase());
    },
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await introspector.close();
    },
  };
}
