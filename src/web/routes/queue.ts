/**
 * Queue and Log (Settings/Registration > Management): the messages waiting for delivery, with Retry Now
 * and Delete, and what happened to each message with the upstream's reply and advice.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { MessageQueue } from '../../queue/queue.js';
import type { DeliveryEvent, QueueState } from '../../store/schema.js';
import type { WebPluginOptions } from '../context.js';
import { idParams, ignoredWhenInvalid, none } from '../form.js';

export const QUEUE_PATH = '/settings/queue';
export const LOG_PATH = '/settings/log';

export const STATE_LABELS: Record<QueueState, string> = {
  incoming: 'Incoming',
  active: 'Sending',
  deferred: 'Deferred',
  held: 'Held',
  sent: 'Sent',
  bounced: 'Returned',
};

export const EVENT_LABELS: Record<DeliveryEvent, string> = {
  accepted: 'Accepted',
  sent: 'Sent',
  deferred: 'Deferred',
  held: 'Held',
  bounced: 'Failed',
  'bounce-queued': 'Returned to Sender',
  deleted: 'Deleted',
  retry: 'Retry Now',
  released: 'Released',
  requeued: 'Requeued',
};

export interface QueuePageDependencies {
  queue: MessageQueue;
  /** Wakes the queue manager (Retry Now). */
  kick(): void;
  audit: { record(actor: string | null, action: string, detail?: string): Promise<void> };
}

const time = (ms: number | null | undefined) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '');
const size = (bytes: number) => (bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`);

export const queueRoutes: FastifyPluginAsyncZod<WebPluginOptions & { deps: QueuePageDependencies }> = async (app, { web, deps }) => {
  web.managementMenu.push({ href: QUEUE_PATH, label: 'Queue' }, { href: LOG_PATH, label: 'Log' });

  app.get(QUEUE_PATH, { preValidation: web.requireLogin, schema: { querystring: none } }, async (_request, reply) => {
    const [messages, counts] = await Promise.all([deps.queue.list(), deps.queue.counts()]);
    return reply.render('queue', { title: 'Queue', base: QUEUE_PATH, messages, counts, stateLabels: STATE_LABELS, time, size, now: Date.now() });
  });

  const byId = { params: idParams, body: none };

  app.post(`${QUEUE_PATH}/:id/retry`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: byId }, async (request, reply) => {
    const { id } = request.params;
    const ok = await deps.queue.retryNow(id, request.user!.username);
    if (ok) {
      deps.kick();
      await deps.audit.record(request.user!.username, 'queue.retry', id);
      web.setFlash(request, { type: 'success', text: 'The message is being tried again now.' });
    } else {
      web.setFlash(request, { type: 'error', text: 'That message is no longer waiting (it was sent, returned or deleted).' });
    }
    return reply.redirect(QUEUE_PATH, 303);
  });

  app.post(`${QUEUE_PATH}/retry-all`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: none } }, async (request, reply) => {
    const { retried, held } = await deps.queue.retryAllNow(request.user!.username);
    if (retried > 0) {
      deps.kick();
      await deps.audit.record(request.user!.username, 'queue.retry', `all: ${retried} message${retried === 1 ? '' : 's'}`);
      const text = `${retried === 1 ? '1 message is' : `${retried} messages are`} being tried again now.${held > 0 ? " Held messages are held again if the sending account's Token Status is still not Active." : ''}`;
      web.setFlash(request, { type: 'success', text });
    } else {
      web.setFlash(request, { type: 'error', text: 'No message is deferred or held; there is nothing to retry.' });
    }
    return reply.redirect(QUEUE_PATH, 303);
  });

  app.post(`${QUEUE_PATH}/:id/delete`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: byId }, async (request, reply) => {
    const { id } = request.params;
    const removed = await deps.queue.remove(id, request.user!.username);
    if (removed) {
      await deps.audit.record(request.user!.username, 'queue.deleted', `${id} from ${removed.reversePath || '<>'} to ${removed.recipients.join(', ')}`);
      web.setFlash(request, { type: 'success', text: 'The message was deleted without being sent. Its sender is not told.' });
    } else {
      web.setFlash(request, { type: 'error', text: 'That message cannot be deleted now (it is being sent, or was already sent, returned or deleted).' });
    }
    return reply.redirect(QUEUE_PATH, 303);
  });

  // A filter: an id that is not one shows the whole Log, as the page without it does.
  const logQuery = z.object({ id: ignoredWhenInvalid(z.uuid()) });

  app.get(LOG_PATH, { preValidation: web.requireLogin, schema: { querystring: logQuery } }, async (request, reply) => {
    const { id } = request.query;
    const entries = await deps.queue.logEntries(id ? { queueId: id, limit: 500 } : { limit: 300 });
    const message = id ? await deps.queue.get(id) : undefined;
    return reply.render('log', { title: 'Log', base: LOG_PATH, entries, id, message, eventLabels: EVENT_LABELS, stateLabels: STATE_LABELS, time, size });
  });
};
