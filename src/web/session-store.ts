/**
 * Remote UI sessions kept in the store, encrypted (a session holds its CSRF secret), so that they survive a
 * restart and are shared by instances on one database. Expired sessions are swept on write.
 */
import type { SessionStore } from '@fastify/session';
import type { Store } from '../store/store.js';

const DEFAULT_TTL_MS = 8 * 60 * 60_000;

export class DatabaseSessionStore implements SessionStore {
  #lastSweep = 0;

  constructor(private readonly store: Store) {}

  #context(id: string) {
    return `sessions.data:${id}`;
  }

  set(sessionId: string, session: Record<string, any>, callback: (err?: any) => void): void {
    const expires = session.cookie?.expires ? new Date(session.cookie.expires).getTime() : Date.now() + DEFAULT_TTL_MS;
    const data_enc = this.store.secrets.encrypt(JSON.stringify(session), this.#context(sessionId));
    const now = Date.now();
    (async () => {
      await this.store.db
        .insertInto('sessions')
        .values({ id: sessionId, data_enc, expires_at: expires })
        .onConflict((oc) => oc.column('id').doUpdateSet({ data_enc, expires_at: expires }))
        .execute();
      if (now - this.#lastSweep > 60_000) {
        this.#lastSweep = now;
        await this.store.db.deleteFrom('sessions').where('expires_at', '<', now).execute();
      }
    })().then(() => callback(), callback);
  }

  get(sessionId: string, callback: (err: any, result?: any) => void): void {
    (async () => {
      const row = await this.store.db.selectFrom('sessions').selectAll().where('id', '=', sessionId).executeTakeFirst();
      if (!row || row.expires_at < Date.now()) return null;
      try {
        return JSON.parse(this.store.secrets.decrypt(row.data_enc, this.#context(sessionId)));
      } catch {
        return null;
      }
    })().then((session) => callback(null, session), (error) => callback(error));
  }

  destroy(sessionId: string, callback: (err?: any) => void): void {
    this.store.db
      .deleteFrom('sessions')
      .where('id', '=', sessionId)
      .execute()
      .then(() => callback(), callback);
  }
}
