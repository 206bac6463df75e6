import { describe, expect, test } from 'vitest';
import { NOTIFICATION_EVENTS } from './events.js';
import { displayWebhookUrl, isLocalHost, validateNotificationSettings, validateWebhookUrl } from './settings.js';

const TEAMS = 'https://prod-12.westeurope.logic.azure.com:443/workflows/0123abcd/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=SECRET_SIGNATURE';

describe('Webhook URL', () => {
  test('https:// is accepted; shown as scheme://host/… only', () => {
    expect(validateWebhookUrl(`  ${TEAMS}  `)).toEqual({ ok: true, url: TEAMS.replace(':443', ''), unencrypted: false });
    expect(displayWebhookUrl(TEAMS)).toBe('https://prod-12.westeurope.logic.azure.com/…');
    expect(displayWebhookUrl('https://hooks.slack.com/services/T000/B000/XXXX')).toBe('https://hooks.slack.com/…');
    expect(displayWebhookUrl('http://192.168.1.20:8080/hook')).toBe('http://192.168.1.20:8080/…');
  });

  test('http:// only for loopback and private addresses, flagged as unencrypted', () => {
    for (const url of ['http://127.0.0.1:9000/hook', 'http://localhost/hook', 'http://10.1.2.3/x', 'http://172.16.0.9/x', 'http://192.168.1.20:8080/x', 'http://[::1]:8080/x', 'http://[fd00::5]/x', 'http://169.254.10.10/x']) {
      expect(validateWebhookUrl(url), url).toMatchObject({ ok: true, unencrypted: true });
    }
    for (const url of ['http://hooks.slack.com/services/T/B/SLACKTOKEN', 'http://8.8.8.8/x', 'http://100.64.0.1/x', 'http://receiver.lan/x']) {
      const result = validateWebhookUrl(url);
      expect(result.ok, url).toBe(false);
      if (!result.ok) {
        expect(result.error).toMatch(/uses http:\/\/, which is unencrypted/);
        expect(result.error).not.toContain('/x');
        expect(result.error).not.toContain('SLACKTOKEN');
      }
    }
    expect(isLocalHost('app.localhost')).toBe(true);
    expect(isLocalHost('::ffff:127.0.0.1')).toBe(true);
  });

  test('everything else is refused with a clear reason', () => {
    const error = (url: string) => {
      const result = validateWebhookUrl(url);
      return result.ok ? undefined : result.error;
    };
    expect(error('')).toBe('Enter the Webhook URL of the receiver (https://…).');
    expect(error('hooks.slack.com/services/x')).toMatch(/not a complete URL/);
    expect(error('ftp://example.com/x')).toBe('The Webhook URL must start with https:// (not ftp://).');
    expect(error('https://user:pw@example.com/x')).toMatch(/cannot contain a user name or password/);
    expect(error('https://example.com/a b')).toMatch(/cannot contain spaces/);
    expect(error(`https://example.com/${'a'.repeat(2100)}`)).toMatch(/longer than 2048/);
  });
});

describe('the form', () => {
  const all = [...NOTIFICATION_EVENTS];

  test('an empty URL keeps the stored one; without one it is required', () => {
    expect(validateNotificationSettings({ webhookUrl: '', format: 'teams', events: all }, true)).toEqual({ ok: true, value: { webhookUrl: undefined, format: 'teams', events: all } });
    expect(validateNotificationSettings({ webhookUrl: '', format: 'teams', events: all }, false)).toEqual({
      ok: false,
      errors: { webhookUrl: 'Enter the Webhook URL of the receiver (https://…).' },
    });
  });

  test('format and events come from their lists', () => {
    expect(validateNotificationSettings({ webhookUrl: '', format: 'xml', events: ['token-expired', 'nonsense'] }, true)).toEqual({
      ok: false,
      errors: { format: 'Choose the format your receiver expects.', events: 'Choose events from the list.' },
    });
    const result = validateNotificationSettings({ webhookUrl: '', format: 'slack', events: ['message-bounced', 'token-expired'] }, true);
    expect(result).toEqual({ ok: true, value: { webhookUrl: undefined, format: 'slack', events: ['token-expired', 'message-bounced'] } });
  });
});
