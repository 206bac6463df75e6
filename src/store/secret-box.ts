/**
 * Secrets at rest: client secrets, access and refresh tokens, device codes and PKCE verifiers are stored
 * encrypted with AES-256-GCM. The key is 32 random bytes, generated at first start into
 * `<data dir>/secret.key` (mode 0600) unless POSTERN_SECRET_KEY provides it.
 *
 * Each ciphertext is bound to where it is stored (additional authenticated data such as
 * `oauth_accounts.refresh_token:microsoft`), so a value copied into another row or column does not decrypt.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, PosternError } from '../errors.js';

const VERSION = 'v1';
const IV_BYTES = 12;

export class SecretBox {
  readonly #key: Buffer;

  constructor(masterKey: Buffer) {
    if (masterKey.length !== 32) {
      throw new PosternError(ErrorCodes.STORE_KEY_INVALID, 'The encryption key must be exactly 32 bytes.');
    }
    this.#key = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'postern secrets at rest v1', 32));
  }

  encrypt(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    const tag = cipher.getAuthTag();
    return [VERSION, iv.toString('base64url'), body.toString('base64url'), tag.toString('base64url')].join('.');
  }

  decrypt(sealed: string, context: string): string {
    const [version, iv, body, tag] = sealed.split('.');
    if (version !== VERSION || iv === undefined || body === undefined || tag === undefined) {
      throw new PosternError(ErrorCodes.STORE_DECRYPT_FAILED, `Stored secret for ${context} has an unknown format.`);
    }
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, Buffer.from(iv, 'base64url'));
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
    } catch (cause) {
      throw new PosternError(
        ErrorCodes.STORE_DECRYPT_FAILED,
        `Stored secret for ${context} could not be decrypted (wrong key or altered data).`,
        { cause },
      );
    }
  }

  encryptOptional(plaintext: string | null | undefined, context: string): string | null {
    return plaintext === null || plaintext === undefined ? null : this.encrypt(plaintext, context);
  }

  decryptOptional(sealed: string | null | undefined, context: string): string | null {
    return sealed === null || sealed === undefined ? null : this.decrypt(sealed, context);
  }

  /** A key for another purpose (e.g. signing session cookies), derived from the same master key. */
  static deriveKey(masterKey: Buffer, purpose: string): Buffer {
    return Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), `postern ${purpose} v1`, 32));
  }
}

export const KEY_FILE_NAME = 'secret.key';

/**
 * Returns the master key: the configured one, or the key file in the data directory, created with mode 0600
 * at first start. A key file readable by others is tightened to 0600 with a warning to the caller.
 */
export function loadOrCreateMasterKey(
  dataDir: string,
  configured: Buffer | undefined,
): { key: Buffer; source: 'environment' | 'file' | 'generated'; path?: string; tightened?: boolean } {
  if (configured) return { key: configured, source: 'environment' };
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, KEY_FILE_NAME);
  if (existsSync(path)) {
    const text = readFileSync(path, 'utf8').trim();
    const key = Buffer.from(text, 'base64');
    if (key.length !== 32) {
      throw new PosternError(
        ErrorCodes.STORE_KEY_INVALID,
        `The key file ${path} does not hold a 32-byte base64 key; restore it from backup (secrets in the database cannot be read without it).`,
      );
    }
    let tightened = false;
    if ((statSync(path).mode & 0o077) !== 0) {
      chmodSync(path, 0o600);
      tightened = true;
    }
    return { key, source: 'file', path, tightened };
  }
  const key = randomBytes(32);
  writeFileSync(path, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  return { key, source: 'generated', path };
}
