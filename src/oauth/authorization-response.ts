/**
 * Reading what the administrator pastes into **Authorization Code** (seed, Google step 10): either the bare
 * code or the whole URL from the browser's error page after the loopback redirect. Pure functions, so every
 * shape people actually paste is unit-tested (docs/protocol.md §2.2).
 *
 * Google's codes start with `4/`, which appears URL-encoded (`4%2F…`) in the redirect URL. Decoding must
 * happen exactly once: an encoded code is "Malformed auth code." at the token endpoint, and decoding twice
 * would corrupt codes that contain `%`.
 */

export type PastedAuthorizationResponse =
  /** A code (and, when a URL was pasted, its state and other parameters) ready for the token request. */
  | { kind: 'code'; code: string; state: string | undefined; parameters: URLSearchParams; source: 'url' | 'code' }
  /** The redirect carried an error, e.g. the user clicked Cancel at Google (access_denied). */
  | { kind: 'error'; error: string; description: string | undefined; state: string | undefined }
  /** Nothing usable was pasted. */
  | { kind: 'invalid'; reason: string };

const QUOTES = /^["'`“”‘’<\s]+|["'`“”‘’>\s]+$/g;

function fromParameters(parameters: URLSearchParams, source: 'url' | 'code'): PastedAuthorizationResponse {
  const error = parameters.get('error');
  if (error) {
    return {
      kind: 'error',
      error,
      description: parameters.get('error_description') ?? undefined,
      state: parameters.get('state') ?? undefined,
    };
  }
  const code = parameters.get('code')?.trim();
  if (!code) {
    return {
      kind: 'invalid',
      reason: 'The pasted URL contains no code= parameter. Copy the whole address from the browser after signing in, or only the part after code=.',
    };
  }
  return { kind: 'code', code, state: parameters.get('state') ?? undefined, parameters, source };
}

export function parsePastedAuthorizationResponse(input: string): PastedAuthorizationResponse {
  const text = input.replace(QUOTES, '').replace(/\s+/g, '');
  if (text === '') return { kind: 'invalid', reason: 'Enter the authorization code, or paste the whole URL shown after signing in.' };

  // A whole URL (http://127.0.0.1:8080/oauth2/google/callback?state=…&code=…&scope=…), with or without scheme.
  const queryStart = text.indexOf('?');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text) || queryStart > 0) {
    const query = queryStart >= 0 ? text.slice(queryStart + 1).split('#')[0]! : '';
    const fragment = text.includes('#') ? text.slice(text.indexOf('#') + 1) : '';
    const parameters = new URLSearchParams(query);
    if (!parameters.has('code') && !parameters.has('error') && fragment) {
      return fromParameters(new URLSearchParams(fragment), 'url');
    }
    return fromParameters(parameters, 'url');
  }

  // Only the query part: "code=4%2F0A…&scope=…" or "state=…&code=…".
  if (/(^|&)(code|error)=/.test(text)) return fromParameters(new URLSearchParams(text.replace(/^[?&#]/, '')), 'url');

  // A bare code: decode once when it still carries URL encoding (4%2F… → 4/…).
  let code = text;
  if (code.includes('%')) {
    try {
      code = decodeURIComponent(code);
    } catch {
      return { kind: 'invalid', reason: 'The code contains a broken %-escape. Paste the whole URL instead.' };
    }
  }
  if (!/^[\x21-\x7e]+$/.test(code)) {
    return { kind: 'invalid', reason: 'That does not look like an authorization code. Paste the whole URL shown after signing in.' };
  }
  const parameters = new URLSearchParams({ code });
  return { kind: 'code', code, state: undefined, parameters, source: 'code' };
}
