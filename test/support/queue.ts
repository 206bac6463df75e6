/** Messages put into a real MessageQueue the way the relay does it: body streamed, then committed. */
import type { MessageEnvelope, MessageQueue, QueuedMessage } from '../../src/queue/queue.js';

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
