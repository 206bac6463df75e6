#!/usr/bin/env node
/**
 * `postern` command line: `start` (the gateway, same as `npm start`), `status` (Token Status and connection
 * of each account, from the database), `reset-password <user>` (recovery when the Remote UI password is
 * lost; prints a new random password once), `queue` (the Queue page for the gateway's host: `list`,
 * `retry <id|all>`, `delete <id>`), `backup <directory>` (a consistent copy of the data directory while the
 * gateway runs: src/backup/), and `send` (a message from a script into the queue: send.ts). Every command
 * takes `--help` (its help, and nothing is opened or created); `postern --version` prints the version; an
 * unknown flag or an extra argument is a usage error that names it (command.ts). `status --json` and
 * `queue list --json` print exactly what the API's GET /api/v1/status and GET /api/v1/queue answer
 * (src/api/shapes.ts builds both).
 *
 * Inputs: the same POSTERN_* environment as the gateway (same database, same data directory and spool).
 * Outputs: text on stdout; one line on stderr when something cannot be done. Exit status 0, 1 (not done:
 *   unknown user or message, a message in a state that does not allow it), 64 (usage, as sysexits' EX_USAGE),
 *   78 (configuration) or 130 (`send` interrupted; nothing queued).
 * Known limits: the command line cannot wake a running gateway. `queue retry` only makes the message due;
 *   the gateway's queue manager finds it at its next scan of the database (about once a second). `queue
 *   delete` removes the body only from this host's spool: on a multi-node PostgreSQL set-up, the node that
 *   accepted the message removes its copy when it next starts. `backup` leaves a PostgreSQL database to
 *   pg_dump and takes only this host's files.
 */
import { existsSync } from 'node:fs';
import { loadConfig } from '../config.js';
import { isPosternError } from '../errors.js';
import { OAuthAccounts, TOKEN_STATUS_LABELS, type TokenStatus } from '../oauth/accounts.js';
import { clockSkewWarningOf } from '../oauth/clock-skew.js';
import { CONNECTION_STATUS_LABELS, type ConnectionStatus } from '../oauth/connection-check.js';
import { PROVIDER_LABELS } from '../oauth/profiles.js';
import type { MessageQueue, QueuedMessage } from '../queue/queue.js';
import { generatePassword } from '../store/passwords.js';
import type { QueueState } from '../store/schema.js';
import { asksForHelp, CommandFailed, noPositionals, parseCommandArgs, printable, type CommandTexts } from './command.js';
import { withQueue, withStore } from './context.js';
import { BACKUP_TEXTS, QUEUE_TEXTS, RESET_PASSWORD_TEXTS, RESTORE_TEXTS, SEND_TEXTS, START_TEXTS, STATUS_TEXTS, USAGE } from './usage.js';
import { packageInfo } from '../package-info.js';

const queueUsage = (message: string) => new CommandFailed(message, 64, QUEUE_TEXTS.usage);

/** JSON as the API answers it (src/api/shapes.ts builds both), indented for a reader. */
const printJson = (body: unknown) => process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);

async function status(args: string[]): Promise<void> {
  const parsed = parseCommandArgs('status', args, { json: { type: 'boolean' } }, STATUS_TEXTS);
  noPositionals('status', parsed, STATUS_TEXTS);
  if (parsed.values.json) return statusJson();
  await withStore(async (store, config) => {
    const rows = await new OAuthAccounts(store).list();
    if (config.outboundProxy) {
      // The origin only (scheme://host:port): the proxy's credentials are never printed.
      process.stdout.write(`Outbound proxy for OAuth HTTP requests: ${config.outboundProxy.origin} (from ${config.outboundProxy.setting})\n`);
    }
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
      const clockWarning = row.enabled ? clockSkewWarningOf(row) : null;
      if (clockWarning) process.stdout.write(`  Warning: ${clockWarning}\n`);
    }
  });
}

/**
 * `status --json`: the body of GET /api/v1/status, built by the same function from the same owners (the
 * OAuth service's status of each account, the queue's counts), on this host's store and spool.
 */
async function statusJson(): Promise<void> {
  const [{ buildStatus }, { createOAuthService }, { OAuthHttp }, { DevicePoller }, { TrustStore }, { CaCertificates }, { AuditLog }, { createLogger }] =
    await Promise.all([
      import('../api/shapes.js'),
      import('../oauth/service.js'),
      import('../oauth/http.js'),
      import('../oauth/device-poller.js'),
      import('../tls/trust.js'),
      import('../store/ca-certificates.js'),
      import('../store/audit.js'),
      import('../log.js'),
    ]);
  await withQueue(async (queue, store) => {
    // Only status() is used: nothing here makes a request, polls or writes.
    const log = createLogger('silent');
    const accounts = new OAuthAccounts(store);
    const audit = new AuditLog(store);
    const http = new OAuthHttp(new TrustStore(new CaCertificates(store)));
    const poller = new DevicePoller({ accounts, http, audit, log, autoSchedule: false });
    const oauth = createOAuthService({ accounts, http, poller, audit, log });
    try {
      printJson(await buildStatus({ accounts, oauth, queue }));
    } finally {
      await http.close();
    }
  });
}

async function resetPassword(args: string[]): Promise<void> {
  const { positionals } = parseCommandArgs('reset-password', args, {}, RESET_PASSWORD_TEXTS);
  const [username, extra] = positionals;
  if (!username) throw new CommandFailed('reset-password needs a user name, e.g. postern reset-password admin', 64, RESET_PASSWORD_TEXTS.usage);
  if (extra !== undefined) throw new CommandFailed(`reset-password takes one user name, not also "${printable(extra)}"`, 64, RESET_PASSWORD_TEXTS.usage);
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

// ---- queue ------------------------------------------------------------------------------------------

/** Who the delivery log names for Retry Now and Delete (the Remote UI names the signed-in user). */
const QUEUE_ACTOR = 'the command line';
/** At most this many waiting messages are listed (the count by state covers all of them). */
const LIST_LIMIT = 10_000;
/** `--all` adds this many of the most recently received finished messages. */
const RECENT_FINISHED = 100;
/** The states Retry Now and Delete apply to (MessageQueue.retryNow and .remove). */
const WAITING_STATES: readonly QueueState[] = ['incoming', 'deferred', 'held'];

const isoTime = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

function nextAttempt(message: QueuedMessage, now: number): string {
  if (message.state !== 'incoming' && message.state !== 'deferred') return '-';
  return message.nextAttemptAt <= now ? 'now' : isoTime(message.nextAttemptAt);
}

function lastReply(message: QueuedMessage): string {
  const parts = [message.lastReply, message.lastAdvice ? `advice: ${message.lastAdvice}` : null].filter((p): p is string => Boolean(p));
  return parts.length > 0 ? printable(parts.join('; ')) : '-';
}

/** One line per message in aligned columns; the last column (reply and advice) is not padded. */
function formatQueueTable(messages: QueuedMessage[], now: number): string {
  const header = ['ID', 'STATE', 'RECEIVED', 'SIZE', 'ATTEMPTS', 'NEXT ATTEMPT', 'FROM', 'TO', 'LAST REPLY'];
  const rows = messages.map((m) => [
    m.id,
    m.state,
    isoTime(m.receivedAt),
    String(m.size),
    String(m.attempts),
    nextAttempt(m, now),
    printable(m.reversePath || '<>'),
    printable(m.recipients.join(',')),
    lastReply(m),
  ]);
  const rightAligned = new Set([3, 4]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : rightAligned.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [header, ...rows].map(line).join('\n') + '\n';
}

function formatCounts(counts: Record<QueueState, number>): string {
  const waiting = counts.incoming + counts.active + counts.deferred + counts.held;
  return (
    `${waiting} not finished: incoming ${counts.incoming}, active ${counts.active}, deferred ${counts.deferred}, held ${counts.held}. ` +
    `Finished (kept for the Log page): sent ${counts.sent}, bounced ${counts.bounced}.\n`
  );
}

async function queueList(all: boolean, json: boolean): Promise<void> {
  if (json) {
    const { buildQueueList } = await import('../api/shapes.js');
    await withQueue(async (queue) => printJson(await buildQueueList(queue, { state: all ? 'all' : 'waiting' })));
    return;
  }
  const { ACTIVE_STATES } = await import('../queue/queue.js');
  await withQueue(async (queue) => {
    const waiting = await queue.list(ACTIVE_STATES, LIST_LIMIT);
    const finished = all ? await queue.list(['sent', 'bounced'], RECENT_FINISHED) : [];
    const counts = await queue.counts();
    const messages = [...waiting, ...finished].sort((a, b) => b.receivedAt - a.receivedAt);
    if (messages.length === 0) process.stdout.write(all ? 'The queue is empty and keeps no finished message.\n' : 'The queue is empty.\n');
    else process.stdout.write(formatQueueTable(messages, Date.now()));
    const total = ACTIVE_STATES.reduce((n, state) => n + counts[state], 0);
    if (waiting.length < total) process.stdout.write(`Showing the newest ${waiting.length} of ${total} messages not finished.\n`);
    process.stdout.write(formatCounts(counts));
  });
}

/** The message, or a one-line failure: unknown id, or a state that `action` does not apply to. */
async function waitingMessage(queue: MessageQueue, id: string, action: string): Promise<QueuedMessage> {
  const message = await queue.get(id);
  if (!message) throw new CommandFailed(`there is no message ${printable(id)} in the queue`, 1);
  if (!WAITING_STATES.includes(message.state)) {
    const why = message.state === 'active' ? 'it is being sent right now' : `it is already ${message.state}`;
    throw new CommandFailed(`message ${id} cannot be ${action}: ${why} (only incoming, deferred and held messages can)`, 1);
  }
  return message;
}

const pickedUp = (them: 'it' | 'them') => `A running gateway picks ${them} up at its next queue scan (about once a second); a stopped one when it starts.\n`;

async function queueRetry(target: string): Promise<void> {
  await withQueue(async (queue, store) => {
    const { AuditLog } = await import('../store/audit.js');
    const audit = new AuditLog(store);
    if (target === 'all') {
      const { retried, held } = await queue.retryAllNow(QUEUE_ACTOR);
      if (retried === 0) {
        process.stdout.write('No message is deferred or held; there is nothing to retry.\n');
        return;
      }
      await audit.record(null, 'queue.retry', `all: ${retried} message${retried === 1 ? '' : 's'} (command line)`);
      process.stdout.write(`${retried} message${retried === 1 ? ' is' : 's are'} due now (Retry Now).\n${pickedUp(retried === 1 ? 'it' : 'them')}`);
      if (held > 0) process.stdout.write('Held messages are held again if the sending account\'s Token Status is still not Active.\n');
      return;
    }
    const message = await waitingMessage(queue, target, 'retried');
    if (!(await queue.retryNow(message.id, QUEUE_ACTOR))) {
      throw new CommandFailed(`message ${message.id} cannot be retried: it is no longer waiting (it is being sent, or was sent or deleted)`, 1);
    }
    await audit.record(null, 'queue.retry', `${message.id} (command line)`);
    process.stdout.write(`Message ${message.id} (${message.state}) is due now (Retry Now).\n${pickedUp('it')}`);
    if (message.state === 'held') process.stdout.write('It is held again if the sending account\'s Token Status is still not Active.\n');
  });
}

async function queueDelete(id: string): Promise<void> {
  await withQueue(async (queue, store) => {
    const message = await waitingMessage(queue, id, 'deleted');
    const bodyFile = queue.spool.path(message.id);
    const onThisSpool = existsSync(bodyFile);
    const removed = await queue.remove(message.id, QUEUE_ACTOR);
    if (!removed) throw new CommandFailed(`message ${message.id} cannot be deleted: it is no longer waiting (it is being sent, or was sent or deleted)`, 1);
    const { AuditLog } = await import('../store/audit.js');
    const recipients = removed.recipients.join(', ');
    await new AuditLog(store).record(null, 'queue.deleted', `${removed.id} from ${removed.reversePath || '<>'} to ${recipients} (command line)`);
    process.stdout.write(`Deleted message ${removed.id} from ${printable(removed.reversePath || '<>')} to ${printable(recipients)} without sending it; its sender is not told.\n`);
    process.stdout.write(
      removed.bodyInDatabase
        ? 'Its body was removed from the database.\n'
        : onThisSpool
        ? `Its body ${bodyFile} was removed.\n`
        : `Its body is not in this host's spool (${queue.spool.dir}); the gateway node that accepted it removes it when it next starts.\n`,
    );
  });
}

/** One message id (or "all" for retry) and no flag, or the queue usage. */
function messageTarget(subcommand: 'retry' | 'delete', rest: string[]): string {
  const { positionals } = parseCommandArgs(`queue ${subcommand}`, rest, {}, QUEUE_TEXTS);
  if (positionals.length !== 1) throw queueUsage(subcommand === 'retry' ? 'queue retry needs one message id, or "all"' : 'queue delete needs one message id');
  return positionals[0]!.toLowerCase();
}

async function queueCommand(args: string[]): Promise<void> {
  const [subcommand = 'list', ...rest] = args[0]?.startsWith('-') ? ['list', ...args] : args;
  switch (subcommand) {
    case 'list': {
      const parsed = parseCommandArgs('queue list', rest, { all: { type: 'boolean' }, json: { type: 'boolean' } }, QUEUE_TEXTS);
      noPositionals('queue list', parsed, QUEUE_TEXTS);
      return await queueList(parsed.values.all === true, parsed.values.json === true);
    }
    case 'retry':
      return await queueRetry(messageTarget('retry', rest));
    case 'delete':
      return await queueDelete(messageTarget('delete', rest));
    default:
      throw queueUsage(`unknown queue command "${printable(subcommand)}"`);
  }
}

// ---- backup -----------------------------------------------------------------------------------------

async function backupCommand(args: string[]): Promise<void> {
  const needsDirectory = new CommandFailed('backup needs one directory, new or empty', 64, BACKUP_TEXTS.usage);
  // The directory is checked first: `backup --force` is told what backup needs, a flag after it is named.
  if (args.filter((arg) => !arg.startsWith('-')).length !== 1) throw needsDirectory;
  const { positionals } = parseCommandArgs('backup', args, {}, BACKUP_TEXTS);
  if (positionals.length !== 1) throw needsDirectory;
  const config = loadConfig();
  const { isBackupError, backupDataDirectory, formatBackupReport } = await import('../backup/backup.js');
  try {
    const report = await backupDataDirectory({ dataDir: config.dataDir, databaseUrl: config.databaseUrl, secretKey: config.secretKey, target: positionals[0]! });
    process.stdout.write(formatBackupReport(report));
    for (const warning of report.warnings) process.stderr.write(`postern: warning: ${printable(warning)}\n`);
  } catch (error) {
    if (isBackupError(error)) throw new CommandFailed(printable(error.message), 1);
    throw error;
  }
}

// ---- dispatch ---------------------------------------------------------------------------------------

interface Command {
  /** Printed for `--help` / `-h` before anything is opened; a command without it handles `--help` itself. */
  texts?: CommandTexts;
  run(args: string[]): Promise<void>;
}

/** One line per command; each loads what it needs only when it runs. */
const COMMANDS: Record<string, Command> = {
  start: { texts: START_TEXTS, run: startCommand },
  status: { texts: STATUS_TEXTS, run: status },
  'reset-password': { texts: RESET_PASSWORD_TEXTS, run: resetPassword },
  queue: { texts: QUEUE_TEXTS, run: queueCommand },
  backup: { texts: BACKUP_TEXTS, run: backupCommand },
  restore: { texts: RESTORE_TEXTS, run: async (args) => (await import('./restore.js')).restoreCommand(args) },
  send: { texts: SEND_TEXTS, run: async (args) => (await import('./send.js')).sendCommand(args, { withQueue }) },
};

async function startCommand(args: string[]): Promise<void> {
  noPositionals('start', parseCommandArgs('start', args, {}, START_TEXTS), START_TEXTS);
  await import('../main.js');
}

/** `postern <version>`, from Postern's package.json. */
function version(): string {
  return `postern ${packageInfo().version}\n`;
}

/** `postern help [<command>]`: the list of commands, or one command's help. */
function help(args: string[]): void {
  const [name, extra] = args;
  if (name === undefined) return void process.stdout.write(USAGE);
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!command?.texts || extra !== undefined) throw new CommandFailed(command ? `help takes one command, not also "${printable(extra ?? '')}"` : `there is no command "${printable(name)}"`, 64, USAGE);
  process.stdout.write(command.texts.help);
}

async function main(argv: string[]): Promise<void> {
  const [name, ...args] = argv;
  try {
    if (name === undefined || name === '--help' || name === '-h') {
      if (args.length > 0) throw new CommandFailed(`${name} takes no argument, not "${printable(args[0]!)}"`, 64, USAGE);
      process.stdout.write(USAGE);
      return;
    }
    if (name === 'help') return help(args);
    if (name === '--version' || name === '-V') {
      if (args.length > 0) throw new CommandFailed(`${name} takes no argument, not "${printable(args[0]!)}"`, 64, USAGE);
      process.stdout.write(version());
      return;
    }
    const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (!command) throw new CommandFailed(name.startsWith('-') ? `unknown option "${printable(name)}"` : `unknown command "${printable(name)}"`, 64, USAGE);
    if (command.texts && asksForHelp(args)) {
      process.stdout.write(command.texts.help);
      return;
    }
    await command.run(args);
  } catch (error) {
    if (error instanceof CommandFailed) {
      process.stderr.write(`postern: ${error.message}\n${error.usage ? `\n${error.usage}` : ''}`);
      process.exitCode = error.exitCode;
      return;
    }
    if (isPosternError(error)) {
      process.stderr.write(`postern: ${error.message}\n`);
      process.exit(78);
    }
    throw error;
  }
}

void main(process.argv.slice(2));
