/**
 * The gateway's pid file, `<data-dir>/postern.pid`: written by a starting gateway (main.ts), removed when it
 * stops, and read by `postern restore`, which must never replace the data under a running gateway.
 *
 * A pid alone is not proof: a gateway killed with SIGKILL (or a lost host) leaves its file behind, and its
 * pid may since belong to another process. So the file holds the pid and the process's start time (field 22
 * of /proc/<pid>/stat, Linux); a gateway counts as running only when a process with that pid exists and, where
 * /proc tells, started at that time. Without /proc (not Linux) a live pid is taken as the gateway: refusing a
 * restore wrongly is the safe mistake, and removing a stale file by hand fixes it.
 * Known limits: two gateways started on one data directory (a mistake in itself) share the file; the one
 * that stops last leaves none.
 */
import { readFileSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const PID_FILE = 'postern.pid';

/** The start time of process `pid` in clock ticks since boot, or null where /proc does not say. */
function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists, under another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Writes this process's pid file into `dataDir`; the returned function removes it if it is still this process's. */
export async function writePidFile(dataDir: string): Promise<() => Promise<void>> {
  const path = join(dataDir, PID_FILE);
  const content = `${process.pid} ${startTimeOf(process.pid) ?? '-'}\n`;
  await writeFile(path, content, { mode: 0o600 });
  return async () => {
    const now = await readFile(path, 'utf8').catch(() => null);
    if (now === content) await rm(path, { force: true });
  };
}

/** The pid of the gateway running on `dataDir`, or null when none is (no pid file, or a stale one). */
export async function runningGateway(dataDir: string): Promise<number | null> {
  const text = await readFile(join(dataDir, PID_FILE), 'utf8').catch(() => null);
  if (text === null) return null;
  const [pidText, startTime] = text.trim().split(' ');
  const pid = Number(pidText);
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  if (!isAlive(pid)) return null;
  const now = startTimeOf(pid);
  if (startTime && startTime !== '-' && now !== null && now !== startTime) return null; // the pid was reused
  return pid;
}
