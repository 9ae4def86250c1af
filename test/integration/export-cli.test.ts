/**
 * `kvscope export` / `kvscope import` as a user runs them (the CLI bundled from the current
 * sources, in a child process), and exportRun through the app's core with progress pushes.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { beforeAll, describe, expect, it } from 'vitest';
import { createCore } from '../../src/main/core/app-core';
import type { PushMessage } from '../../src/shared/api';
import { checkTrace, type TraceDoc } from './export-trace-check';

const ROOT = process.cwd();
const RUN = join(ROOT, 'test', 'fixtures', 'runs', 'cpu-tiny-export');
const dir = mkdtempSync(join(tmpdir(), 'kvscope-export-cli-'));
const cli = join(dir, 'kvscope.mjs');
const runner = join(dir, 'run.mjs');

function kvscope(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [runner, ...args], { encoding: 'utf8', cwd: dir, env: { ...process.env, ...env }, timeout: 60_000 });
}

beforeAll(async () => {
  await build({ entryPoints: [join(ROOT, 'src/cli/index.ts')], outfile: cli, bundle: true, platform: 'node', format: 'esm', packages: 'external', logLevel: 'warning', nodePaths: [join(ROOT, 'node_modules')] });
  // Resolve the bundle's external packages from the checkout's node_modules.
  writeFileSync(runner, `import { main } from ${JSON.stringify(cli)};\nawait main(process.argv);\n`);
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  if (!existsSync(join(dir, 'node_modules'))) spawnSync('ln', ['-s', join(ROOT, 'node_modules'), join(dir, 'node_modules')]);
}, 60_000);

describe('kvscope export / import', () => {
  it('exports a Perfetto trace of a run folder, with progress and the output path', () => {
    const out = join(dir, 'trace.json');
    const r = kvscope(['export', RUN, '--format', 'perfetto', '-o', out]);
    expect(r.stderr).toMatch(/export done in/);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(out);
    expect(checkTrace(JSON.parse(readFileSync(out, 'utf8')) as TraceDoc).problems).toEqual([]);
  });

  it('exports a Perfetto protobuf trace under its default name, and lists every format in --help', () => {
    const r = kvscope(['export', RUN, '--format', 'perfetto-proto']);
    expect(r.status).toBe(0);
    const out = r.stdout.trim();
    expect(out).toMatch(/\.pftrace$/);
    // A Trace message is its packets: field 1, length-delimited (tag 0x0a), from the first byte.
    expect(readFileSync(join(dir, out))[0]).toBe(0x0a);
    const help = kvscope(['export', '--help']);
    expect(help.stdout).toMatch(/perfetto, perfetto-proto, csv, kvscope/);
    const bad = kvscope(['export', RUN, '--format', 'protobuf']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--format must be one of perfetto, perfetto-proto, csv, kvscope/);
  });

  it('exports CSV tables into a folder, or one table into a file', () => {
    const both = kvscope(['export', RUN, '-f', 'csv', '-o', join(dir, 'tables'), '-q']);
    expect(both.status).toBe(0);
    expect(both.stdout.trim().split('\n')).toEqual([join(dir, 'tables', 'rounds.csv'), join(dir, 'tables', 'requests.csv')]);
    const one = kvscope(['export', RUN, '-f', 'csv', '--table', 'requests', '-o', join(dir, 'req.csv'), '-q']);
    expect(one.status).toBe(0);
    expect(readFileSync(join(dir, 'req.csv'), 'utf8')).toMatch(/^user,round,queued_ns/);
    const bad = kvscope(['export', RUN, '-f', 'csv', '--table', 'blocks', '-o', join(dir, 'x.csv')]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--table must be one of rounds, requests/);
  });

  it('writes a .kvscope file that validate opens and import restores byte for byte', () => {
    const file = join(dir, 'run.kvscope');
    expect(kvscope(['export', RUN, '-f', 'kvscope', '-o', file, '-q']).status).toBe(0);
    const v = kvscope(['validate', file]);
    expect(v.stdout).toMatch(/valid: every protocol v2 rule holds/);
    expect(v.status).toBe(0);
    const runsDir = join(dir, 'runs');
    const imp = kvscope(['import', file, '--runs-dir', runsDir]);
    expect(imp.status).toBe(0);
    const id = imp.stdout.trim();
    expect(id).toBe('cpu-tiny-export');
    expect(readFileSync(join(runsDir, id, 'events.jsonl')).equals(readFileSync(join(RUN, 'events.jsonl')))).toBe(true);
    // A run id from the runs folder works as the export argument too.
    const byId = kvscope(['export', id, '--runs-dir', runsDir, '-o', join(dir, 'by-id.json'), '-q']);
    expect(byId.status).toBe(0);
  });

  it('exports what is valid from a broken log and says on stderr what was skipped', () => {
    const text = readFileSync(join(RUN, 'events.jsonl'), 'utf8');
    const broken = join(dir, 'broken.jsonl');
    const lines = text.split('\n');
    lines.splice(5, 0, 'this is not json');
    writeFileSync(broken, lines.join('\n').slice(0, Math.floor(text.length * 0.7)));
    const out = join(dir, 'broken.trace.json');
    const r = kvscope(['export', broken, '-o', out, '-q']);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/skipped 2 bad line\(s\)/);
    expect(r.stderr).toMatch(/line 6: not_json/);
    expect(r.stderr).toMatch(/truncated/);
    const doc = JSON.parse(readFileSync(out, 'utf8')) as TraceDoc;
    expect(checkTrace(doc).problems).toEqual([]);
    expect(doc.metadata!.kvscope!.bad_lines_skipped).toBe(2);
  });

  it('refuses a damaged .kvscope file on import with a clear message', () => {
    const file = join(dir, 'run.kvscope');
    const bytes = readFileSync(file);
    const cut = join(dir, 'cut.kvscope');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 40));
    const r = kvscope(['import', cut, '--runs-dir', join(dir, 'runs-cut')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/kvscope: .*(cut off|damaged)/);
  });
});

describe('exportRun through the app core', () => {
  it('exports a library run with progress pushes, and refuses a relative destination', async () => {
    const runsDir = join(dir, 'core-runs');
    mkdirSync(runsDir, { recursive: true });
    cpSync(RUN, join(runsDir, 'cpu-tiny-export'), { recursive: true });
    const core = await createCore({ runsDir, samplesDir: null, shell: 'browser' });
    const pushes: PushMessage[] = [];
    core.addPushListener((m) => pushes.push(m));
    const dest = join(dir, 'core.trace.json');
    const r = await core.handlers.exportRun('cpu-tiny-export', 'perfetto', dest);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.value).toMatchObject({ files: [dest], badLines: 0, unmatchedMoves: 0 });
    const progress = pushes.filter((p) => p.kind === 'progress' && p.runId === 'cpu-tiny-export');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress[progress.length - 1]).toMatchObject({ stage: 'export-perfetto', fraction: 1 });
    // The window's Export menus offer the protobuf trace through the same call.
    const pb = join(dir, 'core.pftrace');
    const p = await core.handlers.exportRun('cpu-tiny-export', 'perfetto-proto', pb);
    expect(p).toMatchObject({ ok: true, value: { files: [pb], badLines: 0, unmatchedMoves: 0 } });
    expect(pushes.filter((m) => m.kind === 'progress').at(-1)).toMatchObject({ stage: 'export-perfetto-proto', fraction: 1 });
    const rel = await core.handlers.exportRun('cpu-tiny-export', 'csv', 'out.csv');
    expect(rel).toMatchObject({ ok: false, error: { code: 'invalid_argument' } });
    const kv = join(dir, 'core.kvscope');
    expect((await core.handlers.exportRun('cpu-tiny-export', 'kvscope', kv)).ok).toBe(true);
    const back = await core.handlers.importRunFile(kv);
    expect(back.ok && back.value.id).toBe('cpu-tiny-export-2');
  });
});
