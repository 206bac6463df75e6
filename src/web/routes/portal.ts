/**
 * The portal page (a status page: each account's Token Status, the queue's counts, the version),
 * Settings/Registration and Send: the entry points of the seed's steps 1–3. And the Audit Log, with paging, a
 * filter and CSV export.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { AuditEntry } from '../../store/audit.js';
import { QueueReads } from '../../queue/queue.js';
import type { QueueState } from '../../store/schema.js';
import { oauthPathOf } from './oauth-account.js';
import type { WebPluginOptions } from '../context.js';
import { auditActionLabel, csvCell } from '../audit-view.js';
import { ignoredWhenInvalid, none } from '../form.js';
import { packageInfo } from '../../package-info.js';

/** The states the portal counts: those of messages not yet delivered or returned. */
const PORTAL_STATES: QueueState[] = ['incoming', 'active', 'deferred', 'held'];
const AUDIT_PAGE_SIZE = 50;
const AUDIT_CSV_MAX = 10_000;

function posternVersion(): Promise<string> {
  return Promise.resolve(packageInfo().version);
}

/** The seed's Microsoft account, then the seed's Google account, then the rest. */
const rank = (row: { id: string }) => (row.id === 'microsoft' ? 0 : row.id === 'google' ? 1 : 2);

export const portalRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  const schema = { querystring: none };
  const queueReads = new QueueReads(web.store);
  const defaultAccountId = async () => (web.defaultAccountId ? web.defaultAccountId() : 'microsoft');

  app.get('/', { preValidation: web.requireLogin, schema }, async (request, reply) => {
    const [rows, counts, waiting, defaultId] = await Promise.all([web.accounts.list(), web.queue.counts(), queueReads.waitingByAccount(), defaultAccountId()]);
    // The seed's two first (Microsoft, Google), then the others by provider in the order they were added.
    rows.sort((a, b) => rank(a) - rank(b) || b.provider.localeCompare(a.provider) || a.created_at - b.created_at);
    const accounts = await Promise.all(
      rows.map(async (row) => ({
        ...(await web.oauth.status(row.id)),
        path: oauthPathOf(row.id, row.provider),
        waiting: (waiting.get(row.id) ?? 0) + (row.id === defaultId ? (waiting.get('') ?? 0) : 0),
        isDefault: row.id === defaultId,
      })),
    );
    return reply.render('portal', {
      title: request.t('portal.title'),
      accounts,
      counts,
      queueStates: PORTAL_STATES,
      version: await posternVersion(),
    });
  });

  app.get('/settings', { preValidation: web.requireLogin, schema }, async (request, reply) => {
    return reply.render('settings', { title: request.t('nav.settings') });
  });

  app.get('/settings/send', { preValidation: web.requireLogin, schema }, async (request, reply) => {
    return reply.render('send', { title: request.t('nav.send') });
  });

  const auditQuery = z.object({
    page: ignoredWhenInvalid(z.coerce.number().int().min(1).max(100_000)),
    q: ignoredWhenInvalid(z.string().max(200)),
    format: ignoredWhenInvalid(z.enum(['csv'])),
  });
  app.get('/settings/audit', { preValidation: web.requireLogin, schema: { querystring: auditQuery } }, async (request, reply) => {
    const q = (request.query.q ?? '').trim();
    const t = request.t;
    const matches = (entry: AuditEntry) => {
      if (!q) return true;
      const needle = q.toLowerCase();
      return [entry.actor ?? '', entry.action, auditActionLabel(t, entry.action), entry.detail ?? ''].some((field) => field.toLowerCase().includes(needle));
    };
    // The log is small (one row per administrator action): filtered here, newest first.
    const all = (await web.audit.recent(AUDIT_CSV_MAX)).filter(matches);
    if (request.query.format === 'csv') {
      const header = [t('audit.time'), t('audit.user'), t('audit.action'), t('audit.code'), t('audit.detail')];
      const rows = all.map((e) => [new Date(e.at).toISOString(), e.actor ?? 'system', auditActionLabel(t, e.action), e.action, e.detail ?? '']);
      const csv = [header, ...rows].map((row) => row.map(csvCell).join(',')).join('\r\n') + '\r\n';
      return reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', 'attachment; filename="postern-audit-log.csv"')
        .header('cache-control', 'no-store')
        .send('\ufeff' + csv);
    }
    const pages = Math.max(1, Math.ceil(all.length / AUDIT_PAGE_SIZE));
    const page = Math.min(request.query.page ?? 1, pages);
    const entries = all.slice((page - 1) * AUDIT_PAGE_SIZE, page * AUDIT_PAGE_SIZE).map((e) => ({ ...e, label: auditActionLabel(t, e.action) }));
    const link = (p: number, format?: string) => {
      const params = new URLSearchParams();
      if (q) params.set('q', q);
      if (p > 1) params.set('page', String(p));
      if (format) params.set('format', format);
      const s = params.toString();
      return `/settings/audit${s ? `?${s}` : ''}`;
    };
    return reply.render('audit', {
      title: t('menu.audit'),
      entries,
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
