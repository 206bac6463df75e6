/**
 * Schema migrations, applied in order at start-up by Kysely's Migrator. Written with Kysely's schema builder
 * so one migration serves SQLite and PostgreSQL; the only dialect-specific piece is the auto-increment key.
 * Never edit a migration that has shipped: add a new one.
 */
import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

export type DialectName = 'sqlite' | 'postgres';

type MigrationFactory = (dialect: DialectName) => Migration;

const autoIncrementId = (dialect: DialectName) => (dialect === 'postgres' ? 'bigserial' : 'integer');

const migrations: Record<string, MigrationFactory> = {
  '001_foundation': (dialect) => ({
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('meta')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('username', 'text', (c) => c.notNull().unique())
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('last_login_at', 'bigint')
        .execute();

      await db.schema
        .createTable('sessions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('data_enc', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('sessions_expires_at').on('sessions').column('expires_at').execute();

      await db.schema
        .createTable('oauth_accounts')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('provider', 'text', (c) => c.notNull())
        .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('verify_server_certificate', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('add_cn_to_verification_items', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('endpoint', 'text')
        .addColumn('client_id', 'text')
        .addColumn('client_secret_enc', 'text')
        .addColumn('authorization_endpoint', 'text')
        .addColumn('token_endpoint', 'text')
        .addColumn('connection_status', 'text')
        .addColumn('connection_detail', 'text')
        .addColumn('connection_checked_at', 'bigint')
        .addColumn('token_status', 'text', (c) => c.notNull())
        .addColumn('token_error', 'text')
        .addColumn('token_advice', 'text')
        .addColumn('token_status_at', 'bigint', (c) => c.notNull())
        .addColumn('mailbox', 'text')
        .addColumn('display_name', 'text')
        .addColumn('access_token_enc', 'text')
        .addColumn('access_token_expires_at', 'bigint')
        .addColumn('refresh_token_enc', 'text')
        .addColumn('granted_scope', 'text')
        .addColumn('token_issued_at', 'bigint')
        .addColumn('refresh_failures', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('next_refresh_attempt_at', 'bigint')
        .addColumn('refresh_lease_owner', 'text')
        .addColumn('refresh_lease_until', 'bigint')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('device_authorizations')
        .addColumn('account_id', 'text', (c) => c.primaryKey().references('oauth_accounts.id').onDelete('cascade'))
        .addColumn('device_code_enc', 'text', (c) => c.notNull())
        .addColumn('user_code', 'text', (c) => c.notNull())
        .addColumn('verification_uri', 'text', (c) => c.notNull())
        .addColumn('verification_uri_complete', 'text')
        .addColumn('message', 'text')
        .addColumn('poll_interval', 'integer', (c) => c.notNull())
        .addColumn('started_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('next_poll_at', 'bigint', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('detail', 'text')
        .addColumn('network_failures', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('poll_lease_owner', 'text')
        .addColumn('poll_lease_until', 'bigint')
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('authorization_attempts')
        .addColumn('state_hash', 'text', (c) => c.primaryKey())
        .addColumn('account_id', 'text', (c) => c.notNull().references('oauth_accounts.id').onDelete('cascade'))
        .addColumn('session_id', 'text', (c) => c.notNull())
        .addColumn('code_verifier_enc', 'text', (c) => c.notNull())
        .addColumn('redirect_uri', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('used_at', 'bigint')
        .execute();

      await db.schema
        .createTable('ca_certificates')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('issuer', 'text', (c) => c.notNull())
        .addColumn('fingerprint256', 'text', (c) => c.notNull().unique())
        .addColumn('valid_from', 'bigint', (c) => c.notNull())
        .addColumn('valid_to', 'bigint', (c) => c.notNull())
        .addColumn('pem', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('audit_log')
        .addColumn('id', autoIncrementId(dialect), (c) =>
          dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
        )
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('actor', 'text')
        .addColumn('action', 'text', (c) => c.notNull())
        .addColumn('detail', 'text')
        .execute();
      await db.schema.createIndex('audit_log_at').on('audit_log').column('at').execute();
    },
  }),
  '002_relay_queue': (dialect) => ({
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('email_settings')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('account_id', 'text', (c) => c.notNull())
        .addColumn('smtp_host', 'text', (c) => c.notNull())
        .addColumn('smtp_port', 'integer', (c) => c.notNull())
        .addColumn('tls_mode', 'text', (c) => c.notNull())
        .addColumn('verify_server_certificate', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('add_cn_to_verification_items', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('sender_address', 'text')
        .addColumn('allowed_from_addresses', 'text', (c) => c.notNull().defaultTo(''))
        .addColumn('messages_per_minute', 'integer', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('relay_settings')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('allowed_networks', 'text', (c) => c.notNull().defaultTo(''))
        .addColumn('max_message_size', 'bigint', (c) => c.notNull())
        .addColumn('allow_insecure_auth', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('allow_legacy_tls', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('bare_newlines', 'text', (c) => c.notNull())
        .addColumn('tls_cert', 'text')
        .addColumn('tls_key_enc', 'text')
        .addColumn('tls_cert_source', 'text')
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('relay_devices')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('username', 'text', (c) => c.notNull().unique())
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('last_login_at', 'bigint')
        .execute();

      await db.schema
        .createTable('queue_messages')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('reverse_path', 'text', (c) => c.notNull())
        .addColumn('recipients', 'text', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('body_8bit', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('smtputf8', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('header_from', 'text')
        .addColumn('subject', 'text')
        .addColumn('message_id_header', 'text')
        .addColumn('client', 'text', (c) => c.notNull())
        .addColumn('is_bounce', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('received_at', 'bigint', (c) => c.notNull())
        .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('lease_owner', 'text')
        .addColumn('lease_until', 'bigint')
        .addColumn('last_code', 'integer')
        .addColumn('last_reply', 'text')
        .addColumn('last_advice', 'text')
        .addColumn('done_at', 'bigint')
        .execute();
      await db.schema
        .createIndex('queue_messages_due')
        .on('queue_messages')
        .columns(['node_id', 'state', 'next_attempt_at'])
        .execute();
      await db.schema.createIndex('queue_messages_received_at').on('queue_messages').column('received_at').execute();

      await db.schema
        .createTable('delivery_log')
        .addColumn('id', autoIncrementId(dialect), (c) =>
          dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
        )
        .addColumn('queue_id', 'text', (c) => c.notNull())
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('recipients', 'text')
        .addColumn('code', 'integer')
        .addColumn('reply', 'text')
        .addColumn('advice', 'text')
        .execute();
      await db.schema.createIndex('delivery_log_queue_id').on('delivery_log').column('queue_id').execute();
      await db.schema.createIndex('delivery_log_at').on('delivery_log').column('at').execute();
    },
  }),
  '003_shared_pacing': (dialect) => ({
    async up(db: Kysely<any>) {
      // Delivery starts inside the pacing window, so that every instance on one database counts the same
      // starts (queue/pacing.ts, docs/decisions/008). At most `limit` rows per key survive a take.
      await db.schema
        .createTable('pacing_starts')
        .addColumn('id', autoIncrementId(dialect), (c) =>
          dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
        )
        .addColumn('pacing_key', 'text', (c) => c.notNull())
        .addColumn('started_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('pacing_starts_key_started_at').on('pacing_starts').columns(['pacing_key', 'started_at']).execute();
    },
  }),
  '004_server_clock': () => ({
    async up(db: Kysely<any>) {
      // The authorization server's clock against this host's (oauth/clock-skew.ts, docs/decisions/009).
      // One column per statement: SQLite's ALTER TABLE adds one column at a time.
      await db.schema.alterTable('oauth_accounts').addColumn('clock_offset_ms', 'bigint').execute();
      await db.schema.alterTable('oauth_accounts').addColumn('clock_server_host', 'text').execute();
      await db.schema.alterTable('oauth_accounts').addColumn('clock_checked_at', 'bigint').execute();
    },
  }),
  '005_device_allowed_senders': () => ({
    async up(db: Kysely<any>) {
      // Allowed Sender Addresses of a device account, one per line (smtp-in/allowed-senders.ts). The empty
      // default keeps every existing device as it was: any sender.
      await db.schema.alterTable('relay_devices').addColumn('allowed_senders', 'text', (c) => c.notNull().defaultTo('')).execute();
    },
  }),
  '006_notifications': (dialect) => ({
    async up(db: Kysely<any>) {
      // Webhook notifications (src/notify, docs/decisions/013): the settings, one state row per event key
      // (changed only by conditional writes, so instances on one database notify once), and the
      // notifications themselves (outbox while delivering, then the record the Notifications page shows).
      await db.schema
        .createTable('notification_settings')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('webhook_url_enc', 'text')
        .addColumn('format', 'text', (c) => c.notNull())
        .addColumn('events', 'text', (c) => c.notNull())
        .addColumn('link_base', 'text')
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_by', 'text')
        .execute();
      await db.schema
        .createTable('notification_state')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('phase', 'text', (c) => c.notNull())
        .addColumn('since', 'bigint')
        .addColumn('opened_at', 'bigint')
        .addColumn('cursor', 'bigint')
        .addColumn('version', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('notifications')
        .addColumn('id', autoIncrementId(dialect), (c) =>
          dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
        )
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('phase', 'text', (c) => c.notNull())
        .addColumn('title', 'text', (c) => c.notNull())
        .addColumn('notice', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
        .addColumn('lease_owner', 'text')
        .addColumn('lease_until', 'bigint')
        .addColumn('http_status', 'integer')
        .addColumn('result', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('done_at', 'bigint')
        .execute();
      await db.schema.createIndex('notifications_due').on('notifications').columns(['status', 'next_attempt_at']).execute();
      await db.schema.createIndex('notifications_created_at').on('notifications').column('created_at').execute();
    },
  }),
  '007_upstream_extensions': () => ({
    async up(db: Kysely<any>) {
      // What the upstream advertised after EHLO (smtp-out/extensions.ts): the relay advertises 8BITMIME /
      // SMTPUTF8 only if the upstream has them (docs/protocol.md §5.3). Kept with the target it was seen
      // at, so a changed upstream counts as not yet seen (docs/decisions/014).
      await db.schema.alterTable('email_settings').addColumn('upstream_extensions_target', 'text').execute();
      await db.schema.alterTable('email_settings').addColumn('upstream_extensions', 'text').execute();
      await db.schema.alterTable('email_settings').addColumn('upstream_extensions_seen_at', 'bigint').execute();
    },
  }),
  '008_session_users': () => ({
    async up(db: Kysely<any>) {
      // Whose a Remote UI session is (written by the session store on every save; null before login), so that
      // a password change or reset, or removing the user, can end that user's sessions (docs/decisions/018).
      // Sessions saved before this migration have none; they end at their expiry as before.
      await db.schema.alterTable('sessions').addColumn('user_id', 'text').execute();
      await db.schema.createIndex('sessions_user_id').on('sessions').column('user_id').execute();
      // Sessions of the user that signed in before this time are not accepted (null: all are). Closes the
      // window where a request already under way saves its session again after the rows were deleted.
      await db.schema.alterTable('users').addColumn('sessions_not_before', 'bigint').execute();
    },
  }),
  '009_api_tokens': () => ({
    async up(db: Kysely<any>) {
      // Bearer tokens for the JSON API (src/api/tokens.ts): only a SHA-256 of each token is kept. A revoked
      // token keeps its row, so that presenting it is answered "revoked", not "unknown".
      await db.schema
        .createTable('api_tokens')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('scope', 'text', (c) => c.notNull())
        .addColumn('prefix', 'text', (c) => c.notNull())
        .addColumn('token_hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('last_used_at', 'bigint')
        .addColumn('revoked_at', 'bigint')
        .addColumn('revoked_by', 'text')
        .execute();
      await db.schema.createIndex('api_tokens_prefix').on('api_tokens').column('prefix').execute();
    },
  }),
  '010_shared_bodies': (dialect) => ({
    async up(db: Kysely<any>) {
      // Message bodies every instance can read (queue/database-bodies.ts, docs/decisions/028). Only
      // PostgreSQL puts bodies here; SQLite keeps its spool files, the table stays empty. An older instance
      // tolerates this migration: it ignores the new table and column, and the rows it delivers (its own
      // node's) still have their bodies in its spool.
      await db.schema
        .createTable('message_bodies')
        .addColumn('message_id', 'text', (c) => c.notNull())
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('data', dialect === 'postgres' ? 'bytea' : 'blob', (c) => c.notNull())
        .addPrimaryKeyConstraint('message_bodies_pk', ['message_id', 'seq'])
        .execute();
      await db.schema.alterTable('queue_messages').addColumn('body_in_database', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      // Settings changed by one instance reach the others (store/settings-watch.ts): a trigger bumps one
      // row (polled) and sends a notification (LISTEN, the fast path). A device's sign-in time is not a
      // setting: an update that changes only last_login_at does not count.
      await db.schema
        .createTable('settings_version')
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('version', 'bigint', (c) => c.notNull())
        .execute();
      await db.insertInto('settings_version').values({ id: 1, version: 0 }).execute();
      if (dialect !== 'postgres') return;
      await sql`
        create function postern_settings_changed() returns trigger language plpgsql as $$
        begin
          if tg_table_name = 'relay_devices' and tg_op = 'UPDATE' then
            if new.username = old.username and new.password_hash = old.password_hash and new.allowed_senders = old.allowed_senders then
              return null;
            end if;
          end if;
          update settings_version set version = version + 1 where id = 1;
          perform pg_notify('postern_settings', tg_table_name);
          return null;
        end $$`.execute(db);
      for (const table of ['relay_settings', 'email_settings', 'relay_devices', 'notification_settings', 'ca_certificates']) {
        await sql`create trigger ${sql.raw(`${table}_changed`)} after insert or update or delete on ${sql.raw(table)} for each row execute function postern_settings_changed()`.execute(db);
      }
    },
  }),
  '011_sending_accounts': (dialect) => ({
    async up(db: Kysely<any>) {
      // Several sending accounts (oauth/accounts.ts): each has a name, an authorization type and a delivery
      // method; the seed's two accounts keep their ids ('microsoft', 'google') and stay as they were.
      await db.schema.alterTable('oauth_accounts').addColumn('name', 'text', (c) => c.notNull().defaultTo('')).execute();
      await db.schema.alterTable('oauth_accounts').addColumn('authorization_type', 'text', (c) => c.notNull().defaultTo('delegated')).execute();
      await db.schema.alterTable('oauth_accounts').addColumn('delivery_method', 'text', (c) => c.notNull().defaultTo('smtp')).execute();
      await db.schema.alterTable('oauth_accounts').addColumn('client_certificate', 'text').execute();
      await db.schema.alterTable('oauth_accounts').addColumn('client_key_enc', 'text').execute();
      await db.schema.alterTable('oauth_accounts').addColumn('service_account_key_enc', 'text').execute();
      await db.schema.alterTable('oauth_accounts').addColumn('app_mailbox', 'text').execute();
      await db.schema.alterTable('oauth_accounts').addColumn('graph_large_messages', 'integer', (c) => c.notNull().defaultTo(0)).execute();

      // E-Mail Settings become one row per account (id = the account's id). The old single row names the
      // account that sent everything: it keeps its settings under that account's id and becomes the Default.
      const old = (await db.selectFrom('email_settings').select(['id', 'account_id']).where('id', '=', 'default').executeTakeFirst()) as
        | { id: string; account_id: string }
        | undefined;
      const defaultAccount = old?.account_id ?? 'microsoft';
      await db.schema.alterTable('email_settings').addColumn('is_default', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      if (old) await db.updateTable('email_settings').set({ id: old.account_id, is_default: 1 }).where('id', '=', 'default').execute();

      // Allowed Networks entry → sending account, as JSON ({"192.0.2.0/24": "<account id>"}); absent: the Default.
      await db.schema.alterTable('relay_settings').addColumn('network_accounts', 'text', (c) => c.notNull().defaultTo('{}')).execute();
      await db.schema.alterTable('relay_devices').addColumn('sending_account_id', 'text').execute();

      // The account a message was routed to when it was accepted: it is sent through no other.
      await db.schema.alterTable('queue_messages').addColumn('account_id', 'text', (c) => c.notNull().defaultTo('')).execute();
      await db.updateTable('queue_messages').set({ account_id: defaultAccount }).execute();

      await db.schema
        .createTable('sender_routes')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('pattern', 'text', (c) => c.notNull().unique())
        .addColumn('account_id', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      if (dialect !== 'postgres') return;
      // A device's sending account is a setting like its password; its sign-in time still is not.
      await sql`
        create or replace function postern_settings_changed() returns trigger language plpgsql as $$
        begin
          if tg_table_name = 'relay_devices' and tg_op = 'UPDATE' then
            if new.username = old.username and new.password_hash = old.password_hash and new.allowed_senders = old.allowed_senders
               and new.sending_account_id is not distinct from old.sending_account_id then
              return null;
            end if;
          end if;
          update settings_version set version = version + 1 where id = 1;
          perform pg_notify('postern_settings', tg_table_name);
          return null;
        end $$`.execute(db);
      await sql`create trigger sender_routes_changed after insert or update or delete on sender_routes for each row execute function postern_settings_changed()`.execute(db);
    },
  }),
};

export function migrationProvider(dialect: DialectName): MigrationProvider {
  return {
    async getMigrations() {
      return Object.fromEntries(Object.entries(migrations).map(([name, factory]) => [name, factory(dialect)]));
    },
  };
}
