/**
 * The data directory, checked and created before anything is written to it. Node's recursive mkdir loops
 * for ever where a path cannot be created but reports ENOENT each time (under /proc, for one), which made a
 * start-up with such a POSTERN_DATA_DIR hang instead of failing. Here each missing level is created on its
 * own, so every failure is one error that names the directory and the reason.
 */
import { accessSync, constants, mkdirSync, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ErrorCodes, PosternError } from '../errors.js';

function statOf(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw unusable(path, error);
  }
}

function reasonOf(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'the file system is read-only';
    case 'ENOTDIR':
      return 'a part of the path is a file, not a directory';
    case 'ENOSPC':
      return 'the disk is full';
    case 'ENOENT':
      return 'it cannot be created there';
    default:
      return error instanceof Error ? error.message : String(error);
  }
}

function unusable(path: string, cause: unknown, reason = reasonOf(cause)): PosternError {
  return new PosternError(ErrorCodes.STORE_DATA_DIR_UNUSABLE, `POSTERN_DATA_DIR ${path} cannot be used: ${reason}.`, { cause });
}

/** Makes sure `dir` is a directory Postern can write to, creating it (owner-only) where it is missing. */
export function ensureDataDirectory(dir: string): void {
  const target = resolve(dir);
  const missing: string[] = [];
  let existing = target;
  let stats = statOf(existing);
  while (!stats) {
    missing.unshift(existing);
    const parent = dirname(existing);
    if (parent === existing) break;
    existing = parent;
    stats = statOf(existing);
  }
  if (stats && !stats.isDirectory()) {
    throw unusable(target, undefined, existing === target ? 'it is a file, not a directory' : `${existing} is a file, not a directory`);
  }
  for (const path of missing) {
    try {
      mkdirSync(path, { mode: 0o700 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw unusable(target, error);
    }
  }
  try {
    accessSync(target, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (error) {
    throw unusable(target, error);
  }
}
