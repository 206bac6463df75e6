/**
 * What both providers' settings screens share behind the OK button: long steps run in the background, one
 * at a time per account, and the Server Connection Status check.
 *
 * Purpose: the connection check and the device authorization request take seconds; as on the device, the
 * screen answers at once ("wait a few seconds, then click refresh") and the status block shows the outcome.
 * Inputs: the account's settings and TLS options. Outputs: Server Connection Status on the account, and the
 * authorization server's clock compared with this host's (clock-skew.ts).
 * Failure modes: a step that throws is logged and the next one still runs; nothing is thrown at the admin.
 * Known limits: the steps are serialised per process; another instance on the same database runs its own.
 */
import { describeError, type Logger } from '../log.js';
import type { ProviderId } from '../store/schema.js';
import { settingsOf, type AccountRow, type OAuthAccounts } from './accounts.js';
import { connectionCheckUrl } from './authorization-server.js';
import { recordServerClock, ServerClockProbe } from './clock-skew.js';
import { checkConnection } from './connection-check.js';
import type { OAuthHttp } from './http.js';
import { PROVIDER_LABELS } from './profiles.js';

export interface AccountOperationsOptions {
  accounts: OAuthAccounts;
  http: OAuthHttp;
  log: Logger;
  now?: () => number;
}

export class AccountOperations {
  readonly #running = new Map<string, Promise<void>>();
  readonly #accounts: OAuthAccounts;
  readonly #http: OAuthHttp;
  readonly #log: Logger;
  readonly #now: () => number;

  constructor(options: AccountOperationsOptions) {
    this.#accounts = options.accounts;
    this.#http = options.http;
    this.#log = options.log.child({ component: 'oauth' });
    this.#now = options.now ?? Date.now;
  }

  /** Runs `operation` after the account's earlier ones have finished. */
  runInBackground(id: string, operation: () => Promise<void>): void {
    const previous = this.#running.get(id) ?? Promise.resolve();
    const run = previous
      .then(operation)
      .catch((error) => this.#log.error({ err: describeError(error), account: id }, 'background OAuth operation failed'))
      .finally(() => {
        if (this.#running.get(id) === run) this.#running.delete(id);
      });
    this.#running.set(id, run);
  }

  /** Resolves when the account's background operations (if any) have finished. */
  async whenIdle(id: string): Promise<void> {
    while (this.#running.has(id)) await this.#running.get(id);
  }

  isBusy(id: string): boolean {
    return this.#running.has(id);
  }

  /**
   * Server Connection Status: checks the authorization server's host under the account's TLS options and
   * records the outcome (and the server's clock). True when Successfully Connected.
   */
  async checkConnection(row: AccountRow): Promise<boolean> {
    const clock = new ServerClockProbe(this.#now);
    const fetch = clock.fetch(await this.#http.fetchFor(settingsOf(row).tls));
    const result = await checkConnection(connectionCheckUrl(row), fetch);
    await recordServerClock(this.#accounts, this.#log, row.id, clock.last);
    await this.#accounts.setConnection(row.id, result);
    if (result.status === 'ConnectionFailed') {
      this.#log.warn({ account: row.id, reason: result.detail }, `${PROVIDER_LABELS[row.provider]}: Connection Failed`);
    }
    return result.status === 'SuccessfullyConnected';
  }

  /**
   * After a save with Use on: shows "Connecting…", then checks the connection. Undefined when Use is off
   * by the time the step runs.
   */
  async connect(id: string): Promise<{ row: AccountRow; connected: boolean } | undefined> {
    const row = await this.#accounts.getOrCreate(id);
    if (row.enabled !== 1) return undefined;
    await this.#accounts.setConnection(id, { status: null, detail: 'Connecting…' });
    return { row, connected: await this.checkConnection(row) };
  }

  /** With Use off there is nothing to connect to: the status shows "Not in use". */
  async forgetConnection(id: string): Promise<void> {
    await this.#accounts.setConnection(id, { status: null, detail: null });
  }
}
