/**
 * The conventions every `postern` command follows: `--help` / `-h` prints the command's help and does nothing
 * else; an unknown flag, a flag without its value and an extra argument are usage errors (exit 64, sysexits'
 * EX_USAGE) that name what was wrong; what cannot be done is one line on stderr and exit 1.
 *
 * Parsing is node:util's parseArgs. It runs without `strict` and the tokens are checked here instead, so
 * that each error can name the flag as it was typed and be worded as the rest of the command line is.
 */
import { parseArgs } from 'node:util';

/** What was asked cannot be done: one line on stderr (and the usage for exit status 64). */
export class CommandFailed extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 64 | 130,
    readonly usage?: string,
  ) {
    super(message);
    this.name = 'CommandFailed';
  }
}

/** Addresses, replies and arguments can come from anywhere: no control characters reach the terminal. */
export const printable = (text: string) => text.replace(/[\x00-\x1f\x7f-\x9f]/g, '?');

/** A command's texts: `usage` goes with every usage error, `help` (usage and what it does) with `--help`. */
export interface CommandTexts {
  usage: string;
  help: string;
}

export interface FlagSpec {
  type: 'boolean' | 'string';
  /** May be given more than once (the values are collected in order). */
  multiple?: boolean;
  short?: string;
}

export type Flags = Record<string, FlagSpec>;

export interface ParsedArgs {
  /** Booleans are true when given; strings hold the last value, or every value when `multiple`. */
  values: Record<string, boolean | string | string[] | undefined>;
  positionals: string[];
}

/** `--help` or `-h` before a `--`: the command prints its help and does nothing else. */
export function asksForHelp(args: readonly string[]): boolean {
  for (const arg of args) {
    if (arg === '--') return false;
    if (arg === '--help' || arg === '-h') return true;
  }
  return false;
}

/**
 * The flags and positional arguments of `command` (e.g. "queue list"), or a usage error (exit 64) that names
 * the first flag it does not take, a flag given without its value or with one it does not take, or a flag
 * given twice that can be given once.
 */
export function parseCommandArgs(command: string, args: readonly string[], flags: Flags, texts: CommandTexts): ParsedArgs {
  const usage = (message: string) => new CommandFailed(message, 64, texts.usage);
  const options = Object.fromEntries(
    Object.entries(flags).map(([name, spec]) => [name, { type: spec.type, ...(spec.short ? { short: spec.short } : {}) }]),
  ) as NonNullable<Parameters<typeof parseArgs>[0]>['options'];
  const { tokens } = parseArgs({ args: [...args], options, strict: false, allowPositionals: true, tokens: true });
  const values: ParsedArgs['values'] = {};
  const positionals: string[] = [];
  for (const token of tokens) {
    if (token.kind === 'positional') {
      positionals.push(token.value);
      continue;
    }
    if (token.kind !== 'option') continue;
    const spec = Object.hasOwn(flags, token.name) ? flags[token.name] : undefined;
    const raw = printable(token.rawName);
    if (!spec) throw usage(`${command} does not take "${raw}"`);
    if (spec.type === 'boolean') {
      if (token.inlineValue) throw usage(`${raw} does not take a value`);
      values[token.name] = true;
      continue;
    }
    // parseArgs takes the next argument as the value, whatever it is: `--to --from x` is a missing value.
    const value = token.value;
    if (value === undefined || (!token.inlineValue && value.length > 1 && value.startsWith('-'))) throw usage(`${raw} needs a value`);
    if (spec.multiple) values[token.name] = [...((values[token.name] as string[] | undefined) ?? []), value];
    else if (values[token.name] !== undefined) throw usage(`${raw} can be given only once`);
    else values[token.name] = value;
  }
  return { values, positionals };
}

/** No positional argument, or a usage error naming the first one. */
export function noPositionals(command: string, parsed: ParsedArgs, texts: CommandTexts): void {
  const [extra] = parsed.positionals;
  if (extra !== undefined) throw new CommandFailed(`${command} does not take "${printable(extra)}"`, 64, texts.usage);
}
