/**
 * The `postern` command line as a child process (`node --import tsx src/cli/postern.ts`), as an administrator
 * runs it on the gateway's host: only the environment it is given (PATH plus POSTERN_*).
 *
 * Test infrastructure only.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'src', 'cli', 'postern.ts');
/** tsx's loader by its file URL, so that the command line can run in any working directory. */
const TSX = pathToFileURL(join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** The working directory (the repository by default). */
  cwd?: string;
  /** Written to standard input, which is then closed (by default it is closed at once). */
  stdin?: string | Buffer;
}

export function runCli(args: string[], env: Record<string, string>, timeoutMs = 30_000, options: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', TSX, CLI, ...args], { cwd: options.cwd ?? ROOT, env: { PATH: process.env.PATH ?? '', ...env } });
    child.stdin.end(options.stdin);
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`postern ${args.join(' ')} did not finish: ${stdout}\n${stderr}`));
    }, timeoutMs);
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
