/**
 * Clock skew: how far this host's clock is from its authorization server's, read from the `Date` header of
 * the server's responses (RFC 9110 §6.6.1: an origin server with a clock sends one, to the second).
 *
 * Why: the seed's manual says OAuth needs a correct date and time. Token expiry is counted from when Postern
 * sent the request (`expires_in` is relative), but the id_token checks compare the server's timestamps with
 * this host's clock (`exp`, and Microsoft's `nbf` with 30 s of tolerance; OpenID Connect Core §3.1.3.7), and
 * a clock that is set right later (NTP, a resumed VM) moves every stored expiry with it.
 *
 * Inputs: one response's Date header and the local times around its request. Outputs: the offset stored with
 * the account (OAuthAccounts.setServerClock), the administrator's warning text, one log line per change.
 * Known limits: instances sharing one database each measure their own clock; the account shows the last one.
 */
import * as oauth from 'oauth4webapi';
import { describeError, type Logger } from '../log.js';
import type { AccountRow, OAuthAccounts } from './accounts.js';
import type { Fetch, HttpOptions } from './http.js';

/** Beyond this difference the status block warns (docs/decisions/009). */
export const CLOCK_SKEW_LIMIT_MS = 2 * 60_000;

/** One response's `Date` header, with the local clock read just before the request and once the answer came. */
export interface ServerDate {
  /** The server's host (and port when not 443), as the warning names it. */
  host: string;
  date: string | null;
  sentAt: number;
  receivedAt: number;
}

/**
 * Server clock minus this host's clock, in ms: positive when this host is behind. The server wrote its Date
 * at some moment between `sentAt` and `receivedAt`, truncated to the second; the smallest offset consistent
 * with that is returned, so the round trip and the header's resolution count in the clocks' favour and a slow
 * network never raises a warning. 0 when the clocks may agree; undefined without a usable Date, or when the
 * local clock stepped back during the request.
 */
export function clockOffset(date: string | null | undefined, sentAt: number, receivedAt: number): number | undefined {
  if (!date || receivedAt < sentAt) return undefined;
  const serverSecond = Date.parse(date);
  if (!Number.isFinite(serverSecond)) return undefined;
  const least = serverSecond - receivedAt;
  const most = serverSecond + 999 - sentAt;
  if (least > 0) return least;
  if (most < 0) return most;
  return 0;
}

function describeDuration(ms: number): string {
  const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  const minutes = Math.round(ms / 60_000);
  if (minutes < 120) return plural(minutes, 'minute');
  const hours = Math.round(ms / 3_600_000);
  if (hours < 48) return plural(hours, 'hour');
  return plural(Math.round(ms / 86_400_000), 'day');
}

/** The administrator's warning for an offset beyond the limit, or null within it. */
export function clockSkewWarning(offsetMs: number, host: string): string | null {
  if (Math.abs(offsetMs) <= CLOCK_SKEW_LIMIT_MS) return null;
  const direction = offsetMs > 0 ? 'behind' : 'ahead of';
  return (
    `This computer's clock is ${describeDuration(Math.abs(offsetMs))} ${direction} the authorization server's (${host}). ` +
    'Set the time automatically (NTP): tokens may be refused or expire unexpectedly.'
  );
}

/** The warning for what the account row holds (status page, `postern status`). */
export function clockSkewWarningOf(row: Pick<AccountRow, 'clock_offset_ms' | 'clock_server_host'>): string | null {
  if (row.clock_offset_ms === null || row.clock_server_host === null) return null;
  return clockSkewWarning(row.clock_offset_ms, row.clock_server_host);
}

/**
 * Keeps the Date of the last response that came through the wrapped fetch. It only reads headers: what was
 * seen is stored after the protocol step (`recordServerClock`), so a failed write cannot fail the step.
 */
export class ServerClockProbe {
  last: ServerDate | undefined;

  constructor(private readonly now: () => number) {}

  fetch(fetch: Fetch): Fetch {
    return async (url, init) => {
      const sentAt = this.now();
      const response = await fetch(url, init);
      this.last = { host: new URL(url).host, date: response.headers.get('date'), sentAt, receivedAt: this.now() };
      return response;
    };
  }

  /** The same HTTP options for oauth4webapi, with the fetch observed. */
  http(options: HttpOptions): HttpOptions {
    return { ...options, [oauth.customFetch]: this.fetch(options[oauth.customFetch]) };
  }
}

/**
 * Stores the comparison with the account and logs once per change: a warning when the clocks drift apart
 * (or the warning's words change), an info line when they agree again. A response without a Date changes
 * nothing. Never throws: the protocol step it follows has its own outcome to report.
 */
export async function recordServerClock(
  accounts: OAuthAccounts,
  log: Logger,
  accountId: string,
  seen: ServerDate | undefined,
): Promise<void> {
  if (!seen) return;
  const offset = clockOffset(seen.date, seen.sentAt, seen.receivedAt);
  if (offset === undefined) return;
  try {
    const before = await accounts.get(accountId);
    const previous = before ? clockSkewWarningOf(before) : null;
    await accounts.setServerClock(accountId, { offsetMs: offset, host: seen.host, checkedAt: seen.receivedAt });
    const warning = clockSkewWarning(offset, seen.host);
    if (warning === previous) return;
    if (warning) log.warn({ account: accountId, host: seen.host, offsetMs: offset }, warning);
    else log.info({ account: accountId, host: seen.host, offsetMs: offset }, `This computer's clock agrees with the authorization server's (${seen.host}) again.`);
  } catch (error) {
    log.error({ account: accountId, err: describeError(error) }, 'could not store the clock comparison');
  }
}
