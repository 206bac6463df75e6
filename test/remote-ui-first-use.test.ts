/**
 * The Remote UI is built at the first request that needs it (decision 032): health checks and scrapes are
 * answered without it, the first page builds it once even when many browsers ask at the same moment, and
 * everything after goes to it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostern, type Postern } from '../src/app.js';
import { createLogger } from '../src/log.js';
import { ADMIN_PASSWORD } from './support/postern.js';

describe('the Remote UI, built on first use', () => {
  let dataDir: string;
  let postern: Postern;
  let base: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'postern-first-use-'));
    postern = await createPostern(
      { dataDir, host: '127.0.0.1', httpPort: 0, smtpPort: 0, databaseUrl: undefined, adminPassword: ADMIN_PASSWORD, secretKey: undefined, logLevel: 'silent', extraCaFile: undefined },
      createLogger('silent'),
    );
    await postern.start();
    base = `http://127.0.0.1:${postern.httpPort}`;
  });

  afterAll(async () => {
    await postern?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('answers /healthz, /readyz and /metrics (GET and HEAD) without building it', async () => {
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(health.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(health.headers.get('cache-control')).toBe('no-store');
    expect(await health.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready' });
    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('postern_build_info');
    const head = await fetch(`${base}/healthz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    // 50 checks at once, as a busy load balancer pool might send them.
    const many = await Promise.all(Array.from({ length: 50 }, () => fetch(`${base}/readyz`).then((r) => r.status)));
    expect(many.every((status) => status === 200)).toBe(true);
    expect(postern.web.loaded).toBe(false);
  });

  it('builds it once for 20 first requests at the same moment, and each gets its page', async () => {
    const pages = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/login`).then(async (r) => ({ status: r.status, body: await r.text() }))));
    expect(pages.map((p) => p.status)).toEqual(Array(20).fill(200));
    expect(pages.every((p) => p.body.includes('<form'))).toBe(true);
    expect(postern.web.loaded).toBe(true);
    expect(await postern.web.app()).toBe(await postern.web.app());
  });

  it('leaves a query string on a health path to the Remote UI, which answers as its routes do', async () => {
    const viaPlain = await (await fetch(`${base}/healthz`)).json();
    const viaUi = await (await postern.web.app()).inject({ method: 'GET', url: '/healthz' });
    expect(viaUi.json()).toEqual(viaPlain);
    const withQuery = await fetch(`${base}/healthz?probe=1`);
    expect([200, 400]).toContain(withQuery.status);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });
});
