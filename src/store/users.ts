/**
 * Remote UI users and their roles. Administrator and Network Administrator may change Send settings;
 * a General User may only view status (seed: "Administrator or Network Administrator privileges are required").
 */
import { randomUUID } from 'node:crypto';
import type { Role, UsersTable } from './schema.js';
import { generatePassword, hashPassword, verifyPassword } from './passwords.js';
import { Sessions } from './sessions.js';
import type { Store } from './store.js';

export const ROLES: readonly Role[] = ['Administrator', 'NetworkAdministrator', 'GeneralUser'];

export const ROLE_LABELS: Record<Role, string> = {
  Administrator: 'Administrator',
  NetworkAdministrator: 'Network Administrator',
  GeneralUser: 'General User',
};

export type User = Omit<UsersTable, 'password_hash'>;

export function canChangeSendSettings(role: Role): boolean {
  return role === 'Administrator' || role === 'NetworkAdministrator';
}

export function canManageUsers(role: Role): boolean {
  return role === 'Administrator';
}

const USERNAME = /^[A-Za-z0-9._@-]{1,64}$/;

export function validateUsername(username: string): string | undefined {
  return USERNAME.test(username)
    ? undefined
    : 'User name must be 1 to 64 characters: letters, digits, and . _ @ -';
}

export function validateNewPassword(password: string): string | undefined {
  if (password.length < 8) return 'Password must be at least 8 characters long.';
  if (password.length > 256) return 'Password must be at most 256 characters long.';
  return undefined;
}

const USER_COLUMNS = ['id', 'username', 'role', 'created_at', 'updated_at', 'last_login_at', 'sessions_not_before'] as const;

/** Whether a session that signed in at `loginAt` is still accepted for this user (see `endSessions`). */
export function sessionStillValid(user: Pick<User, 'sessions_not_before'>, loginAt: number | undefined): boolean {
  return user.sessions_not_before === null || (loginAt ?? 0) >= user.sessions_not_before;
}

export class Users {
  readonly #sessions: Sessions;

  constructor(private readonly store: Store) {
    this.#sessions = new Sessions(store);
  }

  async list(): Promise<User[]> {
    return this.store.db
      .selectFrom('users')
      .select(USER_COLUMNS)
      .orderBy('username')
      .execute();
  }

  async findById(id: string): Promise<User | undefined> {
    return this.store.db
      .selectFrom('users')
      .select(USER_COLUMNS)
      .where('id', '=', id)
      .executeTakeFirst();
  }

  async create(username: string, password: string, role: Role): Promise<User> {
    const now = Date.now();
    const user = { id: randomUUID(), username, role, created_at: now, updated_at: now, last_login_at: null, sessions_not_before: null };
    await this.store.db
      .insertInto('users')
      .values({ ...user, password_hash: await hashPassword(password) })
      .execute();
    return user;
  }

  async exists(username: string): Promise<boolean> {
    const row = await this.store.db.selectFrom('users').select('id').where('username', '=', username).executeTakeFirst();
    return row !== undefined;
  }

  /** Checks a user name and password; the time taken does not reveal whether the user exists. */
  async authenticate(username: string, password: string): Promise<User | undefined> {
    const row = await this.store.db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst();
    const ok = await verifyPassword(password, row?.password_hash);
    if (!row || !ok) return undefined;
    const now = Date.now();
    await this.store.db.updateTable('users').set({ last_login_at: now }).where('id', '=', row.id).execute();
    const { password_hash: _ignored, ...user } = row;
    return { ...user, last_login_at: now };
  }

  /**
   * Sets a new password and ends the user's Remote UI sessions: all of them, or all but `keepSession` (the
   * session of a user changing their own password). Returns the time from which sessions count again; the
   * kept session must carry it as its `loginAt`.
   */
  async setPassword(id: string, password: string, options: { keepSession?: string } = {}): Promise<number> {
    const password_hash = await hashPassword(password);
    const now = Date.now();
    await this.store.db.updateTable('users').set({ password_hash, updated_at: now }).where('id', '=', id).execute();
    await this.endSessions(id, { keepSession: options.keepSession, at: now });
    return now;
  }

  /**
   * Ends the user's Remote UI sessions (all, or all but `keepSession`): their rows are deleted, and sessions
   * that signed in before `at` are no longer accepted, so that a request already under way cannot bring its
   * session back by saving it.
   */
  async endSessions(id: string, options: { keepSession?: string | undefined; at?: number } = {}): Promise<void> {
    const at = options.at ?? Date.now();
    await this.store.db.updateTable('users').set({ sessions_not_before: at }).where('id', '=', id).execute();
    await this.#sessions.removeOfUser(id, options.keepSession);
  }

  async setRole(id: string, role: Role): Promise<void> {
    await this.store.db.updateTable('users').set({ role, updated_at: Date.now() }).where('id', '=', id).execute();
  }

  /** Removes the user and ends their Remote UI sessions. */
  async remove(id: string): Promise<void> {
    await this.store.db.deleteFrom('users').where('id', '=', id).execute();
    await this.#sessions.removeOfUser(id);
  }

  async countAdministrators(): Promise<number> {
    const row = await this.store.db
      .selectFrom('users')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('role', '=', 'Administrator')
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /**
   * Creates the first administrator (`admin`) when no administrator exists. Uses the configured password, or
   * generates one; the generated password is returned so that start-up can print it once.
   */
  async ensureFirstAdministrator(configuredPassword: string | undefined): Promise<{ created: boolean; generatedPassword?: string }> {
    if ((await this.countAdministrators()) > 0) return { created: false };
    const password = configuredPassword ?? generatePassword();
    if (await this.exists('admin')) {
      const row = await this.store.db.selectFrom('users').select('id').where('username', '=', 'admin').executeTakeFirstOrThrow();
      await this.setPassword(row.id, password);
      await this.setRole(row.id, 'Administrator');
    } else {
      await this.create('admin', password, 'Administrator');
    }
    return configuredPassword ? { created: true } : { created: true, generatedPassword: password };
  }
}
