/**
 * Password hashing for Remote UI users and relay device accounts: scrypt (RFC 7914) from Node's crypto,
 * so no native addon is needed. Stored as `scrypt$<log2 N>$<r>$<p>$<salt>$<hash>` so that parameters can be
 * raised later without invalidating existing hashes.
 *
 * One scrypt computation at these parameters holds 32 MB (128 · N · r bytes) for tens of milliseconds. At most
 * MAX_CONCURRENT run at once in the process, whoever asks (Remote UI sign-ins, device AUTH, setting a
 * password); the others wait their turn. Without that cap, a handful of simultaneous sign-ins would add a
 * hundred megabytes or more to the gateway's memory, and a burst of them could exhaust it.
 */
import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const LOG2_N = 15;
const R = 8;
const P = 1;
const KEY_LENGTH = 32;

const MAX_CONCURRENT = 2;
let running = 0;
const waiting: Array<() => void> = [];

async function scrypt(password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  while (running >= MAX_CONCURRENT) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await new Promise((resolve, reject) => {
      scryptCallback(password, salt, keyLength, options, (error, key) => (error ? reject(error) : resolve(key)));
    });
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/** scrypt computations running now and waiting for their turn (for tests and metrics). */
export function passwordHashingLoad(): { running: number; waiting: number } {
  return { running, waiting: waiting.length };
}

function options(log2N: number, r: number, p: number): ScryptOptions {
  const N = 2 ** log2N;
  return { N, r, p, maxmem: 256 * N * r + 1024 * 1024 };
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(password, salt, KEY_LENGTH, options(LOG2_N, R, P));
  return ['scrypt', LOG2_N, R, P, salt.toString('base64'), hash.toString('base64')].join('$');
}

/** A hash of nothing in particular, compared against when the user does not exist, to keep timing even. */
let decoyHash: Promise<string> | undefined;

export async function verifyPassword(password: string, stored: string | null | undefined): Promise<boolean> {
  const encoded = stored ?? (await (decoyHash ??= hashPassword(randomBytes(16).toString('hex'))));
  const [scheme, log2N, r, p, salt, hash] = encoded.split('$');
  if (scheme !== 'scrypt' || !log2N || !r || !p || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = await scrypt(password, Buffer.from(salt, 'base64'), expected.length, options(+log2N, +r, +p));
  return timingSafeEqual(actual, expected) && stored !== undefined && stored !== null;
}

/** A readable random password (for the first administrator when none was configured). */
export function generatePassword(length = 20): string {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789';
  const bytes = randomBytes(length * 2);
  let out = '';
  for (const byte of bytes) {
    if (byte < 256 - (256 % alphabet.length)) out += alphabet[byte % alphabet.length];
    if (out.length === length) break;
  }
  return out;
}
