import { afterEach, expect, test } from 'vitest';
import { BODY_BYTES_PER_COLLECTION, bodyBytesStreamed, DATABASE_BODY_BYTES_PER_FULL_COLLECTION, databaseBodyBytes } from './body-memory.js';

const global = globalThis as { gc?: unknown };
const original = global.gc;
afterEach(() => {
  global.gc = original;
});

test('asks for one scavenge per BODY_BYTES_PER_COLLECTION body bytes, in and out together', () => {
  const calls: unknown[] = [];
  global.gc = (options: unknown) => calls.push(options);
  // Start from a fresh count: whatever earlier calls left is used up first.
  bodyBytesStreamed(BODY_BYTES_PER_COLLECTION);
  calls.length = 0;
  const chunk = 64 * 1024;
  for (let sent = 0; sent < 3 * BODY_BYTES_PER_COLLECTION; sent += chunk) bodyBytesStreamed(chunk);
  expect(calls).toEqual([{ type: 'minor' }, { type: 'minor' }, { type: 'minor' }]);
});

test('does nothing when node runs without --expose-gc', () => {
  global.gc = undefined;
  expect(() => bodyBytesStreamed(10 * BODY_BYTES_PER_COLLECTION)).not.toThrow();
});

test('asks for one full collection per DATABASE_BODY_BYTES_PER_FULL_COLLECTION database body bytes', () => {
  const calls: unknown[] = [];
  global.gc = (options: unknown) => calls.push(options);
  databaseBodyBytes(DATABASE_BODY_BYTES_PER_FULL_COLLECTION);
  calls.length = 0;
  const chunk = 256 * 1024;
  for (let sent = 0; sent < 2 * DATABASE_BODY_BYTES_PER_FULL_COLLECTION; sent += chunk) databaseBodyBytes(chunk);
  expect(calls).toEqual([undefined, undefined]);
});
