/**
 * The architecture, enforced: which part of src/ may import which (the matrix below, mirrored in
 * docs/architecture.md), no import cycles between parts, decision-record links that lead somewhere, and no
 * citation of documents that are not in the repository.
 *
 * A part is a folder of src/ (or, at the bottom and the top, a few single files). The imports of every
 * non-test file are read with a small parser: `import … from '…'`, `import '…'`, `export … from '…'` and
 * `import('…')`, type-only imports included (a type is a dependency too), comments and strings skipped.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

/** Where each part lives: a folder of src/ (ends in `/`) or single files. */
const PARTS = {
  errors: ['src/errors.ts', 'src/package-info.ts'],
  log: ['src/log.ts'],
  proxy: ['src/outbound-proxy.ts'],
  tls: ['src/tls/'],
  config: ['src/config.ts'],
  store: ['src/store/'],
  throttle: ['src/login-throttle.ts'],
  oauth: ['src/oauth/'],
  queue: ['src/queue/'],
  'smtp-in': ['src/smtp-in/'],
  'smtp-out': ['src/smtp-out/'],
  notify: ['src/notify/'],
  backup: ['src/backup/'],
  metrics: ['src/metrics.ts'],
  api: ['src/api/'],
  web: ['src/web/'],
  cli: ['src/cli/'],
  app: ['src/app.ts', 'src/main.ts', 'src/start-failure.ts'],
} as const;

type Part = keyof typeof PARTS;

/**
 * Who may import whom, bottom to top. A part may always import its own files. The queue knows neither the
 * relay nor delivery: the relay hands messages to it (MessageIntake) and delivery implements its
 * OutboundTransport. Only app (app.ts, main.ts) wires everything; nothing imports the command line.
 */
const MAY_IMPORT: Record<Part, readonly Part[]> = {
  errors: [],
  log: [],
  proxy: ['errors', 'log'],
  tls: ['errors', 'log', 'proxy'],
  config: ['errors', 'log', 'proxy', 'tls'],
  store: ['errors', 'log', 'config', 'tls'],
  throttle: ['errors', 'log', 'config', 'store'],
  oauth: ['errors', 'log', 'config', 'proxy', 'tls', 'store'],
  queue: ['errors', 'log', 'config', 'store'],
  'smtp-in': ['errors', 'log', 'config', 'tls', 'store', 'throttle', 'queue'],
  'smtp-out': ['errors', 'log', 'config', 'tls', 'store', 'oauth', 'queue'],
  notify: ['errors', 'log', 'config', 'proxy', 'tls', 'store', 'oauth', 'queue', 'smtp-out'],
  backup: ['errors', 'log', 'config', 'store', 'queue'],
  metrics: ['errors', 'store', 'oauth', 'queue', 'smtp-in'],
  api: ['errors', 'log', 'config', 'proxy', 'tls', 'store', 'throttle', 'oauth', 'queue', 'smtp-in', 'smtp-out', 'notify'],
  web: ['errors', 'log', 'config', 'proxy', 'tls', 'store', 'throttle', 'oauth', 'queue', 'smtp-in', 'smtp-out', 'notify', 'backup', 'metrics', 'api'],
  cli: ['errors', 'log', 'config', 'proxy', 'tls', 'store', 'oauth', 'queue', 'smtp-in', 'smtp-out', 'notify', 'backup', 'api', 'app'],
  app: ['errors', 'log', 'config', 'proxy', 'tls', 'store', 'throttle', 'oauth', 'queue', 'smtp-in', 'smtp-out', 'notify', 'backup', 'metrics', 'api', 'web'],
};

/**
 * Imports that break the matrix today, each with its reason; they are left out of the cycle check too.
 * Remove an entry when its import goes (the test says so).
 */
const EXCEPTIONS: { file: string; to: Part; why: string }[] = [];

function filesUnder(dir: string): string[] {
  const files: string[] = [];
  for (const name of readdirSync(join(ROOT, dir))) {
    const path = posix.join(dir, name);
    if (statSync(join(ROOT, path)).isDirectory()) files.push(...filesUnder(path));
    else files.push(path);
  }
  return files;
}

function partOf(path: string): Part | undefined {
  for (const [part, places] of Object.entries(PARTS) as [Part, readonly string[]][]) {
    if (places.some((place) => (place.endsWith('/') ? path.startsWith(place) : path === place))) return part;
  }
  return undefined;
}

/**
 * The source with comments blanked out and every string literal replaced by `'#n'`, n its index in
 * `strings`: an `import` inside a string or a comment is then no import, and a specifier is found by index.
 */
function tokenize(source: string): { code: string; strings: string[] } {
  const strings: string[] = [];
  let code = '';
  let i = 0;
  while (i < source.length) {
    const c = source[i]!;
    const next = source[i + 1];
    if (c === '/' && next === '/') {
      while (i < source.length && source[i] !== '\n') i++;
    } else if (c === '/' && next === '*') {
      const end = source.indexOf('*/', i + 2);
      const stop = end === -1 ? source.length : end + 2;
      code += source.slice(i, stop).replace(/[^\n]/g, ' ');
      i = stop;
    } else if (c === "'" || c === '"' || c === '`') {
      // A quoted string also ends at the line's end, which resynchronises after a quote in a regular expression.
      let j = i + 1;
      while (j < source.length && source[j] !== c && (c === '`' || source[j] !== '\n')) j += source[j] === '\\' ? 2 : 1;
      strings.push(source.slice(i + 1, j));
      code += `'#${strings.length - 1}'`;
      i = j + 1;
    } else {
      code += c;
      i++;
    }
  }
  return { code, strings };
}

/** Module specifiers a source file imports or re-exports, statically or with import(). */
function importsOf(source: string): string[] {
  const { code, strings } = tokenize(source);
  const found: { at: number; specifier: string }[] = [];
  const statics = /(?:^|[^\w$.])(?:import|export)\s+(?:type\s+)?(?:[^';]*?\sfrom\s*)?'#(\d+)'/g;
  const dynamics = /(?:^|[^\w$.])import\(\s*'#(\d+)'\s*\)/g;
  for (const pattern of [statics, dynamics]) {
    for (const match of code.matchAll(pattern)) found.push({ at: match.index, specifier: strings[Number(match[1])]! });
  }
  return found.sort((a, b) => a.at - b.at).map((f) => f.specifier);
}

interface Edge {
  file: string;
  specifier: string;
  from: Part;
  to: Part;
}

/**
 * The product's source files. Tests beside the code are left out: they exercise parts together (a proxy
 * test goes through tls/trust.ts) and nothing in the product imports them.
 */
const productFiles = () => filesUnder('src').filter((path) => path.endsWith('.ts') && !path.endsWith('.test.ts'));

/** Every import from one part of src/ into another. */
function edges(): Edge[] {
  const result: Edge[] = [];
  for (const file of productFiles()) {
    const from = partOf(file);
    if (!from) continue; // reported by its own test
    for (const specifier of importsOf(read(file))) {
      if (!specifier.startsWith('.')) continue; // a package
      const target = posix.normalize(posix.join(posix.dirname(file), specifier));
      if (!target.startsWith('src/')) continue; // test support, outside the product
      const to = partOf(target.replace(/\.js$/, '.ts'));
      if (to && to !== from) result.push({ file, specifier, from, to });
    }
  }
  return result;
}

const isException = (edge: Edge) => EXCEPTIONS.some((e) => e.file === edge.file && e.to === edge.to);

/** Parts on a cycle of `graph`, as readable paths (`a → b → a`). */
function cycles(graph: Map<Part, Set<Part>>): string[] {
  const found: string[] = [];
  const state = new Map<Part, 'open' | 'done'>();
  const stack: Part[] = [];
  const visit = (part: Part) => {
    state.set(part, 'open');
    stack.push(part);
    for (const next of graph.get(part) ?? []) {
      if (state.get(next) === 'open') found.push([...stack.slice(stack.indexOf(next)), next].join(' → '));
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(part, 'done');
  };
  for (const part of graph.keys()) if (!state.has(part)) visit(part);
  return found;
}

describe('the import parser', () => {
  test('reads static, type-only, side-effect, re-export and dynamic imports, and skips comments', () => {
    const source = [
      "import { a } from './a.js';",
      "import type { B } from '../b/b.js';",
      'import {',
      '  c,',
      '  type D,',
      "} from \"./c.js\";",
      "import './side-effect.js';",
      "export * from './e.js';",
      "export { f } from './f.js';",
      "const g = await import('./g.js');",
      "// import { h } from './h.js';",
      "/* import { i } from './i.js'; */",
      "const text = 'import { j } from \"./j.js\"';",
      "export const k = 'k';",
    ].join('\n');
    expect(importsOf(source)).toEqual(['./a.js', '../b/b.js', './c.js', './side-effect.js', './e.js', './f.js', './g.js']);
  });
});

describe('the architecture', () => {
  test('every source file belongs to a part', () => {
    const homeless = productFiles().filter((path) => !partOf(path));
    expect(homeless, 'files in src/ that no part in PARTS covers (add them to a part and to docs/architecture.md)').toEqual([]);
  });

  test('the allowed imports have no cycle, and nothing but the command line imports it', () => {
    const graph = new Map<Part, Set<Part>>(Object.entries(MAY_IMPORT).map(([part, allowed]) => [part as Part, new Set(allowed)]));
    expect(cycles(graph)).toEqual([]);
    for (const [part, allowed] of Object.entries(MAY_IMPORT)) expect(allowed.includes('cli'), part).toBe(false);
    for (const [part, allowed] of Object.entries(MAY_IMPORT)) if (part !== 'cli') expect(allowed.includes('app'), part).toBe(false);
  });

  test('no part imports a part it may not import', () => {
    const forbidden = edges()
      .filter((edge) => !MAY_IMPORT[edge.from].includes(edge.to) && !isException(edge))
      .map((edge) => `${edge.file} imports '${edge.specifier}': ${edge.from} may not import ${edge.to}`);
    expect(forbidden, 'imports the architecture does not allow (docs/architecture.md)').toEqual([]);
  });

  test('every exception is still needed', () => {
    const all = edges();
    const stale = EXCEPTIONS.filter((e) => existsSync(join(ROOT, e.file)) && !all.some((edge) => edge.file === e.file && edge.to === e.to));
    expect(stale.map((e) => `${e.file} → ${e.to}`), 'exceptions whose import is gone: remove them').toEqual([]);
  });

  test('no import cycle between parts', () => {
    const graph = new Map<Part, Set<Part>>();
    for (const edge of edges()) {
      if (isException(edge)) continue;
      if (!graph.has(edge.from)) graph.set(edge.from, new Set());
      graph.get(edge.from)!.add(edge.to);
    }
    expect(cycles(graph)).toEqual([]);
  });

  test('docs/architecture.md shows the same parts and the same matrix', () => {
    const doc = read('docs/architecture.md');
    const section = /^## Who may import whom\n([\s\S]*?)(?=^## )/m.exec(doc)?.[1];
    expect(section, 'docs/architecture.md has a section "## Who may import whom"').toBeDefined();
    const rows = new Map<string, { places: string[]; allowed: string[] }>();
    for (const line of section!.split('\n')) {
      const cells = /^\|\s*`([\w-]+)`\s*\|(.*)\|(.*)\|\s*$/.exec(line);
      if (!cells) continue;
      const names = (cell: string) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
      rows.set(cells[1]!, { places: names(cells[2]!).sort(), allowed: names(cells[3]!).sort() });
    }
    const expected = new Map(Object.entries(MAY_IMPORT).map(([part, allowed]) => [part, { places: [...PARTS[part as Part]].sort(), allowed: [...allowed].sort() }]));
    const table = Object.entries(MAY_IMPORT).map(([part, allowed]) => [part, { places: PARTS[part as Part], allowed }] as const).map(([part, row]) => `| \`${part}\` | ${row.places.map((p) => `\`${p}\``).join(', ')} | ${row.allowed.map((p) => `\`${p}\``).join(', ') || '—'} |`).join('\n');
    expect(Object.fromEntries(rows), `the matrix in docs/architecture.md, as test/architecture.test.ts has it:\n${table}\n`).toEqual(Object.fromEntries(expected));
  });
});

describe('references', () => {
  const texts = () =>
    [
      'README.md',
      ...filesUnder('docs').filter((path) => path.endsWith('.md')),
      ...filesUnder('src').filter((path) => /\.(ts|eta|md|css|js)$/.test(path)),
    ].map((path) => ({ path, text: read(path) }));
  const decisions = readdirSync(join(ROOT, 'docs/decisions'));

  test('every docs/decisions link in src/, docs/ and README.md leads to a decision record that exists', () => {
    const broken: string[] = [];
    for (const { path, text } of texts()) {
      // docs/decisions/NNN-title.md, or docs/decisions/NNN for short.
      for (const match of text.matchAll(/docs\/decisions\/(\d{3})([\w.-]*)/g)) {
        const [, number, rest] = match as unknown as [string, string, string];
        const name = rest.replace(/[.,;:)]+$/, '');
        const ok = name === '' ? decisions.some((file) => file.startsWith(`${number}-`)) : name.endsWith('.md') && decisions.includes(`${number}${name}`);
        if (!ok) broken.push(`${path}: ${match[0]}`);
      }
      // Relative Markdown links to other documents.
      if (path.endsWith('.md')) {
        for (const match of text.matchAll(/\]\(([^)\s#]+\.md)(?:#[^)]*)?\)/g)) {
          const target = match[1]!;
          if (/^[a-z]+:/i.test(target)) continue;
          if (!existsSync(join(ROOT, posix.dirname(path), target))) broken.push(`${path}: ${target}`);
        }
      }
    }
    expect(broken, 'links to decision records or documents that do not exist').toEqual([]);
  });

  test('nothing cites a document that is not in the repository', () => {
    // Case matters for the file names: docs/protocol.md is the repository's own.
    const outside = [/\.\.\/shared\b|\/work\/shared\b|\b(?:DESIGN|PROTOCOL|STYLE|TESTBED)\.md\b/, /\bchecklists?\b/i];
    const sources = [
      ...texts(),
      ...['test', 'scripts', 'bench', 'contrib']
        .filter((dir) => existsSync(join(ROOT, dir)))
        .flatMap((dir) => filesUnder(dir))
        .filter((path) => /\.(ts|js|mjs|sh|md|json|ya?ml|conf)$/.test(path) && path !== 'test/architecture.test.ts')
        .map((path) => ({ path, text: read(path) })),
    ];
    const cited: string[] = [];
    for (const { path, text } of sources) {
      text.split('\n').forEach((line, index) => {
        for (const pattern of outside) {
          const hit = pattern.exec(line);
          if (hit) cited.push(`${path}:${index + 1}: ${hit[0]}`);
        }
      });
    }
    expect(cited, 'citations of documents outside the repository').toEqual([]);
  });
});
