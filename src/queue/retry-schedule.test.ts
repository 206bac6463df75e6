import { describe, expect, it } from 'vitest';
import { nextAttemptAt, retryDelay } from './retry-schedule.js';

const tuning = { retryBaseMs: 60_000, retryMaxMs: 30 * 60_000 };

describe('retry schedule', () => {
  it('doubles from the base up to the cap', () => {
    const mid = () => 0.5;
    expect([1, 2, 3, 4, 5, 6, 7, 20].map((n) => retryDelay(n, tuning, mid))).toEqual([60_000, 120_000, 240_000, 480_000, 960_000, 1_800_000, 1_800_000, 1_800_000]);
  });

  it('jitters ±20 % so that a deferred queue does not come due at once', () => {
    expect(retryDelay(1, tuning, () => 0)).toBe(48_000);
    expect(retryDelay(1, tuning, () => 0.999999)).toBe(72_000);
    const delays = new Set(Array.from({ length: 50 }, () => retryDelay(3, tuning)));
    expect(delays.size).toBeGreaterThan(10);
  });

  it('gives up when the next attempt would fall after the expiry', () => {
    expect(nextAttemptAt(1, 1_000, 1_000 + 120_000, tuning, () => 0.5)).toBe(61_000);
    expect(nextAttemptAt(3, 1_000, 1_000 + 120_000, tuning, () => 0.5)).toBeUndefined();
  });
});
