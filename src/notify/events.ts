/**
 * What Postern notifies administrators about, and the notice every receiver format is rendered from.
 * The labels are the check boxes on the Notifications page.
 */

export const NOTIFICATION_EVENTS = ['token-expired', 'token-error', 'connection-failed', 'messages-held', 'message-bounced'] as const;

export type NotificationEvent = (typeof NOTIFICATION_EVENTS)[number];

/** A problem lasting this long is reported (Token Status Error, held messages). */
export const PROBLEM_THRESHOLD_MS = 15 * 60_000;

export const EVENT_LABELS: Record<NotificationEvent, string> = {
  'token-expired': 'Token Status became Expired',
  'token-error': 'Token Status in Error for more than 15 minutes',
  'connection-failed': 'Server Connection Status: Connection Failed (at a connection check)',
  'messages-held': 'Messages held for more than 15 minutes',
  'message-bounced': 'A message returned to its sender (bounce)',
};

export function isNotificationEvent(value: string): value is NotificationEvent {
  return (NOTIFICATION_EVENTS as readonly string[]).includes(value);
}

/** `problem`: something needs attention; `resolved`: it is over; `test`: Send Test Notification. */
export type NoticePhase = 'problem' | 'resolved' | 'test';

/** One notification, independent of the receiver's format (notify/payloads.ts renders it). */
export interface Notice {
  event: NotificationEvent | 'test';
  phase: NoticePhase;
  /** One line, e.g. "OAuth 2.0 (Microsoft): Token Status is Expired". */
  title: string;
  /** What happened and what it means for mail, in plain words. */
  text: string;
  /** What to do (Postern's own advice, e.g. the token's advice text). */
  advice?: string | undefined;
  facts: Array<{ name: string; value: string }>;
  /** The Remote UI page to open (absolute URL). */
  link: string;
  linkLabel: string;
  /** When the notice was made (ms since the epoch). */
  at: number;
  /** The host name of the Postern instance that made it. */
  instance: string;
}

/** A notice before the pass fills in time, instance and the absolute link (`path` is the Remote UI page). */
export type Draft = Omit<Notice, 'at' | 'instance' | 'link'> & { path: string };

/** What one look at the store says about one event key (notify/attention.ts → notify/outbox.ts). */
export interface Condition {
  key: string;
  event: NotificationEvent;
  /** active: the problem is there; clear: it is over; unchanged: neither (e.g. re-authorization under way). */
  state: 'active' | 'clear' | 'unchanged';
  /** When the problem began as far as the store tells; `sticky`: keep the first value seen. */
  since: number;
  sticky: boolean;
  thresholdMs: number;
  problem: () => Draft;
  /** null: close without a notification. */
  resolution: () => Draft | null;
}
