/**
 * The Remote UI's message catalogues (src/web/i18n): English and Russian have the same keys, with the same
 * placeholders; every key is used; and no template holds text of its own outside t() (text nodes, and the
 * attributes people read: aria-label, title, placeholder, alt, data-confirm). The type check covers a key
 * missing from the Russian catalogue or a t() call with a key no catalogue has (ru.ts is typed as Messages).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, test } from 'vitest';
import { en } from '../src/web/i18n/en.js';
import { CATALOGUES, fromAcceptLanguage, interpolate, LANGUAGES, negotiate } from '../src/web/i18n/index.js';

const WEB = join(import.meta.dirname, '..', 'src', 'web');

function files(dir: string, ext: string[]): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return files(path, ext);
    return ext.some((e) => entry.name.endsWith(e)) && !entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

const placeholders = (text: string) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

/** What a template shows by itself once its code (<% %>), tags and entities are taken out. */
export function literalText(template: string): string[] {
  const found: string[] = [];
  const withoutCode = template.replace(/<%[\s\S]*?%>/g, ' ');
  for (const match of withoutCode.matchAll(/\s(aria-label|title|placeholder|alt|data-confirm|data-unsaved-confirm)="([^"]*)"/g)) {
    if (/[\p{L}]/u.test(match[2]!)) found.push(`${match[1]}="${match[2]}"`);
  }
  const text = withoutCode.replace(/<!--[\s\S]*?-->/g, ' ').replace(/<[^>]*>/g, '\n').replace(/&[#\w]+;/g, ' ');
  for (const line of text.split('\n')) {
    const piece = line.trim();
    // Symbols only (punctuation, arrows, the "Postern" brand excepted) may stand by themselves.
    if (piece && /[\p{L}\p{N}]/u.test(piece.replace(/^Postern$/, ''))) found.push(piece);
  }
  return found;
}

describe('the catalogues', () => {
  test('every language has exactly the English keys, none empty, with the same placeholders', () => {
    const keys = Object.keys(en).sort();
    for (const lang of LANGUAGES) {
      const catalogue = CATALOGUES[lang] as Record<string, string>;
      expect(Object.keys(catalogue).sort(), `keys of ${lang}`).toEqual(keys);
      for (const key of keys) {
        expect(catalogue[key]!.trim(), `${lang} ${key}`).not.toBe('');
        expect(placeholders(catalogue[key]!), `placeholders of ${lang} ${key}`).toEqual(placeholders(en[key as keyof typeof en]));
      }
    }
  });

  test('every key is used by a template or the web code', () => {
    const sources = files(WEB, ['.eta', '.ts'])
      .filter((path) => !path.includes(`${join('web', 'i18n')}/en.ts`) && !path.includes(`${join('web', 'i18n')}/ru.ts`))
      .map((path) => readFileSync(path, 'utf8'))
      .join('\n');
    const unused = Object.keys(en).filter((key) => !sources.includes(`'${key}'`));
    expect(unused).toEqual([]);
  });

  test('no template shows text of its own: everything goes through t()', () => {
    const offenders: Record<string, string[]> = {};
    for (const path of files(join(WEB, 'views'), ['.eta'])) {
      const found = literalText(readFileSync(path, 'utf8'));
      if (found.length > 0) offenders[relative(WEB, path)] = found;
    }
    expect(offenders).toEqual({});
  });

  test('the scan finds text nodes and readable attributes, and lets code, tags and symbols pass', () => {
    expect(literalText('<h1>Title</h1>')).toEqual(['Title']);
    expect(literalText('<button aria-label="Close">&times;</button>')).toEqual(['aria-label="Close"']);
    expect(literalText('<h1><%= it.t(\'x\') %></h1> &rarr; · <a href="/x" data-field="y">Postern</a>')).toEqual([]);
  });

  test('the Russian catalogue keeps the seed\'s bracketed labels and uses its terms', () => {
    expect(CATALOGUES.ru['nav.settings']).toBe('Settings/Registration');
    expect(CATALOGUES.ru['oauth.editBasicSettings']).toBe('Edit Basic Settings');
    expect(CATALOGUES.ru['token.Active']).toBe('Active');
    expect(CATALOGUES.ru['connection.SuccessfullyConnected']).toBe('Successfully Connected');
    expect(CATALOGUES.ru['layout.brand']).toBe('Remote UI (Удаленный ИП)');
  });
});

describe('choosing the language', () => {
  test('Accept-Language by q-value, region subtags matched, * the default, nothing supported: none', () => {
    expect(fromAcceptLanguage('ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7')).toBe('ru');
    expect(fromAcceptLanguage('de-DE, en;q=0.5, ru;q=0.9')).toBe('ru');
    expect(fromAcceptLanguage('en;q=0.9, ru;q=0.91')).toBe('ru');
    expect(fromAcceptLanguage('ru;q=0, en')).toBe('en');
    expect(fromAcceptLanguage('fr, *;q=0.1')).toBe('en');
    expect(fromAcceptLanguage('fr, de')).toBeUndefined();
    expect(fromAcceptLanguage('')).toBeUndefined();
    expect(fromAcceptLanguage(';;;,q=,ru;q=abc')).toBeUndefined();
  });

  test('the cookie wins when it names a language; else Accept-Language; else English', () => {
    expect(negotiate('en', 'ru')).toBe('en');
    expect(negotiate('ru', undefined)).toBe('ru');
    expect(negotiate('xx', 'ru-RU')).toBe('ru');
    expect(negotiate(undefined, 'fr')).toBe('en');
  });

  test('placeholders are filled; a missing value stays visible', () => {
    expect(interpolate('Open {uri} and enter {code}.', { uri: 'https://x', code: 'AB-12' })).toBe('Open https://x and enter AB-12.');
    expect(interpolate('Hello {name}', {})).toBe('Hello {name}');
  });
});

describe('the services\' sentences in the page\'s language', () => {
  test('each template still matches its service: its fixed words occur in the source', async () => {
    const { CHOICES, DOMAIN_KEYS } = await import('../src/web/i18n/domain.js');
    const sources = files(join(WEB, '..'), ['.ts'])
      .filter((path) => !path.includes(join('web', 'i18n')))
      .map((path) => readFileSync(path, 'utf8'))
      .join('\n')
      // The sentence as written, not as quoted in the source ('provider\'s').
      .replace(/\\'/g, "'");
    const stale = DOMAIN_KEYS.filter((key) =>
      en[key]
        .split(/\{\w+\}/)
        .map((part) => part.trim())
        .filter((part) => part.length >= 6)
        .some((part) => !sources.includes(part)),
    );
    expect(stale).toEqual([]);
    // Each fixed phrase a choice placeholder stands for is still written by a service.
    const staleChoices = Object.values(CHOICES)
      .flat()
      .filter((key) => !sources.includes(en[key].trim()));
    expect(staleChoices).toEqual([]);
  });

  test('upstream advice, connection reasons and test e-mail results, as the services write them, read in Russian', async () => {
    const { domainText } = await import('../src/web/i18n/domain.js');
    const { translator } = await import('../src/web/i18n/index.js');
    const { adviceFor, classifySmtpError } = await import('../src/smtp-out/replies.js');
    const { classifyConnectionError } = await import('../src/tls/trust.js');
    const t = translator('ru');
    const ru = (text: string) => domainText('ru', t, text);
    const inRussian = (text: string) => expect(ru(text), text).toMatch(/[А-Яа-я]/);
    // Every advice the reply classifier writes has a template.
    const replies = [
      '535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.',
      '554 5.2.252 SendAsDenied',
      '535 5.7.30 Basic authentication is not supported for Client Submission.',
      '535 5.7.3 Authentication unsuccessful',
      '535 5.7.8 Username and Password not accepted. BadCredentials',
      '530 5.7.57 Client not authenticated to send mail.',
      '552 5.3.4 Message size exceeds fixed maximum message size',
      '550 5.1.1 User unknown',
      '421 4.3.2 Service not available, too many connections',
      '454 4.7.0 Temporary authentication failure',
    ];
    for (const reply of replies) inRussian(adviceFor(Number(reply.slice(0, 3)), reply));
    for (const code of [535, 451, 550, null]) inRussian(adviceFor(code, 'no known words'));
    expect(ru(adviceFor(550, '550 5.1.1 User unknown'))).toBe('Адрес получателя не существует на его почтовом сервере; проверьте адрес.');
    // Connection failures, with the retry sentence the queue adds after them; a host stays as it is.
    const refused = classifySmtpError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:2525'), { code: 'ESOCKET', originalCode: 'ECONNREFUSED' }), '127.0.0.1:2525');
    expect(ru(refused.advice)).toBe('127.0.0.1:2525 отклонил соединение. Проверьте URL и порт, а также брандмауэр и прокси-сервер. Postern повторяет попытки автоматически.');
    const startTls = classifySmtpError(Object.assign(new Error('STARTTLS refused'), { code: 'ETLS', responseCode: 502, response: '502 5.5.1 Unrecognized command', command: 'STARTTLS' }), 'smtp.example');
    inRussian(startTls.advice);
    for (const code of ['ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'EPROTO']) {
      const { reason } = classifyConnectionError(Object.assign(new Error(`failure ${code}`), { code }), 'login.example:443');
      expect(ru(reason), `${code}: ${reason}`).not.toMatch(/\b(The|Check|Could|refused|timed)\b/);
    }
    // Send Test E-Mail's results.
    expect(ru('Not sent: smtp.example:587 refused the message.')).toBe('Не отправлено: smtp.example:587 отклонил сообщение.');
    expect(ru('Not sent: smtp.example:587 could not be reached or the session failed.')).toBe('Не отправлено: smtp.example:587 недоступен, или сеанс завершился ошибкой.');
    expect(ru('Sent: smtp.example:587 accepted the test e-mail from a@example.test to b@example.test.')).toBe('Отправлено: smtp.example:587 принял тестовое письмо от a@example.test для b@example.test.');
    // A provider's own words stay verbatim beside Postern's translated ones.
    expect(ru('Not sent: OAuth 2.0 (Microsoft) has no usable token. AADSTS70008: The refresh token has expired.')).toBe(
      'Не отправлено: у OAuth 2.0 (Microsoft) нет пригодного токена. AADSTS70008: The refresh token has expired.',
    );
    // OAuth provider advice shown with Token Status.
    const { adviceFor: providerAdvice } = await import('../src/oauth/provider-errors.js');
    expect(ru(providerAdvice('microsoft', 'invalid_grant', 'AADSTS70008: The provided authorization code or refresh token has expired')!)).toBe(
      'Срок действия токена обновления истек, так как он долго не использовался. Получите новый код пользователя и войдите снова.',
    );
    for (const [provider, error, description] of [
      ['microsoft', 'invalid_grant', undefined],
      ['microsoft', 'invalid_client', undefined],
      ['microsoft', 'invalid_grant', 'AADSTS7000218: public client'],
      ['microsoft', 'invalid_grant', 'AADSTS65001: consent'],
      ['google', 'invalid_grant', undefined],
      ['google', 'invalid_grant', 'Malformed auth code.'],
      ['google', 'invalid_client', undefined],
    ] as const) {
      inRussian(providerAdvice(provider, error, description)!);
    }
    // Notification results (Notifications page), the receiver's own words verbatim.
    const { describeAnswer } = await import('../src/notify/webhook.js');
    expect(ru(describeAnswer(404, 'Not found. Gone').summary)).toBe(
      'Получатель ответил HTTP 404 Not Found: по этому адресу нет веб-перехватчика. Возможно, он удален (или его рабочий процесс отключен) либо URL неполный. Скопируйте Webhook URL у получателя заново. Ответ получателя: «Not found. Gone».',
    );
    for (const status of [202, 302, 429, 503, 401, 400, 405, 413, 418]) inRussian(describeAnswer(status).summary);
    expect(domainText('en', translator('en'), refused.advice)).toBe(refused.advice);
  });

  test('validation sentences are translated whole, with their values, and part by part when joined', async () => {
    const { domainText } = await import('../src/web/i18n/domain.js');
    const { translator } = await import('../src/web/i18n/index.js');
    const t = translator('ru');
    expect(domainText('ru', t, 'Enter a size from 1 to 150 MB.')).toBe('Введите размер от 1 до 150 МБ.');
    expect(domainText('ru', t, 'The token endpoint must start with https://.')).toBe('Конечная точка токенов: адрес должен начинаться с https://.');
    expect(domainText('ru', t, '10.0.0.1/8: the network address of a /8 is 10.0.0.0 (write 10.0.0.0/8); x: not an IP address or CIDR range (for example 192.168.1.0/24)')).toBe(
      '10.0.0.1/8: сетевой адрес для /8 — 10.0.0.0 (напишите 10.0.0.0/8); x: не IP-адрес и не диапазон CIDR (например, 192.168.1.0/24)',
    );
    expect(domainText('ru', t, 'Something no template knows.')).toBe('Something no template knows.');
    expect(domainText('en', translator('en'), 'Enter a size from 1 to 150 MB.')).toBe('Enter a size from 1 to 150 MB.');
  });
});
