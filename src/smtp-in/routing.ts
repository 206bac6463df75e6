/**
 * Which sending account a message goes through, decided once, when the relay accepts it, and stored with it
 * (queue_messages.account_id): a message is never sent through an account it was not routed to.
 *
 * The order, first match wins:
 *   1. Sender Routing: the envelope sender's exact address, then its domain (`@domain`);
 *   2. the signed-in device account's Sending Account;
 *   3. the Allowed Networks entry the device sends from (the most specific entry that names an account);
 *   4. the Default account.
 *
 * Inputs: sender_routes (this module's table), Relay Settings' network_accounts and the Default (E-Mail
 * Settings), read through a short cache that a change through this process or one seen from another instance
 * drops (`forget()`); a device's Sending Account, read with each of its messages (devices.ts).
 */
import { randomUUID } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import type { Store } from '../store/store.js';
import type { DeviceAccounts } from './devices.js';
import type { RelaySettings } from './relay-settings.js';
import { senderEntryError, senderKey } from './allowed-senders.js';
import { isAllowed, parseNetworks } from './networks.js';

export const MAX_SENDER_ROUTES = 500;

export interface SenderRoute {
  id: string;
  /** `user@domain` or `@domain`, lower case. */
  pattern: string;
  accountId: string;
  createdAt: number;
}

/** What the relay knows of a message when it routes it. */
export interface RouteInput {
  /** MAIL FROM ('' for the null sender). */
  reversePath: string;
  /** The signed-in device account, if any. */
  deviceId?: string | undefined;
  /** The session's client address (after the PROXY header, if any). */
  remoteAddress: string;
}

/** Why a message went where it went (the Log line, the tests). */
export type RouteReason = 'sender-address' | 'sender-domain' | 'device' | 'network' | 'default';

export interface RouteDecision {
  accountId: string;
  reason: RouteReason;
}

/** Where each account is named: what removing it would leave without a route. */
export interface AccountUses {
  isDefault: boolean;
  devices: string[];
  networks: string[];
  senderRoutes: string[];
}

interface Snapshot {
  defaultAccountId: string;
  /** Most specific first. */
  networks: Array<{ entry: string; ranges: ReturnType<typeof parseNetworks>['ranges']; bits: number; accountId: string }>;
  senders: Map<string, string>;
  at: number;
}

/**
 * Parses a Sender Routing pattern: `user@domain` or `@domain`, as Allowed Sender Addresses are written.
 * Returns the stored form (lower case, the domain as A-labels) or why it is not one.
 */
export function parseSenderPattern(input: string): { ok: true; pattern: string } | { ok: false; error: string } {
  const text = input.trim();
  if (text === '') return { ok: false, error: 'Enter an e-mail address (user@example.com) or a domain (@example.com).' };
  if (text.length > 254) return { ok: false, error: 'An address or domain has at most 254 characters.' };
  const error = senderEntryError(text);
  if (error) return { ok: false, error: `${text.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 80)}: ${error}` };
  return { ok: true, pattern: senderKey(text) };
}

/** Parses the stored JSON map of Allowed Networks entry → account; anything unreadable counts as empty. */
export function parseNetworkAccounts(text: string | null | undefined): Record<string, string> {
  if (!text) return {};
  try {
    const value: unknown = JSON.parse(text);
    if (!value || typeof value !== 'object' || Array.isArray(value)) return {};
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string' && e[1] !== ''));
  } catch {
    return {};
  }
}

/** What routing reads from the parts that own it: Relay Settings, device accounts, and the Default. */
export interface RoutingSources {
  relaySettings: Pick<RelaySettings, 'networkAccountsText' | 'setNetworkAccountsText'>;
  devices: Pick<DeviceAccounts, 'sendingAccountOf' | 'usernamesRoutedTo'>;
  /** The Default account (E-Mail Settings keep it; wired in app.ts). */
  defaultAccountId(): Promise<string>;
}

export class SendingRoutes {
  #snapshot: Snapshot | undefined;
  #reading: Promise<Snapshot> | undefined;
  #edits = 0;

  constructor(
    private readonly store: Store,
    private readonly sources: RoutingSources,
    private readonly cacheMs = 2000,
  ) {}

  /** Forgets what was read (another instance changed settings, or this one did). */
  forget(): void {
    this.#edits++;
    this.#snapshot = undefined;
    this.#reading = undefined;
  }

  async #read(): Promise<Snapshot> {
    const known = this.#snapshot;
    if (known && Date.now() - known.at < this.cacheMs) return known;
    if (this.#reading) return this.#reading;
    const edits = this.#edits;
    const reading = (async () => {
      const [networkAccounts, defaultAccountId] = await Promise.all([this.sources.relaySettings.networkAccountsText(), this.sources.defaultAccountId()]);
      const senders = await this.store.db.selectFrom('sender_routes').select(['pattern', 'account_id']).execute();
      const networks: Snapshot['networks'] = [];
      for (const [entry, accountId] of Object.entries(parseNetworkAccounts(networkAccounts))) {
        const parsed = parseNetworks(entry);
        if (parsed.ranges.length !== 1) continue;
        const [address, bits] = parsed.ranges[0]!;
        // An IPv4 /24 is as specific as an IPv6 /120.
        networks.push({ entry, ranges: parsed.ranges, bits: address.kind() === 'ipv4' ? bits + 96 : bits, accountId });
      }
      networks.sort((a, b) => b.bits - a.bits);
      const snapshot: Snapshot = {
        defaultAccountId,
        networks,
        senders: new Map(senders.map((r) => [r.pattern, r.account_id])),
        at: Date.now(),
      };
      if (edits === this.#edits) this.#snapshot = snapshot;
      return snapshot;
    })();
    this.#reading = reading;
    try {
      return await reading;
    } finally {
      if (this.#reading === reading) this.#reading = undefined;
    }
  }

  /** The account a message goes through, and why. */
  async resolve(input: RouteInput): Promise<RouteDecision> {
    const snapshot = await this.#read();
    const at = input.reversePath.lastIndexOf('@');
    if (at > 0 && snapshot.senders.size > 0) {
      const key = senderKey(input.reversePath);
      const exact = snapshot.senders.get(key);
      if (exact) return { accountId: exact, reason: 'sender-address' };
      const domain = snapshot.senders.get(key.slice(key.lastIndexOf('@')));
      if (domain) return { accountId: domain, reason: 'sender-domain' };
    }
    if (input.deviceId !== undefined) {
      // Read with each message: a device account's Sending Account counts from its next message.
      const account = await this.sources.devices.sendingAccountOf(input.deviceId);
      if (account) return { accountId: account, reason: 'device' };
    } else if (snapshot.networks.length > 0 && ipaddr.isValid(input.remoteAddress)) {
      for (const network of snapshot.networks) {
        if (isAllowed(input.remoteAddress, network.ranges)) return { accountId: network.accountId, reason: 'network' };
      }
    }
    return { accountId: snapshot.defaultAccountId, reason: 'default' };
  }

  // ---- Sender Routing --------------------------------------------------------------------------------

  async senderRoutes(): Promise<SenderRoute[]> {
    const rows = await this.store.db.selectFrom('sender_routes').selectAll().orderBy('pattern').execute();
    return rows.map((r) => ({ id: r.id, pattern: r.pattern, accountId: r.account_id, createdAt: Number(r.created_at) }));
  }

  /** Adds a rule, or points an existing one for the same pattern at `accountId`. */
  async setSenderRoute(pattern: string, accountId: string): Promise<SenderRoute> {
    const now = Date.now();
    const existing = await this.store.db.selectFrom('sender_routes').selectAll().where('pattern', '=', pattern).executeTakeFirst();
    if (existing) {
      await this.store.db.updateTable('sender_routes').set({ account_id: accountId }).where('id', '=', existing.id).execute();
      this.forget();
      return { id: existing.id, pattern, accountId, createdAt: Number(existing.created_at) };
    }
    const count = await this.store.db.selectFrom('sender_routes').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    if (Number(count.n) >= MAX_SENDER_ROUTES) throw new RangeError(`At most ${MAX_SENDER_ROUTES} Sender Routing rules can be kept.`);
    const route = { id: randomUUID(), pattern, account_id: accountId, created_at: now };
    await this.store.db.insertInto('sender_routes').values(route).onConflict((oc) => oc.column('pattern').doUpdateSet({ account_id: accountId })).execute();
    this.forget();
    return { id: route.id, pattern, accountId, createdAt: now };
  }

  async removeSenderRoute(id: string): Promise<SenderRoute | undefined> {
    const row = await this.store.db.selectFrom('sender_routes').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) return undefined;
    await this.store.db.deleteFrom('sender_routes').where('id', '=', id).execute();
    this.forget();
    return { id: row.id, pattern: row.pattern, accountId: row.account_id, createdAt: Number(row.created_at) };
  }

  // ---- Allowed Networks entries ----------------------------------------------------------------------

  /** Allowed Networks entry → account, for the entries that name one. */
  async networkAccounts(): Promise<Record<string, string>> {
    return parseNetworkAccounts(await this.sources.relaySettings.networkAccountsText());
  }

  /** Replaces the map; entries routed to the Default are simply absent. */
  async setNetworkAccounts(map: Record<string, string>): Promise<void> {
    const clean = Object.fromEntries(Object.entries(map).filter(([, id]) => id !== ''));
    await this.sources.relaySettings.setNetworkAccountsText(JSON.stringify(clean));
    this.forget();
  }

  /** The Default account. */
  async defaultAccountId(): Promise<string> {
    return (await this.#read()).defaultAccountId;
  }

  /** Where `accountId` is named: the Default, device accounts (by user name), network entries, sender rules. */
  async usesOf(accountId: string): Promise<AccountUses> {
    const [networkAccounts, defaultAccountId, devices] = await Promise.all([
      this.sources.relaySettings.networkAccountsText(),
      this.sources.defaultAccountId(),
      this.sources.devices.usernamesRoutedTo(accountId),
    ]);
    const senders = await this.store.db.selectFrom('sender_routes').select('pattern').where('account_id', '=', accountId).orderBy('pattern').execute();
    return {
      isDefault: defaultAccountId === accountId,
      devices,
      networks: Object.entries(parseNetworkAccounts(networkAccounts)).filter(([, id]) => id === accountId).map(([entry]) => entry),
      senderRoutes: senders.map((s) => s.pattern),
    };
  }
}
