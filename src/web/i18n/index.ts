/**
 * The Remote UI's languages: English (the seed's labels, verbatim) and Russian (the seed's own language).
 *
 * Every string a page shows comes from a catalogue (en.ts, ru.ts) through `t(key, params)`; the English
 * catalogue's keys are the key type, so a key missing from the Russian catalogue, or a key no catalogue has,
 * fails the type check. The language is the `lang` cookie when it names one, else the best of
 * Accept-Language (q-values honoured), else English. Dates and numbers are formatted with Intl for it.
 * The JSON API and the logs stay English: only the web layer translates.
 */
import { en, type MessageKey, type Messages } from './en.js';
import { ru } from './ru.js';

export type { MessageKey, Messages } from './en.js';

export const LANGUAGES = ['en', 'ru'] as const;
export type Lang = (typeof LANGUAGES)[number];
export const DEFAULT_LANG: Lang = 'en';
export const LANG_COOKIE = 'lang';

export const CATALOGUES: Record<Lang, Messages> = { en, ru };

/** The languages' own names, for the switch (each in itself). */
export const LANGUAGE_NAMES: Record<Lang, string> = { en: 'English', ru: 'Русский' };

export type Params = Record<string, string | number>;
export type Translate = (key: MessageKey, params?: Params) => string;

export function isLang(value: unknown): value is Lang {
  return typeof value === 'string' && (LANGUAGES as readonly string[]).includes(value);
}

/** Fills `{name}` placeholders; a placeholder without a value stays as it is (a visible mistake, not a crash). */
export function interpolate(template: string, params?: Params): string {
  if (!params) return template;
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => (name in params ? String(params[name]) : whole));
}

export function translator(lang: Lang): Translate {
  const messages = CATALOGUES[lang];
  return (key, params) => interpolate(messages[key] ?? en[key] ?? key, params);
}

/**
 * The best supported language in an Accept-Language header (RFC 9110 section 12.5.4): ranges by q-value,
 * highest first, ties in the order given; `ru-RU` matches `ru`; `*` means the default. Undefined: none fits.
 */
export function fromAcceptLanguage(header: string | undefined): Lang | undefined {
  if (!header) return undefined;
  const ranges = header
    .split(',')
    .slice(0, 50)
    .map((part, index) => {
      const [range = '', ...attrs] = part.trim().split(';');
      let q = 1;
      for (const attr of attrs) {
        if (!/^\s*q\s*=/i.test(attr)) continue;
        // A q-value that is not one (RFC 9110 section 12.4.2) leaves the range out.
        const match = /^\s*q\s*=\s*([01](\.\d{0,3})?)\s*$/i.exec(attr);
        q = match ? Number(match[1]) : 0;
      }
      return { tag: range.trim().toLowerCase(), q: Number.isFinite(q) ? q : 0, index };
    })
    .filter((range) => range.tag && range.q > 0)
    .sort((a, b) => b.q - a.q || a.index - b.index);
  for (const { tag } of ranges) {
    if (tag === '*') return DEFAULT_LANG;
    const primary = tag.split('-')[0];
    if (isLang(primary)) return primary;
  }
  return undefined;
}

/** The language of a request: the cookie, else Accept-Language, else English. */
export function negotiate(cookie: unknown, acceptLanguage: string | undefined): Lang {
  if (isLang(cookie)) return cookie;
  return fromAcceptLanguage(acceptLanguage) ?? DEFAULT_LANG;
}

const LOCALES: Record<Lang, string> = { en: 'en-GB', ru: 'ru-RU' };

/** Dates and numbers for the language. Times are shown in UTC (the server's logs are in UTC too). */
export interface Formatters {
  /** "2026-12-02 04:25 UTC" style, in the language's own order and words. */
  dateTime(ms: number | Date | null | undefined): string;
  date(ms: number | Date | null | undefined): string;
  number(value: number): string;
}

export function formatters(lang: Lang, t: Translate): Formatters {
  const locale = LOCALES[lang];
  const dateTime = new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short', timeZone: 'UTC' });
  const date = new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeZone: 'UTC' });
  const number = new Intl.NumberFormat(locale);
  return {
    dateTime: (ms) => (ms === null || ms === undefined || ms === 0 ? t('common.never') : `${dateTime.format(ms)} UTC`),
    date: (ms) => (ms === null || ms === undefined || ms === 0 ? t('common.never') : date.format(ms)),
    number: (value) => number.format(value),
  };
}
