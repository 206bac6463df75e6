/**
 * The run contract as a process: configuration from the environment, port 0 with the bound port in the log,
 * the first administrator's password printed once, one clear line for invalid configuration.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { runCli } from './support/cli.js';

const MAIN = join(import.meta.dirname, '..', 'src', 'main.ts');

function run(env: Record<string, string>, until?: (stdout: string) => boolean): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`process did not finish: ${stdout}\n${stderr}`));
    }, 30_000);
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      if (until?.(stdout)) child.kill('SIGTERM');
    });
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const listening = (stdout: string) => /"msg":"Remote UI listening"/.test(stdout);

describe('run contract', () => {
  test('port 0: the bound port is logged; a random admin password is printed once, then never again', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'postern-run-'));
    const env = { POSTERN_DATA_DIR: dataDir, POSTERN_HTTP_PORT: '0', POSTERN_SMTP_PORT: '0', POSTERN_HOST: '127.0.0.1' };
    const first = await run(env, listening);
    expect(first.code).toBe(0);
    const line = first.stdout.split('\n').find((l) => l.includes('Remote UI listening'))!;
    const port = JSON.parse(line).port;
    expect(port).toBeGreaterThan(0);
    const password = /Password:\s+(\S+)/.exec(first.stdout)?.[1];
    expect(password).toMatch(/^[A-Za-z0-9]{20}$/);

    const second = await run(env, listening);
    expect(second.code).toBe(0);
    expect(second.stdout).not.toContain('Password:');
    expect(second.stdout).not.toContain(password!);
  });

  test('POSTERN_ADMIN_PASSWORD is used and not printed', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'postern-run-'));
    const result = await run(
      { POSTERN_DATA_DIR: dataDir, POSTERN_HTTP_PORT: '0', POSTERN_SMTP_PORT: '0', POSTERN_HOST: '127.0.0.1', POSTERN_ADMIN_PASSWORD: 'given-password-123' },
      listening,
    );
    expect(result.code).toBe(0);
    expect(result.stdout).not.toContain('given-password-123');
    expect(result.stdout).not.toContain('First administrator created');
  });

  test.each([
    [{ POSTERN_HTTP_PORT: 'eighty' }, /^postern: Invalid configuration: POSTERN_HTTP_PORT must be a port number/],
    [{ POSTERN_DATABASE_URL: 'sqlite://x' }, /^postern: Invalid configuration: POSTERN_DATABASE_URL/],
    [{ POSTERN_HTTPS_PORT: '0', POSTERN_HTTPS_CERT: '/etc/postern/remote-ui.pem' }, /^postern: Invalid configuration: POSTERN_HTTPS_KEY must be set/],
    [
      { POSTERN_QUEUE_RETRY_BASE_SECONDS: '600', POSTERN_QUEUE_RETRY_MAX_SECONDS: '300' },
      /^postern: Invalid configuration: POSTERN_QUEUE_RETRY_MAX_SECONDS must be at least POSTERN_QUEUE_RETRY_BASE_SECONDS \(600\), got 300$/,
    ],
    [{ POSTERN_QUEUE_LIFETIME_SECONDS: '3000000' }, /^postern: Invalid configuration: POSTERN_QUEUE_LIFETIME_SECONDS must be at most 2592000 seconds \(30 days\)/],
  ])('invalid configuration %o stops start-up with one line', async (env, message) => {
    const result = await run({ POSTERN_DATA_DIR: mkdtempSync(join(tmpdir(), 'postern-run-')), ...env });
    expect(result.code).toBe(78);
    expect(result.stderr.trim()).toMatch(message);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });

  test('POSTERN_HTTPS_PORT: the bound HTTPS port is logged and the first-start banner names the https address', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'postern-run-'));
    const env = { POSTERN_DATA_DIR: dataDir, POSTERN_HTTP_PORT: '0', POSTERN_SMTP_PORT: '0', POSTERN_HTTPS_PORT: '0', POSTERN_HOST: '127.0.0.1' };
    const first = await run(env, listening);
    expect(first.code).toBe(0);
    const line = first.stdout.split('\n').find((l) => l.includes('"msg":"Remote UI listening over HTTPS"'))!;
    const port = JSON.parse(line).port;
    expect(port).toBeGreaterThan(0);
    expect(first.stdout).toMatch(/Password:\s+[A-Za-z0-9]{20}\n/);
    expect(first.stdout).toContain(`Log in at: https://127.0.0.1:${port}/`);
    // postern status reads the same environment and is not changed by it.
    const status = await runCli(['status'], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('Token Status: Not Registered');
    expect(status.stdout).not.toMatch(/https/i);
  });

  test('a key that does not match the database stops start-up with one line', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'postern-run-'));
    const env = { POSTERN_DATA_DIR: dataDir, POSTERN_HTTP_PORT: '0', POSTERN_SMTP_PORT: '0', POSTERN_HOST: '127.0.0.1' };
    expect((await run(env, listening)).code).toBe(0);
    const result = await run({ ...env, POSTERN_SECRET_KEY: Buffer.alloc(32, 5).toString('base64') });
    expect(result.code).toBe(78);
    expect(result.stderr.trim()).toMatch(/^postern: cannot start: POSTERN_SECRET_KEY does not match[^\n]*$/);
  });
});

/** The process ended by itself with one line on stderr (no stack trace) and a fatal log line with the reason. */
function failedWithOneLine(result: { code: number | null; stdout: string; stderr: string }, pattern: RegExp): Record<string, any> {
  expect(result.code).not.toBe(0);
  expect(result.code).not.toBeNull();
  const stderr = result.stderr.split('\n').filter((l) => l && !l.includes('WARNING'));
  expect(stderr).toHaveLength(1);
  expect(stderr[0]).toMatch(pattern);
  const fatal = result.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((l) => l.level === 60);
  expect(fatal).toBeDefined();
  expect(fatal.reason).toBe(stderr[0]!.replace(/^postern: cannot start: /, ''));
  return fatal;
}

describe('start-up failures: one line that names the cause', () => {
  const base = { POSTERN_HTTP_PORT: '0', POSTERN_SMTP_PORT: '0', POSTERN_HOST: '127.0.0.1' };

  test('regression: a data directory that is a file', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'postern-run-')), 'data');
    writeFileSync(file, 'not a directory');
    const fatal = failedWithOneLine(await run({ ...base, POSTERN_DATA_DIR: file }), /^postern: cannot start: POSTERN_DATA_DIR \S+ cannot be used: it is a file, not a directory\.$/);
    expect(fatal.err.code).toBe('POSTERN_STORE_DATA_DIR_UNUSABLE');
  });

  test('regression: a data directory under /proc fails at once instead of hanging', async () => {
    const result = await run({ ...base, POSTERN_DATA_DIR: '/proc/postern-data' });
    failedWithOneLine(result, /^postern: cannot start: POSTERN_DATA_DIR \/proc\/postern-data cannot be used: /);
  });

  test('regression: a port in use names the port and its setting', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address() as AddressInfo;
    try {
      const dataDir = mkdtempSync(join(tmpdir(), 'postern-run-'));
      const fatal = failedWithOneLine(
        await run({ ...base, POSTERN_DATA_DIR: dataDir, POSTERN_SMTP_PORT: String(port) }),
        new RegExp(`^postern: cannot start: port ${port} \\(POSTERN_SMTP_PORT\\) is already in use by another program on 127\\.0\\.0\\.1:${port}`),
      );
      expect(fatal.err).toMatchObject({ code: 'EADDRINUSE', port });
    } finally {
      holder.close();
    }
  });

  test('regression: an address that is not on this host', async () => {
    // 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this host; binding it sends nothing.
    const dataDir = mkdtempSync(join(tmpdir(), 'postern-run-'));
    const fatal = failedWithOneLine(
      await run({ ...base, POSTERN_DATA_DIR: dataDir, POSTERN_HOST: '192.0.2.1' }),
      /^postern: cannot start: 192\.0\.2\.1 \(POSTERN_HOST\) is not an address of this host/,
    );
    expect(fatal.err.code).toBe('EADDRNOTAVAIL');
  });

  test('regression: a PostgreSQL server that refuses the connection', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const dataDir = mkdtempSync(join(tmpdir(), 'postern-run-'));
    const fatal = failedWithOneLine(
      await run({ ...base, POSTERN_DATA_DIR: dataDir, POSTERN_DATABASE_URL: `postgres://postern:secret-pw@127.0.0.1:${port}/postern` }),
      new RegExp(`^postern: cannot start: PostgreSQL at 127\\.0\\.0\\.1:${port}/postern \\(POSTERN_DATABASE_URL\\) refused the connection`),
    );
    expect(fatal.err.code).toBe('POSTERN_STORE_UNAVAILABLE');
    expect(JSON.stringify(fatal)).not.toContain('secret-pw');
  });
});

describe('postern command line', () => {
  test('status and reset-password work on the data directory', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'postern-cli-'));
    const env = { POSTERN_DATA_DIR: dataDir, POSTERN_HTTP_PORT: '0', POSTERN_SMTP_PORT: '0', POSTERN_HOST: '127.0.0.1', POSTERN_ADMIN_PASSWORD: 'first-password' };
    expect((await run(env, listening)).code).toBe(0);
    const status = await runCli(['status'], { POSTERN_DATA_DIR: dataDir });
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('OAuth 2.0 (Microsoft): not in use');
    expect(status.stdout).toContain('Token Status: Not Registered');
    const reset = await runCli(['reset-password', 'admin'], { POSTERN_DATA_DIR: dataDir });
    expect(reset.code).toBe(0);
    expect(reset.stdout).toMatch(/^New password for admin: [A-Za-z0-9]{20}\n$/);
    const unknown = await runCli(['reset-password', 'nobody'], { POSTERN_DATA_DIR: dataDir });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('there is no user named nobody');
  });
});
