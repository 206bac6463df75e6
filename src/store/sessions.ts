/**
 * The `sessions` table: Remote UI sessions at rest, one row per session id, its data sealed by the caller
 * (web/session-store.ts, the @fastify/session store). Each row names its signed-in user, so that the users
 * table's owner (store/users.ts) can end a user's sessions when the password changes, the user is reset or
 * removed. This module is the table's only reader and writer; it knows rows, not what a session holds.
 */
import type { SessionsTable } from './schema.js';
import type { Store } from './store.js';

export type SessionRow = SessionsTable;

export class Sessions {
  constructor(private readonly store: Store) {}

  /** Writes the session, replacing an earlier row of the same id. */
  async save(row: SessionRow): Promise<void> {
    const { data_enc, expires_at, user_id } = row;
    await this.store.db
      .insertInto('sessions')
      .values(row)
      .onConflict((oc) => oc.column('id').doUpdateSet({ data_enc, expires_at, user_id }))
      .execute();
  }

  async find(id: string): Promise<SessionRow | undefined> {
    return this.store.db.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirst();
  }

  async remove(id: string): Promise<void> {
    await this.store.db.deleteFrom('sessions').where('id', '=', id).execute();
  }

  /** Forgets sessions that expired before `now`. */
  async removeExpired(now: number): Promise<void> {
    await this.store.db.deleteFrom('sessions').where('expires_at', '<', now).execute();
  }

  /** Ends every session of the user, but `keep` when given (the session that asked). */
  async removeOfUser(userId: string, keep?: string): Promise<void> {
    let remove = this.store.db.deleteFrom('sessions').where('user_id', '=', userId);
    if (keep !== undefined) remove = remove.where('id', '<>', keep);
    await remove.execute();
  }
}
