/**
 * The upstream's SMTP extensions that decide what the relay may promise its devices (docs/protocol.md
 * §5.3): 8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531). Pure functions: parsing an EHLO reply, what
 * the relay advertises for what is known, and whether a queued message can go to a session that lacks one.
 * docs/decisions/014-upstream-extensions.md says why the result is remembered per upstream target.
 */

export type UpstreamExtension = '8BITMIME' | 'SMTPUTF8';

export const UPSTREAM_EXTENSIONS: readonly UpstreamExtension[] = ['8BITMIME', 'SMTPUTF8'];

/** What a session to the upstream last saw, for one target. */
export interface SeenExtensions {
  /** `host:port` (lower-case host). */
  target: string;
  extensions: UpstreamExtension[];
  seenAt: number;
}

/**
 * The providers' submission hosts, which both advertise 8BITMIME and SMTPUTF8 (docs/protocol.md §5.3): the
 * relay may promise both before a session has confirmed it (fresh install, upstream not reached yet).
 */
const PROVIDER_HOSTS = new Set([
  'smtp.office365.com',
  'smtp-mail.outlook.com',
  'outlook.office365.com',
  'smtp.gmail.com',
  'smtp.googlemail.com',
  'smtp-relay.gmail.com',
]);

export function targetKey(host: string, port: number): string {
  return `${host.toLowerCase().replace(/\.$/, '')}:${port}`;
}

export function isProviderHost(host: string): boolean {
  return PROVIDER_HOSTS.has(host.toLowerCase().replace(/\.$/, ''));
}

/**
 * The extensions of interest in an EHLO reply's lines, without the reply codes (nodemailer's `_ehloLines`:
 * the greeting line removed). RFC 5321 §4.1.1.1: each line is a keyword, optionally followed by parameters.
 */
export function parseEhloExtensions(lines: readonly string[]): UpstreamExtension[] {
  const keywords = new Set(lines.map((line) => line.trim().split(/\s+/)[0]!.toUpperCase()));
  return UPSTREAM_EXTENSIONS.filter((extension) => keywords.has(extension));
}

/** Stored form: space-separated, in a fixed order; unknown words are dropped. */
export function formatExtensions(extensions: readonly string[]): string {
  return UPSTREAM_EXTENSIONS.filter((e) => extensions.includes(e)).join(' ');
}

export function parseStoredExtensions(text: string | null | undefined): UpstreamExtension[] {
  return parseEhloExtensions((text ?? '').split(/\s+/).filter(Boolean));
}

/**
 * What the relay advertises for the selected upstream: what a session last saw there; before that, both for
 * the providers' hosts and neither for any other host (a promise the upstream may not keep would turn into
 * a bounce after `250`).
 */
export function relayExtensions(host: string, port: number, seen: SeenExtensions | null | undefined): Record<UpstreamExtension, boolean> {
  const known = seen && seen.target === targetKey(host, port) ? seen.extensions : isProviderHost(host) ? UPSTREAM_EXTENSIONS : [];
  return { '8BITMIME': known.includes('8BITMIME'), SMTPUTF8: known.includes('SMTPUTF8') };
}

/** What one scan of a message found: any byte above 127, and whether one is in the header section. */
export interface EightBitScan {
  header: boolean;
  anywhere: boolean;
}

/** Scans a message for 8-bit bytes; the header section ends at the first empty line. */
export async function scanEightBit(stream: AsyncIterable<Buffer | string>): Promise<EightBitScan> {
  const result: EightBitScan = { header: false, anywhere: false };
  let inHeader = true;
  let tail = '';
  for await (const part of stream) {
    const chunk = typeof part === 'string' ? Buffer.from(part) : part;
    if (inHeader) {
      const text = tail + chunk.toString('latin1');
      const end = text.search(/\r?\n\r?\n/);
      const header = end >= 0 ? text.slice(0, end) : text;
      if (/[\x80-\xff]/.test(header)) result.header = result.anywhere = true;
      if (end >= 0) inHeader = false;
      tail = text.slice(-3);
    }
    if (!result.anywhere && chunk.some((byte) => byte > 0x7f)) result.anywhere = true;
    if (result.header || (result.anywhere && !inHeader)) break;
  }
  return result;
}

/** A message refused before it is sent: the upstream lacks an extension it needs (RFC 6152 §3, RFC 6531 §3.2). */
export interface ConversionRefusal {
  code: number;
  reply: string;
  advice: string;
}

const NON_ASCII = /[^\x00-\x7f]/;

/**
 * Whether a message needs what the session lacks. SMTPUTF8 is needed for a non-ASCII address or UTF-8 in
 * the header section (RFC 6531 §3.2: no downgrade here); an 8-bit body needs 8BITMIME, and a body marked
 * BODY=8BITMIME that is in fact 7-bit clean goes as it is. Postern does not re-encode (docs/decisions/014).
 */
export function refusalFor(
  need: { smtpUtf8: boolean; addresses: readonly string[] },
  scan: EightBitScan,
  offered: readonly UpstreamExtension[],
  server: string,
): ConversionRefusal | undefined {
  if (!offered.includes('SMTPUTF8') && need.smtpUtf8 && (scan.header || need.addresses.some((a) => NON_ASCII.test(a)))) {
    return {
      code: 554,
      reply: `554 5.6.7 ${server} does not offer SMTPUTF8; the message has non-ASCII addresses or headers and cannot be sent without it`,
      advice: `The upstream does not accept internationalized (SMTPUTF8) messages; the message was returned to its sender. Use ASCII addresses and subject on the device, or choose an upstream that offers SMTPUTF8 in E-Mail Settings.`,
    };
  }
  if (!offered.includes('8BITMIME') && scan.anywhere) {
    return {
      code: 554,
      reply: `554 5.6.3 ${server} does not offer 8BITMIME; conversion of the 8-bit message to 7-bit is required and prohibited`,
      advice: `The upstream does not accept 8-bit messages; the message was returned to its sender. Set the device to encode mail as quoted-printable or base64 (7-bit), or choose an upstream that offers 8BITMIME in E-Mail Settings.`,
    };
  }
  return undefined;
}
