import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { applySenderPolicy, HeaderTooLargeError, MAX_HEADER_BYTES, SenderPolicyTransform } from './sender-policy.js';

const policy = { mailbox: 'alice@example.test', allowed: ['shared@example.test'] };
const rewrite = (headers: string) => applySenderPolicy(Buffer.from(headers, 'utf8'), policy);

describe('sender policy', () => {
  it('keeps a From that is the mailbox or an allowed address', () => {
    for (const from of ['alice@example.test', 'Alice <ALICE@example.test>', '"Shared" <shared@example.test>']) {
      const headers = `From: ${from}\r\nSubject: x\r\n`;
      const result = rewrite(headers);
      expect(result.headers.toString()).toBe(headers);
      expect(result.replacedFrom).toBeUndefined();
    }
  });

  it('replaces any other From with the mailbox, keeping the display name, and moves the address to Reply-To', () => {
    const result = rewrite('Subject: Scan\r\nFrom: "Scanner 3rd floor" <scanner@printers.local>\r\nTo: bob@example.test\r\n');
    expect(result.headers.toString()).toBe('Subject: Scan\r\nFrom: "Scanner 3rd floor" <alice@example.test>\r\nReply-To: <scanner@printers.local>\r\nTo: bob@example.test\r\n');
    expect(result.replacedFrom).toBe('scanner@printers.local');
  });

  it('keeps an existing Reply-To, handles folded and encoded names, multiple Froms and a missing From', () => {
    expect(rewrite('From: x@y.test\r\nReply-To: desk@y.test\r\n').headers.toString()).toBe('From: <alice@example.test>\r\nReply-To: desk@y.test\r\n');
    expect(rewrite('From: =?UTF-8?B?R3LDtsOfZQ==?=\r\n <x@y.test>\r\n').headers.toString()).toBe('From: =?UTF-8?B?R3LDtsOfZQ==?= <alice@example.test>\r\nReply-To: <x@y.test>\r\n');
    expect(rewrite('From: Größe <x@y.test>\r\n').headers.toString()).toBe('From: =?UTF-8?Q?Gr=C3=B6=C3=9Fe?= <alice@example.test>\r\nReply-To: <x@y.test>\r\n');
    expect(rewrite('From: a@b.test\r\nFrom: c@d.test\r\nSubject: s\r\n').headers.toString()).toBe('From: <alice@example.test>\r\nReply-To: <a@b.test>\r\nSubject: s\r\n');
    expect(rewrite('Subject: s\r\n').headers.toString()).toBe('From: <alice@example.test>\r\nSubject: s\r\n');
    expect(rewrite('From: alice@example.test, bob@example.test\r\n').headers.toString()).toBe('From: <alice@example.test>\r\n');
  });

  it('drops a Sender naming an address that is not allowed', () => {
    expect(rewrite('From: alice@example.test\r\nSender: x@y.test\r\n').headers.toString()).toBe('From: alice@example.test\r\n');
    expect(rewrite('From: alice@example.test\r\nSender: shared@example.test\r\n').headers.toString()).toBe('From: alice@example.test\r\nSender: shared@example.test\r\n');
  });

  it('streams: only the header block changes, the body passes through byte for byte', async () => {
    const body = Buffer.concat([Buffer.from('line\r\n..not stuffed here\r\n'), Buffer.alloc(200_000, 0x61), Buffer.from('\r\n')]);
    const message = Buffer.concat([Buffer.from('From: x@y.test\r\nSubject: s\r\n\r\n'), body]);
    const chunks = [message.subarray(0, 7), message.subarray(7, 40), message.subarray(40)];
    const out: Buffer[] = [];
    const transform = new SenderPolicyTransform(policy);
    await pipeline(Readable.from(chunks), transform, new Writable({ write(c, _e, cb) { out.push(c); cb(); } }));
    const result = Buffer.concat(out);
    expect(result.toString().startsWith('From: <alice@example.test>\r\nReply-To: <x@y.test>\r\nSubject: s\r\n\r\n')).toBe(true);
    expect(result.subarray(result.length - body.length).equals(body)).toBe(true);
    expect(transform.replacedFrom).toBe('x@y.test');
  });

  it('fails closed: a header block it cannot see the end of is never passed on unrewritten', async () => {
    const head = Buffer.from(`From: ceo@example.test\r\n${`X-F: ${'a'.repeat(990)}\r\n`.repeat(Math.ceil(MAX_HEADER_BYTES / 995) + 200)}\r\nbody\r\n`);
    const out: Buffer[] = [];
    const transform = new SenderPolicyTransform(policy);
    const chunks = head.toString('latin1').match(/[\s\S]{1,65536}/g)!.map((c) => Buffer.from(c, 'latin1'));
    await expect(pipeline(Readable.from(chunks), transform, new Writable({ write(c, _e, cb) { out.push(c); cb(); } }))).rejects.toBeInstanceOf(HeaderTooLargeError);
    expect(transform.headerTooLarge).toBe(true);
    expect(Buffer.concat(out).toString()).not.toContain('ceo@example.test');
  });
});
