import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { formatExtensions, parseEhloExtensions, parseStoredExtensions, refusalFor, relayExtensions, scanEightBit, targetKey } from './extensions.js';

describe('parseEhloExtensions', () => {
  it('finds 8BITMIME and SMTPUTF8 among the keywords of an EHLO reply (as nodemailer keeps its lines)', () => {
    const exchange = ['SIZE 157286400', 'PIPELINING', 'DSN', 'ENHANCEDSTATUSCODES', 'AUTH LOGIN XOAUTH2', '8BITMIME', 'BINARYMIME', 'CHUNKING', 'SMTPUTF8'];
    expect(parseEhloExtensions(exchange)).toEqual(['8BITMIME', 'SMTPUTF8']);
    expect(parseEhloExtensions(['size 1000', '8bitmime'])).toEqual(['8BITMIME']);
  });

  it('does not take a keyword that only contains the name, or a parameter', () => {
    expect(parseEhloExtensions(['X-8BITMIME', 'XSMTPUTF8', 'AUTH PLAIN SMTPUTF8', 'PIPELINING'])).toEqual([]);
    expect(parseEhloExtensions([])).toEqual([]);
  });

  it('stores in a fixed order and drops unknown words', () => {
    expect(formatExtensions(['SMTPUTF8', '8BITMIME', 'DSN'])).toBe('8BITMIME SMTPUTF8');
    expect(parseStoredExtensions('SMTPUTF8')).toEqual(['SMTPUTF8']);
    expect(parseStoredExtensions(null)).toEqual([]);
  });
});

describe('relayExtensions', () => {
  const seen = (target: string, extensions: Array<'8BITMIME' | 'SMTPUTF8'>) => ({ target, extensions, seenAt: 1 });

  it('before anything is seen: both for the providers, neither for another host', () => {
    expect(relayExtensions('smtp.office365.com', 587, null)).toEqual({ '8BITMIME': true, SMTPUTF8: true });
    expect(relayExtensions('SMTP.Gmail.com.', 465, null)).toEqual({ '8BITMIME': true, SMTPUTF8: true });
    expect(relayExtensions('relay.corp.example', 25, null)).toEqual({ '8BITMIME': false, SMTPUTF8: false });
  });

  it('what was seen at the selected target wins, also over the provider default', () => {
    expect(relayExtensions('relay.corp.example', 25, seen('relay.corp.example:25', ['8BITMIME']))).toEqual({ '8BITMIME': true, SMTPUTF8: false });
    expect(relayExtensions('smtp.office365.com', 587, seen(targetKey('smtp.office365.com', 587), []))).toEqual({ '8BITMIME': false, SMTPUTF8: false });
  });

  it('what was seen at another target counts for nothing', () => {
    expect(relayExtensions('relay.corp.example', 25, seen('relay.corp.example:587', ['8BITMIME', 'SMTPUTF8']))).toEqual({ '8BITMIME': false, SMTPUTF8: false });
  });
});

describe('scanEightBit', () => {
  const scan = (...chunks: string[]) => scanEightBit(Readable.from(chunks.map((c) => Buffer.from(c, 'latin1'))));

  it('tells an 8-bit header from an 8-bit body, also across chunk boundaries', async () => {
    expect(await scan('Subject: plain\r\n\r\nbody\r\n')).toEqual({ header: false, anywhere: false });
    expect(await scan('Subject: plain\r\n\r\nb\xe9b\xe9\r\n')).toEqual({ header: false, anywhere: true });
    expect(await scan('Subject: caf\xe9\r\n\r\nbody\r\n')).toEqual({ header: true, anywhere: true });
    expect(await scan('Subject: plain\r\n\r', '\nb\xe9\r\n')).toEqual({ header: false, anywhere: true });
    expect(await scan('Subject: plain\r\n', 'X: \xe9\r\n\r\n')).toEqual({ header: true, anywhere: true });
  });
});

describe('refusalFor', () => {
  const clean = { header: false, anywhere: false };
  const bodyOnly = { header: false, anywhere: true };
  const server = 'relay.corp.example:25';

  it('an 8-bit body without 8BITMIME: 5.6.3; a 7-bit clean one marked 8BITMIME goes', () => {
    const refusal = refusalFor({ smtpUtf8: false, addresses: ['a@b.test'] }, bodyOnly, ['SMTPUTF8'], server);
    expect(refusal?.code).toBe(554);
    expect(refusal?.reply).toMatch(/^554 5\.6\.3 /);
    expect(refusal?.advice).toMatch(/^The upstream does not accept 8-bit messages;/);
    expect(refusalFor({ smtpUtf8: false, addresses: ['a@b.test'] }, clean, [], server)).toBeUndefined();
    expect(refusalFor({ smtpUtf8: false, addresses: ['a@b.test'] }, bodyOnly, ['8BITMIME'], server)).toBeUndefined();
  });

  it('SMTPUTF8 needed (non-ASCII address or header) but not offered: 5.6.7; ASCII-only goes without it', () => {
    expect(refusalFor({ smtpUtf8: true, addresses: ['jörg@b.test'] }, clean, ['8BITMIME'], server)?.reply).toMatch(/^554 5\.6\.7 /);
    expect(refusalFor({ smtpUtf8: true, addresses: ['a@b.test'] }, { header: true, anywhere: true }, ['8BITMIME'], server)?.reply).toMatch(/^554 5\.6\.7 /);
    expect(refusalFor({ smtpUtf8: true, addresses: ['a@b.test'] }, clean, [], server)).toBeUndefined();
    expect(refusalFor({ smtpUtf8: true, addresses: ['jörg@b.test'] }, clean, ['SMTPUTF8'], server)).toBeUndefined();
  });
});
