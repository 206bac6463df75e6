import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { BinaryCopyDecoder, bodyRowStart, copyHeader, copyTrailer } from './copy-binary.js';

/** A one-column binary COPY of `rows`, as PostgreSQL sends it. */
function copyOf(rows: Buffer[]): Buffer {
  const parts = [copyHeader()];
  for (const row of rows) {
    const start = Buffer.alloc(6);
    start.writeInt16BE(1, 0);
    start.writeInt32BE(row.length, 2);
    parts.push(start, row);
  }
  parts.push(copyTrailer());
  return Buffer.concat(parts);
}

/** `whole` cut at `cuts` (positions, any order, repeats allowed). */
function split(whole: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (whole.length + 1)))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const to of [...at, whole.length]) {
    pieces.push(whole.subarray(from, to));
    from = to;
  }
  return pieces;
}

describe('binary COPY decoder', () => {
  test('gives back the rows, concatenated, however the stream is cut', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 20 }), (rows, cuts) => {
        const buffers = rows.map((r) => Buffer.from(r));
        const decoder = new BinaryCopyDecoder();
        const out: Buffer[] = [];
        for (const piece of split(copyOf(buffers), cuts)) out.push(...decoder.push(piece));
        decoder.end();
        expect(Buffer.concat(out).equals(Buffer.concat(buffers))).toBe(true);
        expect(decoder.rows).toBe(buffers.length);
      }),
    );
  });

  test('skips a header extension', () => {
    const header = copyHeader();
    header.writeUInt32BE(3, header.length - 4);
    const decoder = new BinaryCopyDecoder();
    const out = decoder.push(Buffer.concat([header, Buffer.from('xyz'), copyOf([Buffer.from('body')]).subarray(header.length)]));
    decoder.end();
    expect(Buffer.concat(out).toString()).toBe('body');
  });

  test('refuses what is not a one-column binary COPY', () => {
    expect(() => new BinaryCopyDecoder().push(Buffer.from('PGCOPY\nnot really it'))).toThrow(/signature/);
    const twoColumns = Buffer.concat([copyHeader(), Buffer.from([0, 2])]);
    expect(() => new BinaryCopyDecoder().push(twoColumns)).toThrow(/2 columns/);
    const nullField = Buffer.concat([copyHeader(), Buffer.from([0, 1, 0xff, 0xff, 0xff, 0xff])]);
    expect(() => new BinaryCopyDecoder().push(nullField)).toThrow(/NULL/);
    expect(() => new BinaryCopyDecoder().push(Buffer.concat([copyOf([]), Buffer.from([0])]))).toThrow(/after the end/);
    const cut = new BinaryCopyDecoder();
    cut.push(copyOf([Buffer.from('abc')]).subarray(0, 25));
    expect(() => cut.end()).toThrow(/before its trailer/);
  });

  test('a row start holds the id as UTF-8, the chunk number and the data length', () => {
    const start = bodyRowStart('Ид-1', 7, 1000);
    expect(start.readInt16BE(0)).toBe(3);
    const idLength = start.readInt32BE(2);
    expect(start.subarray(6, 6 + idLength).toString('utf8')).toBe('Ид-1');
    expect(start.readInt32BE(6 + idLength)).toBe(4);
    expect(start.readInt32BE(10 + idLength)).toBe(7);
    expect(start.readInt32BE(14 + idLength)).toBe(1000);
    expect(start.length).toBe(18 + idLength);
  });
});
