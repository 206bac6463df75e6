import type { FastifyInstance } from 'fastify';
import Fastify from 'fastify';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import { GatewayMetrics } from '../metrics.js';
import { RemoteUiListener } from './listener.js';

const listeners: RemoteUiListener[] = [];
afterEach(async () => {
  await Promise.all(listeners.splice(0).map((l) => l.close()));
});

function listener(build: () => Promise<FastifyInstance>): RemoteUiListener {
  const store = { ping: async () => {}, schemaVersion: async () => '011_sending_accounts' };
  const metrics = new GatewayMetrics({ sources: {} as never });
  const l = new RemoteUiListener({ build, store, metrics, metricsToken: undefined, notReady: () => [], log: createLogger('silent') });
  listeners.push(l);
  return l;
}

describe('RemoteUiListener', () => {
  it('a Remote UI that fails to build gives that request a 500, and the next request builds it again', async () => {
    let builds = 0;
    const l = listener(async () => {
      builds += 1;
      if (builds === 1) throw new Error('templates missing');
      const app = Fastify();
      app.get('/page', async () => 'the page');
      return app;
    });
    await l.listen({ host: '127.0.0.1', port: 0 });
    const base = `http://127.0.0.1:${(l.server.address() as AddressInfo).port}`;
    const first = await fetch(`${base}/page`);
    expect(first.status).toBe(500);
    expect(await first.text()).toBe('Internal Server Error\n');
    expect(l.loaded).toBe(false);
    // The health check never needed it, failed build or not.
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const second = await fetch(`${base}/page`);
    expect(second.status).toBe(200);
    expect(await second.text()).toBe('the page');
    expect(builds).toBe(2);
    expect(l.loaded).toBe(true);
  });

  it('a store that does not answer makes /healthz 503 and /readyz name the reason, without building the Remote UI', async () => {
    let builds = 0;
    const metrics = new GatewayMetrics({ sources: {} as never });
    const down = async () => {
      throw new Error('connection refused');
    };
    const l = new RemoteUiListener({ build: async () => (builds++, Fastify()), store: { ping: down, schemaVersion: down }, metrics, metricsToken: 'secret', notReady: () => ['starting'], log: createLogger('silent') });
    listeners.push(l);
    await l.listen({ host: '127.0.0.1', port: 0 });
    const base = `http://127.0.0.1:${(l.server.address() as AddressInfo).port}`;
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(503);
    expect(await health.json()).toEqual({ status: 'error', reason: 'database unavailable' });
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ status: 'not ready', reasons: ['database unavailable', 'starting'] });
    const scrape = await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong' } });
    expect(scrape.status).toBe(401);
    expect(scrape.headers.get('www-authenticate')).toContain('invalid_token');
    expect(builds).toBe(0);
  });
});
