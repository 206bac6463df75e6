import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../store/store.js';
import { DeviceAccounts } from './devices.js';

let dir: string;
let store: Store;
let devices: DeviceAccounts;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'postern-devices-'));
  store = await openStore({ dataDir: dir });
  devices = new DeviceAccounts(store);
});

afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('device accounts', () => {
  it('checks passwords, remembers a good one briefly, and forgets it when the password changes', async () => {
    const device = await devices.create('mfp-1', 'first-password-1');
    expect(await devices.authenticate('mfp-1', 'first-password-1')).toMatchObject({ username: 'mfp-1' });
    const started = performance.now();
    expect(await devices.authenticate('mfp-1', 'first-password-1')).toBeDefined();
    const cachedMs = performance.now() - started;
    expect(await devices.authenticate('mfp-1', 'wrong-password')).toBeUndefined();
    expect(await devices.authenticate('nobody', 'first-password-1')).toBeUndefined();
    await devices.setPassword(device.id, 'second-password-2');
    expect(await devices.authenticate('mfp-1', 'first-password-1')).toBeUndefined();
    expect(await devices.authenticate('mfp-1', 'second-password-2')).toBeDefined();
    await devices.remove(device.id);
    expect(await devices.authenticate('mfp-1', 'second-password-2')).toBeUndefined();
    // The remembered check skips scrypt (tens of milliseconds); not asserted as a time, only reported.
    console.info(`cached device check: ${cachedMs.toFixed(2)} ms`);
  });

  it('runs many checks at once without failing any', async () => {
    await devices.create('mfp-2', 'parallel-password');
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => devices.authenticate('mfp-2', i % 2 ? 'parallel-password' : 'nope-nope-nope')));
    expect(results.map(Boolean)).toEqual([false, true, false, true, false, true]);
  });
});
