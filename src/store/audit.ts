/** The audit log: who changed what in the Remote UI, and what the system did on its own (token expired). */
import type { Store } from './store.js';

export interface AuditEntry {
  id: number;
  at: number;
  actor: string | null;
  action: string;
  detail: string | null;
}

export class AuditLog {
  constructor(private readonly store: Store) {}

  async record(actor: string | null, action: string, detail?: string): Promise<void> {
    await this.store.db
      .insertInto('audit_log')
      .values({ at: Date.now(), actor, action, detail: detail ?? null })
      .execute();
  }

  async recent(limit = 100): Promise<AuditEntry[]> {
    const rows = await this.store.db.selectFrom('audit_log').selectAll().orderBy('id', 'desc').limit(limit).execute();
    return rows.map((row) => ({ ...row, id: Number(row.id) }));
  }
}
