import { describe, expect, it } from 'vitest';
import type { SMTPConnectionCustomAuthContext, SMTPConnectionCustomAuthResponse } from 'nodemailer/lib/smtp-connection';
import { bearerLogin, chooseMechanism, decodeErrorChallenge, oauthBearerResponse, RefreshFailedError, xoauth2Response } from './xoauth2.js';
import { FastDataSmtpConnection } from './dot-stuffing.js';

describe('XOAUTH2 and OAUTHBEARER initial responses', () => {
  it('builds the exact XOAUTH2 bytes (docs/protocol.md §3.1)', () => {
    const response = xoauth2Response('test@contoso.onmicrosoft.com', 'EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA');
    expect(Buffer.from(response, 'base64').toString()).toBe('user=test@contoso.onmicrosoft.com\x01auth=Bearer EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA\x01\x01');
    // Microsoft's published example (its line break removed).
    expect(response).toBe('dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==');
    expect(response).not.toMatch(/[\s_-]/);
  });

  it('builds RFC 7628 §4.1 OAUTHBEARER bytes and escapes the authzid', () => {
    expect(oauthBearerResponse('user@example.com', 'vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==', 'server.example.com', 143)).toBe(
      'bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB',
    );
    expect(Buffer.from(oauthBearerResponse('a,b=c@x', 't'), 'base64').toString()).toBe('n,a=a=2Cb=3Dc@x,\x01auth=Bearer t\x01\x01');
  });

  it('prefers XOAUTH2 and falls back to OAUTHBEARER', () => {
    expect(chooseMechanism(['LOGIN', 'XOAUTH2'])).toBe('XOAUTH2');
    expect(chooseMechanism(['PLAIN', 'OAUTHBEARER', 'XOAUTH2'])).toBe('XOAUTH2');
    expect(chooseMechanism(['OAUTHBEARER'])).toBe('OAUTHBEARER');
    expect(chooseMechanism(['PLAIN', 'LOGIN'])).toBeUndefined();
  });

  it('decodes an error challenge', () => {
    const text = Buffer.from('{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}').toString('base64');
    expect(decodeErrorChallenge(text)).toEqual({ status: '401', schemes: 'bearer', scope: 'https://mail.google.com/' });
    expect(decodeErrorChallenge('')).toBeUndefined();
  });
});

/** A scripted server for the handler: replies in order, records the commands. */
function context(replies: string[], authMethods = ['LOGIN', 'XOAUTH2']) {
  const sent: string[] = [];
  const ctx = {
    authMethods,
    sendCommand: async (cmd: string): Promise<SMTPConnectionCustomAuthResponse> => {
      sent.push(cmd);
      const response = replies.shift() ?? '554 no more';
      const m = /^(\d{3})[ -]?(.*)$/.exec(response)!;
      return { command: cmd, response, status: Number(m[1]), text: m[2]! };
    },
  } as unknown as SMTPConnectionCustomAuthContext;
  return { ctx, sent };
}

describe('bearerLogin', () => {
  it('signs in with one upper-case AUTH XOAUTH2 line', async () => {
    const { ctx, sent } = context(['235 2.7.0 Authentication successful']);
    await bearerLogin({ user: 'a@x', accessToken: 'tok', refresh: async () => 'never' })(ctx);
    expect(sent).toEqual([`AUTH XOAUTH2 ${xoauth2Response('a@x', 'tok')}`]);
  });

  it('answers an error challenge with an empty line, then refreshes once and retries (Gmail shape)', async () => {
    const challenge = Buffer.from('{"status":"401"}').toString('base64');
    const { ctx, sent } = context([`334 ${challenge}`, '535-5.7.8 Username and Password not accepted', '235 2.7.0 Accepted']);
    const refreshed: string[] = [];
    const challenges: unknown[] = [];
    await bearerLogin({
      user: 'a@x',
      accessToken: 'old',
      refresh: async (rejected) => {
        refreshed.push(rejected);
        return 'new';
      },
      onChallenge: (c) => challenges.push(c),
    })(ctx);
    expect(sent).toEqual([`AUTH XOAUTH2 ${xoauth2Response('a@x', 'old')}`, '', `AUTH XOAUTH2 ${xoauth2Response('a@x', 'new')}`]);
    expect(refreshed).toEqual(['old']);
    expect(challenges).toEqual([{ status: '401' }]);
  });

  it('retries once on a direct 535 (Microsoft shape) and reports the second failure', async () => {
    const { ctx, sent } = context(['535 5.7.3 Authentication unsuccessful', '535 5.7.3 Authentication unsuccessful']);
    let refreshes = 0;
    await expect(bearerLogin({ user: 'a@x', accessToken: 'old', refresh: async () => (refreshes++, 'new') })(ctx)).rejects.toThrow(/refused the XOAUTH2 login/);
    expect(refreshes).toBe(1);
    expect(sent).toHaveLength(2);
  });

  it('uses OAUTHBEARER where only it is offered, answering the challenge with AQ==', async () => {
    const { ctx, sent } = context(['334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=', '535 5.7.8 Error', '235 ok'], ['OAUTHBEARER']);
    await bearerLogin({ user: 'a@x', accessToken: 'old', host: 'h', port: 587, refresh: async () => 'new' })(ctx);
    expect(sent[0]).toBe(`AUTH OAUTHBEARER ${oauthBearerResponse('a@x', 'old', 'h', 587)}`);
    expect(sent[1]).toBe('AQ==');
  });

  it('sends a response too long for one AUTH line after an empty challenge (RFC 4954 §4)', async () => {
    const { ctx, sent } = context(['334 ', '235 ok']);
    const token = 'x'.repeat(13_000);
    await bearerLogin({ user: 'a@x', accessToken: token, refresh: async () => 'new' })(ctx);
    expect(sent).toEqual(['AUTH XOAUTH2', xoauth2Response('a@x', token)]);
  });

  it('wraps a failed refresh so the caller can hold the message', async () => {
    const { ctx } = context(['535 5.7.3 Authentication unsuccessful']);
    const error = await bearerLogin({ user: 'a@x', accessToken: 'old', refresh: async () => Promise.reject(new Error('expired')) })(ctx).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RefreshFailedError);
  });
});

describe('which mechanisms the server advertised', () => {
  it("reads OAUTHBEARER from the EHLO lines, which nodemailer's own list leaves out", () => {
    const connection = new FastDataSmtpConnection({ host: '127.0.0.1', port: 1 });
    (connection as unknown as { _ehloLines: string[] })._ehloLines = ['mx.example.test', 'PIPELINING', 'AUTH OAUTHBEARER', 'AUTH=LOGIN', '8BITMIME'];
    expect(connection.advertisedAuthMechanisms()).toEqual(['OAUTHBEARER', 'LOGIN']);
    expect(chooseMechanism(connection.advertisedAuthMechanisms()!)).toBe('OAUTHBEARER');
  });
});
