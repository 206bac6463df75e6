/**
 * The gateway's store and queue, opened the way the gateway opens them (same POSTERN_* environment, same
 * database, data directory and spool), for one command and closed after it.
 */
import { loadConfig, QUEUE_DEFAULTS, type Config } from '../config.js';
import type { MessageQueue } from '../queue/queue.js';
import { openStore, type Store } from '../store/store.js';

export async function withStore<T>(fn: (store: Store, config: Config) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const store = await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl, secretKey: config.secretKey });
  try {
    return await fn(store, config);
  } finally {
    await store.close();
  }
}

/** The gateway's queue, on the same store and spool as the gateway; its writes are on disk before the store closes. */
export async function withQueue<T>(fn: (queue: MessageQueue, store: Store) => Promise<T>): Promise<T> {
  const [{ MessageQueue }, { Spool, spoolDirectory }] = await Promise.all([import('../queue/queue.js'), import('../queue/spool.js')]);
  return withStore(async (store, config) => {
    const queue = new MessageQueue(store, Spool.open(spoolDirectory(config.dataDir)), { tuning: { ...QUEUE_DEFAULTS, ...config.queue } });
    try {
      return await fn(queue, store);
    } finally {
      await queue.close();
    }
  });
}
