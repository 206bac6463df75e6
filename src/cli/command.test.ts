import { describe, expect, test } from 'vitest';
import { asksForHelp, CommandFailed, parseCommandArgs, type Flags } from './command.js';

const TEXTS = { usage: 'Usage: postern send …\n', help: 'help\n' };
const FLAGS: Flags = { to: { type: 'string', multiple: true }, subject: { type: 'string' }, json: { type: 'boolean' } };

/** The usage error `args` give, as printed after "postern: ". */
function failure(args: string[]): string {
  try {
    parseCommandArgs('send', args, FLAGS, TEXTS);
  } catch (error) {
    expect(error).toBeInstanceOf(CommandFailed);
    expect((error as CommandFailed).exitCode).toBe(64);
    expect((error as CommandFailed).usage).toBe(TEXTS.usage);
    return (error as CommandFailed).message;
  }
  throw new Error(`${args.join(' ')} was accepted`);
}

describe('parseCommandArgs', () => {
  test('flags as given: repeated ones collected, inline values, positionals, and everything after --', () => {
    const parsed = parseCommandArgs('send', ['--to', 'a@x.test', '--to=b@x.test', '--subject', 'Scan', 'extra', '--json', '--', '--to'], FLAGS, TEXTS);
    expect(parsed.values).toEqual({ to: ['a@x.test', 'b@x.test'], subject: 'Scan', json: true });
    expect(parsed.positionals).toEqual(['extra', '--to']);
  });

  test('"-" is a value (standard input), not a flag', () => {
    expect(parseCommandArgs('send', ['--subject', '-'], FLAGS, TEXTS).values.subject).toBe('-');
  });

  test.each([
    [['--cc', 'x'], 'send does not take "--cc"'],
    [['-x'], 'send does not take "-x"'],
    [['--cc=x'], 'send does not take "--cc"'],
    [['--to'], '--to needs a value'],
    [['--to', '--subject', 'x'], '--to needs a value'],
    [['--json=yes'], '--json does not take a value'],
    [['--subject', 'a', '--subject', 'b'], '--subject can be given only once'],
    [['--bad\u001b[31m'], 'send does not take "--bad?[31m"'],
  ])('%j: %s', (args, message) => {
    expect(failure(args)).toBe(message);
  });
});

describe('asksForHelp', () => {
  test.each([
    [['--help'], true],
    [['queue', 'retry', '-h'], true],
    [['--to', 'a@x.test', '--help'], true],
    [['--', '--help'], false],
    [['help'], false],
    [[], false],
  ])('%j → %s', (args, expected) => {
    expect(asksForHelp(args)).toBe(expected);
  });
});
