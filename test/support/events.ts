/**
 * Waiting for what happens, not for time to pass: a condition checked at once and then again each time
 * the thing under test signals that something changed (a message recorded, a log line written, a queue
 * pass finished). The deadline only turns a missing event into a clear failure; nothing waits for it.
 *
 * Test infrastructure only.
 */
import { watch } from 'node:fs';

/** Registers `listener` for a signal and returns the function that removes it. */
export type Subscribe = (listener: () => void) => () => void;

/** How long a wait may take before it fails with its description: generous, since the CPU may be shared. */
export const EVENT_DEADLINE_MS = 30_000;

/**
 * Resolves with the first value of `check` that is not undefined or false, evaluated now and again after
 * every signal of `subscribe`. Checks never overlap: signals during a check lead to exactly one more.
 * A check that throws counts as "not yet" (the error is reported if the deadline passes).
 */
export function until<T>(subscribe: Subscribe, check: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = EVENT_DEADLINE_MS): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    let running = false;
    let again = false;
    let lastError: unknown;
    const finish = (outcome: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      unsubscribe();
      outcome();
    };
    const run = async (): Promise<void> => {
      if (done) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          try {
            const value = await check();
            if (value !== undefined && value !== false) return finish(() => resolve(value as T));
          } catch (error) {
            lastError = error;
          }
        } while (again && !done);
      } finally {
        running = false;
      }
    };
    const timer = setTimeout(
      () => finish(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`))),
      timeoutMs,
    );
    const unsubscribe = subscribe(() => void run());
    void run();
  });
}

/** A signal anyone can raise, for the support servers and for tests' own counters. */
export class Signal {
  readonly #listeners = new Set<() => void>();

  readonly subscribe: Subscribe = (listener) => {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  };

  raise(): void {
    for (const listener of [...this.#listeners]) listener();
  }
}

/** Signals each change of the entries of `directory` (inotify through fs.watch: a file created or removed). */
export function directoryChanges(directory: string): Subscribe {
  return (listener) => {
    const watcher = watch(directory, () => listener());
    watcher.on('error', () => listener());
    return () => watcher.close();
  };
}

/** Both signals: a check that depends on two sources of change. */
export function either(...subscribes: Subscribe[]): Subscribe {
  return (listener) => {
    const offs = subscribes.map((subscribe) => subscribe(listener));
    return () => {
      for (const off of offs) off();
    };
  };
}

/** One parsed JSON log line of Postern (pino: `level`, `msg` and the line's fields). */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/** A log message to wait for: the exact `msg`, a pattern for it, or a test of the whole line. */
export type LogMatch = string | RegExp | ((line: LogLine) => boolean);

export function matchesLog(match: LogMatch, line: LogLine): boolean {
  if (typeof match === 'function') return match(line);
  const msg = typeof line.msg === 'string' ? line.msg : '';
  return typeof match === 'string' ? msg === match : match.test(msg);
}

/**
 * Postern's log lines as they are written, for waiting on a line. Lines are numbered from 0; `mark()` is
 * the number the next line will get, so "a line written after this point" is `waitFor(match, { from: mark })`
 * with the mark taken before the action that causes it.
 */
export class LogLines {
  readonly lines: LogLine[] = [];
  readonly #signal = new Signal();
  #rest = '';

  /** `onLine` sees each parsed line before anyone waiting is told of it (counters kept beside these). */
  constructor(private readonly onLine?: (line: LogLine) => void) {}

  /** Feeds raw output; complete JSON lines are parsed and kept (other output is ignored). */
  write(chunk: string): void {
    this.#rest += chunk;
    const parts = this.#rest.split('\n');
    this.#rest = parts.pop() ?? '';
    let added = false;
    for (const part of parts) {
      if (!part.startsWith('{')) continue;
      try {
        const line = JSON.parse(part) as LogLine;
        this.lines.push(line);
        this.onLine?.(line);
        added = true;
      } catch {
        // not a log line
      }
    }
    if (added) this.#signal.raise();
  }

  readonly subscribe: Subscribe = (listener) => this.#signal.subscribe(listener);

  mark(): number {
    return this.lines.length;
  }

  /** The first line from `from` on (default: the first line ever) that matches, once it has been written. */
  waitFor(match: LogMatch, options: { from?: number; timeoutMs?: number } = {}): Promise<LogLine> {
    const from = options.from ?? 0;
    let next = from;
    return until(
      this.subscribe,
      () => {
        for (; next < this.lines.length; next++) if (matchesLog(match, this.lines[next]!)) return this.lines[next]!;
        return undefined;
      },
      `the log line ${String(match)}${from > 0 ? ` after line ${from}` : ''}`,
      options.timeoutMs,
    );
  }

  /** Resolves with `check`'s first value, checked now and after each new line that `when` accepts. */
  until<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, options: { when?: LogMatch; timeoutMs?: number } = {}): Promise<T> {
    const when = options.when;
    const subscribe: Subscribe = when
      ? (listener) => {
          let seen = this.lines.length;
          return this.subscribe(() => {
            const fresh = this.lines.slice(seen);
            seen = this.lines.length;
            if (fresh.some((line) => matchesLog(when, line))) listener();
          });
        }
      : this.subscribe;
    return until(subscribe, check, what, options.timeoutMs);
  }
}

/** The log lines the tests wait for, in one place: a change of wording in Postern is one change here. */
export const LOG = {
  /** Microsoft: the device authorization request succeeded (after the code was saved). */
  userCodeIssued: /: user code issued, waiting for sign-in$/,
  /** The device grant ended with tokens saved and the authorization marked completed. */
  authorized: /: authorization completed, Token Status is Active$/,
  /** The device grant ended with an error from the token endpoint (after the grant was marked Failed). */
  deviceAuthorizationFailed: /: device authorization failed$/,
  /** A device went away during DATA; its spool file has been removed. */
  disconnectedDuringData: 'device disconnected during DATA; nothing queued',
  /** Lines about one queued message (accepted, delivered, deferred, failed, held): they carry its id. */
  queueLine: (line: LogLine) => typeof line.queueId === 'string',
} as const;

/**
 * Waits until `check` returns a value (not undefined/false), polling every 50 ms; fails after timeoutMs.
 *
 * The one place that polls, and the last resort: for a state nothing signals, such as a port another
 * program (Postfix, Dovecot) opens. Where the code under test can tell, wait for its event instead
 * (`until` with a support server's signal, a log line, the queue manager's events in queue.ts).
 */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as T;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
