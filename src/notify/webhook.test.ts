import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startWebhookReceiver, type WebhookReceiver } from '../../test/support/webhook-receiver.js';
import { describeAnswer, postWebhook } from './webhook.js';

let receiver: WebhookReceiver;
const plainFetch = (url: string, init: RequestInit) => fetch(url, init);

beforeAll(async () => {
  receiver = await startWebhookReceiver();
});

afterAll(async () => {
  await receiver.close();
});

describe('the receiver\'s answer in plain words', () => {
  test('2xx is delivered (Teams Workflows answer 202)', () => {
    expect(describeAnswer(202)).toEqual({ outcome: 'delivered', httpStatus: 202, summary: 'The receiver accepted the notification (HTTP 202 Accepted).' });
  });

  test('404, 403 and 400 fail at once and say what to check', () => {
    expect(describeAnswer(404)).toMatchObject({ outcome: 'failed', summary: expect.stringMatching(/^The receiver answered HTTP 404 Not Found: there is no webhook at this address\. .*Copy the Webhook URL again/) });
    expect(describeAnswer(403).summary).toMatch(/secret in the Webhook URL is wrong or no longer valid/);
    expect(describeAnswer(400, 'no_text').summary).toMatch(/Check that Format matches the receiver.* The receiver said: "no_text"\.$/);
  });

  test('5xx, 408 and 429 are worth another attempt; a redirect is not followed', () => {
    expect(describeAnswer(503, '', 60_000)).toMatchObject({ outcome: 'retry', retryAfterMs: 60_000 });
    expect(describeAnswer(429).outcome).toBe('retry');
    expect(describeAnswer(408).outcome).toBe('retry');
    expect(describeAnswer(301)).toMatchObject({ outcome: 'failed', summary: expect.stringMatching(/does not follow redirects/) });
  });
});

describe('postWebhook over a real socket', () => {
  test('POSTs JSON and reports the status', async () => {
    receiver.answerNext(202);
    const answer = await postWebhook(plainFetch, `${receiver.origin}/hook?sig=abc`, { text: 'hello' });
    expect(answer).toMatchObject({ outcome: 'delivered', httpStatus: 202 });
    const request = receiver.received.at(-1)!;
    expect(request).toMatchObject({ method: 'POST', path: '/hook?sig=abc', body: { text: 'hello' } });
    expect(request.headers['content-type']).toBe('application/json; charset=utf-8');
  });

  test('a redirect is reported, not followed', async () => {
    const before = receiver.received.length;
    receiver.answerNext({ status: 307, headers: { location: `${receiver.origin}/elsewhere` } });
    expect(await postWebhook(plainFetch, `${receiver.origin}/hook`, {})).toMatchObject({ outcome: 'failed', httpStatus: 307 });
    expect(receiver.received.length - before).toBe(1);
  });

  test('nothing listening: retried, with the reason in plain words and no path', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const answer = await postWebhook(plainFetch, `http://127.0.0.1:${port}/hook/secret-part`, {});
    expect(answer).toEqual({
      outcome: 'retry',
      httpStatus: null,
      summary: `The notification did not reach http://127.0.0.1:${port}/…: 127.0.0.1:${port} refused the connection. Check the URL and port, and any firewall or proxy.`,
    });
  });
});
