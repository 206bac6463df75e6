/**
 * What both benchmark parts (bench/run.ts, bench/postgres.ts) drive Postern with: one device session per
 * message over a raw socket, the 10 KB test message, and the figures read off a process.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';

const HOST = '127.0.0.1';

/**
 * One device session per message over a raw socket: EHLO, MAIL, RCPT, DATA, QUIT. Resolves with its duration.
 * `from`: the envelope sender (scanner@printers.local unless told).
 */
export function session(port: number, body: Buffer, from = 'scanner@printers.local'): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = connect({ host: HOST, port });
    socket.setNoDelay(true);
    const script = ['EHLO device.bench', `MAIL FROM:<${from}>`, 'RCPT TO:<bob@example.test>', 'DATA', body, 'QUIT'];
    const expected = ['220', '250', '250', '250', '354', '250', '221'];
    let step = 0;
    let buffer = '';
    socket.on('data', (data: Buffer) => {
      buffer += data.toString('latin1');
      for (;;) {
        const match = /^(?:\d{3}-[^\r\n]*\r\n)*(\d{3})(?: [^\r\n]*)?\r\n/.exec(buffer);
        if (!match) return;
        buffer = buffer.slice(match[0].length);
        if (match[1] !== expected[step]) {
          socket.destroy();
          return reject(new Error(`step ${step}: expected ${expected[step]}, got ${match[0].trim()}`));
        }
        if (step === expected.length - 1) {
          socket.end();
          return resolve(performance.now() - started);
        }
        const next = script[step]!;
        socket.write(typeof next === 'string' ? next + '\r\n' : next);
        step++;
      }
    });
    socket.on('error', reject);
  });
}

/** Message `i` of about `size` bytes, dot-terminated for DATA. */
export function message(i: number, size: number): Buffer {
  const head = `From: scanner@printers.local\r\nTo: bob@example.test\r\nSubject: bench ${i}\r\n\r\n`;
  const line = 'a'.repeat(76) + '\r\n';
  const lines = Math.max(1, Math.floor((size - head.length - 5) / line.length));
  return Buffer.from(head + line.repeat(lines) + '.\r\n');
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function statusField(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) * 1024;
}

/** Peak resident memory of a process (VmHWM), bytes. */
export const peakRss = (pid: number) => statusField(pid, 'VmHWM');
/** Resident memory of a process now (VmRSS), bytes. */
export const currentRss = (pid: number) => statusField(pid, 'VmRSS');

/** RSS of a process in a quiet moment: sampled until two readings 100 ms apart agree within 1 MB (or 3 s). */
export async function settledRss(pid: number): Promise<number> {
  let last = currentRss(pid);
  for (let i = 0; i < 30; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = currentRss(pid);
    if (Math.abs(now - last) < 1024 * 1024) return now;
    last = now;
  }
  return last;
}
