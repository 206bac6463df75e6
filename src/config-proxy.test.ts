import { describe, expect, test } from 'vitest';
import { loadConfig } from './config.js';

function configError(env: Record<string, string>): Error | undefined {
  try {
    loadConfig(env);
  } catch (error) {
    return error as Error;
  }
  return undefined;
}

describe('loadConfig: outbound proxy', () => {
  test('no proxy variable: OAuth HTTP connects directly', () => {
    expect(loadConfig({}).outboundProxy).toBeUndefined();
    expect(loadConfig({ NO_PROXY: 'example.com', POSTERN_HTTPS_PROXY: '  ' }).outboundProxy).toBeUndefined();
  });

  test('POSTERN_HTTPS_PROXY wins over https_proxy and HTTPS_PROXY; lower case before upper case', () => {
    const env = { POSTERN_HTTPS_PROXY: 'http://a.example:1', https_proxy: 'http://b.example:2', HTTPS_PROXY: 'http://c.example:3' };
    expect(loadConfig(env).outboundProxy).toMatchObject({ origin: 'http://a.example:1', setting: 'POSTERN_HTTPS_PROXY' });
    expect(loadConfig({ ...env, POSTERN_HTTPS_PROXY: '' }).outboundProxy).toMatchObject({ origin: 'http://b.example:2', setting: 'https_proxy' });
    expect(loadConfig({ HTTPS_PROXY: 'http://c.example:3' }).outboundProxy).toMatchObject({ origin: 'http://c.example:3', setting: 'HTTPS_PROXY' });
  });

  test('no_proxy / NO_PROXY are read with the proxy', () => {
    const proxy = loadConfig({ HTTPS_PROXY: 'http://proxy.example:3128', NO_PROXY: '.corp.example,10.0.0.0/8' }).outboundProxy!;
    expect(proxy.isUsedFor(new URL('https://idp.corp.example/token'))).toBe(false);
    expect(proxy.isUsedFor(new URL('https://login.microsoftonline.com/common/oauth2/v2.0'))).toBe(true);
    expect(loadConfig({ HTTPS_PROXY: 'http://proxy.example:3128', no_proxy: '*', NO_PROXY: '' }).outboundProxy!.isUsedFor(new URL('https://x.example/'))).toBe(false);
  });

  test.each([
    [{ POSTERN_HTTPS_PROXY: 'proxy.example:3128' }, 'POSTERN_HTTPS_PROXY must be a proxy URL like http://proxy.example.com:3128'],
    [{ HTTPS_PROXY: 'socks5://proxy.example:1080' }, 'HTTPS_PROXY must be a proxy URL'],
    [{ https_proxy: 'http://proxy.example:3128/some/path' }, 'https_proxy must be a proxy URL'],
    [{ POSTERN_HTTPS_PROXY: 'http://proxy.example:3128', NO_PROXY: 'good.example,http://bad.example' }, 'NO_PROXY: "http://bad.example" is not a host name'],
    [{ POSTERN_HTTPS_PROXY: 'http://proxy.example:3128', no_proxy: 'a b/c' }, 'no_proxy: "b/c" is not a host name'],
  ])('%o stops start-up with one line naming the setting', (env, message) => {
    const error = configError(env);
    expect(error?.message).toContain(message);
    expect(error?.message).toMatch(/^Invalid configuration: /);
    expect(error?.message).not.toContain('\n');
    expect((error as { code?: string }).code).toBe('POSTERN_CONFIG_INVALID');
  });

  test('the start-up error never repeats the credentials', () => {
    const error = configError({ POSTERN_HTTPS_PROXY: 'http://alice:s3cret-pw@proxy example:3128' });
    expect(error?.message).toContain('POSTERN_HTTPS_PROXY');
    expect(error?.message).not.toContain('s3cret-pw');
  });
});
