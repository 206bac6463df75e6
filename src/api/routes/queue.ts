/** The queue (list, Retry Now, Delete) and the delivery log. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ErrorCodes } from '../../errors.js';
import { actorOf, ApiError, AUTH_ERRORS, auditChange, type ApiDependencies } from '../common.js';
import { buildQueueList, DEFAULT_QUEUE_LIMIT, ErrorBody, LogEntryShape, logEntryShape, MAX_QUEUE_LIMIT, messageShape, QUEUE_FILTERS, QueueBody, QueueMessage } from '../shapes.js';

const QueueId = z.object({ id: z.string().max(100).describe('The message id (a UUID)') });
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const queueRoutes: FastifyPluginAsyncZod<ApiDependencies> = async (app, deps) => {
  app.get(
    '/queue',
    {
      config: { apiScope: 'read' },
      schema: {
        summary: 'Messages in the queue, newest first',
        tags: ['queue'],
        querystring: z.object({
          state: z.enum(QUEUE_FILTERS).default('waiting').describe('waiting (not finished: incoming, active, deferred, held), all, or one state'),
          limit: z.coerce.number().int().min(1).max(MAX_QUEUE_LIMIT).default(DEFAULT_QUEUE_LIMIT),
        }),
        response: { 200: QueueBody, 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (request) => buildQueueList(deps.queue, { state: request.query.state, limit: request.query.limit }),
  );

  const waitingMessage = async (id: string) => {
    const message = UUID.test(id) ? await deps.queue.get(id) : undefined;
    if (!message) throw new ApiError(404, ErrorCodes.API_NOT_FOUND, `There is no message ${id} in the queue.`);
    return message;
  };

  app.post(
    '/queue/:id/retry',
    {
      config: { apiScope: 'operate' },
      schema: {
        summary: 'Retry Now: a deferred or held message is due at once',
        tags: ['queue'],
        params: QueueId,
        response: { 200: z.object({ message: QueueMessage }), 404: ErrorBody, 409: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const message = await waitingMessage(request.params.id);
      if (!(await deps.queue.retryNow(message.id, actorOf(request.apiToken!)))) {
        throw new ApiError(409, ErrorCodes.API_CONFLICT, 'That message is no longer waiting (it is being sent, or was sent, returned or deleted).');
      }
      deps.kick();
      await auditChange(deps.audit, request, 'queue.retry', message.id);
      return { message: messageShape((await deps.queue.get(message.id)) ?? message) };
    },
  );

  app.delete(
    '/queue/:id',
    {
      config: { apiScope: 'operate' },
      schema: {
        summary: 'Delete a waiting message without sending it (its sender is not told)',
        tags: ['queue'],
        params: QueueId,
        response: { 200: z.object({ deleted: QueueMessage }), 404: ErrorBody, 409: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const message = await waitingMessage(request.params.id);
      const removed = await deps.queue.remove(message.id, actorOf(request.apiToken!));
      if (!removed) throw new ApiError(409, ErrorCodes.API_CONFLICT, 'That message cannot be deleted now (it is being sent, or was already sent, returned or deleted).');
      await auditChange(deps.audit, request, 'queue.deleted', `${removed.id} from ${removed.reversePath || '<>'} to ${removed.recipients.join(', ')}`);
      return { deleted: messageShape(removed) };
    },
  );

  // ---- log ---------------------------------------------------------------------------------------------

  app.get(
    '/log',
    {
      config: { apiScope: 'read' },
      schema: {
        summary: 'The delivery log, newest first',
        tags: ['log'],
        querystring: z.object({
          limit: z.coerce.number().int().min(1).max(1000).default(300),
          id: z.string().regex(UUID).optional().describe('Only this message'),
        }),
        response: { 200: z.object({ entries: z.array(LogEntryShape) }), 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const entries = await deps.queue.logEntries({ limit: request.query.limit, ...(request.query.id ? { queueId: request.query.id } : {}) });
      return { entries: entries.map(logEntryShape) };
    },
  );
};
