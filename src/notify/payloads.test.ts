import { describe, expect, test } from 'vitest';
import type { Notice } from './events.js';
import { renderPayload } from './payloads.js';

const notice: Notice = {
  event: 'token-expired',
  phase: 'problem',
  title: 'OAuth 2.0 (Microsoft): Token Status is Expired',
  text: 'The authorization expired: Postern can no longer get access tokens for alice@example.test <a&b>.',
  advice: 'Get a new user code and sign in again.',
  facts: [{ name: 'Token Status', value: 'Expired' }],
  link: 'https://postern.example:8443/settings/send/oauth-microsoft',
  linkLabel: 'Open OAuth 2.0 (Microsoft) Settings',
  at: Date.UTC(2026, 0, 12, 9, 30, 0),
  instance: 'gateway-1',
};

describe('payload formats', () => {
  test('JSON (generic): Postern\'s flat document', () => {
    expect(renderPayload('json', notice)).toEqual({
      source: 'postern',
      event: 'token-expired',
      phase: 'problem',
      title: notice.title,
      text: notice.text,
      advice: notice.advice,
      facts: notice.facts,
      link: notice.link,
      occurredAt: '2026-01-12T09:30:00.000Z',
      instance: 'gateway-1',
    });
  });

  test('Microsoft Teams: a message with one Adaptive Card attachment, as Microsoft documents for webhooks', () => {
    const payload = renderPayload('teams', notice) as any;
    expect(Object.keys(payload)).toEqual(['type', 'attachments']);
    expect(payload.type).toBe('message');
    expect(payload.attachments).toHaveLength(1);
    const [attachment] = payload.attachments;
    expect(attachment.contentType).toBe('application/vnd.microsoft.card.adaptive');
    expect(attachment.contentUrl).toBeNull();
    const card = attachment.content;
    expect(card).toMatchObject({ $schema: 'http://adaptivecards.io/schemas/adaptive-card.json', type: 'AdaptiveCard', version: '1.2' });
    expect(card.body[0]).toMatchObject({ type: 'TextBlock', text: notice.title, weight: 'Bolder', color: 'Attention', wrap: true });
    expect(card.body.map((b: any) => b.text).filter(Boolean)).toEqual(expect.arrayContaining([notice.text, notice.advice]));
    expect(card.body).toContainEqual({ type: 'FactSet', facts: [{ title: 'Token Status', value: 'Expired' }] });
    expect(card.actions).toEqual([{ type: 'Action.OpenUrl', title: 'Open OAuth 2.0 (Microsoft) Settings', url: notice.link }]);
    expect((renderPayload('teams', { ...notice, phase: 'resolved' }) as any).attachments[0].content.body[0].color).toBe('Good');
  });

  test('Slack-compatible: {"text"} only, with Slack\'s control characters escaped and the link as a bare URL', () => {
    const payload = renderPayload('slack', notice) as { text: string };
    expect(Object.keys(payload)).toEqual(['text']);
    expect(payload.text).toBe(
      [
        '*OAuth 2.0 (Microsoft): Token Status is Expired*',
        'The authorization expired: Postern can no longer get access tokens for alice@example.test &lt;a&amp;b&gt;.',
        'Get a new user code and sign in again.',
        'Token Status: Expired',
        'Open OAuth 2.0 (Microsoft) Settings: https://postern.example:8443/settings/send/oauth-microsoft',
      ].join('\n'),
    );
  });
});
