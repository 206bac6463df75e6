/**
 * The sending path assembled for tests: stand-in identity providers, stand-in upstream submission servers
 * that check XOAUTH2 tokens by introspection (upstream-smtp.ts), and Postern in-process with a fast retry
 * schedule, its Microsoft (or Google) account authorized through the Remote UI exactly as an administrator
 * does it. Plus real device clients nobody here wrote: Python's smtplib, swaks, curl, and a raw socket
 * for byte-exact SMTP (smuggling vectors).
 *
 * Test infrastructure only: never import this from `src/`.
 */
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { expect } from 'vitest';
import type { Config } from '../../src/config.js';
import { GMAIL_SCOPE, OUTLOOK_SMTP_SCOPE, startGoogleStandin, startMicrosoftStandin, type GoogleStandin, type MicrosoftStandin } from './oauth-standins.js';
import { LOG, type LogLines } from './events.js';
import { field, startTestPostern, WebClient, type TestPostern } from './postern.js';
import { createTestPki, type TestPki } from './test-ca.js';
import { startUpstreamSmtp, type UpstreamSmtp } from './upstream-smtp.js';
import { approveDeviceCode, authorizeInBrowserlessAgent } from './user-agent.js';

export const ALICE = 'alice@example.test';
export const PASSWORD = 'correct horse';

/** A fast schedule: retries after 50–100 ms, so a 4xx-then-success test takes well under a second. */
export const FAST_QUEUE: NonNullable<Config['queue']> = { retryBaseMs: 50, retryMaxMs: 100, lifetimeMs: 60_000, concurrency: 4 };

export interface SendingStack {
  pki: TestPki;
  microsoft: MicrosoftStandin;
  upstream: UpstreamSmtp;
  gw: TestPostern;
  web: WebClient;
  /** Postern's relay port. */
  relayPort: number;
  /** The relay's certificate (PEM), for clients that verify it. */
  relayCert: string;
  close(): Promise<void>;
}

/**
 * Authorizes OAuth 2.0 (Microsoft) for `email` through the Remote UI (Edit Basic Settings, user code, sign-in).
 * `log` is the gateway's log (in-process or a child process): its lines say when the user code was issued
 * and when the grant completed.
 */
export async function authorizeMicrosoft(web: WebClient, microsoft: MicrosoftStandin, pki: TestPki, log: LogLines, email = ALICE): Promise<void> {
  const base = '/settings/send/oauth-microsoft';
  await web.get(`${base}/edit`);
  const saved = log.mark();
  await web.post(`${base}/edit`, {
    enabled: 'on',
    verifyServerCertificate: 'on',
    addCnToVerificationItems: 'on',
    endpoint: microsoft.endpoint('organizations'),
    clientId: microsoft.publicClientId,
  });
  await log.waitFor(LOG.userCodeIssued, { from: saved });
  const userCode = field(await web.get(`${base}/status`), 'user-code')?.match(/^[A-Z0-9-]{6,}$/)?.[0];
  if (!userCode) throw new Error('a user code was issued, but the status page shows none');
  const signingIn = log.mark();
  await approveDeviceCode({ verificationUri: microsoft.verificationUri, userCode, email, password: PASSWORD, ca: pki.ca.cert });
  await log.waitFor(LOG.authorized, { from: signingIn });
  expect(field(await web.get(`${base}/status`), 'token-status')).toBe('Active');
}

/**
 * Saves OAuth 2.0 (Google) Edit Basic Settings with Use on, both TLS options on and the stand-in's client and
 * endpoints; `overrides` replace fields, `undefined` leaves one out. Returns the response body.
 */
export async function saveGoogleSettings(
  web: WebClient,
  google: GoogleStandin,
  overrides: Record<string, string | undefined> = {},
  /** The account's screen: the seed's, or an added account's (`/settings/send/oauth-google/<id>`). */
  base = '/settings/send/oauth-google',
): Promise<string> {
  await web.get(`${base}/edit`);
  const form: Record<string, string> = {
    enabled: 'on',
    verifyServerCertificate: 'on',
    addCnToVerificationItems: 'on',
    clientId: google.clientId,
    clientSecret: google.clientSecret,
    authorizationEndpoint: google.authorizationEndpoint,
    tokenEndpoint: google.tokenEndpoint,
  };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) delete form[key];
    else form[key] = value;
  }
  return web.post(`${base}/edit`, form);
}

/** The link URL for Google Authorization Server on a Register Information for Authorization page (entities decoded). */
export function authorizationUrlOf(html: string): string {
  const href = /href="([^"]+)"[^>]*data-field="authorization-url"/.exec(html)?.[1];
  if (!href) throw new Error('no authorization URL on Register Information for Authorization');
  return href.replace(/&amp;/g, '&').replace(/&#39;/g, "'").replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>');
}

/** Authorizes OAuth 2.0 (Google) for `email` through Register Information for Authorization (paste-back). */
export async function authorizeGoogle(web: WebClient, google: GoogleStandin, pki: TestPki, email = ALICE): Promise<void> {
  const base = '/settings/send/oauth-google';
  await saveGoogleSettings(web, google);
  const url = authorizationUrlOf(await web.get(`${base}/register`));
  const redirect = await authorizeInBrowserlessAgent({ authorizationUrl: url, email, password: PASSWORD, ca: pki.ca.cert });
  // The code is exchanged before the answer to this POST: the tokens are saved by then.
  await web.post(`${base}/register`, { code: redirect.href });
  expect(field(await web.get(`${base}/status`), 'token-status')).toBe('Active');
}

/** Saves E-Mail Settings through the Remote UI form. */
export async function saveEmailSettings(web: WebClient, fields: Record<string, string | undefined>): Promise<string> {
  await web.get('/settings/send/email');
  const form: Record<string, string> = {
    accountId: 'microsoft',
    smtpHost: '127.0.0.1',
    smtpPort: '587',
    tlsMode: 'starttls',
    verifyServerCertificate: 'on',
    addCnToVerificationItems: 'on',
    senderAddress: '',
    allowedFromAddresses: '',
    messagesPerMinute: '0',
  };
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) delete form[key];
    else form[key] = value;
  }
  return web.post('/settings/send/email', form);
}

/** Saves Relay Settings through the Remote UI form. */
export async function saveRelaySettings(web: WebClient, fields: Record<string, string | undefined> = {}): Promise<string> {
  await web.get('/settings/send/relay');
  const form: Record<string, string> = { allowedNetworks: '', maxMessageSizeMb: '25', bareNewlines: 'normalize' };
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) delete form[key];
    else form[key] = value;
  }
  return web.post('/settings/send/relay', form);
}

/** Adds a device account on Relay Settings; `allowedSenders` is the Allowed Sender Addresses text (one per line). */
export async function addDevice(web: WebClient, username: string, password: string, allowedSenders = ''): Promise<string> {
  await web.get('/settings/send/relay');
  return web.post('/settings/send/relay/devices', { username, password, allowedSenders });
}

/** Opens the device's Edit page from Relay Settings (its Edit button) and saves `allowedSenders` there. */
export async function editDeviceSenders(web: WebClient, username: string, allowedSenders: string): Promise<string> {
  const list = await web.get('/settings/send/relay');
  const escaped = username.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const action = new RegExp(`<form method="get" action="([^"]+)" class="inline"><button type="submit" aria-label="Edit ${escaped}">`).exec(list)?.[1];
  if (!action) throw new Error(`no Edit button for the device account ${username} on Relay Settings`);
  await web.get(action);
  return web.post(action, { allowedSenders });
}

/**
 * Microsoft stand-in + Office 365 flavoured upstream + Postern with a fast queue, authorized for alice,
 * E-Mail Settings pointing at the upstream with certificate verification on (the test CA is registered in
 * CA Certificate Settings).
 */
export async function startSendingStack(options: { config?: Partial<Config>; enforceSendAs?: boolean; keepDataDir?: boolean } = {}): Promise<SendingStack> {
  const pki = await createTestPki();
  const microsoft = await startMicrosoftStandin({ pki, interval: 1 });
  const upstream = await startUpstreamSmtp({
    flavour: 'office365',
    introspection: { ...microsoft.introspection, ca: pki.ca.cert },
    requiredScope: OUTLOOK_SMTP_SCOPE,
    tls: pki.server,
    enforceSendAs: options.enforceSendAs ?? true,
  });
  const gw = await startTestPostern({ caPems: [pki.ca.cert], config: { queue: FAST_QUEUE, logLevel: 'debug', ...options.config }, keepDataDir: options.keepDataDir ?? false });
  const web = new WebClient(gw.url);
  await web.login();
  await authorizeMicrosoft(web, microsoft, pki, gw.log);
  await saveEmailSettings(web, { smtpPort: String(upstream.port) });
  expect(web.lastStatus).toBe(303);
  const certificate = await gw.postern.relaySettings.certificate();
  return {
    pki,
    microsoft,
    upstream,
    gw,
    web,
    relayPort: gw.postern.smtpPort,
    relayCert: certificate!.cert,
    async close() {
      await gw.close();
      await upstream.close();
      await microsoft.close();
    },
  };
}

export { GMAIL_SCOPE, startGoogleStandin };

// ---- device clients ---------------------------------------------------------------------------------

export interface ProcessResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function run(command: string, args: string[], input?: string, timeoutMs = 30_000): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

export interface PythonSendOptions {
  port: number;
  starttls?: boolean;
  /** PEM to verify the relay with; unverified when absent. */
  cadata?: string;
  auth?: { mechanism: 'PLAIN' | 'LOGIN'; user: string; password: string };
  from: string;
  to: string[];
  /** The message (CRLF line ends are up to the caller). */
  message: string;
  /** MAIL FROM parameters, e.g. ['SIZE=999999999']. */
  mailOptions?: string[];
  /** Speak exactly this TLS version after STARTTLS, as an old multifunction device does (e.g. 'TLSv1_1'). */
  tlsVersion?: 'TLSv1' | 'TLSv1_1' | 'TLSv1_2';
  /** Connect from this local address (another 127/8 address, e.g. '127.0.0.3'). */
  sourceAddress?: string;
}

export interface PythonSendResult {
  ok: boolean;
  /** Every reply line Python's smtplib logged (debuglevel 1). */
  replies: string[];
  features?: Record<string, string>;
  /** What the first EHLO (before STARTTLS) advertised. */
  featuresBeforeTls?: Record<string, string>;
  /** The TLS version negotiated after STARTTLS (Python's SSLSocket.version()). */
  tls?: string;
  error?: { type: string; code?: number; message: string };
}

const PYTHON_CLIENT = String.raw`
import json, smtplib, ssl, sys
o = json.load(sys.stdin)
out = {"ok": False, "replies": []}
class Log:
    text = ""
    def write(self, s):
        Log.text += s
    def flush(self): pass
def replies():
    found = []
    for line in Log.text.splitlines():
        if line.startswith("reply: b'") or line.startswith('reply: b"'):
            found.append(line[len("reply: b'"):-1].replace("\\r\\n", ""))
    return found
sys.stderr = Log()
try:
    s = smtplib.SMTP("127.0.0.1", o["port"], timeout=20, source_address=(o["sourceAddress"], 0) if o.get("sourceAddress") else None)
    s.set_debuglevel(1)
    s.ehlo("device.test")
    out["featuresBeforeTls"] = {k: v for k, v in s.esmtp_features.items()}
    if o.get("starttls"):
        ctx = ssl.create_default_context(cadata=o["cadata"]) if o.get("cadata") else ssl._create_unverified_context()
        if o.get("tlsVersion"):
            version = getattr(ssl.TLSVersion, o["tlsVersion"])
            ctx.minimum_version = version
            ctx.maximum_version = version
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        s.starttls(context=ctx)
        out["tls"] = s.sock.version()
        s.ehlo("device.test")
    out["features"] = {k: v for k, v in s.esmtp_features.items()}
    a = o.get("auth")
    if a:
        s.user, s.password = a["user"], a["password"]
        if a["mechanism"] == "LOGIN":
            s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        else:
            s.auth("PLAIN", s.auth_plain)
    s.sendmail(o["from"], o["to"], o["message"].encode("utf-8"), mail_options=o.get("mailOptions", []))
    out["ok"] = True
    s.quit()
except smtplib.SMTPResponseException as e:
    out["error"] = {"type": type(e).__name__, "code": e.smtp_code, "message": e.smtp_error.decode("utf-8", "replace")}
except smtplib.SMTPRecipientsRefused as e:
    code, msg = list(e.recipients.values())[0]
    out["error"] = {"type": "SMTPRecipientsRefused", "code": code, "message": msg.decode()}
except Exception as e:
    out["error"] = {"type": type(e).__name__, "message": str(e)}
out["replies"] = replies()
sys.stdout.write(json.dumps(out))
`;

/** Sends one message with Python's smtplib. */
export async function pythonSend(options: PythonSendOptions): Promise<PythonSendResult> {
  const result = await run('python3', ['-c', PYTHON_CLIENT], JSON.stringify(options));
  if (!result.stdout) throw new Error(`python3 failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as PythonSendResult;
}

/** A byte-exact SMTP conversation over a plain socket: send `lines`, wait for each reply. */
export class RawSmtp {
  #socket: Socket;
  #buffer = '';
  #waiters: Array<() => void> = [];

  /** Resolves when the server has closed the connection. */
  readonly closed: Promise<void>;

  private constructor(socket: Socket) {
    this.#socket = socket;
    this.#listen(socket);
    this.closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
  }

  #listen(socket: Socket): void {
    socket.on('data', (data: Buffer) => {
      this.#buffer += data.toString('latin1');
      for (const waiter of this.#waiters.splice(0)) waiter();
    });
  }

  /** Connects (from `localAddress`, e.g. another 127/8 address, when given) and reads the greeting. */
  static async open(port: number, options: { localAddress?: string } = {}): Promise<RawSmtp> {
    const client = await RawSmtp.connect(port, options);
    await client.reply();
    return client;
  }

  /** Connects without reading the greeting (for servers that refuse at once). */
  static async connect(port: number, options: { localAddress?: string } = {}): Promise<RawSmtp> {
    const socket = connect({ host: '127.0.0.1', port, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawSmtp(socket);
  }

  /** STARTTLS (the server's certificate is not verified); the caller sends EHLO again. */
  async starttls(): Promise<string> {
    const reply = await this.command('STARTTLS');
    if (!reply.startsWith('220')) return reply;
    const plain = this.#socket;
    plain.removeAllListeners('data');
    const secure = tlsConnect({ socket: plain, rejectUnauthorized: false, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    secure.on('error', () => undefined);
    this.#socket = secure;
    this.#listen(secure);
    return reply;
  }

  /** The next complete reply (multi-line replies joined with \n). */
  async reply(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/.exec(this.#buffer);
      if (match) {
        this.#buffer = this.#buffer.slice(match[0].length);
        return match[0].trimEnd().replace(/\r\n/g, '\n');
      }
      if (Date.now() > deadline) throw new Error(`no SMTP reply; buffer: ${JSON.stringify(this.#buffer)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  write(bytes: string | Buffer): void {
    this.#socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  async command(line: string): Promise<string> {
    this.write(line + '\r\n');
    return this.reply();
  }

  close(): void {
    this.#socket.destroy();
  }
}
