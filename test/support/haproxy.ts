/**
 * Debian's HAProxy as a child process with a configuration of the test's own (`haproxy -f CFG -db`), in
 * front of several Postern instances: TCP mode with the PROXY protocol (v1, `send-proxy`: smtp-server reads
 * v1 only) for the relay, HTTP mode for the Remote UI. Every frontend gets a free port on 127.0.0.1; HAProxy
 * says when it is up by the stats socket answering.
 *
 * Test infrastructure only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from './events.js';

export interface Backend {
  name: string;
  smtpPort: number;
  httpPort: number;
}

export interface HaproxyFrontends {
  /** SMTP through HAProxy to every backend in turn (round robin). */
  smtp: number;
  /** SMTP to one backend only, by name (still through HAProxy, with the PROXY header). */
  smtpTo: Record<string, number>;
  /** The Remote UI through HAProxy (HTTP mode, round robin per request, no stickiness). */
  http: number;
}

export interface Haproxy {
  readonly ports: HaproxyFrontends;
  readonly config: string;
  stop(): Promise<void>;
}

/** A port that was free a moment ago (HAProxy cannot report the port it bound for `:0`). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The configuration: global/defaults, one TCP frontend per route, one HTTP frontend. */
export function haproxyConfig(backends: Backend[], ports: HaproxyFrontends, statsSocket: string): string {
  const smtpServers = (list: Backend[]) => list.map((b) => `  server ${b.name} 127.0.0.1:${b.smtpPort} send-proxy`).join('\n');
  const lines = [
    'global',
    `  stats socket ${statsSocket} mode 600 level admin`,
    '  maxconn 2000',
    'defaults',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    '  retries 0',
    '',
    'frontend smtp',
    '  mode tcp',
    `  bind 127.0.0.1:${ports.smtp}`,
    '  default_backend smtp_all',
    'backend smtp_all',
    '  mode tcp',
    '  balance roundrobin',
    smtpServers(backends),
  ];
  for (const backend of backends) {
    lines.push(
      '',
      `frontend smtp_${backend.name}`,
      '  mode tcp',
      `  bind 127.0.0.1:${ports.smtpTo[backend.name]!}`,
      `  default_backend smtp_only_${backend.name}`,
      `backend smtp_only_${backend.name}`,
      '  mode tcp',
      smtpServers([backend]),
    );
  }
  lines.push(
    '',
    'frontend web',
    '  mode http',
    `  bind 127.0.0.1:${ports.http}`,
    '  option forwardfor',
    '  default_backend web_all',
    'backend web_all',
    '  mode http',
    '  balance roundrobin',
    '  http-response set-header X-Served-By %s',
    ...backends.map((b) => `  server ${b.name} 127.0.0.1:${b.httpPort}`),
    '',
  );
  return lines.join('\n');
}

async function statsAnswer(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const client = connect(socket);
    let text = '';
    client.on('data', (data) => (text += data.toString()));
    client.on('error', () => resolve(false));
    client.on('close', () => resolve(text.length > 0));
    client.on('connect', () => client.end('show info\n'));
  });
}

/** Starts HAProxy in front of `backends`; resolves when its stats socket answers. */
export async function startHaproxy(backends: Backend[]): Promise<Haproxy> {
  const dir = mkdtempSync(join(tmpdir(), 'postern-haproxy-'));
  const ports: HaproxyFrontends = { smtp: await freePort(), smtpTo: {}, http: await freePort() };
  for (const backend of backends) ports.smtpTo[backend.name] = await freePort();
  const statsSocket = join(dir, 'stats.sock');
  const config = haproxyConfig(backends, ports, statsSocket);
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, config);
  const child: ChildProcess = spawn('haproxy', ['-f', file, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (data: Buffer) => (output += data.toString()));
  child.stderr!.on('data', (data: Buffer) => (output += data.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  // HAProxy writes nothing when it is ready: its stats socket answers once every frontend is bound (a port
  // another program opens: events.ts's one polling wait).
  await eventually(async () => {
    if (gone) throw new Error(`haproxy exited during start-up: ${output}`);
    return statsAnswer(statsSocket);
  }, 15_000, 'haproxy to start');
  return {
    ports,
    config,
    async stop() {
      if (!gone) {
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
