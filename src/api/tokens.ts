/**
 * API tokens: the bearer credentials of the JSON API (RFC 6750), created by an Administrator on the Remote
 * UI's API Tokens page. The only code that reads or writes the `api_tokens` table.
 *
 * A token is `pst_` + 32 random bytes in base64url (43 characters), shown once when it is created. Postern
 * keeps its SHA-256 and its first 12 characters (the prefix, which the page shows so that tokens can be told
 * apart and by which a presented token is found); the token itself cannot be recovered from either. The
 * hashes of the rows with the presented prefix are compared in constant time.
 *
 * Failure modes: a presented token is malformed or unknown (`invalid`), past its expiry (`expired`) or revoked
 * (`revoked`); `authenticate` says which, and the API answers 401 with the matching code. Known limits: the
 * last-used time is written at most once a minute per token, so it is accurate to the minute.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { ApiScope, ApiTokensTable } from '../store/schema.js';
import type { Store } from '../store/store.js';

export const API_SCOPES: readonly ApiScope[] = ['read', 'operate', 'administer'];

export const API_SCOPE_LABELS: Record<ApiScope, string> = {
  read: 'Read (status, queue, log, devices, settings)',
  operate: 'Operate (Read, plus Retry Now and Delete in the queue)',
  administer: 'Administer (Operate, plus device accounts and settings)',
};

/** Whether a token of scope `held` may make a request that needs `needed` (each scope includes the one before). */
export function scopeAllows(held: ApiScope, needed: ApiScope): boolean {
  return API_SCOPES.indexOf(held) >= API_SCOPES.indexOf(needed);
}

export const TOKEN_PREFIX = 'pst_';
/** `pst_` + base64url of 32 bytes (43 characters, no padding). */
const TOKEN_FORMAT = /^pst_[A-Za-z0-9_-]{43}$/;
const PREFIX_LENGTH = TOKEN_PREFIX.length + 8;
export const DEFAULT_EXPIRY_DAYS = 90;
export const MAX_EXPIRY_DAYS = 365;
const DAY_MS = 24 * 60 * 60_000;
const LAST_USED_PRECISION_MS = 60_000;

export type ApiTokenStatus = 'Active' | 'Expired' | 'Revoked';

export interface ApiToken {
  id: string;
  name: string;
  scope: ApiScope;
  /** The token's first characters, e.g. `pst_Ab3dE5fG`: not a secret. */
  prefix: string;
  createdAt: number;
  createdBy: string;
  expiresAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
  revokedBy: string | null;
  status: ApiTokenStatus;
}

export type Authentication =
  | { ok: true; token: ApiToken }
  | { ok: false; reason: 'invalid' }
  | { ok: false; reason: 'expired' | 'revoked'; token: ApiToken };

export interface ApiTokenInput {
  name: string;
  scope: string;
  expiresInDays: string;
}

export type ApiTokenErrors = Partial<Record<keyof ApiTokenInput, string>>;

const NAME = /^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$/;

/** Whether this looks like a Postern API token at all (before any lookup). */
export function isWellFormedToken(value: string): boolean {
  return TOKEN_FORMAT.test(value);
}

function hashOf(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** Compared against when no row has the presented prefix, so that a miss costs what a hit costs. */
const NO_MATCH = Buffer.alloc(32);

export class ApiTokens {
  readonly #now: () => number;

  constructor(
    private readonly store: Store,
    options: { now?: () => number } = {},
  ) {
    this.#now = options.now ?? Date.now;
  }

  #toToken(row: ApiTokensTable): ApiToken {
    const expiresAt = Number(row.expires_at);
    const revokedAt = row.revoked_at === null ? null : Number(row.revoked_at);
    return {
      id: row.id,
      name: row.name,
      scope: row.scope,
      prefix: row.prefix,
      createdAt: Number(row.created_at),
      createdBy: row.created_by,
      expiresAt,
      lastUsedAt: row.last_used_at === null ? null : Number(row.last_used_at),
      revokedAt,
      revokedBy: row.revoked_by,
      status: revokedAt !== null ? 'Revoked' : expiresAt <= this.#now() ? 'Expired' : 'Active',
    };
  }

  /** The form's fields, checked with the page's wording. */
  async validate(input: ApiTokenInput): Promise<{ ok: true; value: { name: string; scope: ApiScope; expiresInDays: number } } | { ok: false; errors: ApiTokenErrors }> {
    const errors: ApiTokenErrors = {};
    const name = input.name.trim();
    if (!NAME.test(name)) errors.name = 'Name must be 1 to 64 characters: letters, digits, spaces and . _ @ -, starting with a letter or digit.';
    else if ((await this.list()).some((token) => token.status !== 'Revoked' && token.name.toLowerCase() === name.toLowerCase())) {
      errors.name = `A token named ${name} already exists. Revoke it first or choose another name.`;
    }
    const scope = API_SCOPES.find((s) => s === input.scope);
    if (!scope) errors.scope = 'Choose Read, Operate or Administer.';
    const daysText = input.expiresInDays.trim() || String(DEFAULT_EXPIRY_DAYS);
    const days = Number(daysText);
    if (!/^\d+$/.test(daysText) || days < 1 || days > MAX_EXPIRY_DAYS) errors.expiresInDays = `Enter a whole number of days from 1 to ${MAX_EXPIRY_DAYS}.`;
    if (Object.keys(errors).length > 0) return { ok: false, errors };
    return { ok: true, value: { name, scope: scope!, expiresInDays: days } };
  }

  /** Creates a token; the returned `secret` is the only copy of it. */
  async create(input: { name: string; scope: ApiScope; expiresInDays: number; createdBy: string }): Promise<{ token: ApiToken; secret: string }> {
    const secret = `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
    const now = this.#now();
    const row: ApiTokensTable = {
      id: randomUUID(),
      name: input.name,
      scope: input.scope,
      prefix: secret.slice(0, PREFIX_LENGTH),
      token_hash: hashOf(secret).toString('hex'),
      created_at: now,
      created_by: input.createdBy,
      expires_at: now + input.expiresInDays * DAY_MS,
      last_used_at: null,
      revoked_at: null,
      revoked_by: null,
    };
    await this.store.db.insertInto('api_tokens').values(row).execute();
    return { token: this.#toToken(row), secret };
  }

  /** Tokens not revoked, newest first (revoked rows stay, so that their use is answered "revoked"). */
  async list(): Promise<ApiToken[]> {
    const rows = await this.store.db.selectFrom('api_tokens').selectAll().where('revoked_at', 'is', null).orderBy('created_at', 'desc').execute();
    return rows.map((row) => this.#toToken(row));
  }

  async find(id: string): Promise<ApiToken | undefined> {
    const row = await this.store.db.selectFrom('api_tokens').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? this.#toToken(row) : undefined;
  }

  /** Revokes a token at once; returns it, or undefined when it does not exist or was already revoked. */
  async revoke(id: string, actor: string): Promise<ApiToken | undefined> {
    const result = await this.store.db
      .updateTable('api_tokens')
      .set({ revoked_at: this.#now(), revoked_by: actor })
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) return undefined;
    return this.find(id);
  }

  /** Checks a presented bearer token (RFC 6750 §2.1) and records its use. */
  async authenticate(presented: string): Promise<Authentication> {
    if (!isWellFormedToken(presented)) return { ok: false, reason: 'invalid' };
    const hash = hashOf(presented);
    const rows = await this.store.db.selectFrom('api_tokens').selectAll().where('prefix', '=', presented.slice(0, PREFIX_LENGTH)).execute();
    let match: ApiTokensTable | undefined;
    for (const row of rows) {
      const stored = Buffer.from(row.token_hash, 'hex');
      if (stored.length === hash.length && timingSafeEqual(stored, hash)) match = row;
    }
    if (rows.length === 0) timingSafeEqual(NO_MATCH, hash);
    if (!match) return { ok: false, reason: 'invalid' };
    const token = this.#toToken(match);
    if (token.status === 'Revoked') return { ok: false, reason: 'revoked', token };
    if (token.status === 'Expired') return { ok: false, reason: 'expired', token };
    const now = this.#now();
    if (token.lastUsedAt === null || now - token.lastUsedAt >= LAST_USED_PRECISION_MS) {
      await this.store.db.updateTable('api_tokens').set({ last_used_at: now }).where('id', '=', token.id).execute();
      token.lastUsedAt = now;
    }
    return { ok: true, token };
  }
}
