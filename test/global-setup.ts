/**
 * One temporary directory per test run: every test's data directory, PKI, spool and browser profile goes
 * under it (os.tmpdir() reads TMPDIR), and it is removed when the run ends, so runs leave nothing in /tmp.
 * POSTERN_KEEP_TEST_FILES=1 keeps it for inspection.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const root = mkdtempSync(join(tmpdir(), 'postern-test-'));
  // Postfix and Dovecot run as their own users and must reach their directories below: traverse, not list.
  chmodSync(root, 0o711);
  process.env.TMPDIR = root;
  return () => {
    if (process.env.POSTERN_KEEP_TEST_FILES === '1') {
      process.stdout.write(`test files kept in ${root}\n`);
      return;
    }
    rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  };
}
