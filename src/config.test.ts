import { describe, expect, test } from 'vitest';
import { loadConfig } from './config.js';

describe('loadConfig', () => {
  test('defaults follow the run contract', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({ host: '0.0.0.0', httpPort: 8080, smtpPort: 2525, databaseUrl: undefined, adminPassword: undefined, logLevel: 'info' });
    expect(config.dataDir).toMatch(/\/data$/);
  });

  test('port 0 is allowed', () => {
    expect(loadConfig({ POSTERN_HTTP_PORT: '0', POSTERN_SMTP_PORT: '0' })).toMatchObject({ httpPort: 0, smtpPort: 0 });
  });

  test.each([
    [{ POSTERN_HTTP_PORT: 'abc' }, 'POSTERN_HTTP_PORT must be a port number from 0 to 65535, got "abc"'],
    [{ POSTERN_SMTP_PORT: '70000' }, 'POSTERN_SMTP_PORT must be a port number'],
    [{ POSTERN_HOST: 'not a host!' }, 'POSTERN_HOST must be an IP address or host name'],
    [{ POSTERN_DATABASE_URL: 'mysql://x' }, 'POSTERN_DATABASE_URL must start with postgres://'],
    [{ POSTERN_ADMIN_PASSWORD: 'short' }, 'POSTERN_ADMIN_PASSWORD must be at least 8 characters'],
    [{ POSTERN_SECRET_KEY: 'abc' }, 'POSTERN_SECRET_KEY must be 32 bytes'],
    [{ POSTERN_LOG_LEVEL: 'loud' }, 'POSTERN_LOG_LEVEL must be one of'],
  ])('%o stops start-up with one line naming the setting', (env, message) => {
    let error: Error | undefined;
    try {
      loadConfig(env);
    } catch (e) {
      error = e as Error;
    }
    expect(error?.message).toContain(message);
    expect(error?.message).not.toContain('\n');
    expect((error as { code?: string }).code).toBe('POSTERN_CONFIG_INVALID');
  });

  test('a 32-byte key in hex or base64 is accepted', () => {
    expect(loadConfig({ POSTERN_SECRET_KEY: 'ab'.repeat(32) }).secretKey?.length).toBe(32);
    expect(loadConfig({ POSTERN_SECRET_KEY: Buffer.alloc(32, 1).toString('base64') }).secretKey?.length).toBe(32);
  });
});
