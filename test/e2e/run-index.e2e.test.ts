/**
 * Opening a run from its index (docs/run-index.md) shows exactly what opening it from its log
 * shows (`?open=log`, the path before indexes), in real Chromium through `kvscope serve`: every
 * text of Pools (at points across the run), Timeline (its hover readouts over the whole canvas and
 * a traced request) and Summary, and every pixel of their canvases — on every bundled sample and
 * committed fixture run; and on a run watched live (the window opened while the core follows it,
 * from the core's in-memory index, then the pushed lines, its analysis going on from the analyzer
 * that index carried), compared once it has ended with both. And while an open waits on the core,
 * the view says so with a progress bar.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { browserSkipReason, serveWindow, type ServedWindow } from '../helpers/browser';
import { followRun, FOLLOW_PYTHON } from '../helpers/followed-run';
import { addRunFolder, libraryId, realRunPaths, SAMPLES_DIR } from '../helpers/real-runs';

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

/** The run watched live: a recorded H100 run with CUPTI copies and moves to the host pool. */
const LIVE_SAMPLE = join(SAMPLES_DIR, 'h100-llama-3.1-70b-fp8-users4-host55e9.jsonl.gz');

const skip = browserSkipReason();
const runs = realRunPaths();
const reason = skip ?? (runs.length === 0 ? 'no real run: no resources/samples/*.jsonl.gz and no test/fixtures/runs/*' : null);

describe.skipIf(reason !== null)(`a run opened from its index shows what its log shows${reason ? ` (skipped: ${reason})` : ''}`, () => {
  let w: ServedWindow;
  let runsDir: string;

  beforeAll(async () => {
    runsDir = mkdtempSync(join(tmpdir(), 'kvscope-index-e2e-'));
    for (const r of runs) if (!r.name.startsWith('sample:')) addRunFolder(runsDir, r.path, { id: libraryId(r.name), name: r.name, host: 'fixture' });
    w = await serveWindow({ runsDir, samplesDir: SAMPLES_DIR });
  }, 120_000);

  afterAll(async () => {
    await w?.close();
  });

  const openPage = (mode: 'index' | 'log', hash: string): Promise<Page> => w.open(`${mode === 'log' ? '&open=log' : ''}${hash}`);

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
    expect(w.errors).toEqual([]);
  }, 300_000);

  it("shows a progress bar, with the core's indexing progress, while an open waits on the core", async () => {
    const id = libraryId(runs.find((r) => !r.name.startsWith('sample:'))?.name ?? runs[0]!.name);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const real = w.core.handlers.loadRunIndex;
    w.core.handlers.loadRunIndex = async (runId) => {
      w.core.push({ kind: 'progress', runId, stage: 'index', fraction: 0.42, etaS: null, message: 'indexing' });
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
      w.core.handlers.loadRunIndex = real;
    }
  });

  it.skipIf(!existsSync(FOLLOW_PYTHON) || !existsSync(LIVE_SAMPLE))('a run watched live shows what its index and its log show once it has ended, its log never read', async () => {
    // A recorded H100 run's lines, written to the host's log as the agent wrote them: the core
    // follows it as it follows any Local run (its tail, its in-memory index), and the window opens
    // it a third of the way through its block moves.
    const lines = gunzipSync(readFileSync(LIVE_SAMPLE)).toString('utf8').split('\n').filter(Boolean);
    const blocks = lines.map((l, i) => (l.includes('"type":"blocks"') ? i : -1)).filter((i) => i >= 0);
    const cut = blocks[Math.floor(blocks.length / 3)]!;
    const id = 'watched-live';
    const run = await followRun(w.core, id, lines.slice(0, cut));
    const reads: string[] = [];
    const handlers = w.core.handlers;
    const { loadRun, loadRunIndex } = handlers;
    handlers.loadRun = (runId) => (runId === id && reads.push('log'), loadRun(runId));
    handlers.loadRunIndex = (runId) => (runId === id && reads.push('index'), loadRunIndex(runId));
    try {
      const live = await openPage('index', `#/runs/${encodeURIComponent(id)}/summary`);
      await live.waitForSelector('.summary-view');
      // The rest, in ten parts, each pushed to the window before the next is written.
      const step = Math.ceil((lines.length - cut) / 10);
      for (let i = cut; i < lines.length; i += step) await run.append(lines.slice(i, i + step));
      expect(await run.end()).toBe('ok');
      await live.waitForSelector('.run-header .status-ok');
      const views = await readViews(live, id, null);
      // Opened once, from the core's index; every later line analysed from the analyzer it carried.
      expect(reads).toEqual(['index']);
      const fromIndex = await openPage('index', `#/runs/${encodeURIComponent(id)}/summary`);
      const b = await readViews(fromIndex, id, views.positions);
      const fromLog = await openPage('log', `#/runs/${encodeURIComponent(id)}/summary`);
      const c = await readViews(fromLog, id, views.positions);
      for (const p of [live, fromIndex, fromLog]) await p.close();
      expect(views.summary).toContain('Rounds');
      expect(views.summary).toBe(b.summary);
      expect(views.pools).toEqual(b.pools);
      expect(views.timeline).toEqual(b.timeline);
      expect(c.summary).toBe(b.summary);
      expect(c.pools).toEqual(b.pools);
      expect(c.timeline).toEqual(b.timeline);
      expect(w.errors).toEqual([]);
    } finally {
      handlers.loadRun = loadRun;
      handlers.loadRunIndex = loadRunIndex;
    }
  }, 300_000);
});
