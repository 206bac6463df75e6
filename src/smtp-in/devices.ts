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
 */
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { RelayDevicesTable } from '../store/schema.js';
import { hashPassword, verifyPassword } from '../store/passwords.js';
import type { Store } from '../store/store.js';

export type DeviceAccount = Omit<RelayDevicesTable, 'password_hash'>;

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

interface Verified {
  passwordHash: string;
  digest: Buffer;
  expiresAt: number;
}

export class DeviceAccounts {
  readonly #cacheKey = randomBytes(32);
  readonly #verified = new Map<string, Verified>();

  constructor(private readonly store: Store) {}

  #digest(password: string): Buffer {
    return createHmac('sha256', this.#cacheKey).update(password, 'utf8').digest();
  }

  async list(): Promise<DeviceAccount[]> {
    return this.store.db.selectFrom('relay_devices').select(['id', 'username', 'created_at', 'updated_at', 'last_login_at']).orderBy('username').execute();
  }

  async exists(username: string): Promise<boolean> {
    return (await this.store.db.selectFrom('relay_devices').select('id').where('username', '=', username).executeTakeFirst()) !== undefined;
  }

  async create(username: string, password: string): Promise<DeviceAccount> {
    const now = Date.now();
    const device = { id: randomUUID(), username, created_at: now, updated_at: now, last_login_at: null };
    await this.store.db
      .insertInto('relay_devices')
      .values({ ...device, password_hash: await hashPassword(password) })
      .execute();
    return device;
  }

  async setPassword(id: string, password: string): Promise<void> {
    this.#verified.clear();
    await this.store.db.updateTable('relay_devices').set({ password_hash: await hashPassword(password), updated_at: Date.now() }).where('id', '=', id).execute();
  }

  async remove(id: string): Promise<DeviceAccount | undefined> {
    const row = await this.store.db.selectFrom('relay_devices').select(['id', 'username', 'created_at', 'updated_at', 'last_login_at']).where('id', '=', id).executeTakeFirst();
    if (row) await this.store.db.deleteFrom('relay_devices').where('id', '=', id).execute();
    this.#verified.clear();
    return row;
  }

  /** Checks a device's credentials; the time taken does not reveal whether the user exists. */
  async authenticate(username: string, password: string): Promise<DeviceAccount | undefined> {
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
    return { ...device, last_login_at: now };
  }
}
