/**
 * The command line's conventions, for every command: `--help` prints the command's help and opens or creates
 * nothing (run in a fresh empty directory with no configuration, where the default data directory would be
 * ./data); `--version`; an unknown flag or an extra argument is a usage error (exit 64) that names it.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { runCli } from './support/cli.js';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

/** A fresh empty working directory and no POSTERN_* setting: anything opened would appear in it. */
const emptyDirectory = () => mkdtempSync(join(tmpdir(), 'postern-cli-conventions-'));

const COMMANDS: Array<{ args: string[]; usage: RegExp }> = [
  { args: ['start'], usage: /^Usage: postern start\n/ },
  { args: ['status'], usage: /^Usage: postern status \[--json\]\n/ },
  { args: ['reset-password'], usage: /^Usage: postern reset-password <user>\n/ },
  { args: ['reset-password', 'admin'], usage: /^Usage: postern reset-password <user>\n/ },
  { args: ['queue'], usage: /^Usage: postern queue \[list\] \[--all\]\n/ },
  { args: ['queue', 'list'], usage: /^Usage: postern queue \[list\] \[--all\]\n/ },
  { args: ['queue', 'retry', 'all'], usage: /^Usage: postern queue \[list\] \[--all\]\n/ },
  { args: ['queue', 'delete', 'some-id'], usage: /^Usage: postern queue \[list\] \[--all\]\n/ },
  { args: ['backup', '/tmp/somewhere'], usage: /^Usage: postern backup <directory>\n/ },
  { args: ['restore', '/tmp/somewhere'], usage: /^Usage: postern restore <backup-directory> \[--force\] \[--no-verify\]\n/ },
  { args: ['send', '--to', 'bob@example.test'], usage: /^Usage: postern send --to ADDR /m },
];

describe('--help', () => {
  const withShortFlag = new Set(['start', 'reset-password', 'send']);
  test.each(COMMANDS.flatMap(({ args, usage }) => [{ args: [...args, '--help'], usage }, ...(withShortFlag.has(args[0]!) && args.length === 1 ? [{ args: [...args, '-h'], usage }] : [])]))(
    'regression: postern $args prints its help, exit 0, and opens or creates nothing',
    async ({ args, usage }) => {
      const cwd = emptyDirectory();
      const result = await runCli(args, {}, 30_000, { cwd });
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(usage);
      expect(result.stdout).toContain('POSTERN_DATA_DIR');
      expect(readdirSync(cwd)).toEqual([]);
    },
  );

  test('--help reads no configuration: it works with settings that would stop the command', async () => {
    const cwd = emptyDirectory();
    const result = await runCli(['start', '--help'], { POSTERN_HTTP_PORT: 'not-a-port', POSTERN_DATA_DIR: join(cwd, 'data') }, 30_000, { cwd });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^Usage: postern start\n/);
    expect(readdirSync(cwd)).toEqual([]);
  });

  test.each([[['--help']], [['-h']], [['help']], [[]]])('postern %j lists the commands', async (args) => {
    const cwd = emptyDirectory();
    const result = await runCli(args, {}, 30_000, { cwd });
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    for (const command of ['start', 'status', 'reset-password', 'queue', 'backup', 'restore', 'send', 'help']) expect(result.stdout).toMatch(new RegExp(`^ {2}${command}\\b`, 'm'));
    expect(result.stdout).toContain('--version');
    expect(readdirSync(cwd)).toEqual([]);
  });

  test('postern help <command> is that command\'s help; an unknown one is a usage error', async () => {
    const send = await runCli(['help', 'send'], {}, 30_000, { cwd: emptyDirectory() });
    expect(send.code).toBe(0);
    expect(send.stdout).toMatch(/^Usage: postern send /);
    expect(send.stdout).toContain('--attach FILE');
    const unknown = await runCli(['help', 'frobnicate'], {}, 30_000, { cwd: emptyDirectory() });
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toMatch(/^postern: there is no command "frobnicate"\n\nUsage: postern <command>\n/);
  });
});

describe('--version', () => {
  test.each([[['--version']], [['-V']]])('postern %j prints the version from package.json', async (args) => {
    const cwd = emptyDirectory();
    const result = await runCli(args, {}, 30_000, { cwd });
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    expect(result.stdout).toBe(`postern ${version}\n`);
    expect(readdirSync(cwd)).toEqual([]);
  });
});

describe('usage errors: one line naming what is wrong, then the usage, exit 64', () => {
  test.each([
    { args: ['start', '--bogus'], line: 'start does not take "--bogus"', usage: 'Usage: postern start\n' },
    { args: ['start', 'now'], line: 'start does not take "now"', usage: 'Usage: postern start\n' },
    { args: ['status', '--json', '-x'], line: 'status does not take "-x"', usage: 'Usage: postern status [--json]\n' },
    { args: ['status', 'extra'], line: 'status does not take "extra"', usage: 'Usage: postern status [--json]\n' },
    { args: ['status', '--json=yes'], line: '--json does not take a value', usage: 'Usage: postern status [--json]\n' },
    { args: ['reset-password', '--bogus'], line: 'reset-password does not take "--bogus"', usage: 'Usage: postern reset-password <user>\n' },
    { args: ['reset-password', 'admin', '--force'], line: 'reset-password does not take "--force"', usage: 'Usage: postern reset-password <user>\n' },
    { args: ['reset-password', 'admin', 'bob'], line: 'reset-password takes one user name, not also "bob"', usage: 'Usage: postern reset-password <user>\n' },
    { args: ['reset-password'], line: 'reset-password needs a user name, e.g. postern reset-password admin', usage: 'Usage: postern reset-password <user>\n' },
    { args: ['queue', 'list', '--bogus'], line: 'queue list does not take "--bogus"', usage: 'Usage: postern queue [list] [--all]\n' },
    { args: ['queue', 'list', 'extra'], line: 'queue list does not take "extra"', usage: 'Usage: postern queue [list] [--all]\n' },
    { args: ['queue', 'retry', 'all', '--force'], line: 'queue retry does not take "--force"', usage: 'Usage: postern queue [list] [--all]\n' },
    { args: ['queue', 'delete', 'some-id', '--now'], line: 'queue delete does not take "--now"', usage: 'Usage: postern queue [list] [--all]\n' },
    { args: ['backup', '/tmp/somewhere', '--force'], line: 'backup does not take "--force"', usage: 'Usage: postern backup <directory>\n' },
    { args: ['send', '--to', 'bob@example.test', '--cc', 'carol@example.test'], line: 'send does not take "--cc"', usage: 'Usage: postern send ' },
    { args: ['send', '--to', 'bob@example.test', 'extra'], line: 'send does not take "extra"', usage: 'Usage: postern send ' },
    { args: ['send', '--to'], line: '--to needs a value', usage: 'Usage: postern send ' },
    { args: ['send', '--to', '--subject', 'Scan'], line: '--to needs a value', usage: 'Usage: postern send ' },
    { args: ['--bogus'], line: 'unknown option "--bogus"', usage: 'Usage: postern <command>\n' },
    { args: ['frobnicate'], line: 'unknown command "frobnicate"', usage: 'Usage: postern <command>\n' },
    { args: ['--version', 'now'], line: '--version takes no argument, not "now"', usage: 'Usage: postern <command>\n' },
  ])('postern $args', async ({ args, line, usage }) => {
    const cwd = emptyDirectory();
    const result = await runCli(args, {}, 30_000, { cwd });
    expect(result.code).toBe(64);
    expect(result.stdout).toBe('');
    expect(result.stderr.startsWith(`postern: ${line}\n\n${usage}`), result.stderr).toBe(true);
    expect(readdirSync(cwd)).toEqual([]);
  });
});
