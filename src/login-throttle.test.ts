import { describe, expect, test } from 'vitest';
import { formatWait, LoginThrottle, tryAgainIn } from './login-throttle.js';

async function fail(throttle: LoginThrottle, username: string, address: string): Promise<boolean> {
  const attempt = await throttle.reserve(username, address);
  return attempt.allowed;
}

describe('LoginThrottle', () => {
  test('blocks a user name from an address after the failures allowed, and only failures count', async () => {
    const throttle = new LoginThrottle({ perUser: 3, perAddress: 10, windowSeconds: 60 });
    for (let i = 0; i < 3; i++) expect(await fail(throttle, 'admin', '10.0.0.1')).toBe(true);
    const refused = await throttle.reserve('admin', '10.0.0.1');
    expect(refused.allowed).toBe(false);
    if (!refused.allowed) expect(refused.retryAfterSeconds).toBeGreaterThan(0);
    // Another address, or another user from the same address, is not blocked by it.
    expect((await throttle.reserve('admin', '10.0.0.2')).allowed).toBe(true);
    expect((await throttle.reserve('other', '10.0.0.1')).allowed).toBe(true);
  });

  test('a successful sign-in gives its reservation back and forgets the failures', async () => {
    const throttle = new LoginThrottle({ perUser: 3, perAddress: 3, windowSeconds: 60 });
    for (let i = 0; i < 10; i++) {
      const attempt = await throttle.reserve('admin', '10.0.0.1');
      expect(attempt.allowed).toBe(true);
      if (attempt.allowed) await attempt.succeeded();
    }
  });

  test('an address trying many user names is blocked too', async () => {
    const throttle = new LoginThrottle({ perUser: 100, perAddress: 4, windowSeconds: 60 });
    for (let i = 0; i < 4; i++) await fail(throttle, `user${i}`, '10.0.0.9');
    expect((await throttle.reserve('fresh-name', '10.0.0.9')).allowed).toBe(false);
  });

  test('parallel attempts: exactly the limit is allowed, however many arrive at once', async () => {
    const throttle = new LoginThrottle({ perUser: 5, perAddress: 20, windowSeconds: 60 });
    const results = await Promise.all(Array.from({ length: 100 }, () => throttle.reserve('admin', '10.0.0.1')));
    expect(results.filter((r) => r.allowed)).toHaveLength(5);
    const many = await Promise.all(Array.from({ length: 100 }, (_, i) => throttle.reserve(`u${i}`, '10.0.0.7')));
    expect(many.filter((r) => r.allowed)).toHaveLength(20);
  });

  test('waits are said in words, with the time they end', () => {
    expect(formatWait(1)).toBe('1 second');
    expect(formatWait(59)).toBe('59 seconds');
    expect(formatWait(61)).toBe('2 minutes');
    expect(tryAgainIn(900, new Date('2026-12-01T21:30:00Z'))).toBe('try again in 15 minutes (after 21:45 UTC)');
  });
});
