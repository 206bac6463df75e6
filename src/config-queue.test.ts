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
  ])('%s=%s stops start-up with one line naming the setting', (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(`Invalid configuration: ${message}`);
  });
});
