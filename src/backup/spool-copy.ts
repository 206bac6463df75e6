/**
 * The files of a backup: message bodies copied from the live spool, the private files (node-id, secret.key),
 * fsync of each, and the list of what was written.
 *
 * Inputs: the live spool directory and the messages whose bodies the backup needs (chosen from the database
 *   snapshot, backup/database-copy.ts). Outputs: `spool/<id>.eml` in the target, 0600, on stable storage.
 * Failure modes: a body absent from the spool is reported to the caller (it decides whether that is a loss);
 *   any other I/O error is thrown. A body whose length differs from its queue row is a warning (damage).
 */
import { constants } from 'node:fs';
import { chmod, copyFile, open, readdir, rm, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
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
  ) {}

  /** Copies the bodies of `messages` not copied yet; returns the messages whose body is not in the spool. */
  async copyFor(messages: WaitingMessage[]): Promise<WaitingMessage[]> {
    const missing: WaitingMessage[] = [];
    for (const message of messages) {
      if (this.copied.has(message.id)) continue;
      const destination = join(this.to, bodyFileName(message.id));
      try {
        await copyFile(join(this.from, bodyFileName(message.id)), destination, constants.COPYFILE_EXCL);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
          missing.push(message);
          continue;
        }
        throw error;
      }
      await chmod(destination, 0o600);
      await syncFile(destination);
      const bytes = (await stat(destination)).size;
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
    }
  }
}

/** Copies a private file (0600, fsynced); the target must not exist. */
export async function copyPrivate(from: string, to: string): Promise<void> {
  await copyFile(from, to, constants.COPYFILE_EXCL);
  await chmod(to, 0o600);
  await syncFile(to);
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
