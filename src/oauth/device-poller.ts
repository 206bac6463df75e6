/**
 * Device poller: polls the token endpoint for each pending device authorization (RFC 8628 §3.4–3.5) until
 * the user signs in, declines, or the code expires.
 *
 * Inputs: device_authorizations rows with status Pending. Outputs: tokens saved on the account (Token
 * Status Active), or a terminal status with the reason for the administrator.
 *
 * - Polls no sooner than `interval` s after the grant started and between polls; +5 s for this and every
 *   later poll on slow_down (§3.5); exponential backoff on network errors and 5xx (capped at 60 s), polling
 *   continues.
 * - Sends nothing once `expires_in` has elapsed: the authorization is marked CodeExpired instead.
 * - State lives in the database, so a restart resumes polling; a lease keeps two instances from polling
 *   the same code. Every `rescanMs` each instance also looks for pending authorizations it has no timer
 *   for (one started through another instance). Every instance then waits for the poll time in the row;
 *   whichever takes the lease first polls and moves that time on, the others see it and wait again: one
 *   poll per interval between them, and if one instance dies the others go on polling.
 */
import { randomUUID } from 'node:crypto';
import { describeError, type Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import type { DeviceAuthorizationStatus } from '../store/schema.js';
import { settingsOf, type OAuthAccounts } from './accounts.js';
import { authorizationServerOf, clientOf } from './authorization-server.js';
import { pollDeviceCodeGrant } from './grants.js';
import type { OAuthHttp } from './http.js';
import { PROVIDER_LABELS } from './profiles.js';
import type { OAuthBackgroundOptions } from './token-service.js';

const NETWORK_BACKOFF_MAX_S = 60;
const LEASE_TTL_MS = 60_000;

export const DEVICE_STATUS_TEXT: Record<Exclude<DeviceAuthorizationStatus, 'Pending'>, string> = {
  Completed: 'Authorization completed.',
  Declined: 'The sign-in was declined at the verification page. Click Get New User Code to try again.',
  CodeExpired: 'The user code expired before the sign-in was completed. Click Get New User Code to try again.',
  Failed: 'The authorization failed.',
  Cancelled: 'The authorization was cancelled.',
};

export interface DevicePollerOptions extends OAuthBackgroundOptions {
  /** When false, nothing is polled by timers; the caller drives pollOnce (deterministic tests). */
  autoSchedule?: boolean;
  /** How often pending authorizations started elsewhere are looked for (default 5 s; 0: never). */
  rescanMs?: number;
}

export class DevicePoller {
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #running = new Map<string, Promise<void>>();
  readonly #accounts: OAuthAccounts;
  readonly #http: OAuthHttp;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #instanceId: string;
  readonly #autoSchedule: boolean;
  readonly #rescanMs: number;
  #rescan: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: DevicePollerOptions) {
    this.#accounts = options.accounts;
    this.#http = options.http;
    this.#audit = options.audit;
    this.#log = options.log.child({ component: 'device-poller' });
    this.#now = options.now ?? Date.now;
    this.#instanceId = options.instanceId ?? randomUUID();
    this.#autoSchedule = options.autoSchedule ?? true;
    this.#rescanMs = options.rescanMs ?? 5000;
  }

  /** Resumes polling for every pending authorization (after a restart). */
  async start(): Promise<void> {
    this.#stopped = false;
    for (const row of await this.#accounts.pendingDeviceAuthorizations()) this.schedule(row.account_id, row.next_poll_at);
    if (this.#autoSchedule && this.#rescanMs > 0) {
      this.#rescan = setInterval(() => void this.#adoptPending().catch(() => undefined), this.#rescanMs);
      this.#rescan.unref();
    }
  }

  /** Schedules pending authorizations this instance has no timer for (started through another instance). */
  async #adoptPending(): Promise<void> {
    for (const row of await this.#accounts.pendingDeviceAuthorizations()) {
      if (!this.#timers.has(row.account_id) && !this.#running.has(row.account_id)) this.schedule(row.account_id, row.next_poll_at);
    }
  }

  schedule(accountId: string, at: number): void {
    if (this.#stopped || !this.#autoSchedule) return;
    clearTimeout(this.#timers.get(accountId));
    const timer = setTimeout(() => {
      this.#timers.delete(accountId);
      const run = this.pollOnce(accountId)
        .catch((error) => this.#log.error({ err: describeError(error), account: accountId }, 'device poll failed'))
        .finally(() => this.#running.delete(accountId));
      this.#running.set(accountId, run);
    }, Math.max(0, at - this.#now()));
    timer.unref();
    this.#timers.set(accountId, timer);
  }

  /** Stops polling for the account (cancel, delete token, new code). Takes effect before the next poll. */
  cancel(accountId: string): void {
    clearTimeout(this.#timers.get(accountId));
    this.#timers.delete(accountId);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#rescan) clearInterval(this.#rescan);
    this.#rescan = undefined;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    await Promise.allSettled([...this.#running.values()]);
  }

  /** One step of the poll loop for an account; schedules the next one. */
  async pollOnce(accountId: string): Promise<void> {
    const grant = await this.#accounts.deviceAuthorization(accountId);
    if (!grant || grant.status !== 'Pending') return;
    const now = this.#now();
    if (now >= grant.expires_at) {
      await this.#finish(accountId, 'CodeExpired', DEVICE_STATUS_TEXT.CodeExpired);
      return;
    }
    if (now < grant.next_poll_at) {
      this.schedule(accountId, grant.next_poll_at);
      return;
    }
    if (!(await this.#accounts.acquirePollLease(accountId, this.#instanceId, now, LEASE_TTL_MS))) {
      this.schedule(accountId, now + grant.poll_interval * 1000);
      return;
    }
    const account = await this.#accounts.get(accountId);
    if (!account || account.enabled !== 1) {
      await this.#finish(accountId, 'Cancelled', DEVICE_STATUS_TEXT.Cancelled);
      return;
    }
    const label = PROVIDER_LABELS[account.provider];
    const outcome = await pollDeviceCodeGrant(
      authorizationServerOf(account),
      clientOf(account, undefined),
      this.#accounts.deviceCode(grant),
      await this.#http.options(settingsOf(account).tls),
      this.#now,
    );

    // The authorization may have been cancelled or replaced while the request was in flight.
    const current = await this.#accounts.deviceAuthorization(accountId);
    if (!current || current.status !== 'Pending' || current.device_code_enc !== grant.device_code_enc) return;

    const after = this.#now();
    switch (outcome.type) {
      case 'tokens': {
        if (!outcome.tokens.refreshToken) {
          const detail =
            'Signed in, but no refresh token was issued, so Postern could not keep the authorization. Check that the app registration allows the offline_access permission, then click Get New User Code.';
          await this.#finish(accountId, 'Failed', detail, { error: 'No refresh token in the token response', advice: detail });
          return;
        }
        await this.#accounts.transition(accountId, 'Active', { tokens: outcome.tokens, keepRefreshToken: false, at: after });
        await this.#accounts.updateDeviceAuthorization(accountId, {
          status: 'Completed',
          detail: DEVICE_STATUS_TEXT.Completed,
          poll_lease_owner: null,
          poll_lease_until: null,
        });
        await this.#audit.record(null, 'token.authorized', `${label}: authorized as ${outcome.tokens.mailbox ?? 'unknown account'}`);
        this.#log.info({ account: accountId, mailbox: outcome.tokens.mailbox }, `${label}: authorization completed, Token Status is Active`);
        return;
      }
      case 'pending':
        await this.#next(accountId, after + current.poll_interval * 1000, { network_failures: 0, detail: null });
        return;
      case 'slow_down': {
        const interval = current.poll_interval + 5;
        await this.#next(accountId, after + interval * 1000, { poll_interval: interval, network_failures: 0 });
        return;
      }
      case 'declined':
        await this.#finish(accountId, 'Declined', DEVICE_STATUS_TEXT.Declined);
        return;
      case 'expired':
        await this.#finish(accountId, 'CodeExpired', DEVICE_STATUS_TEXT.CodeExpired);
        return;
      case 'failed': {
        const text =
          outcome.error.error === 'bad_verification_code'
            ? 'The authorization server did not recognise the device code (bad_verification_code). Click Get New User Code.'
            : `The authorization failed: ${outcome.error.providerText}`;
        await this.#finish(accountId, 'Failed', text, { error: outcome.error.providerText, advice: outcome.error.advice ?? null });
        this.#log.warn({ account: accountId, error: outcome.error.error, description: outcome.error.description }, `${label}: device authorization failed`);
        return;
      }
      case 'transient': {
        const failures = current.network_failures + 1;
        const delayS = Math.min(current.poll_interval * 2 ** failures, NETWORK_BACKOFF_MAX_S);
        this.#log.warn({ account: accountId, failures, err: describeError(outcome.error) }, `${label}: device poll failed, backing off`);
        await this.#next(accountId, after + delayS * 1000, {
          network_failures: failures,
          detail: `${outcome.error.message} Retrying in ${delayS} s.`,
        });
        return;
      }
    }
  }

  async #next(accountId: string, at: number, patch: { poll_interval?: number; network_failures?: number; detail?: string | null }): Promise<void> {
    const grant = await this.#accounts.deviceAuthorization(accountId);
    if (!grant) return;
    // Never poll after expiry: wake at the expiry instead, to mark the code expired without a request.
    const next = Math.min(at, grant.expires_at);
    await this.#accounts.updateDeviceAuthorization(accountId, { ...patch, next_poll_at: next, poll_lease_owner: null, poll_lease_until: null });
    this.schedule(accountId, next);
  }

  async #finish(
    accountId: string,
    status: Exclude<DeviceAuthorizationStatus, 'Pending' | 'Completed'>,
    detail: string,
    tokenDetails?: { error: string | null; advice: string | null },
  ): Promise<void> {
    this.cancel(accountId);
    await this.#accounts.updateDeviceAuthorization(accountId, { status, detail, poll_lease_owner: null, poll_lease_until: null });
    const account = await this.#accounts.get(accountId);
    if (account && account.refresh_token_enc === null) {
      await this.#accounts.transition(accountId, 'NotRegistered', tokenDetails ?? { error: detail, advice: null });
    }
  }
}
