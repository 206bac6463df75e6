import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { MAX_HEADER_BYTES, MessageNormalizer, parseHeaderFields } from './message-normalizer.js';

async function run(chunks: Array<string | Buffer>): Promise<{ out: string; normalizer: MessageNormalizer }> {
  const normalizer = new MessageNormalizer({ hostname: 'relay.test', now: () => new Date(Date.UTC(2026, 0, 2, 3, 4, 5)) });
  const parts: Buffer[] = [];
  await pipeline(
    Readable.from(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c, 'latin1') : c))),
    normalizer,
    new Writable({
      write(chunk, _e, cb) {
        parts.push(chunk);
        cb();
      },
    }),
  );
  return { out: Buffer.concat(parts).toString('latin1'), normalizer };
}

const HEAD = 'From: a@example.test\r\nSubject: hi\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n\r\n';

describe('MessageNormalizer', () => {
  it('passes a clean message through unchanged', async () => {
    const input = HEAD + 'line one\r\n.hidden dot line\r\n\r\nlast\r\n';
    const { out, normalizer } = await run([input]);
    expect(out).toBe(input);
    expect(normalizer.bareNewlines).toBe(0);
    expect(normalizer.facts).toMatchObject({ headerFrom: 'a@example.test', subject: 'hi', messageId: '<m1@example.test>', addedDate: false, addedMessageId: false, eightBit: false });
  });

  it.each([
    ['<LF>.<LF>', 'body\n.\nMAIL FROM:<evil@example.test>\n'],
    ['<LF>.<CR><LF>', 'body\n.\r\nMAIL FROM:<evil@example.test>\r\n'],
    ['<CR>.<CR>', 'body\r.\rMAIL FROM:<evil@example.test>\r\n'],
  ])('normalizes the smuggling vector %s into CRLF lines', async (_name, body) => {
    const { out, normalizer } = await run([HEAD + body]);
    expect(normalizer.bareNewlines).toBeGreaterThan(0);
    const bodyOut = out.slice(HEAD.length);
    expect(bodyOut).toBe('body\r\n.\r\nMAIL FROM:<evil@example.test>\r\n');
    // Only CRLF pairs remain anywhere.
    expect(out.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
  });

  it('handles CR and LF split across chunk boundaries', async () => {
    const { out, normalizer } = await run([HEAD + 'a\r', '\nb\r', 'c\n', '\n', 'd\r', '']);
    expect(out.slice(HEAD.length)).toBe('a\r\nb\r\nc\r\n\r\nd\r\n');
    expect(normalizer.facts.bareCr).toBe(2);
    expect(normalizer.facts.bareLf).toBe(2);
  });

  it('normalizes one byte at a time the same way', async () => {
    const input = HEAD + 'x\ny\rz\r\n\n.\n';
    const whole = await run([input]);
    const bytes = await run([...Buffer.from(input, 'latin1')].map((b) => Buffer.from([b])));
    expect(bytes.out).toBe(whole.out);
    expect(bytes.normalizer.facts.bareLf).toBe(whole.normalizer.facts.bareLf);
  });

  it('adds Message-ID and Date when missing (RFC 6409 §8), at the end of the header block', async () => {
    const { out, normalizer } = await run(['From: scanner@local\r\nSubject: Scan\r\n\r\nbody\r\n']);
    expect(out).toMatch(/^From: scanner@local\r\nSubject: Scan\r\nDate: Fri, 02 Jan 2026 03:04:05 \+0000\r\nMessage-ID: <[0-9a-f-]{36}@relay\.test>\r\n\r\nbody\r\n$/);
    expect(normalizer.facts.addedDate).toBe(true);
    expect(normalizer.facts.addedMessageId).toBe(true);
    expect(normalizer.facts.messageId).toMatch(/@relay\.test>$/);
  });

  it('gives a body without headers the blank line it lacks, so it stays the body', async () => {
    const { out } = await run(['Hello, this is just text.\r\nSecond line\r\n']);
    const fields = parseHeaderFields(Buffer.from(out.split('\r\n\r\n')[0]!, 'latin1'));
    expect(fields.map((f) => f.name)).toEqual(['date', 'message-id']);
    expect(out.split('\r\n\r\n')[1]).toBe('Hello, this is just text.\r\nSecond line\r\n');
  });

  it('keeps folded headers and detects 8-bit content', async () => {
    const { out, normalizer } = await run([Buffer.from('From: a@example.test\r\nSubject: long\r\n continued\r\nDate: x\r\nMessage-ID: <y@z>\r\n\r\nGrüße\r\n', 'utf8')]);
    expect(normalizer.facts.subject).toBe('long continued');
    expect(normalizer.facts.eightBit).toBe(true);
    expect(Buffer.from(out, 'latin1').toString('utf8')).toContain('Grüße');
  });

  it('handles an empty message and a message that is only headers', async () => {
    const empty = await run([]);
    expect(empty.out).toMatch(/^Date: .+\r\nMessage-ID: <.+>\r\n\r\n$/);
    const onlyHeaders = await run(['Subject: x\r\n']);
    expect(onlyHeaders.out).toMatch(/^Subject: x\r\nDate: .+\r\nMessage-ID: <.+>\r\n\r\n$/);
  });

  it.each([
    ['many lines', `From: x@y.test\r\n${`X-F: ${'a'.repeat(990)}\r\n`.repeat(300)}\r\nbody\r\n`],
    ['one folded field', `From: x@y.test\r\nX-F: start\r\n${` ${'b'.repeat(990)}\r\n`.repeat(300)}\r\nbody\r\n`],
    ['one long line', `From: x@y.test\r\nX-F: ${'c'.repeat(300_000)}\r\n\r\nbody\r\n`],
    ['no blank line (all header)', `From: x@y.test\r\n${`X-F: ${'d'.repeat(990)}\r\n`.repeat(300)}`],
    ['bare LF lines', `From: x@y.test\n${`X-F: ${'e'.repeat(990)}\n`.repeat(300)}\nbody\n`],
  ])('notes a header block over MAX_HEADER_BYTES (%s) and passes nothing of it on', async (_name, input) => {
    for (const chunks of [[input], input.match(/[\s\S]{1,4096}/g)!]) {
      const { out, normalizer } = await run(chunks);
      expect(normalizer.facts.headerTooLarge).toBe(true);
      expect(out.length).toBeLessThan(MAX_HEADER_BYTES + 8192);
      expect(out).not.toContain('From: x@y.test');
    }
  });

  it('takes a header block just under MAX_HEADER_BYTES', async () => {
    const { normalizer } = await run([`From: x@y.test\r\n${`X-F: ${'a'.repeat(990)}\r\n`.repeat(200)}\r\nbody\r\n`]);
    expect(normalizer.facts.headerTooLarge).toBe(false);
    expect(normalizer.facts.headerFrom).toBe('x@y.test');
  });

  it('counts NUL bytes in header and body', async () => {
    const { normalizer } = await run([HEAD.replace('hi', 'h\0i'), 'bo', Buffer.from([0, 0]), 'dy\r\n']);
    expect(normalizer.facts.nulBytes).toBe(3);
    expect((await run([HEAD + 'clean\r\n'])).normalizer.facts.nulBytes).toBe(0);
  });
});
