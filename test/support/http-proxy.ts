/**
 * A real HTTP CONNECT proxy for tests: the `proxy` package (TooTallNate) on 127.0.0.1, port 0, optionally
 * requiring Basic proxy authentication, recording every CONNECT it is asked for.
 */
import { createServer, type IncomingMessage } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { createProxy } from 'proxy';

export interface ConnectRequest {
  /** `host:port` asked for. */
  target: string;
  /** Whether a Proxy-Authorization header came with it. */
  withCredentials: boolean;
}

export interface TestProxy {
  /** `127.0.0.1:PORT` */
  readonly address: string;
  /** `http://127.0.0.1:PORT` (`https://` with `tls`), with `user:password@` when given. */
  url(credentials?: { user: string; password: string }): string;
  /** Every CONNECT request, in arrival order, including refused ones. */
  readonly connects: ConnectRequest[];
  close(): Promise<void>;
}

export interface TestProxyOptions {
  /** Require these credentials (Basic); anything else gets 407 Proxy Authentication Required. */
  credentials?: { user: string; password: string };
  /** Serve the proxy itself over TLS (an https:// proxy) with this key and certificate. */
  tls?: { key: string; cert: string };
}

export async function startTestProxy(options: TestProxyOptions = {}): Promise<TestProxy> {
  const server = createProxy(options.tls ? createTlsServer(options.tls) : createServer());
  const scheme = options.tls ? 'https' : 'http';
  const connects: ConnectRequest[] = [];
  const tunnels = new Set<Socket>();
  // An observer only: the proxy package's own 'connect' listener answers and pipes the tunnel.
  server.prependListener('connect', (req: IncomingMessage, socket: Socket) => {
    connects.push({ target: req.url ?? '', withCredentials: req.headers['proxy-authorization'] !== undefined });
    tunnels.add(socket);
    socket.once('close', () => tunnels.delete(socket));
  });
  if (options.credentials) {
    const expected = `Basic ${Buffer.from(`${options.credentials.user}:${options.credentials.password}`).toString('base64')}`;
    server.authenticate = (req) => req.headers['proxy-authorization'] === expected;
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    url: (credentials) =>
      credentials
        ? `${scheme}://${encodeURIComponent(credentials.user)}:${encodeURIComponent(credentials.password)}@127.0.0.1:${port}`
        : `${scheme}://127.0.0.1:${port}`,
    connects,
    async close() {
      for (const socket of tunnels) socket.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A `127.0.0.1:PORT` where nothing listens (bound once, then closed). */
export async function unusedAddress(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}
