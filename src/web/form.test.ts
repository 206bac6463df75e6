import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { button, checkbox, formBody, idParams, ignoredWhenInvalid, invalidInputMessage, text } from './form.js';

const sample = formBody({ name: text(8), box: checkbox(), cancel: button(), next: ignoredWhenInvalid(z.string().max(4)) });

/** The issues as Fastify hands them to the error handler (fastify-type-provider-zod's shape). */
function issuesOf(value: unknown) {
  const result = sample.safeParse(value);
  if (result.success) throw new Error('expected a failure');
  return result.error.issues.map((issue) => ({ keyword: issue.code, instancePath: issue.path.length ? `/${issue.path.join('/')}` : '', schemaPath: '', params: {}, message: issue.message }));
}

describe('form fields', () => {
  it('an absent text field reads as empty; a check box is on only when "on"; a button is pressed when "1"', () => {
    expect(sample.parse({})).toEqual({ name: '', box: false, cancel: false });
    expect(sample.parse({ name: 'abc', box: 'on', cancel: '1', next: '/a' })).toEqual({ name: 'abc', box: true, cancel: true, next: '/a' });
    expect(sample.parse({ box: '' }).box).toBe(false);
  });

  it('a value that falls back is dropped, not refused', () => {
    expect(sample.parse({ next: ['/a', '/b'] }).next).toBeUndefined();
    expect(sample.parse({ next: '/toolong' }).next).toBeUndefined();
  });

  it('a repeated key, an oversized value, a check box with another value are refused', () => {
    expect(sample.safeParse({ name: ['a', 'b'] }).success).toBe(false);
    expect(sample.safeParse({ name: '123456789' }).success).toBe(false);
    expect(sample.safeParse({ box: 'yes' }).success).toBe(false);
    expect(sample.safeParse({ cancel: 'on' }).success).toBe(false);
  });

  it('ids are UUIDs', () => {
    expect(idParams.safeParse({ id: 'not-a-uuid' }).success).toBe(false);
    expect(idParams.safeParse({ id: '0b6f1f5e-4a5e-4c1e-9d7a-2f1f3c4b5a69' }).success).toBe(true);
  });
});

describe('invalidInputMessage', () => {
  it('names the fields and what is wrong, never the values', () => {
    const message = invalidInputMessage('body', issuesOf({ name: ['hunter2', 'x'], box: 'secret-value' }));
    expect(message).toBe('The form was not accepted: name was sent more than once; box is a check box: "on" or absent. Go back, reload the page and try again.');
    expect(message).not.toContain('hunter2');
    expect(message).not.toContain('secret-value');
  });

  it('says which part of the request was wrong', () => {
    expect(invalidInputMessage('params', [{ keyword: 'invalid_format', instancePath: '/id', schemaPath: '', params: {}, message: 'is not an id Postern gave out' }])).toBe(
      'The address of this page is not valid: id is not an id Postern gave out. Go back, reload the page and try again.',
    );
    expect(invalidInputMessage('body', issuesOf(undefined))).toBe('The form was not accepted: the request is not a form. Go back, reload the page and try again.');
  });

  it('lists at most five problems', () => {
    const issues = Array.from({ length: 7 }, (_, i) => ({ keyword: 'too_big', instancePath: `/f${i}`, schemaPath: '', params: {}, message: 'is too long' }));
    expect(invalidInputMessage('body', issues)).toContain('f4 is too long (and 2 more).');
  });
});
