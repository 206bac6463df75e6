/**
 * The Remote UI's listeners, with the Remote UI itself loaded at the first request that needs it.
 *
 * Purpose: a gateway that relays mail and is not being administered does not carry the Remote UI (Fastify,
 * its plugins, every screen's templates and schemas, the JSON API): about 13 MB of its idle memory
 * (docs/decisions/032-remote-ui-loaded-on-first-use.md). /healthz, /readyz and /metrics, which load
 * balancers, service managers and Prometheus ask all day, are answered here without it
 * (src/web/health-answers.ts); every other request waits for the Remote UI once, then goes to its request
 * handler (`fastify.routing`), on plain HTTP and on HTTPS alike.
 * Inputs: HTTP requests; a function that builds the Remote UI. Outputs: responses.
 * Failure modes: if building the Remote UI fails, that request gets a plain 500 and the error is logged;
 * the next request tries again. Nothing here ends the process.
 */
import type { FastifyInstance } from 'fastify';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describeError, type Logger } from '../log.js';
import type { GatewayMetrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import { healthAnswer, metricsAnswer, readinessAnswer, type Answer } from './health-answers.js';

/** Fastify's default for its own server; browsers keep a connection to the Remote UI between pages. */
const KEEP_ALIVE_TIMEOUT_MS = 72_000;

export interface RemoteUiListenerOptions {
  /** Builds the Remote UI (called once, at the first request that needs it, or by `app()`). */
  build: () => Promise<FastifyInstance>;
  store: Pick<Store, 'ping' | 'schemaVersion'>;
  metrics: GatewayMetrics;
  metricsToken: string | undefined;
  notReady: () => string[];
  log: Logger;
}

export class RemoteUiListener {
  readonly server: Server;
  readonly #options: RemoteUiListenerOptions;
  #app: Promise<FastifyInstance> | undefined;
  #built: FastifyInstance | undefined;

  constructor(options: RemoteUiListenerOptions) {
    this.#options = options;
    this.server = createServer((request, response) => this.handle(request, response));
    this.server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  }

  /** The Remote UI, built on first use. */
  app(): Promise<FastifyInstance> {
    if (this.#app) return this.#app;
    const building = (async () => {
      const app = await this.#options.build();
      await app.ready();
      this.#built = app;
      this.#options.log.info({ component: 'web' }, 'Remote UI loaded');
      return app;
    })();
    // A failed build is tried again by the next request.
    building.catch(() => {
      if (this.#app === building) this.#app = undefined;
    });
    return (this.#app = building);
  }

  /** Whether the Remote UI has been built (it is at the first page, sign-in or API request). */
  get loaded(): boolean {
    return this.#built !== undefined;
  }

  get listening(): boolean {
    return this.server.listening;
  }

  /** A request from either listener. */
  handle(request: IncomingMessage, response: ServerResponse): void {
    const answer = this.#plain(request);
    if (answer) {
      answer.then(
        (value) => send(request, response, value),
        (error: unknown) => this.#fail(response, error, 'a health or metrics request failed'),
      );
      return;
    }
    if (this.#built) return this.#built.routing(request, response);
    this.app().then(
      (app) => app.routing(request, response),
      (error: unknown) => this.#fail(response, error, 'the Remote UI could not be loaded'),
    );
  }

  /** GET or HEAD of /healthz, /readyz or /metrics without a query string; anything else is the Remote UI's. */
  #plain(request: IncomingMessage): Promise<Answer> | undefined {
    if (request.method !== 'GET' && request.method !== 'HEAD') return undefined;
    const options = this.#options;
    switch (request.url) {
      case '/healthz':
        return healthAnswer(options.store);
      case '/readyz':
        return readinessAnswer(options.store, options.notReady);
      case '/metrics':
        return metricsAnswer(options.metrics, options.metricsToken, request.headers.authorization);
      default:
        return undefined;
    }
  }

  #fail(response: ServerResponse, error: unknown, message: string): void {
    this.#options.log.error({ component: 'web', err: describeError(error) }, message);
    if (response.headersSent) return void response.destroy();
    response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    response.end('Internal Server Error\n');
  }

  listen(options: { host: string; port: number }): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: options.host, port: options.port }, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as AddressInfo).port);
      });
    });
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      // As Fastify does for its own server: idle keep-alive connections would hold close() open.
      this.server.closeIdleConnections();
    });
    const app = this.#app ? await this.#app.catch(() => undefined) : undefined;
    await app?.close();
  }
}

function send(request: IncomingMessage, response: ServerResponse, answer: Answer): void {
  const body = Buffer.from(answer.body);
  response.writeHead(answer.status, {
    ...answer.headers,
    'content-length': String(body.length),
    'x-content-type-options': 'nosniff',
  });
  response.end(request.method === 'HEAD' ? undefined : body);
}
