/**
 * The Audit Log as people read it: each action code ("relay-device.added") in words, and CSV cells safe to
 * open in a spreadsheet (a cell that starts with = + - @, or a tab or carriage return, is prefixed with ' so
 * that it is not read as a formula: CSV injection).
 */
import type { MessageKey, Translate } from './i18n/index.js';

const ACTIONS: Record<string, MessageKey> = {
  login: 'audit.a.login',
  'login.failed': 'audit.a.loginFailed',
  logout: 'audit.a.logout',
  'user.added': 'audit.a.userAdded',
  'user.removed': 'audit.a.userRemoved',
  'user.password_changed': 'audit.a.passwordChanged',
  'user.password_reset': 'audit.a.passwordReset',
  'settings.oauth.microsoft': 'audit.a.oauthMicrosoft',
  'settings.oauth.google': 'audit.a.oauthGoogle',
  'oauth.token.deleted': 'audit.a.tokenDeleted',
  'oauth.user_code.requested': 'audit.a.userCode',
  'token.authorized': 'audit.a.tokenAuthorized',
  'token.expired': 'audit.a.tokenExpired',
  'email-settings.saved': 'audit.a.emailSettings',
  'relay-settings.saved': 'audit.a.relaySettings',
  'relay-device.added': 'audit.a.deviceAdded',
  'relay-device.changed': 'audit.a.deviceChanged',
  'relay-device.removed': 'audit.a.deviceRemoved',
  'relay-certificate.generated': 'audit.a.certGenerated',
  'relay-certificate.uploaded': 'audit.a.certUploaded',
  'ca.added': 'audit.a.caAdded',
  'ca.removed': 'audit.a.caRemoved',
  'queue.retry': 'audit.a.queueRetry',
  'queue.deleted': 'audit.a.queueDeleted',
  'notifications.saved': 'audit.a.notificationsSaved',
  'notifications.deleted': 'audit.a.notificationsDeleted',
  'notification.failed': 'audit.a.notificationFailed',
  'api-token.created': 'audit.a.apiTokenCreated',
  'api-token.revoked': 'audit.a.apiTokenRevoked',
  'api.auth_failed': 'audit.a.apiAuthFailed',
  'sending-account.added': 'audit.a.accountAdded',
  'sending-account.removed': 'audit.a.accountRemoved',
  'sending-account.renamed': 'audit.a.accountRenamed',
  'sending-account.default': 'audit.a.accountDefault',
  'oauth.delivery-method.changed': 'audit.a.deliveryMethod',
  'sender-route.saved': 'audit.a.senderRouteSaved',
  'sender-route.removed': 'audit.a.senderRouteRemoved',
};

/** The action in words; an action without words of its own is shown as its code. */
export function auditActionLabel(t: Translate, action: string): string {
  const key = ACTIONS[action];
  return key ? t(key) : action;
}

/** One CSV cell (RFC 4180 quoting), neutralised against formula injection. */
export function csvCell(value: string): string {
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}
