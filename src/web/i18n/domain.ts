/**
 * The sentences the services write for the Remote UI's forms (a field's validation message, the login
 * throttle's wait) in the page's language. The services keep their English sentences (the JSON API and the
 * logs use them too); each one the Remote UI shows has a `domain.*` key whose English text is the service's
 * sentence with `{name}` where a value goes. A sentence is matched against those templates as a whole, or
 * part by part where a service joins several with "; ". A sentence without a template stays as it is.
 * test/i18n-catalogue.test.ts checks that each template's fixed words still occur in the service's source.
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
  // Generic ("the {label} …") last: the sentences above would match them too.
  'domain.urlInvalid',
  'domain.urlHttps',
  'domain.urlCredentials',
  'domain.urlFragment',
  'domain.urlMissing',
] as const satisfies readonly MessageKey[];

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
      return '([^;]+?)';
    })
    .join('');
  return { key, pattern: new RegExp(`^${source}$`, 's'), names };
});

/** Field names the services put into their sentences, by their English label. */
const LABELS: MessageKey[] = ['oauth.authorizationEndpoint', 'oauth.tokenEndpoint'];
function labelOf(t: Translate, value: string): string {
  const key = LABELS.find((k) => CATALOGUES.en[k].toLowerCase() === value.toLowerCase());
  return key ? t(key) : value;
}

function one(t: Translate, sentence: string): string | undefined {
  for (const { key, pattern, names } of TEMPLATES) {
    const match = pattern.exec(sentence);
    if (!match) continue;
    const params: Params = {};
    names.forEach((name, i) => (params[name] = labelOf(t, match[i + 1] ?? '')));
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
    .map((part) => {
      const found = one(t, part);
      if (found !== undefined) return found;
      const hint = /^(.*?)\. (.+)$/s.exec(part);
      if (hint) {
        const [first, second] = [one(t, hint[1]!) ?? hint[1]!, one(t, hint[2]!) ?? hint[2]!];
        return `${first}. ${second}`;
      }
      return part;
    })
    .join('; ');
}
