/**
 * The retry schedule as data (Haraka's habit; RFC 5321 §4.5.4.1 says retry parameters MUST be configurable):
 * exponential backoff from `retryBaseMs`, doubling per failed attempt, capped at `retryMaxMs`, with ±20 %
 * jitter so that a deferred queue that failed together does not come due together (Postfix's weakness).
 * After `lifetimeMs` since the message was received, a still-failing message is returned to its sender.
 */
import type { QueueTuning } from '../config.js';

export const JITTER = 0.2;

/** Delay before attempt number `attempts + 1`, given `attempts` failed attempts so far (≥ 1). */
export function retryDelay(attempts: number, tuning: Pick<QueueTuning, 'retryBaseMs' | 'retryMaxMs'>, random: () => number = Math.random): number {
  const exponent = Math.max(0, Math.min(attempts - 1, 30));
  const base = Math.min(tuning.retryBaseMs * 2 ** exponent, tuning.retryMaxMs);
  return Math.max(1, Math.round(base * (1 - JITTER + 2 * JITTER * random())));
}

/** When the next attempt is due, or `undefined` when the message has run out of time (give up and bounce). */
export function nextAttemptAt(
  attempts: number,
  now: number,
  expiresAt: number,
  tuning: Pick<QueueTuning, 'retryBaseMs' | 'retryMaxMs'>,
  random: () => number = Math.random,
): number | undefined {
  const at = now + retryDelay(attempts, tuning, random);
  return at > expiresAt ? undefined : at;
}
