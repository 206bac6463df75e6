/**
 * Postern's own package.json (its name and version), found by walking up from this module's directory:
 * src/ under tsx, build/tsc/ after tsc, or dist/ where the production build's chunks are (scripts/bundle.mjs).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PackageInfo {
  name: string;
  version: string;
}

let found: PackageInfo | undefined;

export function packageInfo(): PackageInfo {
  if (found) return found;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const info = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Partial<PackageInfo>;
      if (info.name === 'postern' && typeof info.version === 'string') return (found = { name: info.name, version: info.version });
    } catch {
      // not here (or not readable): one directory up
    }
    const parent = dirname(dir);
    if (parent === dir) return (found = { name: 'postern', version: '0.0.0' });
    dir = parent;
  }
}
