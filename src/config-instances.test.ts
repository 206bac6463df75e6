import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';

describe('settings for several instances', () => {
  it('reads the lease, the PROXY protocol peers and the trusted HTTP proxies; all unset by default', () => {
    const defaults = loadConfig({});
    expect(defaults.queueLeaseMs).toBeUndefined();
    expect(defaults.smtpProxyFrom).toBeUndefined();
    expect(defaults.httpTrustedProxies).toBeUndefined();
    const set = loadConfig({ POSTERN_QUEUE_LEASE_SECONDS: '2.5', POSTERN_SMTP_PROXY_PROTOCOL: '10.0.0.5, 10.0.0.6', POSTERN_HTTP_TRUSTED_PROXIES: '::1' });
    expect(set.queueLeaseMs).toBe(2500);
    expect(set.smtpProxyFrom).toEqual(['10.0.0.5', '10.0.0.6']);
    expect(set.httpTrustedProxies).toEqual(['::1']);
  });

  it.each([
    ['POSTERN_SMTP_PROXY_PROTOCOL', 'haproxy.local', 'POSTERN_SMTP_PROXY_PROTOCOL must list IP addresses (comma-separated), got "haproxy.local"'],
    ['POSTERN_HTTP_TRUSTED_PROXIES', '10.0.0.0/8', 'POSTERN_HTTP_TRUSTED_PROXIES must list IP addresses (comma-separated), got "10.0.0.0/8"'],
    ['POSTERN_QUEUE_LEASE_SECONDS', '7200', 'POSTERN_QUEUE_LEASE_SECONDS must be at most 3600 seconds (1 hour), got "7200"'],
  ])('refuses %s=%s with one line', (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(`Invalid configuration: ${message}`);
  });
});
