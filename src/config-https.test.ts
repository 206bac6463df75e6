import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadConfig } from './config.js';
import { createCertificateAuthority, createSelfSignedCertificate } from './tls/certificates.js';

let dir: string;
const file = (name: string) => join(dir, name);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'postern-config-https-'));
  const ca = await createCertificateAuthority('Config Test CA', 30);
  const server = await ca.issue(['localhost', '127.0.0.1']);
  const other = await createSelfSignedCertificate(['other.example']);
  writeFileSync(file('server.pem'), server.cert + ca.cert);
  writeFileSync(file('server.key'), server.key, { mode: 0o600 });
  writeFileSync(file('other.key'), other.key, { mode: 0o600 });
  writeFileSync(file('locked.key'), server.key, { mode: 0o000 });
  writeFileSync(file('not-a-cert.pem'), 'hello\n');
  mkdirSync(file('a-directory'));
});

afterAll(() => {
  if (dir) {
    chmodSync(file('locked.key'), 0o600);
    rmSync(dir, { recursive: true, force: true });
  }
});

function configError(env: Record<string, string>): Error & { code?: string } {
  try {
    loadConfig(env);
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig: HTTPS for the Remote UI', () => {
  test('unset or empty POSTERN_HTTPS_PORT: HTTPS is off (the default)', () => {
    expect(loadConfig({}).https).toBeUndefined();
    expect(loadConfig({ POSTERN_HTTPS_PORT: '', POSTERN_HTTPS_CERT: ' ', POSTERN_HTTPS_KEY: '' }).https).toBeUndefined();
  });

  test('a port alone: HTTPS with Postern\'s own certificate; 0 picks a free port', () => {
    expect(loadConfig({ POSTERN_HTTPS_PORT: '8443' }).https).toEqual({ port: 8443, certificate: undefined });
    expect(loadConfig({ POSTERN_HTTPS_PORT: '0', POSTERN_HTTP_PORT: '0' }).https).toEqual({ port: 0, certificate: undefined });
  });

  test('certificate and key files are read and checked at start-up', () => {
    const https = loadConfig({ POSTERN_HTTPS_PORT: '8443', POSTERN_HTTPS_CERT: file('server.pem'), POSTERN_HTTPS_KEY: file('server.key') }).https;
    expect(https?.certificate?.certFile).toBe(file('server.pem'));
    expect(https?.certificate?.keyFile).toBe(file('server.key'));
    expect(https?.certificate?.cert).toContain('-----BEGIN CERTIFICATE-----');
    expect(https?.certificate?.key).toContain('-----BEGIN PRIVATE KEY-----');
  });

  const withPort = { POSTERN_HTTPS_PORT: '8443' };
  test.each([
    ['a bad port', { POSTERN_HTTPS_PORT: 'https' }, 'POSTERN_HTTPS_PORT must be a port number from 0 to 65535, got "https"'],
    ['a port out of range', { POSTERN_HTTPS_PORT: '65536' }, 'POSTERN_HTTPS_PORT must be a port number'],
    ['the HTTP port again', { POSTERN_HTTPS_PORT: '8080' }, 'POSTERN_HTTPS_PORT must differ from POSTERN_HTTP_PORT'],
    ['only the certificate', { ...withPort, POSTERN_HTTPS_CERT: 'server.pem' }, 'POSTERN_HTTPS_KEY must be set when POSTERN_HTTPS_CERT is'],
    ['only the key', { ...withPort, POSTERN_HTTPS_KEY: 'server.key' }, 'POSTERN_HTTPS_CERT must be set when POSTERN_HTTPS_KEY is'],
    ['files without a port', { POSTERN_HTTPS_CERT: 'server.pem', POSTERN_HTTPS_KEY: 'server.key' }, 'POSTERN_HTTPS_PORT must be set to use POSTERN_HTTPS_CERT'],
    ['a missing certificate file', { ...withPort, POSTERN_HTTPS_CERT: 'missing.pem', POSTERN_HTTPS_KEY: 'server.key' }, 'POSTERN_HTTPS_CERT cannot be read: '],
    ['a directory as the key', { ...withPort, POSTERN_HTTPS_CERT: 'server.pem', POSTERN_HTTPS_KEY: 'a-directory' }, 'POSTERN_HTTPS_KEY cannot be read: '],
    ['a file that holds no certificate', { ...withPort, POSTERN_HTTPS_CERT: 'not-a-cert.pem', POSTERN_HTTPS_KEY: 'server.key' }, 'POSTERN_HTTPS_CERT must be a PEM certificate file'],
    ['a certificate as the key', { ...withPort, POSTERN_HTTPS_CERT: 'server.pem', POSTERN_HTTPS_KEY: 'server.pem' }, 'POSTERN_HTTPS_KEY must be a PEM private key'],
    ['the key of another certificate', { ...withPort, POSTERN_HTTPS_CERT: 'server.pem', POSTERN_HTTPS_KEY: 'other.key' }, 'POSTERN_HTTPS_KEY ('],
  ])('%s stops start-up with one line naming the setting', (_what, env, message) => {
    const resolved = Object.fromEntries(
      Object.entries(env).map(([key, value]) => [key, key.endsWith('_CERT') || key.endsWith('_KEY') ? file(value) : value]),
    );
    const error = configError(resolved);
    expect(error.message).toContain(`Invalid configuration: ${message}`);
    expect(error.message).not.toContain('\n');
    expect(error.message).not.toContain('PRIVATE KEY');
    expect(error.code).toBe('POSTERN_CONFIG_INVALID');
  });

  test('the mismatch names both files', () => {
    const error = configError({ ...withPort, POSTERN_HTTPS_CERT: file('server.pem'), POSTERN_HTTPS_KEY: file('other.key') });
    expect(error.message).toContain(`POSTERN_HTTPS_KEY (${file('other.key')}) is not the private key of the certificate in POSTERN_HTTPS_CERT (${file('server.pem')})`);
  });

  // root reads any file: as root, the check runs in a child process that drops to nobody (65534) after loading
  // the configuration module, so the file is read as a user it is not readable for.
  test('a key file this user may not read', () => {
    const env = { ...withPort, POSTERN_HTTPS_CERT: file('server.pem'), POSTERN_HTTPS_KEY: file('locked.key') };
    let message: string;
    if (process.getuid?.() === 0) {
      chmodSync(dir, 0o711);
      chmodSync(file('server.pem'), 0o644);
      const script = [
        `const { loadConfig } = await import(${JSON.stringify(new URL('./config.ts', import.meta.url).href)});`,
        'process.setgid(65534); process.setuid(65534);',
        `try { loadConfig(${JSON.stringify(env)}); console.log('accepted'); } catch (error) { console.log(error.message); }`,
      ].join('\n');
      const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
      message = child.stdout.trim();
    } else {
      message = configError(env).message;
    }
    expect(message).toBe(`Invalid configuration: POSTERN_HTTPS_KEY cannot be read: ${file('locked.key')}: permission denied for this user`);
  });
});
