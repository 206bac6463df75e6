import { describe, expect, test } from 'vitest';
import { generatePassword, hashPassword, passwordHashingLoad, verifyPassword } from './passwords.js';

describe('passwords', () => {
  test('scrypt hashes verify, and reveal nothing of the password', async () => {
    const hash = await hashPassword('correct horse battery');
    expect(hash).toMatch(/^scrypt\$15\$8\$1\$/);
    expect(hash).not.toContain('correct');
    expect(await verifyPassword('correct horse battery', hash)).toBe(true);
    expect(await verifyPassword('correct horse batterY', hash)).toBe(false);
    expect(await verifyPassword('anything', undefined)).toBe(false);
    expect(await verifyPassword('anything', 'garbage')).toBe(false);
  });

  test('generated passwords are long and varied', () => {
    const a = generatePassword();
    expect(a).toMatch(/^[A-Za-z0-9]{20}$/);
    expect(generatePassword()).not.toBe(a);
  });

  test('simultaneous checks take turns: at most two scrypt computations (32 MB each) at once', async () => {
    const hash = await hashPassword('correct horse battery');
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, passwordHashingLoad().running)), 1);
    const checks = Array.from({ length: 8 }, (_, i) => verifyPassword(i % 2 === 0 ? 'correct horse battery' : 'wrong', hash));
    expect(passwordHashingLoad()).toEqual({ running: 2, waiting: 6 });
    const results = await Promise.all(checks);
    clearInterval(watch);
    expect(results).toEqual([true, false, true, false, true, false, true, false]);
    expect(most).toBeLessThanOrEqual(2);
    expect(passwordHashingLoad()).toEqual({ running: 0, waiting: 0 });
  });
});
