/**
 * Pacing: the sliding window's arithmetic, then the window in the store (SQLite here; two instances on one
 * PostgreSQL database in test/pacing-postgres.test.ts). The clock is injected: no test waits for a minute.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../store/store.js';
import { decideStarts, StorePacer, WINDOW_MS } from './pacing.js';

describe('decideStarts (sliding 60 s window)', () => {
  it('allows `limit` starts per minute, then says how long to wait', () => {
    const starts = Array.from({ length: 30 }, (_, i) => i * 100); // 0, 100, … 2900
    expect(decideStarts(starts.slice(0, 29), 2_900, 30, 1)).toEqual({ grant: 1, waitMs: 0 });
    expect(decideStarts(starts, 3_000, 30, 1)).toEqual({ grant: 0, waitMs: 60_000 - 3_000 + 1 });
    // The start at 0 has left the window; the one at 100 has not.
    expect(decideStarts(starts, 60_001, 30, 5)).toEqual({ grant: 1, waitMs: 100 + 60_000 - 60_001 + 1 });
  });

  it('0 means unlimited', () => {
    expect(decideStarts(Array.from({ length: 1000 }, () => 0), 0, 0, 50)).toEqual({ grant: 50, waitMs: 0 });
  });

  it('grants what is left of the window, and nothing when the limit was lowered below what it holds', () => {
    expect(decideStarts([0, 10, 20], 30, 4, 3)).toEqual({ grant: 1, waitMs: 60_001 - 30 });
    expect(decideStarts([0, 10, 20], 30, 2, 1)).toEqual({ grant: 0, waitMs: 10 + 60_001 - 30 });
  });
});

describe('StorePacer on SQLite', () => {
  let dir: string;
  let store: Store;
  let now: number;
  let pacer: StorePacer;
  const rows = async () => (await store.db.selectFrom('pacing_starts').selectAll().execute()).length;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'postern-pacing-'));
    store = await openStore({ dataDir: dir });
    now = 1_000_000;
    pacer = new StorePacer(store, () => now);
  });

  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps to the limit in a sliding minute and says how long to wait', async () => {
    for (let i = 0; i < 30; i++) {
      expect((await pacer.take('microsoft', 30, 1)).slots).toHaveLength(1);
      now += 100;
    }
    expect(await pacer.take('microsoft', 30, 1)).toEqual({ slots: [], waitMs: 60_000 - 3_000 + 1 });
    now += 60_000 - 3_000 + 1;
    const grant = await pacer.take('microsoft', 30, 5);
    expect(grant.slots).toHaveLength(1);
    expect(grant.waitMs).toBe(100);
    expect((await pacer.take('google', 30, 30)).slots).toHaveLength(30);
  });

  it('takes several starts at once, as many as the window leaves', async () => {
    expect((await pacer.take('microsoft', 30, 25)).slots).toHaveLength(25);
    const grant = await pacer.take('microsoft', 30, 10);
    expect(grant.slots).toHaveLength(5);
    expect(grant.waitMs).toBe(WINDOW_MS + 1);
  });

  it('a start given back frees its slot', async () => {
    const [slot] = (await pacer.take('microsoft', 1, 1)).slots;
    expect((await pacer.take('microsoft', 1, 1)).slots).toEqual([]);
    await pacer.giveBack([slot!]);
    expect((await pacer.take('microsoft', 1, 1)).slots).toHaveLength(1);
  });

  it('without a limit grants everything and never asks the database', async () => {
    expect((await pacer.take('microsoft', 0, 50)).slots).toHaveLength(50);
    expect(await rows()).toBe(0);
    const closedDir = mkdtempSync(join(tmpdir(), 'postern-pacing-closed-'));
    const closed = await openStore({ dataDir: closedDir });
    await closed.close();
    try {
      const offline = new StorePacer(closed);
      const grant = await offline.take('microsoft', 0, 3);
      expect(grant.slots).toHaveLength(3);
      await offline.giveBack(grant.slots);
    } finally {
      rmSync(closedDir, { recursive: true, force: true });
    }
  });

  it('drops starts that left the window, so the table stays small', async () => {
    for (let minute = 0; minute < 10; minute++) {
      for (let i = 0; i < 40; i++) {
        await pacer.take('microsoft', 30, 1);
        now += 1_500;
      }
    }
    expect(await rows()).toBeLessThanOrEqual(30);
  });

  it('concurrent takes of two pacers on one store never exceed the limit', async () => {
    const other = new StorePacer(store, () => now);
    const grants = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? pacer : other).take('microsoft', 30, 1)));
    expect(grants.reduce((sum, grant) => sum + grant.slots.length, 0)).toBe(30);
    expect(await rows()).toBe(30);
  });
});
