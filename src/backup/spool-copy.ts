/**
 * The files of a backup: message bodies copied from the live spool, the private files (node-id, secret.key),
 * fsync of each, and the list of what was written.
 *
 * Inputs: the live spool directory and the messages whose bodies the backup needs (chosen from the database
 *   snapshot, backup/database-copy.ts). Outputs: `spool/<id>.eml` in the target, 0600, on stable storage.
 *   Each file's SHA-256 is computed from the bytes as they are written (one read of the source, no second
 *   read of the copy) and kept in a Checksums list for the manifest.
 * Failure modes: a body absent from the spool is reported to the caller (it decides whether that is a loss);
 *   any other I/O error is thrown. A body whose length differs from its queue row is a warning (damage).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, rm, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { WaitingMessage } from '../queue/queue.js';
import { bodyFileName } from '../queue/spool.js';

/** Copies the bodies of queue rows from the live spool into the backup's spool, once each. */
export class BodyCopier {
  /** id → bytes, of the bodies in the backup. */
  readonly copied = new Map<string, number>();
  readonly warnings: string[] = [];

  constructor(
    readonly from: string,
    private readonly to: string,
    /** The checksums of the backup, by path relative to the backup directory. */
    private readonly checksums: Checksums,
    /** `to` relative to the backup directory, e.g. `spool`. */
    private readonly toInBackup: string,
  ) {}

  /** Copies the bodies of `messages` not copied yet; returns the messages whose body is not in the spool. */
  async copyFor(messages: WaitingMessage[]): Promise<WaitingMessage[]> {
    const missing: WaitingMessage[] = [];
    for (const message of messages) {
      if (this.copied.has(message.id)) continue;
      const destination = join(this.to, bodyFileName(message.id));
      let copied: CopiedFile | null;
      try {
        copied = await copyHashed(join(this.from, bodyFileName(message.id)), destination);
      } catch (error) {
        await rm(destination, { force: true });
        throw error;
      }
      if (copied === null) {
        missing.push(message);
        continue;
      }
      const bytes = copied.bytes;
      this.checksums.set(join(this.toInBackup, bodyFileName(message.id)), copied.sha256);
      // A body is complete before its row is committed and never changes after: a difference is damage.
      if (bytes !== message.size) this.warnings.push(`the body of message ${message.id} has ${bytes} bytes, its queue row says ${message.size}: it may be damaged`);
      this.copied.set(message.id, bytes);
    }
    return missing;
  }

  /** Removes copied bodies whose messages are finished in a newer snapshot. */
  async keepOnly(ids: Set<string>): Promise<void> {
    for (const id of [...this.copied.keys()]) {
      if (ids.has(id)) continue;
      await rm(join(this.to, bodyFileName(id)), { force: true });
      this.copied.delete(id);
      this.checksums.delete(join(this.toInBackup, bodyFileName(id)));
    }
  }
}

/** SHA-256 (hex) of each file of a backup, by its path relative to the backup directory. */
export type Checksums = Map<string, string>;

export interface CopiedFile {
  bytes: number;
  /** SHA-256 of the bytes written, hex. */
  sha256: string;
}

/**
 * Copies `from` to `to` (new, 0600, fsynced) in one pass, hashing the bytes on their way to the copy. Null
 * when `from` does not exist; `to` is then not created. Any other error is thrown, `to` possibly half written.
 */
export async function copyHashed(from: string, to: string): Promise<CopiedFile | null> {
  let source;
  try {
    source = await open(from, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  let target;
  try {
    target = await open(to, 'wx', 0o600);
  } catch (error) {
    await source.close();
    throw error;
  }
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const chunk of source.createReadStream() as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
      for (let at = 0; at < chunk.length; ) at += (await target.write(chunk, at, chunk.length - at)).bytesWritten;
    }
    await target.chmod(0o600);
    await target.sync();
  } finally {
    await target.close();
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** SHA-256 (hex) of a file, read as a stream. */
export async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/** Copies a private file (0600, fsynced); the target must not exist. Returns its checksum. */
export async function copyPrivate(from: string, to: string): Promise<string> {
  const copied = await copyHashed(from, to);
  if (copied === null) throw Object.assign(new Error(`ENOENT: no such file or directory, open '${from}'`), { code: 'ENOENT' });
  return copied.sha256;
}

/** fsync of a file or a directory (a directory's sync makes the names of new files in it durable). */
export async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Every file under `root`, relative to it, with its size, in name order. */
export async function listFiles(root: string, dir = root): Promise<Array<{ path: string; bytes: number }>> {
  const files: Array<{ path: string; bytes: number }> = [];
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(root, path)));
    else files.push({ path: relative(root, path), bytes: (await stat(path)).size });
  }
  return files;
}

/**
 * Every file under `root` with its size and checksum, as recorded while it was written; a file written
 * without one (none today) is read once to get it.
 */
export async function listFilesWithChecksums(root: string, checksums: Checksums): Promise<Array<{ path: string; bytes: number; sha256: string }>> {
  const files = await listFiles(root);
  return Promise.all(files.map(async (file) => ({ ...file, sha256: checksums.get(file.path) ?? (await sha256Of(join(root, file.path))) })));
}
