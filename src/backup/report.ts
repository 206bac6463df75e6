/**
 * What `postern backup` prints when it is done: a few plain lines (where, what, how big, what is not in it),
 * made from the backup's report alone.
 */
import { ACTIVE_STATES } from '../queue/queue.js';
import { KEY_FILE_NAME } from '../store/secret-box.js';
import { DATABASE_FILE } from '../store/store.js';
import { MANIFEST_FILE, type BackupReport } from './backup.js';

/** A few plain lines for the command line: where, what, how big, what is not in it. */
export function formatBackupReport(report: BackupReport): string {
  const { manifest } = report;
  const counts = manifest.queue.counts;
  const waiting = ACTIVE_STATES.reduce((n, state) => n + counts[state], 0);
  const lines = [`Backup of ${manifest.dataDir} written to ${report.target} (${formatBytes(report.bytes)}, ${manifest.files.length + 1} files, listed in ${MANIFEST_FILE}).`];
  lines.push(
    manifest.database.dialect === 'sqlite'
      ? `Database: a consistent copy of ${DATABASE_FILE} (schema ${manifest.database.schemaVersion ?? 'none'}).`
      : `Database: PostgreSQL is not in this backup: back it up with pg_dump (run it just before postern backup); it holds the message bodies too (only older messages have theirs in this node's spool).`,
  );
  const { bodies } = manifest;
  const scope = manifest.queue.scope === 'this node' ? "This node's queue" : 'Queue';
  const parts = [`${bodies.copied} ${bodies.copied === 1 ? 'body' : 'bodies'} copied`];
  if (bodies.otherNodes > 0) parts.push(`${bodies.otherNodes} on other nodes (their bodies are there)`);
  if (bodies.inDatabase > 0) parts.push(`${bodies.inDatabase} in the database (pg_dump copies their bodies)`);
  if (bodies.missing.length > 0) parts.push(`${bodies.missing.length} missing (see the warnings)`);
  const finished = bodies.notNeeded > 0 ? ` ${bodies.notNeeded} finished (sent ${counts.sent}, bounced ${counts.bounced}): already delivered, not needed.` : '';
  lines.push(
    `${scope}: ${waiting} ${waiting === 1 ? 'message' : 'messages'} not finished ` +
      `(incoming ${counts.incoming}, active ${counts.active}, deferred ${counts.deferred}, held ${counts.held}): ${parts.join(', ')}.${finished}`,
  );
  lines.push(
    manifest.secretKey === 'included'
      ? `Key: ${KEY_FILE_NAME} is included; keep the backup as private as the data directory.`
      : 'Key: not in the backup, it comes from POSTERN_SECRET_KEY: keep that key separately, the backup cannot be read without it.',
  );
  lines.push('Not included: the POSTERN_* settings and the files they name (e.g. POSTERN_HTTPS_CERT); keep them with the backup.');
  return lines.join('\n') + '\n';
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
