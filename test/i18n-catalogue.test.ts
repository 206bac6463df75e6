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
    const { DOMAIN_KEYS } = await import('../src/web/i18n/domain.js');
    const sources = files(join(WEB, '..'), ['.ts'])
      .filter((path) => !path.includes(join('web', 'i18n')))
      .map((path) => readFileSync(path, 'utf8'))
      .join('\n');
    const stale = DOMAIN_KEYS.filter((key) =>
      en[key]
        .split(/\{\w+\}/)
        .map((part) => part.trim())
        .filter((part) => part.length >= 6)
        .some((part) => !sources.includes(part)),
    );
    expect(stale).toEqual([]);
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
