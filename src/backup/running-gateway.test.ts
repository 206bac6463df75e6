import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { PID_FILE, runningGateway, writePidFile } from './running-gateway.js';

const dataDir = () => mkdtempSync(join(tmpdir(), 'postern-pid-'));

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

describe('the gateway pid file', () => {
  test('names this process while it is written, and is removed by its writer', async () => {
    const dir = dataDir();
    expect(await runningGateway(dir)).toBeNull();
    const remove = await writePidFile(dir);
    expect(await runningGateway(dir)).toBe(process.pid);
    await remove();
    expect(await runningGateway(dir)).toBeNull();
  });

  test('a dead process, a reused pid (another start time) or a malformed file does not count as a running gateway', async () => {
    const dir = dataDir();
    writeFileSync(join(dir, PID_FILE), `${await deadPid()} 1\n`);
    expect(await runningGateway(dir)).toBeNull();
    await writePidFile(dir);
    const [pid, startTime] = readFileSync(join(dir, PID_FILE), 'utf8').trim().split(' ');
    if (startTime !== '-') {
      writeFileSync(join(dir, PID_FILE), `${pid} ${Number(startTime) + 1}\n`);
      expect(await runningGateway(dir)).toBeNull();
    }
    writeFileSync(join(dir, PID_FILE), 'not a pid\n');
    expect(await runningGateway(dir)).toBeNull();
  });

  test('the writer does not remove a pid file another gateway has written since', async () => {
    const dir = dataDir();
    const remove = await writePidFile(dir);
    writeFileSync(join(dir, PID_FILE), '1 -\n');
    await remove();
    expect(readFileSync(join(dir, PID_FILE), 'utf8')).toBe('1 -\n');
  });
});
