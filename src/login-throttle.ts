/**
 * Sign-in throttling for the Remote UI and the relay's device AUTH: failed attempts are counted per user
 * name + address and per address, so that a flood from one address locks out neither the real user signing
 * in from another address nor other users.
 *
 * An attempt is reserved before the password is checked (`reserve`), never counted after it: the check is a
 * slow scrypt computation, and counting afterwards let any number of parallel guesses through before the
 * first failure was recorded (check-then-act). Reserving is one atomic step per key in the limiter, so with
 * a limit of 5 at most 5 guesses are ever evaluated, however many arrive at once. A successful sign-in gives
 * its reservation back.
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

/** The outcome of `reserve`: either the attempt may be evaluated, or it is refused for a while. */
export type LoginAttempt =
  | {
      allowed: true;
      /** The password was right: the reservation is given back and the user's failures are forgotten. */
      succeeded(): Promise<void>;
    }
  | {
      allowed: false;
      /** Seconds until the next attempt may be made. */
      retryAfterSeconds: number;
    };

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

  static #userKey(username: string, address: string): string {
    return `${username.toLowerCase()}|${address}`;
  }

  /** Reserves one attempt for this user name from this address, or says how long to wait. */
  async reserve(username: string, address: string): Promise<LoginAttempt> {
    const userKey = LoginThrottle.#userKey(username, address);
    const [user, addr] = await Promise.allSettled([this.#perUser.consume(userKey, 1), this.#perAddress.consume(address, 1)]);
    const refused = [user, addr].filter((result) => result.status === 'rejected');
    if (refused.length > 0) {
      const waits = refused.map((result) => {
        const reason = (result as PromiseRejectedResult).reason;
        // The memory limiter rejects with a RateLimiterRes; anything else is a defect, never a way in.
        if (!(reason instanceof RateLimiterRes)) throw reason;
        return Math.max(1, Math.ceil(reason.msBeforeNext / 1000));
      });
      return { allowed: false, retryAfterSeconds: Math.max(...waits) };
    }
    return {
      allowed: true,
      succeeded: async () => {
        await Promise.all([this.#perUser.delete(userKey), this.#perAddress.reward(address, 1)]);
      },
    };
  }
}

/** "2 minutes", "1 second": how long to wait, in words. */
export function formatWait(seconds: number): string {
  if (seconds < 60) return `${seconds} second${seconds === 1 ? '' : 's'}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minute${minutes === 1 ? '' : 's'}`;
}

/** "Try again in 15 minutes (after 21:45 UTC)": the wait and the time it ends. */
export function tryAgainIn(seconds: number, now = new Date()): string {
  const at = new Date(now.getTime() + seconds * 1000);
  const hhmm = `${String(at.getUTCHours()).padStart(2, '0')}:${String(at.getUTCMinutes()).padStart(2, '0')}`;
  return `try again in ${formatWait(seconds)} (after ${hhmm} UTC)`;
}
