/**
 * Remote UI sessions kept in the store (the `sessions` table, store/sessions.ts), encrypted (a session holds
 * its CSRF secret), so that they survive a restart and are shared by instances on one database. Expired
 * sessions are swept on write. Each row names its signed-in user (`user_id`), so that a password change or
 * reset can end that user's sessions.
 *
 * @fastify/session's callbacks are called outside the database promise: they run the rest of the request
 * (the response is written from inside them), and a throw there must not become an unhandled rejection of
 * this store's promise, which would end the process. A throw is logged instead; the response itself is
 * guarded by the Remote UI's error handling (src/web/app.ts).
 */
import type { SessionStore } from '@fastify/session';
import type { Logger } from '../log.js';
import { Sessions } from '../store/sessions.js';
import type { Store } from '../store/store.js';

const DEFAULT_TTL_MS = 8 * 60 * 60_000;

export class DatabaseSessionStore implements SessionStore {
  #lastSweep = 0;
  readonly #sessions: Sessions;

  constructor(
    private readonly store: Store,
    private readonly log?: Logger,
  ) {
    this.#sessions = new Sessions(store);
  }

  #context(id: string) {
    return `sessions.data:${id}`;
  }

  /** Settles `work` and calls `callback` on a tick of its own, never inside the promise's reactions. */
  #settle<T>(work: Promise<T>, callback: (err: unknown, result?: T) => void): void {
    const call = (err: unknown, result?: T) =>
      process.nextTick(() => {
        try {
          callback(err, result);
        } catch (error) {
          this.log?.error({ err: error }, 'unexpected error after a Remote UI session was read or written');
        }
      });
    work.then(
      (result) => call(null, result),
      (error: unknown) => call(error ?? new Error('session store failure')),
    );
  }

  set(sessionId: string, session: Record<string, any>, callback: (err?: any) => void): void {
    const work = (async () => {
      const expires = session.cookie?.expires ? new Date(session.cookie.expires).getTime() : Date.now() + DEFAULT_TTL_MS;
      const data_enc = this.store.secrets.encrypt(JSON.stringify(session), this.#context(sessionId));
      const user_id = typeof session.userId === 'string' ? session.userId : null;
      const now = Date.now();
      await this.#sessions.save({ id: sessionId, data_enc, expires_at: expires, user_id });
      if (now - this.#lastSweep > 60_000) {
        this.#lastSweep = now;
        await this.#sessions.removeExpired(now);
      }
    })();
    this.#settle(work, (err) => (err ? callback(err) : callback()));
  }

  get(sessionId: string, callback: (err: any, result?: any) => void): void {
    const work = (async () => {
      const row = await this.#sessions.find(sessionId);
      if (!row || row.expires_at < Date.now()) return null;
      try {
        return JSON.parse(this.store.secrets.decrypt(row.data_enc, this.#context(sessionId)));
      } catch {
        return null;
      }
    })();
    this.#settle(work, (err, session) => (err ? callback(err) : callback(null, session)));
  }

  destroy(sessionId: string, callback: (err?: any) => void): void {
    const work = this.#sessions.remove(sessionId);
    this.#settle(work, (err) => (err ? callback(err) : callback()));
  }
}
