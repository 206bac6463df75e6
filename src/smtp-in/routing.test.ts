/**
 * Routing against a real (SQLite) store: the order (Sender Routing, device account, Allowed Networks entry,
 * Default), patterns as Allowed Sender Addresses are written, and hostile input.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../store/store.js';
import { DeviceAccounts } from './devices.js';
import { RelaySettings } from './relay-settings.js';
import { parseNetworkAccounts, parseSenderPattern, SendingRoutes } from './routing.js';

let dir: string;
let store: Store;
let routes: SendingRoutes;
let devices: DeviceAccounts;
let defaultAccount = 'microsoft';

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'postern-routing-'));
  store = await openStore({ dataDir: dir });
  const relaySettings = new RelaySettings(store);
  await relaySettings.get(); // the Relay Settings row
  devices = new DeviceAccounts(store);
  routes = new SendingRoutes(store, { relaySettings, devices, defaultAccountId: async () => defaultAccount }, 0);
});

afterEach(async () => {
  defaultAccount = 'microsoft';
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('sending routes', () => {
  it('goes to the Default when nothing else names an account', async () => {
    expect(await routes.resolve({ reversePath: 'a@b.test', remoteAddress: '192.0.2.1' })).toEqual({ accountId: 'microsoft', reason: 'default' });
    defaultAccount = 'google';
    expect((await routes.resolve({ reversePath: '', remoteAddress: '192.0.2.1' })).accountId).toBe('google');
  });

  it('takes a sender rule first (address before domain), then the device account, then the network entry', async () => {
    const scanner = await devices.create('scanner', 'correct horse battery', [], 'microsoft-dev');
    await routes.setNetworkAccounts({ '192.0.2.0/24': 'microsoft-net', '192.0.2.128/25': 'microsoft-net25', '2001:db8::/32': 'google-v6' });
    await routes.setSenderRoute('@example.test', 'google-domain');
    await routes.setSenderRoute('boss@example.test', 'google-boss');

    expect(await routes.resolve({ reversePath: 'Boss@Example.test', deviceId: scanner.id, remoteAddress: '192.0.2.200' })).toEqual({ accountId: 'google-boss', reason: 'sender-address' });
    expect(await routes.resolve({ reversePath: 'other@example.test', deviceId: scanner.id, remoteAddress: '192.0.2.200' })).toEqual({ accountId: 'google-domain', reason: 'sender-domain' });
    expect(await routes.resolve({ reversePath: 'x@elsewhere.test', deviceId: scanner.id, remoteAddress: '192.0.2.200' })).toEqual({ accountId: 'microsoft-dev', reason: 'device' });
    // Without a device account: the most specific network entry that names an account.
    expect(await routes.resolve({ reversePath: 'x@elsewhere.test', remoteAddress: '192.0.2.200' })).toEqual({ accountId: 'microsoft-net25', reason: 'network' });
    expect(await routes.resolve({ reversePath: 'x@elsewhere.test', remoteAddress: '192.0.2.10' })).toEqual({ accountId: 'microsoft-net', reason: 'network' });
    expect(await routes.resolve({ reversePath: 'x@elsewhere.test', remoteAddress: '2001:db8::5' })).toEqual({ accountId: 'google-v6', reason: 'network' });
    expect(await routes.resolve({ reversePath: 'x@elsewhere.test', remoteAddress: '198.51.100.1' })).toEqual({ accountId: 'microsoft', reason: 'default' });
    // A device account without its own account follows the Default, not its network.
    const plain = await devices.create('plain', 'correct horse battery');
    expect(await routes.resolve({ reversePath: 'x@elsewhere.test', deviceId: plain.id, remoteAddress: '192.0.2.10' })).toEqual({ accountId: 'microsoft', reason: 'default' });
    // A device's account counts from its next message.
    await devices.setSendingAccount(plain.id, 'google-later');
    expect((await routes.resolve({ reversePath: 'x@elsewhere.test', deviceId: plain.id, remoteAddress: '192.0.2.10' })).accountId).toBe('google-later');
  });

  it('says where an account is named', async () => {
    await devices.create('scanner', 'correct horse battery', [], 'microsoft-2');
    await routes.setNetworkAccounts({ '10.0.0.0/8': 'microsoft-2' });
    await routes.setSenderRoute('@example.test', 'microsoft-2');
    expect(await routes.usesOf('microsoft-2')).toEqual({ isDefault: false, devices: ['scanner'], networks: ['10.0.0.0/8'], senderRoutes: ['@example.test'] });
    expect((await routes.usesOf('microsoft')).isDefault).toBe(true);
  });

  it('parses sender patterns as Allowed Sender Addresses are written, and refuses the rest', () => {
    expect(parseSenderPattern(' Boss@Example.TEST ')).toEqual({ ok: true, pattern: 'boss@example.test' });
    expect(parseSenderPattern('@bücher.example')).toEqual({ ok: true, pattern: '@xn--bcher-kva.example' });
    for (const bad of ['', 'example.test', 'a@@b.test', 'a b@c.test', '@', 'x@-bad-.test', 'a@b.test\r\nRCPT TO:<x@y>', 'a'.repeat(300) + '@b.test']) {
      expect(parseSenderPattern(bad).ok, bad).toBe(false);
    }
  });

  it('never throws on any pattern or stored map, and a routed sender finds its rule', async () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (text) => {
        const parsed = parseSenderPattern(text);
        if (parsed.ok) expect(parsed.pattern).not.toMatch(/[\s\x00-\x1f\x7f]/);
      }),
    );
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (text) => void parseNetworkAccounts(text)));
    expect(parseNetworkAccounts('{"10.0.0.0/8": 5, "x": "", "192.0.2.0/24": "a"}')).toEqual({ '192.0.2.0/24': 'a' });
    expect(parseNetworkAccounts('[1,2]')).toEqual({});
  });
});
