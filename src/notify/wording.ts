/**
 * The words of every notification: titles, texts, advice and facts, in the product's terms (Token Status,
 * Server Connection Status, held messages, returned messages), with the Remote UI page that fixes it.
 *
 * Inputs: plain facts already read from the store (an OAuth account's row, a summary of held messages,
 *   returned messages). Outputs: drafts (notify/events.ts), which the notifier completes with the time, the
 *   instance and the absolute link, and notify/payloads.ts renders in the receiver's format.
 * Nothing here reads the store, the clock or the network: every text can be checked from hand-made facts.
 */
import { TOKEN_STATUS_LABELS, type AccountRow, type TokenStatus } from '../oauth/accounts.js';
import { PROVIDER_LABELS } from '../oauth/profiles.js';
import type { BouncedEntry, HeldSummary } from '../queue/queue.js';
import type { ProviderId } from '../store/schema.js';
import { EVENT_LABELS, type Draft, type NotificationEvent } from './events.js';

/** What the notifications about one OAuth account say. */
export interface AccountWords {
  tokenExpired(): Draft;
  /** Expired is over: Active again, another status, or the account turned off. */
  tokenExpiredOver(): Draft;
  tokenError(): Draft;
  /** Error is over; only a recovery is worth a message of its own. */
  tokenErrorOver(): Draft | null;
  connectionFailed(): Draft;
  /** Connection Failed is over; said only when a check succeeded. */
  connectionFailedOver(): Draft | null;
}

/**
 * The words for one account. `sending`: it is the account of E-Mail Settings, so its trouble holds devices'
 * messages; `lifetimeMs`: how long held messages wait before they are returned to their senders.
 */
export function accountWords(row: AccountRow, sending: boolean, lifetimeMs: number): AccountWords {
  const id = row.id as ProviderId;
  const label = PROVIDER_LABELS[id] ?? row.id;
  const enabled = row.enabled === 1;
  const status = row.token_status;
  const connection = row.connection_status;
  const mailbox = row.mailbox ?? 'the authorized mailbox';
  const path = `/settings/send/oauth-${id}`;
  const linkLabel = `Open ${label} Settings`;
  const heldNote = sending
    ? ` Devices still get 250 for their messages, which are held in the queue and returned to their senders after ${duration(lifetimeMs)} if this is not fixed.`
    : '';
  const tokenFacts = (): Draft['facts'] => [
    { name: 'Token Status', value: statusLabel(status) },
    ...(row.mailbox ? [{ name: 'Mailbox', value: row.mailbox }] : []),
    ...(row.token_error ? [{ name: 'Provider message', value: row.token_error }] : []),
  ];
  const activeAgain = (event: NotificationEvent): Draft => ({
    event,
    phase: 'resolved',
    title: `${label}: Token Status is Active again`,
    text: `Postern can get access tokens for ${mailbox} again${sending ? ' and delivers held messages now' : ''}.`,
    facts: tokenFacts(),
    path,
    linkLabel,
  });

  return {
    tokenExpired: () => ({
      event: 'token-expired',
      phase: 'problem',
      title: `${label}: Token Status is Expired`,
      text: `The authorization expired: Postern can no longer get access tokens for ${mailbox}, so it cannot send mail. Re-authorization is required.${heldNote}`,
      advice:
        row.token_advice ??
        (id === 'google'
          ? 'Open OAuth 2.0 (Google) Settings and register the authorization again (Register).'
          : 'Open OAuth 2.0 (Microsoft) Settings, click Get New User Code and sign in again.'),
      facts: tokenFacts(),
      path,
      linkLabel,
    }),
    tokenExpiredOver: () =>
      status === 'Active'
        ? activeAgain('token-expired')
        : {
            event: 'token-expired',
            phase: 'resolved',
            title: `${label}: no longer Expired`,
            text: enabled ? `Token Status is now ${statusLabel(status)}.` : `Use ${label} was turned off.`,
            facts: [],
            path,
            linkLabel,
          },
    tokenError: () => ({
      event: 'token-error',
      phase: 'problem',
      title: `${label}: Token Status has been Error for more than 15 minutes`,
      text: `Postern cannot refresh the access token for ${mailbox}: ${row.token_error ?? 'the token request failed'}. It keeps the authorization and keeps trying.${heldNote}`,
      advice: [row.token_advice, 'If this lasts, check Server Connection Status and the network path to the authorization server (DNS, firewall, proxy).']
        .filter(Boolean)
        .join(' '),
      facts: tokenFacts(),
      path,
      linkLabel,
    }),
    // Error that became Expired is reported as Expired; only a recovery is worth a message of its own.
    tokenErrorOver: () => (status === 'Active' ? activeAgain('token-error') : null),
    connectionFailed: () => ({
      event: 'connection-failed',
      phase: 'problem',
      title: `${label}: Server Connection Status is Connection Failed`,
      text: row.connection_detail ?? 'Postern could not connect to the authorization server.',
      facts: [
        { name: 'Server Connection Status', value: 'Connection Failed' },
        ...(row.connection_checked_at ? [{ name: 'Checked at', value: utc(Number(row.connection_checked_at)) }] : []),
      ],
      path,
      linkLabel,
    }),
    connectionFailedOver: () =>
      connection === 'SuccessfullyConnected'
        ? {
            event: 'connection-failed',
            phase: 'resolved',
            title: `${label}: Successfully Connected again`,
            text: row.connection_detail ?? 'Postern reaches the authorization server again.',
            facts: [{ name: 'Server Connection Status', value: 'Successfully Connected' }],
            path,
            linkLabel,
          }
        : null,
  };
}

/** Messages held for more than 15 minutes: `since` is when the oldest was held. */
export function messagesHeld(held: HeldSummary, since: number, lifetimeMs: number): Draft {
  const over = held.heldLongerThan;
  return {
    event: 'messages-held',
    phase: 'problem',
    title: `${over === 1 ? '1 message has' : `${over} messages have`} been held for more than 15 minutes`,
    text: `Devices got 250 for ${over === 1 ? 'this message' : 'these messages'}, but Postern cannot send ${over === 1 ? 'it' : 'them'}: ${held.lastReply ?? 'the sending account has no usable token'}. Held messages are sent as soon as the sending account can sign in again, and returned to their senders after ${duration(lifetimeMs)}.`,
    advice: held.lastAdvice ?? undefined,
    facts: [
      { name: 'Held messages', value: String(held.count) },
      { name: 'Held since', value: utc(since) },
    ],
    path: '/settings/queue',
    linkLabel: 'Open the Queue',
  };
}

export function messagesHeldOver(): Draft {
  return {
    event: 'messages-held',
    phase: 'resolved',
    title: 'Held messages are flowing again',
    text: 'No message is held any more: Postern is delivering the queue.',
    facts: [],
    path: '/settings/queue',
    linkLabel: 'Open the Queue',
  };
}

/** A returned message: its `bounced` log entry, with every recipient of its entries in `all`. */
export type ReturnedMessage = BouncedEntry & { all: string[] };

/** Messages returned to their senders, in one notification (the first five named). */
export function messagesReturned(list: ReturnedMessage[]): Draft {
  const returned = (m: ReturnedMessage) => m.reversePath !== null && m.reversePath !== '' && !m.isBounce;
  const line = (m: ReturnedMessage) =>
    `From ${m.reversePath || '<>'} to ${m.all.filter(Boolean).join(', ')}${m.subject ? `, subject "${m.subject}"` : ''}: ${m.code && m.reply && !m.reply.startsWith(String(m.code)) ? `${m.code} ` : ''}${m.reply ?? 'not delivered'}${returned(m) ? '' : ' (no sender to return it to)'}`;
  const single = list.length === 1;
  const shown = list.slice(0, 5);
  return {
    event: 'message-bounced',
    phase: 'problem',
    title: single ? 'A message could not be delivered and was returned to its sender' : `${list.length} messages could not be delivered and were returned to their senders`,
    text: shown.map(line).join('\n') + (list.length > shown.length ? `\n… and ${list.length - shown.length} more (see the Log).` : ''),
    advice: list.find((m) => m.advice)?.advice ?? undefined,
    facts: [],
    path: single ? `/settings/log?id=${list[0]!.queueId}` : '/settings/log',
    linkLabel: 'Open the Log',
  };
}

/** Send Test Notification, sent by `actor` with the events selected now. */
export function testNotification(actor: string, events: readonly NotificationEvent[]): Draft {
  return {
    event: 'test',
    phase: 'test',
    title: 'Postern: test notification',
    text: `${actor} sent this test from the Notifications page. When sending needs attention (Token Status Expired or Error, Connection Failed, held or returned messages), Postern notifies this receiver like this.`,
    facts: [{ name: 'Events', value: events.map((e) => EVENT_LABELS[e]).join('; ') || 'none selected' }],
    path: '/settings/notifications',
    linkLabel: 'Open Notifications',
  };
}

/** How a notification's event is named on the Notifications page. */
export function eventLabel(event: string): string {
  return event === 'test' ? 'Test notification' : (EVENT_LABELS[event as NotificationEvent] ?? event);
}

function statusLabel(status: string): string {
  return TOKEN_STATUS_LABELS[status as TokenStatus] ?? status;
}

/** "5 days", "3 hours", "1 minute": how long held messages wait before they are returned. */
export function duration(ms: number): string {
  const [value, unit] = ms >= 86_400_000 ? [ms / 86_400_000, 'day'] : ms >= 3_600_000 ? [ms / 3_600_000, 'hour'] : [Math.max(1, ms / 60_000), 'minute'];
  const n = Math.round(value as number);
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

export function utc(ms: number): string {
  return `${new Date(ms).toISOString().replace('T', ' ').slice(0, 19)} UTC`;
}
