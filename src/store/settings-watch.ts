/**
 * Settings changed by another instance on the same PostgreSQL database, noticed within a second or two.
 *
 * Purpose: parts of Postern keep settings in memory (the relay's Relay Settings and Allowed Networks, a
 *   device's Allowed Sender Addresses, the queue's route); a change saved through one instance's Remote UI
 *   or API must be in force on every instance soon, not at their next periodic re-read.
 * How: a trigger (migration 010) on the settings tables bumps the one row of `settings_version` and sends
 *   `NOTIFY postern_settings` in the transaction that changed them. Each instance LISTENs (the wake-up, a
 *   few milliseconds) and also polls the version every `pollMs` (the fallback when the LISTEN connection is
 *   down; it is opened again at the next poll). Either way the listeners run once per change seen.
 * SQLite: one process per database file; nothing to watch.
 */
import type { Logger } from '../log.js';
import type { Store } from './store.js';

export const SETTINGS_CHANNEL = 'postern_settings';

export class SettingsWatch {
  readonly #listeners: Array<(table: string | undefined) => void | Promise<void>> = [];
  #version: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #listening: Promise<{ close(): Promise<void> } | undefined> | undefined;
  #checking: Promise<void> | undefined;
  #stopped = true;

  constructor(
    private readonly store: Pick<Store, 'db' | 'dialect' | 'listen'>,
    private readonly options: { log: Logger; pollMs?: number },
  ) {}

  /** Called once for each change another instance (or this one) made; `table` when a notification named it. */
  onChange(listener: (table: string | undefined) => void | Promise<void>): void {
    this.#listeners.push(listener);
  }

  async start(): Promise<void> {
    if (this.store.dialect !== 'postgres') return;
    this.#stopped = false;
    this.#version = await this.#read();
    this.#listen();
    this.#timer = setInterval(() => {
      if (!this.#listening) this.#listen();
      void this.#check(undefined);
    }, this.options.pollMs ?? 1000);
    this.#timer.unref();
  }

  async #read(): Promise<number | undefined> {
    const row = await this.store.db.selectFrom('settings_version').select('version').where('id', '=', 1).executeTakeFirst();
    return row ? Number(row.version) : undefined;
  }

  #listen(): void {
    const listen = this.store.listen;
    if (!listen || this.#stopped) return;
    this.#listening = listen(
      SETTINGS_CHANNEL,
      (table) => void this.#check(table),
      (error) => {
        this.#listening = undefined;
        this.options.log.warn({ err: error.message }, 'settings notifications lost; polling until they are back');
      },
    ).catch((error: unknown) => {
      this.#listening = undefined;
      this.options.log.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not listen for settings notifications; polling');
      return undefined;
    });
  }

  /** Reads the version; runs the listeners when it moved. One check at a time. */
  #check(table: string | undefined): Promise<void> {
    if (this.#checking) return this.#checking;
    this.#checking = (async () => {
      try {
        const version = await this.#read();
        if (version === undefined || version === this.#version || this.#stopped) return;
        this.#version = version;
        await Promise.all(this.#listeners.map(async (listener) => listener(table)));
      } catch (error) {
        this.options.log.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not check for changed settings');
      } finally {
        this.#checking = undefined;
      }
    })();
    return this.#checking;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    const listening = this.#listening;
    this.#listening = undefined;
    await (await listening)?.close();
    await this.#checking;
  }
}
