/**
 * Delivery status notifications (RFC 3464 `multipart/report; report-type=delivery-status`, RFC 6522), the
 * one message a sender gets when its message could not be delivered (RFC 5321 §6.1). The original's header
 * block goes along as `text/rfc822-headers` (not the whole body: a 25 MB scan should not come back).
 */
import { randomBytes } from 'node:crypto';

export interface FailedRecipient {
  recipient: string;
  /** RFC 3463 status, e.g. `5.1.1`. */
  status: string;
  /** The remote server's reply (`550 5.1.1 …`), or Postern's own reason. */
  diagnostic: string;
  /** `smtp` when the text is a server reply, `x-postern` for Postern's own reasons (expiry). */
  diagnosticType?: 'smtp' | 'x-postern';
}

export interface DsnInput {
  reportingMta: string;
  remoteMta?: string | undefined;
  /** The address the DSN comes from (the authorized mailbox: the upstream accepts nothing else). */
  from: string;
  /** The original message's reverse-path. */
  to: string;
  queueId: string;
  arrivalDate: Date;
  recipients: FailedRecipient[];
  /** The original header block as spooled (CRLF line ends), with or without the blank line after it. */
  originalHeaders: Buffer;
  originalSubject?: string | null | undefined;
  now?: Date;
}

/** A single-line, printable-ASCII rendering of free text for a header field. */
function headerText(text: string): string {
  return text.replace(/[\r\n\t]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').trim().slice(0, 900);
}

/** RFC 3463 status from a reply such as `550 5.1.1 …` or `554-5.2.252 …`, else from the basic code. */
export function statusOf(reply: string, code: number | null | undefined): string {
  const enhanced = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply.trim())?.[1] ?? /\b([45]\.\d{1,3}\.\d{1,3})\b/.exec(reply)?.[1];
  if (enhanced) return enhanced;
  if (code && code >= 500) return '5.0.0';
  if (code && code >= 400) return '4.0.0';
  return '5.0.0';
}

export function buildDsn(input: DsnInput): Buffer {
  const now = input.now ?? new Date();
  const boundary = `postern-dsn-${randomBytes(12).toString('hex')}`;
  const domain = input.reportingMta.replace(/[^A-Za-z0-9.-]/g, '') || 'postern.invalid';
  const lines: string[] = [];
  const add = (...more: string[]) => lines.push(...more);

  const subject = input.originalSubject ? `Undelivered Mail Returned to Sender: ${headerText(input.originalSubject)}` : 'Undelivered Mail Returned to Sender';
  add(
    `From: Mail Delivery System <${input.from}>`,
    `To: <${input.to}>`,
    `Subject: ${subject}`,
    `Date: ${now.toUTCString().replace(/GMT$/, '+0000')}`,
    `Message-ID: <${now.getTime()}.${randomBytes(6).toString('hex')}.dsn@${domain}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Description: Notification',
    '',
    `This is the Postern mail gateway at ${domain}.`,
    '',
    'Your message could not be delivered to the recipients below.',
    'The mail system said:',
    '',
  );
  for (const r of input.recipients) add(`<${headerText(r.recipient)}>: ${headerText(r.diagnostic)}`, '');
  add(
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    'Content-Description: Delivery report',
    '',
    `Reporting-MTA: dns; ${domain}`,
    `X-Postern-Queue-ID: ${input.queueId}`,
    `Arrival-Date: ${input.arrivalDate.toUTCString().replace(/GMT$/, '+0000')}`,
    '',
  );
  for (const r of input.recipients) {
    add(`Final-Recipient: rfc822; ${headerText(r.recipient)}`, 'Action: failed', `Status: ${r.status}`);
    if (input.remoteMta) add(`Remote-MTA: dns; ${headerText(input.remoteMta)}`);
    add(`Diagnostic-Code: ${r.diagnosticType ?? 'smtp'}; ${headerText(r.diagnostic)}`, '');
  }
  add(`--${boundary}`, 'Content-Type: text/rfc822-headers', 'Content-Description: Undelivered Message Headers', '');
  let end = input.originalHeaders.length;
  while (end >= 2 && input.originalHeaders[end - 2] === 0x0d && input.originalHeaders[end - 1] === 0x0a) end -= 2;
  return Buffer.concat([
    Buffer.from(lines.join('\r\n') + '\r\n', 'utf8'),
    input.originalHeaders.subarray(0, end),
    Buffer.from('\r\n', 'utf8'),
    Buffer.from(`\r\n--${boundary}--\r\n`, 'utf8'),
  ]);
}
