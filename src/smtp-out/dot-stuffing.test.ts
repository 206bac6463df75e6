import { randomInt } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import DataStream from 'nodemailer/lib/smtp-connection/data-stream';
import { describe, expect, it } from 'vitest';
import { fastDataAvailable, stuffDots } from './dot-stuffing.js';

async function encode(stream: NodeJS.ReadWriteStream, chunks: Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(chunks), stream, new Writable({ write(c, _e, cb) { out.push(c); cb(); } }));
  return Buffer.concat(out);
}

/** nodemailer's own encoder with stuffDots in place of its byte loop, as FastDataSmtpConnection does it. */
function patched(): NodeJS.ReadWriteStream {
  const stream = new DataStream() as unknown as { _transform: unknown; lastByte: number | false; inByteCount: number; outByteCount: number; push(b: Buffer): void };
  stream._transform = function (this: typeof stream, chunk: Buffer, _e: unknown, done: () => void) {
    if (!chunk.length) return done();
    this.inByteCount += chunk.length;
    const out = stuffDots(chunk, this.lastByte);
    this.outByteCount += out.length;
    this.push(out);
    this.lastByte = chunk[chunk.length - 1]!;
    done();
  };
  return stream as unknown as NodeJS.ReadWriteStream;
}

describe('stuffDots gives exactly what nodemailer’s DataStream gives', () => {
  it('on hand-picked inputs', async () => {
    for (const text of ['', '.', '..', 'a\r\n.b\r\n', 'a\n.\n', 'a\r.\r', '\r\n.\r\n', '.\r\n.', 'x\r', '\n', '\r', 'line\r\n..\r\n']) {
      const chunks = [Buffer.from(text, 'latin1')];
      expect((await encode(patched(), chunks)).toString('latin1')).toBe((await encode(new DataStream(), chunks)).toString('latin1'));
    }
  });

  it('on 500 random inputs of CR, LF, dots and letters, chunked at random', async () => {
    const alphabet = [0x0d, 0x0a, 0x2e, 0x61];
    for (let n = 0; n < 500; n++) {
      const bytes = Buffer.from(Array.from({ length: randomInt(0, 60) }, () => alphabet[randomInt(0, 4)]!));
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length; ) {
        const size = randomInt(1, 8);
        chunks.push(bytes.subarray(at, at + size));
        at += size;
      }
      const expected = await encode(new DataStream(), chunks);
      const actual = await encode(patched(), chunks.map((c) => Buffer.from(c)));
      expect(actual.toString('latin1'), JSON.stringify(bytes.toString('latin1'))).toBe(expected.toString('latin1'));
    }
  });

  it('hooks into an internal nodemailer still has', () => {
    expect(fastDataAvailable()).toBe(true);
  });
});
