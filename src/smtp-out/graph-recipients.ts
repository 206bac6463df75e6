/**
 * The envelope rule for Microsoft Graph (docs/decisions/029-microsoft-graph-delivery.md): Graph's MIME send
 * delivers to the To, Cc and Bcc fields of the message, not to an SMTP envelope, yet Postern must deliver to
 * exactly the envelope recipients (RCPT TO): every one of them, and no one else.
 *
 * - The header recipients are all in the envelope: the message goes as it is, and the envelope recipients
 *   the header does not name (a device's Bcc, a distribution the device put in RCPT TO only) are added in
 *   one Bcc field that Postern writes (Graph delivers to it and does not show it to the other recipients).
 * - The header names an address that is not in the envelope (a retry after some recipients were delivered,
 *   a device that copies the header of another message): the message must go through a draft whose
 *   recipients Postern sets itself (needs Mail.ReadWrite); see `planRecipients`.
 *
 * Addresses compare without regard to case: Exchange Online treats local parts that way, and treating
 * `Bob@x` and `bob@x` as two people would deliver twice.
 */
import addressparser from 'nodemailer/lib/addressparser';
import { splitFields, valueOf, type HeaderField } from './sender-policy.js';

/** The header recipients of a message, by field, as they appear (first occurrence kept). */
export interface HeaderRecipients {
  to: string[];
  cc: string[];
  bcc: string[];
}

export type RecipientPlan =
  /** Send the MIME unchanged. */
  | { kind: 'as-is' }
  /** Send the MIME with one Bcc field that names `bcc` (replacing any Bcc field the message had). */
  | { kind: 'add-bcc'; bcc: string[] }
  /** Headers name someone outside the envelope: set the recipients explicitly (draft path). */
  | { kind: 'explicit'; to: string[]; cc: string[]; bcc: string[]; notInEnvelope: string[] };


/** Where the header block ends: the offset of the body (after the blank line), or -1 when there is none. */
export function headerEnd(mime: Buffer): number {
  const crlf = mime.indexOf('\r\n\r\n');
  if (crlf >= 0) return crlf + 4;
  if (mime.subarray(0, 2).toString('latin1') === '\r\n') return 2;
  return -1;
}



function addresses(value: string): string[] {
  return addressparser(value, { flatten: true })
    .map((entry) => (typeof entry.address === 'string' ? entry.address.trim() : ''))
    .filter((address) => address.includes('@'));
}

const key = (address: string) => address.trim().toLowerCase();

/** To, Cc and Bcc of a message's header block (the bytes before the blank line). */
export function headerRecipients(mime: Buffer): HeaderRecipients {
  const end = headerEnd(mime);
  const block = (end < 0 ? mime : mime.subarray(0, end)).toString('latin1');
  const result: HeaderRecipients = { to: [], cc: [], bcc: [] };
  const seen = new Set<string>();
  for (const field of splitFields(block)) {
    if (field.name !== 'to' && field.name !== 'cc' && field.name !== 'bcc') continue;
    for (const address of addresses(valueOf(field))) {
      if (seen.has(key(address))) continue;
      seen.add(key(address));
      result[field.name].push(address);
    }
  }
  return result;
}

/** How to make Graph deliver to exactly `envelope` (RCPT TO), given the message's header recipients. */
export function planRecipients(envelope: readonly string[], header: HeaderRecipients): RecipientPlan {
  const wanted = new Map<string, string>();
  for (const address of envelope) if (!wanted.has(key(address))) wanted.set(key(address), address);
  const named = [...header.to, ...header.cc, ...header.bcc];
  const namedKeys = new Set(named.map(key));
  const notInEnvelope = named.filter((address) => !wanted.has(key(address)));
  if (notInEnvelope.length > 0) {
    const inField = (field: string[]) => field.filter((address) => wanted.has(key(address)));
    const to = inField(header.to);
    const cc = inField(header.cc);
    const shown = new Set([...to, ...cc].map(key));
    const bcc = [...wanted.values()].filter((address) => !shown.has(key(address)));
    return { kind: 'explicit', to, cc, bcc, notInEnvelope };
  }
  const extra = [...wanted.values()].filter((address) => !namedKeys.has(key(address)));
  if (extra.length === 0) return { kind: 'as-is' };
  return { kind: 'add-bcc', bcc: [...header.bcc, ...extra] };
}

/**
 * The message with one Bcc field naming `bcc`, written first, and any Bcc field it had removed (its
 * addresses are in `bcc`). Everything else, the body included, is byte for byte the original.
 */
export function withBcc(mime: Buffer, bcc: readonly string[]): Buffer {
  const end = headerEnd(mime);
  const field = Buffer.from(`Bcc: ${bcc.map((address) => `<${address}>`).join(',\r\n ')}\r\n`, 'utf8');
  // No blank line: the message is all header (RFC 5322 §3.5 allows no body).
  const block = end < 0 ? mime : mime.subarray(0, end - 2);
  const kept = splitFields(block.toString('latin1')).filter((f) => f.name !== 'bcc');
  return Buffer.concat([field, Buffer.from(kept.map((f) => f.raw).join(''), 'latin1'), end < 0 ? Buffer.alloc(0) : mime.subarray(end - 2)]);
}
