/**
 * The gateway is started in three places: `npm start`, the container image's CMD and the systemd unit. Each
 * carries the same node options (the young-generation cap and the collection the body path asks for); a
 * flag added to one and forgotten in the others would change the memory a deployment uses without anyone
 * seeing it.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';

const root = new URL('../', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), 'utf8');

function npmStart(): string[] {
  const scripts = JSON.parse(read('package.json')).scripts as Record<string, string>;
  return scripts.start!.split(/\s+/);
}

function dockerCmd(): string[] {
  const line = read('Dockerfile').split('\n').filter((l) => /^CMD \[/.test(l)).at(-1)!;
  return JSON.parse(line.slice('CMD '.length)) as string[];
}

function systemdExecStart(): string[] {
  const line = read('contrib/postern.service').split('\n').find((l) => l.startsWith('ExecStart='))!;
  const words = line.slice('ExecStart='.length).trim().split(/\s+/);
  return ['node', ...words.slice(1)]; // the unit names node by its absolute path
}

describe('the start command', () => {
  test('npm start, the container image and the systemd unit run node with the same options', () => {
    const start = npmStart();
    expect(start[0]).toBe('node');
    expect(start.at(-1)).toBe('dist/main.js');
    expect(dockerCmd()).toEqual(start);
    expect(systemdExecStart()).toEqual(start);
  });
});
