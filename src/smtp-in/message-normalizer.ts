/**
 * Cleans a message once, where it enters (the DATA stream of a device session), before it is spooled:
 *
 * - Bare CR and bare LF become CRLF (or are only counted, when the relay is set to reject them), so that
 *   an SMTP-smuggling payload (`<LF>.<LF>`, `<LF>.<CR><LF>`, RFC 5321 §4.1.1.4) is stored as an ordinary
 *   line holding a dot and leaves as a dot-stuffed `..` line: it can never end the upstream DATA early and
 *   become a second message. smtp-server only ends DATA at `<CRLF>.<CRLF>`.
 * - A missing `Message-ID` or `Date` is added (RFC 6409 §8); nothing else is rewritten here.
 * - A header block that is not one (a device that sends a bare body) gets the blank line it lacks, so the
 *   body does not turn into header fields.
 *
 * - A header block over MAX_HEADER_BYTES, and any NUL byte, are only noted (`headerTooLarge`, `nulBytes`):
 *   the relay refuses such a message (`552 5.3.4`, `554 5.6.0`), so the sender policy, which judges the
 *   whole header block on the way out, never meets a header it could not read to its end. Once the header
 *   block is over the limit nothing more is passed on (the message is refused anyway). The header block
 *   ends at the blank line, at the first line that is not a header field, or at the end of the message;
 *   it is measured after CR/LF normalisation, folded lines included, whatever its line lengths.
 *
 * Streaming: only the header block is buffered (at most MAX_HEADER_BYTES); the body flows through in chunks,
 * so a 25 MB scan is never held in memory.
 */
import { isAscii } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * The largest header block the relay takes (256 KiB). Devices send a few hundred bytes; Postfix keeps
 * 100 KiB (header_size_limit). It stays well under the sender policy's own bound (smtp-out/sender-policy.ts).
 */
export const MAX_HEADER_BYTES = 256 * 1024;

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');
const HEADER_LINE = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/;

export interface NormalizerOptions {
  /** The host name in generated Message-IDs. */
  hostname: string;
  now?: () => Date;
}

export interface MessageFacts {
  headerFrom: string | null;
  subject: string | null;
  messageId: string | null;
  addedMessageId: boolean;
  addedDate: boolean;
  /** Any byte ≥ 0x80 (the upstream then gets BODY=8BITMIME). */
  eightBit: boolean;
  bareLf: number;
  bareCr: number;
  /** The header block is larger than MAX_HEADER_BYTES: the message must be refused. */
  headerTooLarge: boolean;
  /** NUL bytes anywhere in the message (RFC 5322 allows none): the message must be refused. */
  nulBytes: number;
}

/** RFC 5322 date-time in UTC. */
export function rfc5322Date(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}

export class MessageNormalizer extends Transform {
  readonly facts: MessageFacts = {
    headerFrom: null,
    subject: null,
    messageId: null,
    addedMessageId: false,
    addedDate: false,
    eightBit: false,
    bareLf: 0,
    bareCr: 0,
    headerTooLarge: false,
    nulBytes: 0,
  };
  #pendingCr = false;
  #inBody = false;
  #head: Buffer = Buffer.alloc(0);
  /** Where the next unexamined header line starts in #head. */
  #lineStart = 0;

  constructor(private readonly options: NormalizerOptions) {
    super();
  }

  get bareNewlines(): number {
    return this.facts.bareLf + this.facts.bareCr;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (!this.facts.eightBit && !isAscii(chunk)) this.facts.eightBit = true;
    for (let at = chunk.indexOf(0); at >= 0; at = chunk.indexOf(0, at + 1)) this.facts.nulBytes++;
    if (this.facts.headerTooLarge) return callback();
    const normalized = this.#normalize(chunk);
    if (normalized.length > 0) this.#feed(normalized);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.#pendingCr) {
      this.#pendingCr = false;
      this.facts.bareCr++;
      this.#feed(CRLF);
    }
    if (!this.#inBody) {
      let head = this.#head;
      if (head.length > 0 && !(head[head.length - 2] === CR && head[head.length - 1] === LF)) head = Buffer.concat([head, CRLF]);
      this.#endHeaders(head, CRLF);
    }
    callback();
  }

  /** Bare CR / bare LF → CRLF; counts them. Keeps a CR that ends a chunk until the next byte is known. */
  #normalize(chunk: Buffer): Buffer {
    const parts: Buffer[] = [];
    const n = chunk.length;
    let i = 0;
    if (this.#pendingCr) {
      this.#pendingCr = false;
      parts.push(CRLF);
      if (n > 0 && chunk[0] === LF) i = 1;
      else this.facts.bareCr++;
    }
    let segment = i;
    let nextCr = chunk.indexOf(CR, i);
    let nextLf = chunk.indexOf(LF, i);
    while (i < n) {
      if (nextCr >= 0 && nextCr < i) nextCr = chunk.indexOf(CR, i);
      if (nextLf >= 0 && nextLf < i) nextLf = chunk.indexOf(LF, i);
      if (nextCr < 0 && nextLf < 0) break;
      if (nextLf >= 0 && (nextCr < 0 || nextLf < nextCr)) {
        // An LF with no CR before it.
        parts.push(chunk.subarray(segment, nextLf), CRLF);
        this.facts.bareLf++;
        i = segment = nextLf + 1;
        continue;
      }
      if (nextCr + 1 >= n) {
        parts.push(chunk.subarray(segment, nextCr));
        this.#pendingCr = true;
        i = segment = n;
        break;
      }
      if (chunk[nextCr + 1] === LF) {
        i = nextCr + 2;
        continue;
      }
      parts.push(chunk.subarray(segment, nextCr), CRLF);
      this.facts.bareCr++;
      i = segment = nextCr + 1;
    }
    if (segment < n) parts.push(segment === 0 ? chunk : chunk.subarray(segment));
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  #feed(data: Buffer): void {
    if (this.facts.headerTooLarge) return;
    if (this.#inBody) {
      this.push(data);
      return;
    }
    this.#head = this.#head.length === 0 ? data : Buffer.concat([this.#head, data]);
    const head = this.#head;
    for (;;) {
      const end = head.indexOf(CRLF, this.#lineStart);
      if (end < 0) break;
      if (end === this.#lineStart) {
        // The blank line: the header block ends here.
        this.#endHeaders(head.subarray(0, end), head.subarray(end));
        return;
      }
      const line = head.toString('latin1', this.#lineStart, Math.min(end, this.#lineStart + 1000));
      const continuation = (line.startsWith(' ') || line.startsWith('\t')) && this.#lineStart > 0;
      if (!continuation && !HEADER_LINE.test(line)) {
        // Not a header field: the device sent no blank line; the body starts here.
        this.#endHeaders(head.subarray(0, this.#lineStart), Buffer.concat([CRLF, head.subarray(this.#lineStart)]));
        return;
      }
      this.#lineStart = end + 2;
    }
    if (head.length > MAX_HEADER_BYTES) this.#tooLarge();
  }

  /** The header block is over the limit: nothing more is stored, the relay refuses the message. */
  #tooLarge(): void {
    this.facts.headerTooLarge = true;
    this.#inBody = true;
    this.#head = Buffer.alloc(0);
  }

  /** Emits the header block (plus what it lacks) and `rest`, which starts with the blank line. */
  #endHeaders(block: Buffer, rest: Buffer): void {
    if (block.length > MAX_HEADER_BYTES) return this.#tooLarge();
    this.#inBody = true;
    this.#head = Buffer.alloc(0);
    const fields = parseHeaderFields(block);
    const value = (name: string) => fields.find((f) => f.name === name)?.value ?? null;
    this.facts.headerFrom = value('from');
    this.facts.subject = value('subject');
    this.facts.messageId = value('message-id');
    const added: string[] = [];
    if (!fields.some((f) => f.name === 'date')) {
      added.push(`Date: ${rfc5322Date(this.options.now?.() ?? new Date())}\r\n`);
      this.facts.addedDate = true;
    }
    if (!this.facts.messageId) {
      this.facts.messageId = `<${randomUUID()}@${this.options.hostname}>`;
      added.push(`Message-ID: ${this.facts.messageId}\r\n`);
      this.facts.addedMessageId = true;
    }
    this.push(added.length > 0 ? Buffer.concat([block, Buffer.from(added.join(''), 'latin1'), rest]) : Buffer.concat([block, rest]));
  }
}

export interface HeaderField {
  name: string;
  /** Unfolded value, decoded as UTF-8. */
  value: string;
}

/** Header fields of a block (CRLF line ends), unfolded. */
export function parseHeaderFields(block: Buffer): HeaderField[] {
  const fields: HeaderField[] = [];
  const text = block.toString('utf8').replace(/\r\n(?=[ \t])/g, '');
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    fields.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() });
  }
  return fields;
}
