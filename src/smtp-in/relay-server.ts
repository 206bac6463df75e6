/**
 * The device relay: an SMTP listener (smtp-server) for scanners, printers and apps on the LAN.
 *
 * Purpose: accept mail from devices that can only speak plain SMTP with a password (or from an allowed
 *   network), and say `250` only once the message is on stable storage in the queue.
 * Inputs: device sessions; Relay Settings; device accounts; what the selected upstream supports; the session
 *   limits (config.ts RelayLimits).
 * Outputs: committed queue messages.
 * Replies that refuse something, by phase:
 *   Connect: `421 4.7.0 Too many connections from your address` past POSTERN_SMTP_MAX_CONNECTIONS_PER_ADDRESS
 *     sessions from one IP address (counted over open sessions, so every way a session ends gives its place
 *     back), `421 4.7.0 Too many connected clients` past 1000 in all; `421 4.3.2` while shutting down.
 *   Any time: `421 4.7.0 Too many commands without authentication` for the 26th command before AUTH succeeds
 *     or MAIL is accepted from an Allowed Network (AUTH exchange lines do not count); `421 4.4.2 Too many
 *     commands without a message` for the 31st NOOP/RSET/HELP/VRFY/EXPN since the last accepted message;
 *     `421 4.4.2 No message sent in too long` once a session has gone POSTERN_SMTP_SESSION_TIMEOUT_SECONDS
 *     without an accepted message (smtp-server's idle timeout restarts on every command, so a NOOP stream
 *     would defeat it). Every 421 closes the session.
 *   EHLO / AUTH (RFC 4954): STARTTLS with Postern's certificate; AUTH PLAIN/LOGIN (with the classic
 *     `334 VXNlcm5hbWU6` / `334 UGFzc3dvcmQ6` prompts) is advertised and accepted only under TLS unless the
 *     legacy switch allows it (`538 5.7.0` otherwise), so a client never sends its password in clear. A wrong
 *     password gets `535 5.7.8`; attempts are reserved with the throttle before the password is checked, so
 *     with 5 per user name + address and 20 per address no more are ever checked, however many arrive at
 *     once, and the rest get `454 4.7.0 Too many failed logins; try again in … (after hh:mm UTC)`. AUTH PLAIN
 *     whose authorization identity is neither empty nor the user name gets `535 5.7.8` (RFC 4616 §2: a
 *     device acts only as itself).
 *   MAIL: before AUTH from a network that is not allowed, `530 5.7.0`, so the relay is never open; a
 *     signed-in device whose account lists Allowed Sender Addresses gets `550 5.7.1` for any other MAIL FROM,
 *     `<>` included (RFC 6409 §6.1; the header From stays with the sender policy); `451 4.3.0` when the list
 *     cannot be read; `530 5.7.0` for an account removed during the session.
 *   DATA: size is enforced on the real size (`552 5.3.4`), not only `SIZE=`; a header block over
 *     MAX_HEADER_BYTES (256 KiB, however it is folded or split, and with or without the blank line that ends
 *     it) gets `552 5.3.4`, so the sender policy judges the whole header of every message that is accepted;
 *     NUL bytes get `554 5.6.0` (RFC 5322 allows none; docs/decisions/017); bare CR/LF are normalised or
 *     rejected (`554 5.6.0`), which keeps SMTP smuggling out (message-normalizer.ts).
 * Advertised: DSN is not (not implemented end to end); 8BITMIME and SMTPUTF8 only while the selected upstream
 *   is known to support them: what Postern's own sessions there last saw after EHLO, or, before any was seen,
 *   both for the providers' hosts and neither for another host (smtp-out/extensions.ts, docs/decisions/014).
 *   Read on reload (settings refresh, or at once when a session here saw a change), never per connection.
 * Failure modes: a spool or database failure answers `451 4.3.0` (the device keeps the message and
 *   retries); a throttle failure answers `454 4.7.0 Temporary authentication failure`.
 * Known limits: smtp-server waits 100 ms before every greeting (early-talker detection) and has no option
 *   to turn that off; RelayConnection below skips it (docs/decisions/003-smtp-server-greeting-delay.md).
 *   BDAT/CHUNKING is not offered (smtp-server has none; RFC 3030 makes it optional). smtp-server still takes
 *   BODY=8BITMIME / SMTPUTF8 on MAIL FROM when they are not advertised; such a message is queued as
 *   submitted and delivery refuses it (5.6.3 / 5.6.7 DSN) if it really needs them. The session time limit
 *   waits while a message is coming in (DATA is bounded by the size limit and smtp-server's idle timeout).
 *   The per-address limit counts IP addresses: devices behind one NAT address share it
 *   (docs/decisions/016).
 */
import type { AddressInfo, Socket } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { TLSSocket } from 'node:tls';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import { ErrorCodes, PosternError, type ErrorCode } from '../errors.js';
import { describeError, type Logger } from '../log.js';
import { bodyBytesStreamed } from '../queue/body-memory.js';
import type { IncomingMessage, MessageEnvelope, QueuedMessage } from '../queue/queue.js';
import { RELAY_LIMIT_DEFAULTS, type RelayLimits } from '../config.js';
import { tryAgainIn, type LoginThrottle } from '../login-throttle.js';
import { isAllowedSender } from './allowed-senders.js';
import type { DeviceAccounts } from './devices.js';
import { MAX_HEADER_BYTES, MessageNormalizer } from './message-normalizer.js';
import { isAllowed, parseNetworks } from './networks.js';
import type { RouteReason, SendingRoutes } from './routing.js';
import type { RelayCertificate, RelaySettings, RelaySettingsView } from './relay-settings.js';

/** What the selected upstream accepts, as far as is known (wired in app.ts from E-Mail Settings). */
export interface UpstreamCapabilities {
  eightBitMime: boolean;
  smtpUtf8: boolean;
}

/** Where the relay hands messages over (the queue, wired in app.ts). */
export interface MessageIntake {
  receive(): Promise<IncomingMessage>;
}

export interface RelayServerOptions {
  host: string;
  port: number;
  /** Our name in the greeting and in generated Message-IDs. */
  hostname: string;
  settings: RelaySettings;
  devices: DeviceAccounts;
  throttle: LoginThrottle;
  /** Per-address sessions, commands before AUTH, idle commands, session lifetime; defaults for what is absent. */
  limits?: Partial<RelayLimits>;
  intake: MessageIntake;
  log: Logger;
  /** Told about each committed message (the queue manager takes it from here). */
  onAccepted?: (message: QueuedMessage) => void;
  /** What to advertise of 8BITMIME / SMTPUTF8; both when absent. Read on start and on every reload. */
  upstream?: () => Promise<UpstreamCapabilities>;
  /** How often settings are re-read (other instances may have changed them). */
  settingsRefreshMs?: number;
  /**
   * Load balancers that connect with a PROXY protocol v1 header (POSTERN_SMTP_PROXY_PROTOCOL): from these
   * addresses the header is required, and the address it names is the session's (Allowed Networks, the
   * per-address limits, the sign-in throttle, the log). A header from any other peer is not read.
   */
  proxyFrom?: string[] | undefined;
  maxRecipients?: number;
  /** Which sending account each message goes through (routing.ts); absent: the Default at delivery. */
  routes?: SendingRoutes;
}

/** Why a device's AUTH was refused: wrong credentials, another authorization identity, or the throttle. */
export type RelayAuthFailure = 'credentials' | 'identity' | 'throttled';

interface SessionUser {
  device: string;
  deviceId: string;
}

/** Why a message went through its account, as the Log page's accepted line says it. */
const ROUTE_REASONS: Record<RouteReason, string> = {
  'sender-address': 'Sender Routing: the sender address',
  'sender-domain': 'Sender Routing: the sender domain',
  device: 'the device account',
  network: 'the Allowed Networks entry',
  default: 'the Default',
};

/** smtp-server's handler error: the reply code travels on the error, the catalogue code says which refusal it is. */
function smtpError(code: number, message: string, errorCode: ErrorCode): PosternError & { responseCode: number } {
  return Object.assign(new PosternError(errorCode, message), { responseCode: code });
}

/** A reply text that carries its own RFC 3463 code (`4.3.2 …`). */
const OWN_ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3}(\s|$)/;

/** Commands that keep a session busy without getting it anywhere (each also resets smtp-server's idle timeout). */
const IDLE_COMMANDS = new Set(['NOOP', 'RSET', 'HELP', 'VRFY', 'EXPN']);

/**
 * smtp-server's connection without the 100 ms greeting delay, with replies that carry their own enhanced
 * status code sent as they are (smtp-server would add a generic one in front), and with the limits one
 * client may take of the relay (RelaySmtpServer.limits): sessions per address, commands before AUTH,
 * idle commands and time between accepted messages.
 */
class RelayConnection extends SMTPConnection {
  /** AUTH succeeded or MAIL was accepted (Allowed Networks): the pre-AUTH command limit no longer applies. */
  private passed = false;
  private commandsBeforeAuth = 0;
  private idleCommands = 0;
  private progressTimer: NodeJS.Timeout | undefined;
  /** True only while EHLO builds its reply on a session that may not AUTH yet. */
  private hidingAuth = false;

  private get relay(): RelaySmtpServer {
    return this._server as RelaySmtpServer;
  }

  override init(): void {
    // As SMTPConnection.init, minus `setTimeout(() => this.connectionReady(), 100)`, plus the per-address limit.
    this._setListeners(() => {
      const limits = this.relay.limits;
      if (this._server.connections.size > limits.maxConnections) {
        this.relay.refused('all sessions are in use', this.remoteAddress);
        return this.send(421, '4.7.0 Too many connected clients, try again in a moment');
      }
      let fromHere = 0;
      for (const connection of this._server.connections) if (connection.remoteAddress === this.remoteAddress) fromHere++;
      if (fromHere > limits.maxConnectionsPerAddress) {
        this.relay.refused('too many sessions from one address', this.remoteAddress);
        return this.send(421, '4.7.0 Too many connections from your address');
      }
      this.armProgressTimer();
      this.connectionReady();
    });
  }

  /** The session lifetime without progress: smtp-server's idle timeout restarts on every command, this does not. */
  private armProgressTimer(): void {
    clearTimeout(this.progressTimer);
    this.progressTimer = setTimeout(() => {
      if (this._closing || this._closed) return;
      // A message on its way in (or waiting for the queue) is progress in the making; DATA is bounded by size.
      if (this._dataStream || this._handlerPending) return this.armProgressTimer();
      this.relay.refused('no message within the session time limit', this.remoteAddress);
      this.send(421, '4.4.2 No message sent in too long; closing the session');
    }, this.relay.limits.sessionTimeoutMs);
    this.progressTimer.unref();
  }

  override _onCommand(command: Buffer, callback?: () => void): void {
    // Lines smtp-server discards (TLS handshake) or hands to a pending AUTH exchange are not commands here.
    if (!this._upgrading && !this._nextHandler && !this._closing) {
      const limits = this.relay.limits;
      const name = command.toString('latin1').split(' ', 1)[0]!.toUpperCase();
      if (!this.passed && (this.session.user || this.session.envelope?.mailFrom)) this.passed = true;
      if (!this.passed && ++this.commandsBeforeAuth > limits.maxCommandsBeforeAuth) {
        this.relay.refused('too many commands before AUTH', this.remoteAddress);
        return this.send(421, '4.7.0 Too many commands without authentication; closing the session');
      }
      if (IDLE_COMMANDS.has(name) && ++this.idleCommands > limits.maxIdleCommands) {
        this.relay.refused('too many commands without a message', this.remoteAddress);
        return this.send(421, '4.4.2 Too many commands without a message; closing the session');
      }
    }
    super._onCommand(command, callback);
  }

  /** RFC 4954 §4: AUTH is offered only where it may be used, so no client sends its password in clear. */
  override handler_EHLO(command: Buffer, callback: () => void): void {
    this.hidingAuth = !this.secure && !this._server.options.allowInsecureAuth;
    try {
      super.handler_EHLO(command, callback);
    } finally {
      this.hidingAuth = false;
    }
  }

  override _isSupported(command: string): boolean {
    if (this.hidingAuth && command.trim().toUpperCase() === 'AUTH') return false;
    return super._isSupported(command);
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    if (code === 250 && context === 'DATA_OK') {
      // A message was accepted: the session is getting somewhere.
      this.idleCommands = 0;
      this.armProgressTimer();
    }
    const first = Array.isArray(data) ? data[0] : data;
    super.send(code, data, typeof first === 'string' && OWN_ENHANCED_CODE.test(first) ? false : context);
  }

  override _onClose(): void {
    clearTimeout(this.progressTimer);
    const first = !this._closed;
    super._onClose(); // no longer among the server's connections
    if (first) this.relay.closed(this.remoteAddress);
  }
}

class RelaySmtpServer extends SMTPServer {
  limits: RelayLimits = RELAY_LIMIT_DEFAULTS;
  refused: (reason: string, address: string) => void = () => undefined;
  closed: (address: string) => void = () => undefined;

  override connect(socket: Socket | TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    // As SMTPServer.connect, with RelayConnection.
    const connection = new RelayConnection(this, socket, socketOptions);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data) => this._onClientConnect(data));
    connection.init();
  }
}

/** Stops storing bytes past the size limit (smtp-server still counts them and answers 552). */
class SizeGuard extends Transform {
  bytes = 0;
  constructor(private readonly limit: number) {
    super();
  }
  get exceeded(): boolean {
    return this.bytes > this.limit;
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    bodyBytesStreamed(chunk.length);
    callback(null, this.exceeded ? undefined : chunk);
  }
}

export class RelayServer {
  readonly #options: RelayServerOptions;
  readonly #log: Logger;
  #server: RelaySmtpServer | undefined;
  #settings!: RelaySettingsView;
  #networks = parseNetworks('').ranges;
  #certificate: RelayCertificate | undefined;
  #refresh: NodeJS.Timeout | undefined;
  #upstream: UpstreamCapabilities = { eightBitMime: true, smtpUtf8: true };
  #stopping = false;
  readonly #limits: RelayLimits;
  readonly #closedListeners = new Set<(address: string) => void>();
  readonly #authFailureListeners = new Set<(reason: RelayAuthFailure) => void>();
  port = 0;

  constructor(options: RelayServerOptions) {
    this.#options = options;
    this.#limits = { ...RELAY_LIMIT_DEFAULTS, ...options.limits };
    this.#log = options.log.child({ component: 'relay' });
    options.settings.onChange(() => this.reload().catch((error) => this.#log.error({ err: describeError(error) }, 'could not apply Relay Settings')));
  }

  get settings(): RelaySettingsView {
    return this.#settings;
  }

  get certificate(): RelayCertificate | undefined {
    return this.#certificate;
  }

  /** What the relay advertises now of the upstream-dependent extensions. */
  get upstreamCapabilities(): UpstreamCapabilities {
    return this.#upstream;
  }

  async #readUpstream(): Promise<void> {
    if (!this.#options.upstream) return;
    try {
      this.#upstream = await this.#options.upstream();
    } catch (error) {
      // Keep what was advertised; the next reload tries again.
      this.#log.warn({ err: describeError(error) }, 'could not read what the upstream supports');
    }
  }

  /** Re-reads Relay Settings and the certificate and applies them to the listener. */
  async reload(): Promise<void> {
    this.#settings = await this.#options.settings.get();
    this.#networks = parseNetworks(this.#settings.allowedNetworks.join('\n')).ranges;
    const certificate = await this.#options.settings.certificate();
    await this.#readUpstream();
    const server = this.#server;
    if (!server) return;
    // smtp-server reads these per EHLO from server.options.
    server.options.hide8BITMIME = !this.#upstream.eightBitMime;
    server.options.hideSMTPUTF8 = !this.#upstream.smtpUtf8;
    server.options.size = this.#settings.maxMessageSize;
    server.options.allowInsecureAuth = this.#settings.allowInsecureAuth;
    const tlsChanged = certificate?.fingerprint256 !== this.#certificate?.fingerprint256 || this.#tlsFloor() !== server.options.minVersion;
    this.#certificate = certificate;
    if (tlsChanged && certificate) server.updateSecureContext(this.#tlsOptions(certificate));
  }

  #tlsFloor(): 'TLSv1' | 'TLSv1.2' {
    return this.#settings.allowLegacyTls ? 'TLSv1' : 'TLSv1.2';
  }

  #tlsOptions(certificate: RelayCertificate): Pick<SMTPServerOptions, 'key' | 'cert' | 'minVersion' | 'ciphers'> {
    // Old MFPs speak TLS 1.0/1.1 only (RFC 8996 deprecates them); OpenSSL 3 needs SECLEVEL=0 for them, hence a switch.
    return this.#settings.allowLegacyTls
      ? { key: certificate.key, cert: certificate.cert, minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }
      : { key: certificate.key, cert: certificate.cert, minVersion: 'TLSv1.2', ciphers: 'DEFAULT' };
  }

  /**
   * Told with the client's address when a session has ended and no longer counts against the per-address
   * limit, so that tests wait for the relay to see a close instead of retrying. Returns the removal.
   */
  onSessionClosed(listener: (address: string) => void): () => void {
    this.#closedListeners.add(listener);
    return () => this.#closedListeners.delete(listener);
  }

  /**
   * Told each time a device's AUTH is refused (535 or the throttle's 454), for the metrics. Returns the
   * removal.
   */
  onAuthFailure(listener: (reason: RelayAuthFailure) => void): () => void {
    this.#authFailureListeners.add(listener);
    return () => this.#authFailureListeners.delete(listener);
  }

  /** A listener's failure is logged, never turned into the device's reply. */
  #authFailed(reason: RelayAuthFailure): void {
    for (const listener of this.#authFailureListeners) {
      try {
        listener(reason);
      } catch (error) {
        this.#log.warn({ err: describeError(error) }, 'an AUTH failure listener failed');
      }
    }
  }

  /** True from the moment the listener is bound until stop() begins. */
  get listening(): boolean {
    return !this.#stopping && this.#server?.server.listening === true;
  }

  async start(): Promise<number> {
    this.#stopping = false;
    this.#settings = await this.#options.settings.get();
    this.#networks = parseNetworks(this.#settings.allowedNetworks.join('\n')).ranges;
    this.#certificate = await this.#options.settings.certificate();
    // An invariant of the wiring (app.ts), not a condition an administrator can meet: a programmer error.
    if (!this.#certificate) throw new Error('invariant: the relay certificate is missing (RelaySettings.ensureCertificate runs first)');
    await this.#readUpstream();
    const server = new RelaySmtpServer({
      name: this.#options.hostname,
      banner: 'Postern',
      secure: false,
      ...this.#tlsOptions(this.#certificate),
      size: this.#settings.maxMessageSize,
      rejectOversized: true,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      allowInsecureAuth: this.#settings.allowInsecureAuth,
      hideDSN: true,
      hide8BITMIME: !this.#upstream.eightBitMime,
      hideSMTPUTF8: !this.#upstream.smtpUtf8,
      hideREQUIRETLS: true,
      hideENHANCEDSTATUSCODES: false,
      disableReverseLookup: true,
      ...(this.#options.proxyFrom && this.#options.proxyFrom.length > 0 ? { useProxy: this.#options.proxyFrom } : {}),
      maxClients: this.#limits.maxConnections,
      maxRecipients: this.#options.maxRecipients ?? 100,
      socketTimeout: 120_000,
      closeTimeout: 5_000,
      logger: false,
      onConnect: (session, callback) => this.onConnect(session, callback),
      onAuth: (auth, session, callback) => void this.onAuth(auth, session, callback),
      onMailFrom: (address, session, callback) => void this.onMailFrom(address.address, session, callback),
      onData: (stream, session, callback) => void this.onData(stream, session, callback),
    });
    server.limits = this.#limits;
    server.refused = (reason, address) => this.#log.info({ address, reason, errorCode: ErrorCodes.SMTP_SESSION_LIMIT }, 'relay session closed (421)');
    server.closed = (address) => {
      for (const listener of this.#closedListeners) listener(address);
    };
    server.on('error', (error: Error & { code?: string }) => {
      // Socket errors of single sessions (resets, TLS alerts) land here; they end only that session.
      this.#log.debug({ code: error.code, message: error.message }, 'relay session error');
    });
    this.#server = server;
    this.port = await new Promise<number>((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      server.server.once('error', onError);
      server.listen(this.#options.port, this.#options.host, () => {
        server.server.off('error', onError);
        resolve((server.server.address() as AddressInfo).port);
      });
    });
    this.#refresh = setInterval(() => void this.reload().catch(() => undefined), this.#options.settingsRefreshMs ?? 10_000);
    this.#refresh.unref();
    return this.port;
  }

  // ---- SMTP phases ----------------------------------------------------------------------------------

  onConnect(_session: SMTPServerSession, callback: (error?: Error | null) => void): void {
    if (this.#stopping) return callback(smtpError(421, '4.3.2 Postern is shutting down; try again shortly', ErrorCodes.QUEUE_STOPPING));
    callback();
  }

  /**
   * AUTH PLAIN / LOGIN with a device account. An attempt is reserved with the throttle before the (slow)
   * password check and given back only when it succeeds, so parallel guesses cannot outrun the count.
   */
  async onAuth(
    auth: Pick<SMTPServerAuthentication, 'method' | 'username' | 'password' | 'authzid' | 'authcid'>,
    session: SMTPServerSession,
    callback: (error: Error | null | undefined, response?: { user?: SessionUser; responseCode?: number; message?: string }) => void,
  ): Promise<void> {
    const address = session.remoteAddress;
    const { method } = auth;
    const username = auth.username ?? '';
    const password = auth.password ?? '';
    // RFC 4616 §2: a device account may act only as itself; another authorization identity is refused.
    if (method === 'PLAIN' && auth.authzid && auth.authcid && auth.authzid !== auth.authcid) {
      this.#log.warn({ username, address, method, errorCode: ErrorCodes.SMTP_AUTH_FAILED }, 'device AUTH refused: authorization identity differs from the user name');
      this.#authFailed('identity');
      return callback(null, { responseCode: 535, message: '5.7.8 Authorization identity must be empty or the same as the user name' });
    }
    try {
      const attempt = await this.#options.throttle.reserve(username, address);
      if (!attempt.allowed) {
        this.#log.warn({ username, address, method, errorCode: ErrorCodes.SMTP_AUTH_THROTTLED }, 'device AUTH refused: too many failed attempts');
        this.#authFailed('throttled');
        return callback(smtpError(454, `4.7.0 Too many failed logins; ${tryAgainIn(attempt.retryAfterSeconds)}`, ErrorCodes.SMTP_AUTH_THROTTLED));
      }
      const device = username && password ? await this.#options.devices.authenticate(username, password) : undefined;
      if (!device) {
        // The reservation stays: it is the failure's count.
        this.#log.warn({ username, address, method, errorCode: ErrorCodes.SMTP_AUTH_FAILED }, 'device AUTH failed: wrong user name or password');
        this.#authFailed('credentials');
        return callback(null, { responseCode: 535, message: '5.7.8 Authentication credentials invalid' });
      }
      await attempt.succeeded();
      callback(null, { user: { device: device.username, deviceId: device.id } });
    } catch (error) {
      this.#log.error({ err: describeError(error), errorCode: ErrorCodes.SMTP_LOCAL_ERROR }, 'device AUTH could not be checked');
      callback(smtpError(454, '4.7.0 Temporary authentication failure; try again', ErrorCodes.SMTP_LOCAL_ERROR));
    }
  }

  /**
   * RFC 6409 §4.3: MAIL needs AUTH, or a client on an allowed network. §6.1: a signed-in device may use only
   * the senders its account allows (`address` is '' for the null reverse-path). Sessions from Allowed
   * Networks have no account, hence no list: only the sender policy applies to them.
   */
  async onMailFrom(address: string, session: SMTPServerSession, callback: (error?: Error | null) => void): Promise<void> {
    const user = session.user as SessionUser | undefined;
    if (!user) {
      if (!isAllowed(session.remoteAddress, this.#networks)) {
        this.#log.warn({ address: session.remoteAddress, errorCode: ErrorCodes.SMTP_AUTH_REQUIRED }, 'MAIL without AUTH from a network that is not allowed: refused (530)');
        return callback(smtpError(530, '5.7.0 Authentication required', ErrorCodes.SMTP_AUTH_REQUIRED));
      }
      return callback();
    }
    let allowed: string[] | undefined;
    try {
      // Remembered from AUTH for a few seconds (devices.ts): no query per message, edits count at once.
      allowed = await this.#options.devices.allowedSenders(user.deviceId);
    } catch (error) {
      this.#log.error({ err: describeError(error), device: user.device, errorCode: ErrorCodes.SMTP_LOCAL_ERROR }, 'Allowed Sender Addresses could not be read (451)');
      return callback(smtpError(451, '4.3.0 Local error; try again later', ErrorCodes.SMTP_LOCAL_ERROR));
    }
    if (allowed === undefined) {
      this.#log.info({ device: user.device, address: session.remoteAddress, errorCode: ErrorCodes.SMTP_AUTH_REQUIRED }, 'MAIL from a device account removed during the session: refused (530)');
      return callback(smtpError(530, '5.7.0 Authentication required', ErrorCodes.SMTP_AUTH_REQUIRED));
    }
    if (!isAllowedSender(address, allowed)) {
      this.#log.info({ device: user.device, address: session.remoteAddress, mailFrom: address || '<>', errorCode: ErrorCodes.SMTP_SENDER_NOT_ALLOWED }, 'MAIL FROM not allowed for this device: refused (550)');
      return callback(smtpError(550, `5.7.1 Sender address <${address}> is not allowed for this device`, ErrorCodes.SMTP_SENDER_NOT_ALLOWED));
    }
    callback();
  }

  async onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null, message?: string) => void): Promise<void> {
    const user = session.user as SessionUser | undefined;
    const client = user ? `device ${user.device}` : `network ${session.remoteAddress}`;
    let incoming: IncomingMessage | undefined;
    try {
      incoming = await this.#options.intake.receive();
    } catch (error) {
      this.#log.error({ err: describeError(error), errorCode: ErrorCodes.QUEUE_COMMIT_FAILED }, 'could not open a spool file');
      stream.resume();
      return callback(smtpError(451, '4.3.0 Local error, message not queued; try again later', ErrorCodes.QUEUE_COMMIT_FAILED));
    }
    const guard = new SizeGuard(this.#settings.maxMessageSize);
    const normalizer = new MessageNormalizer({ hostname: this.#options.hostname });
    try {
      await pipeline(stream, guard, normalizer, incoming.body);
      if (stream.sizeExceeded || guard.exceeded) {
        await incoming.abort();
        this.#log.warn({ client, bytes: guard.bytes, limit: this.#settings.maxMessageSize, errorCode: ErrorCodes.SMTP_MESSAGE_TOO_BIG }, 'message refused: larger than the maximum message size (552)');
        return callback(smtpError(552, `5.3.4 Message exceeds fixed maximum message size ${this.#settings.maxMessageSize}`, ErrorCodes.SMTP_MESSAGE_TOO_BIG));
      }
      if (normalizer.facts.headerTooLarge) {
        await incoming.abort();
        this.#log.warn({ client, limit: MAX_HEADER_BYTES, errorCode: ErrorCodes.SMTP_HEADER_TOO_BIG }, 'message refused: header block too large (552)');
        return callback(smtpError(552, `5.3.4 Message header block exceeds ${MAX_HEADER_BYTES} bytes`, ErrorCodes.SMTP_HEADER_TOO_BIG));
      }
      if (normalizer.facts.nulBytes > 0) {
        await incoming.abort();
        this.#log.warn({ client, nulBytes: normalizer.facts.nulBytes, errorCode: ErrorCodes.SMTP_NUL_BYTES }, 'message refused: NUL bytes (554)');
        return callback(smtpError(554, '5.6.0 Message contains NUL bytes', ErrorCodes.SMTP_NUL_BYTES));
      }
      if (normalizer.bareNewlines > 0 && this.#settings.bareNewlines === 'reject') {
        await incoming.abort();
        this.#log.warn({ client, bareLf: normalizer.facts.bareLf, bareCr: normalizer.facts.bareCr, errorCode: ErrorCodes.SMTP_BARE_NEWLINE }, 'message refused: bare CR or LF (554)');
        return callback(smtpError(554, '5.6.0 Message contains a bare CR or LF; lines must end with CRLF', ErrorCodes.SMTP_BARE_NEWLINE));
      }
      const envelope = session.envelope;
      const mailFrom = envelope.mailFrom ? envelope.mailFrom.address : '';
      const facts = normalizer.facts;
      const route = await this.#options.routes?.resolve({ reversePath: mailFrom, deviceId: user?.deviceId, remoteAddress: session.remoteAddress });
      const accepted: MessageEnvelope = {
        accountId: route?.accountId,
        routedBy: route ? ROUTE_REASONS[route.reason] : undefined,
        reversePath: mailFrom,
        recipients: envelope.rcptTo.map((r) => r.address),
        body8bit: facts.eightBit || envelope.bodyType === '8bitmime',
        smtputf8: Boolean(envelope.smtpUtf8),
        headerFrom: facts.headerFrom,
        subject: facts.subject,
        messageId: facts.messageId,
        client,
      };
      const queued = await incoming.commit(accepted);
      this.#log.info(
        {
          queueId: incoming.id,
          client,
          from: mailFrom,
          recipients: accepted.recipients.length,
          bytes: incoming.body.bytesWritten,
          ...(route ? { account: route.accountId, routedBy: route.reason } : {}),
          ...(facts.bareLf + facts.bareCr > 0 ? { bareLf: facts.bareLf, bareCr: facts.bareCr } : {}),
        },
        'message accepted',
      );
      this.#options.onAccepted?.(queued);
      callback(null, `2.0.0 Ok: queued as ${incoming.id}`);
    } catch (error) {
      await incoming.abort().catch(() => undefined);
      const code = (error as { code?: string }).code;
      if (code === 'ECONNECTION' || code === 'ERR_STREAM_PREMATURE_CLOSE') {
        this.#log.info({ client }, 'device disconnected during DATA; nothing queued');
      } else {
        this.#log.error({ err: describeError(error), client, errorCode: ErrorCodes.QUEUE_COMMIT_FAILED }, 'message could not be queued (451)');
      }
      callback(smtpError(451, '4.3.0 Local error, message not queued; try again later', ErrorCodes.QUEUE_COMMIT_FAILED));
    }
  }

  /** Stops accepting: the listener closes, sessions in progress get up to `graceMs` to finish. */
  async stop(graceMs = 5_000): Promise<void> {
    this.#stopping = true;
    if (this.#refresh) clearInterval(this.#refresh);
    const server = this.#server;
    if (!server) return;
    server.options.closeTimeout = graceMs;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    this.#server = undefined;
  }
}
