/**
 * Proves the stand-in upstreams (upstream-smtp.ts) behave like Microsoft 365's and Gmail's submission servers,
 * with real clients (nodemailer, Python smtplib, curl) and real tokens from the stand-in authorization servers
 * (oauth-standins.ts), checked by RFC 7662 introspection on every AUTH.
 */
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import nodemailer, { type Transporter } from 'nodemailer';
import { Agent, fetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GMAIL_SCOPE,
  OUTLOOK_SMTP_SCOPE,
  startGoogleStandin,
  startMicrosoftStandin,
  type GoogleStandin,
  type MicrosoftStandin,
} from './oauth-standins.js';
import { createTestPki, type TestPki } from './test-ca.js';
import { microsoftAccessToken, run } from './clients.js';
import { parseBearerResponse, startUpstreamSmtp, type UpstreamSmtp } from './upstream-smtp.js';
import { authorizeInBrowserlessAgent } from './user-agent.js';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const PASSWORD = 'correct horse';
const OUTLOOK_IMAP_SCOPE = 'https://outlook.office.com/IMAP.AccessAsUser.All';

let pki: TestPki;
let microsoft: MicrosoftStandin;
let google: GoogleStandin;
let office365: UpstreamSmtp;
let gmail: UpstreamSmtp;
const tokens = { aliceOutlook: '', bobOutlook: '', aliceImapOnly: '', aliceGmail: '', aliceGoogleNoMail: '' };

beforeAll(async () => {
  pki = await createTestPki();
  [microsoft, google] = await Promise.all([startMicrosoftStandin({ pki }), startGoogleStandin({ pki })]);
  [office365, gmail] = await Promise.all([
    startUpstreamSmtp({
      flavour: 'office365',
      introspection: { ...microsoft.introspection, caFile: pki.caFile },
      requiredScope: OUTLOOK_SMTP_SCOPE,
      tls: pki.server,
    }),
    startUpstreamSmtp({
      flavour: 'gmail',
      introspection: { ...google.introspection, ca: google.ca },
      requiredScope: GMAIL_SCOPE,
      tls: pki.server,
    }),
  ]);
  [tokens.aliceOutlook, tokens.bobOutlook, tokens.aliceImapOnly, tokens.aliceGmail] = await Promise.all([
    microsoftAccessToken(microsoft, ALICE, OUTLOOK_SMTP_SCOPE),
    microsoftAccessToken(microsoft, BOB, OUTLOOK_SMTP_SCOPE),
    microsoftAccessToken(microsoft, ALICE, OUTLOOK_IMAP_SCOPE),
    googleAccessToken(google, ALICE),
  ]);
  // Granular consent: the user leaves "Read, compose, send… Gmail" unticked.
  google.grantScopeWithoutMail(true);
  tokens.aliceGoogleNoMail = await googleAccessToken(google, ALICE);
  google.grantScopeWithoutMail(false);
});

afterAll(async () => {
  await Promise.all([office365?.close(), gmail?.close()]);
  await Promise.all([microsoft?.close(), google?.close()]);
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
});

describe('office365 flavour (STARTTLS, AUTH LOGIN XOAUTH2)', () => {
  it('offers no AUTH before STARTTLS, then AUTH LOGIN XOAUTH2 and SIZE 157286400', async () => {
    const result = await pythonSmtp({ port: office365.port, mode: 'starttls', user: ALICE, token: tokens.aliceOutlook });
    expect(result.featuresBeforeTls).toHaveProperty('starttls');
    expect(result.featuresBeforeTls).not.toHaveProperty('auth');
    expect(result.features.auth?.trim()).toBe('LOGIN XOAUTH2');
    expect(result.features.size).toBe('157286400');
    expect(result.features).toHaveProperty('enhancedstatuscodes');
    expect(result.features).not.toHaveProperty('starttls');
    expect(result.auth).toEqual([235, '2.7.0 Authentication successful']);
  });

  it('accepts a good token from nodemailer and records the message', async () => {
    const before = office365.messages.length;
    const introspections = office365.introspectionCount;
    const info = await office365Transport(ALICE, tokens.aliceOutlook).sendMail({
      from: ALICE,
      to: [BOB, 'carol@example.test'],
      subject: 'hello from nodemailer',
      text: 'Hello Bob',
    });
    expect(info.response).toMatch(/^250 2\.0\.0 OK </);
    const messages = await office365.waitForMessages(before + 1);
    const message = messages[before]!;
    expect(message.envelope).toEqual({ mailFrom: ALICE, rcptTo: [BOB, 'carol@example.test'] });
    expect(message.authUser).toBe(ALICE);
    expect(message.parsed?.subject).toBe('hello from nodemailer');
    expect(message.raw.toString()).toContain('Hello Bob');
    expect(office365.introspectionCount).toBe(introspections + 1);
    expect(office365.authAttempts.at(-1)).toEqual({ user: ALICE, mechanism: 'XOAUTH2', ok: true });
  });

  it('matches the SASL user case-insensitively', async () => {
    const result = await pythonSmtp({ port: office365.port, mode: 'starttls', user: 'Alice@Example.TEST', token: tokens.aliceOutlook });
    expect(result.auth?.[0]).toBe(235);
  });

  it('answers a bogus token with the error challenge, then 535 5.7.3', async () => {
    const result = await pythonSmtp({ port: office365.port, mode: 'starttls', user: ALICE, token: 'not-a-token' });
    expect(result.challenges).toEqual([JSON.stringify({ status: '401', schemes: 'bearer', scope: OUTLOOK_SMTP_SCOPE })]);
    expect(result.error).toEqual([535, '5.7.3 Authentication unsuccessful']);
    expect(office365.authAttempts.at(-1)).toEqual({ user: ALICE, mechanism: 'XOAUTH2', ok: false, reason: 'inactive' });
  });

  it('refuses the token of another user and a token without SMTP.Send', async () => {
    const bobAsAlice = await pythonSmtp({ port: office365.port, mode: 'starttls', user: ALICE, token: tokens.bobOutlook });
    expect(bobAsAlice.error).toEqual([535, '5.7.3 Authentication unsuccessful']);
    expect(office365.authAttempts.at(-1)?.reason).toBe('user-mismatch');
    const imapOnly = await pythonSmtp({ port: office365.port, mode: 'starttls', user: ALICE, token: tokens.aliceImapOnly });
    expect(imapOnly.error).toEqual([535, '5.7.3 Authentication unsuccessful']);
    expect(office365.authAttempts.at(-1)?.reason).toBe('scope');
  });

  it('makes nodemailer fail with EAUTH on a bad token, after one retry of AUTH', async () => {
    const attempts = office365.authAttempts.length;
    const error = await office365Transport(ALICE, 'not-a-token')
      .sendMail({ from: ALICE, to: BOB, subject: 'x', text: 'x' })
      .catch((err: unknown) => err);
    // nodemailer answers the challenge, ignores the first 535, asks its token source for a renewed token (a fixed
    // accessToken comes back unchanged) and tries AUTH again; only the second 535 reaches the caller.
    expect(error).toMatchObject({ code: 'EAUTH', responseCode: 535, response: '535 5.7.3 Authentication unsuccessful' });
    expect(office365.authAttempts.slice(attempts)).toHaveLength(2);
  });

  it('sends scripted AUTH, MAIL, RCPT and DATA replies verbatim', async () => {
    const authDisabled =
      '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.';
    office365.failNext({ phase: 'auth', code: 535, message: authDisabled });
    const authError = await sendExpectingError(office365Transport(ALICE, tokens.aliceOutlook));
    expect(authError).toMatchObject({ code: 'EAUTH', responseCode: 535, response: `535 ${authDisabled}` });

    const sendAs = `5.2.252 SendAsDenied; ${ALICE} not allowed to send as other@example.test; STOREDRV.Submission.Exception:SendAsDeniedException`;
    office365.failNext({ phase: 'data', code: 554, message: sendAs });
    const dataError = await sendExpectingError(office365Transport(ALICE, tokens.aliceOutlook));
    expect(dataError).toMatchObject({ responseCode: 554, response: `554 ${sendAs}` });

    office365.failNext({ phase: 'mail', code: 452, message: '4.5.3 Too many recipients' });
    const mailError = await sendExpectingError(office365Transport(ALICE, tokens.aliceOutlook));
    expect(mailError).toMatchObject({ responseCode: 452, response: '452 4.5.3 Too many recipients' });

    office365.failNext({ phase: 'rcpt', code: 550, message: '5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup' });
    const rcptError = await sendExpectingError(office365Transport(ALICE, tokens.aliceOutlook));
    expect(rcptError).toMatchObject({
      responseCode: 550,
      response: '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup',
    });
  });

  it('repeats a scripted reply the given number of times, then accepts again', async () => {
    const before = office365.messages.length;
    office365.failNext({ phase: 'data', code: 451, message: '4.3.0 Temporary failure' }, 2);
    for (let i = 0; i < 2; i++) {
      expect(await sendExpectingError(office365Transport(ALICE, tokens.aliceOutlook))).toMatchObject({
        responseCode: 451,
        response: '451 4.3.0 Temporary failure',
      });
    }
    await office365Transport(ALICE, tokens.aliceOutlook).sendMail({ from: ALICE, to: BOB, subject: 'third time', text: 'x' });
    const messages = await office365.waitForMessages(before + 1);
    expect(messages[before]?.parsed?.subject).toBe('third time');
  });

  it('drops a connection on request', async () => {
    office365.dropNextConnection();
    const error = await sendExpectingError(office365Transport(ALICE, tokens.aliceOutlook));
    expect(error).toMatchObject({ code: expect.stringMatching(/ECONNECTION|ESOCKET/) });
  });

  it('refuses LOGIN (basic auth) and mail without AUTH', async () => {
    const login = await pythonSmtp({ port: office365.port, mode: 'starttls', user: ALICE, password: 'secret' });
    expect(login.error).toEqual([535, '5.7.139 Authentication unsuccessful, basic authentication is disabled.']);
    const anonymous = await pythonSmtp({ port: office365.port, mode: 'starttls', send: true });
    expect(anonymous.sendError?.[0]).toBe(530);
  });
});

describe('gmail flavour (implicit TLS, AUTH LOGIN PLAIN XOAUTH2 OAUTHBEARER)', () => {
  it('advertises what smtp.gmail.com:465 advertises', async () => {
    const result = await pythonSmtp({ port: gmail.port, mode: 'ssl', user: ALICE, token: tokens.aliceGmail });
    expect(result.features.auth?.trim()).toBe('LOGIN PLAIN XOAUTH2 OAUTHBEARER');
    expect(result.features.size).toBe('35882577');
    expect(result.features).not.toHaveProperty('dsn');
    expect(result.features).not.toHaveProperty('starttls');
    expect(result.auth).toEqual([235, '2.7.0 Accepted']);
  });

  it('accepts XOAUTH2 from nodemailer over implicit TLS', async () => {
    const before = gmail.messages.length;
    const transport = nodemailer.createTransport({
      host: 'localhost',
      port: gmail.port,
      secure: true,
      tls: { ca: pki.ca.cert },
      auth: { type: 'OAuth2', user: ALICE, accessToken: tokens.aliceGmail },
    });
    const info = await transport.sendMail({ from: ALICE, to: BOB, subject: 'via gmail', text: 'Hi' });
    expect(info.response).toMatch(/^250 2\.0\.0 OK .* - gsmtp$/);
    const messages = await gmail.waitForMessages(before + 1);
    expect(messages[before]).toMatchObject({ authUser: ALICE, envelope: { mailFrom: ALICE, rcptTo: [BOB] } });
  });

  it('accepts OAUTHBEARER from curl and refuses a bogus token with exit 67', async () => {
    const before = gmail.messages.length;
    const good = await curlSmtp(gmail.port, ALICE, tokens.aliceGmail);
    expect(good.stderr).toContain('AUTH OAUTHBEARER');
    expect(good.code).toBe(0);
    const messages = await gmail.waitForMessages(before + 1);
    expect(messages[before]?.parsed?.subject).toBe('via curl');
    expect(gmail.authAttempts.at(-1)).toEqual({ user: ALICE, mechanism: 'OAUTHBEARER', ok: true });

    const bad = await curlSmtp(gmail.port, ALICE, 'not-a-token');
    expect(bad.code).toBe(67);
    expect(bad.stderr).toContain('535-5.7.8 Username and Password not accepted');
  });

  it('gives the two-line 5.7.8 reply after the error challenge (XOAUTH2 and OAUTHBEARER)', async () => {
    const expected = [
      535,
      '5.7.8 Username and Password not accepted. For more information, go to\n5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp',
    ];
    const xoauth2 = await pythonSmtp({ port: gmail.port, mode: 'ssl', user: ALICE, token: tokens.aliceGoogleNoMail });
    expect(xoauth2.challenges).toEqual([JSON.stringify({ status: '401', schemes: 'bearer', scope: GMAIL_SCOPE })]);
    expect(xoauth2.error).toEqual(expected);
    expect(gmail.authAttempts.at(-1)?.reason).toBe('scope');
    const bearer = await pythonSmtp({ port: gmail.port, mode: 'ssl', mechanism: 'OAUTHBEARER', user: ALICE, token: 'not-a-token' });
    expect(bearer.error).toEqual(expected);
    expect(gmail.authAttempts.at(-1)).toMatchObject({ mechanism: 'OAUTHBEARER', ok: false, reason: 'inactive' });
  });

  it('accepts OAUTHBEARER from Python and sends', async () => {
    const before = gmail.messages.length;
    const result = await pythonSmtp({ port: gmail.port, mode: 'ssl', mechanism: 'OAUTHBEARER', user: ALICE, token: tokens.aliceGmail, send: true });
    expect(result.auth?.[0]).toBe(235);
    expect(result.sent).toBe(true);
    await gmail.waitForMessages(before + 1);
  });

  it('refuses a password (PLAIN) like Gmail without an app password', async () => {
    const result = await pythonSmtp({ port: gmail.port, mode: 'ssl', user: ALICE, password: 'secret', mechanism: 'PLAIN' });
    expect(result.error?.[0]).toBe(535);
    expect(gmail.authAttempts.at(-1)).toMatchObject({ mechanism: 'PLAIN', ok: false, reason: 'basic-auth' });
  });
});

describe('options and failure modes', () => {
  it('enforceSendAs: Exchange refuses a sender other than the mailbox after DATA', async () => {
    // Given only a PKI (as test/sandbox/run.ts does): its server certificate, and its CA for introspection.
    const strict = await startUpstreamSmtp({
      flavour: 'office365',
      introspection: microsoft.introspection,
      requiredScope: OUTLOOK_SMTP_SCOPE,
      pki,
      enforceSendAs: true,
    });
    try {
      const transport = nodemailer.createTransport({
        host: 'localhost',
        port: strict.port,
        requireTLS: true,
        tls: { ca: pki.ca.cert },
        auth: { type: 'OAuth2', user: ALICE, accessToken: tokens.aliceOutlook },
      });
      const error = await transport.sendMail({ from: BOB, to: ALICE, subject: 'x', text: 'x' }).catch((err: unknown) => err);
      expect(error).toMatchObject({ responseCode: 554, response: expect.stringMatching(/^554 5\.2\.252 SendAsDenied; alice@example\.test not allowed to send as bob@example\.test;/) });
      await transport.sendMail({ from: ALICE, to: BOB, subject: 'own address', text: 'x' });
      expect(strict.messages).toHaveLength(1);
    } finally {
      await strict.close();
    }
  });

  it('answers 454 4.7.0 when the authorization server cannot be reached', async () => {
    const orphan = await startUpstreamSmtp({
      flavour: 'gmail',
      introspection: { url: 'https://127.0.0.1:9/introspect', clientId: 'x', clientSecret: 'y', ca: pki.ca.cert },
      requiredScope: GMAIL_SCOPE,
      tls: pki.server,
    });
    try {
      const result = await pythonSmtp({ port: orphan.port, mode: 'ssl', user: ALICE, token: tokens.aliceGmail });
      expect(result.error).toEqual([454, '4.7.0 Temporary authentication failure']);
      expect(orphan.authAttempts[0]?.reason).toMatch(/^introspection-error: /);
    } finally {
      await orphan.close();
    }
  });
});

describe('parseBearerResponse', () => {
  it('reads XOAUTH2 and OAUTHBEARER initial responses', () => {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    expect(parseBearerResponse('XOAUTH2', b64(`user=${ALICE}\x01auth=Bearer abc\x01\x01`))).toEqual({ user: ALICE, token: 'abc' });
    expect(parseBearerResponse('OAUTHBEARER', b64('n,a=a=2Cb@x.test,\x01host=h\x01port=1\x01auth=Bearer t\x01\x01'))).toEqual({
      user: 'a,b@x.test',
      token: 't',
    });
    expect(parseBearerResponse('XOAUTH2', b64('user=x\x01\x01'))).toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------------------------

function office365Transport(user: string, accessToken: string): Transporter {
  return nodemailer.createTransport({
    host: 'localhost',
    port: office365.port,
    secure: false,
    requireTLS: true,
    tls: { ca: pki.ca.cert },
    auth: { type: 'OAuth2', user, accessToken },
  });
}

async function sendExpectingError(transport: Transporter): Promise<Record<string, unknown>> {
  try {
    await transport.sendMail({ from: ALICE, to: BOB, subject: 'expect failure', text: 'x' });
  } catch (err) {
    return err as Record<string, unknown>;
  }
  throw new Error('the upstream accepted a message it was told to refuse');
}

interface PythonSmtpResult {
  featuresBeforeTls?: Record<string, string>;
  features: Record<string, string | undefined>;
  auth?: [number, string];
  error?: [number, string];
  challenges: string[];
  sent?: boolean;
  sendError?: [number, string];
}

/**
 * One SMTP session with Python's smtplib. XOAUTH2 and OAUTHBEARER as RFC 7628 and the XOAUTH2 format give them (docs/protocol.md §3.1): the initial response,
 * then an empty line (XOAUTH2) or ^A (OAUTHBEARER, RFC 7628 §3.2.3) to an error challenge.
 */
const PYTHON_SMTP = String.raw`
import json, smtplib, ssl, sys
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile=a['ca'])
out = {'challenges': []}
if a['mode'] == 'ssl':
    s = smtplib.SMTP_SSL('localhost', a['port'], context=ctx, timeout=10)
    s.ehlo()
else:
    s = smtplib.SMTP('localhost', a['port'], timeout=10)
    s.ehlo()
    out['featuresBeforeTls'] = dict(s.esmtp_features)
    s.starttls(context=ctx)
    s.ehlo()
out['features'] = dict(s.esmtp_features)
mech, user, token = a.get('mechanism', 'XOAUTH2'), a.get('user'), a.get('token')
def bearer(challenge=None):
    if challenge is not None:
        out['challenges'].append(challenge.decode())
        return '\x01' if mech == 'OAUTHBEARER' else ''
    if mech == 'XOAUTH2':
        return 'user=%s\x01auth=Bearer %s\x01\x01' % (user, token)
    return 'n,a=%s,\x01host=localhost\x01port=%d\x01auth=Bearer %s\x01\x01' % (user, a['port'], token)
try:
    if a.get('password') is not None:
        s.user, s.password = user, a['password']
        code, text = s.auth(mech, s.auth_plain if mech == 'PLAIN' else s.auth_login, initial_response_ok=True)
        out['auth'] = [code, text.decode()]
    elif token is not None:
        code, text = s.auth(mech, bearer, initial_response_ok=True)
        out['auth'] = [code, text.decode()]
except smtplib.SMTPResponseException as e:
    out['error'] = [e.smtp_code, e.smtp_error.decode()]
if a.get('send') and 'error' not in out:
    msg = 'From: %s\r\nTo: bob@example.test\r\nSubject: via python\r\n\r\nHello\r\n' % (user or 'anonymous@example.test')
    try:
        s.sendmail(user or 'anonymous@example.test', ['bob@example.test'], msg)
        out['sent'] = True
    except smtplib.SMTPResponseException as e:
        out['sendError'] = [e.smtp_code, e.smtp_error.decode()]
s.quit()
print(json.dumps(out))
`;

async function pythonSmtp(args: {
  port: number;
  mode: 'ssl' | 'starttls';
  mechanism?: 'XOAUTH2' | 'OAUTHBEARER' | 'PLAIN' | 'LOGIN';
  user?: string;
  token?: string;
  password?: string;
  send?: boolean;
}): Promise<PythonSmtpResult> {
  const mechanism = args.mechanism ?? (args.password !== undefined ? 'LOGIN' : 'XOAUTH2');
  const result = await run('python3', ['-c', PYTHON_SMTP, JSON.stringify({ ...args, mechanism, ca: pki.caFile })]);
  if (result.code !== 0) throw new Error(`python3 failed (${result.code}): ${result.stderr}`);
  return JSON.parse(result.stdout) as PythonSmtpResult;
}

/** curl over implicit TLS; curl 7.88 picks OAUTHBEARER when the server offers it (seen with curl 7.88). */
function curlSmtp(port: number, user: string, token: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const message = `From: ${user}\r\nTo: ${BOB}\r\nSubject: via curl\r\n\r\nHello from curl\r\n`;
  return run(
    'curl',
    ['-v', '--silent', '--show-error', `smtps://localhost:${port}`, '--cacert', pki.caFile, '--mail-from', user,
      '--mail-rcpt', BOB, '--upload-file', '-', '--user', user, '--oauth2-bearer', token],
    message,
  );
}


// ---------------------------------------------------------------------------------------------------------------
// Tokens from the stand-in authorization servers, by their real flows
// ---------------------------------------------------------------------------------------------------------------


/** Authorization code + PKCE at the Google stand-in (loopback redirect, never contacted); returns the access token. */
async function googleAccessToken(standin: GoogleStandin, email: string): Promise<string> {
  const verifier = randomBytes(32).toString('base64url');
  const redirectUri = 'http://127.0.0.1:9/oauth2/google/callback';
  const url = new URL(standin.authorizationEndpoint);
  url.search = new URLSearchParams({
    client_id: standin.clientId,
    redirect_uri: redirectUri,
    response_type: 'code',
    scope: `${GMAIL_SCOPE} openid email`,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    state: 'state',
  }).toString();
  const redirect = await authorizeInBrowserlessAgent({ authorizationUrl: url.toString(), email, password: PASSWORD, ca: standin.ca });
  const code = redirect.searchParams.get('code');
  if (!code) throw new Error(`no code in ${redirect.toString()}`);
  const dispatcher = new Agent({ connect: { ca: standin.ca } });
  try {
    const response = await fetch(standin.tokenEndpoint, {
      method: 'POST',
      dispatcher,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code,
        redirect_uri: redirectUri,
        code_verifier: verifier,
        client_id: standin.clientId,
        client_secret: standin.clientSecret,
      }).toString(),
    });
    const tokenResponse = (await response.json()) as { access_token?: string };
    if (!tokenResponse.access_token) throw new Error(`no access token: ${JSON.stringify(tokenResponse)}`);
    return tokenResponse.access_token;
  } finally {
    await dispatcher.close();
  }
}
