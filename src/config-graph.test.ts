import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';

describe('POSTERN_GRAPH_URL', () => {
  it('is absent by default (the global Graph) and takes a national cloud\'s https address', () => {
    expect(loadConfig({}).graphUrl).toBeUndefined();
    expect(loadConfig({ POSTERN_GRAPH_URL: '' }).graphUrl).toBeUndefined();
    expect(loadConfig({ POSTERN_GRAPH_URL: 'https://graph.microsoft.us/v1.0/' }).graphUrl).toBe('https://graph.microsoft.us/v1.0');
  });

  it.each(['http://graph.microsoft.com/v1.0', 'graph.microsoft.us', 'https://user:pw@graph.microsoft.us/v1.0', 'https://graph.microsoft.us/v1.0?x=1', 'https://graph.microsoft.us/#a'])(
    '"%s" stops start-up with one line naming the setting',
    (value) => {
      let error: Error | undefined;
      try {
        loadConfig({ POSTERN_GRAPH_URL: value });
      } catch (e) {
        error = e as Error;
      }
      expect(error?.message).toMatch(/^Invalid configuration: POSTERN_GRAPH_URL must be an https:\/\/ address/);
      expect((error as { code?: string }).code).toBe('POSTERN_CONFIG_INVALID');
    },
  );
});
