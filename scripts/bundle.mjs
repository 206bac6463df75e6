// The production build's second step: bundles what tsc compiled (build/tsc) into dist/, the gateway
// (dist/main.js) and the CLI (dist/cli/postern.js), minified, with the parts loaded on first use (the Remote
// UI, undici, prom-client, certificate generation) split into chunks of their own, and copies the Remote
// UI's templates and static files beside them (docs/decisions/032-remote-ui-loaded-on-first-use.md).
//
// Native and optional modules stay in node_modules: better-sqlite3 (a compiled addon), pg (only with
// PostgreSQL), mailparser (only for Microsoft Graph's large messages). Source maps are written beside the
// chunks; `node --enable-source-maps` uses them.
import { build } from 'esbuild';
import { cpSync, readFileSync, rmSync } from 'node:fs';

const EXTERNAL = ['better-sqlite3', 'pg', 'pg-native', 'mailparser'];

/**
 * A CommonJS dependency that loads another package with `import()` (@fastify/cookie does, for `cookie`) would
 * get only `default` from a split chunk, where Node gives the named exports too: inside the bundle such an
 * import becomes a `require()`, which esbuild resolves to the same module with all its exports.
 */
const dynamicImportOfPackages = {
  name: 'dynamic-import-of-packages',
  setup(build) {
    build.onLoad({ filter: /[\\/]node_modules[\\/].*\.c?js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8');
      if (!source.includes('await import(') || !/\brequire\(/.test(source)) return undefined;
      const contents = source.replace(/\bawait import\((['"])([^./'"][^'"]*)\1\)/g, (call, quote, name) =>
        EXTERNAL.includes(name) ? call : `await Promise.resolve(require(${quote}${name}${quote}))`,
      );
      return contents === source ? undefined : { contents, loader: 'js' };
    });
  },
};

const root = new URL('..', import.meta.url);
const dist = new URL('dist/', root);
rmSync(dist, { recursive: true, force: true });

await build({
  absWorkingDir: new URL('build/tsc/', root).pathname,
  entryPoints: ['main.js', 'cli/postern.js'],
  entryNames: '[dir]/[name]',
  chunkNames: '[name]-[hash]',
  outdir: dist.pathname,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  minify: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  external: EXTERNAL,
  plugins: [dynamicImportOfPackages],
  // Bundled CommonJS modules call require() for Node's own modules.
  banner: { js: "import { createRequire as __postern_require } from 'node:module'; const require = __postern_require(import.meta.url);" },
  logLevel: 'warning',
});

// The Remote UI finds them beside its chunk (src/web/app.ts: the directory of import.meta.url).
for (const dir of ['views', 'public']) {
  cpSync(new URL(`src/web/${dir}`, root), new URL(dir + '/', dist), { recursive: true });
}
