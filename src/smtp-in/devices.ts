/**
 * Relay device accounts: the credential each scanner or app uses for AUTH PLAIN/LOGIN. Passwords are
 * hashed with scrypt (store/passwords.ts); a wrong password takes as long as a right one, whether the
 * user exists or not.
 *
 * A device signs in for every message. One scrypt check costs ~32 MB and tens of milliseconds, so ten
 * devices at once would cost 320 MB. Hence (like Dovecot's auth cache): a successful check is remembered
 * for CACHE_TTL_MS as an HMAC of the password under a key that exists only in this process, tied to the
 * stored hash (changing the password or removing the device ends it); and scrypt checks wait their turn
 * (store/passwords.ts runs at most two at once). Failed attempts always pay the full check.
 *
 * Allowed Sender Addresses (allowed-senders.ts) are judged at every MAIL FROM, so an edit must count for the
 * next MAIL, not the next sign-in. They come with the row AUTH reads anyway and are remembered per device for
 * at most SENDER_RULES_TTL_MS: a device with an empty list (most of them) costs no query per message. An edit
 * through this process replaces the remembered list at once; an edit made by another instance on the same
 * database counts within SENDER_RULES_TTL_MS, as Relay Settings do (relay-server.ts re-reads those as often).
 */
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { RelayDevicesTable } from '../store/schema.js';
import { hashPassword, verifyPassword } from '../store/passwords.js';
import type { Store } from '../store/store.js';

export interface DeviceAccount extends Omit<RelayDevicesTable, 'password_hash' | 'allowed_senders'> {
  /** Allowed Sender Addresses, normalised (allowed-senders.ts); empty = any sender. */
  allowedSenders: string[];
}

const USERNAME = /^[A-Za-z0-9._@+-]{1,64}$/;

export function validateDeviceUsername(username: string): string | undefined {
  return USERNAME.test(username) ? undefined : 'User Name must be 1 to 64 characters: letters, digits, and . _ @ + -';
}

export function validateDevicePassword(password: string): string | undefined {
  if (password.length < 8) return 'Password must be at least 8 characters long.';
  if (password.length > 256) return 'Password must be at most 256 characters long.';
  if (/[\x00-\x1f\x7f]/.test(password)) return 'Password must not contain control characters.';
  return undefined;
}

const CACHE_TTL_MS = 15 * 60_000;
/** How long a device's Allowed Sender Addresses are used without reading them again (other instances' edits). */
export const SENDER_RULES_TTL_MS = 10_000;

const PUBLIC_COLUMNS = ['id', 'username', 'allowed_senders', 'sending_account_id', 'created_at', 'updated_at', 'last_login_at'] as const;

function toAccount(row: Omit<RelayDevicesTable, 'password_hash'>): DeviceAccount {
  const { allowed_senders: allowed, ...rest } = row;
  return { ...rest, allowedSenders: splitSenders(allowed) };
}

function splitSenders(stored: string): string[] {
  return stored.split('\n').map((s) => s.trim()).filter(Boolean);
}

interface Verified {
  passwordHash: string;
  digest: Buffer;
  expiresAt: number;
}

export class DeviceAccounts {
  readonly #cacheKey = randomBytes(32);
  readonly #verified = new Map<string, Verified>();
  /** Allowed Sender Addresses by device id, with when they were read. */
  readonly #senders = new Map<string, { list: string[]; readAt: number }>();
  /** Counts edits made through this process, so a read that raced one is not remembered. */
  #edits = 0;

  constructor(private readonly store: Store) {}

  #digest(password: string): Buffer {
    return createHmac('sha256', this.#cacheKey).update(password, 'utf8').digest();
  }

  async list(): Promise<DeviceAccount[]> {
    return (await this.store.db.selectFrom('relay_devices').select(PUBLIC_COLUMNS).orderBy('username').execute()).map(toAccount);
  }

  async find(id: string): Promise<DeviceAccount | undefined> {
    const row = await this.store.db.selectFrom('relay_devices').select(PUBLIC_COLUMNS).where('id', '=', id).executeTakeFirst();
    return row ? toAccount(row) : undefined;
  }

  async exists(username: string): Promise<boolean> {
    return (await this.store.db.selectFrom('relay_devices').select('id').where('username', '=', username).executeTakeFirst()) !== undefined;
  }

  /**
   * `allowedSenders`: entries as parseAllowedSenders returns them. `sendingAccountId`: the account its mail
   * goes through (null: the Default).
   */
  async create(username: string, password: string, allowedSenders: string[] = [], sendingAccountId: string | null = null): Promise<DeviceAccount> {
    const now = Date.now();
    const device = { id: randomUUID(), username, sending_account_id: sendingAccountId, created_at: now, updated_at: now, last_login_at: null };
    await this.store.db
      .insertInto('relay_devices')
      .values({ ...device, allowed_senders: allowedSenders.join('\n'), password_hash: await hashPassword(password) })
      .execute();
    return { ...device, allowedSenders: [...allowedSenders] };
  }

  /** Replaces the device's Allowed Sender Addresses; the relay applies them from the next MAIL FROM. */
  async setAllowedSenders(id: string, allowedSenders: string[]): Promise<DeviceAccount | undefined> {
    await this.store.db.updateTable('relay_devices').set({ allowed_senders: allowedSenders.join('\n'), updated_at: Date.now() }).where('id', '=', id).execute();
    this.#forgetSenders(id);
    return this.find(id);
  }

  /** The sending account a device's mail goes through (null: the Default; undefined: no such device). */
  async sendingAccountOf(id: string): Promise<string | null | undefined> {
    const row = await this.store.db.selectFrom('relay_devices').select('sending_account_id').where('id', '=', id).executeTakeFirst();
    return row ? row.sending_account_id : undefined;
  }

  /** The user names of the device accounts whose mail goes through `accountId`. */
  async usernamesRoutedTo(accountId: string): Promise<string[]> {
    return (await this.store.db.selectFrom('relay_devices').select('username').where('sending_account_id', '=', accountId).orderBy('username').execute()).map((d) => d.username);
  }

  /** Routes the device's mail through `accountId` (null: the Default), from its next message. */
  async setSendingAccount(id: string, accountId: string | null): Promise<DeviceAccount | undefined> {
    await this.store.db.updateTable('relay_devices').set({ sending_account_id: accountId, updated_at: Date.now() }).where('id', '=', id).execute();
    return this.find(id);
  }

  /**
   * The device's Allowed Sender Addresses as they stand (read at most SENDER_RULES_TTL_MS ago); undefined
   * once the account is gone.
   */
  async allowedSenders(id: string): Promise<string[] | undefined> {
    const known = this.#senders.get(id);
    if (known && Date.now() - known.readAt < SENDER_RULES_TTL_MS) return known.list;
    const edits = this.#edits;
    const row = await this.store.db.selectFrom('relay_devices').select('allowed_senders').where('id', '=', id).executeTakeFirst();
    if (!row) {
      this.#senders.delete(id);
      return undefined;
    }
    const list = splitSenders(row.allowed_senders);
    this.#remember(id, list, edits);
    return list;
  }

  #remember(id: string, list: string[], editsBeforeRead: number): void {
    if (editsBeforeRead === this.#edits) this.#senders.set(id, { list, readAt: Date.now() });
  }

  /** After a write has committed: reads still in flight may have seen the old row, so they must not remember it. */
  /** Forgets every remembered Allowed Sender list: another instance changed device accounts. */
  forgetAllowedSenders(): void {
    this.#edits++;
    this.#senders.clear();
  }

  #forgetSenders(id: string): void {
    this.#edits++;
    this.#senders.delete(id);
  }

  async setPassword(id: string, password: string): Promise<void> {
    this.#verified.clear();
    await this.store.db.updateTable('relay_devices').set({ password_hash: await hashPassword(password), updated_at: Date.now() }).where('id', '=', id).execute();
  }

  async remove(id: string): Promise<DeviceAccount | undefined> {
    const row = await this.store.db.selectFrom('relay_devices').select(PUBLIC_COLUMNS).where('id', '=', id).executeTakeFirst();
    if (row) await this.store.db.deleteFrom('relay_devices').where('id', '=', id).execute();
    this.#verified.clear();
    this.#forgetSenders(id);
    return row ? toAccount(row) : undefined;
  }

  /** Checks a device's credentials; the time taken does not reveal whether the user exists. */
  async authenticate(username: string, password: string): Promise<DeviceAccount | undefined> {
    const edits = this.#edits;
    const row = await this.store.db.selectFrom('relay_devices').selectAll().where('username', '=', username).executeTakeFirst();
    const now = Date.now();
    const cached = row ? this.#verified.get(row.username) : undefined;
    const digest = this.#digest(password);
    let ok = cached !== undefined && cached.expiresAt > now && cached.passwordHash === row?.password_hash && timingSafeEqual(cached.digest, digest);
    if (!ok) {
      ok = await verifyPassword(password, row?.password_hash);
      if (row && ok) this.#verified.set(row.username, { passwordHash: row.password_hash, digest, expiresAt: now + CACHE_TTL_MS });
    }
    if (!row || !ok) return undefined;
    // At most one write per minute per device: last_login_at is for the Relay Settings page, not an audit.
    if (!row.last_login_at || now - row.last_login_at > 60_000) {
      await this.store.db.updateTable('relay_devices').set({ last_login_at: now }).where('id', '=', row.id).execute();
    }
    const { password_hash: _ignored, ...device } = row;
    const account = toAccount({ ...device, last_login_at: now });
    this.#remember(account.id, account.allowedSenders, edits);
    return account;
  }
}
