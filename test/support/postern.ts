/**
 * Postern in-process for tests: a fresh data directory, port 0 everywhere, logs captured so tests can
 * assert what was (and was not) logged. Plus a small browser-less web client (cookie jar + CSRF token
 * scraping) for Remote UI tests that do not need Chromium.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fetch as undiciFetch, type Dispatcher } from 'undici';
import { createPostern, type Postern } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import type { WebDependencies } from '../../src/web/context.js';
import { LogLines } from './events.js';

export const ADMIN_PASSWORD = 'admin-password-for-tests';

export interface TestPostern {
  postern: Postern;
  url: string;
  /** The Remote UI over HTTPS, when config.https was given. */
  httpsUrl: string | undefined;
  dataDir: string;
  /** Everything logged so far (JSON lines). */
  logs(): string;
  /** The same lines parsed, with waits for a line to be written (events.ts). */
  log: LogLines;
  close(): Promise<void>;
}

export interface TestPosternOptions {
  config?: Partial<Config>;
  /** CA certificates to register before start (PEM). */
  caPems?: string[];
  /** Keep the data directory on close (for restart tests). */
  keepDataDir?: boolean;
}

export async function startTestPostern(options: TestPosternOptions = {}): Promise<TestPostern> {
  const dataDir = options.config?.dataDir ?? mkdtempSync(join(tmpdir(), 'postern-test-'));
  const lines: string[] = [];
  const log = new LogLines();
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      lines.push(chunk.toString());
      log.write(chunk.toString());
      callback();
    },
  });
  const config: Config = {
    dataDir,
    host: '127.0.0.1',
    httpPort: 0,
    smtpPort: 0,
    databaseUrl: undefined,
    adminPassword: ADMIN_PASSWORD,
    secretKey: undefined,
    logLevel: 'debug',
    extraCaFile: undefined,
    ...options.config,
  };
  const postern = await createPostern(config, createLogger(config.logLevel, sink));
  for (const pem of options.caPems ?? []) await postern.caCertificates.add(pem);
  await postern.start();
  return {
    postern,
    url: `http://127.0.0.1:${postern.httpPort}`,
    httpsUrl: postern.httpsPort === undefined ? undefined : `https://127.0.0.1:${postern.httpsPort}`,
    dataDir,
    logs: () => lines.join(''),
    log,
    async close() {
      await postern.stop();
      if (!options.keepDataDir && !options.config?.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A minimal browser: cookies, manual redirects, and the CSRF token of the last page fetched. */
export class WebClient {
  readonly #cookies = new Map<string, string>();
  #csrf = '';
  lastStatus = 0;
  lastLocation: string | undefined;

  /** `dispatcher`: undici's, e.g. an Agent that trusts a test certificate for an https:// base URL. */
  constructor(
    readonly baseUrl: string,
    readonly dispatcher?: Dispatcher,
  ) {}

  #store(response: { headers: { getSetCookie(): string[] } }) {
    for (const header of response.headers.getSetCookie()) {
      const [pair] = header.split(';');
      const index = pair!.indexOf('=');
      const name = pair!.slice(0, index).trim();
      const value = pair!.slice(index + 1).trim();
      if (/expires=Thu, 01 Jan 1970/i.test(header) || value === '') this.#cookies.delete(name);
      else this.#cookies.set(name, value);
    }
  }

  #headers(extra: Record<string, string> = {}) {
    const cookie = [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    return { ...(cookie ? { cookie } : {}), ...extra };
  }

  /** The Cookie header this client sends, for a request made outside it. */
  get cookieHeader(): string {
    return this.#headers().cookie ?? '';
  }

  async #request(path: string, init: RequestInit = {}): Promise<string> {
    const url = new URL(path, this.baseUrl);
    const headers = this.#headers(init.headers as Record<string, string>);
    const response = this.dispatcher
      ? await undiciFetch(url, { method: init.method, body: init.body as URLSearchParams | undefined, headers, redirect: 'manual', dispatcher: this.dispatcher })
      : await fetch(url, { ...init, headers, redirect: 'manual' });
    this.#store(response);
    this.lastStatus = response.status;
    this.lastLocation = response.headers.get('location') ?? undefined;
    const html = await response.text();
    const token = /name="_csrf" value="([^"]+)"/.exec(html)?.[1];
    if (token) this.#csrf = token;
    return html;
  }

  async get(path: string): Promise<string> {
    return this.#request(path);
  }

  /** Follows redirects for GETs, like a browser. */
  async page(path: string): Promise<string> {
    let html = await this.get(path);
    for (let i = 0; i < 5 && this.lastStatus >= 300 && this.lastStatus < 400 && this.lastLocation; i++) {
      html = await this.get(this.lastLocation);
    }
    return html;
  }

  /** Posts a form with the current CSRF token (unless `_csrf` is given). Returns the response body. */
  async post(path: string, fields: Record<string, string> = {}): Promise<string> {
    return this.#request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: this.#csrf, ...fields }),
    });
  }

  async login(username = 'admin', password = ADMIN_PASSWORD): Promise<void> {
    await this.get('/login');
    await this.post('/login', { username, password, next: '/' });
    if (this.lastStatus !== 303) throw new Error(`login failed with HTTP ${this.lastStatus}`);
    await this.get('/');
  }
}

/** Text of the element carrying data-field="name" in a status fragment. */
export function field(html: string, name: string): string | undefined {
  const match = new RegExp(`data-field="${name}"[^>]*>([\\s\\S]*?)</`).exec(html);
  return match?.[1]?.replace(/\s+/g, ' ').trim().replace(/&#39;/g, "'").replace(/&quot;/g, '"').replace(/&amp;/g, '&');
}

/** The one polling helper (events.ts): only for a state nothing signals. */
export { eventually } from './events.js';

/** A running Postern's parts as the Remote UI takes them, for a second web app built beside it in a test. */
export function webDependenciesOf(postern: Postern): Omit<WebDependencies, 'plugins'> {
  return {
    store: postern.store,
    users: postern.users,
    audit: postern.audit,
    caCertificates: postern.caCertificates,
    oauth: postern.oauth,
    accounts: postern.accounts,
    queue: postern.queue,
    log: createLogger('fatal'),
    httpPort: () => 0,
  };
}
