import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { openStore, type Store } from '../store/store.js';
import { WriteBatcher } from './write-batcher.js';

let dir: string;
let store: Store;
let batcher: WriteBatcher;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'postern-batcher-'));
  store = await openStore({ dataDir: dir });
  // A window far longer than the test may take: a write that waited for it would time the test out.
  batcher = new WriteBatcher(store.db, { dialect: store.dialect, databaseFile: store.databaseFile, windowMs: 600_000 });
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

it('an urgent write (a delivered outcome) does not wait for the batch window and takes pending writes with it', async () => {
  const seen: Array<{ name: string; trx: unknown }> = [];
  const op = (name: string) => async (trx: unknown) => {
    seen.push({ name, trx });
  };
  await batcher.run(op('first'), { durable: false }); // after a quiet spell: at once
  const waiting = batcher.run(op('lease'), { durable: false }); // now within the window: waits for it
  const delivered = batcher.run(op('sent'), { durable: true, urgent: true });
  await Promise.all([waiting, delivered]);
  expect(seen.map((s) => s.name)).toEqual(['first', 'lease', 'sent']);
  // One batch: the urgent write started it and the waiting one went with it.
  expect(seen[1]!.trx).toBe(seen[2]!.trx);
  expect(seen[0]!.trx).not.toBe(seen[1]!.trx);
});

it('an urgent write after a quiet spell or within a window commits at once, and durably', async () => {
  for (let i = 0; i < 5; i++) await batcher.run(async () => undefined, { durable: true, urgent: true });
  // Nothing left unsynced: the next durable barrier has nothing to wait for.
  await batcher.whenDurable();
});
