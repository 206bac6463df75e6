import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { loadOrCreateMasterKey, SecretBox } from './secret-box.js';

describe('SecretBox', () => {
  const box = new SecretBox(Buffer.alloc(32, 9));

  test('round-trips, with a fresh IV each time', () => {
    const a = box.encrypt('refresh-token-value', 'ctx');
    const b = box.encrypt('refresh-token-value', 'ctx');
    expect(a).not.toBe(b);
    expect(a).not.toContain('refresh-token-value');
    expect(box.decrypt(a, 'ctx')).toBe('refresh-token-value');
  });

  test('a ciphertext moved to another place, altered, or read with another key does not decrypt', () => {
    const sealed = box.encrypt('secret', 'oauth_accounts.refresh_token:microsoft');
    expect(() => box.decrypt(sealed, 'oauth_accounts.refresh_token:google')).toThrow(/could not be decrypted/);
    const parts = sealed.split('.');
    parts[2] = Buffer.from('tampered').toString('base64url');
    expect(() => box.decrypt(parts.join('.'), 'oauth_accounts.refresh_token:microsoft')).toThrow(/could not be decrypted/);
    expect(() => new SecretBox(Buffer.alloc(32, 1)).decrypt(sealed, 'oauth_accounts.refresh_token:microsoft')).toThrow();
  });
});

describe('loadOrCreateMasterKey', () => {
  test('generates a 0600 key file at first start and reads it afterwards', () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-key-'));
    const first = loadOrCreateMasterKey(dir, undefined);
    expect(first.source).toBe('generated');
    expect(statSync(join(dir, 'secret.key')).mode & 0o777).toBe(0o600);
    const second = loadOrCreateMasterKey(dir, undefined);
    expect(second.source).toBe('file');
    expect(second.key.equals(first.key)).toBe(true);
  });

  test('a damaged key file is reported, not replaced', () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-key-'));
    writeFileSync(join(dir, 'secret.key'), 'short\n', { mode: 0o600 });
    expect(() => loadOrCreateMasterKey(dir, undefined)).toThrow(/does not hold a 32-byte base64 key/);
  });

  test('a configured key wins and no file is written', () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-key-'));
    expect(loadOrCreateMasterKey(dir, Buffer.alloc(32, 3)).source).toBe('environment');
  });
});
