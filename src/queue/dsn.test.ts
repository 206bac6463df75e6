import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { buildDsn, statusOf } from './dsn.js';

describe('delivery status notification (RFC 3464)', () => {
  it('is a multipart/report with the human part, the machine part and the original headers', async () => {
    const dsn = buildDsn({
      reportingMta: 'postern.example',
      remoteMta: 'smtp.office365.com',
      from: 'alice@example.test',
      to: 'scanner@printers.local',
      queueId: '3f0c0d3e-5c47-4a2b-9d39-1a2b3c4d5e6f',
      arrivalDate: new Date(Date.UTC(2026, 0, 2)),
      recipients: [{ recipient: 'nobody@example.test', status: '5.1.1', diagnostic: '550 5.1.1 RESOLVER.ADR.RecipientNotFound\r\nsecond line' }],
      originalHeaders: Buffer.from('From: scanner@printers.local\r\nSubject: Scan 42\r\n\r\n'),
      originalSubject: 'Scan 42',
    });
    const text = dsn.toString();
    expect(text).toMatch(/^From: Mail Delivery System <alice@example\.test>\r\nTo: <scanner@printers\.local>\r\n/);
    expect(text).toContain('Content-Type: multipart/report; report-type=delivery-status;');
    expect(text).toContain('Auto-Submitted: auto-replied');
    expect(text).toContain('Content-Type: message/delivery-status');
    expect(text).toContain('Final-Recipient: rfc822; nobody@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; smtp.office365.com\r\nDiagnostic-Code: smtp; 550 5.1.1 RESOLVER.ADR.RecipientNotFound second line');
    expect(text).toContain('Content-Type: text/rfc822-headers');
    expect(text).not.toMatch(/[^\r]\n/);
    const parsed = await simpleParser(dsn);
    expect(parsed.subject).toBe('Undelivered Mail Returned to Sender: Scan 42');
    expect(parsed.headers.get('content-type')).toMatchObject({ value: 'multipart/report', params: { 'report-type': 'delivery-status' } });
    expect(parsed.text).toContain('nobody@example.test');
  });

  it('reads the RFC 3463 status from the reply', () => {
    expect(statusOf('550 5.1.1 no such user', 550)).toBe('5.1.1');
    expect(statusOf('554-5.2.252 SendAsDenied', 554)).toBe('5.2.252');
    expect(statusOf('550 go away', 550)).toBe('5.0.0');
  });
});
