/**
 * The spool: message bodies as files, written so that a `250` is only ever said about bytes on stable
 * storage (docs/decisions/004-spool-files-and-queue-rows.md).
 *
 * Purpose: keep 25 MB bodies out of the database and out of memory. A body is streamed to `<id>.eml`,
 *   fsynced, and the directory fsynced (one directory sync serves every file created before it started);
 *   only then is the queue row committed, and only then is the device told `250`. The row is what makes a
 *   file count: at start, a file without a row (a crash while receiving, or before the commit: the device
 *   got no `250` and still has the message) is removed.
 * Inputs: byte streams from the relay. Outputs: read streams for delivery; file removal when done. Small
 *   bodies can also be kept in memory (`keepBytes`), so the first delivery attempt need not read them back.
 * Failure modes: a full disk or I/O error fails the write; the relay answers 451 and the device retries.
 * Known limits: bodies live on this node's disk, so only the node that accepted a message delivers it
 *   (queue rows carry the node id). A node id file in the spool keeps that identity across restarts. With
 *   PostgreSQL new bodies go to the database instead (database-bodies.ts), where every instance reads them;
 *   the spool then only holds bodies accepted before that.
 *   Callback-style fs calls are used on purpose: each file costs five system calls, and the promise API
 *   adds measurable overhead per call at hundreds of messages a second.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { close, createReadStream, existsSync, fsync, mkdirSync, open, readFileSync, unlink, write, writev, writeFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { ErrorCodes, PosternError } from '../errors.js';

/** The file in the spool directory that keeps this node's id across restarts. */
export const NODE_ID_FILE = 'node-id';

/** A body's file name in the spool directory. */
export const bodyFileName = (id: string): string => `${id}.eml`;

/** Where the spool lives in a data directory: the gateway and the command line must agree on it. */
export function spoolDirectory(dataDir: string): string {
  return join(dataDir, 'spool');
}

const fsOpen = (path: string, flags: string, mode: number) =>
  new Promise<number>((resolve, reject) => open(path, flags, mode, (error, fd) => (error ? reject(error) : resolve(fd))));
const fsSync = (fd: number) => new Promise<void>((resolve, reject) => fsync(fd, (error) => (error ? reject(error) : resolve())));
const fsClose = (fd: number) => new Promise<void>((resolve, reject) => close(fd, (error) => (error ? reject(error) : resolve())));
const fsUnlink = (path: string) => new Promise<void>((resolve, reject) => unlink(path, (error) => (error && error.code !== 'ENOENT' ? reject(error) : resolve())));

export class Spool {
  #dirFd: Promise<number> | undefined;
  /** A directory fsync that has not started yet: later file creations may join it. */
  #dirSyncQueued: Promise<void> | undefined;
  #dirSyncChain: Promise<void> = Promise.resolve();

  private constructor(
    readonly dir: string,
    readonly nodeId: string,
  ) {}

  /** Opens (creating at first start) the spool directory `dir` with mode 0700. */
  static open(dir: string): Spool {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const idFile = join(dir, NODE_ID_FILE);
    let nodeId: string;
    if (existsSync(idFile)) {
      nodeId = readFileSync(idFile, 'utf8').trim();
    } else {
      nodeId = `node-${randomBytes(8).toString('hex')}`;
      writeFileSync(idFile, nodeId + '\n', { mode: 0o600 });
    }
    return new Spool(dir, nodeId);
  }

  static newId(): string {
    return randomUUID();
  }

  path(id: string): string {
    // An invariant, not input checking: ids come from Spool.newId() or from queue rows.
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new TypeError(`not a queue id: ${id}`);
    return join(this.dir, bodyFileName(id));
  }

  /** A writable for a new body; call `commit()` after it finished, or `abort()`. Keeps a copy of up to `keepBytes`. */
  async create(id: string, keepBytes = 0): Promise<SpoolWriter> {
    const path = this.path(id);
    const fd = await fsOpen(path, 'wx', 0o600);
    return new SpoolWriter(fd, path, () => this.syncDirectory(), keepBytes);
  }

  /** The body's bytes. A missing or unreadable file fails the stream with POSTERN_QUEUE_SPOOL_MISSING. */
  read(id: string): Readable {
    const stream = createReadStream(this.path(id), { highWaterMark: 64 * 1024 });
    // Every error of a file stream passes through _destroy (no extra stream in the path of each chunk).
    const destroy = stream._destroy.bind(stream);
    stream._destroy = (error, callback) =>
      destroy(error, (failure) =>
        callback(failure ? new PosternError(ErrorCodes.QUEUE_SPOOL_MISSING, `the spooled copy of queue message ${id} ${(failure as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : `cannot be read: ${failure.message}`}`, { cause: failure }) : failure),
      );
    return stream;
  }

  async remove(id: string): Promise<void> {
    await fsUnlink(this.path(id));
  }

  /** Ids of the bodies present on disk. */
  async ids(): Promise<string[]> {
    return (await readdir(this.dir)).filter((name) => name.endsWith('.eml')).map((name) => name.slice(0, -4));
  }

  /** Removes the `tmp` directory of earlier versions, if any. */
  async removeTemporaryFiles(): Promise<number> {
    const tmp = join(this.dir, 'tmp');
    if (!existsSync(tmp)) return 0;
    const count = (await readdir(tmp)).length;
    await rm(tmp, { recursive: true, force: true });
    return count;
  }

  /**
   * fsync of the spool directory, so that files created before the call survive a crash. Group sync: callers
   * arriving before a sync has started share it; a caller arriving while one runs gets the next one.
   */
  syncDirectory(): Promise<void> {
    if (this.#dirSyncQueued) return this.#dirSyncQueued;
    const queued = this.#dirSyncChain.then(async () => {
      this.#dirSyncQueued = undefined;
      this.#dirFd ??= fsOpen(this.dir, 'r', 0);
      await fsSync(await this.#dirFd);
    });
    this.#dirSyncQueued = queued;
    this.#dirSyncChain = queued.catch(() => undefined);
    return queued;
  }

  async close(): Promise<void> {
    const fd = this.#dirFd;
    this.#dirFd = undefined;
    if (fd) await fsClose(await fd).catch(() => undefined);
  }
}

/**
 * Streams a body to its file. `commit()` makes it durable: fsync(file), close, fsync(directory) for the new
 * name, the order POSIX needs for both to survive a crash.
 */
export class SpoolWriter extends Writable {
  bytesWritten = 0;
  #closed = false;
  #kept: Buffer[] | undefined;

  constructor(
    private readonly fd: number,
    private readonly filePath: string,
    private readonly syncDirectory: () => Promise<void>,
    private readonly keepBytes: number,
  ) {
    super({ highWaterMark: 256 * 1024 });
    this.#kept = keepBytes > 0 ? [] : undefined;
  }

  #keep(chunks: Buffer[]): void {
    if (!this.#kept) return;
    if (this.bytesWritten > this.keepBytes) this.#kept = undefined;
    else this.#kept.push(...chunks);
  }

  /** Writes all of `buffer` (regular files rarely write short, but may). */
  #writeAll(buffer: Buffer, callback: (error?: Error | null) => void): void {
    write(this.fd, buffer, 0, buffer.length, null, (error, written) => {
      if (error) return callback(error);
      this.bytesWritten += written;
      if (written < buffer.length) return this.#writeAll(buffer.subarray(written), callback);
      callback();
    });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#writeAll(chunk, (error) => {
      if (!error) this.#keep([chunk]);
      callback(error);
    });
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    const buffers = chunks.map((c) => c.chunk);
    const total = buffers.reduce((n, b) => n + b.length, 0);
    writev(this.fd, buffers, null, (error, written) => {
      if (error) return callback(error);
      this.bytesWritten += written;
      const done = (e?: Error | null) => {
        if (!e) this.#keep(buffers);
        callback(e);
      };
      if (written < total) return this.#writeAll(Buffer.concat(buffers).subarray(written), done);
      done();
    });
  }

  /** The whole body, when it was small enough to keep. */
  kept(): Buffer | undefined {
    return this.#kept ? Buffer.concat(this.#kept, this.bytesWritten) : undefined;
  }

  async commit(): Promise<void> {
    await fsSync(this.fd);
    await this.#close();
    await this.syncDirectory();
  }

  async abort(): Promise<void> {
    if (!this.destroyed) this.destroy();
    await this.#close().catch(() => undefined);
    await fsUnlink(this.filePath).catch(() => undefined);
  }

  async #close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await fsClose(this.fd);
  }
}
