/**
 * The waits the tests use instead of sleeps: a condition checked at each signal, log lines awaited from a
 * mark, and a clear failure when the event never comes.
 */
import { describe, expect, it } from 'vitest';
import { LogLines, Signal, until } from './events.js';

describe('until', () => {
  it('resolves at once when the condition already holds, and otherwise at the signal that makes it hold', async () => {
    const signal = new Signal();
    expect(await until(signal.subscribe, () => 'now', 'a value')).toBe('now');
    let count = 0;
    const reached = until(signal.subscribe, () => count >= 3 && count, 'three');
    for (let i = 0; i < 3; i++) {
      count++;
      signal.raise();
    }
    expect(await reached).toBe(3);
  });

  it('never runs two checks at once; signals during a check lead to one more check', async () => {
    const signal = new Signal();
    let running = 0;
    let overlapped = false;
    let checks = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const done = until(
      signal.subscribe,
      async () => {
        overlapped ||= ++running > 1;
        checks++;
        if (checks === 1) await gate;
        running--;
        return checks === 2 && 'second';
      },
      'the second check',
    );
    signal.raise();
    signal.raise();
    release();
    expect(await done).toBe('second');
    expect(overlapped).toBe(false);
  });

  it('fails with what it waited for when the event does not come', async () => {
    await expect(until(new Signal().subscribe, () => false, 'a message that never arrives', 20)).rejects.toThrow(
      /timed out after 20 ms waiting for a message that never arrives/,
    );
  });
});

describe('LogLines', () => {
  it('parses JSON lines split across writes and waits for a line after a mark', async () => {
    const log = new LogLines();
    log.write('{"msg":"message delivered","queueId":"a"}\n{"msg":"mess');
    const mark = log.mark();
    const next = log.waitFor('message delivered', { from: mark });
    log.write('age delivered","queueId":"b"}\nnot json\n');
    expect(await next).toMatchObject({ queueId: 'b' });
    expect(await log.waitFor(/delivered$/)).toMatchObject({ queueId: 'a' });
    expect(log.lines).toHaveLength(2);
  });
});
