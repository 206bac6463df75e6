/**
 * Prompt reclamation of the buffers a large body leaves behind.
 *
 * A body streams through the relay and through delivery in chunks (socket reads, file reads, at most 64 KiB
 * each), so little of it is alive at any moment. But every chunk is memory outside V8's heap held by a small
 * JavaScript object, and V8 collects its young generation only when that generation's few MB of objects fill
 * up, which a body's chunks hardly do: relaying five 25 MB messages at once grew the process by ~40 MB of
 * chunks that were already dead, until a collection came (docs/decisions/026-memory-footprint.md).
 *
 * `bodyBytesStreamed` is told how many body bytes went by (the relay's size guard, delivery's byte counter);
 * after every BODY_BYTES_PER_COLLECTION it has V8 collect the young generation (a scavenge: about a
 * millisecond, the chunks are freed with it). That needs `gc`, which node exposes only with `--expose-gc`
 * (package.json's start script passes it); without it this does nothing and memory behaves as before. Small
 * messages rarely reach the threshold: 10 KB messages cause one scavenge per ~200 of them (in and out).
 */

/** Body bytes (in and out together) between two requested scavenges. */
export const BODY_BYTES_PER_COLLECTION = 4 * 1024 * 1024;

type Collect = (options: { type: 'minor' }) => void;

let streamed = 0;

export function bodyBytesStreamed(bytes: number): void {
  streamed += bytes;
  if (streamed < BODY_BYTES_PER_COLLECTION) return;
  streamed = 0;
  const collect = (globalThis as { gc?: Collect }).gc;
  if (typeof collect !== 'function') return;
  collect({ type: 'minor' });
}

/** Body bytes through the database (in and out together) between two requested full collections. */
export const DATABASE_BODY_BYTES_PER_FULL_COLLECTION = 8 * 1024 * 1024;

let throughDatabase = 0;

/**
 * The database body path's chunks (BODY_CHUNK_BYTES each) live across a database round trip, so a scavenge
 * finds them alive and moves them to the old generation, where only a full collection frees them: V8 starts
 * one when outside-heap memory has grown by tens of MB. Every DATABASE_BODY_BYTES_PER_FULL_COLLECTION this
 * asks for one (needs `gc` too).
 */
export function databaseBodyBytes(bytes: number): void {
  throughDatabase += bytes;
  if (throughDatabase < DATABASE_BODY_BYTES_PER_FULL_COLLECTION) return;
  throughDatabase = 0;
  const collect = (globalThis as { gc?: () => void }).gc;
  if (typeof collect !== 'function') return;
  collect();
}
