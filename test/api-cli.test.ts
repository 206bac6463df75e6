/**
 * `postern status --json` and `postern queue list --json` print what GET /api/v1/status and GET /api/v1/queue
 * answer, for the same data: the command line runs on the gateway's data directory while the gateway runs,
 * with the queue held still (no OAuth account is authorized, so the queue manager holds every message).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli } from './support/cli.js';
import { eventually, startTestPostern, WebClient, type TestPostern } from './support/postern.js';
import { enqueueMessage } from './support/queue.js';

let gw: TestPostern;
let secret: string;
let env: Record<string, string>;

async function get(path: string): Promise<unknown> {
  const response = await fetch(`${gw.url}/api/v1${path}`, { headers: { authorization: `Bearer ${secret}` } });
  expect(response.status).toBe(200);
  return response.json();
}

beforeAll(async () => {
  gw = await startTestPostern();
  env = { POSTERN_DATA_DIR: gw.dataDir };
  const admin = new WebClient(gw.url);
  await admin.login();
  await admin.get('/settings/api-tokens');
  const html = await admin.post('/settings/api-tokens', { name: 'cli-compare', scope: 'read', expiresInDays: '1' });
  secret = /data-field="token">(pst_[A-Za-z0-9_-]+)</.exec(html)![1]!;
  const ids: string[] = [];
  for (const subject of ['First', 'Second', 'Third']) {
    ids.push((await enqueueMessage(gw.postern.queue, `Subject: ${subject}\r\n\r\nhello\r\n`, { subject })).id);
  }
  gw.postern.queueManager.kick();
  await eventually(async () => (await gw.postern.queue.counts()).held === ids.length, 20_000, 'every message to be held');
});

afterAll(async () => {
  await gw?.close();
});

describe('the command line prints the API\'s shapes', () => {
  test('postern status --json equals GET /api/v1/status', async () => {
    const cli = await runCli(['status', '--json'], env);
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
    const printed = JSON.parse(cli.stdout);
    expect(printed).toEqual(await get('/status'));
    expect(printed.accounts.map((a: { provider: string }) => a.provider).sort()).toEqual(['google', 'microsoft']);
    expect(printed.queue.counts.held).toBe(3);
  });

  test('postern queue list --json equals GET /api/v1/queue, and --all equals ?state=all', async () => {
    const waiting = await runCli(['queue', 'list', '--json'], env);
    expect(waiting.code).toBe(0);
    const printed = JSON.parse(waiting.stdout);
    expect(printed).toEqual(await get('/queue'));
    expect(printed.messages.map((m: { subject: string }) => m.subject)).toEqual(['Third', 'Second', 'First']);
    const all = await runCli(['queue', '--all', '--json'], env);
    expect(JSON.parse(all.stdout)).toEqual(await get('/queue?state=all'));
  });

  test('the text output stays, and a wrong option is a usage error (64)', async () => {
    const text = await runCli(['status'], env);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('OAuth 2.0 (Microsoft): not in use');
    const bad = await runCli(['status', '--yaml'], env);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toContain('status does not take "--yaml"');
    expect(bad.stderr).toContain('Usage: postern status [--json]');
    const badQueue = await runCli(['queue', 'list', '--json', '--xml'], env);
    expect(badQueue.code).toBe(64);
    expect(badQueue.stderr).toContain('queue list does not take "--xml"');
    expect(badQueue.stderr).toContain('Usage: postern queue [list]');
  });
});
