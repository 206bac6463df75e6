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
import { CommandFailed, parseCommandArgs, printable } from './command.js';
import { RESTORE_TEXTS } from './usage.js';

export async function restoreCommand(args: string[]): Promise<void> {
  const needsDirectory = new CommandFailed('restore needs one backup directory', 64, RESTORE_TEXTS.usage);
  // The directory is checked first, as for backup: `restore --force` is told what restore needs.
  if (args.filter((arg) => !arg.startsWith('-')).length !== 1) throw needsDirectory;
  const { values, positionals } = parseCommandArgs('restore', args, { force: { type: 'boolean' }, 'no-verify': { type: 'boolean' } }, RESTORE_TEXTS);
  if (positionals.length !== 1) throw needsDirectory;
  const directories = positionals;
  const config = loadConfig();
  const { isBackupError } = await import('../backup/backup.js');
  const { formatRestoreReport, restoreDataDirectory } = await import('../backup/restore.js');
  try {
    const report = await restoreDataDirectory({
      backup: directories[0]!,
      dataDir: config.dataDir,
      databaseUrl: config.databaseUrl,
      secretKeySet: config.secretKey !== undefined,
      force: values.force === true,
      noVerify: values['no-verify'] === true,
    });
    process.stdout.write(formatRestoreReport(report));
  } catch (error) {
    if (isBackupError(error)) throw new CommandFailed(printable(error.message), 1);
    throw error;
  }
}
