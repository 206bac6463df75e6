/**
 * The production logger (createLogger) with real failures: the line names the reason and the code, whether a
 * call site hands over the error itself or a describeError summary of it, and secrets stay redacted.
 */
import { connect, createServer, type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { createLogger, describeError, redactSecrets } from './log.js';

function capture() {
  const lines: Record<string, any>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: createLogger('debug', sink), lines };
}

/** A real ECONNREFUSED: a port that was just listened on and closed again. */
async function refusedConnection(): Promise<Error> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return new Promise((resolve) => connect(port, '127.0.0.1').once('error', resolve));
}

/** A real EADDRINUSE: a second listener on a port in use. */
async function portInUse(): Promise<Error> {
  const first = createServer();
  await new Promise<void>((resolve) => first.listen(0, '127.0.0.1', resolve));
  const { port } = first.address() as AddressInfo;
  try {
    return await new Promise((resolve) => createServer().once('error', resolve).listen(port, '127.0.0.1'));
  } finally {
    first.close();
  }
}

describe('error lines say why', () => {
  test('regression: an error described twice reads as its reason, not "[object Object]"', async () => {
    const { log, lines } = capture();
    const error = await refusedConnection();
    log.warn({ err: describeError(error) }, 'upstream connection failed');
    log.warn({ err: error }, 'upstream connection failed');
    for (const line of lines) {
      expect(line.err.message).toMatch(/ECONNREFUSED 127\.0\.0\.1:\d+/);
      expect(line.err.code).toBe('ECONNREFUSED');
      expect(line.err.port).toBeGreaterThan(0);
      expect(JSON.stringify(line)).not.toContain('[object Object]');
    }
  });

  test('regression: a code field is printed, not "[redacted]"', async () => {
    const { log, lines } = capture();
    const error = (await portInUse()) as Error & { code: string; port: number };
    log.fatal({ err: error, code: error.code }, 'start-up failed');
    expect(lines[0]!.code).toBe('EADDRINUSE');
    expect(lines[0]!.err).toMatchObject({ code: 'EADDRINUSE', syscall: 'listen', address: '127.0.0.1', port: error.port });
  });

  test('secrets stay redacted, also inside a cause', () => {
    const { log, lines } = capture();
    log.info({ refresh_token: 'rt-secret', user_code: 'ABCD-EFGH', nested: { client_secret: 's3cret', password: 'pw' } }, 'secrets');
    const cause = new Error('token response eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl rejected');
    log.error({ err: new Error('refresh failed', { cause }) }, 'refresh failed');
    const text = JSON.stringify(lines);
    for (const secret of ['rt-secret', 'ABCD-EFGH', 's3cret', '"pw"', 'eyJhbGciOiJSUzI1NiJ9']) expect(text).not.toContain(secret);
    expect(lines[1]!.err.cause.message).toBe('token response [redacted] rejected');
  });

  test('secrets two levels down, in arrays, in headers and in a child logger\'s bindings are redacted; the caller\'s object is left alone', () => {
    const { log, lines } = capture();
    const fields = { req: { headers: { cookie: 'sid=abc', authorization: 'Bearer xyz', host: 'gw' } }, accounts: [{ accessToken: 'at-1', name: 'a' }], res: { headers: { 'set-cookie': ['sid=def'] } } };
    log.info(fields, 'request');
    log.child({ token: 'child-token', device: 'scanner' }).info('from a child');
    const text = JSON.stringify(lines);
    for (const secret of ['sid=abc', 'Bearer xyz', 'at-1', 'sid=def', 'child-token']) expect(text).not.toContain(secret);
    expect(lines[0]).toMatchObject({ req: { headers: { cookie: '[redacted]', host: 'gw' } }, accounts: [{ accessToken: '[redacted]', name: 'a' }] });
    expect(lines[1]).toMatchObject({ device: 'scanner', token: '[redacted]' });
    expect(fields.req.headers.cookie).toBe('sid=abc');
    expect(fields.accounts[0]!.accessToken).toBe('at-1');
  });

  test('property: a secret under a secret key at most two levels down never reaches the line; a line without secrets is passed through', () => {
    const key = fc.constantFrom('access_token', 'refreshToken', 'client_secret', 'password', 'cookie', 'token');
    const plainKey = fc.constantFrom('queueId', 'size', 'from', 'to', 'reply', 'n');
    const leaf = fc.oneof(fc.string(), fc.integer(), fc.constant(null));
    fc.assert(
      fc.property(fc.array(plainKey, { maxLength: 2 }), key, fc.dictionary(plainKey, leaf), (path, secretKey, siblings) => {
        const secret = 'S3CRET-' + path.join('.');
        let fields: Record<string, unknown> = { ...siblings, [secretKey]: secret };
        for (const part of [...path].reverse()) fields = { [part]: fields, other: 1 };
        if (path.length === 0) fields = { list: [fields] };
        expect(JSON.stringify(redactSecrets(fields))).not.toContain('S3CRET');
        expect(redactSecrets(siblings)).toBe(siblings);
      }),
    );
  });
});
