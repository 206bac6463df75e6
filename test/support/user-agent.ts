/**
 * A scripted end user for the stand-in authorization servers (`oauth-standins.ts`): plain HTTPS requests with a
 * cookie jar, no browser. It reads the stand-in's own pages (form ids `op.deviceInputForm`,
 * `op.deviceConfirmForm`, `login`, `consent`, `deny`), fills them in and follows redirects by hand, so that it
 * can stop at the loopback redirect URI without contacting it (as the admin's browser would show "connection
 * refused" while Postern reads the pasted URL or its own listener gets the request).
 *
 * TEST INFRASTRUCTURE ONLY.
 *
 * TLS: uses undici's own fetch with an `Agent({ connect: { ca } })` dispatcher, so the test CA is trusted
 * without NODE_EXTRA_CA_CERTS (which Node only reads at process start).
 */
import { Agent, fetch, type Response } from 'undici';

export interface ApproveDeviceCodeOptions {
  /** `verification_uri` from the device authorization response. */
  verificationUri: string;
  userCode: string;
  email: string;
  password: string;
  /** Press Cancel on the "Are you trying to sign in?" page instead of Continue. */
  decline?: boolean;
  /** PEM of the CA that issued the stand-in's certificate. */
  ca: string | Buffer;
}

export interface DeviceApprovalResult {
  outcome: 'approved' | 'declined';
  /** Text of the last page's title. */
  title: string;
}

export interface AuthorizeOptions {
  /** The full authorization request URL (RFC 6749 §4.1.1). */
  authorizationUrl: string;
  email: string;
  password: string;
  /** Press Cancel on the consent page: the redirect then carries `error=access_denied`. */
  deny?: boolean;
  ca: string | Buffer;
}

/** Thrown when a page is not what the script expects (wrong password, bad code, error page). */
export class UserAgentError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly url: string,
    readonly body: string,
  ) {
    super(`${message} (HTTP ${status} at ${url}): ${summarize(body)}`);
    this.name = 'UserAgentError';
  }
}

/**
 * Walks the device flow's user side (RFC 8628 §3.3): open `verificationUri`, enter the code, confirm (or cancel
 * when `decline`), sign in, consent, and end at the success page.
 */
export async function approveDeviceCode(options: ApproveDeviceCodeOptions): Promise<DeviceApprovalResult> {
  const browser = new Browser(options.ca);
  try {
    let current = await browser.get(options.verificationUri);
    let submittedLogin = false;
    for (let step = 0; step < 20; step++) {
      const forms = parseForms(current.body);
      const title = pageTitle(current.body);
      if (/id="success"/.test(current.body)) return { outcome: 'approved', title };
      if (/id="aborted"/.test(current.body)) return { outcome: 'declined', title };

      const input = forms.get('op.deviceInputForm');
      const confirm = forms.get('op.deviceConfirmForm');
      const login = forms.get('login');
      const consent = forms.get('consent');
      if (input) {
        if (/class="error"/.test(current.body)) throw current.error('the code was not accepted');
        current = await browser.submit(current.url, input, { user_code: options.userCode });
      } else if (confirm) {
        current = await browser.submit(current.url, confirm, options.decline ? { abort: 'yes' } : {});
      } else if (login) {
        if (submittedLogin) throw current.error('sign-in was refused');
        submittedLogin = true;
        current = await browser.submit(current.url, login, { login: options.email, password: options.password });
      } else if (consent) {
        current = await browser.submit(current.url, consent, {});
      } else {
        throw current.error('unexpected page in the device flow');
      }
    }
    throw current.error('the device flow did not finish');
  } finally {
    await browser.close();
  }
}

/**
 * Walks an authorization-code request (sign in, consent or cancel) and returns the final redirect to the
 * client's redirect URI, without fetching it. The URL carries `code`, `state` and `iss` (RFC 9207), or
 * `error=access_denied`.
 */
export async function authorizeInBrowserlessAgent(options: AuthorizeOptions): Promise<URL> {
  const browser = new Browser(options.ca);
  const serverOrigin = new URL(options.authorizationUrl).origin;
  const leavesServer = (location: URL) => location.origin !== serverOrigin;
  try {
    let current = await browser.get(options.authorizationUrl, leavesServer);
    let submittedLogin = false;
    for (let step = 0; step < 20; step++) {
      if (current.redirectedTo) return current.redirectedTo;
      const forms = parseForms(current.body);
      const login = forms.get('login');
      const consent = forms.get('consent');
      const deny = forms.get('deny');
      if (login) {
        if (submittedLogin) throw current.error('sign-in was refused');
        submittedLogin = true;
        current = await browser.submit(current.url, login, { login: options.email, password: options.password }, leavesServer);
      } else if (consent && deny) {
        current = await browser.submit(current.url, options.deny ? deny : consent, {}, leavesServer);
      } else {
        throw current.error('unexpected page in the authorization flow');
      }
    }
    throw current.error('the authorization flow did not finish');
  } finally {
    await browser.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------

interface Form {
  action: string;
  method: string;
  fields: Record<string, string>;
}

class Page {
  constructor(
    readonly url: string,
    readonly status: number,
    readonly body: string,
    /** Set when a redirect left the server and was not followed. */
    readonly redirectedTo?: URL,
  ) {}

  error(message: string): UserAgentError {
    return new UserAgentError(message, this.status, this.url, this.body);
  }
}

/** Cookie jar + manual redirects over undici. Honours cookie paths (oidc-provider scopes its cookies by path). */
class Browser {
  readonly #agent: Agent;
  readonly #cookies = new Map<string, { name: string; value: string; path: string }>();

  constructor(ca: string | Buffer) {
    this.#agent = new Agent({ connect: { ca } });
  }

  get(url: string, stopAt?: (location: URL) => boolean): Promise<Page> {
    return this.#request(url, { method: 'GET' }, stopAt);
  }

  /** Submits a form, with `overrides` replacing or adding fields (like typing into inputs / pressing a named button). */
  submit(pageUrl: string, form: Form, overrides: Record<string, string>, stopAt?: (location: URL) => boolean): Promise<Page> {
    const target = new URL(form.action || pageUrl, pageUrl).href;
    const body = new URLSearchParams({ ...form.fields, ...overrides }).toString();
    if (form.method === 'get') return this.get(`${target}?${body}`, stopAt);
    return this.#request(target, { method: 'POST', body, contentType: 'application/x-www-form-urlencoded' }, stopAt);
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }

  async #request(url: string, init: { method: string; body?: string; contentType?: string }, stopAt?: (location: URL) => boolean): Promise<Page> {
    let current = url;
    let request = init;
    for (let hops = 0; hops < 20; hops++) {
      const headers: Record<string, string> = { accept: 'text/html' };
      const cookie = this.#cookieHeader(new URL(current));
      if (cookie) headers.cookie = cookie;
      if (request.contentType) headers['content-type'] = request.contentType;
      const response = await fetch(current, {
        method: request.method,
        headers,
        body: request.body,
        redirect: 'manual',
        dispatcher: this.#agent,
      });
      this.#store(response);
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location) {
        await response.body?.cancel();
        const next = new URL(location, current);
        if (stopAt?.(next)) return new Page(current, response.status, '', next);
        current = next.href;
        // 303 (and, as browsers do, 301/302 after POST) continue with GET.
        request = response.status === 307 || response.status === 308 ? request : { method: 'GET' };
        continue;
      }
      return new Page(current, response.status, await response.text());
    }
    throw new Error(`too many redirects from ${url}`);
  }

  #store(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';').map((part) => part.trim());
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = false;
      for (const attribute of attributes) {
        const [key = '', val = ''] = attribute.split('=');
        if (key.toLowerCase() === 'path' && val.startsWith('/')) path = val;
        if (key.toLowerCase() === 'expires' && Date.parse(val) <= Date.now()) expired = true;
        if (key.toLowerCase() === 'max-age' && Number(val) <= 0) expired = true;
      }
      const key = `${name}\u0000${path}`;
      if (expired) this.#cookies.delete(key);
      else this.#cookies.set(key, { name, value, path });
    }
  }

  /** RFC 6265 §5.1.4 path-match, longest paths first (§5.4). */
  #cookieHeader(url: URL): string {
    const matches = [...this.#cookies.values()].filter(
      ({ path }) => url.pathname === path || (url.pathname.startsWith(path) && (path.endsWith('/') || url.pathname[path.length] === '/')),
    );
    matches.sort((a, b) => b.path.length - a.path.length);
    return matches.map(({ name, value }) => `${name}=${value}`).join('; ');
  }
}

/**
 * Collects the forms of a page by id. Inputs inside a form belong to it; so do inputs elsewhere with a matching
 * `form="…"` attribute. Submit buttons are not included: pass their name/value as overrides.
 */
function parseForms(html: string): Map<string, Form> {
  const forms = new Map<string, Form>();
  for (const match of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attributes = parseAttributes(match[1] ?? '');
    const id = attributes.id ?? `form${forms.size}`;
    const fields: Record<string, string> = {};
    for (const input of (match[2] ?? '').matchAll(/<input\b([^>]*)>/gi)) {
      const inputAttributes = parseAttributes(input[1] ?? '');
      if (inputAttributes.name) fields[inputAttributes.name] = decodeEntities(inputAttributes.value ?? '');
    }
    forms.set(id, { action: decodeEntities(attributes.action ?? ''), method: (attributes.method ?? 'get').toLowerCase(), fields });
  }
  return forms;
}

function parseAttributes(text: string): Record<string, string> {
  const attributes: Record<string, string> = {};
  for (const match of text.matchAll(/([\w.:-]+)\s*=\s*"([^"]*)"/g)) {
    if (match[1]) attributes[match[1].toLowerCase()] = match[2] ?? '';
  }
  return attributes;
}

function decodeEntities(text: string): string {
  return text
    .replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

function pageTitle(html: string): string {
  return decodeEntities(/<title>([\s\S]*?)<\/title>/i.exec(html)?.[1]?.trim() ?? '');
}

function summarize(html: string): string {
  const text = html.replace(/<style[\s\S]*?<\/style>/gi, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim();
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}
