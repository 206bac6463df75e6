import { describe, expect, test } from 'vitest';
import { generatePassword, hashPassword, verifyPassword } from './passwords.js';

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
});
