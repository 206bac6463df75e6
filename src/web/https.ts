/**
 * The Remote UI over HTTPS (POSTERN_HTTPS_PORT), beside the plain HTTP listener.
 *
 * Purpose: serve the same Remote UI over TLS 1.2 or newer, and turn the plain HTTP listener into a signpost
 * to it. Plain HTTP keeps only what must stay there: Google's loopback redirect URI is pinned to
 * `http://127.0.0.1:<POSTERN_HTTP_PORT>/oauth2/google/callback`, and health checks and Prometheus scrapers
 * are often configured for plain HTTP.
 * Inputs: the request handler of the plain listener (src/web/listener.ts); a certificate chain and key (PEM), either the administrator's files or
 * Postern's own certificate (the relay's STARTTLS one); the listen address.
 * Outputs: an https.Server that hands every request to the same handler as the plain listener, which hands it
 * to the Remote UI's own (`fastify.routing`), so routes, hooks, sessions and CSRF checks are one and the same
 * on both listeners (decision record 012).
 * On plain HTTP, every other page answers GET/HEAD with a redirect to the same path over HTTPS and any other
 * method with 403.
 * Failure modes: a port in use rejects listen() (EADDRINUSE), as for the other listeners. A failed TLS
 * handshake (a browser that does not trust the certificate yet) is logged at debug level and costs only that
 * connection.
 * Known limits: the administrator's certificate files are read at start-up; a renewed certificate takes
 * effect at the next restart. Postern's own certificate is followed when it changes in Relay Settings.
 */
import { X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { isIPv6 } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../log.js';

export interface CertificateAndKey {
  /** Certificate chain, PEM, the server certificate first. */
  cert: string;
  /** Private key, PEM. */
  key: string;
}

export interface HttpsListener {
  /** The bound port. */
  readonly port: number;
  /** Serves new connections with another certificate (open connections keep theirs). */
  setCertificate(certificate: CertificateAndKey): void;
  close(): Promise<void>;
}

function secureOptions(certificate: CertificateAndKey): SecureContextOptions {
  return { cert: certificate.cert, key: certificate.key, minVersion: 'TLSv1.2' };
}

/** An expired certificate is served all the same (the relay must not stop for the UI's sake), with a warning. */
function warnIfExpired(certificate: CertificateAndKey, log: Logger): void {
  const validTo = new Date(new X509Certificate(certificate.cert).validTo);
  if (validTo.getTime() < Date.now()) {
    log.warn({ component: 'web', validTo: validTo.toISOString() }, 'the Remote UI\'s HTTPS certificate has expired; browsers will warn until it is renewed');
  }
}

/** Listens for HTTPS with the plain listener's request handler and its timeouts. */
export async function listenHttps(
  plain: { server: { keepAliveTimeout: number; requestTimeout: number; headersTimeout: number }; handle(request: IncomingMessage, response: ServerResponse): void },
  options: { host: string; port: number; certificate: CertificateAndKey; log: Logger },
): Promise<HttpsListener> {
  const server: Server = createServer(secureOptions(options.certificate), (request, response) => plain.handle(request, response));
  server.keepAliveTimeout = plain.server.keepAliveTimeout;
  server.requestTimeout = plain.server.requestTimeout;
  server.headersTimeout = plain.server.headersTimeout;
  server.on('tlsClientError', (error, socket) => {
    options.log.debug({ component: 'web', remoteAddress: socket.remoteAddress, reason: error.message }, 'TLS handshake with a Remote UI client failed');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: options.host, port: options.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  warnIfExpired(options.certificate, options.log);
  return {
    port: (server.address() as AddressInfo).port,
    setCertificate(certificate) {
      server.setSecureContext(secureOptions(certificate));
      warnIfExpired(certificate, options.log);
    },
    close() {
      return new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        // As Fastify does for its own server: idle keep-alive connections would hold close() open.
        server.closeIdleConnections();
      });
    },
  };
}

// A Host header as browsers send it: a host name or an IPv4 address, or an IPv6 address in brackets, and
// an optional port. Anything else is not echoed into a Location header.
const HOST_HEADER = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::\d{1,5})?$/;

/** The host name the client used (the Host header without its port), else the address it connected to. */
export function requestedHostName(request: FastifyRequest): string {
  const match = HOST_HEADER.exec(request.headers.host ?? '');
  if (match) return match[1]!;
  const local = (request.raw.socket.localAddress ?? '127.0.0.1').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '').replace(/%.*$/, '');
  return isIPv6(local) ? `[${local}]` : local;
}

/** `https://<the host name the client used>:<HTTPS port>` */
export function httpsOrigin(request: FastifyRequest, httpsPort: number): string {
  return `https://${requestedHostName(request)}${httpsPort === 443 ? '' : `:${httpsPort}`}`;
}

/**
 * With HTTPS on, the plain HTTP listener serves `plainHttpPaths` as before and sends everything else to
 * HTTPS. Registered before the session plugin, so that a redirected request never loads or renews a
 * session over plain HTTP.
 */
export function registerPlainHttpRedirect(app: FastifyInstance, options: { httpsPort: () => number; plainHttpPaths: readonly string[] }): void {
  const served = new Set(options.plainHttpPaths);
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.protocol === 'https') return;
    const url = request.url.startsWith('/') ? request.url : '/';
    if (served.has(url.split('?', 1)[0]!)) return;
    const target = `${httpsOrigin(request, options.httpsPort())}${url}`;
    if (request.method === 'GET' || request.method === 'HEAD') {
      // 302, not 301: a permanent redirect is cached by browsers with no expiry, and would keep sending them
      // to the HTTPS port after an administrator turns HTTPS off again or moves it to another port.
      return reply.code(302).header('location', target).header('cache-control', 'no-store').send();
    }
    // A form posted over plain HTTP has already sent its fields (a password, perhaps) in clear; answering it
    // with a redirect would make the browser send them again, and 307/308 would keep the method. Refuse it.
    return reply.render(
      'error',
      { title: 'Use HTTPS', message: `The Remote UI is served over HTTPS. Open ${httpsOrigin(request, options.httpsPort())}/ and try again there.` },
      403,
    );
  });
}
