/**
 * Per-account pacing: at most `limit` messages in any sliding 60-second window, the way Exchange Online
 * counts its "30 messages per minute per mailbox" (PROTOCOL.md §1.8). A sliding window, not a token bucket,
 * because a bucket that starts full allows twice the rate across a minute boundary, and Exchange answers
 * that with 4.3.2 throttling replies.
 *
 * Known limit: the window lives in this process. Several instances sending through one mailbox each get the
 * full rate; give each instance a share of the limit in E-Mail Settings.
 */

export const WINDOW_MS = 60_000;

export class Pacer {
  readonly #sent = new Map<string, number[]>();

  constructor(private readonly now: () => number = Date.now) {}

  #window(key: string): number[] {
    let times = this.#sent.get(key);
    if (!times) {
      times = [];
      this.#sent.set(key, times);
    }
    const cutoff = this.now() - WINDOW_MS;
    let drop = 0;
    while (drop < times.length && times[drop]! <= cutoff) drop++;
    if (drop > 0) times.splice(0, drop);
    return times;
  }

  /** How many messages may start now for `key` under `limit` per minute (0 = unlimited → Infinity). */
  available(key: string, limit: number): number {
    if (limit <= 0) return Infinity;
    return Math.max(0, limit - this.#window(key).length);
  }

  /** Milliseconds until one more message may start (0 when one may start now). */
  waitMs(key: string, limit: number): number {
    if (this.available(key, limit) > 0) return 0;
    const times = this.#window(key);
    return Math.max(1, times[times.length - limit]! + WINDOW_MS - this.now() + 1);
  }

  /** Records that a message started for `key`. */
  take(key: string): void {
    this.#window(key).push(this.now());
  }

  /** Gives back a slot that was taken but not used (the message was held before any connection). */
  giveBack(key: string): void {
    const times = this.#window(key);
    times.pop();
  }
}
