/**
 * Failed API authentications, throttled per address: after `limit` failures from one address within the
 * window, that address gets 429 until the block ends, whatever token it presents.
 *
 * Like the Remote UI's sign-in (src/login-throttle.ts), an attempt is reserved before the token is checked,
 * so that parallel guesses cannot outrun the limit: failures counted plus checks in flight never exceed
 * `limit`, so at most `limit` wrong tokens are ever checked per window. Unlike it, a request that finds the
 * limit taken by checks still in flight waits for one of them to finish instead of being refused: an
 * automation tool sending thirty requests at once with a good token would otherwise be counted as thirty
 * attempts, refused and blocked for the whole window. A success does not forget the address's failures (one
 * valid token must not reset an attacker's count on the same host).
 *
 * State is in memory, per process (as the sign-in throttle's); no timers: waiting requests are woken when a
 * check in flight ends. Known limits: several instances behind one database each count on their own.
 */
export interface AuthThrottleOptions {
  /** Failures per address within the window before blocking. */
  limit?: number;
  /** Window and block duration, ms. */
  windowMs?: number;
  now?: () => number;
}

export type AuthReservation =
  | {
      allowed: true;
      /** The token was good: the reservation is given back. */
      succeeded(): void;
      /** The token was wrong: the reservation becomes a counted failure. */
      failed(): void;
    }
  | { allowed: false; retryAfterSeconds: number };

interface AddressState {
  failures: number;
  windowEndsAt: number;
  blockedUntil: number;
  inFlight: number;
  waiters: Array<() => void>;
}

/** Requests from one address waiting for a check in flight; beyond this they are refused at once. */
const MAX_WAITERS = 1000;
/** Above this many addresses tracked, finished ones are swept on the next reservation. */
const SWEEP_ABOVE = 10_000;

export class ApiAuthThrottle {
  readonly limit: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #addresses = new Map<string, AddressState>();

  constructor(options: AuthThrottleOptions = {}) {
    this.limit = options.limit ?? 20;
    this.#windowMs = options.windowMs ?? 15 * 60_000;
    this.#now = options.now ?? Date.now;
  }

  #state(address: string): AddressState {
    let state = this.#addresses.get(address);
    if (!state) {
      if (this.#addresses.size >= SWEEP_ABOVE) this.#sweep();
      state = { failures: 0, windowEndsAt: 0, blockedUntil: 0, inFlight: 0, waiters: [] };
      this.#addresses.set(address, state);
    }
    const now = this.#now();
    if (state.failures > 0 && now >= state.windowEndsAt && now >= state.blockedUntil) state.failures = 0;
    return state;
  }

  #sweep(): void {
    const now = this.#now();
    for (const [address, state] of this.#addresses) {
      if (state.inFlight === 0 && state.waiters.length === 0 && now >= state.windowEndsAt && now >= state.blockedUntil) this.#addresses.delete(address);
    }
  }

  #refusal(state: AddressState): { allowed: false; retryAfterSeconds: number } {
    const until = Math.max(state.blockedUntil, state.windowEndsAt);
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((until - this.#now()) / 1000)) };
  }

  /** Reserves one check for this address, waits for a check in flight to end, or says how long to wait. */
  async reserve(address: string): Promise<AuthReservation> {
    for (;;) {
      const state = this.#state(address);
      if (state.blockedUntil > this.#now() || state.failures >= this.limit) return this.#refusal(state);
      if (state.failures + state.inFlight < this.limit) {
        state.inFlight++;
        return this.#reservation(state);
      }
      if (state.waiters.length >= MAX_WAITERS) return { allowed: false, retryAfterSeconds: 1 };
      await new Promise<void>((resolve) => state.waiters.push(resolve));
    }
  }

  #reservation(state: AddressState): AuthReservation {
    let done = false;
    const end = (failed: boolean) => {
      if (done) return;
      done = true;
      state.inFlight--;
      if (failed) {
        const now = this.#now();
        if (state.failures === 0) state.windowEndsAt = now + this.#windowMs;
        state.failures++;
        if (state.failures >= this.limit) state.blockedUntil = now + this.#windowMs;
      }
      // Everyone waiting looks again: after a failure the address may now be blocked, after a success there is room.
      for (const wake of state.waiters.splice(0)) wake();
    };
    return { allowed: true, succeeded: () => end(false), failed: () => end(true) };
  }
}
