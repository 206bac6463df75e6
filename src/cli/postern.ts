#!/usr/bin/env node
/**
 * `postern` command line: `start` (the gateway, same as `npm start`), `status` (Token Status and connection
 * of each account, from the database), and `reset-password <user>` (recovery when the Remote UI password is
 * lost; prints a new random password once). Reads the same POSTERN_* environment as the gateway.
 */
import { loadConfig } from '../config.js';
import { isPosternError } from '../errors.js';
import { TOKEN_STATUS_LABELS, type TokenStatus } from '../oauth/accounts.js';
import { CONNECTION_STATUS_LABELS, type ConnectionStatus } from '../oauth/connection-check.js';
import { PROVIDER_LABELS } from '../oauth/profiles.js';
import { generatePassword } from '../store/passwords.js';
import { openStore } from '../store/store.js';

const USAGE = `Usage: postern <command>

Commands:
  start                      Run the gateway (Remote UI and relay).
  status                     Show each OAuth account's Token Status and Server Connection Status.
  reset-password <user>      Set a new random password for a Remote UI user and print it.

Configuration comes from the environment (POSTERN_DATA_DIR, POSTERN_DATABASE_URL, …); see the README.
`;

async function withStore<T>(fn: (store: Awaited<ReturnType<typeof openStore>>) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const store = await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl, secretKey: config.secretKey });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

async function status(): Promise<void> {
  await withStore(async (store) => {
    const rows = await store.db.selectFrom('oauth_accounts').selectAll().orderBy('id').execute();
    if (rows.length === 0) process.stdout.write('No OAuth account is configured yet.\n');
    for (const row of rows) {
      const label = PROVIDER_LABELS[row.provider];
      const token = TOKEN_STATUS_LABELS[row.token_status as TokenStatus] ?? row.token_status;
      const connection = row.connection_status ? CONNECTION_STATUS_LABELS[row.connection_status as ConnectionStatus] : 'Not checked';
      process.stdout.write(`${label}: ${row.enabled ? 'in use' : 'not in use'}\n`);
      process.stdout.write(`  Server Connection Status: ${connection}${row.connection_detail ? ` (${row.connection_detail})` : ''}\n`);
      process.stdout.write(`  Token Status: ${token}${row.mailbox ? ` (${row.mailbox})` : ''}\n`);
      if (row.token_error) process.stdout.write(`  Error: ${row.token_error}\n`);
      if (row.token_advice) process.stdout.write(`  Advice: ${row.token_advice}\n`);
      if (row.access_token_expires_at) process.stdout.write(`  Access token expires: ${new Date(row.access_token_expires_at).toISOString()}\n`);
    }
  });
}

async function resetPassword(username: string | undefined): Promise<void> {
  if (!username) {
    process.stderr.write('postern: reset-password needs a user name, e.g. postern reset-password admin\n');
    process.exit(64);
  }
  await withStore(async (store) => {
    const { Users } = await import('../store/users.js');
    const users = new Users(store);
    const user = (await users.list()).find((u) => u.username === username);
    if (!user) {
      process.stderr.write(`postern: there is no user named ${username}\n`);
      process.exit(1);
    }
    const password = generatePassword();
    await users.setPassword(user.id, password);
    const { AuditLog } = await import('../store/audit.js');
    await new AuditLog(store).record(null, 'user.password_reset', `${username} (command line)`);
    process.stdout.write(`New password for ${username}: ${password}\n`);
  });
}

async function main(argv: string[]): Promise<void> {
  const [command, ...args] = argv;
  try {
    switch (command) {
      case 'start':
        await import('../main.js');
        return;
      case 'status':
        return await status();
      case 'reset-password':
        return await resetPassword(args[0]);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return;
      default:
        process.stderr.write(`postern: unknown command "${command}"\n\n${USAGE}`);
        process.exit(64);
    }
  } catch (error) {
    if (isPosternError(error)) {
      process.stderr.write(`postern: ${error.message}\n`);
      process.exit(78);
    }
    throw error;
  }
}

void main(process.argv.slice(2));
