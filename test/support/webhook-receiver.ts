/**
 * A webhook receiver for tests: a real node:http (or node:https) server on 127.0.0.1, port 0, that records
 * every request and answers with scripted statuses (default 200), like Teams, Slack or a failing proxy would.
 *
 * Test infrastructure only: never import this from production code.
 */
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export interface ReceivedWebhook {
  method: string;
  /** Path and query as requested. */
  path: string;
  headers: IncomingHttpHeaders;
  raw: string;
  /** The body parsed as JSON (undefined when it is not JSON). */
  body: any;
  /** The status this receiver answered with. */
  status: number;
}

export interface ScriptedAnswer {
  status: number;
  body?: string;
  headers?: Record<string, string>;
}

export interface WebhookReceiver {
  /** scheme://127.0.0.1:port (no trailing slash). */
  origin: string;
  received: ReceivedWebhook[];
  /** Answers the next requests with these, in order; afterwards `defaultAnswer`. */
  answerNext(...answers: Array<number | ScriptedAnswer>): void;
  defaultAnswer: ScriptedAnswer;
  close(): Promise<void>;
}

export async function startWebhookReceiver(options: { tls?: { key: string; cert: string } } = {}): Promise<WebhookReceiver> {
  const script: ScriptedAnswer[] = [];
  const received: ReceivedWebhook[] = [];
  const receiver: WebhookReceiver = {
    origin: '',
    received,
    defaultAnswer: { status: 200, body: 'ok' },
    answerNext(...answers) {
      script.push(...answers.map((a) => (typeof a === 'number' ? { status: a } : a)));
    },
    close: async () => undefined,
  };
  const handler = (request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = JSON.parse(raw);
      } catch {
        body = undefined;
      }
      const answer = script.shift() ?? receiver.defaultAnswer;
      received.push({ method: request.method ?? '', path: request.url ?? '', headers: request.headers, raw, body, status: answer.status });
      response.writeHead(answer.status, { 'content-type': 'text/plain', ...answer.headers });
      response.end(answer.body ?? '');
    });
  };
  const server: Server = options.tls ? createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, handler) : createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  receiver.origin = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return receiver;
}
