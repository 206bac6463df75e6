/**
 * A real MTA that checks OAuth bearer tokens, for tests: Postfix 3.7 (submission with STARTTLS, SASL through
 * Dovecot) + Dovecot 2.3 (`passdb oauth2`, RFC 7662 introspection at the authorization server under test),
 * relaying every accepted message to a recording Node SMTP sink. The configuration is written at test time (see below).
 *
 * Purpose: prove Postern's SMTP client against a peer it did not write: Postfix's reply texts and pipelining,
 *   Dovecot's XOAUTH2/OAUTHBEARER implementation (error challenge, then 535), `reject_sender_login_mismatch`.
 * Inputs: an introspection endpoint (URL + client credentials + CA), a TLS key/certificate for STARTTLS, optional
 *   scope to require and extra sender → login ownerships (Send-As).
 * Outputs: the submission port; the sink's messages (with the SASL user Postfix authenticated, read from its
 *   Received header); the Postfix and Dovecot logs.
 * Failure modes: startup errors throw with the tail of both logs (Postfix writes errors to a tty only, so the
 *   log file is the only place to read them). If introspection is unreachable Postfix answers `454 4.7.0`.
 * Known limits: needs root and the Debian packages postfix and dovecot-core (`isPostfixAvailable()`); a fresh
 *   temp directory per instance holds everything (config, queue, data, logs, pids, base_dir), so instances can
 *   run side by side. Dovecot compares the token's `email` with the SASL user after lower-casing the user
 *   (auth_username_format %Lu), Postfix compares sender and login case-insensitively.
 *
 * Test infrastructure only: never import this from `src/`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { eventually } from './events.js';
import type { TestPki } from './test-ca.js';
import { startSmtpSink, withDefaultCa, type IntrospectionConfig, type RecordedMessage } from './upstream-smtp.js';

const POSTFIX = '/usr/sbin/postfix';
const DOVECOT = '/usr/sbin/dovecot';

/** True when the Debian packages are installed (tests should fail loudly, not skip, when they are not). */
export function isPostfixAvailable(): boolean {
  return existsSync(POSTFIX) && existsSync(DOVECOT);
}

export interface PostfixDovecotOptions {
  /** Dovecot introspects here (`introspection_mode = post`, Basic auth from the URL's userinfo). */
  introspection: IntrospectionConfig;
  /** Certificate and key Postfix presents after STARTTLS, e.g. `createTestPki().server`. Or give `pki`. */
  tls?: { key: string; cert: string };
  /** A test PKI: its server certificate when `tls` is not given, its CA when the introspection names none. */
  pki?: TestPki;
  /** A scope the token must carry (Dovecot's oauth2 `scope`); no scope check when omitted. */
  requiredScope?: string;
  /** Introspection member that must equal the SASL user. Default `email`. */
  usernameAttribute?: string;
  /**
   * Extra sender addresses and the logins allowed to use them (Send-As), e.g.
   * `{ 'shared@example.test': ['alice@example.test'] }`. Every address is always owned by the same login.
   */
  senderLogins?: Record<string, string[]>;
  /** SASL mechanisms Dovecot offers (through Postfix's EHLO). Default both: `['xoauth2', 'oauthbearer']`. */
  mechanisms?: Array<'xoauth2' | 'oauthbearer'>;
  /** Dovecot `auth_debug = yes` (every introspection step in the log). */
  debug?: boolean;
  /** Keep the temp directory after close() (its path is in `dir`). */
  keepDir?: boolean;
}

export interface PostfixWithDovecot {
  readonly host: string;
  /** The submission port (STARTTLS required before AUTH). */
  readonly port: number;
  /** Dovecot's auth listener that Postfix uses (also usable with Dovecot's auth protocol directly). */
  readonly authPort: number;
  readonly dir: string;
  readonly sink: {
    readonly messages: RecordedMessage[];
    waitForMessages(n: number, timeoutMs?: number): Promise<RecordedMessage[]>;
    /** The first received message (already here or still to come) that `predicate` accepts. */
    waitForMessage(predicate: (message: RecordedMessage) => boolean, what?: string, timeoutMs?: number): Promise<RecordedMessage>;
  };
  /** Startup durations in milliseconds, for the record. */
  readonly timings: { dovecotMs: number; postfixMs: number; totalMs: number };
  /** Postfix's maillog followed by Dovecot's log (read them before close(), which removes the directory). */
  logs(): string;
  close(): Promise<void>;
}

/** A free loopback port: bind port 0, read it, release it (small race, acceptable for tests). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Whether `host:port` accepts a TCP connection now. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Resolves once `host:port` accepts a TCP connection; rejects if `exited` settles first or on timeout. The
 * daemons say nothing when they listen, so this polls (the shared helper in events.ts).
 */
async function waitForPort(host: string, port: number, exited: Promise<unknown>, timeoutMs: number, what: string): Promise<void> {
  let stopped = false;
  const exit = exited.then(() => {
    stopped = true;
    throw new Error(`${what} exited during startup`);
  });
  const listening = eventually(() => !stopped && accepts(host, port), timeoutMs, `${what} to listen on ${host}:${port}`);
  await Promise.race([listening, exit]);
}

function tail(file: string, lines = 40): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines - 1).join('\n');
  } catch {
    return `(no ${file})`;
  }
}

/**
 * Signals the daemons if a test process ends without close() (a failed beforeAll, a crash): MTAs must never
 * outlive the test run. Only synchronous work is possible in an 'exit' handler, so this signals and leaves.
 */
const liveDaemons = new Set<() => void>();
let exitHookInstalled = false;
function onProcessExit(kill: () => void): () => void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const signal of liveDaemons) {
        try {
          signal();
        } catch {
          // already gone
        }
      }
    });
  }
  liveDaemons.add(kill);
  return () => liveDaemons.delete(kill);
}

function waitForExit(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/**
 * Sends SIGTERM to `pid` (the daemon's master, which stops its own children) and waits for our child process to
 * exit; SIGKILL after `graceMs`. Dovecot's log process lingers ~1 s after SIGTERM, so this takes ~1.1 s.
 */
async function stop(child: ChildProcess, pid: number | undefined, graceMs = 5_000): Promise<void> {
  const exited = waitForExit(child);
  try {
    if (pid) process.kill(pid, 'SIGTERM');
  } catch {
    // already gone
  }
  const timer = setTimeout(() => {
    try {
      if (pid) process.kill(pid, 'SIGKILL');
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    return Number.isFinite(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The introspection URL with the client credentials as userinfo, which Dovecot turns into HTTP Basic auth. */
function introspectionUrlWithCredentials(config: IntrospectionConfig): string {
  const url = new URL(config.url);
  // Dovecot percent-decodes userinfo; it sends `id:secret` (not form-urlencoded), fine for URL-safe secrets.
  url.username = encodeURIComponent(config.clientId);
  url.password = encodeURIComponent(config.clientSecret);
  return url.toString();
}

function dovecotConfig(dir: string, authPort: number, options: PostfixDovecotOptions): string {
  return `# Generated by test/support/postfix-dovecot.ts: an auth-only Dovecot for Postfix SASL.
base_dir = ${dir}/dovecot/run
state_dir = ${dir}/dovecot/state
log_path = ${dir}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
auth_mechanisms = ${(options.mechanisms ?? ['xoauth2', 'oauthbearer']).join(' ')}
auth_verbose = yes
auth_debug = ${options.debug ? 'yes' : 'no'}

# Dovecot delays every failed login (auth_failure_delay, flushed by a 500 ms timer) and then penalises the
# client IP through anvil (2, 4, 8 ... 15 s for every later login from that IP, good or bad). Both are skipped
# for a request carrying the extra field "nodelay". This passdb authenticates nobody (noauthenticate): it only
# adds that field, and fields of a passdb that returned "next" survive the failure of the oauth2 passdb.
passdb {
  driver = static
  args = nopassword=y noauthenticate=y nodelay=y
}
passdb {
  driver = oauth2
  mechanisms = ${(options.mechanisms ?? ['xoauth2', 'oauthbearer']).join(' ')}
  args = ${dir}/dovecot-oauth2.conf.ext
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent allow_all_users=yes
}
service auth {
  inet_listener postfix {
    address = 127.0.0.1
    port = ${authPort}
  }
}
`;
}

function dovecotOAuth2Config(dir: string, options: PostfixDovecotOptions): string {
  return `introspection_mode = post
introspection_url = ${introspectionUrlWithCredentials(options.introspection)}
force_introspection = yes
username_attribute = ${options.usernameAttribute ?? 'email'}
active_attribute = active
active_value = true
${options.requiredScope ? `scope = ${options.requiredScope}\n` : ''}tls_ca_cert_file = ${dir}/introspection-ca.pem
`;
}

function postfixMainCf(dir: string, ports: { submission: number; auth: number; sink: number }, hasSenderLogins: boolean): string {
  const senderMaps = [hasSenderLogins ? `texthash:${dir}/etc/sender_logins` : '', `regexp:${dir}/etc/sender_login_self`]
    .filter(Boolean)
    .join(', ');
  return `# Generated by test/support/postfix-dovecot.ts
compatibility_level = 3.6
queue_directory = ${dir}/queue
data_directory = ${dir}/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-postern-test
maillog_file = ${dir}/maillog
maillog_file_prefixes = ${dir}
myhostname = mta.postfix.test
mydomain = postfix.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8

# Deliver nothing locally: every accepted message goes to the sink.
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
relay_domains =
relayhost = [127.0.0.1]:${ports.sink}
smtp_tls_security_level = none
biff = no
smtpd_peername_lookup = no

# Submission: STARTTLS (the listener makes it mandatory), SASL through Dovecot, AUTH only under TLS.
smtpd_tls_cert_file = ${dir}/etc/cert.pem
smtpd_tls_key_file = ${dir}/etc/key.pem
smtpd_tls_security_level = may
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:${ports.auth}
smtpd_tls_auth_only = yes
smtpd_sasl_authenticated_header = yes

# A login may only send as itself (or as addresses given to it): 553 at MAIL FROM, not at RCPT TO.
smtpd_sender_login_maps = ${senderMaps}
smtpd_delay_reject = no
smtpd_sender_restrictions = reject_sender_login_mismatch
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions =
`;
}

function postfixMasterCf(submissionPort: number): string {
  // The stock Debian master.cf without the port 25 listener and the pipe transports; every chroot column n.
  return `# Generated by test/support/postfix-dovecot.ts
127.0.0.1:${submissionPort} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
`;
}

function senderLoginsTable(senderLogins: Record<string, string[]>): string {
  return Object.entries(senderLogins)
    .map(([sender, logins]) => `${sender} ${[sender, ...logins].join(',')}`)
    .join('\n') + '\n';
}

function startDaemon(command: string, args: string[], output: string[]): ChildProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const collect = (chunk: Buffer) => output.push(chunk.toString());
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  return child;
}

/**
 * Starts Dovecot (auth only) and Postfix (submission) in a fresh temp directory, plus the sink they relay to.
 * Both daemons run as children of this process in the foreground, so their exit is an event, not a poll.
 */
export async function startPostfixWithDovecot(options: PostfixDovecotOptions): Promise<PostfixWithDovecot> {
  if (!isPostfixAvailable()) {
    throw new Error(`Postfix/Dovecot not installed (${POSTFIX}, ${DOVECOT}): apt-get install postfix dovecot-core`);
  }
  if (userInfo().uid !== 0) throw new Error('startPostfixWithDovecot needs root (Postfix and Dovecot drop privileges themselves)');
  const tls = options.tls ?? options.pki?.server;
  if (!tls) throw new Error('startPostfixWithDovecot needs tls (key and cert) or pki');
  const introspection = withDefaultCa(options.introspection, options.pki);
  const started = Date.now();
  const host = '127.0.0.1';
  const dir = mkdtempSync(join(tmpdir(), 'postern-postfix-'));
  // Dovecot's auth process runs as user "dovecot" and must reach its config and the CA file.
  chmodSync(dir, 0o755);
  const output: string[] = [];
  const cleanups: Array<() => Promise<void> | void> = [];
  const logs = () =>
    `--- postfix maillog ---\n${tail(join(dir, 'maillog'), 200)}\n--- dovecot.log ---\n${tail(join(dir, 'dovecot.log'), 200)}` +
    (output.length ? `\n--- daemon output ---\n${output.join('')}` : '');

  let closing: Promise<void> | undefined;
  const closeAll = (): Promise<void> =>
    (closing ??= (async () => {
      for (const cleanup of cleanups.reverse()) await cleanup();
      if (!options.keepDir) rmSync(dir, { recursive: true, force: true });
    })());

  try {
    const sink = await startSmtpSink({ host });
    cleanups.push(() => sink.close());
    const submission = await freePort(host);
    let auth = await freePort(host);
    while (auth === submission) auth = await freePort(host);

    // --- Dovecot --------------------------------------------------------------------------------------------
    const ca = introspection.ca ?? (introspection.caFile ? readFileSync(introspection.caFile, 'utf8') : '');
    if (!ca) throw new Error('introspection.ca or introspection.caFile is required (Dovecot verifies the server)');
    writeFileSync(join(dir, 'introspection-ca.pem'), ca, { mode: 0o644 });
    writeFileSync(join(dir, 'dovecot.conf'), dovecotConfig(dir, auth, options), { mode: 0o644 });
    // Holds the introspection client secret: readable by root and the dovecot group only.
    const oauth2File = join(dir, 'dovecot-oauth2.conf.ext');
    writeFileSync(oauth2File, dovecotOAuth2Config(dir, { ...options, introspection }), { mode: 0o640 });
    chownSync(oauth2File, 0, dovecotGid());

    const dovecotStarted = Date.now();
    const dovecot = startDaemon(DOVECOT, ['-F', '-c', join(dir, 'dovecot.conf')], output);
    const forgetDovecot = onProcessExit(() => dovecot.kill('SIGTERM'));
    cleanups.push(async () => {
      await stop(dovecot, dovecot.pid);
      forgetDovecot();
    });
    await waitForPort(host, auth, waitForExit(dovecot), 10_000, 'dovecot');
    const dovecotMs = Date.now() - dovecotStarted;

    // --- Postfix --------------------------------------------------------------------------------------------
    mkdirSync(join(dir, 'etc'));
    mkdirSync(join(dir, 'queue'));
    mkdirSync(join(dir, 'data'));
    // master refuses to create its lock file in a data_directory not owned by mail_owner.
    chownSync(join(dir, 'data'), postfixUid(), -1);
    writeFileSync(join(dir, 'etc', 'cert.pem'), tls.cert, { mode: 0o644 });
    // Read by smtpd while still root (before it drops privileges).
    writeFileSync(join(dir, 'etc', 'key.pem'), tls.key, { mode: 0o600 });
    writeFileSync(join(dir, 'etc', 'sender_login_self'), '/^(.+)$/ ${1}\n');
    const senderLogins = options.senderLogins ?? {};
    if (Object.keys(senderLogins).length) writeFileSync(join(dir, 'etc', 'sender_logins'), senderLoginsTable(senderLogins));
    writeFileSync(join(dir, 'etc', 'main.cf'), postfixMainCf(dir, { submission, auth, sink: sink.port }, Object.keys(senderLogins).length > 0));
    writeFileSync(join(dir, 'etc', 'master.cf'), postfixMasterCf(submission));
    // Postfix re-reads a main.cf modified less than a second or two ago every 300 ms until it is "stable"
    // (dict_load_file), which made start-up take ~2 s: backdate every file it loads.
    const anHourAgo = new Date(Date.now() - 3_600_000);
    for (const file of readdirSync(join(dir, 'etc'))) utimesSync(join(dir, 'etc', file), anHourAgo, anHourAgo);

    const postfixStarted = Date.now();
    // start-fg: postfix-script stays in the foreground as our child, with master as its child.
    const postfix = startDaemon(POSTFIX, ['-c', join(dir, 'etc'), 'start-fg'], output);
    const masterPid = () => readPid(join(dir, 'queue', 'pid', 'master.pid'));
    const forgetPostfix = onProcessExit(() => {
      const pid = masterPid();
      if (pid) process.kill(pid, 'SIGTERM');
    });
    cleanups.push(async () => {
      await stop(postfix, masterPid() ?? postfix.pid);
      forgetPostfix();
    });
    await waitForPort(host, submission, waitForExit(postfix), 15_000, 'postfix');
    const postfixMs = Date.now() - postfixStarted;

    return {
      host,
      port: submission,
      authPort: auth,
      dir,
      sink: {
        messages: sink.messages,
        waitForMessages: (n, timeoutMs) => sink.waitForMessages(n, timeoutMs),
        waitForMessage: (predicate, what, timeoutMs) => sink.waitForMessage(predicate, what, timeoutMs),
      },
      timings: { dovecotMs, postfixMs, totalMs: Date.now() - started },
      logs,
      close: closeAll,
    };
  } catch (err) {
    const message = `${err instanceof Error ? err.message : String(err)}\n${logs()}`;
    await closeAll().catch(() => undefined);
    throw new Error(message, { cause: err });
  }
}

function idOf(database: 'passwd' | 'group', name: string): number {
  const line = readFileSync(`/etc/${database}`, 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith(`${name}:`));
  const id = line ? Number.parseInt(line.split(':')[2] ?? '', 10) : Number.NaN;
  if (!Number.isInteger(id)) throw new Error(`no ${database} entry "${name}" (did the Debian package create it?)`);
  return id;
}

const postfixUid = () => idOf('passwd', 'postfix');
const dovecotGid = () => idOf('group', 'dovecot');
