/**
 * Proves the Postfix + Dovecot harness (postfix-dovecot.ts) is a real OAuth-checking MTA: real tokens from the
 * Microsoft stand-in authorization server, checked by Dovecot's oauth2 passdb through introspection, submitted by
 * nodemailer, Python smtplib and curl, relayed by Postfix to the recording sink.
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer, { type Transporter } from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OUTLOOK_SMTP_SCOPE, startMicrosoftStandin, type MicrosoftStandin } from './oauth-standins.js';
import { isPostfixAvailable, startPostfixWithDovecot, type PostfixWithDovecot } from './postfix-dovecot.js';
import { createTestPki, type TestPki } from './test-ca.js';
import { microsoftAccessToken, run } from './clients.js';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const SHARED = 'shared@example.test';
const OUTLOOK_IMAP_SCOPE = 'https://outlook.office.com/IMAP.AccessAsUser.All';

let pki: TestPki;
let microsoft: MicrosoftStandin;
let mta: PostfixWithDovecot;
const tokens = { alice: '', bob: '', aliceImapOnly: '' };

beforeAll(async () => {
  // Fail (not skip) when the packages are missing: these tests are the proof that Postern talks to a real MTA.
  if (!isPostfixAvailable()) throw new Error('postfix and dovecot-core must be installed for these tests');
  pki = await createTestPki();
  microsoft = await startMicrosoftStandin({ pki });
  [mta, tokens.alice, tokens.bob, tokens.aliceImapOnly] = await Promise.all([
    startPostfixWithDovecot({
      introspection: { ...microsoft.introspection, caFile: pki.caFile },
      tls: pki.server,
      requiredScope: OUTLOOK_SMTP_SCOPE,
      senderLogins: { [SHARED]: [ALICE] },
    }),
    microsoftAccessToken(microsoft, ALICE, OUTLOOK_SMTP_SCOPE),
    microsoftAccessToken(microsoft, BOB, OUTLOOK_SMTP_SCOPE),
    microsoftAccessToken(microsoft, ALICE, OUTLOOK_IMAP_SCOPE),
  ]);
  console.info(`postfix+dovecot started: ${JSON.stringify(mta.timings)}`);
});

afterAll(async () => {
  await mta?.close();
  await microsoft?.close();
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
});

describe('Postfix submission with Dovecot oauth2 SASL', () => {
  it('requires STARTTLS before offering AUTH XOAUTH2 OAUTHBEARER', async () => {
    const result = await pythonSmtp({ user: ALICE, token: tokens.alice });
    expect(result.featuresBeforeTls).not.toHaveProperty('auth');
    expect(result.features.auth?.trim()).toBe('XOAUTH2 OAUTHBEARER');
    expect(result.auth).toEqual([235, '2.7.0 Authentication successful']);
  });

  it('accepts a good token from nodemailer and relays the message to the sink', async () => {
    const before = mta.sink.messages.length;
    const info = await transport(ALICE, tokens.alice).sendMail({ from: ALICE, to: BOB, subject: 'through postfix', text: 'Hello Bob' });
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as \w+$/);
    const messages = await mta.sink.waitForMessages(before + 1, 10_000);
    expect(messages[before]).toMatchObject({ envelope: { mailFrom: ALICE, rcptTo: [BOB] }, authUser: ALICE });
    expect(messages[before]?.parsed?.subject).toBe('through postfix');
  });

  it('accepts XOAUTH2 and OAUTHBEARER from Python smtplib and OAUTHBEARER from curl', async () => {
    const before = mta.sink.messages.length;
    for (const mechanism of ['XOAUTH2', 'OAUTHBEARER'] as const) {
      const result = await pythonSmtp({ user: ALICE, token: tokens.alice, mechanism, send: true });
      expect(result.auth?.[0]).toBe(235);
      expect(result.sent).toBe(true);
    }
    const curl = await curlSubmit(ALICE, tokens.alice);
    expect(curl.stderr).toContain('AUTH OAUTHBEARER');
    expect(curl.code).toBe(0);
    const messages = await mta.sink.waitForMessages(before + 3, 10_000);
    expect(messages.slice(before).map((m) => m.authUser)).toEqual([ALICE, ALICE, ALICE]);
  });

  it('answers a bogus token with Dovecot\'s error challenge, then 535, without any delay or penalty', async () => {
    for (let i = 0; i < 3; i++) {
      const result = await pythonSmtp({ user: ALICE, token: `bogus-${i}` });
      expect(result.error?.[0]).toBe(535);
      expect(result.error?.[1]).toMatch(/^5\.7\.8 Error: authentication failed/);
      expect(JSON.parse(result.challenges[0] ?? '{}')).toMatchObject({ status: '401', schemes: 'bearer' });
    }
    // Without the nodelay field each failure is held up to 0.5 s and anvil penalises 127.0.0.1 (the next login
    // waits 2, 4, 8 s). Both are skipped for a request carrying "nodelay"; anvil's penalty table shows whether
    // it was: with the field it stays empty, without it 127.0.0.1 is listed with one penalty per failure.
    expect(penalisedAddresses()).toEqual([]);
    const good = await pythonSmtp({ user: ALICE, token: tokens.alice });
    expect(good.auth?.[0]).toBe(235);
  });

  it('refuses the token of another user and a token without SMTP.Send', async () => {
    const bobAsAlice = await pythonSmtp({ user: ALICE, token: tokens.bob });
    expect(bobAsAlice.error?.[0]).toBe(535);
    const imapOnly = await pythonSmtp({ user: ALICE, token: tokens.aliceImapOnly });
    expect(imapOnly.error?.[0]).toBe(535);
    expect(mta.logs()).toMatch(/Username 'alice@example\.test' did not match 'bob@example\.test'/);
  });

  it('refuses to let alice send as bob (553 at MAIL FROM), but as an address given to her', async () => {
    const error = await transport(ALICE, tokens.alice)
      .sendMail({ from: BOB, to: ALICE, subject: 'impersonation', text: 'x' })
      .catch((err: unknown) => err);
    expect(error).toMatchObject({
      responseCode: 553,
      response: `553 5.7.1 <${BOB}>: Sender address rejected: not owned by user ${ALICE}`,
    });
    const before = mta.sink.messages.length;
    await transport(ALICE, tokens.alice).sendMail({ from: SHARED, to: BOB, subject: 'send as shared', text: 'x' });
    const messages = await mta.sink.waitForMessages(before + 1, 10_000);
    expect(messages[before]).toMatchObject({ envelope: { mailFrom: SHARED }, authUser: ALICE });
  });

  it('signs in with introspection every time (the round trips are printed for the record)', async () => {
    const timings: number[] = [];
    for (let i = 0; i < 5; i++) {
      const result = await pythonSmtp({ user: ALICE, token: tokens.alice, timeAuth: true });
      expect(result.auth?.[0]).toBe(235);
      timings.push(result.authMs ?? Number.NaN);
    }
    console.info(`postfix AUTH XOAUTH2 round trips (ms): ${timings.map((t) => t.toFixed(1)).join(', ')}`);
    expect(timings.every((t) => Number.isFinite(t))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------------------------

/** The addresses Dovecot's anvil holds a login penalty for (`doveadm penalty`, header line left out). */
function penalisedAddresses(): string[] {
  const table = execFileSync('doveadm', ['-c', join(mta.dir, 'dovecot.conf'), 'penalty'], { encoding: 'utf8' });
  return table
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((address) => address !== '');
}

function transport(user: string, accessToken: string): Transporter {
  return nodemailer.createTransport({
    host: 'localhost',
    port: mta.port,
    secure: false,
    requireTLS: true,
    tls: { ca: pki.ca.cert },
    auth: { type: 'OAuth2', user, accessToken },
  });
}

interface PythonSmtpResult {
  featuresBeforeTls: Record<string, string>;
  features: Record<string, string | undefined>;
  auth?: [number, string];
  authMs?: number;
  error?: [number, string];
  challenges: string[];
  sent?: boolean;
  sendError?: [number, string];
}

/** One STARTTLS session with Python's smtplib; XOAUTH2/OAUTHBEARER as docs/protocol.md §3.1 gives them. */
const PYTHON_SMTP = String.raw`
import json, smtplib, ssl, sys, time
a = json.loads(sys.argv[1])
out = {'challenges': []}
s = smtplib.SMTP('localhost', a['port'], timeout=10)
s.ehlo()
out['featuresBeforeTls'] = dict(s.esmtp_features)
s.starttls(context=ssl.create_default_context(cafile=a['ca']))
s.ehlo()
out['features'] = dict(s.esmtp_features)
mech, user, token = a['mechanism'], a['user'], a['token']
def bearer(challenge=None):
    if challenge is not None:
        out['challenges'].append(challenge.decode())
        return '\x01' if mech == 'OAUTHBEARER' else ''
    if mech == 'XOAUTH2':
        return 'user=%s\x01auth=Bearer %s\x01\x01' % (user, token)
    return 'n,a=%s,\x01host=localhost\x01port=%d\x01auth=Bearer %s\x01\x01' % (user, a['port'], token)
try:
    started = time.perf_counter()
    code, text = s.auth(mech, bearer, initial_response_ok=True)
    out['authMs'] = (time.perf_counter() - started) * 1000
    out['auth'] = [code, text.decode()]
except smtplib.SMTPResponseException as e:
    out['error'] = [e.smtp_code, e.smtp_error.decode()]
if a.get('send') and 'error' not in out:
    msg = 'From: %s\r\nTo: bob@example.test\r\nSubject: via python %s\r\n\r\nHello\r\n' % (user, mech)
    try:
        s.sendmail(user, ['bob@example.test'], msg)
        out['sent'] = True
    except smtplib.SMTPResponseException as e:
        out['sendError'] = [e.smtp_code, e.smtp_error.decode()]
s.quit()
print(json.dumps(out))
`;

async function pythonSmtp(args: {
  user: string;
  token: string;
  mechanism?: 'XOAUTH2' | 'OAUTHBEARER';
  send?: boolean;
  timeAuth?: boolean;
}): Promise<PythonSmtpResult> {
  const input = { ...args, mechanism: args.mechanism ?? 'XOAUTH2', port: mta.port, ca: pki.caFile };
  const result = await run('python3', ['-c', PYTHON_SMTP, JSON.stringify(input)]);
  if (result.code !== 0) throw new Error(`python3 failed (${result.code}): ${result.stderr}\n${mta.logs()}`);
  return JSON.parse(result.stdout) as PythonSmtpResult;
}

/** curl with STARTTLS (`--ssl-reqd`); it picks OAUTHBEARER because Postfix offers it (seen with curl 7.88). */
function curlSubmit(user: string, token: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const message = `From: ${user}\r\nTo: ${BOB}\r\nSubject: via curl\r\n\r\nHello from curl\r\n`;
  return run(
    'curl',
    ['-v', '--silent', '--show-error', `smtp://localhost:${mta.port}`, '--ssl-reqd', '--cacert', pki.caFile,
      '--mail-from', user, '--mail-rcpt', BOB, '--upload-file', '-', '--user', user, '--oauth2-bearer', token],
    message,
  );
}


