// Builds the static pages into web/dist/ (served by the worker as static assets):
// web/src/*.js bundled by esbuild (npm dependencies included, the IVS SDK in its own chunk,
// loaded only in IVS mode), web/src/*.html and *.css copied.
//
//   node web/build.mjs                  # once, into web/dist
//   node web/build.mjs --watch          # rebuild on change
//   node web/build.mjs --outdir DIR     # into DIR (scripts/stack.sh: each stack its own copy)
import * as esbuild from 'esbuild';
import { cpSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const outdirAt = process.argv.indexOf('--outdir');
if (outdirAt >= 0 && !process.argv[outdirAt + 1]) throw new Error('build.mjs: --outdir needs a directory');
// The output directory is emptied first.
const dist = outdirAt >= 0 ? resolve(process.argv[outdirAt + 1]) : join(here, 'dist');
const watch = process.argv.includes('--watch');

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
for (const f of readdirSync(src)) {
  if (f.endsWith('.html') || f.endsWith('.css') || f === '_headers') cpSync(join(src, f), join(dist, f));
}

const options = {
  entryPoints: ['host.js', 'watch.js', 'status.js'].map((f) => join(src, f)),
  outdir: dist,
  bundle: true,
  splitting: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  sourcemap: true,
  chunkNames: 'chunks/[name]-[hash]',
  logLevel: 'info',
};

if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}
