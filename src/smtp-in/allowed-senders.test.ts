import { describe, expect, it } from 'vitest';
import { isAllowedSender, MAX_ALLOWED_SENDERS, parseAllowedSenders } from './allowed-senders.js';

describe('parseAllowedSenders', () => {
  it('reads addresses and @domains, one per line (commas and semicolons too), lower-cased and without duplicates', () => {
    expect(parseAllowedSenders('Scanner@Printers.local\n\n  @Contoso.Example , fax@printers.local; scanner@printers.LOCAL\n')).toEqual({
      entries: ['scanner@printers.local', '@contoso.example', 'fax@printers.local'],
      errors: [],
    });
    expect(parseAllowedSenders('')).toEqual({ entries: [], errors: [] });
    expect(parseAllowedSenders("o'brien+scan@mfp\n@bücher.example\nträger@xn--bcher-kva.example").entries).toEqual([
      "o'brien+scan@mfp",
      '@bücher.example',
      'träger@xn--bcher-kva.example',
    ]);
  });

  it('names every entry that is neither, with why', () => {
    const { entries, errors } = parseAllowedSenders('ok@example.test\nnot an address\n@\na@b@c\nexample.com\nuser@\n.dot@example.test\nuser@exa mple\nuser@-bad-.example\n"quoted"@example.test');
    expect(entries).toEqual(['ok@example.test']);
    expect(errors).toEqual([
      'not an address: not an e-mail address or @domain',
      '@: a domain must follow the @ (for example @example.com)',
      'a@b@c: more than one @ (write one address per line)',
      'example.com: not an e-mail address (for the whole domain write @example.com)',
      'user@: a domain must follow the @',
      '.dot@example.test: the part before the @ is not a valid local part',
      'user@exa mple: not an e-mail address or @domain',
      'user@-bad-.example: -bad-.example is not a domain name',
      '"quoted"@example.test: not an e-mail address or @domain',
    ]);
  });

  it(`refuses more than ${MAX_ALLOWED_SENDERS} entries`, () => {
    const text = Array.from({ length: MAX_ALLOWED_SENDERS + 1 }, (_, i) => `device-${i}@example.test`).join('\n');
    expect(parseAllowedSenders(text).errors).toEqual([`${MAX_ALLOWED_SENDERS + 1} entries: at most ${MAX_ALLOWED_SENDERS}; list a whole domain as @domain instead`]);
  });
});

describe('isAllowedSender', () => {
  const list = parseAllowedSenders('scanner@printers.local\n@contoso.example\n@bücher.example').entries;

  it('an empty list allows every sender, the null reverse-path included', () => {
    expect(isAllowedSender('anyone@anywhere.example', [])).toBe(true);
    expect(isAllowedSender('', [])).toBe(true);
  });

  it('matches exact addresses and whole domains, case-insensitively', () => {
    expect(isAllowedSender('scanner@printers.local', list)).toBe(true);
    expect(isAllowedSender('SCANNER@Printers.Local', list)).toBe(true);
    expect(isAllowedSender('any@contoso.example', list)).toBe(true);
    expect(isAllowedSender('ANY@CONTOSO.EXAMPLE', list)).toBe(true);
    expect(isAllowedSender('other@printers.local', list)).toBe(false);
    expect(isAllowedSender('scanner@printers.local.evil.example', list)).toBe(false);
    // A whole domain is that domain only, not its subdomains, and not a suffix.
    expect(isAllowedSender('any@sub.contoso.example', list)).toBe(false);
    expect(isAllowedSender('any@evilcontoso.example', list)).toBe(false);
  });

  it('an internationalized domain matches in either form (smtp-server hands over U-labels)', () => {
    expect(isAllowedSender('scan@Bücher.example', list)).toBe(true);
    expect(isAllowedSender('scan@xn--bcher-kva.example', list)).toBe(true);
  });

  it('a list refuses the null reverse-path <> and anything without a domain', () => {
    expect(isAllowedSender('', list)).toBe(false);
    expect(isAllowedSender('postmaster', list)).toBe(false);
    expect(isAllowedSender('@contoso.example', list)).toBe(false);
  });
});
