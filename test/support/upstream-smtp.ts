/**
 * Stand-in upstream submission servers for tests: an SMTP server that behaves like Microsoft 365's
 * (`smtp.office365.com:587`) or Gmail's (`smtp.gmail.com:465`) and checks SASL XOAUTH2 / OAUTHBEARER
 * bearer tokens the way the real ones do, by asking an authorization server (RFC 7662 token
 * introspection) on every AUTH. Also a plain recording SMTP sink (used behind Postfix).
 *
 * Purpose: let Postern's delivery code be tested over real sockets against a server that really rejects
 *   bad, expired, wrong-scope and wrong-user tokens, and that can be scripted to give the replies the
 *   real providers give (SMTP AUTH disabled for the tenant, SendAsDenied, temporary failures).
 * Inputs: the introspection endpoint of a stand-in authorization server (client credentials + CA), a
 *   TLS key/certificate, the scope a token must carry.
 * Outputs: every accepted message (envelope, authenticated user, raw bytes, parsed), every AUTH attempt.
 * Failure modes: introspection unreachable gives `454 4.7.0` (temporary), like a provider whose token
 *   service is down; everything else is a scripted or token-driven reply.
 * Known limits: smtp-server waits a hard-coded 100 ms before the greeting (early-talker detection), so
 *   every connection costs at least 100 ms; BINARYMIME/CHUNKING are not offered (smtp-server has neither).
 *   XOAUTH2 and OAUTHBEARER are implemented here on a subclass of smtp-server's internal SMTPConnection
 *   (smtp-server has no OAUTHBEARER and a fixed XOAUTH2 failure text), so smtp-server is pinned to 3.x.
 *
 * Test infrastructure only: never import this from `src/`.
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import { Agent, request } from 'undici';
import { EVENT_DEADLINE_MS, until, type Subscribe } from './events.js';
import type { TestPki } from './test-ca.js';

/** Where and how a resource server introspects tokens (RFC 7662 §2.1, client_secret_basic). */
export interface IntrospectionConfig {
  url: string;
  clientId: string;
  clientSecret: string;
  /** PEM of the CA that issued the authorization server's certificate (or give caFile). */
  ca?: string;
  /** File holding that CA (Dovecot and curl need a file; either field is enough here). */
  caFile?: string;
}

/** The introspection response members this harness looks at (RFC 7662 §2.2); the rest is kept as is. */
export interface IntrospectionResponse {
  active: boolean;
  sub?: string;
  email?: string;
  scope?: string;
  [member: string]: unknown;
}

export type UpstreamFlavour = 'office365' | 'gmail';

export type UpstreamPhase = 'auth' | 'mail' | 'rcpt' | 'data';

/**
 * A reply to give instead of the normal one. `message` is sent verbatim after the code (its own enhanced
 * status code included); a message with line breaks becomes a multi-line reply (`535-…` / `535 …`).
 */
export interface ScriptedReply {
  phase: UpstreamPhase;
  code: number;
  message: string;
}

export interface RecordedMessage {
  envelope: { mailFrom: string; rcptTo: string[] };
  /** MAIL FROM parameters as the client gave them: BODY= (lower-case) and SMTPUTF8. */
  params?: { body?: string; smtpUtf8: boolean };
  /** The SASL identity the message was submitted under, where the receiving server knows it. */
  authUser?: string;
  raw: Buffer;
  parsed?: ParsedMail;
}

export interface UpstreamMessage extends RecordedMessage {
  authUser: string;
}

export interface AuthAttempt {
  /** The SASL user (XOAUTH2 `user=`, OAUTHBEARER `a=`, or the LOGIN/PLAIN user name). */
  user: string;
  mechanism: string;
  ok: boolean;
  /**
   * Why it failed: `scripted`, `inactive`, `scope`, `user-mismatch`, `basic-auth`, `introspection-error: …`; for
   * app-only tokens `app-only-token` (Gmail), `audience`, `app-role`, `app-mailbox-not-granted`.
   */
  reason?: string;
}

export interface UpstreamSmtpOptions {
  flavour: UpstreamFlavour;
  introspection: IntrospectionConfig;
  /** A token must carry this scope, e.g. `https://outlook.office.com/SMTP.Send` or `https://mail.google.com/`. */
  requiredScope: string;
  /** Server key and certificate (PEM), e.g. `createTestPki().server`. Or give `pki`. */
  tls?: { key: string; cert: string };
  /**
   * A test PKI: its server certificate is used when `tls` is not given, and its CA verifies the authorization
   * server when the introspection config names no CA (the stand-ins can share one PKI).
   */
  pki?: TestPki;
  /** Defaults to 127.0.0.1. */
  host?: string;
  /**
   * Office 365 only: refuse a message whose envelope sender is not the authenticated mailbox with the
   * SendAsDenied reply Exchange Online gives after DATA. Off by default (use failNext to script it).
   */
  enforceSendAs?: boolean;
  /** Leave 8BITMIME / SMTPUTF8 out of EHLO, like a corporate relay or an old Exchange. */
  hide8BITMIME?: boolean;
  hideSMTPUTF8?: boolean;
  /**
   * Runs after a message is recorded and before its `250` is sent (awaited): a test can make the upstream
   * slow to answer DATA, so that deliveries are in flight (the upstream has the message, the client does
   * not know yet: RFC 1047's window).
   */
  beforeDataReply?: (message: UpstreamMessage) => Promise<void> | void;
}

export interface UpstreamSmtp {
  readonly flavour: UpstreamFlavour;
  readonly host: string;
  readonly port: number;
  /** Accepted messages, oldest first. */
  readonly messages: UpstreamMessage[];
  /** Every AUTH attempt that got as far as credentials, oldest first. */
  readonly authAttempts: AuthAttempt[];
  /** How many introspection requests were made (nothing is cached: one per token-based AUTH). */
  readonly introspectionCount: number;
  /** Resolves with the messages once at least `n` have been accepted; rejects after `timeoutMs`. */
  waitForMessages(n: number, timeoutMs?: number): Promise<UpstreamMessage[]>;
  /** The first accepted message (already here or still to come) that `predicate` accepts. */
  waitForMessage(predicate: (message: UpstreamMessage) => boolean, what?: string, timeoutMs?: number): Promise<UpstreamMessage>;
  /** Signals each accepted message (for conditions over several messages, with events.ts `until`). */
  onMessage: Subscribe;
  /**
   * From now on a message whose DATA completes is neither recorded nor answered: the session hangs until it
   * is closed, as if the network froze before the final dot arrived. What `messages` holds is then final.
   */
  freeze(): void;
  /** Records and answers messages again (sessions that hung stay unanswered). */
  thaw(): void;
  /** Give `reply` instead of the normal reply the next `times` times its phase is reached. */
  failNext(reply: ScriptedReply, times?: number): void;
  /** Close the next accepted TCP connection at once, without a greeting. */
  dropNextConnection(): void;
  /**
   * App-only tokens (client credentials, no `sub`): let the application `clientId` send as `mailbox`, as an
   * Exchange administrator does with New-ManagementRoleAssignment (Application SMTP.SendAsApp) or FullAccess.
   * Without it Exchange answers `535 5.7.3 Authentication unsuccessful`.
   */
  grantAppMailbox(clientId: string, mailbox: string): void;
  revokeAppMailbox(clientId: string, mailbox: string): void;
  close(): Promise<void>;
}

interface FlavourProfile {
  name: string;
  banner: string;
  /** Advertised after TLS; Office 365 advertises nothing before STARTTLS. */
  authMethods: string[];
  size: number;
  implicitTls: boolean;
  hideDSN: boolean;
  authOk: string;
  /** Final reply after the client answered the error challenge (and for refused LOGIN/PLAIN). */
  authFailed: string[];
  basicAuthFailed: string[];
  dataOk: () => string;
}

let messageCounter = 0;

/**
 * What each provider says, from docs/protocol.md §3 (observed EHLO lists and replies). Failure
 * texts carry their own enhanced status codes, like the providers' replies.
 */
const PROFILES: Record<UpstreamFlavour, FlavourProfile> = {
  office365: {
    name: 'outlook.office365.test',
    banner: 'Microsoft ESMTP MAIL Service ready',
    authMethods: ['LOGIN', 'XOAUTH2'],
    size: 157286400,
    implicitTls: false,
    hideDSN: false,
    authOk: '2.7.0 Authentication successful',
    authFailed: ['5.7.3 Authentication unsuccessful'],
    basicAuthFailed: ['5.7.139 Authentication unsuccessful, basic authentication is disabled.'],
    dataOk: () => `2.0.0 OK <${Date.now()}.${++messageCounter}@outlook.office365.test> [Hostname=outlook.office365.test]`,
  },
  gmail: {
    name: 'smtp.gmail.test',
    banner: 'gsmtp',
    authMethods: ['LOGIN', 'PLAIN', 'XOAUTH2', 'OAUTHBEARER'],
    size: 35882577,
    implicitTls: true,
    hideDSN: true,
    authOk: '2.7.0 Accepted',
    authFailed: [
      '5.7.8 Username and Password not accepted. For more information, go to',
      '5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp',
    ],
    basicAuthFailed: [
      '5.7.8 Username and Password not accepted. For more information, go to',
      '5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp',
    ],
    dataOk: () => `2.0.0 OK  ${Math.floor(Date.now() / 1000)} ${++messageCounter} - gsmtp`,
  },
};

/** A reply text that already starts with an RFC 3463 enhanced status code (`5.7.3 …`). */
const OWN_ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3}(\s|$)/;

/** smtp-server's handler error: the reply code travels on the error object. */
function smtpError(code: number, message: string): Error & { responseCode: number } {
  return Object.assign(new Error(message), { responseCode: code });
}

/** Keeps messages and lets tests await them without polling. */
export class MessageRecorder<M extends RecordedMessage> {
  readonly messages: M[] = [];
  readonly #events = new EventEmitter();

  add(message: M): void {
    this.messages.push(message);
    this.#events.emit('message');
  }

  readonly onMessage: Subscribe = (listener) => {
    this.#events.on('message', listener);
    return () => this.#events.off('message', listener);
  };

  /** The first message, recorded already or still to come, that `predicate` accepts. */
  waitForMessage(predicate: (message: M) => boolean, what = 'a matching message', timeoutMs = EVENT_DEADLINE_MS): Promise<M> {
    return until(this.onMessage, () => this.messages.find(predicate), `${what} (${this.messages.length} message(s) so far)`, timeoutMs);
  }

  waitForMessages(n: number, timeoutMs = 5_000): Promise<M[]> {
    if (this.messages.length >= n) return Promise.resolve([...this.messages]);
    return new Promise((resolve, reject) => {
      const onMessage = (): void => {
        if (this.messages.length < n) return;
        clearTimeout(timer);
        this.#events.off('message', onMessage);
        resolve([...this.messages]);
      };
      const timer = setTimeout(() => {
        this.#events.off('message', onMessage);
        reject(new Error(`expected ${n} message(s) within ${timeoutMs} ms, got ${this.messages.length}`));
      }, timeoutMs);
      this.#events.on('message', onMessage);
    });
  }
}

/** Reads a DATA stream into one buffer; the stream must be consumed for smtp-server to answer. */
async function readStream(stream: SMTPServerDataStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function envelopeOf(session: SMTPServerSession): RecordedMessage['envelope'] {
  const from = session.envelope.mailFrom;
  return {
    mailFrom: from ? from.address : '',
    rcptTo: session.envelope.rcptTo.map((rcpt) => rcpt.address),
  };
}

/**
 * RFC 7662 §2.1 introspection request with client_secret_basic (RFC 6749 §2.3.1: form-urlencoded id and
 * secret). Asked on every AUTH: the upstream must notice a revoked or expired token at once.
 */
export function createIntrospector(config: IntrospectionConfig): {
  introspect(token: string): Promise<IntrospectionResponse>;
  close(): Promise<void>;
} {
  const ca = config.ca ?? (config.caFile ? readFileSync(config.caFile, 'utf8') : undefined);
  const dispatcher = new Agent({ connect: ca ? { ca } : {} });
  const formEncode = (value: string) => encodeURIComponent(value).replace(/%20/g, '+');
  const basic = Buffer.from(`${formEncode(config.clientId)}:${formEncode(config.clientSecret)}`).toString('base64');
  return {
    async introspect(token) {
      const response = await request(config.url, {
        method: 'POST',
        dispatcher,
        headers: {
          authorization: `Basic ${basic}`,
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        signal: AbortSignal.timeout(5_000),
      });
      const text = await response.body.text();
      if (response.statusCode !== 200) {
        throw new Error(`introspection answered HTTP ${response.statusCode}: ${text.slice(0, 200)}`);
      }
      const json = JSON.parse(text) as IntrospectionResponse;
      if (typeof json.active !== 'boolean') throw new Error('introspection response has no boolean "active"');
      return json;
    },
    close: () => dispatcher.close(),
  };
}

/** The introspection config, with the test PKI's CA when it names none (undici would use the system CAs). */
export function withDefaultCa(config: IntrospectionConfig, pki: TestPki | undefined): IntrospectionConfig {
  if (config.ca || config.caFile || !pki) return config;
  return { ...config, ca: pki.ca.cert, caFile: pki.caFile };
}

/** Decodes an RFC 5801 saslname (`=2C` → `,`, `=3D` → `=`), as used for the OAUTHBEARER authzid. */
function decodeSaslName(value: string): string {
  return value.replace(/=2C/gi, ',').replace(/=3D/gi, '=');
}

/**
 * Parses the client's initial response of XOAUTH2 (`user=…^Aauth=Bearer …^A^A`, docs/protocol.md §3.1) or
 * OAUTHBEARER (`n,a=…,^Ahost=…^Aport=…^Aauth=Bearer …^A^A`, RFC 7628 §3.1). Null when malformed.
 */
export function parseBearerResponse(
  mechanism: 'XOAUTH2' | 'OAUTHBEARER',
  base64: string,
): { user: string; token: string } | null {
  const decoded = Buffer.from(base64, 'base64').toString('utf8');
  const fields = decoded.split('\x01');
  let user = '';
  if (mechanism === 'OAUTHBEARER') {
    const gs2 = fields.shift() ?? '';
    const match = /^[ny],(?:a=([^,]*))?,$/.exec(gs2);
    if (!match) return null;
    user = decodeSaslName(match[1] ?? '');
  }
  let token = '';
  for (const field of fields) {
    const eq = field.indexOf('=');
    if (eq < 0) continue;
    const key = field.slice(0, eq).toLowerCase();
    const value = field.slice(eq + 1);
    if (key === 'user' && mechanism === 'XOAUTH2') user = value;
    if (key === 'auth') {
      const bearer = /^bearer\s+(\S+)\s*$/i.exec(value);
      if (bearer) token = bearer[1]!;
    }
  }
  if (!user || !token || /[\x00-\x1f\x7f]/.test(user)) return null;
  return { user, token };
}

/** Internal state shared between the server object and its connections. */
interface UpstreamState {
  profile: FlavourProfile;
  flavour: UpstreamFlavour;
  requiredScope: string;
  authAttempts: AuthAttempt[];
  /** App-only: client id → the mailboxes the application may send as (lower case). */
  appMailboxes: Map<string, Set<string>>;
  introspect(token: string): Promise<IntrospectionResponse>;
  takeScripted(phase: UpstreamPhase): ScriptedReply | undefined;
}

/**
 * One SMTP session. Overrides two things of smtp-server's connection:
 * - `send`: smtp-server prefixes a generated enhanced status code to every reply when
 *   ENHANCEDSTATUSCODES is on; the providers' texts (and scripted ones) carry their own, and must reach
 *   the client verbatim, so a text that already starts with one is sent as is.
 * - `handler_AUTH` for XOAUTH2 and OAUTHBEARER: smtp-server has no OAUTHBEARER, and its XOAUTH2 failure
 *   ends with a fixed `535 Error: Username and Password not accepted`; the providers' texts differ.
 */
class UpstreamConnection extends SMTPConnection {
  constructor(
    server: SMTPServer,
    socket: Socket | TLSSocket,
    options: SMTPConnectionOptions | null | undefined,
    private readonly upstream: UpstreamState,
  ) {
    super(server, socket, options);
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    let lines = data;
    if (typeof lines === 'string' && /[\r\n]/.test(lines)) lines = lines.split(/\r?\n/);
    const first = Array.isArray(lines) ? lines[0] : lines;
    const ownCode = typeof first === 'string' && OWN_ENHANCED_CODE.test(first);
    super.send(code, lines, ownCode ? false : context);
  }

  override handler_AUTH(command: Buffer, callback: () => void): void {
    const [, rawMechanism = '', ...args] = command.toString().trim().split(/\s+/);
    const mechanism = rawMechanism.toUpperCase();
    const { profile } = this.upstream;
    if (mechanism === 'LOGIN' || mechanism === 'PLAIN') {
      // smtp-server parses LOGIN/PLAIN; onAuth below refuses them as the providers refuse passwords.
      super.handler_AUTH(command, callback);
      return;
    }
    if (!this.secure) {
      this.send(538, '5.7.11 Must issue a STARTTLS command first');
      return callback();
    }
    if (this.session.user) {
      this.send(503, '5.5.1 Error: No identity changes permitted');
      return callback();
    }
    if ((mechanism !== 'XOAUTH2' && mechanism !== 'OAUTHBEARER') || !profile.authMethods.includes(mechanism)) {
      this.send(504, '5.7.4 Unrecognized authentication type');
      return callback();
    }
    if (args.length > 1) {
      this.send(501, `5.5.2 Syntax error: AUTH ${mechanism} [initial-response]`);
      return callback();
    }
    if (args.length === 0) {
      // RFC 4954 §4: no initial response, so ask for it with an empty challenge.
      this._nextHandler = (line, next) => this.#onInitialResponse(mechanism, line.toString().trim(), next);
      this.send(334, '');
      return callback();
    }
    this.#onInitialResponse(mechanism, args[0]!, callback);
  }

  #onInitialResponse(mechanism: 'XOAUTH2' | 'OAUTHBEARER', response: string, callback: () => void): void {
    if (response === '*') {
      this.send(501, '5.7.0 Authentication aborted');
      return callback();
    }
    const credentials = parseBearerResponse(mechanism, response);
    if (!credentials) {
      this.send(501, '5.5.2 Cannot decode response');
      return callback();
    }
    const { user, token } = credentials;
    const scripted = this.upstream.takeScripted('auth');
    if (scripted) {
      this.upstream.authAttempts.push({ user, mechanism, ok: false, reason: 'scripted' });
      this.send(scripted.code, scripted.message);
      return callback();
    }
    this.#checkToken(user, token).then(
      (reason) => {
        this.upstream.authAttempts.push(reason ? { user, mechanism, ok: false, reason } : { user, mechanism, ok: true });
        if (!reason) {
          this.session.user = user;
          this.session.transmissionType = this._transmissionType();
          this.send(235, this.upstream.profile.authOk);
          return callback();
        }
        this.#sendErrorChallenge();
        callback();
      },
      (err: unknown) => {
        const reason = `introspection-error: ${err instanceof Error ? err.message : String(err)}`;
        this.upstream.authAttempts.push({ user, mechanism, ok: false, reason });
        this.send(454, '4.7.0 Temporary authentication failure');
        callback();
      },
    );
  }

  /** Returns why the token is refused, or undefined when it is good for this user. */
  async #checkToken(user: string, token: string): Promise<string | undefined> {
    const info = await this.upstream.introspect(token);
    if (!info.active) return 'inactive';
    if (isAppOnlyToken(info)) return checkAppOnlyToken(this.upstream, info, user);
    const scopes = typeof info.scope === 'string' ? info.scope.split(' ') : [];
    if (!scopes.includes(this.upstream.requiredScope)) return 'scope';
    const wanted = user.toLowerCase();
    const owners = [info.email, info.sub].filter((v): v is string => typeof v === 'string');
    if (!owners.some((owner) => owner.toLowerCase() === wanted)) return 'user-mismatch';
    return undefined;
  }

  /**
   * Gmail's failure shape (docs/protocol.md §3.1):
   * `334 base64({"status":"401","schemes":"bearer","scope":…})`, the client answers (empty line for XOAUTH2,
   * `AQ==` for OAUTHBEARER), then the final 535.
   */
  #sendErrorChallenge(): void {
    const challenge = { status: '401', schemes: 'bearer', scope: this.upstream.requiredScope };
    this._nextHandler = (_line, next) => {
      this.send(535, this.upstream.profile.authFailed);
      next();
    };
    this.send(334, Buffer.from(JSON.stringify(challenge)).toString('base64'));
  }
}

// ---------------------------------------------------------------------------------------------------------
// App-only tokens (Microsoft client credentials)

/** The Exchange Online resource app-only tokens are issued for, and the application permission SMTP needs. */
const APP_ONLY_EXCHANGE_AUDIENCE = 'https://outlook.office365.com';
const APP_ONLY_SMTP_ROLE = 'SMTP.SendAsApp';

/** A token the application obtained for itself: it names a client and no user. */
function isAppOnlyToken(info: IntrospectionResponse): boolean {
  return info.sub === undefined && info.email === undefined && typeof info.client_id === 'string';
}

/**
 * Exchange Online's checks of an app-only token: issued for Exchange, carrying SMTP.SendAsApp (admin consent),
 * and the application given the mailbox named in `user=` (RBAC for Applications or FullAccess). Gmail takes
 * no app-only tokens: a service account's token names its mailbox in `sub`.
 */
function checkAppOnlyToken(upstream: UpstreamState, info: IntrospectionResponse, user: string): string | undefined {
  if (upstream.flavour !== 'office365') return 'app-only-token';
  const audiences = Array.isArray(info.aud) ? info.aud : [info.aud];
  if (!audiences.includes(APP_ONLY_EXCHANGE_AUDIENCE)) return 'audience';
  const roles = typeof info.scope === 'string' ? info.scope.split(' ') : [];
  if (!roles.includes(APP_ONLY_SMTP_ROLE)) return 'app-role';
  if (!upstream.appMailboxes.get(String(info.client_id))?.has(user.toLowerCase())) return 'app-mailbox-not-granted';
  return undefined;
}

/** smtp-server subclass whose only change is to build UpstreamConnection sessions (and drop on request). */
class UpstreamSmtpServer extends SMTPServer {
  dropConnections = 0;

  constructor(
    options: SMTPServerOptions,
    private readonly upstream: UpstreamState,
  ) {
    super(options);
  }

  override connect(socket: Socket | TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    if (this.dropConnections > 0) {
      this.dropConnections--;
      socket.destroy();
      return;
    }
    // Same as SMTPServer.connect, with our connection class.
    const connection = new UpstreamConnection(this, socket, socketOptions, this.upstream);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data) => this._onClientConnect(data));
    connection.init();
  }
}

/** Starts a stand-in Microsoft 365 or Gmail submission server on a free loopback port. */
export async function startUpstreamSmtp(options: UpstreamSmtpOptions): Promise<UpstreamSmtp> {
  const { flavour } = options;
  const profile = PROFILES[flavour];
  if (!profile) throw new Error(`unknown flavour ${String(flavour)}: use 'office365' or 'gmail'`);
  const tls = options.tls ?? options.pki?.server;
  if (!tls) throw new Error('startUpstreamSmtp needs tls (key and cert) or pki');
  const host = options.host ?? '127.0.0.1';
  const recorder = new MessageRecorder<UpstreamMessage>();
  const authAttempts: AuthAttempt[] = [];
  const scripted: Array<{ reply: ScriptedReply; times: number }> = [];
  const introspector = createIntrospector(withDefaultCa(options.introspection, options.pki));
  let introspectionCount = 0;
  let frozen = false;

  const state: UpstreamState = {
    profile,
    flavour,
    requiredScope: options.requiredScope,
    authAttempts,
    appMailboxes: new Map(),
    introspect(token) {
      introspectionCount++;
      return introspector.introspect(token);
    },
    takeScripted(phase) {
      const index = scripted.findIndex((entry) => entry.reply.phase === phase);
      if (index < 0) return undefined;
      const entry = scripted[index]!;
      if (--entry.times <= 0) scripted.splice(index, 1);
      return entry.reply;
    },
  };

  const server = new UpstreamSmtpServer(
    {
      name: profile.name,
      banner: profile.banner,
      key: tls.key,
      cert: tls.cert,
      secure: profile.implicitTls,
      size: profile.size,
      authMethods: profile.authMethods,
      hideENHANCEDSTATUSCODES: false,
      hideDSN: profile.hideDSN,
      hide8BITMIME: options.hide8BITMIME ?? false,
      hideSMTPUTF8: options.hideSMTPUTF8 ?? false,
      disableReverseLookup: true,
      logger: false,
      onConnect(session, callback) {
        // Exchange Online offers no AUTH before STARTTLS (docs/protocol.md §3.2); the session list wins over
        // the server-wide one, and onSecure clears it once TLS is up.
        if (!session.secure) session.disabledCommands = ['AUTH'];
        callback();
      },
      onSecure(_socket, session, callback) {
        session.disabledCommands = [];
        callback();
      },
      onAuth(auth, _session, callback) {
        // Only LOGIN and PLAIN get here (bearer mechanisms are handled by UpstreamConnection): both
        // providers refuse passwords for these accounts.
        const user = auth.username ?? '';
        const reply = state.takeScripted('auth');
        authAttempts.push({ user, mechanism: auth.method, ok: false, reason: reply ? 'scripted' : 'basic-auth' });
        callback(reply ? smtpError(reply.code, reply.message) : smtpError(535, profile.basicAuthFailed.join('\n')));
      },
      onMailFrom(_address, session, callback) {
        // With AUTH disabled before STARTTLS smtp-server would not demand authentication, so do it here.
        if (!session.user) {
          return callback(smtpError(530, '5.7.57 Client not authenticated to send mail.'));
        }
        const reply = state.takeScripted('mail');
        callback(reply ? smtpError(reply.code, reply.message) : null);
      },
      onRcptTo(_address, _session, callback) {
        const reply = state.takeScripted('rcpt');
        callback(reply ? smtpError(reply.code, reply.message) : null);
      },
      onData(stream, session, callback) {
        readStream(stream)
          .then(async (raw) => {
            if (stream.sizeExceeded) {
              return callback(smtpError(552, '5.3.4 Message size exceeds fixed maximum message size'));
            }
            const reply = state.takeScripted('data');
            if (reply) return callback(smtpError(reply.code, reply.message));
            const envelope = envelopeOf(session);
            const authUser = String(session.user);
            if (
              options.enforceSendAs &&
              flavour === 'office365' &&
              envelope.mailFrom.toLowerCase() !== authUser.toLowerCase()
            ) {
              return callback(
                smtpError(
                  554,
                  `5.2.252 SendAsDenied; ${authUser} not allowed to send as ${envelope.mailFrom}; ` +
                    'STOREDRV.Submission.Exception:SendAsDeniedException',
                ),
              );
            }
            const parsed = await simpleParser(raw);
            const params = { ...(session.envelope.bodyType ? { body: session.envelope.bodyType } : {}), smtpUtf8: Boolean(session.envelope.smtpUtf8) };
            const message: UpstreamMessage = { envelope, params, authUser, raw, parsed };
            if (frozen) return; // never answered: the client waits until the session is closed
            recorder.add(message);
            await options.beforeDataReply?.(message);
            callback(null, profile.dataOk());
          })
          .catch((err: unknown) => callback(smtpError(451, `4.3.0 ${String(err)}`)));
      },
    },
    state,
  );

  const port = await listen(server, host);

  return {
    flavour,
    host,
    port,
    messages: recorder.messages,
    authAttempts,
    get introspectionCount() {
      return introspectionCount;
    },
    waitForMessages: (n, timeoutMs) => recorder.waitForMessages(n, timeoutMs),
    waitForMessage: (predicate, what, timeoutMs) => recorder.waitForMessage(predicate, what, timeoutMs),
    onMessage: recorder.onMessage,
    freeze() {
      frozen = true;
    },
    thaw() {
      frozen = false;
    },
    failNext(reply, times = 1) {
      scripted.push({ reply, times });
    },
    dropNextConnection() {
      server.dropConnections++;
    },
    grantAppMailbox(clientId, mailbox) {
      const granted = state.appMailboxes.get(clientId) ?? new Set<string>();
      granted.add(mailbox.toLowerCase());
      state.appMailboxes.set(clientId, granted);
    },
    revokeAppMailbox(clientId, mailbox) {
      state.appMailboxes.get(clientId)?.delete(mailbox.toLowerCase());
    },
    async close() {
      await closeServer(server);
      await introspector.close();
    },
  };
}

function listen(server: SMTPServer, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      server.off('error', reject);
      resolve((server.server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: SMTPServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

export interface SmtpSink {
  readonly host: string;
  readonly port: number;
  readonly messages: RecordedMessage[];
  waitForMessages(n: number, timeoutMs?: number): Promise<RecordedMessage[]>;
  /** The first received message (already here or still to come) that `predicate` accepts. */
  waitForMessage(predicate: (message: RecordedMessage) => boolean, what?: string, timeoutMs?: number): Promise<RecordedMessage>;
  close(): Promise<void>;
}

/**
 * A plain SMTP server without AUTH or TLS that records what it receives: the next hop behind a real
 * MTA. `authUser` is read from the `(Authenticated sender: …)` comment Postfix adds to its Received
 * header (smtpd_sasl_authenticated_header), so a test can see who the MTA authenticated.
 */
export async function startSmtpSink(options: { host?: string } = {}): Promise<SmtpSink> {
  const host = options.host ?? '127.0.0.1';
  const recorder = new MessageRecorder<RecordedMessage>();
  const server = new SMTPServer({
    name: 'sink.test',
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSTARTTLS: true,
    disableReverseLookup: true,
    logger: false,
    onData(stream, session, callback) {
      readStream(stream)
        .then(async (raw) => {
          const parsed = await simpleParser(raw);
          const received = parsed.headers.get('received');
          const first = Array.isArray(received) ? received[0] : received;
          const authUser = typeof first === 'string' ? /\(Authenticated sender: ([^)\s]+)\)/.exec(first)?.[1] : undefined;
          recorder.add({ envelope: envelopeOf(session), ...(authUser ? { authUser } : {}), raw, parsed });
          callback(null, 'Ok: queued');
        })
        .catch((err: unknown) => callback(smtpError(451, String(err))));
    },
  });
  const port = await listen(server, host);
  return {
    host,
    port,
    messages: recorder.messages,
    waitForMessages: (n, timeoutMs) => recorder.waitForMessages(n, timeoutMs),
    waitForMessage: (predicate, what, timeoutMs) => recorder.waitForMessage(predicate, what, timeoutMs),
    close: () => closeServer(server),
  };
}
