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

  it('keeps Allowed Sender Addresses with the account; an edit counts at once, without a query for unchanged devices', async () => {
    const device = await devices.create('mfp-3', 'senders-password', ['scanner@printers.local', '@contoso.example']);
    expect(device.allowedSenders).toEqual(['scanner@printers.local', '@contoso.example']);
    const signedIn = await devices.authenticate('mfp-3', 'senders-password');
    expect(signedIn?.allowedSenders).toEqual(['scanner@printers.local', '@contoso.example']);
    expect((await devices.list()).find((d) => d.id === device.id)?.allowedSenders).toEqual(['scanner@printers.local', '@contoso.example']);

    // Remembered from the sign-in: the relay's check at MAIL FROM does not read the row again.
    let queries = 0;
    const counting = { ...store, db: store.db.withPlugin({ transformQuery: (args) => (queries++, args.node), transformResult: async (args) => args.result }) };
    const relayView = new DeviceAccounts(counting);
    await relayView.authenticate('mfp-3', 'senders-password');
    const afterAuth = queries;
    expect(await relayView.allowedSenders(device.id)).toEqual(['scanner@printers.local', '@contoso.example']);
    expect(queries).toBe(afterAuth);

    // An edit through the same accounts object replaces the remembered list for the next MAIL FROM.
    await relayView.setAllowedSenders(device.id, []);
    expect(await relayView.allowedSenders(device.id)).toEqual([]);
    expect(await devices.find(device.id)).toMatchObject({ username: 'mfp-3', allowedSenders: [] });
    await relayView.remove(device.id);
    expect(await relayView.allowedSenders(device.id)).toBeUndefined();
  });

  it('runs many checks at once without failing any', async () => {
    await devices.create('mfp-2', 'parallel-password');
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => devices.authenticate('mfp-2', i % 2 ? 'parallel-password' : 'nope-nope-nope')));
    expect(results.map(Boolean)).toEqual([false, true, false, true, false, true]);
  });
});
