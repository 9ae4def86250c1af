// Runs a TypeScript file (a benchmark, a one-off tool) under Node: bundles it with esbuild into
// a temp file, then imports it. Usage: node scripts/run-ts.mjs bench/events-reader.bench.ts [args]
import { build } from 'esbuild';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [entry, ...rest] = process.argv.slice(2);
if (!entry) {
  console.error('usage: node scripts/run-ts.mjs <file.ts> [args...]');
  process.exit(2);
}
const out = join(mkdtempSync(join(tmpdir(), 'kvscope-ts-')), 'entry.mjs');
await build({ entryPoints: [resolve(entry)], outfile: out, bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', logLevel: 'warning', nodePaths: [resolve('node_modules')] });
process.argv = [process.argv[0], resolve(entry), ...rest];
await import(pathToFileURL(out).href);
