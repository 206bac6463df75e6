/**
 * The error catalogue (src/errors.ts) kept in step with docs/errors.md and with the code, as Fastify keeps
 * its FST_ERR_* codes with their documentation: every code is documented, every documented code exists,
 * every code is raised or logged somewhere in the product, and no `POSTERN_…` code string is made up outside
 * the catalogue.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as oauth from 'oauth4webapi';
import { describe, expect, test } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { toProviderError } from '../src/oauth/provider-errors.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

function sourceFiles(dir: string): string[] {
  const files: string[] = [];
  for (const name of readdirSync(join(ROOT, dir))) {
    const path = join(dir, name);
    if (statSync(join(ROOT, path)).isDirectory()) files.push(...sourceFiles(path));
    else if (name.endsWith('.ts')) files.push(path);
  }
  return files;
}

const CODES = Object.values(ErrorCodes) as string[];
const CATALOGUE = new Set(CODES);
const isTest = (path: string) => path.endsWith('.test.ts');

/** The environment settings, as the README's Configuration table lists them: names, not error codes. */
const SETTINGS = new Set([...read('README.md').matchAll(/^\| `(POSTERN_[A-Z0-9_]+)`/gm)].map((m) => m[1]!));

/** A `POSTERN_…` name at the start of a string literal ('…', "…" or `…`). */
const CODE_LITERAL = /['"`](POSTERN_[A-Z0-9_]*[A-Z0-9])(?![A-Z0-9_])/g;

describe('the error catalogue', () => {
  test('every code is POSTERN_<AREA>_<WHAT>, named by its key, and unique', () => {
    for (const [key, code] of Object.entries(ErrorCodes)) {
      expect(code, key).toMatch(/^POSTERN_[A-Z]+_[A-Z0-9_]+$/);
      expect(code, key).toBe(`POSTERN_${key}`);
    }
    expect(CATALOGUE.size).toBe(CODES.length);
  });

  test('every code has its section in docs/errors.md, and every section there is a code', () => {
    const doc = read('docs/errors.md');
    const sections = [...doc.matchAll(/^### (\S+)\s*$/gm)].map((m) => m[1]!);
    const missing = CODES.filter((code) => !sections.includes(code));
    expect(missing, 'codes in src/errors.ts without a section in docs/errors.md').toEqual([]);
    const unknown = sections.filter((name) => !CATALOGUE.has(name));
    expect(unknown, 'sections in docs/errors.md that are not codes in src/errors.ts').toEqual([]);
    const repeated = sections.filter((name, index) => sections.indexOf(name) !== index);
    expect(repeated, 'codes with more than one section in docs/errors.md').toEqual([]);
    // A code named anywhere in the text (advice pointing at another code) must exist too.
    const named = [...doc.matchAll(/\bPOSTERN_[A-Z0-9_]*[A-Z0-9]\b/g)].map((m) => m[0]).filter((name) => !SETTINGS.has(name));
    expect([...new Set(named.filter((name) => !CATALOGUE.has(name)))], 'names in docs/errors.md that are neither codes nor settings').toEqual([]);
  });

  test('every code is used by the product (outside src/errors.ts and the tests)', () => {
    const product = sourceFiles('src')
      .filter((path) => !isTest(path) && path !== join('src', 'errors.ts'))
      .map((path) => read(path))
      .join('\n');
    const unused = Object.entries(ErrorCodes)
      .filter(([key, code]) => !new RegExp(`\\bErrorCodes\\.${key}\\b`).test(product) && !product.includes(`'${code}'`))
      .map(([, code]) => code);
    expect(unused, 'codes that nothing raises or logs: use them where their situation arises, or remove them').toEqual([]);
  });

  test('no POSTERN_… code string in src/ is outside the catalogue', () => {
    const strays: string[] = [];
    for (const path of sourceFiles('src')) {
      const where = relative(ROOT, join(ROOT, path)).split('\\').join('/');
      if (where === 'src/errors.ts') continue;
      for (const match of read(path).matchAll(CODE_LITERAL)) {
        const name = match[1]!;
        if (CATALOGUE.has(name) || SETTINGS.has(name) || name.startsWith('POSTERN_TEST_')) continue;
        strays.push(`${where}: ${name}`);
      }
    }
    expect(strays, 'code strings that are not in src/errors.ts (add them there, with docs/errors.md)').toEqual([]);
  });

  test('the README lists the settings this test tells apart from codes', () => {
    // If the table's layout changed, SETTINGS would be empty and every setting would count as a stray code.
    expect(SETTINGS.has('POSTERN_DATA_DIR')).toBe(true);
    expect(SETTINGS.has('POSTERN_SMTP_PORT')).toBe(true);
    for (const setting of SETTINGS) expect(CATALOGUE.has(setting), setting).toBe(false);
  });
});

describe('an authorization server failure is classified with its code', () => {
  test('an answer that is no OAuth answer is POSTERN_OAUTH_INVALID_RESPONSE, not a provider error', () => {
    const thrown = new oauth.OperationProcessingError('"response" content-type must be application/json', { cause: new Response('<html>', { status: 200 }) });
    expect(toProviderError('microsoft', thrown, 'login.example.test')).toMatchObject({ code: ErrorCodes.OAUTH_INVALID_RESPONSE, kind: 'definitive' });
  });

  test('a server that is busy is POSTERN_OAUTH_CONNECTION_FAILED', () => {
    const thrown = new oauth.OperationProcessingError('unexpected HTTP status', { cause: new Response('', { status: 503 }) });
    expect(toProviderError('microsoft', thrown, 'login.example.test')).toMatchObject({ code: ErrorCodes.OAUTH_CONNECTION_FAILED, kind: 'transient' });
  });

  test('a server that cannot be reached is POSTERN_OAUTH_CONNECTION_FAILED', () => {
    const thrown = new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
    expect(toProviderError('google', thrown, 'oauth2.example.test')).toMatchObject({ code: ErrorCodes.OAUTH_CONNECTION_FAILED });
  });
});

