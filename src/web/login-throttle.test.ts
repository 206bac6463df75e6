import { describe, expect, test } from 'vitest';
import { formatWait, LoginThrottle } from './login-throttle.js';

describe('LoginThrottle', () => {
  test('blocks a user name from an address after the failures allowed, and only failures count', async () => {
    const throttle = new LoginThrottle({ perUser: 3, perAddress: 10, windowSeconds: 60 });
    for (let i = 0; i < 2; i++) await throttle.recordFailure('admin', '10.0.0.1');
    expect(await throttle.blockedFor('admin', '10.0.0.1')).toBeUndefined();
    await throttle.recordFailure('admin', '10.0.0.1');
    expect(await throttle.blockedFor('admin', '10.0.0.1')).toBeGreaterThan(0);
    // Another address, or another user from the same address, is not blocked by it.
    expect(await throttle.blockedFor('admin', '10.0.0.2')).toBeUndefined();
    expect(await throttle.blockedFor('other', '10.0.0.1')).toBeUndefined();
  });

  test('an address trying many user names is blocked too', async () => {
    const throttle = new LoginThrottle({ perUser: 100, perAddress: 4, windowSeconds: 60 });
    for (let i = 0; i < 4; i++) await throttle.recordFailure(`user${i}`, '10.0.0.9');
    expect(await throttle.blockedFor('fresh-name', '10.0.0.9')).toBeGreaterThan(0);
  });

  test('waits are said in words', () => {
    expect(formatWait(1)).toBe('1 second');
    expect(formatWait(59)).toBe('59 seconds');
    expect(formatWait(61)).toBe('2 minutes');
  });
});
