#!/usr/bin/env node
// The `kvscope` command: runs the bundled CLI built by `npm run build`.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const bundle = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist-cli', 'kvscope.mjs');
if (!existsSync(bundle)) {
  process.stderr.write('kvscope: the CLI is not built yet. Run `npm run build` in the KV Scope folder first.\n');
  process.exit(1);
}
const { main } = await import(pathToFileURL(bundle).href);
await main(process.argv);
