/**
 * Every real recorded run this checkout has: bundled samples (resources/samples/*.jsonl.gz) and
 * committed fixtures (test/fixtures/runs/<name>/events.jsonl[.gz]). Tests iterate over all of them
 * and assert against each log itself, so they hold for whichever runs exist.
 */
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { decodeAll } from '../../src/shared/events-reader';
import type { KvEvent } from '../../src/shared/protocol';

export interface RealRun {
  name: string;
  path: string;
  events: KvEvent[];
}

export const SAMPLES_DIR = join(process.cwd(), 'resources', 'samples');
export const FIXTURE_RUNS_DIR = join(process.cwd(), 'test', 'fixtures', 'runs');

function read(path: string): KvEvent[] {
  let bytes = readFileSync(path);
  if (path.endsWith('.gz')) bytes = gunzipSync(bytes);
  return decodeAll(bytes).events;
}

/** Paths of real logs (cheap: nothing decoded). */
export function realRunPaths(opts: { maxBytes?: number } = {}): Array<{ name: string; path: string }> {
  const out: Array<{ name: string; path: string }> = [];
  if (existsSync(SAMPLES_DIR)) {
    for (const n of readdirSync(SAMPLES_DIR).filter((n) => n.endsWith('.jsonl.gz')).sort()) out.push({ name: `sample:${n.replace(/\.jsonl\.gz$/, '')}`, path: join(SAMPLES_DIR, n) });
  }
  if (existsSync(FIXTURE_RUNS_DIR)) {
    for (const d of readdirSync(FIXTURE_RUNS_DIR).sort()) {
      for (const f of ['events.jsonl', 'events.jsonl.gz']) {
        const p = join(FIXTURE_RUNS_DIR, d, f);
        if (existsSync(p)) out.push({ name: d, path: p });
      }
    }
  }
  return opts.maxBytes === undefined ? out : out.filter((r) => readFileSync(r.path).length <= opts.maxBytes!);
}

export function realRuns(opts: { maxBytes?: number } = {}): RealRun[] {
  return realRunPaths(opts).map((r) => ({ ...r, events: read(r.path) }));
}

/** Where a real run lands in a library: a sample keeps its id (`sample:<name>`); a fixture is copied in as `fixture-<name>`. */
export function libraryId(name: string): string {
  return name.startsWith('sample:') ? name : `fixture-${name}`;
}

/** Copies a real run's log into `<runsDir>/<meta.id>/` beside the meta.json of a run that ended (ok). */
export function addRunFolder(runsDir: string, logPath: string, meta: { id: string; name: string; host: string }): void {
  mkdirSync(join(runsDir, meta.id), { recursive: true });
  cpSync(logPath, join(runsDir, meta.id, logPath.endsWith('.gz') ? 'events.jsonl.gz' : 'events.jsonl'));
  writeFileSync(join(runsDir, meta.id, 'meta.json'), JSON.stringify({ ...meta, status: 'ok', createdAt: '2026-11-27T23:00:00Z' }));
}
