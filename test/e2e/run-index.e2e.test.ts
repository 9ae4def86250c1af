/**
 * Opening a run from its index (docs/run-index.md) shows exactly what opening it from its log
 * shows (`?open=log`, the path before indexes), in real Chromium through `kvscope serve`: every
 * text of Pools (at points across the run), Timeline (its hover readouts over the whole canvas and
 * a traced request) and Summary, and every pixel of their canvases — on every bundled sample and
 * committed fixture run, and on a real Local run watched live (the window opened while it runs,
 * from the core's in-memory index plus the pushed events), compared once it has ended. And while
 * an open waits on the core, the view says so with a progress bar.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { createCore, type Core } from '../../src/main/core/app-core';
import { startServer, type RunningServer } from '../../src/main/core/serve';
import { INDEX_FILE } from '../../src/main/core/run-index-store';
import { RENDERER_DIR, browserSkipReason, launchBrowser } from '../helpers/browser';
import { realRunPaths } from '../helpers/real-runs';

interface El {
  dataset: Record<string, string | undefined>;
  value: string;
  max: string;
  innerText: string;
  textContent: string | null;
  getBoundingClientRect(): { left: number; top: number; width: number; height: number };
  dispatchEvent(e: unknown): boolean;
  toDataURL(): string;
}
interface G {
  document: { querySelector(s: string): El | null; querySelectorAll(s: string): ArrayLike<El> };
  Event: new (type: string, init?: { bubbles?: boolean }) => unknown;
  MouseEvent: new (type: string, init: { clientX: number; clientY: number; bubbles: boolean }) => unknown;
  requestAnimationFrame(cb: () => void): void;
}

/** Page-side: the Pools view at each scrub position (ns after the run's start): its text, counts and pixels. */
async function poolsReadout(positions: number[]): Promise<unknown[]> {
  const g = globalThis as unknown as G;
  const frame = () => new Promise<void>((r) => g.requestAnimationFrame(() => r()));
  const out: unknown[] = [];
  for (const p of positions) {
    const s = g.document.querySelector('[data-action=scrub]')!;
    s.value = String(p);
    s.dispatchEvent(new g.Event('input', { bubbles: true }));
    await frame();
    await frame();
    const pools = g.document.querySelector('[data-testid=pools]')!;
    out.push({
      // What the replay gives (the rest of the view's text, its header and legend, is the analysis').
      stats: g.document.querySelector('.live-stats dl')!.innerText,
      titles: g.document.querySelector('.pool-titles')!.innerText,
      gpu: pools.dataset.gpu,
      host: pools.dataset.host,
      applied: pools.dataset.applied,
      t: pools.dataset.t,
      pixels: g.document.querySelector('[data-testid=pools] canvas')!.toDataURL(),
      sparks: Array.from(g.document.querySelectorAll('.live-stats canvas')).map((c) => c.toDataURL()),
      text: g.document.querySelector('.live-view')!.innerText,
    });
  }
  return out;
}

/** Page-side: the Timeline's hover readout at a grid of points over its canvas, then a traced request. */
async function timelineReadout(): Promise<unknown> {
  const g = globalThis as unknown as G;
  const frame = () => new Promise<void>((r) => g.requestAnimationFrame(() => r()));
  const canvas = g.document.querySelector('[data-testid=timeline] canvas')!;
  const box = canvas.getBoundingClientRect();
  const tips: string[] = [];
  let request: [number, number] | null = null;
  for (let y = 2; y < box.height; y += 7) {
    for (let x = 140; x < box.width; x += Math.max(8, Math.floor((box.width - 140) / 24))) {
      canvas.dispatchEvent(new g.MouseEvent('mousemove', { clientX: box.left + x, clientY: box.top + y, bubbles: true }));
      const text = g.document.querySelector('.timeline-view .tooltip')!.textContent ?? '';
      tips.push(text);
      if (!request && text.includes('click to trace')) request = [box.left + x, box.top + y];
    }
  }
  await frame();
  const whole = canvas.toDataURL();
  let traced = '';
  let tracedPixels = '';
  if (request) {
    canvas.dispatchEvent(new g.MouseEvent('click', { clientX: request[0], clientY: request[1], bubbles: true }));
    await frame();
    await frame();
    traced = g.document.querySelector('.request-details')?.innerText ?? '';
    tracedPixels = canvas.toDataURL();
  }
  const wrap = g.document.querySelector('[data-testid=timeline]')!;
  return { text: g.document.querySelector('.timeline-view')!.innerText, tips, whole, traced, tracedPixels, t0: wrap.dataset.t0, t1: wrap.dataset.t1, bars: wrap.dataset.bars, binned: wrap.dataset.binned };
}

function summaryReadout(): string {
  return (globalThis as unknown as G).document.querySelector('.summary-view')!.innerText;
}

/** Page-side: the scrubber's range, the run's length in ns. */
function scrubMax(): number {
  return Number((globalThis as unknown as G).document.querySelector('[data-action=scrub]')!.max);
}

/** The readouts without what a page opened mid-run takes from the analysis of its opening moment. */
function replayOnly(r: { pools: unknown[]; timeline: unknown }): unknown {
  const timeline = { ...(r.timeline as Record<string, unknown>) };
  delete timeline.text;
  delete timeline.traced;
  return { pools: (r.pools as Array<Record<string, unknown>>).map(({ text: _text, ...rest }) => rest), timeline };
}

const skip = browserSkipReason();
const runs = realRunPaths();
const reason = skip ?? (runs.length === 0 ? 'no real run: no resources/samples/*.jsonl.gz and no test/fixtures/runs/*' : null);
const libraryId = (name: string) => (name.startsWith('sample:') ? name : `fixture-${name}`);

describe.skipIf(reason !== null)(`a run opened from its index shows what its log shows${reason ? ` (skipped: ${reason})` : ''}`, () => {
  let server: RunningServer;
  let browser: Browser;
  let core: Core;
  let runsDir: string;
  const errors: string[] = [];

  beforeAll(async () => {
    runsDir = mkdtempSync(join(tmpdir(), 'kvscope-index-e2e-'));
    for (const r of runs) {
      if (r.name.startsWith('sample:')) continue;
      const id = libraryId(r.name);
      mkdirSync(join(runsDir, id), { recursive: true });
      cpSync(r.path, join(runsDir, id, r.path.endsWith('.gz') ? 'events.jsonl.gz' : 'events.jsonl'));
      writeFileSync(join(runsDir, id, 'meta.json'), JSON.stringify({ id, name: r.name, host: 'fixture', status: 'ok', createdAt: '2026-11-27T23:00:00Z' }));
    }
    core = await createCore({ runsDir, samplesDir: join(process.cwd(), 'resources', 'samples'), shell: 'browser' });
    server = await startServer({ core, staticDir: RENDERER_DIR });
    browser = await launchBrowser();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  async function openPage(mode: 'index' | 'log', hash: string): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 }, colorScheme: 'dark' });
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${server.url}${mode === 'log' ? '&open=log' : ''}${hash}`);
    return page;
  }

  /** Everything the three views show of a run, read in one page (the run is opened once). */
  async function readViews(page: Page, id: string, positions: number[] | null): Promise<{ summary: string; pools: unknown[]; timeline: unknown; positions: number[] }> {
    const at = (view: string) => page.evaluate((h) => void ((globalThis as unknown as { location: { hash: string } }).location.hash = h), `#/runs/${encodeURIComponent(id)}/${view}`);
    await at('summary');
    await page.waitForSelector('.summary-view', { timeout: 120_000 });
    const summary = await page.evaluate(summaryReadout);
    await at('live');
    await page.waitForSelector('[data-testid=pools][data-gpu]');
    // Nine points from the start to the end of the run (and one before it), as the first page sees it.
    const span = positions ? 0 : await page.evaluate(scrubMax);
    const points = positions ?? [-1, ...Array.from({ length: 9 }, (_, k) => Math.round((span * k) / 8))];
    const pools = await page.evaluate(poolsReadout, points);
    await at('timeline');
    await page.waitForSelector('[data-testid=timeline][data-t0]');
    const timeline = await page.evaluate(timelineReadout);
    return { summary, pools, timeline, positions: points };
  }

  it.each(runs.map((r) => [libraryId(r.name)]))('%s: Pools, Timeline and Summary, from the index and from the log', async (id) => {
    const fromIndex = await openPage('index', `#/runs/${encodeURIComponent(id)}/summary`);
    const a = await readViews(fromIndex, id, null);
    const fromLog = await openPage('log', `#/runs/${encodeURIComponent(id)}/summary`);
    const b = await readViews(fromLog, id, a.positions);
    await fromIndex.close();
    await fromLog.close();
    expect(a.summary).toContain('Rounds');
    expect(b.summary).toBe(a.summary);
    expect(b.pools).toEqual(a.pools);
    expect(b.timeline).toEqual(a.timeline);
    expect(errors).toEqual([]);
  }, 300_000);

  it("shows a progress bar, with the core's indexing progress, while an open waits on the core", async () => {
    const id = libraryId(runs.find((r) => !r.name.startsWith('sample:'))?.name ?? runs[0]!.name);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const real = core.handlers.loadRunIndex;
    core.handlers.loadRunIndex = async (runId) => {
      core.push({ kind: 'progress', runId, stage: 'index', fraction: 0.42, etaS: null, message: 'indexing' });
      await gate;
      return real(runId);
    };
    try {
      const page = await openPage('index', `#/runs/${encodeURIComponent(id)}/timeline`);
      const bar = await page.waitForSelector('[data-testid=run-opening] progress');
      expect(await bar.getAttribute('value')).toBe('0.42');
      expect(await page.textContent('[data-testid=run-opening]')).toContain('42%');
      release();
      await page.waitForSelector('[data-testid=timeline][data-t0]');
      expect(await page.locator('[data-testid=run-opening]').count()).toBe(0);
      await page.close();
    } finally {
      release();
      core.handlers.loadRunIndex = real;
    }
  });

  it.skipIf(!existsSync('/usr/bin/python3'))('a Local run watched live shows what its index and its log show', async () => {
    // Long enough never to end on its own while the window opens: cancelled once it has been seen live.
    const started = await core.handlers.startRun({
      host: 'local',
      python: '/usr/bin/python3',
      name: 'index e2e live',
      // Contexts grow 2 tokens a round to 3,256 (102 blocks of 16 KiB): the GPU pool (152 blocks)
      // holds one user's, so blocks start moving to the host pool after some hundred rounds.
      workload: { model: 'tiny', device: 'cpu', users: 3, rounds: 1500, context_tokens: 256, new_tokens: 1, output_tokens: 1, gpu_kv_bytes: 2_500_000, host_kv_bytes: 8_000_000, trace: false, sample_ms: 100 },
    });
    expect(started.ok, started.ok ? '' : started.error.message).toBe(true);
    if (!started.ok) return;
    const id = started.value.runId;
    // Opened while the run goes, once its log holds some blocks lines: from the core's in-memory
    // index of what has arrived, then the events pushed after.
    const log = join(runsDir, id, 'events.jsonl');
    await expect.poll(() => (existsSync(log) ? (readFileSync(log, 'utf8').match(/"type":"blocks"/g) ?? []).length : 0), { timeout: 120_000, interval: 100 }).toBeGreaterThan(10);
    const live = await openPage('index', `#/runs/${encodeURIComponent(id)}/live`);
    await live.waitForSelector('[data-testid=pools][data-gpu]', { timeout: 120_000 });
    // Blocks have reached the host pool in the window (offloads pushed while it watched), or the run has stopped.
    await live.waitForFunction(
      () => {
        const d = (globalThis as unknown as G).document;
        return Number(d.querySelector('[data-testid=pools]')!.dataset.host) > 0 || d.querySelector('.run-header .status')!.textContent !== 'running';
      },
      undefined,
      { timeout: 240_000 },
    );
    expect(await live.textContent('.run-header .status')).toBe('running');
    const cancelled = await core.handlers.cancelRun(id);
    expect(cancelled.ok, cancelled.ok ? '' : cancelled.error.message).toBe(true);
    // The window hears the end; the run's index file is then built from its log.
    await live.waitForSelector('.run-header .status-cancelled', { timeout: 120_000 });
    await expect.poll(() => existsSync(join(runsDir, id, INDEX_FILE)), { timeout: 60_000, interval: 200 }).toBe(true);
    const fromIndex = await openPage('index', `#/runs/${encodeURIComponent(id)}/summary`);
    const b = await readViews(fromIndex, id, null);
    const fromLog = await openPage('log', `#/runs/${encodeURIComponent(id)}/summary`);
    const c = await readViews(fromLog, id, b.positions);
    // The page that watched it live, read at the same points: what its replay shows (its analysis
    // is that of its opening moment, whether opened from an index or a log).
    const a = await readViews(live, id, b.positions);
    for (const p of [live, fromIndex, fromLog]) await p.close();
    expect(c.summary).toBe(b.summary);
    expect(c.pools).toEqual(b.pools);
    expect(c.timeline).toEqual(b.timeline);
    expect(replayOnly(a)).toEqual(replayOnly(b));
    expect(errors).toEqual([]);
  }, 400_000);
});
