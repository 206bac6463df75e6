/**
 * `postern send` against a running gateway (in-process, with the Office 365 stand-in upstream): the message
 * goes into the gateway's queue as the relay puts it there, the gateway's queue manager finds it at a scan and
 * delivers it, and a 20 MB attachment arrives upstream byte for byte. A file that cannot be read, a message
 * over the Relay Settings' maximum size, and bad usage leave nothing in the spool or the queue.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli } from './support/cli.js';
import { waitForState } from './support/queue.js';
import { ALICE, saveEmailSettings, saveRelaySettings, startSendingStack, type SendingStack } from './support/sending.js';

const MB = 1024 * 1024;
/** The largest size the Relay Settings take (whole MB under the relay's ceiling), so a 20 MB file fits as base64. */
const MAX_SIZE_MB = 34;

let stack: SendingStack;
let env: Record<string, string>;
let files: string;

const spoolFiles = () => readdirSync(join(stack.gw.dataDir, 'spool')).filter((name) => name.endsWith('.eml')).sort();
/** Rows in every state: a delivery moves a row from state to state, a new message adds one. */
const queueRows = async () => Object.values(await stack.gw.postern.queue.counts()).reduce((n, count) => n + count, 0);

/** Runs `postern send`, and checks that a failure left the spool and the queue as they were. */
async function sendFails(args: string[], code: 1 | 64, options: { stdin?: string } = {}) {
  // Earlier messages may still be on their way out (their files go, their rows change state): only what is
  // new counts.
  const spoolBefore = spoolFiles();
  const rowsBefore = await queueRows();
  const result = await runCli(['send', ...args], env, 60_000, options);
  expect(result.stdout).toBe('');
  expect(result.code, result.stderr).toBe(code);
  expect(spoolFiles().filter((name) => !spoolBefore.includes(name))).toEqual([]);
  expect(await queueRows()).toBe(rowsBefore);
  return result;
}

beforeAll(async () => {
  stack = await startSendingStack();
  await saveRelaySettings(stack.web, { maxMessageSizeMb: String(MAX_SIZE_MB) });
  env = { POSTERN_DATA_DIR: stack.gw.dataDir };
  files = mkdtempSync(join(tmpdir(), 'postern-cli-send-'));
}, 120_000);

afterAll(async () => {
  await stack?.close();
});

describe('postern send', () => {
  test('a 20 MB attachment is queued, delivered by the running gateway, and arrives upstream intact', async () => {
    const scan = randomBytes(20 * 1000 * 1000);
    const path = join(files, 'scan-0001.pdf');
    writeFileSync(path, scan);
    const result = await runCli(
      ['send', '--to', 'bob@example.test,carol@example.test', '--to', 'dave@example.test', '--from', ALICE, '--subject', 'Scan 0001', '--body', 'The scan is attached.', '--attach', path],
      env,
      120_000,
    );
    expect(result.code, result.stderr).toBe(0);
    const id = /^queued as ([0-9a-f-]{36})\n$/.exec(result.stdout)?.[1];
    expect(id, result.stdout).toBeDefined();
    // stderr is not a terminal here: one plain line instead of the progress bar.
    expect(result.stderr).toMatch(/^Queueing: \d+(\.\d)? MB written to the spool\.\n$/);

    const sent = await waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, id!, 'sent', 120_000);
    expect(sent.client).toBe('command line');
    expect(sent.recipients).toEqual(['bob@example.test', 'carol@example.test', 'dave@example.test']);
    const arrived = await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'Scan 0001', 'the sent scan upstream');
    expect(arrived.envelope).toEqual({ mailFrom: ALICE, rcptTo: ['bob@example.test', 'carol@example.test', 'dave@example.test'] });
    expect(arrived.parsed!.text?.trim()).toBe('The scan is attached.');
    const [attachment, ...others] = arrived.parsed!.attachments;
    expect(others).toHaveLength(0);
    expect(attachment!.filename).toBe('scan-0001.pdf');
    expect(attachment!.contentType).toBe('application/pdf');
    expect(attachment!.content.length).toBe(scan.length);
    expect(attachment!.content.equals(scan)).toBe(true);
    const accepted = (await stack.gw.postern.queue.logEntries({ queueId: id! })).find((entry) => entry.event === 'accepted');
    expect(accepted?.reply).toMatch(/^received from command line, \d+ bytes$/);
  }, 240_000);

  test('the body from standard input, and no stderr output for a small message', async () => {
    const result = await runCli(['send', '--to', 'bob@example.test', '--from', ALICE, '--subject', 'From stdin', '--body-file', '-'], env, 60_000, { stdin: 'Line one\nLine two\n' });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    const id = /^queued as ([0-9a-f-]{36})\n$/.exec(result.stdout)?.[1];
    await waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, id!, 'sent');
    const arrived = await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'From stdin', 'the message from stdin upstream');
    expect(arrived.parsed!.text).toBe('Line one\nLine two\n');
  }, 120_000);

  test('a missing attachment: exit 1 naming the file, and no spool file or queue row is left', async () => {
    const missing = join(files, 'not-there.pdf');
    const result = await sendFails(['--to', 'bob@example.test', '--from', ALICE, '--attach', missing], 1);
    expect(result.stderr).toBe(`postern: attachment ${missing} does not exist\n`);
  });

  test('an attachment that is a directory: exit 1', async () => {
    const result = await sendFails(['--to', 'bob@example.test', '--from', ALICE, '--attach', files], 1);
    expect(result.stderr).toBe(`postern: attachment ${files} is not a file\n`);
  });

  test('over the maximum message size: exit 1 naming the limit, before or while it is written, and nothing is left', async () => {
    const limit = `postern: the message is larger than the maximum message size, ${MAX_SIZE_MB} MB (${MAX_SIZE_MB * MB} bytes; Relay Settings)\n`;
    // Clearly too big: refused before a spool file is opened (a sparse file, nothing is really written).
    const huge = join(files, 'huge.bin');
    truncateSync((writeFileSync(huge, ''), huge), 40 * MB);
    expect((await sendFails(['--to', 'bob@example.test', '--from', ALICE, '--attach', huge], 1)).stderr).toBe(limit);
    // Too big only once encoded (a 27 MB text that is not ASCII goes as base64, a third larger): refused while
    // it is written, and the spool file written so far removed.
    const text = join(files, 'long-text.txt');
    writeFileSync(text, 'é'.repeat((27 * MB) / 2));
    expect((await sendFails(['--to', 'bob@example.test', '--from', ALICE, '--body-file', text], 1)).stderr).toBe(limit);
  }, 120_000);

  test.each([
    { args: ['--from', ALICE], line: 'send needs a recipient: --to ADDR' },
    { args: ['--to', 'bob@example.test,not an address', '--from', ALICE], line: '"not an address" (--to) is not an e-mail address' },
    { args: ['--to', 'bob@example.test', '--from', 'alice'], line: '"alice" (--from) is not an e-mail address' },
    { args: ['--to', 'bob@example.test'], line: 'send needs --from ADDR: the E-Mail Settings have no sender address' },
    { args: ['--to', 'bob@example.test', '--from', ALICE, '--subject', 'a', '--subject', 'b'], line: '--subject can be given only once' },
  ])('usage: $line (exit 64)', async ({ args, line }) => {
    const result = await sendFails(args, 64);
    expect(result.stderr).toMatch(new RegExp(`^postern: ${line.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n\nUsage: postern send `));
  });

  // Last: it changes the E-Mail Settings that the usage errors above rely on.
  test('without --from, the E-Mail Settings\' sender address is the sender', async () => {
    await saveEmailSettings(stack.web, { smtpPort: String(stack.upstream.port), senderAddress: ALICE });
    expect(stack.web.lastStatus).toBe(303);
    const result = await runCli(['send', '--to', 'bob@example.test', '--subject', 'Default sender', '--body', 'hello'], env);
    expect(result.code, result.stderr).toBe(0);
    const id = /^queued as ([0-9a-f-]{36})\n$/.exec(result.stdout)?.[1];
    const sent = await waitForState(stack.gw.postern.queueManager, stack.gw.postern.queue, id!, 'sent');
    expect(sent.reversePath).toBe(ALICE);
    const arrived = await stack.upstream.waitForMessage((m) => m.parsed?.subject === 'Default sender', 'the message upstream');
    expect(arrived.envelope.mailFrom).toBe(ALICE);
    expect(arrived.parsed!.from?.value[0]?.address).toBe(ALICE);
  }, 120_000);
});
