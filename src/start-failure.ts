/**
 * Why Postern could not start, in one line an administrator can act on: which port is in use and which
 * setting sets it, an address that is not on this host, a data directory that cannot be used, a database
 * that cannot be reached. main.ts prints it to stderr and logs it with the error's code.
 */
import type { Config } from './config.js';
import { isPosternError } from './errors.js';

interface ListenError {
  code?: unknown;
  syscall?: unknown;
  address?: unknown;
  port?: unknown;
}

/** The setting that chose this port, as far as it can be told (port 0 is chosen by the system). */
function settingOfPort(config: Config, port: number): string {
  const names: string[] = [];
  if (port === config.httpPort) names.push('POSTERN_HTTP_PORT');
  if (port === config.smtpPort) names.push('POSTERN_SMTP_PORT');
  if (config.https && port === config.https.port) names.push('POSTERN_HTTPS_PORT');
  return names.length > 0 ? names.join(' / ') : 'POSTERN_HTTP_PORT / POSTERN_SMTP_PORT';
}

export function describeStartFailure(error: unknown, config: Config): string {
  if (isPosternError(error)) return error.message;
  const { code, syscall, address, port } = (error ?? {}) as ListenError;
  if (syscall === 'listen' || syscall === 'bind') {
    const where = `${typeof address === 'string' ? address : config.host}:${String(port)}`;
    const setting = typeof port === 'number' ? settingOfPort(config, port) : 'the port settings';
    if (code === 'EADDRINUSE') return `port ${String(port)} (${setting}) is already in use by another program on ${where}; stop it or choose another port`;
    if (code === 'EADDRNOTAVAIL') {
      return `${String(address ?? config.host)} (POSTERN_HOST) is not an address of this host; use one of its addresses, or 0.0.0.0 for all of them`;
    }
    if (code === 'EACCES' || code === 'EPERM') {
      return `port ${String(port)} (${setting}) may not be opened by this user on ${where}: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port above 1023`;
    }
  }
  if (code === 'ENOTFOUND' && syscall === 'getaddrinfo') return `the host name ${String((error as { hostname?: unknown }).hostname ?? config.host)} (POSTERN_HOST) was not found`;
  const message = error instanceof Error ? error.message : String(error);
  return typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
}
