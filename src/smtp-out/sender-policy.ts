/**
 * The sender policy (README, Point a device at Postern): the envelope sender is the authorized mailbox (or the
 * Sender E-Mail Address); the device's header From is kept when it is that mailbox or an address the
 * administrator listed as allowed, otherwise From becomes the mailbox (keeping the device's display name)
 * and the device's address moves to Reply-To, so that replies still reach whoever scanned. Exchange Online
 * refuses other From addresses with `554 5.2.252 SendAsDenied`; Gmail rewrites them silently.
 *
 * Applied while the spooled body streams to the upstream: only the header block is buffered, the body
 * passes through untouched. No other header is changed except a Sender field naming an address that is
 * not allowed (it would trigger the same SendAsDenied), which is removed.
 *
 * Fails closed: a header block over MAX_HEADER_BYTES (the relay refuses those at DATA, so only a message
 * spooled by an older version can have one) is never passed on unrewritten; the stream fails with
 * HeaderTooLargeError and the message is not sent.
 */
import { Transform, type TransformCallback } from 'node:stream';
import addressparser from 'nodemailer/lib/addressparser';
import { encodeWords, quoteString } from 'nodemailer/lib/mime-funcs';
import { ErrorCodes, PosternError } from '../errors.js';

export interface SenderPolicy {
  /** The envelope sender and the From that replaces a disallowed one. */
  mailbox: string;
  /** Addresses a device may keep as header From (the mailbox is always allowed). */
  allowed: string[];
}

export const MAX_HEADER_BYTES = 1024 * 1024;

/** The header block is too large for the policy to judge: the message must not be sent. */
export class HeaderTooLargeError extends PosternError {
  constructor() {
    super(ErrorCodes.SMTP_HEADER_TOO_BIG, `the message's header block exceeds ${MAX_HEADER_BYTES} bytes; it is not sent without the sender policy`);
    this.name = 'HeaderTooLargeError';
  }
}

export interface HeaderField {
  name: string;
  /** The field's raw bytes (latin1 string, so every byte survives), with its CRLF line ends. */
  raw: string;
}

/** A header block's fields, each with its folded continuation lines. */
export function splitFields(block: string): HeaderField[] {
  const fields: HeaderField[] = [];
  for (const line of block.split(/(?<=\r\n)/)) {
    if (line === '') continue;
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length > 0) {
      fields[fields.length - 1]!.raw += line;
    } else {
      const colon = line.indexOf(':');
      fields.push({ name: colon > 0 ? line.slice(0, colon).trim().toLowerCase() : '', raw: line });
    }
  }
  return fields;
}

/** The field's value, unfolded and decoded as UTF-8 (8-bit headers are UTF-8 in practice, RFC 6532). */
export function valueOf(field: HeaderField): string {
  const colon = field.raw.indexOf(':');
  return Buffer.from(field.raw.slice(colon + 1), 'latin1').toString('utf8').replace(/\r\n(?=[ \t])/g, '').trim();
}

function mailboxes(value: string): Array<{ name: string; address: string }> {
  return addressparser(value, { flatten: true })
    .filter((entry) => typeof entry.address === 'string' && entry.address.includes('@'))
    .map((entry) => ({ name: entry.name ?? '', address: entry.address as string }));
}

const ENCODED_WORDS = /^(=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=\s*)+$/;

function displayName(name: string): string {
  const trimmed = name.trim();
  if (trimmed === '') return '';
  if (ENCODED_WORDS.test(trimmed)) return trimmed;
  if (/^[\x20-\x7e]*$/.test(trimmed)) return quoteString(trimmed);
  return encodeWords(trimmed, 'Q', 52, true);
}

function headerLine(name: string, value: string): string {
  return Buffer.from(`${name}: ${value}\r\n`, 'utf8').toString('latin1');
}

export interface RewriteResult {
  headers: Buffer;
  /** The device's From, when it was replaced. */
  replacedFrom?: string;
}

/** Applies the policy to a header block (without the blank line that ends it). */
export function applySenderPolicy(block: Buffer, policy: SenderPolicy): RewriteResult {
  const allowed = new Set([policy.mailbox, ...policy.allowed].map((a) => a.trim().toLowerCase()).filter(Boolean));
  const fields = splitFields(block.toString('latin1'));
  const froms = fields.filter((f) => f.name === 'from');
  const fromAddresses = froms.flatMap((f) => mailboxes(valueOf(f)));
  const keep = froms.length === 1 && fromAddresses.length === 1 && allowed.has(fromAddresses[0]!.address.toLowerCase());
  const out: string[] = [];
  let replacedFrom: string | undefined;
  let placed = false;
  const hasReplyTo = fields.some((f) => f.name === 'reply-to');
  const original = fromAddresses[0];
  const newFrom = (): string[] => {
    const lines: string[] = [];
    const name = original ? displayName(original.name) : '';
    lines.push(headerLine('From', name ? `${name} <${policy.mailbox}>` : `<${policy.mailbox}>`));
    if (original && !hasReplyTo && !allowed.has(original.address.toLowerCase())) lines.push(headerLine('Reply-To', `<${original.address}>`));
    return lines;
  };
  for (const field of fields) {
    if (field.name === 'from' && !keep) {
      if (!placed) {
        out.push(...newFrom());
        placed = true;
        replacedFrom = original?.address ?? valueOf(field);
      }
      continue;
    }
    if (field.name === 'sender') {
      const sender = mailboxes(valueOf(field))[0];
      if (!sender || !allowed.has(sender.address.toLowerCase())) continue;
    }
    out.push(field.raw.endsWith('\r\n') ? field.raw : field.raw + '\r\n');
  }
  if (!keep && !placed) out.unshift(...newFrom());
  const result: RewriteResult = { headers: Buffer.from(out.join(''), 'latin1') };
  if (replacedFrom !== undefined) result.replacedFrom = replacedFrom;
  return result;
}

/**
 * Streams a spooled message through the policy: buffers the header block (up to MAX_HEADER_BYTES), rewrites
 * it, then passes the body through as it comes.
 */
export class SenderPolicyTransform extends Transform {
  #head: Buffer[] = [];
  #headLength = 0;
  #inBody = false;
  replacedFrom: string | undefined;
  /** The header block was over MAX_HEADER_BYTES: nothing was passed on. */
  headerTooLarge = false;

  constructor(private readonly policy: SenderPolicy) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.#inBody) return callback(null, chunk);
    this.#head.push(chunk);
    this.#headLength += chunk.length;
    const joined = Buffer.concat(this.#head, this.#headLength);
    const start = joined.subarray(0, 2).equals(Buffer.from('\r\n')) ? 0 : -1;
    const end = start === 0 ? 0 : joined.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.#headLength > MAX_HEADER_BYTES) {
        // No end of the header block in sight: not a message this policy can judge, so it is not sent.
        this.headerTooLarge = true;
        this.#head = [];
        return callback(new HeaderTooLargeError());
      }
      this.#head = [joined];
      return callback();
    }
    const block = end === 0 ? Buffer.alloc(0) : joined.subarray(0, end + 2);
    const rest = joined.subarray(end === 0 ? 0 : end + 2);
    const result = applySenderPolicy(block, this.policy);
    this.replacedFrom = result.replacedFrom;
    this.#inBody = true;
    this.#head = [];
    callback(null, Buffer.concat([result.headers, rest]));
  }

  override _flush(callback: TransformCallback): void {
    if (!this.#inBody && this.#headLength > 0) {
      const result = applySenderPolicy(Buffer.concat(this.#head, this.#headLength), this.policy);
      this.replacedFrom = result.replacedFrom;
      return callback(null, Buffer.concat([result.headers, Buffer.from('\r\n')]));
    }
    callback();
  }
}
