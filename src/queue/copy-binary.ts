/**
 * PostgreSQL's binary COPY format, as far as the body store needs it
 * (https://www.postgresql.org/docs/current/sql-copy.html, "Binary Format").
 *
 * Purpose: stream `message_bodies` rows in and out without the driver's per-query copies and hex text.
 *   A COPY moves bytes over the connection as they come; a query with a bytea parameter builds its whole
 *   message (several copies of the chunk), and a bytea column comes back as a hex string twice its size.
 * Layout: an 11-byte signature, a 32-bit flags field (0), a 32-bit header-extension length (0, or that
 *   many bytes to skip); then per row a 16-bit field count and per field a 32-bit length (-1: NULL) and
 *   that many bytes; a field count of -1 ends the data. Integers are big-endian; `text` is its UTF-8 bytes,
 *   `integer` 4 bytes, `bytea` its bytes as they are.
 * Failure modes: the decoder throws on a wrong signature, flags with the OIDs bit, a row that is not one
 *   column, a NULL, or data after the trailer; `end()` throws when the trailer never came.
 */

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/** The file header: signature, no flags, no header extension. */
export function copyHeader(): Buffer {
  const header = Buffer.alloc(SIGNATURE.length + 8);
  SIGNATURE.copy(header);
  return header;
}

/** The start of a `message_bodies` row (message_id text, seq integer, data bytea of `dataLength` bytes). */
export function bodyRowStart(messageId: string, seq: number, dataLength: number): Buffer {
  const id = Buffer.from(messageId, 'utf8');
  const start = Buffer.alloc(2 + 4 + id.length + 4 + 4 + 4);
  let at = start.writeInt16BE(3, 0);
  at = start.writeInt32BE(id.length, at);
  at += id.copy(start, at);
  at = start.writeInt32BE(4, at);
  at = start.writeInt32BE(seq, at);
  start.writeInt32BE(dataLength, at);
  return start;
}

/** The trailer that ends the data. */
export function copyTrailer(): Buffer {
  return Buffer.from([0xff, 0xff]);
}

/**
 * Decodes the binary COPY of a one-column bytea result, in pieces split anywhere. `push(piece)` returns the
 * column's bytes found in it, as views of `piece` (no copies but for a few header bytes split across pieces).
 */
export class BinaryCopyDecoder {
  /** Rows whose data has been passed through completely. */
  rows = 0;
  #state: 'signature' | 'extension' | 'fieldCount' | 'fieldLength' | 'data' | 'done' = 'signature';
  /** Bytes of a fixed-size part (signature + flags + extension length, a field count, a length) so far. */
  #fixed = Buffer.alloc(SIGNATURE.length + 8);
  #fixedLength = 0;
  #skip = 0;
  #remaining = 0;

  push(piece: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let at = 0;
    while (at < piece.length) {
      switch (this.#state) {
        case 'signature': {
          at = this.#collect(piece, at, SIGNATURE.length + 8);
          if (this.#fixedLength < SIGNATURE.length + 8) break;
          if (!this.#fixed.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw new Error('not a binary COPY (wrong signature)');
          const flags = this.#fixed.readUInt32BE(SIGNATURE.length);
          if ((flags & 0x10000) !== 0) throw new Error('a binary COPY with OIDs is not expected');
          this.#skip = this.#fixed.readUInt32BE(SIGNATURE.length + 4);
          this.#fixedLength = 0;
          this.#state = 'extension';
          break;
        }
        case 'extension': {
          const n = Math.min(this.#skip, piece.length - at);
          this.#skip -= n;
          at += n;
          if (this.#skip === 0) this.#state = 'fieldCount';
          break;
        }
        case 'fieldCount': {
          at = this.#collect(piece, at, 2);
          if (this.#fixedLength < 2) break;
          const count = this.#fixed.readInt16BE(0);
          this.#fixedLength = 0;
          if (count === -1) this.#state = 'done';
          else if (count !== 1) throw new Error(`a binary COPY row of ${count} columns, expected 1`);
          else this.#state = 'fieldLength';
          break;
        }
        case 'fieldLength': {
          at = this.#collect(piece, at, 4);
          if (this.#fixedLength < 4) break;
          const length = this.#fixed.readInt32BE(0);
          this.#fixedLength = 0;
          if (length < 0) throw new Error('a NULL body chunk in a binary COPY');
          this.#remaining = length;
          this.#state = 'data';
          if (length === 0) this.#endRow();
          break;
        }
        case 'data': {
          const n = Math.min(this.#remaining, piece.length - at);
          out.push(piece.subarray(at, at + n));
          this.#remaining -= n;
          at += n;
          if (this.#remaining === 0) this.#endRow();
          break;
        }
        case 'done':
          throw new Error('data after the end of a binary COPY');
      }
    }
    return out;
  }

  /** Throws unless the trailer has been seen. */
  end(): void {
    if (this.#state !== 'done') throw new Error('the binary COPY ended before its trailer');
  }

  #endRow(): void {
    this.rows++;
    this.#state = 'fieldCount';
  }

  /** Copies bytes of `piece` from `at` into the fixed-size part until it holds `size`; returns the new `at`. */
  #collect(piece: Buffer, at: number, size: number): number {
    const n = Math.min(size - this.#fixedLength, piece.length - at);
    piece.copy(this.#fixed, this.#fixedLength, at, at + n);
    this.#fixedLength += n;
    return at + n;
  }
}
