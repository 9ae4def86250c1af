// Runs a TypeScript file (a benchmark, a one-off tool) under Node: bundles it with esbuild into
// a temp file, then imports it. Usage: node scripts/run-ts.mjs bench/events-reader.bench.ts [args]
import { build } from 'esbuild';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [entry, ...rest] = process.argv.slice(2);
if (!entry) {
  console.error('usage: node scripts/run-ts.mjs <file.ts> [args...]');
  process.exit(2);
}
// Inside node_modules so the bundle's external imports resolve to this project's packages.
mkdirSync('node_modules/.cache', { recursive: true });
const out = join(mkdtempSync(resolve('node_modules/.cache/run-ts-')), 'entry.mjs');
await build({ entryPoints: [resolve(entry)], outfile: out, bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', logLevel: 'warning' });
process.argv = [process.argv[0], resolve(entry), ...rest];
await import(pathToFileURL(out).href);
