/**
 * The sentences the services write for the Remote UI's forms (a field's validation message, the login
 * throttle's wait) in the page's language. The services keep their English sentences (the JSON API and the
 * logs use them too); each one the Remote UI shows has a `domain.*` key whose English text is the service's
 * sentence with `{name}` where a value goes. A sentence is matched against those templates as a whole, or
 * part by part where a service joins several with "; ". A sentence without a template stays as it is.
 * Advice and reasons (upstream SMTP replies, connection failures, a test e-mail's result, OAuth provider
 * advice) are matched the same way, also when they are stored rows: a text of several sentences is matched
 * by its longest leading run of sentences that has a template, then the rest likewise ("<reason>. Postern
 * retries automatically."). A provider's own reply text is never a template and stays verbatim. A
 * placeholder listed in CHOICES stands for one of a few fixed English phrases, each translated.
 * test/i18n-catalogue.test.ts checks that each template's fixed words, and each choice, still occur in the
 * service's source.
 */
import { CATALOGUES, type Lang, type MessageKey, type Params, type Translate } from './index.js';

export const DOMAIN_KEYS = [
  'domain.relaySize',
  'domain.relayBare',
  'domain.passwordShort',
  'domain.passwordLong',
  'domain.passwordControl',
  'domain.deviceUsername',
  'domain.username',
  'domain.networkAddress',
  'domain.networkInvalid',
  'domain.sendersTooMany',
  'domain.emailAccount',
  'domain.emailHost',
  'domain.emailPort',
  'domain.emailTls',
  'domain.emailSender',
  'domain.emailAllowedFrom',
  'domain.emailRate',
  'domain.endpointMissing',
  'domain.endpointHttps',
  'domain.endpointCredentials',
  'domain.endpointQuery',
  'domain.endpointShape',
  'domain.msClientMissing',
  'domain.msClientShape',
  'domain.googleClientMissing',
  'domain.googleClientShape',
  'domain.googleSecretMissing',
  'domain.googleSecretSpaces',
  'domain.tryAgain',
  'domain.sendersHint',
  'domain.smtpAuthDisabled',
  'domain.smtpSendAs',
  'domain.smtpBasicAuth',
  'domain.smtpExchangeToken',
  'domain.smtpGmailToken',
  'domain.smtpNotAuthenticated',
  'domain.smtpTooLarge',
  'domain.smtpNoRecipient',
  'domain.smtpThrottled',
  'domain.smtpTempAuth',
  'domain.smtpTokenRefused',
  'domain.smtpTemporary',
  'domain.smtpPermanent',
  'domain.smtpStartTls',
  'domain.smtpPortTls',
  'domain.netUntrusted',
  'domain.netCertDate',
  'domain.netNameMismatch',
  'domain.netDns',
  'domain.netRefused',
  'domain.netTimeout',
  'domain.netReset',
  'domain.netHandshake',
  'domain.netServerError',
  'domain.testSent',
  'domain.testRecipient',
  'domain.testNoToken',
  'domain.testNotSent',
  'domain.holdNotInUse',
  'domain.holdExpired',
  'domain.holdError',
  'domain.holdAuthorize',
  'domain.oauthInvalidGrant',
  'domain.oauthRefreshExpired',
  'domain.oauthRevoked',
  'domain.oauthPublicFlows',
  'domain.oauthAppNotFound',
  'domain.oauthConsent',
  'domain.oauthNoConnection',
  'domain.googleInvalidGrant',
  'domain.googleMalformed',
  'domain.googleClient',
  'domain.oauthRefreshUnused90',
  'domain.oauthInvalidClient',
  'domain.oauthUnauthorizedClient',
  'domain.oauthInvalidScope',
  'domain.oauthSignInAgain',
  'domain.oauthMfa',
  'domain.oauthConditionalAccess',
  'domain.oauthAdminConsent',
  'domain.oauthClock',
  'domain.oauthBusy',
  'domain.oauthNotServer',
  'domain.googleAdminPolicy',
  'domain.googleScope',
  'domain.googleDenied',
  'domain.googleStartAgainAllow',
  'domain.googleStateMismatch',
  'domain.googleStartAgain',
  'domain.googleNoPending',
  'domain.googleCodeWrong',
  'domain.googleNoRefresh',
  'domain.deviceDeclined',
  'domain.deviceCodeExpired',
  'domain.deviceNoRefresh',
  'domain.notifyAccepted',
  'domain.notifyRedirect',
  'domain.notifyBusy',
  'domain.notifyReceiverFailed',
  'domain.notifySaid',
  'domain.notifyAnswered',
  'domain.notifyNoUrl',
  'domain.notifyGaveUp',
  'domain.netOther',
  'domain.retries',
  // Generic ("the {label} …") last: the sentences above would match them too.
  'domain.urlInvalid',
  'domain.urlHttps',
  'domain.urlCredentials',
  'domain.urlFragment',
  'domain.urlMissing',
] as const satisfies readonly MessageKey[];

/** Placeholders that stand for one of a few fixed phrases of the service (not a value), each translated. */
export const CHOICES: Record<string, MessageKey[]> = {
  state: ['domain.stateExpired', 'domain.stateNotYetValid'],
  dnsNote: ['domain.dnsTemporary'],
  what: ['domain.whatUnreachable', 'domain.whatSignIn', 'domain.whatRefused'],
  meaning: ['domain.meaningNoWebhook', 'domain.meaningRefusedSecret', 'domain.meaningFormat', 'domain.meaningNoPost', 'domain.meaningTooLarge', 'domain.meaningRefused'],
};
/** Placeholders that may be empty (the sender of a test e-mail without a mailbox, no DNS note). */
const OPTIONAL = new Set(['from', 'dnsNote']);

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

interface Template {
  key: MessageKey;
  pattern: RegExp;
  names: string[];
}

const TEMPLATES: Template[] = DOMAIN_KEYS.map((key) => {
  const english = CATALOGUES.en[key];
  const names: string[] = [];
  const source = english
    .split(/(\{\w+\})/)
    .map((part) => {
      const name = /^\{(\w+)\}$/.exec(part)?.[1];
      if (!name) return escape(part);
      names.push(name);
      const choices = CHOICES[name];
      if (choices) return `(${choices.map((k) => escape(CATALOGUES.en[k])).join('|')}${OPTIONAL.has(name) ? '|' : ''})`;
      // A value never runs over a "; " or into the next sentence (a certificate's name list may hold ". ").
      if (name === 'altnames' || name === 'said') return '([^;]+?)';
      return OPTIONAL.has(name) ? '((?:(?!\\. )[^;])*?)' : '((?:(?!\\. )[^;])+?)';
    })
    .join('');
  return { key, pattern: new RegExp(`^${source}$`, 's'), names };
});

/** Field names the services put into their sentences, by their English label. */
const LABELS: MessageKey[] = ['oauth.authorizationEndpoint', 'oauth.tokenEndpoint'];
function labelOf(t: Translate, value: string, name: string): string {
  const choice = CHOICES[name]?.find((k) => CATALOGUES.en[k] === value);
  if (choice) return t(choice);
  const key = LABELS.find((k) => CATALOGUES.en[k].toLowerCase() === value.toLowerCase());
  return key ? t(key) : value;
}

function one(t: Translate, sentence: string): string | undefined {
  for (const { key, pattern, names } of TEMPLATES) {
    const match = pattern.exec(sentence);
    if (!match) continue;
    const params: Params = {};
    names.forEach((name, i) => (params[name] = labelOf(t, match[i + 1] ?? '', name)));
    return t(key, params);
  }
  return undefined;
}

/** The service's sentence in the page's language (as it is in English, or without a template). */
export function domainText(lang: Lang, t: Translate, sentence: string | null | undefined): string {
  if (!sentence) return sentence ?? '';
  if (lang === 'en') return sentence;
  const whole = one(t, sentence);
  if (whole !== undefined) return whole;
  // "a; b. Hint" (the allowed-networks and allowed-senders lists): each part on its own.
  return sentence
    .split('; ')
    .map((part) => one(t, part) ?? bySentence(t, part))
    .join('; ');
}

/** One sentence, also when its template has no closing period ("x: not an IP address…" + ". Hint"). */
function sentenceText(t: Translate, text: string): string | undefined {
  const found = one(t, text);
  if (found !== undefined) return found;
  if (!text.endsWith('.')) return undefined;
  const bare = one(t, text.slice(0, -1));
  return bare === undefined ? undefined : `${bare}.`;
}

/** Several sentences: the longest leading run that has a template, then the rest likewise; unknown ones as they are. */
function bySentence(t: Translate, text: string): string {
  const sentences = text.split(/(?<=\.) (?=\S)/);
  const out: string[] = [];
  let i = 0;
  while (i < sentences.length) {
    let done = false;
    for (let j = sentences.length; j > i; j--) {
      const found = sentenceText(t, sentences.slice(i, j).join(' '));
      if (found === undefined) continue;
      out.push(found);
      i = j;
      done = true;
      break;
    }
    if (!done) out.push(sentences[i++]!);
  }
  return out.join(' ');
}
