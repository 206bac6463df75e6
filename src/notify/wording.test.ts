/**
 * The words of notifications from hand-made facts: no store, no clock, no network.
 */
import { describe, expect, test } from 'vitest';
import type { AccountRow } from '../oauth/accounts.js';
import type { BouncedEntry, HeldSummary } from '../queue/queue.js';
import { accountWords, duration, eventLabel, messagesHeld, messagesReturned, testNotification, utc, type ReturnedMessage } from './wording.js';

const T0 = Date.UTC(2026, 0, 12, 9, 0, 0);
const FIVE_DAYS = 5 * 24 * 60 * 60_000;

function account(patch: Partial<AccountRow> = {}): AccountRow {
  return {
    id: 'microsoft',
    provider: 'microsoft',
    enabled: 1,
    token_status: 'Expired',
    token_status_at: T0,
    token_error: null,
    token_advice: null,
    mailbox: 'scanner@contoso.example',
    connection_status: null,
    connection_detail: null,
    connection_checked_at: null,
    ...patch,
  } as AccountRow;
}

function returned(n: number, patch: Partial<BouncedEntry> = {}): ReturnedMessage {
  return {
    id: n,
    queueId: `q${n}`,
    at: T0,
    recipients: `rcpt${n}@example.test`,
    code: 550,
    reply: '5.1.1 mailbox unknown',
    advice: null,
    reversePath: 'scanner@printers.local',
    subject: `scan ${n}`,
    isBounce: false,
    all: [`rcpt${n}@example.test`],
    ...patch,
  };
}

describe('account notifications', () => {
  test('Expired names the mailbox and the default advice; the held-messages note only for the sending account', () => {
    const sending = accountWords(account(), true, FIVE_DAYS).tokenExpired();
    expect(sending.title).toBe('OAuth 2.0 (Microsoft): Token Status is Expired');
    expect(sending.text).toBe(
      'The authorization expired: Postern can no longer get access tokens for scanner@contoso.example, so it cannot send mail. Re-authorization is required.' +
        ' Devices still get 250 for their messages, which are held in the queue and returned to their senders after 5 days if this is not fixed.',
    );
    expect(sending.advice).toBe('Open OAuth 2.0 (Microsoft) Settings, click Get New User Code and sign in again.');
    expect(sending.path).toBe('/settings/send/oauth-microsoft');
    expect(accountWords(account(), false, FIVE_DAYS).tokenExpired().text).not.toContain('Devices still get 250');
  });

  test('the end of Expired: Active again, another status, or turned off', () => {
    expect(accountWords(account({ token_status: 'Active' }), true, FIVE_DAYS).tokenExpiredOver().title).toBe('OAuth 2.0 (Microsoft): Token Status is Active again');
    expect(accountWords(account({ token_status: 'NotRegistered' }), true, FIVE_DAYS).tokenExpiredOver().text).toBe('Token Status is now Not Registered.');
    expect(accountWords(account({ enabled: 0 }), true, FIVE_DAYS).tokenExpiredOver().text).toBe('Use OAuth 2.0 (Microsoft) was turned off.');
  });

  test('Error carries the provider message and advice; only a recovery ends it with a message', () => {
    const words = accountWords(account({ token_status: 'Error', token_error: 'AADSTS50173', token_advice: 'Sign in again.' }), false, FIVE_DAYS);
    expect(words.tokenError().text).toBe('Postern cannot refresh the access token for scanner@contoso.example: AADSTS50173. It keeps the authorization and keeps trying.');
    expect(words.tokenError().advice).toBe('Sign in again. If this lasts, check Server Connection Status and the network path to the authorization server (DNS, firewall, proxy).');
    expect(words.tokenError().facts).toContainEqual({ name: 'Provider message', value: 'AADSTS50173' });
    expect(words.tokenErrorOver()).toBeNull();
  });

  test('Connection Failed says when it was checked; Successfully Connected again only after a good check', () => {
    const failed = accountWords(account({ connection_status: 'ConnectionFailed', connection_checked_at: T0 }), false, FIVE_DAYS);
    expect(failed.connectionFailed().facts).toEqual([
      { name: 'Server Connection Status', value: 'Connection Failed' },
      { name: 'Checked at', value: '2026-01-12 09:00:00 UTC' },
    ]);
    expect(failed.connectionFailedOver()).toBeNull();
    expect(accountWords(account({ connection_status: 'SuccessfullyConnected' }), false, FIVE_DAYS).connectionFailedOver()?.title).toBe(
      'OAuth 2.0 (Microsoft): Successfully Connected again',
    );
  });
});

describe('queue notifications', () => {
  test('held messages: counted, with the reason of the oldest', () => {
    const held: HeldSummary = { count: 3, oldestHeldAt: T0, heldLongerThan: 1, lastReply: 'the authorization expired', lastAdvice: 'Sign in again.' };
    const draft = messagesHeld(held, T0, FIVE_DAYS);
    expect(draft.title).toBe('1 message has been held for more than 15 minutes');
    expect(draft.text).toBe(
      'Devices got 250 for this message, but Postern cannot send it: the authorization expired. Held messages are sent as soon as the sending account can sign in again, and returned to their senders after 5 days.',
    );
    expect(draft.facts).toEqual([
      { name: 'Held messages', value: '3' },
      { name: 'Held since', value: '2026-01-12 09:00:00 UTC' },
    ]);
  });

  test('returned messages: one links to its Log entry; more than five are summed up', () => {
    const one = messagesReturned([returned(1)]);
    expect(one.title).toBe('A message could not be delivered and was returned to its sender');
    expect(one.text).toBe('From scanner@printers.local to rcpt1@example.test, subject "scan 1": 550 5.1.1 mailbox unknown');
    expect(one.path).toBe('/settings/log?id=q1');

    const many = messagesReturned([1, 2, 3, 4, 5, 6].map((n) => returned(n)));
    expect(many.title).toBe('6 messages could not be delivered and were returned to their senders');
    expect(many.text.split('\n')).toHaveLength(6);
    expect(many.text.endsWith('\n… and 1 more (see the Log).')).toBe(true);
    expect(many.path).toBe('/settings/log');
  });

  test('a returned message without a sender, and a reply that already starts with its code', () => {
    const draft = messagesReturned([returned(1, { reversePath: '', reply: '550 5.1.1 mailbox unknown' })]);
    expect(draft.text).toBe('From <> to rcpt1@example.test, subject "scan 1": 550 5.1.1 mailbox unknown (no sender to return it to)');
  });
});

test('the test notification lists the selected events, or says none is', () => {
  expect(testNotification('admin', ['token-expired']).facts).toEqual([{ name: 'Events', value: 'Token Status became Expired' }]);
  expect(testNotification('admin', []).facts).toEqual([{ name: 'Events', value: 'none selected' }]);
  expect(eventLabel('test')).toBe('Test notification');
  expect(eventLabel('messages-held')).toBe('Messages held for more than 15 minutes');
});

test('durations and times in plain words', () => {
  expect(duration(FIVE_DAYS)).toBe('5 days');
  expect(duration(60 * 60_000)).toBe('1 hour');
  expect(duration(1000)).toBe('1 minute');
  expect(utc(T0)).toBe('2026-01-12 09:00:00 UTC');
});
