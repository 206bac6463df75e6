/**
 * A certificate authority made at test time, and server certificates issued by it, for the stand-in
 * authorization servers and mail servers. Nothing here is ever trusted outside a test process.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCertificateAuthority, type CertificateAuthority, type KeyAndCertificate } from '../../src/tls/certificates.js';

export interface TestPki {
  ca: CertificateAuthority;
  /** Leaf for localhost, 127.0.0.1 and ::1. */
  server: KeyAndCertificate;
  /** The CA certificate written to a file (for curl --cacert, Dovecot, Python). */
  caFile: string;
  dir: string;
}

export async function createTestPki(name = 'Postern Test CA'): Promise<TestPki> {
  const ca = await createCertificateAuthority(name, 30);
  const server = await ca.issue(['localhost', '127.0.0.1', '::1']);
  const dir = mkdtempSync(join(tmpdir(), 'postern-pki-'));
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.cert);
  writeFileSync(join(dir, 'server.pem'), server.cert);
  writeFileSync(join(dir, 'server.key'), server.key, { mode: 0o600 });
  return { ca, server, caFile, dir };
}
