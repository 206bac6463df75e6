import { describe, expect, test } from 'vitest';
import { parsePastedAuthorizationResponse } from './authorization-response.js';

const CODE = '4/0AVGzR1Dx-example_code.with~chars';
const ENCODED = '4%2F0AVGzR1Dx-example_code.with~chars';

describe('parsePastedAuthorizationResponse', () => {
  test.each([
    ['the whole URL', `http://127.0.0.1:8080/oauth2/google/callback?state=abc&code=${ENCODED}&scope=https%3A%2F%2Fmail.google.com%2F`],
    ['the URL with the seed layout (code in the middle)', `http://127.0.0.1:8080/oauth2/google/callback?iss=https%3A%2F%2Faccounts.google.com&state=abc&code=${ENCODED}&scope=x`],
    ['the URL in quotes with spaces', `  "http://127.0.0.1:8080/oauth2/google/callback?state=abc&code=${ENCODED}"  `],
    ['the URL without scheme', `127.0.0.1:8080/oauth2/google/callback?state=abc&code=${ENCODED}`],
    ['the URL broken over two lines', `http://127.0.0.1:8080/oauth2/google/callback?state=abc&co\nde=${ENCODED}`],
  ])('%s gives the decoded code and the state', (_name, input) => {
    const result = parsePastedAuthorizationResponse(input);
    expect(result).toMatchObject({ kind: 'code', code: CODE, state: 'abc', source: 'url' });
  });

  test('only the query string', () => {
    expect(parsePastedAuthorizationResponse(`code=${ENCODED}&scope=x`)).toMatchObject({ kind: 'code', code: CODE, state: undefined });
  });

  test('a bare encoded code is decoded exactly once', () => {
    expect(parsePastedAuthorizationResponse(ENCODED)).toMatchObject({ kind: 'code', code: CODE, source: 'code' });
    // A code that decodes to something still containing %xx is not decoded a second time.
    expect(parsePastedAuthorizationResponse('4%252Fabc')).toMatchObject({ kind: 'code', code: '4%2Fabc' });
  });

  test('a bare decoded code is taken as it is, trimmed of quotes and spaces', () => {
    expect(parsePastedAuthorizationResponse(` '${CODE}' `)).toMatchObject({ kind: 'code', code: CODE });
  });

  test('an error redirect is the user refusing, not a code', () => {
    expect(parsePastedAuthorizationResponse('http://127.0.0.1:8080/oauth2/google/callback?error=access_denied&state=abc')).toEqual({
      kind: 'error',
      error: 'access_denied',
      description: undefined,
      state: 'abc',
    });
  });

  test.each([
    ['', /Enter the authorization code/],
    ['   ', /Enter the authorization code/],
    ['http://127.0.0.1:8080/oauth2/google/callback?state=abc', /no code= parameter/],
    ['4%2', /That does not look|broken/],
    ['söme côde', /does not look like an authorization code/],
  ])('%j is refused with a reason', (input, reason) => {
    const result = parsePastedAuthorizationResponse(input);
    expect(result.kind).toBe('invalid');
    expect(result.kind === 'invalid' && result.reason).toMatch(reason);
  });
});
