import { describe, expect, it } from 'vitest';
import { loadConfig, RELAY_LIMIT_DEFAULTS } from './config.js';

describe('relay limits from the environment', () => {
  it('has defaults and reads POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS and POSTERN_SMTP_SESSION_TIMEOUT_SECONDS', () => {
    expect(RELAY_LIMIT_DEFAULTS).toEqual({ maxConnections: 1000, maxConnectionsPerAddress: 20, maxCommandsBeforeAuth: 25, maxIdleCommands: 30, sessionTimeoutMs: 600_000 });
    expect(loadConfig({}).relayLimits).toEqual({});
    expect(loadConfig({ POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS: '5', POSTERN_SMTP_SESSION_TIMEOUT_SECONDS: '120' }).relayLimits).toEqual({ maxConnectionsPerAddress: 5, sessionTimeoutMs: 120_000 });
  });

  it.each([
    ['POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS', '0', 'POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS must be a whole number from 1 to 1000, got "0"'],
    ['POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS', 'many', 'POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS must be a whole number from 1 to 1000, got "many"'],
    ['POSTERN_SMTP_SESSION_TIMEOUT_SECONDS', '10', 'POSTERN_SMTP_SESSION_TIMEOUT_SECONDS must be a whole number of seconds from 30 to 86400, got "10"'],
  ])('refuses %s=%s with one line', (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(`Invalid configuration: ${message}`);
  });
});
