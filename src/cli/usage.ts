/**
 * What the command line says about itself: the list of commands (`postern --help`) and, for each command, the
 * usage that goes with a usage error and the help that `--help` prints. Kept apart from the commands so
 * that printing help loads nothing else.
 */
import type { CommandTexts } from './command.js';

export const USAGE = `Usage: postern <command>

Commands:
  start                      Run the gateway (Remote UI and relay).
  status [--json]            Show each OAuth account's Token Status and Server Connection Status
                             (--json: as GET /api/v1/status answers, with the queue counts).
  reset-password <user>      Set a new random password for a Remote UI user and print it.
  queue [list] [--all] [--json]
                             List the messages not delivered yet, with a count by state
                             (--all: also the most recent sent and returned ones; --json: as
                             GET /api/v1/queue answers, --all as ?state=all).
  queue retry <id|all>       Retry Now: a deferred or held message (all: every one) is due at once;
                             a running gateway picks it up.
  queue delete <id>          Delete a waiting message without sending it (its sender is not told).
  backup <directory>         Back up the data directory (database, queued messages, key) into a new or
                             empty directory, while the gateway runs.
  restore <backup-directory> [--force] [--no-verify]
                             Verify a backup and put it back as the data directory (gateway stopped).
  send --to ADDR [--attach FILE …]
                             Queue a message (text, attachments) for a running gateway to send.
  help [<command>]           Show this list, or a command's help (also: postern <command> --help).

Options: --help, -h (this list); --version, -V (the version).
Configuration comes from the environment (POSTERN_DATA_DIR, POSTERN_DATABASE_URL, …); see the README.
`;

const ENVIRONMENT = 'Configuration comes from the environment (POSTERN_DATA_DIR, POSTERN_DATABASE_URL, …); see the README.\n';

const texts = (usage: string, description: string): CommandTexts => ({ usage, help: `${usage}\n${description}\n${ENVIRONMENT}` });

export const START_TEXTS = texts(
  `Usage: postern start
`,
  `Run the gateway: the Remote UI and the relay, until SIGINT or SIGTERM (the same as npm start).
At first start it creates the data directory and the administrator (POSTERN_ADMIN_PASSWORD).
`,
);

export const STATUS_TEXTS = texts(
  `Usage: postern status [--json]
`,
  `Show each OAuth account's Token Status and Server Connection Status, from the database.

  --json   Print what GET /api/v1/status answers, with the queue counts.
`,
);

export const RESET_PASSWORD_TEXTS = texts(
  `Usage: postern reset-password <user>
`,
  `Set a new random password for a Remote UI user, print it once, and end the user's sessions.
`,
);

export const QUEUE_TEXTS = texts(
  `Usage: postern queue [list] [--all]
       postern queue retry <id|all>
       postern queue delete <id>
`,
  `list (the default)   The messages not delivered yet, with a count by state.
  --all              Also the most recent sent and returned ones.
  --json             Print what GET /api/v1/queue answers (--all as ?state=all).
retry <id|all>       Retry Now: a deferred or held message (all: every one) is due at once;
                     a running gateway picks it up at its next queue scan.
delete <id>          Delete a waiting message without sending it (its sender is not told).
`,
);

export const BACKUP_TEXTS = texts(
  `Usage: postern backup <directory>
`,
  `Back up the data directory (database, queued messages, key) into a new or empty directory, while the
gateway runs. A PostgreSQL database is left to pg_dump.
`,
);

export const RESTORE_TEXTS = texts(
  `Usage: postern restore <backup-directory> [--force] [--no-verify]
`,
  `Put a backup made by postern backup back as the data directory, while the gateway is stopped. Every file is
checked against the SHA-256 in the backup's manifest first; a damaged, incomplete or unlisted file is refused
by name and nothing is written.

  --force       The data directory is not empty: move its contents aside to
                <data-dir>.before-restore-<time> (never deleted) and restore.
  --no-verify   Take a backup from an older Postern, whose manifest has no checksums, as it is.

Exit status: 0 restored, 1 not restored (damaged backup, a running gateway, a data directory not empty), 64 usage.
`,
);

const SEND_USAGE = `Usage: postern send --to ADDR [--to ADDR …] [--from ADDR] [--subject TEXT]
                   [--body TEXT | --body-file FILE] [--attach FILE …]
`;

export const SEND_TEXTS = texts(
  SEND_USAGE,
  `Queue a message for delivery, as a device would send it through the relay; a running gateway sends it.

  --to ADDR          A recipient; repeat it, or give a comma-separated list.
  --from ADDR        The sender (default: the sender address of the E-Mail Settings, when set).
  --subject TEXT     The subject.
  --body TEXT        The text of the message.
  --body-file FILE   The text of the message from a file ("-": from standard input).
  --attach FILE      Attach a file; repeat it for more.

Prints "queued as <id>". The message may be at most the Relay Settings' maximum message size.
Exit status: 0 queued, 1 not queued (a file cannot be read, the message is too big), 64 usage.
`,
);
