/**
 * X.509 helpers: Postern's own certificates (the relay's STARTTLS certificate generated at first start)
 * and inspection of PEM certificates registered by the administrator (CA Certificate Settings).
 *
 * Generation is built on @peculiar/x509 over Node's WebCrypto (no OpenSSL binary is needed on the host),
 * loaded only when a certificate is made: it is needed once at first start, and costs memory for the
 * process's whole life otherwise. Parsing uses Node's own X509Certificate.
 */
import { X509Certificate, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { ErrorCodes, PosternError } from '../errors.js';

type X509 = typeof import('@peculiar/x509');
let x509Module: Promise<X509> | undefined;

/** @peculiar/x509, loaded at the first certificate made (docs/decisions/026-memory-footprint.md). */
export function loadX509(): Promise<X509> {
  x509Module ??= (async () => {
    await import('reflect-metadata');
    // CommonJS (its package.json has no exports map): module.exports is `default` under Node and when bundled.
    const module = await import('@peculiar/x509');
    const x509 = ((module as { default?: X509 }).default ?? module) as X509;
    x509.cryptoProvider.set(webcrypto as unknown as Crypto);
    return x509;
  })();
  return x509Module;
}

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;

export interface KeyAndCertificate {
  /** PKCS#8 private key, PEM. */
  key: string;
  /** Certificate, PEM. */
  cert: string;
}

export interface CertificateAuthority extends KeyAndCertificate {
  /** Issues a leaf certificate for the given DNS names and IP addresses. */
  issue(names: string[], options?: IssueOptions): Promise<KeyAndCertificate>;
}

export interface IssueOptions {
  /** Subject common name; defaults to the first name. */
  commonName?: string;
  /** Leave the subjectAltName extension out, so that only the CN names the host. */
  omitSubjectAltName?: boolean;
  validDays?: number;
}

function serialNumber(): string {
  // Positive 63-bit serial, hex.
  const bytes = webcrypto.getRandomValues(new Uint8Array(8));
  bytes[0] = bytes[0]! & 0x7f;
  return Buffer.from(bytes).toString('hex');
}

async function exportKey(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  const body = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`;
}

function subjectAltName(x509: X509, names: string[]): import('@peculiar/x509').SubjectAlternativeNameExtension {
  return new x509.SubjectAlternativeNameExtension(
    names.map((name) => (isIP(name) ? { type: 'ip' as const, value: name } : { type: 'dns' as const, value: name })),
  );
}

function escapeDnValue(value: string): string {
  return value.replace(/([,+"\\<>;=])/g, '\\$1');
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** Creates a certificate authority (used for tests, and for a private relay CA). */
export async function createCertificateAuthority(commonName: string, validDays = 3650): Promise<CertificateAuthority> {
  const x509 = await loadX509();
  const keys = await generateKeys();
  const now = Date.now();
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${escapeDnValue(commonName)}`,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + validDays * DAY_MS),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const cert = caCert.toString('pem') + '\n';
  const key = await exportKey(keys.privateKey);
  return {
    key,
    cert,
    async issue(names, options = {}) {
      const leafKeys = await generateKeys();
      const issued = Date.now();
      const extensions: import('@peculiar/x509').Extension[] = [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
      ];
      if (!options.omitSubjectAltName) extensions.push(subjectAltName(x509, names));
      const leaf = await x509.X509CertificateGenerator.create({
        serialNumber: serialNumber(),
        subject: `CN=${escapeDnValue(options.commonName ?? names[0] ?? 'localhost')}`,
        issuer: caCert.subject,
        notBefore: new Date(issued - DAY_MS),
        notAfter: new Date(issued + (options.validDays ?? 825) * DAY_MS),
        signingKey: keys.privateKey,
        publicKey: leafKeys.publicKey,
        signingAlgorithm: ALGORITHM,
        extensions,
      });
      return { key: await exportKey(leafKeys.privateKey), cert: leaf.toString('pem') + '\n' };
    },
  };
}

/** A self-signed server certificate, as the relay uses when no certificate was provided. */
export async function createSelfSignedCertificate(names: string[], validDays = 3650): Promise<KeyAndCertificate> {
  const x509 = await loadX509();
  const keys = await generateKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${escapeDnValue(names[0] ?? 'localhost')}`,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + validDays * DAY_MS),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      subjectAltName(x509, names),
    ],
  });
  return { key: await exportKey(keys.privateKey), cert: cert.toString('pem') + '\n' };
}

export interface CertificateSummary {
  subject: string;
  issuer: string;
  validFrom: Date;
  validTo: Date;
  /** SHA-256 fingerprint, colon-separated hex. */
  fingerprint256: string;
  isCertificateAuthority: boolean;
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Splits PEM text into its certificates and parses each. Throws POSTERN_TLS_CERTIFICATE_INVALID naming the problem when the
 * text holds no certificate or a block that does not parse.
 */
export function parsePemCertificates(pem: string): { pem: string; summary: CertificateSummary }[] {
  const blocks = pem.match(PEM_BLOCK) ?? [];
  if (blocks.length === 0) throw new PosternError(ErrorCodes.TLS_CERTIFICATE_INVALID, 'No PEM certificate found (expected "-----BEGIN CERTIFICATE-----").');
  return blocks.map((block, index) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(block);
    } catch {
      throw new PosternError(ErrorCodes.TLS_CERTIFICATE_INVALID, `Certificate ${index + 1} is not a valid X.509 certificate.`);
    }
    return {
      pem: block + '\n',
      summary: {
        subject: cert.subject.replace(/\n/g, ', '),
        issuer: cert.issuer.replace(/\n/g, ', '),
        validFrom: new Date(cert.validFrom),
        validTo: new Date(cert.validTo),
        fingerprint256: cert.fingerprint256,
        isCertificateAuthority: cert.ca,
      },
    };
  });
}
