/**
 * A notice in the receiver's format: the request body Postern POSTs (application/json).
 *
 * - `json`: Postern's own flat document, for scripts, n8n, Home Assistant, a ticket system.
 * - `teams`: a message with one Adaptive Card attachment, the shape Microsoft documents for posting cards to a
 *   Teams webhook ("Send Adaptive Cards using an Incoming Webhook": `type` "message", `attachments[]` with
 *   `contentType` "application/vnd.microsoft.card.adaptive", `contentUrl` null, the card in `content`). The
 *   Teams Workflows template "Send webhook alerts to a channel" (trigger "When a Teams webhook request is
 *   received") posts each attachment's card. Only Adaptive Card 1.2 elements are used (TextBlock, FactSet,
 *   Action.OpenUrl), which every Teams client renders.
 * - `slack`: `{"text": …}`, which Slack incoming webhooks, Mattermost, Rocket.Chat, Google Chat and many
 *   others accept. `&`, `<` and `>` are escaped as Slack requires; the link is a bare URL, which all of them
 *   turn into a link.
 */
import type { WebhookFormat } from '../store/schema.js';
import type { Notice } from './events.js';

/** Postern's generic JSON document (format `json`). */
export interface JsonPayload {
  source: 'postern';
  event: string;
  phase: Notice['phase'];
  title: string;
  text: string;
  advice: string | null;
  facts: Array<{ name: string; value: string }>;
  link: string;
  occurredAt: string;
  instance: string;
}

export function renderPayload(format: WebhookFormat, notice: Notice): unknown {
  switch (format) {
    case 'teams':
      return teamsPayload(notice);
    case 'slack':
      return slackPayload(notice);
    default:
      return jsonPayload(notice);
  }
}

export function jsonPayload(notice: Notice): JsonPayload {
  return {
    source: 'postern',
    event: notice.event,
    phase: notice.phase,
    title: notice.title,
    text: notice.text,
    advice: notice.advice ?? null,
    facts: notice.facts,
    link: notice.link,
    occurredAt: new Date(notice.at).toISOString(),
    instance: notice.instance,
  };
}

const TITLE_COLOUR: Record<Notice['phase'], string> = { problem: 'Attention', resolved: 'Good', test: 'Accent' };

export function teamsPayload(notice: Notice) {
  const body: Array<Record<string, unknown>> = [
    { type: 'TextBlock', text: notice.title, weight: 'Bolder', size: 'Medium', color: TITLE_COLOUR[notice.phase], wrap: true },
    { type: 'TextBlock', text: notice.text, wrap: true },
  ];
  if (notice.advice) body.push({ type: 'TextBlock', text: notice.advice, wrap: true, weight: 'Bolder' });
  if (notice.facts.length > 0) body.push({ type: 'FactSet', facts: notice.facts.map((f) => ({ title: f.name, value: f.value })) });
  body.push({ type: 'TextBlock', text: `${notice.instance}, ${new Date(notice.at).toISOString().replace('T', ' ').slice(0, 19)} UTC`, isSubtle: true, size: 'Small', wrap: true });
  return {
    type: 'message',
    attachments: [
      {
        contentType: 'application/vnd.microsoft.card.adaptive',
        contentUrl: null,
        content: {
          $schema: 'http://adaptivecards.io/schemas/adaptive-card.json',
          type: 'AdaptiveCard',
          version: '1.2',
          body,
          actions: [{ type: 'Action.OpenUrl', title: notice.linkLabel, url: notice.link }],
        },
      },
    ],
  };
}

/** Slack's three control characters (https://api.slack.com/reference/surfaces/formatting#escaping). */
function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function slackPayload(notice: Notice): { text: string } {
  const lines = [`*${slackEscape(notice.title)}*`, slackEscape(notice.text)];
  if (notice.advice) lines.push(slackEscape(notice.advice));
  for (const fact of notice.facts) lines.push(`${slackEscape(fact.name)}: ${slackEscape(fact.value)}`);
  lines.push(`${slackEscape(notice.linkLabel)}: ${notice.link}`);
  return { text: lines.join('\n') };
}
