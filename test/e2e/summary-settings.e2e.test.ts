/**
 * The Summary view's "Run settings" panel in real Chromium through `kvscope serve` (startServer), on
 * bundled H100 samples: the settings table shows the users, rounds, context and GPU pool that the
 * sample's own run.start and pool lines hold, the host pool (or the recompute baseline), and no
 * console errors. The samples are replaced from time to time, so they are picked by listing
 * resources/samples when the test runs and copied to a private samples folder first (a sample
 * swapped mid-test cannot change under the server).
 */
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { decodeAll } from '../../src/shared/events-reader';
import { formatBytes } from '../../src/shared/format';
import type { KvEvent, PoolEvent, RunStartEvent } from '../../src/shared/protocol';
import { ARTIFACTS, browserSkipReason, serveWindow, type ServedWindow } from '../helpers/browser';

const SAMPLES = join(process.cwd(), 'resources', 'samples');

interface Sample {
  file: string;
  id: string;
  start: RunStartEvent;
  gpuPool: PoolEvent;
  hostPool: PoolEvent | undefined;
}

/** The H100 samples there now, smallest first, with the lines the panel is built from. */
function h100Samples(): Sample[] {
  if (!existsSync(SAMPLES)) return [];
  const files = readdirSync(SAMPLES).filter((n) => /^h100-.*\.jsonl\.gz$/.test(n));
  files.sort((a, b) => statSync(join(SAMPLES, a)).size - statSync(join(SAMPLES, b)).size);
  const out: Sample[] = [];
  for (const file of files) {
    const events: KvEvent[] = decodeAll(gunzipSync(readFileSync(join(SAMPLES, file)))).events;
    const start = events.find((e): e is RunStartEvent => e.type === 'run.start');
    const gpuPool = events.find((e): e is PoolEvent => e.type === 'pool' && e.pool === 'gpu');
    if (!start || !gpuPool) continue;
    const hostPool = events.find((e): e is PoolEvent => e.type === 'pool' && e.pool === 'host');
    out.push({ file, id: `sample:${file.replace(/\.jsonl\.gz$/, '')}`, start, gpuPool, hostPool });
  }
  return out;
}

const all = h100Samples();
const noHostPool = (s: Sample) => s.start.config.host_kv_bytes === 0 || s.hostPool?.capacity_blocks === 0;
// The smallest sample with a host pool, and the smallest recompute baseline where one is bundled.
const picked = [all.find((s) => !noHostPool(s)), all.find(noHostPool)].filter((s): s is Sample => s !== undefined);
const skip = browserSkipReason();
const reason = skip ?? (picked.length === 0 ? 'no bundled H100 sample with run.start and a gpu pool line in resources/samples' : null);

/** The same thousands separators the panel uses, written out here rather than imported. */
const count = (n: number) => n.toLocaleString('en-US');

describe.skipIf(reason !== null)(`Summary's run settings in real Chromium${reason ? ` (skipped: ${reason})` : ''}`, () => {
  let w: ServedWindow;
  let page: Page;

  beforeAll(async () => {
    const samplesDir = mkdtempSync(join(tmpdir(), 'kvscope-settings-samples-'));
    for (const s of picked) copyFileSync(join(SAMPLES, s.file), join(samplesDir, s.file));
    const runsDir = mkdtempSync(join(tmpdir(), 'kvscope-settings-runs-'));
    w = await serveWindow({ runsDir, samplesDir });
    page = await w.open(null, { width: 1500, height: 1000 });
  }, 120_000);

  afterAll(async () => {
    await w?.close();
  });

  /** The value cell of one settings row, as the user sees it. */
  const cell = async (key: string) => (await page.locator(`[data-testid=settings-table] tr[data-setting="${key}"] td`).textContent())?.trim();

  for (const s of picked) {
    it(`${s.file}: the settings table shows the run's workload and pools from its own lines`, async () => {
      await page.goto(`${w.server.url}#/runs/${encodeURIComponent(s.id)}/summary`);
      await page.waitForSelector('[data-testid=settings-table] tr[data-setting=users]', { timeout: 60_000 });
      const cfg = s.start.config;
      expect(await cell('users')).toBe(count(cfg.users!));
      expect(await cell('rounds')).toContain(count(cfg.rounds!));
      expect(await cell('context_tokens')).toContain(`${count(cfg.context_tokens!)} tokens`);
      const gpu = await cell('gpu_pool');
      expect(gpu).toContain(`${count(s.gpuPool.capacity_blocks)} blocks`);
      expect(gpu).toContain(formatBytes(s.gpuPool.capacity_blocks * s.gpuPool.block_bytes));
      if (noHostPool(s)) expect(await cell('host_pool')).toBe('none — recompute baseline');
      else expect(await cell('host_pool')).toContain(`${count(s.hostPool!.capacity_blocks)} blocks`);
      expect(await cell('gpu')).toContain(s.start.host.gpus[0]!.name);
      const table = (await page.locator('[data-testid=settings-table]').textContent()) ?? '';
      for (const bad of ['undefined', 'NaN', 'null']) expect(table).not.toContain(bad);
      await page.locator('.run-settings').screenshot({ path: join(ARTIFACTS, `summary-settings-${s.id.replace(/[^a-z0-9-]/gi, '_')}.png`) });
      expect(w.errors).toEqual([]);
    });
  }
});
