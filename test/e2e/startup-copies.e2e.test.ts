/**
 * The start-up copy check in real Chromium through `kvscope serve`, on the bundled 8B users-2
 * sample (both users fit: nothing is onboarded or offloaded, yet the agent's plain-copy check moved
 * 6.8 GB each way before the rounds). Summary's "Copies against the link" counts only the copies of
 * the workload and names the check apart; Pools' "moved" figures leave it out and name it too.
 * Expected figures are computed from the log here: copies that start before the setup phase ends.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { decodeAll } from '../../src/shared/events-reader';
import { formatBytes } from '../../src/shared/format';
import type { XferEvent } from '../../src/shared/protocol';
import { ARTIFACTS, browserSkipReason, serveWindow, type ServedWindow } from '../helpers/browser';

const FILE = 'h100-llama-3.1-8b-users2-host55e9.jsonl.gz';
const SAMPLE = join(process.cwd(), 'resources', 'samples', FILE);
const skip = browserSkipReason() ?? (existsSync(SAMPLE) ? null : `no ${FILE} in resources/samples`);

describe.skipIf(skip !== null)(`the start-up copy check, shown apart${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let w: ServedWindow;
  let page: Page;
  const id = `sample:${FILE.replace(/\.jsonl\.gz$/, '')}`;
  const events = skip ? [] : decodeAll(gunzipSync(readFileSync(SAMPLE))).events;
  const setupEnd = events.find((e) => e.type === 'phase' && e.name === 'setup' && e.state === 'end')?.t ?? -Infinity;
  const cupti = events.filter((e): e is XferEvent => e.type === 'xfer' && e.source === 'cupti');
  const bytes = (xs: XferEvent[]) => xs.reduce((a, x) => a + x.bytes, 0);
  const startup = (dir: string) => cupti.filter((x) => x.dir === dir && x.start < setupEnd);
  const kv = (dir: string) => cupti.filter((x) => x.dir === dir && x.start >= setupEnd);

  beforeAll(async () => {
    const samplesDir = mkdtempSync(join(tmpdir(), 'kvscope-startup-samples-'));
    copyFileSync(SAMPLE, join(samplesDir, FILE));
    w = await serveWindow({ runsDir: mkdtempSync(join(tmpdir(), 'kvscope-startup-runs-')), samplesDir });
    page = await w.open(null, { width: 1440, height: 900 });
  }, 120_000);

  afterAll(async () => {
    await w?.close();
  });

  it('Summary measures only the workload against the link and names the check apart', async () => {
    expect(bytes(startup('h2d'))).toBeGreaterThan(6e9);
    await page.goto(`${w.server.url}#/runs/${encodeURIComponent(id)}/summary`);
    await page.waitForSelector('[data-testid=bandwidth-table] tbody tr');
    for (const dir of ['h2d', 'd2h']) {
      const row = page.locator('[data-testid=bandwidth-table] tbody tr', { has: page.locator(`th:text-is("${dir.toUpperCase()}")`) });
      const cells = (await row.locator('td').allTextContents()).map((t) => t.trim());
      expect(cells[0], dir).toBe(kv(dir).length.toLocaleString('en-US'));
      expect(cells[1], dir).toBe(formatBytes(bytes(kv(dir))));
    }
    const note = (await page.locator('[data-testid=startup-copies]').textContent()) ?? '';
    expect(note).toContain('start-up copy check (not KV)');
    expect(note).toContain(`H2D ${startup('h2d').length} copies (${formatBytes(bytes(startup('h2d')))})`);
    expect(note).toContain(`D2H ${startup('d2h').length} copies (${formatBytes(bytes(startup('d2h')))})`);
    await page.screenshot({ path: join(ARTIFACTS, 'startup-copies-summary.png') });
    expect(w.errors).toEqual([]);
  });

  it("Pools' moved figures leave the check out and name it", async () => {
    await page.goto(`${w.server.url}#/runs/${encodeURIComponent(id)}/live`);
    const dd = page.locator('[data-stat=startup-copies]');
    await dd.waitFor();
    expect((await dd.textContent())?.trim()).toBe(`H2D ${formatBytes(bytes(startup('h2d')))} · D2H ${formatBytes(bytes(startup('d2h')))}`);
    // A finished run opens on its end: H2D moved is the workload's own copies (token ids; no block was onboarded).
    for (const dir of ['h2d', 'd2h']) {
      await page.waitForFunction(([d, want]) => document.querySelector(`[data-stat=${d}]`)?.textContent?.startsWith(`${want} ·`) ?? false, [dir, formatBytes(bytes(kv(dir)))]);
    }
    expect(w.errors).toEqual([]);
  });
});
