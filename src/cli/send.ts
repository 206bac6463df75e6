/**
 * `postern send`: a message from a script (scan-to-email from a folder, a report from cron) into the gateway's
 * queue, as if a device had sent it through the relay.
 *
 * Inputs: recipients, sender, subject, a text body (argument, file or stdin) and attachment files; the E-Mail
 *   Settings' sender address (the default sender) and the Relay Settings' maximum message size.
 * Outputs: one queued message (state `incoming`, due at once) and `queued as <id>` on stdout. The running
 *   gateway's queue manager finds it at its next scan of the database (about once a second). For large
 *   attachments, a progress bar on stderr when it is a terminal, one final line otherwise.
 * Durability: the message is built by nodemailer's MailComposer and streamed through the relay's own
 *   MessageNormalizer into MessageQueue.receive(): the body is fsynced before its row is written, and only
 *   then is `queued as` printed, exactly as the relay says `250` (src/queue/spool.ts).
 * Failure modes: a usage error (no recipient, an address that is not one) exits 64 before anything is opened,
 *   no sender (no --from and none in the E-Mail Settings) exits 64 before the spool is written; a missing or
 *   unreadable file exits 1 before the store is opened; a message over the maximum
 *   size, a storage failure or an interrupt (exit 130) removes the spool file written so far, so nothing
 *   half-written is left.
 * Known limits: a gateway that starts while a message is being written here removes its unfinished spool
 *   file as an orphan; that send then fails at its commit or its message is reported missing at delivery.
 *   The body is read into memory (it is text); attachments are streamed.
 */
import { isAscii } from 'node:buffer';
import { open, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import MailComposer from 'nodemailer/lib/mail-composer';
import type { IncomingMessage, MessageQueue } from '../queue/queue.js';
import { MAX_HEADER_BYTES, MessageNormalizer } from '../smtp-in/message-normalizer.js';
import { RelaySettings } from '../smtp-in/relay-settings.js';
import { EmailSettings, isEmailAddress } from '../smtp-out/email-settings.js';
import type { Store } from '../store/store.js';
import { CommandFailed, noPositionals, parseCommandArgs, printable, type Flags } from './command.js';
import { SEND_TEXTS } from './usage.js';

const USAGE = SEND_TEXTS.usage;

const FLAGS: Flags = {
  to: { type: 'string', multiple: true },
  from: { type: 'string' },
  subject: { type: 'string' },
  body: { type: 'string' },
  'body-file': { type: 'string' },
  attach: { type: 'string', multiple: true },
};

/** Attachments from this size on (in all) get a progress bar, or a final line when stderr is not a terminal. */
const PROGRESS_FROM_BYTES = 1024 * 1024;
/** What the client field of the queue row and the Log page's "received from" say. */
const CLIENT = 'command line';

const usage = (message: string) => new CommandFailed(message, 64, USAGE);
const notDone = (message: string) => new CommandFailed(message, 1);

const MB = 1024 * 1024;
/** Sizes as the Relay Settings page gives them (1 MB = 1,048,576 bytes). */
export const formatMb = (bytes: number) => `${(bytes / MB).toFixed(1).replace(/\.0$/, '')} MB`;

/** The fewest bytes `bytes` take in a message as base64 in 76-character lines (MailComposer's encoding). */
function base64Bytes(bytes: number): number {
  const chars = Math.ceil(bytes / 3) * 4;
  return chars + 2 * Math.ceil(chars / 76);
}

interface Attachment {
  path: string;
  handle: FileHandle;
  size: number;
}

/** The file, open for reading, or a one-line reason why it cannot be read (exit 1). */
async function openReadable(path: string, what: string): Promise<Attachment> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw notDone(`${what} ${printable(path)} ${fileProblem(error)}`);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw notDone(`${what} ${printable(path)} is not a file`);
    return { path, handle, size: stat.size };
  } catch (error) {
    await handle.close().catch(() => undefined);
    if (error instanceof CommandFailed) throw error;
    throw notDone(`${what} ${printable(path)} ${fileProblem(error)}`);
  }
}

function fileProblem(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'does not exist';
  if (code === 'EACCES' || code === 'EPERM') return 'cannot be read: permission denied';
  if (code === 'EISDIR') return 'is not a file';
  return `cannot be read: ${printable(error instanceof Error ? error.message : String(error))}`;
}

/** Every address of the `--to` flags (each may be a comma-separated list), checked as E-Mail Settings check one. */
function recipientsOf(values: string[] | undefined): string[] {
  const recipients = (values ?? []).flatMap((value) => value.split(',')).map((address) => address.trim()).filter(Boolean);
  if (recipients.length === 0) throw usage('send needs a recipient: --to ADDR');
  for (const address of recipients) if (!isEmailAddress(address)) throw usage(`"${printable(address)}" (--to) is not an e-mail address`);
  return [...new Set(recipients)];
}

/** Counts the message's bytes as they go to the spool, stops past the limit, and shows the progress. */
class MessageMeter extends Transform {
  bytes = 0;
  exceeded = false;

  constructor(
    private readonly limit: number,
    private readonly progress: Progress | undefined,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      this.exceeded = true;
      return callback(new Error('message too big'));
    }
    this.progress?.update(this.bytes);
    callback(null, chunk);
  }
}

/**
 * Bytes written to the spool out of the message's expected size (the attachments as base64, plus the body;
 * the headers and MIME boundaries add a little, so the bar stays at 99% until the end).
 */
class Progress {
  #drawnAt = -1;

  constructor(
    private readonly expected: number,
    private readonly terminal: NodeJS.WriteStream | undefined,
  ) {}

  update(bytes: number): void {
    if (!this.terminal) return;
    // Redrawn at most once per percent: a 30 MB message is about 500 chunks.
    const percent = Math.min(99, Math.floor((bytes / this.expected) * 100));
    if (percent === this.#drawnAt) return;
    this.#drawnAt = percent;
    this.#draw(bytes, percent);
  }

  #draw(bytes: number, percent: number): void {
    const width = 30;
    const filled = Math.round((percent / 100) * width);
    this.terminal!.write(`\rQueueing [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${formatMb(bytes)} of ${formatMb(Math.max(bytes, this.expected))} ${String(percent).padStart(3)}%`);
  }

  /** The bar at 100% and its line ended; or the one plain line when stderr is not a terminal. */
  finish(bytes: number): void {
    if (this.terminal) {
      this.#draw(bytes, 100);
      this.terminal.write('\n');
    } else {
      process.stderr.write(`Queueing: ${formatMb(bytes)} written to the spool.\n`);
    }
  }

  /** Ends the bar's line so that an error starts on its own. */
  interrupted(): void {
    if (this.terminal && this.#drawnAt >= 0) this.terminal.write('\n');
  }
}

async function readStdin(limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > limit) throw tooBig(limit, 'the body from standard input is');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const tooBig = (limit: number, what = 'the message is') =>
  notDone(`${what} larger than the maximum message size, ${formatMb(limit)} (${limit} bytes; Relay Settings)`);

export interface SendDependencies {
  withQueue<T>(fn: (queue: MessageQueue, store: Store) => Promise<T>): Promise<T>;
}

export async function sendCommand(args: string[], { withQueue }: SendDependencies): Promise<void> {
  const parsed = parseCommandArgs('send', args, FLAGS, SEND_TEXTS);
  noPositionals('send', parsed, SEND_TEXTS);
  const recipients = recipientsOf(parsed.values.to as string[] | undefined);
  const givenFrom = (parsed.values.from as string | undefined)?.trim();
  if (givenFrom !== undefined && !isEmailAddress(givenFrom)) throw usage(`"${printable(givenFrom)}" (--from) is not an e-mail address`);
  const subject = parsed.values.subject as string | undefined;
  const bodyText = parsed.values.body as string | undefined;
  const bodyFile = parsed.values['body-file'] as string | undefined;
  if (bodyText !== undefined && bodyFile !== undefined) throw usage('give --body or --body-file, not both');

  // Every file is open before the store: a file that cannot be read leaves no trace in the queue.
  const files: Attachment[] = [];
  try {
    const bodySource = bodyFile !== undefined && bodyFile !== '-' ? await openReadable(bodyFile, 'body file') : undefined;
    if (bodySource) files.push(bodySource);
    for (const path of (parsed.values.attach as string[] | undefined) ?? []) files.push(await openReadable(path, 'attachment'));
    const attachments = bodySource ? files.slice(1) : files;

    await withQueue(async (queue, store) => {
      const from = givenFrom ?? (await new EmailSettings(store).get()).senderAddress;
      if (!from) throw usage('send needs --from ADDR: the E-Mail Settings have no sender address');
      const limit = await new RelaySettings(store).maxMessageSize();
      const attachmentBytes = attachments.reduce((n, file) => n + file.size, 0);
      if ((bodySource?.size ?? 0) > limit) throw tooBig(limit, `body file ${printable(bodySource!.path)} is`);
      const text = bodySource ? await bodySource.handle.readFile('utf8') : bodyFile === '-' ? await readStdin(limit) : (bodyText ?? '');
      const expected = attachments.reduce((n, file) => n + base64Bytes(file.size), 0) + Buffer.byteLength(text);
      if (expected > limit) throw tooBig(limit);

      const progress = attachmentBytes >= PROGRESS_FROM_BYTES ? new Progress(expected, process.stderr.isTTY ? process.stderr : undefined) : undefined;
      const composer = new MailComposer({
        from,
        to: recipients,
        ...(subject !== undefined ? { subject } : {}),
        text,
        attachments: attachments.map((file) => ({ filename: basename(file.path), content: file.handle.createReadStream() })),
      });
      // From before the spool file exists until its row does: a Ctrl-C (or SIGTERM) stops the writing and
      // removes the file, and during the commit it waits for it instead of leaving a file without its row.
      const interrupt = new AbortController();
      const onSignal = () => interrupt.abort();
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const incoming = await queue.receive();
        const id = await writeAndCommit(queue, incoming, composer, { from, recipients, limit, progress, signal: interrupt.signal });
        process.stdout.write(`queued as ${id}\n`);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
  } finally {
    await Promise.all(files.map((file) => file.handle.close().catch(() => undefined)));
  }
}

/**
 * The relay's intake, from a composed message instead of a DATA stream: normalised and counted on the way
 * to the spool file, committed (fsync, then the row) only when the whole message is there and within the
 * limit; aborted (the file removed) on any failure or interrupt.
 */
async function writeAndCommit(
  queue: MessageQueue,
  incoming: IncomingMessage,
  composer: MailComposer,
  { from, recipients, limit, progress, signal }: { from: string; recipients: string[]; limit: number; progress: Progress | undefined; signal: AbortSignal },
): Promise<string> {
  const meter = new MessageMeter(limit, progress);
  const normalizer = new MessageNormalizer({ hostname: hostname() });
  try {
    await pipeline(composer.compile().createReadStream() as Readable, meter, normalizer, incoming.body, { signal });
  } catch (error) {
    await incoming.abort();
    progress?.interrupted();
    if (meter.exceeded) throw tooBig(limit);
    if (signal.aborted) throw new CommandFailed('interrupted: nothing was queued', 130);
    const code = (error as NodeJS.ErrnoException).code;
    throw notDone(`the message could not be written to the spool${code ? ` (${code})` : ''}: ${printable(error instanceof Error ? error.message : String(error))}; nothing was queued`);
  }
  const facts = normalizer.facts;
  if (facts.headerTooLarge) {
    await incoming.abort();
    throw notDone(`the message header is larger than ${MAX_HEADER_BYTES} bytes (a very long subject?); nothing was queued`);
  }
  let queued;
  try {
    queued = await incoming.commit({
      reversePath: from,
      recipients,
      body8bit: facts.eightBit,
      smtputf8: !isAscii(Buffer.from([from, ...recipients].join(''))),
      headerFrom: facts.headerFrom,
      subject: facts.subject,
      messageId: facts.messageId,
      client: CLIENT,
    });
  } catch (error) {
    // A failed commit has no row (queue.ts removes the file when the row fails; not when the fsync does).
    await queue.spool.remove(incoming.id).catch(() => undefined);
    progress?.interrupted();
    throw notDone(`${printable(error instanceof Error ? error.message : String(error))}; nothing was queued`);
  }
  progress?.finish(meter.bytes);
  return queued.id;
}
