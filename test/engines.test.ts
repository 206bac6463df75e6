/**
 * `engines.node` in package.json tells the truth: every Node.js version it admits can install and run what is
 * installed. Each installed package's own `engines.node` must cover the whole declared range, or `npm ci` on
 * a version we call supported prints EBADENGINE and the package may not work there (decision record 024).
 * The installed tree is read with `npm ls`, so what is checked is what npm installed, overrides included; the
 * lockfile adds the packages npm installs only on other platforms.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import semver from 'semver';
import { describe, expect, test } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Manifest {
  name: string;
  version: string;
  engines?: { node?: string };
  devDependencies?: Record<string, string>;
}

const readManifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest;

const own = readManifest(ROOT);
const declared = own.engines?.node ?? '';

/** The directories of the installed packages (without the project itself), as npm sees the tree. */
function installed(omitDev: boolean): string[] {
  const args = ['ls', '--all', '--parseable', ...(omitDev ? ['--omit=dev'] : [])];
  const out = execFileSync('npm', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return [...new Set(out.split('\n').map((line) => line.trim()).filter((line) => line && line !== ROOT.replace(/\/$/, '')))];
}

/** `name@version wants <range>` for each package whose `engines.node` leaves part of our range out. */
function narrower(dirs: string[]): string[] {
  const found: string[] = [];
  for (const dir of dirs) {
    const manifest = readManifest(dir);
    const wanted = manifest.engines?.node;
    if (wanted === undefined) continue;
    if (!semver.validRange(wanted) || !semver.subset(declared, wanted)) {
      found.push(`${manifest.name}@${manifest.version} wants node ${wanted}`);
    }
  }
  return [...new Set(found)].sort();
}

describe('engines.node', () => {
  test('is a valid range, and the Node.js running the tests is inside it', () => {
    expect(semver.validRange(declared), `engines.node "${declared}"`).not.toBeNull();
    expect(semver.satisfies(process.versions.node, declared), `Node ${process.version} is outside "${declared}"`).toBe(true);
  });

  test('no production dependency requires a newer Node.js than declared (cookie 2 wanted Node 22)', () => {
    const dirs = installed(true);
    expect(dirs.length).toBeGreaterThan(20);
    expect(narrower(dirs)).toEqual([]);
  });

  test('no development dependency does either, so npm ci is quiet on every supported version', () => {
    expect(narrower(installed(false))).toEqual([]);
  });

  test('no package in the lockfile does either, including the optional ones for other platforms', () => {
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string; engines?: unknown }> };
    const found: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === '' || typeof entry.engines !== 'object' || entry.engines === null || Array.isArray(entry.engines)) continue;
      const wanted = (entry.engines as { node?: string }).node;
      if (wanted !== undefined && (!semver.validRange(wanted) || !semver.subset(declared, wanted))) found.push(`${path}@${entry.version} wants node ${wanted}`);
    }
    expect(found).toEqual([]);
  });

  test('@types/node follows the lowest supported major, so the types offer nothing it lacks', () => {
    const lowest = semver.minVersion(declared)!;
    const typesRange = own.devDependencies?.['@types/node'] ?? '';
    expect(semver.minVersion(typesRange)?.major).toBe(lowest.major);
    expect(readManifest(join(ROOT, 'node_modules/@types/node')).version.split('.')[0]).toBe(String(lowest.major));
  });
});
