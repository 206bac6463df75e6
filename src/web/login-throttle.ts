/**
 * Login rate limiting: failed attempts are counted per user name + address and per address; past the limit,
 * logins from there are refused for a while with a clear message (successful logins are not counted).
 * The same limiter guards the relay's device AUTH.
 */
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';

export interface ThrottleOptions {
  /** Failures per user name + address before blocking. */
  perUser?: number;
  /** Failures per address (any user name) before blocking. */
  perAddress?: number;
  /** Window and block duration, seconds. */
  windowSeconds?: number;
}

export class LoginThrottle {
  readonly #perUser: RateLimiterMemory;
  readonly #perAddress: RateLimiterMemory;

  constructor(options: ThrottleOptions = {}) {
    const duration = options.windowSeconds ?? 15 * 60;
    this.#perUser = new RateLimiterMemory({ keyPrefix: 'user', points: options.perUser ?? 5, duration, blockDuration: duration });
    this.#perAddress = new RateLimiterMemory({
      keyPrefix: 'addr',
      points: options.perAddress ?? 20,
      duration,
      blockDuration: duration,
    });
  }

  static #remaining(result: RateLimiterRes | null, limit: number): number | undefined {
    if (result && result.consumedPoints >= limit) return Math.max(1, Math.ceil(result.msBeforeNext / 1000));
    return undefined;
  }

  /** Seconds until the next attempt is allowed, or undefined when an attempt may be made now. */
  async blockedFor(username: string, address: string): Promise<number | undefined> {
    const [user, addr] = await Promise.all([
      this.#perUser.get(`${username.toLowerCase()}|${address}`),
      this.#perAddress.get(address),
    ]);
    const a = LoginThrottle.#remaining(user, this.#perUser.points);
    const b = LoginThrottle.#remaining(addr, this.#perAddress.points);
    return a === undefined && b === undefined ? undefined : Math.max(a ?? 0, b ?? 0);
  }

  async recordFailure(username: string, address: string): Promise<void> {
    await Promise.all([
      this.#perUser.penalty(`${username.toLowerCase()}|${address}`, 1),
      this.#perAddress.penalty(address, 1),
    ]);
  }

  async recordSuccess(username: string, address: string): Promise<void> {
    await this.#perUser.delete(`${username.toLowerCase()}|${address}`);
  }
}

export function formatWait(seconds: number): string {
  if (seconds < 60) return `${seconds} second${seconds === 1 ? '' : 's'}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minute${minutes === 1 ? '' : 's'}`;
}
