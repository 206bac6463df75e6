/**
 * Queue and Log (Settings/Registration > Management): the messages waiting for delivery, with Retry Now
 * and Delete, and what happened to each message with the upstream's reply and advice.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { OAuthAccounts } from '../../oauth/accounts.js';
import type { MessageQueue } from '../../queue/queue.js';
import type { DeliveryEvent } from '../../store/schema.js';
import type { WebPluginOptions } from '../context.js';
import { idParams, ignoredWhenInvalid, none } from '../form.js';
import type { MessageKey, Translate } from '../i18n/index.js';
import { csvCell } from '../audit-view.js';
import { ACCOUNT_ID, displayNameOf, oauthPathOf } from './oauth-account.js';

export const QUEUE_PATH = '/settings/queue';
export const LOG_PATH = '/settings/log';

const EVENT_KEYS: Record<DeliveryEvent, MessageKey> = {
  accepted: 'log.e.accepted',
  sent: 'log.e.sent',
  deferred: 'log.e.deferred',
  held: 'log.e.held',
  bounced: 'log.e.bounced',
  'bounce-queued': 'log.e.bounceQueued',
  deleted: 'log.e.deleted',
  retry: 'log.e.retry',
  released: 'log.e.released',
  requeued: 'log.e.requeued',
};

export interface QueuePageDependencies {
  queue: MessageQueue;
  /** Wakes the queue manager (Retry Now). */
  kick(): void;
  audit: { record(actor: string | null, action: string, detail?: string): Promise<void> };
  /** The sending accounts, for each message's account by name (absent: ids are shown). */
  accounts?: Pick<OAuthAccounts, 'list'>;
}

const LOG_PAGE_SIZE = 100;
/** The most entries the Log filters, pages and exports (newest first). */
const LOG_MAX = 5000;

const time = (ms: number | null | undefined) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '');
const size = (bytes: number) => (bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`);

export const queueRoutes: FastifyPluginAsyncZod<WebPluginOptions & { deps: QueuePageDependencies }> = async (app, { web, deps }) => {
  web.managementMenu.push({ href: QUEUE_PATH, label: 'Queue', labelKey: 'menu.queue' }, { href: LOG_PATH, label: 'Log', labelKey: 'menu.log' });

  /** Each account id's name and screen ('' is the Default's: a message from an older instance). */
  const accountNames = async (t: Translate) => {
    const rows = deps.accounts ? await deps.accounts.list() : [];
    const byId = new Map(rows.map((row) => [row.id, row]));
    return {
      accounts: rows.map((row) => ({ id: row.id, name: displayNameOf(row, t) })),
      accountName: (id: string) => {
        if (!id) return t('account.defaultChoice');
        const row = byId.get(id);
        return row ? displayNameOf(row, t) : id;
      },
      accountPath: (id: string) => {
        const row = byId.get(id);
        return row ? oauthPathOf(row.id, row.provider) : undefined;
      },
    };
  };

  // A filter: an account id that is not one shows every message, as the page without it does.
  const queueQuery = z.object({ account: ignoredWhenInvalid(z.string().regex(ACCOUNT_ID)) });
  app.get(QUEUE_PATH, { preValidation: web.requireLogin, schema: { querystring: queueQuery } }, async (request, reply) => {
    const [all, counts] = await Promise.all([deps.queue.list(), deps.queue.counts()]);
    const { account } = request.query;
    const messages = account ? all.filter((m) => m.accountId === account) : all;
    return reply.render('queue', { title: request.t('menu.queue'), base: QUEUE_PATH, messages, counts, time, size, now: Date.now(), account, ...(await accountNames(request.t)) });
  });

  const byId = { params: idParams, body: none };

  app.post(`${QUEUE_PATH}/:id/retry`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: byId }, async (request, reply) => {
    const { id } = request.params;
    const ok = await deps.queue.retryNow(id, request.user!.username);
    if (ok) {
      deps.kick();
      await deps.audit.record(request.user!.username, 'queue.retry', id);
      web.setFlash(request, { type: 'success', text: request.t('queue.retried') });
    } else {
      web.setFlash(request, { type: 'error', text: request.t('queue.notWaiting') });
    }
    return reply.redirect(QUEUE_PATH, 303);
  });

  app.post(`${QUEUE_PATH}/retry-all`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: none } }, async (request, reply) => {
    const { retried, held } = await deps.queue.retryAllNow(request.user!.username);
    if (retried > 0) {
      deps.kick();
      await deps.audit.record(request.user!.username, 'queue.retry', `all: ${retried} message${retried === 1 ? '' : 's'}`);
      const text = `${retried === 1 ? request.t('queue.retriedAllOne') : request.t('queue.retriedAllMany', { count: retried })}${held > 0 ? request.t('queue.retriedAllHeld') : ''}`;
      web.setFlash(request, { type: 'success', text });
    } else {
      web.setFlash(request, { type: 'error', text: request.t('queue.nothingToRetry') });
    }
    return reply.redirect(QUEUE_PATH, 303);
  });

  app.post(`${QUEUE_PATH}/:id/delete`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: byId }, async (request, reply) => {
    const { id } = request.params;
    const removed = await deps.queue.remove(id, request.user!.username);
    if (removed) {
      await deps.audit.record(request.user!.username, 'queue.deleted', `${id} from ${removed.reversePath || '<>'} to ${removed.recipients.join(', ')}`);
      web.setFlash(request, { type: 'success', text: request.t('queue.deleted') });
    } else {
      web.setFlash(request, { type: 'error', text: request.t('queue.cannotDelete') });
    }
    return reply.redirect(QUEUE_PATH, 303);
  });

  // A filter: an id that is not one shows the whole Log, as the page without it does. `q` filters the
  // entries by text (subject, sender, recipients, reply, the event's words); `page` pages them; `format=csv`
  // exports what the filter shows.
  const logQuery = z.object({
    id: ignoredWhenInvalid(z.uuid()),
    q: ignoredWhenInvalid(z.string().max(200)),
    page: ignoredWhenInvalid(z.coerce.number().int().min(1).max(100_000)),
    format: ignoredWhenInvalid(z.enum(['csv'])),
  });

  app.get(LOG_PATH, { preValidation: web.requireLogin, schema: { querystring: logQuery } }, async (request, reply) => {
    const { id } = request.query;
    const q = (request.query.q ?? '').trim();
    const t = request.t;
    const eventLabel = (event: DeliveryEvent) => (event in EVENT_KEYS ? t(EVENT_KEYS[event]) : event);
    const needle = q.toLowerCase();
    const all = (await deps.queue.logEntries(id ? { queueId: id, limit: LOG_MAX } : { limit: LOG_MAX })).filter(
      (e) => !needle || [e.subject, e.reversePath, e.client, e.recipients, e.reply, e.advice, e.event, eventLabel(e.event), e.code === null ? null : String(e.code)].some((f) => f?.toLowerCase().includes(needle)),
    );
    if (request.query.format === 'csv') {
      const header = [t('log.time'), t('log.event'), t('queue.subject'), t('queue.fromTo'), t('log.recipients'), t('log.reply'), t('log.advice'), 'ID'];
      const rows = all.map((e) => [new Date(e.at).toISOString(), eventLabel(e.event), e.subject ?? '', e.reversePath ?? '', e.recipients ?? '', [e.code, e.reply].filter((x) => x !== null && x !== '').join(' '), e.advice ?? '', e.queueId]);
      return reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', 'attachment; filename="postern-log.csv"')
        .header('cache-control', 'no-store')
        .send('\ufeff' + [header, ...rows].map((row) => row.map(csvCell).join(',')).join('\r\n') + '\r\n');
    }
    const pages = Math.max(1, Math.ceil(all.length / LOG_PAGE_SIZE));
    const page = Math.min(request.query.page ?? 1, pages);
    const link = (p: number, format?: string) => {
      const params = new URLSearchParams();
      if (id) params.set('id', id);
      if (q) params.set('q', q);
      if (p > 1) params.set('page', String(p));
      if (format) params.set('format', format);
      const text = params.toString();
      return `${LOG_PATH}${text ? `?${text}` : ''}`;
    };
    const entries = all.slice((page - 1) * LOG_PAGE_SIZE, page * LOG_PAGE_SIZE);
    const message = id ? await deps.queue.get(id) : undefined;
    return reply.render('log', {
      ...(await accountNames(t)),
      title: t('menu.log'),
      base: LOG_PATH,
      entries,
      id,
      message,
      eventLabel,
      time,
      size,
      q,
      page,
      pages,
      total: all.length,
      prev: page > 1 ? link(page - 1) : undefined,
      next: page < pages ? link(page + 1) : undefined,
      csv: link(1, 'csv'),
    });
  });
};
