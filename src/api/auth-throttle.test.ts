import { describe, expect, test } from 'vitest';
import { ApiAuthThrottle } from './auth-throttle.js';

const MINUTE = 60_000;

describe('ApiAuthThrottle', () => {
  test('at most `limit` wrong tokens are checked, however many arrive at once; then the address is refused', async () => {
    const throttle = new ApiAuthThrottle({ limit: 5, windowMs: 15 * MINUTE });
    let checks = 0;
    const attempt = async () => {
      const reservation = await throttle.reserve('192.0.2.7');
      if (!reservation.allowed) return reservation.retryAfterSeconds;
      checks++;
      await Promise.resolve();
      reservation.failed();
      return 'checked';
    };
    const results = await Promise.all(Array.from({ length: 30 }, attempt));
    expect(checks).toBe(5);
    expect(results.filter((r) => r === 'checked')).toHaveLength(5);
    expect(results.filter((r) => typeof r === 'number').every((s) => s === 15 * 60)).toBe(true);
  });

  test('good tokens in parallel wait for a free check instead of being refused, and are not counted', async () => {
    const throttle = new ApiAuthThrottle({ limit: 3 });
    const results = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const reservation = await throttle.reserve('192.0.2.8');
        if (!reservation.allowed) return false;
        await Promise.resolve();
        reservation.succeeded();
        return true;
      }),
    );
    expect(results.every(Boolean)).toBe(true);
    const next = await throttle.reserve('192.0.2.8');
    expect(next.allowed).toBe(true);
  });

  test('a success does not forget the failures; other addresses are not affected; the block ends with the window', async () => {
    let now = 1_000_000;
    const throttle = new ApiAuthThrottle({ limit: 2, windowMs: 10 * MINUTE, now: () => now });
    const fail = async (address: string) => {
      const r = await throttle.reserve(address);
      if (r.allowed) r.failed();
      return r.allowed;
    };
    expect(await fail('192.0.2.9')).toBe(true);
    const good = await throttle.reserve('192.0.2.9');
    if (good.allowed) good.succeeded();
    expect(await fail('192.0.2.9')).toBe(true);
    const refused = await throttle.reserve('192.0.2.9');
    expect(refused).toEqual({ allowed: false, retryAfterSeconds: 600 });
    expect((await throttle.reserve('198.51.100.1')).allowed).toBe(true);
    now += 10 * MINUTE;
    expect((await throttle.reserve('192.0.2.9')).allowed).toBe(true);
  });
});
