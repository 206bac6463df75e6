/**
 * Postern as a real child process (`node --import tsx src/main.ts`), for tests that must kill it: the bound
 * ports are read from its JSON log lines, as an operator's tooling would.
 *
 * Test infrastructure only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { LogLines, type LogLine } from './events.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface PosternProcess {
  readonly child: ChildProcess;
  readonly httpPort: number;
  readonly smtpPort: number;
  /** Parsed JSON log lines so far. */
  readonly lines: LogLine[];
  /** The same lines, with waits for a line to be written (events.ts). */
  readonly log: LogLines;
  count(msg: string): number;
  /** SIGKILL, and wait for the exit. */
  kill9(): Promise<void>;
  /** SIGTERM, and wait for the exit. */
  stop(): Promise<number | null>;
}

/**
 * Starts Postern. `entry: 'dist'` runs the production build (`node dist/main.js`, after `npm run build`);
 * the default runs the sources through tsx.
 */
export async function spawnPostern(env: Record<string, string>, options: { timeoutMs?: number; nodeArgs?: string[]; entry?: 'src' | 'dist' } = {}): Promise<PosternProcess> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const entry = options.entry === 'dist' ? ['dist/main.js'] : ['--import', 'tsx', 'src/main.ts'];
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), ...entry], {
    cwd: ROOT,
    env: { ...process.env, POSTERN_HOST: '127.0.0.1', POSTERN_HTTP_PORT: '0', POSTERN_SMTP_PORT: '0', POSTERN_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const counts = new Map<string, number>();
  const log = new LogLines((line) => {
    const msg = String(line.msg);
    counts.set(msg, (counts.get(msg) ?? 0) + 1);
  });
  const lines = log.lines;
  let stderr = '';
  let onLine: (() => void) | undefined;
  child.stdout!.on('data', (data: Buffer) => {
    log.write(data.toString());
    onLine?.();
  });
  child.stderr!.on('data', (data: Buffer) => (stderr += data.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const portOf = (msg: string) => lines.find((l) => l.msg === msg)?.port as number | undefined;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Postern did not start within ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    const check = () => {
      if (portOf('SMTP relay listening') !== undefined && portOf('Remote UI listening') !== undefined) {
        clearTimeout(timer);
        onLine = undefined;
        resolve();
      }
    };
    onLine = check;
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`Postern exited with ${code} during start-up: ${stderr}`));
    });
    check();
  });

  return {
    child,
    httpPort: portOf('Remote UI listening')!,
    smtpPort: portOf('SMTP relay listening')!,
    lines,
    log,
    count: (msg) => counts.get(msg) ?? 0,
    async kill9() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}
