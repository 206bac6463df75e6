/**
 * `postern restore <backup-directory> [--force] [--no-verify]`: a backup put back as the data directory
 * (src/backup/restore.ts does the work and says in what order).
 *
 * Inputs: the same POSTERN_* environment as the gateway (POSTERN_DATA_DIR, POSTERN_DATABASE_URL).
 * Outputs: a few lines on stdout when done; one line on stderr when not. Exit status 0, 1 (not done: a
 *   damaged or unverifiable backup, a running gateway, a data directory that is not empty), 64 (usage) or
 *   78 (configuration, from the caller).
 */
import { loadConfig } from '../config.js';

export const RESTORE_USAGE = `Usage: postern restore <backup-directory> [--force] [--no-verify]
`;

/** Control characters in a path named on the terminal become '?'. */
const printable = (text: string) => text.replace(/[\x00-\x1f\x7f-\x9f]/g, '?');

export async function restoreCommand(args: string[]): Promise<void> {
  const flags = new Set(['--force', '--no-verify']);
  const unknown = args.find((arg) => arg.startsWith('-') && !flags.has(arg));
  const directories = args.filter((arg) => !arg.startsWith('-'));
  if (unknown !== undefined || directories.length !== 1) {
    const why = unknown !== undefined ? `restore does not take "${printable(unknown)}"` : 'restore needs one backup directory';
    process.stderr.write(`postern: ${why}\n\n${RESTORE_USAGE}`);
    process.exitCode = 64;
    return;
  }
  const config = loadConfig();
  const { isBackupError } = await import('../backup/backup.js');
  const { formatRestoreReport, restoreDataDirectory } = await import('../backup/restore.js');
  try {
    const report = await restoreDataDirectory({
      backup: directories[0]!,
      dataDir: config.dataDir,
      databaseUrl: config.databaseUrl,
      secretKeySet: config.secretKey !== undefined,
      force: args.includes('--force'),
      noVerify: args.includes('--no-verify'),
    });
    process.stdout.write(formatRestoreReport(report));
  } catch (error) {
    if (!isBackupError(error)) throw error;
    process.stderr.write(`postern: ${printable(error.message)}\n`);
    process.exitCode = 1;
  }
}
