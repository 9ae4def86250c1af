/**
 * The window's views in real Chromium through the `kvscope serve` bridge (startServer), on every
 * real run found (bundled samples and committed CPU fixtures): each view renders without console
 * errors, canvases are painted (pixels read back), the replay's pool counts at t equal an
 * independent replay of the log's blocks lines up to t (BlockLedger), timeline zoom changes the
 * visible range, clicking a request highlights its copies, Compare draws one line per host, and
 * the runs library renames, deletes and imports. Screenshots go to test-artifacts/.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { BlockLedger } from '../../src/shared/ledger';
import type { KvEvent } from '../../src/shared/protocol';
import { compileReplay } from '../../src/shared/replay';
import { buildTimelineModel, linkRequest } from '../../src/shared/timeline-model';
import { timelineLayout, xOf } from '../../src/renderer/viz/timeline-render';
import { compareSeries } from '../../src/renderer/model/compare-model';
import { ARTIFACTS, browserSkipReason, serveWindow, type ServedWindow } from '../helpers/browser';
import { addRunFolder, libraryId, realRuns } from '../helpers/real-runs';
import type { PageGlobal } from '../helpers/page-dom';

/** Page-side: distinct colours (up to 64) and pixels unlike the top-left one, of a canvas. */
function paintStats(sel: string): { colours: number; nonBg: number } {
  const c = (globalThis as unknown as PageGlobal).document.querySelector(sel);
  if (!c) return { colours: 0, nonBg: 0 };
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const bg = `${d[0]},${d[1]},${d[2]}`;
  const seen = new Set<string>();
  let nonBg = 0;
  for (let i = 0; i < d.length; i += 4) {
    const k = `${d[i]},${d[i + 1]},${d[i + 2]}`;
    if (k !== bg) nonBg++;
    if (seen.size < 64) seen.add(k);
  }
  return { colours: seen.size, nonBg };
}

/** Page-side: counts pixels of one exact colour. */
function countColour([sel, r, g, b]: [string, number, number, number]): number {
  const c = (globalThis as unknown as PageGlobal).document.querySelector(sel)!;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] === r && d[i + 1] === g && d[i + 2] === b) n++;
  return n;
}

/** Page-side: moves the replay scrubber as a user would (an input event). */
function scrubTo(value: string): void {
  const g = globalThis as unknown as PageGlobal;
  const s = g.document.querySelector('[data-action=scrub]')!;
  s.value = value;
  s.dispatchEvent(new g.Event('input', { bubbles: true }));
}

/** Page-side: a data-* attribute of an element, as a number. */
function dataNum([sel, key]: [string, string]): number {
  return Number((globalThis as unknown as PageGlobal).document.querySelector(sel)?.dataset[key]);
}


const skip = browserSkipReason();
const runs = realRuns({ maxBytes: 20e6 });
const reason = skip ?? (runs.length === 0 ? 'no real run: no resources/samples/*.jsonl.gz and no test/fixtures/runs/*' : null);

describe.skipIf(reason !== null)(`the window's views in real Chromium${reason ? ` (skipped: ${reason})` : ''}`, () => {
  let w: ServedWindow;
  let page: Page;
  let runsDir: string;

  beforeAll(async () => {
    runsDir = mkdtempSync(join(tmpdir(), 'kvscope-window-e2e-'));
    for (const r of runs) {
      if (r.name.startsWith('sample:')) continue;
      // Two copies of each fixture under two host names: a sweep seen from two hosts for Compare.
      for (const host of ['host-a', 'host-b']) addRunFolder(runsDir, r.path, { id: host === 'host-a' ? libraryId(r.name) : `${libraryId(r.name)}-b`, name: `${r.name} on ${host}`, host });
    }
    w = await serveWindow({ runsDir, samplesDir: join(process.cwd(), 'resources', 'samples') });
    page = await w.open(null);
    page.on('dialog', (d) => void d.accept(d.type() === 'prompt' ? d.defaultValue() : undefined));
  }, 120_000);

  afterAll(async () => {
    await w?.close();
  });

  const go = async (hash: string) => {
    await page.goto(`${w.server.url}${hash}`);
  };
  const loadable = runs.filter((r) => r.events.some((e) => e.type === 'blocks')).slice(0, 2);
  const run0 = () => runs[0]!.events.find((e) => e.type === 'run.start')!;

  it('lists the bundled samples and the runs folder in the library', async () => {
    await go('#/runs');
    await page.waitForSelector('.runs-table');
    for (const r of runs) expect(await page.locator(`tr[data-run-id="${libraryId(r.name)}"]`).count()).toBe(1);
    await page.screenshot({ path: join(ARTIFACTS, 'window-runs.png') });
    expect(w.errors).toEqual([]);
  });

  for (const run of loadable) {
    it(`replays ${run.name}: pools painted, counts at t equal the log's blocks lines up to t`, async () => {
      const id = libraryId(run.name);
      await go(`#/runs/${encodeURIComponent(id)}/live`);
      await page.waitForSelector('[data-testid=pools][data-gpu]');
      const start = run.events.find((e) => e.type === 'run.start')?.t ?? 0;
      const times = [...new Set(run.events.filter((e) => e.type === 'blocks').map((e) => e.t))].sort((a, b) => a - b);
      const probes = [times[0]!, times[Math.floor(times.length / 3)]!, times[Math.floor((2 * times.length) / 3)]!, times[times.length - 1]!];
      const seen = new Set<string>();
      for (const t of probes) {
        await page.evaluate(scrubTo, String(t - start));
        await page.waitForFunction(([want]) => Number((globalThis as unknown as PageGlobal).document.querySelector('[data-testid=pools]')?.dataset.t) === want, [t]);
        const ledger = new BlockLedger();
        for (const e of run.events as KvEvent[]) if (e.type !== 'blocks' || e.t <= t) ledger.apply(e);
        const got = [await page.evaluate(dataNum, ['[data-testid=pools]', 'gpu'] as [string, string]), await page.evaluate(dataNum, ['[data-testid=pools]', 'host'] as [string, string])];
        expect(got).toEqual([ledger.gpu.size, ledger.host.size]);
        seen.add(String(got));
      }
      // The log moves blocks between these probes, so the pools must have changed.
      expect(seen.size).toBeGreaterThan(1);
      const paint = await page.evaluate(paintStats, '[data-testid=pools] canvas');
      expect(paint.nonBg).toBeGreaterThan(100);
      expect(paint.colours).toBeGreaterThan(2);
      await page.screenshot({ path: join(ARTIFACTS, `window-live-${id.replace(/[^a-z0-9-]/gi, '_')}.png`) });

      // Play from the start at 16×: time advances and blocks move.
      await page.evaluate(scrubTo, '0');
      await page.selectOption('[data-action=speed]', '16');
      await page.click('[data-action=play]');
      await page.waitForFunction(([s0]) => Number((globalThis as unknown as PageGlobal).document.querySelector('[data-testid=pools]')?.dataset.t) > s0, [start], { timeout: 10_000 });
      await page.click('[data-action=play]');
      expect(w.errors).toEqual([]);
    });

    it(`timeline of ${run.name}: painted, zoom changes the range, a clicked request highlights its copies`, async () => {
      const id = libraryId(run.name);
      await go(`#/runs/${encodeURIComponent(id)}/timeline`);
      await page.waitForSelector('[data-testid=timeline][data-t0]');
      const range = async (): Promise<[number, number]> => [await page.evaluate(dataNum, ['[data-testid=timeline]', 't0'] as [string, string]), await page.evaluate(dataNum, ['[data-testid=timeline]', 't1'] as [string, string])];
      const [a0, a1] = await range();
      const paint = await page.evaluate(paintStats, '[data-testid=timeline] canvas');
      expect(paint.nonBg).toBeGreaterThan(1000);
      await page.screenshot({ path: join(ARTIFACTS, `window-timeline-${id.replace(/[^a-z0-9-]/gi, '_')}.png`) });

      // W held: zooms in (the visible span shrinks); S held: zooms back out; 0 resets.
      await page.focus('[data-testid=timeline]');
      await page.keyboard.down('w');
      await page.waitForTimeout(400);
      await page.keyboard.up('w');
      await page.waitForTimeout(100);
      const [b0, b1] = await range();
      expect(b1 - b0).toBeLessThan((a1 - a0) * 0.9);
      await page.keyboard.down('d');
      await page.waitForTimeout(300);
      await page.keyboard.up('d');
      await page.waitForTimeout(100);
      const [c0] = await range();
      expect(c0).toBeGreaterThan(b0);
      await page.keyboard.press('0');
      await page.waitForFunction(
        ([span]) => {
          const d = (globalThis as unknown as PageGlobal).document.querySelector('[data-testid=timeline]')!.dataset;
          return Math.abs(Number(d.t1) - Number(d.t0) - span!) < span! * 1e-6;
        },
        [a1 - a0],
      );

      // Click the request with the most onboarded blocks: its copies are drawn highlighted.
      const replay = compileReplay(run.events);
      const tm = buildTimelineModel(run.events, replay);
      const target = tm.requests
        .map((r) => ({ r, l: linkRequest(tm, replay, r.user, r.round) }))
        .filter((x) => x.r.queued !== null && x.r.done !== null)
        .sort((x, y) => Object.values(y.l.xfers).flat().length - Object.values(x.l.xfers).flat().length)[0]!;
      const layout = timelineLayout(tm, 130);
      const row = layout.rows.find((r) => r.kind === 'user' && r.index === target.r.user)!;
      const box = (await page.locator('[data-testid=timeline] canvas').boundingBox())!;
      const view = { t0: a0, t1: a1, width: box.width, height: layout.height };
      const x = xOf(view, 130, target.r.scheduled ?? target.r.queued!) + 2;
      await page.mouse.click(box.x + x, box.y + row.y + row.h / 2);
      await page.waitForFunction(([want]) => (globalThis as unknown as PageGlobal).document.querySelector('[data-testid=timeline]')?.dataset.selected === want, [`${target.r.user}/${target.r.round}`]);
      const linked = Object.values(target.l.xfers).flat().length;
      expect(Number(await page.getAttribute('[data-testid=timeline]', 'data-selected-xfers'))).toBe(linked);
      await page.waitForSelector('.request-details');
      if (linked > 0) {
        // DARK_THEME.highlight, #ff4fd8.
        // Polled: the selection is in the dataset before the canvas has repainted (next frame).
        await expect
          .poll(() => page.evaluate(countColour, ['[data-testid=timeline] canvas', 0xff, 0x4f, 0xd8] as [string, number, number, number]))
          .toBeGreaterThan(0);
      }
      await page.screenshot({ path: join(ARTIFACTS, `window-timeline-selected-${id.replace(/[^a-z0-9-]/gi, '_')}.png`) });
      await page.click('[data-action=save-image]');
      await page.waitForSelector('.notice:has-text("Saved")');
      const pngPath = (await page.textContent('.notice'))!.replace(/^Saved /, '').replace(/ \(.*$/, '');
      expect(readFileSync(pngPath).subarray(1, 4).toString()).toBe('PNG');
      expect(w.errors).toEqual([]);
    });

    it(`summary of ${run.name}: one row per round`, async () => {
      const id = libraryId(run.name);
      await go(`#/runs/${encodeURIComponent(id)}/summary`);
      await page.waitForSelector('[data-testid=rounds-table]');
      const rounds = new Set(run.events.filter((e) => e.type === 'req').map((e) => (e as { round: number }).round));
      expect(await page.locator('[data-testid=rounds-table] tbody tr').count()).toBe(rounds.size);
      await page.screenshot({ path: join(ARTIFACTS, `window-summary-${id.replace(/[^a-z0-9-]/gi, '_')}.png`) });
      // Export → Perfetto: in a browser there is no save dialog, so the path prompt (accepted with
      // its default, under the data folder) names the file; the exporter writes it.
      await page.selectOption('[data-action=export]', 'perfetto');
      await page.waitForSelector('.export [role=status]:has-text("Exported")', { timeout: 30_000 });
      const written = (await page.textContent('.export [role=status]'))!.replace(/^.*?: /, '').split(', ')[0]!.trim();
      expect(existsSync(written)).toBe(true);
      expect(JSON.parse(readFileSync(written, 'utf8'))).toBeTruthy();
      expect(w.errors).toEqual([]);
    });
  }

  it("a switch between a run's views draws the view it opens once, not again for the size it already has", async () => {
    // A run with GPU samples where there is one (a sparkline per counter), in a window low enough
    // that the stats panel is the taller column: its first words set the height the pools get.
    const run = runs.find((r) => r.events.some((e) => e.type === 'gpu') && r.events.some((e) => e.type === 'blocks')) ?? loadable[0]!;
    const id = encodeURIComponent(libraryId(run.name));
    await page.setViewportSize({ width: 1400, height: 640 });
    await go(`#/runs/${id}/summary`);
    await page.waitForSelector('.summary-view');
    for (const [view, painted] of [
      ['live', '[data-testid=pools][data-gpu]'],
      ['timeline', '[data-testid=timeline][data-t0]'],
      ['live', '[data-testid=pools][data-gpu]'],
    ] as const) {
      await page.click(`.run-tabs a[href="#/runs/${id}/${view}"]`);
      await page.waitForSelector(painted);
      // Three frames on: a second draw asked for in the frame of the first would have run by then.
      const draws = await page.evaluate(async (sel) => {
        const g = globalThis as unknown as PageGlobal & { requestAnimationFrame(cb: () => void): void };
        for (let k = 0; k < 3; k++) await new Promise<void>((r) => g.requestAnimationFrame(() => r()));
        return g.document.querySelector(sel)!.dataset.draws;
      }, painted);
      expect(draws, view).toBe('1');
    }
    await page.setViewportSize({ width: 1400, height: 900 });
    expect(w.errors).toEqual([]);
  });

  it('follows the tail of a running run: pushed batches (with a resent overlap) move the pools as the log says', async () => {
    const run = loadable[loadable.length - 1]!;
    const cut = Math.floor(run.events.length * 0.4);
    const id = 'live-tail';
    mkdirSync(join(runsDir, id), { recursive: true });
    writeFileSync(join(runsDir, id, 'events.jsonl'), run.events.slice(0, cut).map((e) => JSON.stringify(e)).join('\n') + '\n');
    writeFileSync(join(runsDir, id, 'meta.json'), JSON.stringify({ id, name: 'live tail', host: 'host-a', status: 'running', createdAt: '2026-11-27T23:00:00Z' }));
    await go(`#/runs/${id}/live`);
    await page.waitForSelector('[data-action=follow][aria-pressed=true]');
    const countsAt = (n: number) => {
      const l = new BlockLedger();
      for (const e of run.events.slice(0, n)) l.apply(e);
      return [l.gpu.size, l.host.size];
    };
    const poolsNow = async () => [await page.evaluate(dataNum, ['[data-testid=pools]', 'gpu'] as [string, string]), await page.evaluate(dataNum, ['[data-testid=pools]', 'host'] as [string, string])];
    // The rest of the log changes the pools, so following it is observable.
    expect(countsAt(cut)).not.toEqual(countsAt(run.events.length));
    await expect.poll(poolsNow).toEqual(countsAt(cut));
    // The rest arrives as batches, the way the SSH tail pushes them; the first batch repeats lines.
    const rest = run.events.slice(cut - 5);
    for (let i = 0; i < rest.length; i += 40) w.core.push({ kind: 'run-events', runId: id, events: rest.slice(i, i + 40) });
    await expect.poll(poolsNow, { timeout: 10_000 }).toEqual(countsAt(run.events.length));
    w.core.push({ kind: 'run-status', runId: id, status: 'ok' });
    await page.screenshot({ path: join(ARTIFACTS, 'window-live-tail.png') });
    expect(w.errors).toEqual([]);
  });

  it('follows prefers-color-scheme: light theme reaches the canvases; Space plays from the keyboard', async () => {
    const run = loadable[0]!;
    await page.emulateMedia({ colorScheme: 'light' });
    await go(`#/runs/${encodeURIComponent(libraryId(run.name))}/live`);
    await page.waitForSelector('[data-testid=pools][data-gpu]');
    // LIGHT_THEME.background #f7f8fa at the canvas corner (outside both grids).
    await expect.poll(() => page.evaluate(countColour, ['[data-testid=pools] canvas', 0xf7, 0xf8, 0xfa] as [string, number, number, number])).toBeGreaterThan(1000);
    await page.screenshot({ path: join(ARTIFACTS, 'window-live-light.png') });
    const before = await page.evaluate(dataNum, ['[data-testid=pools]', 'applied'] as [string, string]);
    expect(before).toBeGreaterThan(0); // a finished run opens on its final pools
    await page.keyboard.press('Home');
    await expect.poll(() => page.evaluate(dataNum, ['[data-testid=pools]', 'applied'] as [string, string])).toBe(0);
    await page.keyboard.press(']'); // 2×
    expect(await page.inputValue('[data-action=speed]')).toBe('2');
    // Space plays: the replay clock moves on. (A real run may spend its first tens of seconds
    // loading weights and pinning host memory before any block moves, so the clock is what to watch.)
    const scrubAt = async () => Number(await page.inputValue('[data-action=scrub]'));
    const t0 = await scrubAt();
    await page.keyboard.press(' ');
    await expect.poll(scrubAt, { timeout: 10_000 }).toBeGreaterThan(t0);
    await page.emulateMedia({ colorScheme: 'dark' });
    expect(w.errors).toEqual([]);
  });

  it('a run that failed before any block moved shows clear empty and error states, no console errors', async () => {
    const first = run0();
    const id = 'failed-early';
    mkdirSync(join(runsDir, id), { recursive: true });
    const lines = [
      { ...first, seq: 0 },
      { seq: 1, t: first.t + 1000, type: 'log', level: 'error', msg: 'CUDA out of memory' },
      { seq: 2, t: first.t + 2000, type: 'run.end', status: 'error', error: { code: 'oom', message: 'CUDA out of memory while loading the model' }, summary: { e2e_ns: 0, ttft_ns_mean: 0, ttft_ns_p50: 0, ttft_ns_p99: 0, blocks_offloaded: 0, blocks_onboarded: 0, blocks_evicted: 0, bytes_h2d: 0, bytes_d2h: 0 } },
      'this line is not JSON',
    ];
    writeFileSync(join(runsDir, id, 'events.jsonl'), lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
    writeFileSync(join(runsDir, id, 'meta.json'), JSON.stringify({ id, name: 'failed early', host: 'host-a', status: 'error', createdAt: '2026-11-27T23:00:00Z' }));
    await go(`#/runs/${id}/live`);
    // The Pools view says why it failed, with no stray empty grid.
    await page.waitForSelector('.live-view [data-testid=run-error]:has-text("oom: CUDA out of memory while loading the model")');
    expect(await page.locator('.live-view [data-testid=pools]').count()).toBe(0);
    expect(await page.textContent('.run-header .warn')).toContain('1 bad line');
    await go(`#/runs/${id}/timeline`);
    await page.waitForSelector('.timeline-view .empty');
    await go(`#/runs/${id}/summary`);
    await page.waitForSelector('.summary-view [role=alert]:has-text("CUDA out of memory")');
    await go('#/runs/no-such-run/live');
    await page.waitForSelector('[role=alert]:has-text("no-such-run")');
    expect(w.errors).toEqual([]);
  });

  it('compare draws one line per host and configuration, one chart pair per model', async () => {
    const listed = await w.core.handlers.listRuns();
    expect(listed.ok).toBe(true);
    const series = listed.ok ? compareSeries(listed.value) : [];
    const want = series.filter((s) => s.kind === 'measured').length;
    await go('#/compare');
    await page.waitForSelector('[data-testid=chart-ttft]');
    expect(await page.locator('[data-testid=chart-ttft] g.series.measured').count()).toBe(want);
    expect(await page.locator('[data-testid=chart-e2e] g.series.measured').count()).toBe(want);
    const hosts = new Set(listed.ok ? listed.value.filter((r) => r.users !== null && (r.e2e_ns !== null || r.ttft_ns_mean !== null)).map((r) => r.host) : []);
    expect(want).toBeGreaterThanOrEqual(hosts.size);
    // One chart pair per model, each holding only that model's series.
    const models = [...new Set(series.map((s) => s.model ?? 'model not recorded'))];
    expect(await page.locator('.model-group').count()).toBe(models.length);
    for (const m of models) {
      const inChart = await page.locator(`[data-testid=chart-ttft][data-model="${m}"] g.series`).evaluateAll((gs) => gs.map((g) => g.getAttribute('data-series')));
      expect(inChart.sort()).toEqual(series.filter((s) => (s.model ?? 'model not recorded') === m).map((s) => s.label).sort());
    }
    // Each time axis has one unit and one precision on all its ticks ("0 s … 10 s"; per-tick
    // formatting once gave "0 ns", "2.000 s", "12.00 s" on one axis).
    for (const chart of (await page.locator('[data-testid=chart-ttft], [data-testid=chart-e2e]').all())) {
      const ticks = await chart.locator('text.tick[text-anchor=end]').allTextContents();
      expect(ticks.length, ticks.join(' | ')).toBeGreaterThanOrEqual(2);
      const parts = ticks.map((t) => /^(-?\d+(?:\.(\d+))?) (ns|µs|ms|s)$/.exec(t));
      expect(parts.every(Boolean), ticks.join(' | ')).toBe(true);
      expect(new Set(parts.map((m) => m![3])).size, ticks.join(' | ')).toBe(1);
      expect(new Set(parts.map((m) => (m![2] ?? '').length)).size, ticks.join(' | ')).toBe(1);
    }
    await page.screenshot({ path: join(ARTIFACTS, 'window-compare.png') });
    // Save image: the charts as one SVG file, written by the core's saveImage.
    await page.click('[data-action=save-image]');
    await page.waitForSelector('.notice:has-text("Saved")');
    const svgPath = (await page.textContent('.notice'))!.replace(/^Saved /, '').replace(/ \(.*$/, '');
    const svg = readFileSync(svgPath, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('class="series measured"');
    expect(w.errors).toEqual([]);
  });

  it('what-if replays a bundled run on another card: a dashed series labelled simulated, a run marked simulated in the library', async () => {
    const source = 'sample:h100-llama-3.1-8b-users4-host55e9';
    const before = await w.core.handlers.listRuns();
    expect(before.ok && before.value.some((r) => r.id === source)).toBe(true);
    await go(`#/compare?runs=${encodeURIComponent(source)}`);
    await page.waitForSelector('[data-action=whatif-profile] option[value=h200]', { state: 'attached' });
    await page.selectOption('[data-action=whatif-profile]', 'h200');
    await page.click('[data-action=whatif-run]');
    await page.waitForSelector('[data-testid=whatif-result]:has-text("Simulated 1 run")', { timeout: 120_000 });
    // This run's prefill steps do not part their fixed cost from their cost per FLOP, and one card's
    // runs cannot part a step's fixed time from its weight reads (the H200's HBM is faster): the panel
    // lists both, and how far the simulated point could move for them.
    const uncertain = await page.locator('[data-testid=whatif-result] ul.whatif-uncertain li').allTextContents();
    expect(uncertain[0]).toMatch(/^Not determined by the measured runs: a prefill step's fixed cost, held at [\d.]+ ms, the middle of 0 to [\d.]+ ms: /);
    expect(uncertain[1]).toMatch(/^Not determined by the measured runs: a step's fixed time \(beside its weight reads\), held at [\d.]+ ms/);
    expect(uncertain[2]).toMatch(/^Users 4 could be: E2E [\d.]+ s to [\d.]+ s, mean TTFT [\d.]+ (ms|s) to [\d.]+ (ms|s)\.$/);
    // The simulated point carries that range as a bar in the charts it was computed for (E2E and
    // queued TTFT), spanning the point; the service-TTFT chart has none.
    const bar = page.locator('[data-testid=chart-e2e][data-model="llama-3.1-8b"] g.series.simulated g.range');
    await bar.first().waitFor();
    const [y1, y2] = await bar.locator('line').first().evaluate((l) => [Number(l.getAttribute('y1')), Number(l.getAttribute('y2'))]);
    const cy = Number(await page.locator('[data-testid=chart-e2e][data-model="llama-3.1-8b"] g.series.simulated circle').first().getAttribute('cy'));
    expect(Math.min(y1!, y2!)).toBeLessThanOrEqual(cy);
    expect(Math.max(y1!, y2!)).toBeGreaterThanOrEqual(cy);
    expect(await page.locator('[data-testid=chart-ttft][data-model="llama-3.1-8b"] g.series.simulated g.range').count()).toBe(1);
    expect(await page.locator('[data-testid=chart-service-ttft] g.range').count()).toBe(0);
    expect(await page.textContent('.compare-view > p.muted')).toContain('a bar on a simulated point spans what the measured runs could not determine');
    const dashed = page.locator('[data-testid=chart-ttft][data-model="llama-3.1-8b"] g.series.simulated');
    await dashed.first().waitFor();
    expect(await dashed.count()).toBe(1);
    expect(await dashed.locator('path').first().getAttribute('stroke-dasharray')).toBeTruthy();
    expect(await dashed.getAttribute('data-series')).toMatch(/^SIMULATED on NVIDIA H200/);
    expect(await page.locator('.model-group .legend li.simulated').first().textContent()).toContain('SIMULATED');
    await page.screenshot({ path: join(ARTIFACTS, 'window-compare-whatif.png'), fullPage: true });
    const after = await w.core.handlers.listRuns();
    const made = after.ok ? after.value.filter((r) => r.simulated) : [];
    expect(made).toHaveLength(1);
    expect(made[0]!.simulated).toMatchObject({ profile: 'h200', sourceGpu: 'NVIDIA H100 80GB HBM3' });
    expect(made[0]!.host).toBe('simulated');
    expect(made[0]!.name).toMatch(/^SIMULATED on NVIDIA H200/);
    expect(made[0]!.gpu).toMatch(/\(simulated\)$/);
    // The simulated run opens in the run views like any run, its name saying what it is.
    await go(`#/runs/${encodeURIComponent(made[0]!.id)}/live`);
    await page.waitForSelector('.live-view h1');
    expect(await page.textContent('.live-view h1')).toMatch(/^SIMULATED/);
    // A simulated run is not a calibration source.
    const again = await w.core.handlers.runWhatIf({ runIds: [made[0]!.id], profile: 'gh200-96' });
    expect(!again.ok && again.error.code).toBe('invalid_argument');
    expect(w.errors).toEqual([]);
  }, 180_000);

  it('hosts shows Local; the new-run form names the field in its errors', async () => {
    await go('#/hosts');
    await page.waitForSelector('tr[data-host=local]');
    await page.screenshot({ path: join(ARTIFACTS, 'window-hosts.png') });
    await go('#/new');
    await page.waitForSelector('#f-users');
    await page.fill('#f-users', '8-2');
    await page.waitForSelector('#f-users-err');
    expect(await page.textContent('#f-users-err')).toMatch(/^users:/);
    await page.fill('#f-users', '4');
    await page.waitForSelector('#f-users-err', { state: 'detached' });
    await page.screenshot({ path: join(ARTIFACTS, 'window-new-run.png') });
    expect(w.errors).toEqual([]);
  });

  it.skipIf(!existsSync('/usr/bin/python3'))('starts a real Local CPU run from New run, shows its progress, and opens it in the pools', async () => {
    await go('#/hosts');
    await page.click('tr[data-host=local] [data-action=probe]');
    await page.waitForSelector('tr[data-host=local] [data-testid=probe], tr[data-host=local] .error', { timeout: 60_000 });
    // In-app navigation (no reload), so the form knows the probe.
    await page.click('tr[data-host=local] a:has-text("New run here")');
    await page.waitForSelector('#f-users');
    // A tiny model on this machine's CPU, with a GPU pool smaller than the users' context, so blocks move.
    const fill: Array<[string, string]> = [
      ['#f-model', 'tiny'],
      ['#f-users', '3'],
      ['#f-rounds', '6'],
      ['#f-context_tokens', '512'],
      ['#f-new_tokens', '32'],
      ['#f-output_tokens', '8'],
      ['#f-gpu_pool', '1000000'],
      ['#f-host_pool', '2000000'],
      ['#f-python', '/usr/bin/python3'],
      ['#f-name', 'e2e local run'],
    ];
    for (const [sel, v] of fill) await page.fill(sel, v);
    await page.selectOption('#f-offload', 'lazy-keep'); // the built-in engine's policy reaches the agent
    // Copy overlap left at auto names what the agent will pick for that policy (off for lazy-keep).
    expect(await page.locator('#f-overlap option[value=auto]').textContent()).toBe('auto (off for lazy-keep)');
    await page.click('button[type=submit]');
    await page.waitForSelector('.progress-row a', { timeout: 60_000 });
    const runId = (await page.textContent('.progress-row a'))!.trim();
    await page.screenshot({ path: join(ARTIFACTS, 'window-new-run-progress.png') });
    // Open it at once (in-app link): while it runs, the view follows the tail the core pushes.
    await page.click('.progress-row a');
    await page.waitForSelector('[data-testid=pools][data-gpu]', { timeout: 60_000 });
    const followedLive = (await page.locator('[data-action=follow][aria-pressed=true]').count()) > 0;
    const status = async () => {
      const l = await w.core.handlers.listRuns();
      return l.ok ? l.value.find((r) => r.id === runId)?.status : null;
    };
    await expect.poll(async () => ['ok', 'error', 'cancelled'].includes(String(await status())), { timeout: 120_000, interval: 1000 }).toBe(true);
    const ended = await w.core.handlers.loadRun(runId);
    expect(ended.ok && ended.value.analysis.error, 'the agent run failed').toBeNull();
    expect(await status()).toBe('ok');
    // Whether it was followed live or loaded after the end, the pools end as the stored log says.
    const loaded = await w.core.handlers.loadRun(runId);
    expect(loaded.ok && loaded.value.analysis.blocks.stored).toBeGreaterThan(0);
    const start = loaded.ok ? loaded.value.events[0] : null;
    expect(start?.type === 'run.start' && start.config.offload_policy).toBe('lazy-keep');
    expect(start?.type === 'run.start' && start.config.copy_overlap).toBe(false); // auto, resolved by the agent
    const ledger = new BlockLedger();
    if (loaded.ok) for (const e of loaded.value.events) ledger.apply(e);
    const poolsNow = async () => [await page.evaluate(dataNum, ['[data-testid=pools]', 'gpu'] as [string, string]), await page.evaluate(dataNum, ['[data-testid=pools]', 'host'] as [string, string])];
    await expect.poll(poolsNow, { timeout: 15_000 }).toEqual([ledger.gpu.size, ledger.host.size]);
    console.info(`local run ${runId}: ${followedLive ? 'followed live' : 'finished before the view opened'}`);
    const paint = await page.evaluate(paintStats, '[data-testid=pools] canvas');
    expect(paint.colours).toBeGreaterThan(2);
    expect(w.errors).toEqual([]);
  }, 180_000);

  it.skipIf(!existsSync('/usr/bin/python3'))('runs a real Local sweep (users 1,2) from New run; Compare draws it as one line with a point per user count', async () => {
    await go('#/new');
    await page.waitForSelector('#f-users');
    const fill: Array<[string, string]> = [
      ['#f-model', 'tiny'],
      ['#f-users', '1,2'],
      ['#f-rounds', '2'],
      ['#f-context_tokens', '256'],
      ['#f-new_tokens', '32'],
      ['#f-output_tokens', '8'],
      ['#f-gpu_pool', '300000'],
      ['#f-host_pool', '2000000'],
      ['#f-python', '/usr/bin/python3'],
      ['#f-name', 'e2e sweep'],
    ];
    for (const [sel, v] of fill) await page.fill(sel, v);
    expect(await page.textContent('button[type=submit]')).toContain('Start sweep (2 runs)');
    await page.click('button[type=submit]');
    // The sweep table (sweep-status pushes) ends with both rows ok.
    await page.waitForSelector('.run-progress table tbody tr', { timeout: 60_000 });
    await expect
      .poll(async () => (await page.locator('.run-progress table tbody tr td:nth-child(3)').allTextContents()).join(','), { timeout: 150_000, interval: 1000 })
      .toBe('ok,ok');
    await page.screenshot({ path: join(ARTIFACTS, 'window-sweep.png') });
    await page.click('[data-action=compare-sweep]');
    await page.waitForSelector('[data-testid=chart-e2e] g.series.measured');
    expect(await page.locator('[data-testid=chart-e2e] g.series.measured').count()).toBe(1);
    expect(await page.locator('[data-testid=chart-e2e] g.series.measured circle').count()).toBe(2);
    await page.screenshot({ path: join(ARTIFACTS, 'window-compare-sweep.png') });
    expect(w.errors).toEqual([]);
  }, 240_000);

  it('the library renames, deletes and imports runs', async () => {
    const fixture = runs.find((r) => !r.name.startsWith('sample:'));
    if (!fixture) return;
    const id = `${libraryId(fixture.name)}-b`;
    await go('#/runs');
    await page.click(`tr[data-run-id="${id}"] [data-action=row-menu]`);
    await page.click(`tr[data-run-id="${id}"] [data-action=rename]`);
    await page.fill(`tr[data-run-id="${id}"] input[aria-label="Run name"]`, 'renamed in the window');
    await page.keyboard.press('Enter');
    await page.waitForSelector(`tr[data-run-id="${id}"] a:has-text("renamed in the window")`);
    await page.click(`tr[data-run-id="${id}"] [data-action=row-menu]`);
    await page.click(`tr[data-run-id="${id}"] [data-action=delete]`);
    await page.waitForSelector(`tr[data-run-id="${id}"]`, { state: 'detached' });
    await page.setInputFiles('[data-testid=import-input]', fixture.path);
    await page.waitForSelector('.notice:has-text("Imported")');
    const listed = await w.core.handlers.listRuns();
    expect(listed.ok && listed.value.some((r) => r.id.startsWith('imported-'))).toBe(true);
    expect(w.errors).toEqual([]);
  });
});
