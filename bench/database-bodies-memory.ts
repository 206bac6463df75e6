/**
 * Where the memory of bodies in PostgreSQL goes, inside one process (no relay, no delivery): `count` bodies of
 * `size` bytes streamed into `message_bodies` at once through DatabaseBodies, then read back at once, with
 * process.memoryUsage() (rss, V8 heap, external, array buffers) before, at the peak of each phase and after.
 * Run: POSTERN_TEST_DATABASE_URL=… node --max-semi-space-size=2 --expose-gc --import tsx bench/database-bodies-memory.ts
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { DatabaseBodies } from '../src/queue/database-bodies.js';
import { openStore } from '../src/store/store.js';
import { createTestDatabase } from '../test/support/postgres.js';

const COUNT = Number(process.env.BENCH_BODIES ?? 5);
const SIZE = Number(process.env.BENCH_BODY_BYTES ?? 25_000_000);
const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;
const peak = { rss: 0, heapUsed: 0, external: 0, arrayBuffers: 0 };
const sample = () => {
  const m = process.memoryUsage();
  for (const k of Object.keys(peak) as Array<keyof typeof peak>) peak[k] = Math.max(peak[k], m[k]);
};
const show = (label: string, m: typeof peak) => process.stdout.write(`${label.padEnd(14)} rss ${mb(m.rss)}  heap ${mb(m.heapUsed)}  external ${mb(m.external)}  arrayBuffers ${mb(m.arrayBuffers)}\n`);

const database = await createTestDatabase('postern_bench_bodies');
const dir = mkdtempSync(join(tmpdir(), 'postern-bench-bodies-'));
const store = await openStore({ dataDir: dir, databaseUrl: database.url, secretKey: Buffer.alloc(32, 7) });
try {
  const bodies = new DatabaseBodies(store, { maxOpenReads: Number(process.env.BENCH_READ_SLOTS ?? 5) });
  const timer = setInterval(sample, 5);
  show('before', process.memoryUsage());
  // Fresh 64 KB pieces, as a device's socket reads arrive.
  const PIECE = 64 * 1024;
  const ids = Array.from({ length: COUNT }, (_, i) => `bench-${i}`);
  await Promise.all(
    ids.map(async (id) => {
      const writer = bodies.create(id, async (op) => { await store.db.transaction().execute(op); });
      await pipeline(Readable.from((function* () { for (let at = 0; at < SIZE; at += PIECE) yield Buffer.alloc(PIECE, 97); })()), writer);
      await writer.commit(async () => undefined);
    }),
  );
  show('peak, in', peak);
  show('after in', process.memoryUsage());
  for (const k of Object.keys(peak) as Array<keyof typeof peak>) peak[k] = 0;
  let read = 0;
  await Promise.all(ids.map((id) => pipeline(bodies.read(id), new Writable({ write(chunk: Buffer, _e, cb) { read += chunk.length; cb(); } }))));
  show('peak, out', peak);
  show('after out', process.memoryUsage());
  clearInterval(timer);
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 200));
    gc();
    show('after full gc', process.memoryUsage());
  }
  process.stdout.write(`read ${mb(read)}\n`);
} finally {
  await store.close();
  await database.drop();
  rmSync(dir, { recursive: true, force: true });
}
