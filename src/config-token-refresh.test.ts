import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';

describe('POSTERN_TOKEN_REFRESH_AHEAD_SECONDS', () => {
  it('defaults to 300 seconds and reads whole seconds from 60 to 3000', () => {
    expect(loadConfig({}).tokenRefreshAheadMs).toBe(300_000);
    expect(loadConfig({ POSTERN_TOKEN_REFRESH_AHEAD_SECONDS: '' }).tokenRefreshAheadMs).toBe(300_000);
    expect(loadConfig({ POSTERN_TOKEN_REFRESH_AHEAD_SECONDS: '60' }).tokenRefreshAheadMs).toBe(60_000);
    expect(loadConfig({ POSTERN_TOKEN_REFRESH_AHEAD_SECONDS: ' 900 ' }).tokenRefreshAheadMs).toBe(900_000);
    expect(loadConfig({ POSTERN_TOKEN_REFRESH_AHEAD_SECONDS: '3000' }).tokenRefreshAheadMs).toBe(3_000_000);
  });

  it.each(['59', '3001', '0', '-300', '300.5', '5m', 'soon'])('"%s" stops start-up with one line naming the setting', (value) => {
    let error: Error | undefined;
    try {
      loadConfig({ POSTERN_TOKEN_REFRESH_AHEAD_SECONDS: value });
    } catch (e) {
      error = e as Error;
    }
    expect(error?.message).toBe(
      `Invalid configuration: POSTERN_TOKEN_REFRESH_AHEAD_SECONDS must be a whole number of seconds from 60 to 3000, got "${value}"`,
    );
    expect((error as { code?: string }).code).toBe('POSTERN_CONFIG_INVALID');
  });
});
