/**
 * The bundled runs' JSON traces, as two real viewers that work in floating-point µs read them:
 * Chrome DevTools' trace engine keeps every slice in its per-thread tree, under the parent the
 * exporter wrote it in, and speedscope's importer closes every frame it opens, in order (no
 * mis-nesting warning). Both need slice boundaries that meet exactly when `ts + dur` is added in
 * floating point (docs/export.md "Clock"); the +0.4 ns offset the exporter used to write made
 * DevTools drop 23-230 slices a trace and speedscope warn hundreds of times.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { exportLog } from '../../src/main/core/export/run-export';
import { CHROMIUM } from '../helpers/browser';
import { realRunPaths } from '../helpers/real-runs';
import { devtoolsTree, speedscopeWarnings } from '../helpers/trace-viewers';
import type { TraceDoc } from './export-trace-check';

/** Which slice the exporter writes each category's slices inside (docs/export.md "Tracks"). */
const PARENT_CAT: Record<string, string> = { 'request.phase': 'request', 'xfer.part': 'xfer', 'kv.flow': 'kv' };

const samples = realRunPaths().filter((r) => r.name.startsWith('sample:'));
const dir = mkdtempSync(join(tmpdir(), 'kvscope-viewers-'));

describe('exported traces in DevTools and speedscope', () => {
  it('has the five bundled runs', () => {
    expect(samples.length).toBeGreaterThanOrEqual(5);
  });

  for (const run of samples) {
    describe(run.name, () => {
      const dest = join(dir, `${run.name.replace(/[^A-Za-z0-9]+/g, '-')}.trace.json`);
      const exported = exportLog({ logFile: run.path, meta: { id: 'x', name: run.name, host: 'test', status: 'ok', createdAt: '' }, format: 'perfetto', dest });

      it("DevTools' trace engine keeps every slice in its tree, under the slice it was written in", async () => {
        await exported;
        const doc = JSON.parse(readFileSync(dest, 'utf8')) as TraceDoc;
        // Every slice and instant (the engine files the global instant under a thread of its own).
        const onThreads = doc.traceEvents.filter((e) => e.ph === 'X' || e.ph === 'I').length;
        const tree = await devtoolsTree(doc.traceEvents, PARENT_CAT);
        expect(tree.entries).toBe(onThreads);
        expect(tree.entries - tree.inTree, 'slices left out of the tree').toBe(0);
        expect(tree.misparented).toEqual([]);
      }, 600_000);

      it.skipIf(!existsSync(CHROMIUM))(`speedscope imports it with no mis-nesting${existsSync(CHROMIUM) ? '' : ` (skipped: no Chromium at ${CHROMIUM})`}`, async () => {
        await exported;
        const { warnings, title } = await speedscopeWarnings(dest);
        expect(title).toContain('.trace.json');
        expect(warnings.slice(0, 10)).toEqual([]);
        expect(warnings.length).toBe(0);
      }, 600_000);
    });
  }
});
