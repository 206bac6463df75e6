/**
 * The Remote UI's request schemas: the pieces every route's `params`, `querystring` and `body` are made of,
 * and the one sentence an administrator reads when a request does not match them.
 *
 * Form bodies arrive as application/x-www-form-urlencoded strings (@fastify/formbody), so every field is a
 * string, a check box is "on" or absent, and a key sent twice arrives as an array. The schemas only say what
 * a form of ours can send: text of a sane length, one value per name. What a value means (a user name, a
 * port, a network) is checked by the domain's own validation after them, so that the page keeps showing its
 * field-level messages; a request no form of ours sends (a repeated key, a megabyte in a user name field, a
 * malformed id in the address) gets the error page instead, with POSTERN_WEB_INVALID_INPUT in the log.
 */
import { z } from 'zod';
import type { FastifySchemaValidationError } from 'fastify';
import { translator, type MessageKey, type Translate } from './i18n/index.js';

/** A single-line field: names, passwords, host names, ports, the value of a select. */
export const LINE_MAX = 4096;
/** A URL field (endpoints, the Webhook URL) or a pasted redirect address. */
export const URL_MAX = 16 * 1024;
/** A text area with one entry per line (networks, sender addresses). */
export const LIST_MAX = 64 * 1024;
/** PEM text: a CA bundle can be large; the request body limit (1 MiB) is the real bound. */
export const PEM_MAX = 1024 * 1024;

const notText = (input: unknown) => (Array.isArray(input) ? 'was sent more than once' : input === undefined ? 'is missing' : 'is not text');

/** A text field; absent reads as empty, as an empty field does. */
export function text(max: number = LINE_MAX) {
  return z
    .string({ error: (issue) => notText(issue.input) })
    .max(max, { error: `is longer than ${max} characters` })
    .default('');
}

/** A check box (`value="on"`): on when sent, off when absent (or sent empty, as some clients do). */
export function checkbox() {
  return z
    .enum(['on', ''], { error: (issue) => (Array.isArray(issue.input) ? 'was sent more than once' : 'is a check box: "on" or absent') })
    .optional()
    .transform((value) => value === 'on');
}

/** A submit button that names itself (`name="cancel" value="1"`): pressed when sent. */
export function button() {
  return z
    .literal('1', { error: (issue) => (Array.isArray(issue.input) ? 'was sent more than once' : 'is a button: "1" or absent') })
    .optional()
    .transform((value) => value === '1');
}

/**
 * A value that falls back to nothing when it is not usable, rather than refusing the request: a page to go
 * to after login, a filter in the address. What the fallback is, the handler says.
 */
export function ignoredWhenInvalid<T extends z.ZodType>(schema: T) {
  return schema.optional().catch(undefined);
}

/** An id in the address: Postern's ids are UUIDs. */
export const idParams = z.object({ id: z.uuid({ error: 'is not an id Postern gave out' }) });

/** A form: the fields it has (anything else it holds, such as `_csrf`, is dropped after the CSRF check). */
export function formBody<T extends z.ZodRawShape>(shape: T) {
  return z.object(shape, { error: 'is not a form' });
}

/** No fields: a form with only its CSRF token, or a page without parameters (extra ones are ignored). */
export const none = z.object({}, { error: 'is not a form' });

const PARTS: Record<string, MessageKey> = {
  body: 'form.invalid.body',
  querystring: 'form.invalid.querystring',
  params: 'form.invalid.params',
  headers: 'form.invalid.headers',
};

/**
 * The sentence the error page shows for a request that failed its schema. It names the fields and what is
 * wrong with them, never the values (a password field may be among them).
 */
export function invalidInputMessage(part: string | undefined, issues: readonly FastifySchemaValidationError[], t: Translate = translator('en')): string {
  const problems = issues.slice(0, 5).map((issue) => {
    const field = issue.instancePath.replace(/^\//, '').replace(/\//g, '.');
    return `${field || 'the request'} ${issue.message ?? 'is not valid'}`;
  });
  const more = issues.length > 5 ? t('form.invalid.more', { count: issues.length - 5 }) : '';
  return t('form.invalid.sentence', { part: t(PARTS[part ?? ''] ?? 'form.invalid.headers'), problems: [...new Set(problems)].join('; '), more });
}
