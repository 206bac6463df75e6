import { describe, expect, it } from 'vitest';
import { loadConfig, QUEUE_DEFAULTS } from './config.js';

describe('queue settings from the environment', () => {
  it('defaults to RFC 5321 §4.5.4.1 values: first retry after a minute, at most 30 minutes apart, 5 days', () => {
    expect(QUEUE_DEFAULTS).toEqual({ retryBaseMs: 60_000, retryMaxMs: 1_800_000, lifetimeMs: 432_000_000, concurrency: 4 });
    expect(loadConfig({}).queue).toEqual({});
  });

  it('reads seconds (fractions allowed, for tests) and a whole concurrency', () => {
    const config = loadConfig({
      POSTERN_QUEUE_RETRY_BASE_SECONDS: '0.05',
      POSTERN_QUEUE_RETRY_MAX_SECONDS: '2',
      POSTERN_QUEUE_LIFETIME_SECONDS: '3600',
      POSTERN_QUEUE_CONCURRENCY: '8',
    });
    expect(config.queue).toEqual({ retryBaseMs: 50, retryMaxMs: 2000, lifetimeMs: 3_600_000, concurrency: 8 });
  });

  it.each([
    ['POSTERN_QUEUE_RETRY_BASE_SECONDS', 'soon', 'POSTERN_QUEUE_RETRY_BASE_SECONDS must be a positive number of seconds, got "soon"'],
    ['POSTERN_QUEUE_LIFETIME_SECONDS', '-5', 'POSTERN_QUEUE_LIFETIME_SECONDS must be a positive number of seconds, got "-5"'],
    ['POSTERN_QUEUE_CONCURRENCY', '0', 'POSTERN_QUEUE_CONCURRENCY must be a whole number from 1 to 64, got "0"'],
    ['POSTERN_QUEUE_RETRY_BASE_SECONDS', '0', 'POSTERN_QUEUE_RETRY_BASE_SECONDS must be a positive number of seconds, got "0"'],
    ['POSTERN_QUEUE_RETRY_MAX_SECONDS', '0.0001', 'POSTERN_QUEUE_RETRY_MAX_SECONDS must be a positive number of seconds, got "0.0001"'],
    ['POSTERN_QUEUE_RETRY_MAX_SECONDS', '-1', 'POSTERN_QUEUE_RETRY_MAX_SECONDS must be a positive number of seconds, got "-1"'],
    ['POSTERN_QUEUE_RETRY_BASE_SECONDS', '86401', 'POSTERN_QUEUE_RETRY_BASE_SECONDS must be at most 86400 seconds (1 day), got "86401"'],
    ['POSTERN_QUEUE_LIFETIME_SECONDS', '0', 'POSTERN_QUEUE_LIFETIME_SECONDS must be a positive number of seconds, got "0"'],
    ['POSTERN_QUEUE_LIFETIME_SECONDS', '2592001', 'POSTERN_QUEUE_LIFETIME_SECONDS must be at most 2592000 seconds (30 days), got "2592001"'],
    ['POSTERN_QUEUE_CONCURRENCY', '0', 'POSTERN_QUEUE_CONCURRENCY must be a whole number from 1 to 64, got "0"'],
    ['POSTERN_QUEUE_CONCURRENCY', '65', 'POSTERN_QUEUE_CONCURRENCY must be a whole number from 1 to 64, got "65"'],
    ['POSTERN_HTTP_PORT', '65536', 'POSTERN_HTTP_PORT must be a port number from 0 to 65535, got "65536"'],
    ['POSTERN_SMTP_PORT', '-25', 'POSTERN_SMTP_PORT must be a port number from 0 to 65535, got "-25"'],
  ])('%s=%s stops start-up with one line naming the setting', (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(`Invalid configuration: ${message}`);
  });

  it('accepts the bounds themselves: a lifetime of 30 days, a wait of a day', () => {
    expect(loadConfig({ POSTERN_QUEUE_LIFETIME_SECONDS: '2592000', POSTERN_QUEUE_RETRY_MAX_SECONDS: '86400' }).queue).toEqual({ lifetimeMs: 2_592_000_000, retryMaxMs: 86_400_000 });
  });

  it.each([
    [
      { POSTERN_QUEUE_RETRY_BASE_SECONDS: '600', POSTERN_QUEUE_RETRY_MAX_SECONDS: '300' },
      'POSTERN_QUEUE_RETRY_MAX_SECONDS must be at least POSTERN_QUEUE_RETRY_BASE_SECONDS (600), got 300',
    ],
    // The default maximum (30 minutes) counts when only the base is set.
    [{ POSTERN_QUEUE_RETRY_BASE_SECONDS: '3600' }, 'POSTERN_QUEUE_RETRY_MAX_SECONDS must be at least POSTERN_QUEUE_RETRY_BASE_SECONDS (3600), got 1800, the default'],
    [{ POSTERN_QUEUE_RETRY_MAX_SECONDS: '30' }, 'POSTERN_QUEUE_RETRY_MAX_SECONDS must be at least POSTERN_QUEUE_RETRY_BASE_SECONDS (60, the default), got 30'],
    [{ POSTERN_QUEUE_LIFETIME_SECONDS: '30' }, 'POSTERN_QUEUE_LIFETIME_SECONDS must be at least POSTERN_QUEUE_RETRY_BASE_SECONDS (60, the default), got 30'],
    [{ POSTERN_HTTP_PORT: '2525', POSTERN_SMTP_PORT: '2525' }, 'POSTERN_SMTP_PORT must differ from POSTERN_HTTP_PORT, got "2525" for both'],
    [{ POSTERN_HTTP_PORT: '2525' }, 'POSTERN_SMTP_PORT must differ from POSTERN_HTTP_PORT, got "2525" for both'],
  ])('settings that contradict each other stop start-up with one line naming them: %o', (env, message) => {
    expect(() => loadConfig(env)).toThrow(`Invalid configuration: ${message}`);
    try {
      loadConfig(env);
    } catch (error) {
      expect((error as Error).message.split('\n')).toHaveLength(1);
    }
  });

  it('port 0 for both listeners is fine (each picks a free port), and equal base and maximum are too', () => {
    expect(loadConfig({ POSTERN_HTTP_PORT: '0', POSTERN_SMTP_PORT: '0' }).smtpPort).toBe(0);
    expect(loadConfig({ POSTERN_QUEUE_RETRY_BASE_SECONDS: '120', POSTERN_QUEUE_RETRY_MAX_SECONDS: '120' }).queue).toEqual({ retryBaseMs: 120_000, retryMaxMs: 120_000 });
  });
});
