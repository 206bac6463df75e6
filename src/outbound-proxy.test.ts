import { inspect } from 'node:util';
import { describe, expect, test } from 'vitest';
import { describeError, scrubSecrets } from './log.js';
import { matchesNoProxy, OutboundProxy, parseNoProxy, ProxyTunnelError } from './outbound-proxy.js';
import { classifyConnectionError } from './tls/trust.js';

const bypassed = (url: string, noProxy: string) => matchesNoProxy(new URL(url), parseNoProxy(noProxy));

describe('NO_PROXY', () => {
  test.each([
    ['https://login.microsoftonline.com/common/oauth2/v2.0', 'login.microsoftonline.com', true],
    ['https://login.microsoftonline.com/', 'microsoftonline.com', true],
    ['https://login.microsoftonline.com/', '.microsoftonline.com', true],
    ['https://login.microsoftonline.com/', '*.microsoftonline.com', true],
    ['https://microsoftonline.com/', '.microsoftonline.com', true],
    ['https://notmicrosoftonline.com/', 'microsoftonline.com', false],
    ['https://login.microsoftonline.com/', 'login.microsoftonline.co', false],
    ['https://LOGIN.MicrosoftOnline.com/', 'login.microsoftonline.COM', true],
    ['https://login.microsoftonline.com./', 'login.microsoftonline.com', true],
    ['https://oauth2.googleapis.com/token', '*', true],
    ['https://oauth2.googleapis.com/token', 'example.com, *', true],
    ['https://oauth2.googleapis.com/token', '', false],
    ['https://oauth2.googleapis.com/token', ' , ', false],
  ])('%s with NO_PROXY=%j → bypassed %s', (url, noProxy, expected) => {
    expect(bypassed(url, noProxy)).toBe(expected);
  });

  test('a port limits an entry to that port; without a port the scheme default counts', () => {
    expect(bypassed('https://idp.corp.example:8443/token', 'idp.corp.example:8443')).toBe(true);
    expect(bypassed('https://idp.corp.example/token', 'idp.corp.example:8443')).toBe(false);
    expect(bypassed('https://idp.corp.example/token', 'idp.corp.example:443')).toBe(true);
    expect(bypassed('https://idp.corp.example:8443/token', '*:443')).toBe(false);
  });

  test('IP addresses and CIDR ranges match IP-literal hosts only (no DNS lookup)', () => {
    expect(bypassed('https://127.0.0.1:9443/', '127.0.0.1')).toBe(true);
    expect(bypassed('https://10.20.30.40/', '10.0.0.0/8')).toBe(true);
    expect(bypassed('https://11.20.30.40/', '10.0.0.0/8')).toBe(false);
    expect(bypassed('https://[::1]:9443/', '::1')).toBe(true);
    expect(bypassed('https://[::1]:9443/', '[::1]:9443')).toBe(true);
    expect(bypassed('https://[fd00::5]/', 'fd00::/8')).toBe(true);
    expect(bypassed('https://intranet.corp/', '10.0.0.0/8')).toBe(false);
  });

  test.each(['http://example.com', 'exa mple.com/x', 'host:port', 'host:70000', '-bad-.example', '10.0.0.0/99'])(
    'the unreadable entry %j is refused with a message naming NO_PROXY',
    (entry) => {
      expect(() => parseNoProxy(`example.org,${entry}`)).toThrow(/^NO_PROXY: ".*" is not a host name/);
    },
  );
});

describe('OutboundProxy.parse', () => {
  test('host:port, the origin without credentials, Basic credentials percent-decoded', () => {
    const proxy = OutboundProxy.parse('http://us%40er:p%3Ass@proxy.corp.example:3128', 'POSTERN_HTTPS_PROXY');
    expect(proxy.origin).toBe('http://proxy.corp.example:3128');
    expect(proxy.address).toBe('proxy.corp.example:3128');
    expect(proxy.authorization).toBe(`Basic ${Buffer.from('us@er:p:ss').toString('base64')}`);
  });

  test('the port defaults to the scheme’s; https:// proxies are accepted', () => {
    expect(OutboundProxy.parse('http://proxy.corp.example', 'HTTPS_PROXY').address).toBe('proxy.corp.example:80');
    expect(OutboundProxy.parse('https://proxy.corp.example/', 'HTTPS_PROXY').origin).toBe('https://proxy.corp.example:443');
    expect(OutboundProxy.parse('http://[::1]:3128', 'HTTPS_PROXY').address).toBe('[::1]:3128');
  });

  test.each([
    ['proxy.corp.example:3128', /must be a proxy URL like http:\/\/proxy\.example\.com:3128/],
    ['socks5://proxy.corp.example:1080', /\(http:\/\/ or https:\/\/\), got "socks5:\/\/proxy\.corp\.example:1080"/],
    ['http://proxy.corp.example:3128/path', /without a path or query/],
    ['http://proxy.corp.example:3128/?x=1', /without a path or query/],
    ['http://proxy.corp.example:99999', /must be a proxy URL/],
    ['http://user:%E0%A4%A@proxy.corp.example:3128', /not correctly percent-encoded/],
  ])('%s is refused', (value, message) => {
    expect(() => OutboundProxy.parse(value, 'POSTERN_HTTPS_PROXY')).toThrow(message);
    expect(() => OutboundProxy.parse(value, 'POSTERN_HTTPS_PROXY')).toThrow(expect.objectContaining({ code: 'POSTERN_CONFIG_INVALID' }));
  });

  test('an invalid URL is quoted without its credentials', () => {
    expect(() => OutboundProxy.parse('http://user:secret-pass@proxy corp:3128', 'POSTERN_HTTPS_PROXY')).toThrow(/"http:\/\/\[redacted\]@proxy corp:3128"/);
    expect(() => OutboundProxy.parse('user:secret-p@ss@proxy:3128', 'HTTPS_PROXY')).toThrow(/got "\[redacted\]@proxy:3128"$/);
  });

  test('JSON and inspect show scheme://host:port, never the credentials', () => {
    const proxy = OutboundProxy.parse('http://alice:s3cret-value@proxy.corp.example:3128', 'POSTERN_HTTPS_PROXY', '.corp.example');
    for (const text of [JSON.stringify({ config: proxy }), inspect(proxy, { depth: 5, showHidden: true }), String(JSON.stringify(proxy))]) {
      expect(text).toContain('http://proxy.corp.example:3128');
      expect(text).not.toContain('s3cret-value');
      expect(text).not.toContain(Buffer.from('alice:s3cret-value').toString('base64'));
    }
  });
});

describe('proxy failures as Server Connection Status reasons', () => {
  const proxy = OutboundProxy.parse('http://proxy.corp.example:3128', 'HTTPS_PROXY');
  const viaFetch = (error: unknown) => new TypeError('fetch failed', { cause: error });

  test.each([
    [407, 'The proxy at proxy.corp.example:3128 refused the connection: 407 Proxy Authentication Required. The proxy requires a user name and password: give them in HTTPS_PROXY'],
    [403, 'The proxy at proxy.corp.example:3128 refused the connection: 403 Forbidden. The proxy does not allow connections to login.microsoftonline.com:443'],
    [502, 'The proxy at proxy.corp.example:3128 refused the connection: 502 Bad Gateway. The proxy could not open a connection to login.microsoftonline.com:443'],
  ])('CONNECT answered %i', (status, reason) => {
    const failure = classifyConnectionError(viaFetch(new ProxyTunnelError(proxy, 'login.microsoftonline.com:443', status)), 'login.microsoftonline.com');
    expect(failure.kind).toBe('proxy-refused');
    expect(failure.code).toBe(String(status));
    expect(failure.reason).toContain(reason);
  });

  test.each([
    ['ECONNREFUSED', 'connection refused'],
    ['ENOTFOUND', 'its host name could not be resolved'],
    ['UND_ERR_CONNECT_TIMEOUT', 'timed out'],
    ['SELF_SIGNED_CERT_IN_CHAIN', 'its certificate is not trusted: SELF_SIGNED_CERT_IN_CHAIN'],
  ])('the proxy unreachable (%s) names the proxy, not the authorization server', (code, why) => {
    const cause = Object.assign(new Error(`socket error ${code}`), { code });
    const failure = classifyConnectionError(viaFetch(new ProxyTunnelError(proxy, 'login.microsoftonline.com:443', undefined, { cause })), 'login.microsoftonline.com');
    expect(failure.kind).toBe('proxy-unreachable');
    expect(failure.reason.startsWith(`Could not reach the proxy at proxy.corp.example:3128 (${why}). `)).toBe(true);
    expect(failure.reason).not.toContain('login.microsoftonline.com');
  });
});

describe('log scrubbing', () => {
  test('a URL’s user:password is removed from free text and error summaries', () => {
    expect(scrubSecrets('connect via http://alice:s3cret@proxy:3128 failed')).toBe('connect via http://[redacted]@proxy:3128 failed');
    const summary = JSON.stringify(describeError(new Error('bad proxy https://bob:pa55@proxy.corp:443')));
    expect(summary).not.toContain('pa55');
    expect(summary).toContain('https://[redacted]@proxy.corp:443');
  });
});
