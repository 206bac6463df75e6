/**
 * One owner per table. Every table of the store is read and written by exactly one module, which offers the
 * rest of Postern a small API of named reads and writes; no other module runs a query on it. A change to a
 * table's columns or meaning is then made in one file, and a reader of that file sees every use.
 *
 * The check is static: every non-test `.ts` file under src/ is scanned for Kysely table references
 * (`selectFrom`, `insertInto`, `replaceInto`, `updateTable`, `deleteFrom`, `mergeInto`, the joins, the schema
 * builder's `createTable` / `alterTable` / `dropTable`, `sql.table` / `sql.ref`) and for table names in `sql`
 * template text. A reference outside the table's owner fails, naming the file and the table.
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, test } from 'vitest';

const ROOT = join(import.meta.dirname, '..');

/** Table → the one module that queries it (paths from the repository root). */
export const TABLE_OWNERS = {
  email_settings: 'src/smtp-out/email-settings.ts',
  relay_settings: 'src/smtp-in/relay-settings.ts',
  relay_devices: 'src/smtp-in/devices.ts',
  sender_routes: 'src/smtp-in/routing.ts',
  queue_messages: 'src/queue/queue.ts',
  delivery_log: 'src/queue/queue.ts',
  message_bodies: 'src/queue/database-bodies.ts',
  settings_version: 'src/store/settings-watch.ts',
  pacing_starts: 'src/queue/pacing.ts',
  users: 'src/store/users.ts',
  sessions: 'src/store/sessions.ts',
  meta: 'src/store/store.ts',
  oauth_accounts: 'src/oauth/accounts.ts',
  device_authorizations: 'src/oauth/accounts.ts',
  authorization_attempts: 'src/oauth/accounts.ts',
  ca_certificates: 'src/store/ca-certificates.ts',
  audit_log: 'src/store/audit.ts',
  notification_settings: 'src/notify/settings.ts',
  notification_state: 'src/notify/outbox.ts',
  notifications: 'src/notify/outbox.ts',
  api_tokens: 'src/api/tokens.ts',
  // Kysely's own bookkeeping (not in schema.ts): the store runs the migrator and answers the schema version.
  kysely_migration: 'src/store/store.ts',
} as const;

/**
 * Modules allowed to name any table, and why. The online backup (src/backup/) needs no entry: it copies the
 * database page by page through the store and names no table.
 */
export const ANY_TABLE_ALLOWED = {
  'src/store/migrations.ts': 'creates and alters every table: the schema history is one sequence, in one file',
} as const;

type Table = keyof typeof TABLE_OWNERS;

const TABLES = Object.keys(TABLE_OWNERS) as Table[];
const BUILDER_CALLS = [
  'selectFrom',
  'insertInto',
  'replaceInto',
  'updateTable',
  'deleteFrom',
  'mergeInto',
  'innerJoin',
  'leftJoin',
  'rightJoin',
  'fullJoin',
  'crossJoin',
  'innerJoinLateral',
  'leftJoinLateral',
  'createTable',
  'alterTable',
  'dropTable',
];
const BUILDER = new RegExp(`\\b(?:${BUILDER_CALLS.join('|')})\\(\\s*(\\[[^\\]]*\\]|'[^']*'|"[^"]*"|\`[^\`]*\`)`, 'g');
const SQL_HELPER = /\bsql\.(?:table|ref|id)\(\s*('[^']*'|"[^"]*")/g;
/** A `sql` tagged template (optionally typed, sql<T>`…`): its text up to the closing backtick. */
const SQL_TEMPLATE = /\bsql(?:<[^`;]*?>)?`((?:[^`\\]|\\.)*)`/g;
const QUOTED = /'([^']*)'|"([^"]*)"|`([^`]*)`/g;

/** The table of a builder argument: 'queue_messages as q' and 'queue_messages.id' name queue_messages. */
const tableOf = (name: string) => name.trim().split(/[\s.]/)[0]!;

/** The tables a source text refers to, each once, with the first line it is named on. */
export function tableReferences(source: string): Array<{ table: string; line: number }> {
  const found = new Map<string, number>();
  const at = (index: number) => source.slice(0, index).split('\n').length;
  const note = (table: string, index: number) => {
    if (table && !found.has(table)) found.set(table, at(index));
  };
  for (const match of source.matchAll(BUILDER)) {
    for (const quoted of match[1]!.matchAll(QUOTED)) note(tableOf(quoted[1] ?? quoted[2] ?? quoted[3] ?? ''), match.index);
  }
  for (const match of source.matchAll(SQL_HELPER)) note(tableOf(match[1]!.slice(1, -1)), match.index);
  for (const match of source.matchAll(SQL_TEMPLATE)) {
    const text = match[1]!;
    for (const table of TABLES) if (new RegExp(`(?<![\\w.])"?${table}"?(?![\\w])`).test(text)) note(table, match.index);
  }
  return [...found].map(([table, line]) => ({ table, line }));
}

function sourceFiles(dir: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...sourceFiles(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') && !entry.name.endsWith('.d.ts')) files.push(path);
  }
  return files.sort();
}

/** The tables of schema.ts's `Database` interface. */
function schemaTables(): string[] {
  const schema = readFileSync(join(ROOT, 'src/store/schema.ts'), 'utf8');
  const body = /export interface Database \{([^}]*)\}/.exec(schema)?.[1];
  if (!body) throw new Error('src/store/schema.ts has no `export interface Database { … }`');
  return [...body.matchAll(/^\s*(\w+)\s*:/gm)].map((m) => m[1]!);
}

describe('one owner per table', () => {
  const files = sourceFiles(join(ROOT, 'src')).map((path) => ({ file: relative(ROOT, path), source: readFileSync(path, 'utf8') }));

  test('every table of the schema has an owner, and every owner exists', () => {
    expect(schemaTables().filter((table) => !(table in TABLE_OWNERS))).toEqual([]);
    for (const owner of new Set([...Object.values(TABLE_OWNERS), ...Object.keys(ANY_TABLE_ALLOWED)])) expect(existsSync(join(ROOT, owner)), owner).toBe(true);
  });

  test('no module queries a table it does not own', () => {
    const violations: string[] = [];
    for (const { file, source } of files) {
      if (file in ANY_TABLE_ALLOWED) continue;
      for (const { table, line } of tableReferences(source)) {
        const owner = (TABLE_OWNERS as Record<string, string>)[table];
        if (owner === undefined) violations.push(`${file}:${line}: table ${table} has no owner in TABLE_OWNERS`);
        else if (owner !== file) violations.push(`${file}:${line}: ${table} belongs to ${owner}`);
      }
    }
    expect(violations).toEqual([]);
  });

  test('each owner does query its tables (the map is not stale)', () => {
    const bySource = new Map(files.map(({ file, source }) => [file, new Set(tableReferences(source).map((r) => r.table))]));
    const unused = Object.entries(TABLE_OWNERS)
      .filter(([table, owner]) => !bySource.get(owner)?.has(table))
      .map(([table, owner]) => `${owner} does not query ${table}`);
    expect(unused).toEqual([]);
  });

  test('docs/architecture.md names the same owner for every table', () => {
    const doc = readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8');
    const section = doc.slice(doc.indexOf('## Who owns each table'));
    const documented = Object.fromEntries([...section.matchAll(/^\| `([a-z_]+)` \| `([^`]+)` \|$/gm)].map((m) => [m[1], m[2]]));
    expect(documented).toEqual({ ...TABLE_OWNERS });
  });
});

describe('the scanner', () => {
  test('finds builder calls, aliases, joins, several tables at once and schema changes', () => {
    const source = [
      "await db.selectFrom('queue_messages as q').innerJoin('delivery_log', 'delivery_log.queue_id', 'q.id')",
      '  .leftJoin("oauth_accounts", "x", "y");',
      'await trx.insertInto(`sessions`).values(row);',
      "db.updateTable('users'); db.deleteFrom(['meta', 'audit_log']);",
      "db.schema.alterTable('notifications').addColumn('x', 'text');",
      "db.selectFrom(sub.as('h')); db.selectFrom(table);",
    ].join('\n');
    expect(tableReferences(source)).toEqual([
      { table: 'queue_messages', line: 1 },
      { table: 'delivery_log', line: 1 },
      { table: 'oauth_accounts', line: 2 },
      { table: 'sessions', line: 3 },
      { table: 'users', line: 4 },
      { table: 'meta', line: 4 },
      { table: 'audit_log', line: 4 },
      { table: 'notifications', line: 5 },
    ]);
  });

  test('finds tables named in sql text and sql helpers, not other words', () => {
    const source = [
      'const a = await sql<{ name: string }>`select name from kysely_migration order by name desc limit 1`.execute(db);',
      'await sql`delete from "pacing_starts" where id = ${id}`.execute(db);',
      "const b = sql.ref('email_settings.account_id');",
      'await sql`select 1`.execute(db);',
      "const words = 'the users and their sessions';",
      'await sql`PRAGMA synchronous = FULL`.execute(connection);',
    ].join('\n');
    expect(tableReferences(source)).toEqual([
      { table: 'email_settings', line: 3 },
      { table: 'kysely_migration', line: 1 },
      { table: 'pacing_starts', line: 2 },
    ]);
  });
});
