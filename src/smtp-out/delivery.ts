/**
 * Delivery to the upstream submission server (Microsoft 365 / Gmail) over nodemailer's SMTPConnection.
 *
 * Purpose: open an encrypted, XOAUTH2-authenticated session and hand the message over, reusing sessions
 *   for the next messages (a TLS handshake and a token check per message would cost the provider's
 *   connection budget and our throughput).
 * Inputs: the upstream target (host, port, TLS mode, the seed's TLS options), a token source, the
 *   envelope and a body stream. Outputs: the server's per-recipient answers, or a classified failure
 *   that carries its catalogue code (POSTERN_SMTP_UPSTREAM_*, or POSTERN_QUEUE_SPOOL_MISSING for a body
 *   that could not be read; replies.ts).
 * Failure modes: port 465 speaks TLS at once; 587 requires STARTTLS and fails closed when the server does
 *   not offer it (AUTH is never sent before TLS: RFC 3207, docs/protocol.md §3.2). TLS options come from
 *   tls/trust.ts (`tlsClientOptions`, system + NODE_EXTRA_CA_CERTS + registered CAs). No usable token →
 *   `held`. A session that died while idle in the pool is replaced, and the message resent on a fresh one
 *   only when not a byte of it had been sent. A message that needs 8BITMIME or SMTPUTF8 where the session
 *   did not advertise it (after EHLO, post-STARTTLS) is refused here as a permanent failure (5.6.3 / 5.6.7),
 *   never sent altered; a body marked 8BITMIME that is 7-bit clean goes as it is (extensions.ts). What each
 *   new session advertised is reported through `onExtensions` (the relay advertises accordingly,
 *   docs/protocol.md §5.3).
 * Known limits: the SASL user is the authorized mailbox (a shared mailbox as `user=` is not offered);
 *   pooled sessions authenticated with an older token stay usable until they close (SMTP checks tokens only
 *   at AUTH).
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { Transform, type Readable } from 'node:stream';
import { createSecureContext, type ConnectionOptions, type SecureContext } from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { ErrorCodes, isPosternError, PosternError } from '../errors.js';
import type { Logger } from '../log.js';
import { TokenUnavailableError, type AccessToken, type GetAccessTokenOptions } from '../oauth/token-service.js';
import { bodyBytesStreamed } from '../queue/body-memory.js';
import type { UpstreamTlsMode } from '../store/schema.js';
import { tlsClientOptions, type TlsPolicy } from '../tls/trust.js';
import { FastDataSmtpConnection } from './dot-stuffing.js';
import { refusalFor, scanEightBit, type UpstreamExtension } from './extensions.js';
import { classifySmtpError, replyText, type ClassifiedFailure } from './replies.js';
import { bearerLogin, NoBearerMechanismError, RefreshFailedError } from './xoauth2.js';

/**
 * The name our customAuth handler is registered under. Not `XOAUTH2`: given `method: 'XOAUTH2'` without its
 * own token generator, nodemailer switches to the first other mechanism the server offers (LOGIN at Exchange
 * Online) and would send a password login. Under a name of its own the handler always runs, and it chooses
 * XOAUTH2 or OAUTHBEARER itself (xoauth2.ts); a password mechanism is never tried.
 */
const BEARER_METHOD = 'POSTERN-OAUTH2';

export interface UpstreamTarget {
  accountId: string;
  host: string;
  port: number;
  tlsMode: UpstreamTlsMode;
  tls: TlsPolicy;
}

export interface TokenSource {
  getAccessToken(accountId: string, options?: GetAccessTokenOptions): Promise<AccessToken>;
}

export interface CaSource {
  caList(): Promise<string[]>;
}

export interface DeliveryEnvelope {
  from: string;
  to: string[];
  size?: number | undefined;
  /** Submitted as 8-bit (BODY=8BITMIME or 8-bit bytes seen): BODY=8BITMIME goes upstream. */
  eightBit?: boolean | undefined;
  /** Submitted with SMTPUTF8: the parameter goes upstream (RFC 6531 §3.4). */
  smtpUtf8?: boolean | undefined;
}

export interface RecipientAnswer {
  recipient: string;
  code: number | null;
  reply: string;
}

export type SendOutcome =
  | { kind: 'accepted'; code: number | null; reply: string; accepted: string[]; rejected: RecipientAnswer[] }
  | { kind: 'failed'; failure: ClassifiedFailure }
  | { kind: 'held'; error: TokenUnavailableError };

export interface SmtpDeliveryOptions {
  tokens: TokenSource;
  trust: CaSource;
  log: Logger;
  /** Our name in EHLO. */
  clientName: string;
  /** Idle sessions kept per target. */
  maxIdlePerTarget?: number;
  idleMs?: number;
  maxMessagesPerSession?: number;
  maxSessionAgeMs?: number;
  connectionTimeoutMs?: number;
  socketTimeoutMs?: number;
  /** Told what every new session's EHLO (after STARTTLS) advertised of 8BITMIME / SMTPUTF8. */
  onExtensions?: (target: UpstreamTarget, extensions: UpstreamExtension[]) => void | Promise<void>;
}

interface Session {
  key: string;
  connection: FastDataSmtpConnection;
  /** 8BITMIME / SMTPUTF8 as advertised after EHLO; undefined if nodemailer no longer exposes its EHLO lines. */
  extensions: UpstreamExtension[] | undefined;
  createdAt: number;
  lastUsedAt: number;
  messages: number;
  closed: boolean;
  idleTimer?: NodeJS.Timeout;
}

/** Counts what a body stream hands on, so a failed send knows whether any of the message left. */
class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    bodyBytesStreamed(chunk.length);
    callback(null, chunk);
  }
}

/** Runs one SMTPConnection step; an 'error' or 'end' while it runs fails it. */
function step<T>(connection: SMTPConnection, run: (done: (error: Error | null | undefined, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const finish = (error: Error | null | undefined, value?: T) => {
      if (settled) return;
      settled = true;
      connection.off('error', onError);
      connection.off('end', onEnd);
      if (error) reject(error);
      else resolve(value as T);
    };
    const onError = (error: Error) => finish(error);
    // Shaped as nodemailer's own connection errors, so that replies.ts classifies it with them.
    const onEnd = () => finish(Object.assign(new Error('the server closed the connection'), { code: 'ECONNECTION' }));
    connection.on('error', onError);
    connection.on('end', onEnd);
    run(finish);
  });
}

export class SmtpDelivery {
  readonly #idle = new Map<string, Session[]>();
  readonly #sessions = new Set<Session>();
  readonly #options: Required<Omit<SmtpDeliveryOptions, 'tokens' | 'trust' | 'log' | 'clientName' | 'onExtensions'>>;
  readonly #onExtensions: SmtpDeliveryOptions['onExtensions'];
  readonly #tokens: TokenSource;
  readonly #trust: CaSource;
  readonly #log: Logger;
  readonly #clientName: string;
  #closed = false;
  /** Secure contexts by trust list: building one parses every root CA (milliseconds), a handshake needs none of that. */
  readonly #contexts = new Map<string, SecureContext>();

  constructor(options: SmtpDeliveryOptions) {
    this.#tokens = options.tokens;
    this.#trust = options.trust;
    this.#log = options.log.child({ component: 'smtp-out' });
    this.#clientName = options.clientName;
    this.#onExtensions = options.onExtensions;
    this.#options = {
      maxIdlePerTarget: options.maxIdlePerTarget ?? 4,
      idleMs: options.idleMs ?? 15_000,
      maxMessagesPerSession: options.maxMessagesPerSession ?? 100,
      maxSessionAgeMs: options.maxSessionAgeMs ?? 5 * 60_000,
      connectionTimeoutMs: options.connectionTimeoutMs ?? 30_000,
      socketTimeoutMs: options.socketTimeoutMs ?? 120_000,
    };
  }

  /** Hands one message to the upstream. Never throws: every failure comes back classified. */
  async send(target: UpstreamTarget, envelope: DeliveryEnvelope, body: () => Readable): Promise<SendOutcome> {
    for (let attempt = 1; ; attempt++) {
      let session: Session;
      try {
        session = await this.#acquire(target, attempt > 1);
      } catch (error) {
        return this.#loginFailure(error, target);
      }
      const refused = await this.#checkExtensions(session, target, envelope, body);
      if (refused) return refused;
      const counter = new ByteCounter();
      const stream = body();
      let bodyError: PosternError | undefined;
      stream.on('error', (error) => {
        if (!isPosternError(error)) return counter.destroy(error);
        // nodemailer rewrites the code of the stream error it is handed (ESTREAM): it gets a copy.
        bodyError = error;
        counter.destroy(new Error(error.message, { cause: error }));
      });
      stream.pipe(counter);
      try {
        const info = await step<SMTPConnection.SentMessageInfo>(session.connection, (done) =>
          session.connection.send(
            { from: envelope.from, to: envelope.to, size: envelope.size, use8BitMime: (envelope.eightBit ?? false) && (session.extensions ?? []).includes('8BITMIME') },
            counter,
            (error, result) => done(error, result),
          ),
        );
        session.messages++;
        this.#release(session);
        return {
          kind: 'accepted',
          code: Number(/^\d{3}/.exec(info.response)?.[0] ?? 250),
          reply: replyText(info.response),
          accepted: info.accepted,
          rejected: (info.rejectedErrors ?? []).map((e) => this.#answer(e)),
        };
      } catch (error) {
        stream.unpipe(counter);
        stream.destroy();
        const e = error as { code?: string; responseCode?: number; rejectedErrors?: unknown[] };
        const reused = session.messages > 0;
        if ((e.code === 'EENVELOPE' || e.code === 'EMESSAGE') && e.responseCode !== 421 && !session.closed && !session.connection.destroyed) {
          await this.#reset(session);
        } else {
          this.#discard(session);
        }
        if (e.code === 'EENVELOPE' && Array.isArray(e.rejectedErrors) && e.rejectedErrors.length === envelope.to.length) {
          return { kind: 'accepted', code: null, reply: replyText((error as { response?: string }).response), accepted: [], rejected: e.rejectedErrors.map((r) => this.#answer(r)) };
        }
        // Our side failed (the spooled body could not be read): not the upstream's doing.
        if (bodyError) return { kind: 'failed', failure: { class: 'transient', code: null, reply: bodyError.message, advice: 'Postern retries automatically.', errorCode: bodyError.code } };
        // A pooled session the server had dropped: nothing of the message went out, try a fresh one.
        if (reused && attempt === 1 && counter.bytes === 0 && (e.responseCode === undefined || e.responseCode === 421)) continue;
        return { kind: 'failed', failure: classifySmtpError(error, target.host) };
      }
    }
  }

  /**
   * RFC 6152 §3 / RFC 6531 §3.2: a message that needs an extension the session lacks is not sent. Reads the
   * body only then (a rare case: the upstream changed, or a relay that lacks them). Also sets whether MAIL
   * FROM carries SMTPUTF8. Returns the refusal, or undefined to go ahead.
   */
  async #checkExtensions(session: Session, target: UpstreamTarget, envelope: DeliveryEnvelope, body: () => Readable): Promise<SendOutcome | undefined> {
    const offered = session.extensions ?? [];
    session.connection.smtpUtf8 = Boolean(envelope.smtpUtf8) && offered.includes('SMTPUTF8');
    const missing = (envelope.eightBit && !offered.includes('8BITMIME')) || (envelope.smtpUtf8 && !offered.includes('SMTPUTF8'));
    if (!missing) return undefined;
    let refusal;
    try {
      const scan = await scanEightBit(body());
      refusal = refusalFor({ smtpUtf8: Boolean(envelope.smtpUtf8), addresses: [envelope.from, ...envelope.to] }, scan, offered, `${target.host}:${target.port}`);
    } catch (error) {
      this.#release(session);
      const errorCode = isPosternError(error) ? error.code : ErrorCodes.QUEUE_SPOOL_MISSING;
      return { kind: 'failed', failure: { class: 'transient', code: null, reply: `the message could not be read: ${error instanceof Error ? error.message : String(error)}`, advice: 'Postern retries automatically.', errorCode } };
    }
    if (!refusal) return undefined;
    this.#release(session);
    const errorCode = ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED;
    this.#log.warn({ host: target.host, port: target.port, offered, reply: refusal.reply, errorCode }, 'message not sent: the upstream lacks an extension it needs');
    return { kind: 'failed', failure: { class: 'permanent', code: refusal.code, reply: refusal.reply, advice: refusal.advice, errorCode } };
  }

  #answer(error: unknown): RecipientAnswer {
    const e = error as { recipient?: string; responseCode?: number; response?: string; message?: string };
    return { recipient: e.recipient ?? '', code: typeof e.responseCode === 'number' ? e.responseCode : null, reply: replyText(e.response) || String(e.message ?? '') };
  }

  #loginFailure(error: unknown, target: UpstreamTarget): SendOutcome {
    const original = error instanceof RefreshFailedError ? error.original : error;
    if (original instanceof TokenUnavailableError) return { kind: 'held', error: original };
    if (error instanceof NoBearerMechanismError) {
      return {
        kind: 'failed',
        failure: {
          class: 'connection',
          code: null,
          reply: error.message,
          advice: `${target.host}:${target.port} offers no OAuth 2.0 login (AUTH XOAUTH2 or OAUTHBEARER). Check SMTP Server and Port in E-Mail Settings.`,
          errorCode: ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED,
        },
      };
    }
    if (isPosternError(error, ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED)) {
      return {
        kind: 'failed',
        failure: {
          class: 'connection',
          code: null,
          reply: error.message,
          advice: 'Postern never signs in over an unencrypted connection. Check SMTP Server, Port and TLS Mode in E-Mail Settings (587 = STARTTLS, 465 = SSL/TLS).',
          errorCode: error.code,
        },
      };
    }
    return { kind: 'failed', failure: classifySmtpError(error, target.host) };
  }

  static keyOf(target: UpstreamTarget): string {
    return JSON.stringify([target.accountId, target.host, target.port, target.tlsMode, target.tls.verifyServerCertificate, target.tls.addCnToVerificationItems]);
  }

  async #acquire(target: UpstreamTarget, fresh: boolean): Promise<Session> {
    const key = SmtpDelivery.keyOf(target);
    const idle = this.#idle.get(key) ?? [];
    const now = Date.now();
    while (!fresh && idle.length > 0) {
      const session = idle.pop()!;
      if (session.idleTimer) clearTimeout(session.idleTimer);
      if (!session.closed && !session.connection.destroyed && now - session.createdAt < this.#options.maxSessionAgeMs) return session;
      this.#discard(session);
    }
    return this.#open(target, key);
  }

  async #open(target: UpstreamTarget, key: string): Promise<Session> {
    const token = await this.#tokens.getAccessToken(target.accountId);
    const user = token.mailbox;
    if (!user) throw new TokenUnavailableError('The authorized mailbox is not known (the sign-in gave no e-mail address); authorize again.', 'Error', true);
    const servername = isIP(target.host) === 0 ? target.host : undefined;
    const connection: FastDataSmtpConnection = new FastDataSmtpConnection({
      host: target.host,
      port: target.port,
      secure: target.tlsMode === 'tls',
      requireTLS: target.tlsMode === 'starttls',
      tls: await this.#tlsOptions(target, servername),
      name: this.#clientName,
      connectionTimeout: this.#options.connectionTimeoutMs,
      greetingTimeout: this.#options.connectionTimeoutMs,
      socketTimeout: this.#options.socketTimeoutMs,
      socketCloseTimeout: 1000,
      logger: false,
      debug: false,
      customAuth: {
        [BEARER_METHOD]: bearerLogin({
          user,
          accessToken: token.accessToken,
          host: target.host,
          port: target.port,
          refresh: async (rejected) => (await this.#tokens.getAccessToken(target.accountId, { rejectedAccessToken: rejected })).accessToken,
          onChallenge: (challenge) => this.#log.info({ host: target.host, challenge }, 'the upstream refused the token (error challenge)'),
          onRetry: (reply) => this.#log.info({ host: target.host, reply: replyText(reply) }, 'the upstream refused the token; refreshing it once and retrying'),
          advertised: (): string[] | undefined => connection.advertisedAuthMechanisms(),
        }),
      },
    });
    const session: Session = { key, connection, extensions: undefined, createdAt: Date.now(), lastUsedAt: Date.now(), messages: 0, closed: false };
    this.#sessions.add(session);
    // An idle session the server drops must not become an unhandled 'error'.
    connection.on('error', (error: Error & { code?: string }) => {
      session.closed = true;
      this.#log.debug({ host: target.host, code: error.code }, 'upstream session error');
    });
    connection.on('end', () => {
      session.closed = true;
      this.#forget(session);
    });
    try {
      await step<void>(connection, (done) => connection.connect(() => done(null)));
      // nodemailer's connect() ends after the last EHLO (after STARTTLS): what the session may use.
      session.extensions = connection.advertisedExtensions();
      // Awaited, so what Send Test E-Mail saw is in effect at the relay when its answer comes.
      if (session.extensions && connection.secure) await this.#onExtensions?.(target, session.extensions);
      if (!connection.secure) {
        // Belt and braces: requireTLS/secure already guarantee this; a token is never sent in clear text.
        throw new PosternError(ErrorCodes.SMTP_UPSTREAM_UNSUPPORTED, 'the connection is not encrypted; Postern does not sign in without TLS');
      }
      await step<boolean | undefined>(connection, (done) => connection.login({ method: BEARER_METHOD, user, pass: 'unused' }, (error, ok) => done(error, ok)));
    } catch (error) {
      this.#discard(session);
      throw error;
    }
    return session;
  }

  async #tlsOptions(target: UpstreamTarget, servername: string | undefined): Promise<ConnectionOptions> {
    const options = tlsClientOptions(target.tls, target.tls.verifyServerCertificate ? await this.#trust.caList() : [], servername);
    if (!options.ca) return options;
    const ca = options.ca as string[];
    const key = createHash('sha256').update(ca.join('\n')).update(String(options.minVersion)).digest('hex');
    let context = this.#contexts.get(key);
    if (!context) {
      if (this.#contexts.size > 8) this.#contexts.clear();
      context = createSecureContext({ ca, minVersion: options.minVersion });
      this.#contexts.set(key, context);
    }
    const { ca: _ca, ...rest } = options;
    return { ...rest, secureContext: context };
  }

  #release(session: Session): void {
    session.lastUsedAt = Date.now();
    if (this.#closed || session.closed || session.connection.destroyed || session.messages >= this.#options.maxMessagesPerSession) {
      this.#discard(session, true);
      return;
    }
    const idle = this.#idle.get(session.key) ?? [];
    if (idle.length >= this.#options.maxIdlePerTarget) {
      this.#discard(session, true);
      return;
    }
    idle.push(session);
    this.#idle.set(session.key, idle);
    session.idleTimer = setTimeout(() => this.#discard(session, true), this.#options.idleMs);
    session.idleTimer.unref();
  }

  async #reset(session: Session): Promise<void> {
    try {
      await step<boolean | undefined>(session.connection, (done) => session.connection.reset((error, ok) => done(error, ok)));
      this.#release(session);
    } catch {
      this.#discard(session);
    }
  }

  #forget(session: Session): void {
    if (session.idleTimer) clearTimeout(session.idleTimer);
    this.#sessions.delete(session);
    const idle = this.#idle.get(session.key);
    if (idle) {
      const index = idle.indexOf(session);
      if (index >= 0) idle.splice(index, 1);
    }
  }

  #discard(session: Session, polite = false): void {
    this.#forget(session);
    if (session.closed) return;
    session.closed = true;
    try {
      if (polite && !session.connection.destroyed) session.connection.quit();
      else session.connection.close();
    } catch {
      // already gone
    }
  }

  /** Closes idle sessions (settings changed, or the token is no longer usable). */
  closeIdle(): void {
    for (const sessions of this.#idle.values()) for (const session of [...sessions]) this.#discard(session, true);
    this.#idle.clear();
  }

  /** Closes every session, also those in use (their sends fail with a connection error). */
  async close(): Promise<void> {
    this.#closed = true;
    for (const session of [...this.#sessions]) this.#discard(session);
    this.#idle.clear();
  }

  get openSessions(): number {
    return this.#sessions.size;
  }
}
