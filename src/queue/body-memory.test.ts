import { afterEach, expect, test } from 'vitest';
import { BODY_BYTES_PER_COLLECTION, bodyBytesStreamed } from './body-memory.js';

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
