/**
 * The OAuth modules import one another without a circle (type-only imports included): each provider's
 * authorization and the common service meet in shared modules, never in each other.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));

/** Each module of this folder (tests left out) with the modules of this folder it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of readdirSync(here).filter((name) => name.endsWith('.ts') && !name.endsWith('.test.ts'))) {
    const source = readFileSync(join(here, file), 'utf8');
    const imported = [...source.matchAll(/\bfrom\s+'\.\/([\w.-]+)\.js'/g)].map((match) => `${match[1]}.ts`);
    graph.set(file, [...new Set(imported)]);
  }
  return graph;
}

/** The first circle found, as the path that closes it, or undefined. */
function findCircle(graph: Map<string, string[]>): string[] | undefined {
  const done = new Set<string>();
  const visit = (module: string, path: string[]): string[] | undefined => {
    if (path.includes(module)) return [...path.slice(path.indexOf(module)), module];
    if (done.has(module)) return undefined;
    for (const next of graph.get(module) ?? []) {
      const circle = visit(next, [...path, module]);
      if (circle) return circle;
    }
    done.add(module);
    return undefined;
  };
  for (const module of graph.keys()) {
    const circle = visit(module, []);
    if (circle) return circle;
  }
  return undefined;
}

describe('src/oauth imports', () => {
  test('the graph is read: the common service imports both authorizations', () => {
    expect(importGraph().get('service.ts')).toEqual(expect.arrayContaining(['microsoft.ts', 'google.ts']));
  });

  test('the circle finder finds a circle', () => {
    expect(findCircle(new Map([['a.ts', ['b.ts']], ['b.ts', ['a.ts']]]))).toEqual(['a.ts', 'b.ts', 'a.ts']);
  });

  test('no module imports itself back through others', () => {
    expect(findCircle(importGraph())).toBeUndefined();
  });
});
