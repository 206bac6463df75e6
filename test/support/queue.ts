/** Messages put into a real MessageQueue the way the relay does it, and waits for what the queue manager did. */
import type { MessageEnvelope, MessageQueue, QueuedMessage } from '../../src/queue/queue.js';
import type { QueueManager } from '../../src/queue/queue-manager.js';
import { until, type Subscribe } from './events.js';

/** Commits `body` with a scanner's envelope (`envelope` overrides fields); the in-memory copy is dropped. */
export async function enqueueMessage(into: MessageQueue, body: Buffer | string, envelope: Partial<MessageEnvelope> = {}): Promise<QueuedMessage> {
  const incoming = await into.receive();
  await new Promise<void>((resolve, reject) => incoming.body.end(Buffer.from(body), (e?: Error | null) => (e ? reject(e) : resolve())));
  const message = await incoming.commit({
    reversePath: 'scanner@printers.local',
    recipients: ['bob@example.test'],
    body8bit: false,
    smtputf8: false,
    headerFrom: 'scanner@printers.local',
    subject: 'Scan',
    messageId: null,
    client: 'test',
    ...envelope,
  });
  into.forgetBody(message);
  return message;
}

/** Signals every pass of `manager` and every delivery outcome it records. */
export function queueEvents(manager: QueueManager): Subscribe {
  return (listener) => manager.onEvent(() => listener());
}

/**
 * Resolves with `check`'s first value, checked now and again whenever `manager` finished a pass or recorded
 * a delivery: everything that changes a message's state in this process goes through one of those.
 */
export function untilQueue<T>(manager: QueueManager, check: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs?: number): Promise<T> {
  return until(queueEvents(manager), check, what, timeoutMs);
}

/** The message's row once it is in `state` (checked after each pass and each recorded delivery). */
export function waitForState(manager: QueueManager, queue: MessageQueue, id: string, state: string, timeoutMs?: number): Promise<QueuedMessage> {
  return untilQueue(
    manager,
    async () => {
      const row = await queue.get(id);
      return row?.state === state ? row : undefined;
    },
    `${id} to be ${state}`,
    timeoutMs,
  );
}

/**
 * Resolves once `manager` has completed a pass that began after this call (and after every delivery then in
 * progress): whatever was due has been looked at. For asserting that something does not happen.
 */
export async function nextPass(manager: QueueManager): Promise<void> {
  // Idle: no pass runs now, and the next one starts on a later turn of the event loop, after the kick below.
  await manager.whenIdle();
  const passed = new Promise<void>((resolve) => {
    const off = manager.onEvent((event) => {
      if (event.type !== 'pass') return;
      off();
      resolve();
    });
  });
  manager.kick();
  await passed;
}
