/**
 * CA certificates registered by the administrator (CA Certificate Settings). With Verify Server Certificate
 * on, connections trust the system roots, NODE_EXTRA_CA_CERTS and these.
 */
import { randomUUID } from 'node:crypto';
import { ErrorCodes, PosternError } from '../errors.js';
import { parsePemCertificates } from '../tls/certificates.js';
import type { CaCertificatesTable } from './schema.js';
import type { Store } from './store.js';

export type CaCertificate = CaCertificatesTable;

export class CaCertificates {
  #cache: string[] | undefined;

  constructor(private readonly store: Store) {}

  async list(): Promise<CaCertificate[]> {
    return this.store.db.selectFrom('ca_certificates').selectAll().orderBy('created_at').execute();
  }

  /** PEM texts of every registered CA, cached until the next change. */
  async pems(): Promise<string[]> {
    if (!this.#cache) this.#cache = (await this.list()).map((row) => row.pem);
    return this.#cache;
  }

  /**
   * Registers every certificate in the PEM text. Returns what was added and what was already there.
   * Throws POSTERN_TLS_CERTIFICATE_INVALID with a message for the administrator when the text is not usable.
   */
  async add(pemText: string): Promise<{ added: CaCertificate[]; duplicates: number }> {
    const parsed = parsePemCertificates(pemText);
    const added: CaCertificate[] = [];
    let duplicates = 0;
    for (const { pem, summary } of parsed) {
      if (!summary.isCertificateAuthority) {
        throw new PosternError(
          ErrorCodes.TLS_CERTIFICATE_INVALID,
          `"${summary.subject}" is not a CA certificate (basicConstraints CA:TRUE is missing); register the CA that issued it instead.`,
        );
      }
      const existing = await this.store.db
        .selectFrom('ca_certificates')
        .select('id')
        .where('fingerprint256', '=', summary.fingerprint256)
        .executeTakeFirst();
      if (existing) {
        duplicates++;
        continue;
      }
      const row: CaCertificate = {
        id: randomUUID(),
        subject: summary.subject,
        issuer: summary.issuer,
        fingerprint256: summary.fingerprint256,
        valid_from: summary.validFrom.getTime(),
        valid_to: summary.validTo.getTime(),
        pem,
        created_at: Date.now(),
      };
      await this.store.db.insertInto('ca_certificates').values(row).execute();
      added.push(row);
    }
    this.#cache = undefined;
    return { added, duplicates };
  }

  async remove(id: string): Promise<CaCertificate | undefined> {
    const row = await this.store.db.selectFrom('ca_certificates').selectAll().where('id', '=', id).executeTakeFirst();
    if (row) await this.store.db.deleteFrom('ca_certificates').where('id', '=', id).execute();
    this.#cache = undefined;
    return row;
  }
}
