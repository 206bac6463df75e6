import { describe, expect, test } from 'vitest';
import { ErrorCodes, isPosternError } from '../errors.js';
import { parsePemCertificates } from './certificates.js';

describe('PEM text from the administrator', () => {
  test.each([
    ['no certificate at all', 'hello', /^No PEM certificate found/],
    ['a block that is not X.509', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', /^Certificate 1 is not a valid X\.509 certificate\.$/],
  ])('%s is refused with POSTERN_TLS_CERTIFICATE_INVALID', (_what, pem, message) => {
    let thrown: unknown;
    try {
      parsePemCertificates(pem);
    } catch (error) {
      thrown = error;
    }
    expect(isPosternError(thrown, ErrorCodes.TLS_CERTIFICATE_INVALID)).toBe(true);
    expect((thrown as Error).message).toMatch(message);
  });
});
