/// <reference lib="dom" />
// page.evaluate bodies run in Chromium: DOM types for them, in this file only.
/**
 * What a daily user of the window trips over, checked in real Chromium through `kvscope serve`
 * on the bundled H100 sample runs: the Settings theme reaching the canvases, pool titles over
 * their own grids, and the tables' number formats.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { ARTIFACTS, browserSkipReason, serveWindow, type ServedWindow } from '../helpers/browser';
import { FIXTURE_RUNS_DIR, realRuns } from '../helpers/real-runs';
import { compileReplay } from '../../src/shared/replay';
import { buildTimelineModel } from '../../src/shared/timeline-model';
import { timelineLayout, xOf } from '../../src/renderer/viz/timeline-render';
import { decodeAll } from '../../src/shared/events-reader';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { formatCount, formatNs } from '../../src/shared/format';

/** Debian's python3 with python3-torch: the interpreter a Local CPU run needs. */
const DEBIAN_TORCH = '/usr/bin/python3';
const hasDebianTorch = existsSync(DEBIAN_TORCH) && (() => {
  try {
    execFileSync(DEBIAN_TORCH, ['-c', 'import torch'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

const SAMPLE = 'sample:h100-llama-3.1-8b-users4-host55e9';
const skip = browserSkipReason() ?? (realRuns({ maxBytes: 20e6 }).some((r) => r.name === SAMPLE) ? null : `no bundled sample ${SAMPLE} in resources/samples`);

/** Page-side: pixels of one exact colour in a canvas. */
function countColour([sel, r, g, b]: [string, number, number, number]): number {
  const c = document.querySelector<HTMLCanvasElement>(sel)!;
  const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] === r && d[i + 1] === g && d[i + 2] === b) n++;
  return n;
}

describe.skipIf(skip !== null)(`the window as a user sees it, in real Chromium${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let w: ServedWindow;
  let runsDir: string;

  beforeAll(async () => {
    runsDir = mkdtempSync(join(tmpdir(), 'kvscope-review-e2e-'));
    w = await serveWindow({ runsDir, samplesDir: join(process.cwd(), 'resources', 'samples') });
  }, 60_000);
  afterAll(async () => {
    await w?.close();
  });

  const open = (hash: string, opts: { width?: number; height?: number; os?: 'dark' | 'light' } = {}): Promise<Page> =>
    w.open(hash, { width: opts.width ?? 1500, height: opts.height ?? 950, colorScheme: opts.os });
  const run = (view: string) => `#/runs/${encodeURIComponent(SAMPLE)}/${view}`;

  for (const [os, pin, bg] of [
    ['light', 'dark', [0x11, 0x14, 0x18]],
    ['dark', 'light', [0xf7, 0xf8, 0xfa]],
  ] as const) {
    it(`Settings → ${pin} on a ${os} OS reaches the pools and timeline canvases and the accent colour`, async () => {
      const page = await open('#/settings', { os });
      await page.check(`input[name="theme"][value="${pin}"]`);
      await page.click('button[type="submit"]');
      await page.waitForFunction((t) => document.documentElement.dataset.theme === t, pin);
      await page.evaluate((h) => (window.location.hash = h), run('live'));
      await page.waitForSelector('[data-testid=pools][data-gpu]');
      // The canvas background outside both grids is the pinned theme's background.
      await expect.poll(() => page.evaluate(countColour, ['[data-testid=pools] canvas', ...bg] as [string, number, number, number])).toBeGreaterThan(1000);
      const accent = await page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--accent').trim());
      expect(accent).toBe(pin === 'dark' ? '#4ea1ff' : '#1f6feb');
      await page.screenshot({ path: join(ARTIFACTS, `review-live-${pin}-on-${os}.png`) });
      await page.evaluate((h) => (window.location.hash = h), run('timeline'));
      await page.waitForSelector('[data-testid=timeline][data-t0]');
      await expect.poll(() => page.evaluate(countColour, ['[data-testid=timeline] canvas', ...bg] as [string, number, number, number])).toBeGreaterThan(1000);
      await page.close();
      expect(w.errors).toEqual([]);
    });
  }
  for (const [width, height] of [
    [1500, 950],
    [1100, 750],
  ] as const) {
    it(`Live at ${width}×${height}: each pool's title sits over the pools canvas, not over the stats panel`, async () => {
      const page = await open(run('live'), { width, height });
      await page.waitForSelector('[data-testid=pools][data-gpu]');
      const canvas = (await page.locator('[data-testid=pools]').boundingBox())!;
      const stats = (await page.locator('.live-stats').boundingBox())!;
      for (const pool of ['gpu', 'host']) {
        const title = (await page.locator(`[data-stat=${pool}]`).locator('..').boundingBox())!;
        expect(title.x, pool).toBeGreaterThanOrEqual(canvas.x - 1);
        expect(title.x + title.width, pool).toBeLessThanOrEqual(canvas.x + canvas.width + 1);
        expect(title.x + title.width, pool).toBeLessThan(stats.x);
        expect(title.y + title.height, pool).toBeLessThanOrEqual(canvas.y + 1);
      }
      await page.screenshot({ path: join(ARTIFACTS, `review-live-${width}.png`) });
      await page.close();
      expect(w.errors).toEqual([]);
    });
  }
  it('Summary: the rounds, blocks and bandwidth tables right-align their numbers, and block counts have thousands separators', async () => {
    const page = await open(run('summary'));
    await page.waitForSelector('[data-testid=rounds-table]');
    const cells = await page.evaluate(() =>
      // The round number is the row's name, left as a label.
      Array.from(document.querySelectorAll('.summary-view table:not([data-testid=settings-table]) td:not([data-testid=rounds-table] td:first-child)')).map((td) => ({
        text: (td.textContent ?? '').trim(),
        align: getComputedStyle(td).textAlign,
      })),
    );
    const numeric = cells.filter((c) => /^[\d,.]+( [a-zA-Z/%]+)?$|^\d+%$/.test(c.text));
    // 11 rounds × (8 times + 5 op counts), 7 block rows, 2 directions × 4: nearly every cell is a number.
    expect(numeric.length).toBeGreaterThan(100);
    expect(numeric.filter((c) => c.align !== 'right').map((c) => c.text)).toEqual([]);
    // The context round offloads thousands of blocks on this sample (the log says 922 and 2,004 stored).
    const round0 = await page.locator('[data-testid=rounds-table] tbody tr').first().locator('td').allTextContents();
    expect(round0.slice(9)).toEqual(['2,004', '922', '0', '0', '0']);
    // The foot's E2E is the whole timed span (the rows' E2E summed), and says so.
    expect(await page.locator('[data-testid=rounds-table] tfoot th').first().textContent()).toMatch(/E2E total/);
    await page.screenshot({ path: join(ARTIFACTS, 'review-summary.png') });
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('keyboard: a nav link with the focus looks unlike the current view\'s tab, and Alt+digit switches views', async () => {
    const page = await open('#/runs');
    await page.waitForSelector('.runs-table');
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.getAttribute('data-nav'))).toBe('hosts');
    const look = (sel: string) =>
      page.evaluate((q) => {
        const cs = getComputedStyle(document.querySelector(q)!);
        return `${cs.outlineStyle} ${cs.outlineWidth} ${cs.outlineColor} | ${cs.backgroundColor} | ${cs.color}`;
      }, sel);
    const focused = await look('.nav a[data-nav=hosts]');
    const current = await look('.nav a[data-nav=runs]');
    expect(focused).not.toBe(current);
    expect(focused).toMatch(/^solid 2px/);
    await page.keyboard.press('Enter');
    await page.waitForSelector('tr[data-host=local]');
    await page.keyboard.press('Alt+5');
    await page.waitForSelector('[data-testid=chart-ttft]');
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Timeline at 1100×750: the toolbar stays one row (the hint yields, Export stays beside the zoom buttons)', async () => {
    const page = await open(run('timeline'), { width: 1100, height: 750 });
    await page.waitForSelector('[data-testid=timeline][data-t0]');
    const top = async (sel: string) => (await page.locator(sel).first().boundingBox())!.y;
    const zoom = await top('.transport button');
    expect(Math.abs((await top('.transport [data-action=export]')) - zoom)).toBeLessThan(8);
    expect(Math.abs((await top('.transport [data-action=save-image]')) - zoom)).toBeLessThan(8);
    await page.screenshot({ path: join(ARTIFACTS, 'review-timeline-1100.png') });
    // Where there is room, the hint reads in full (it is cut only when the row is short of space).
    await page.setViewportSize({ width: 1500, height: 950 });
    await expect.poll(() => page.evaluate(() => { const h = document.querySelector('.transport .hint-line')!; return h.scrollWidth <= h.clientWidth; })).toBe(true);
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Timeline: the focused timeline shows its whole focus ring inside the scroll box (W/S/A/D go to it)', async () => {
    const page = await open(run('timeline'));
    await page.waitForSelector('[data-testid=timeline][data-t0]');
    // The view focuses the timeline on open so its keys work at once.
    expect(await page.evaluate(() => document.activeElement?.getAttribute('data-testid'))).toBe('timeline');
    const ring = await page.evaluate(() => {
      const el = document.querySelector('[data-testid=timeline]')!;
      const cs = getComputedStyle(el);
      const grow = parseFloat(cs.outlineOffset) + parseFloat(cs.outlineWidth);
      const r = el.getBoundingClientRect();
      const box = el.closest('.timeline-scroll')!.getBoundingClientRect();
      return { style: cs.outlineStyle, left: r.left - grow - box.left, top: r.top - grow - box.top, right: box.right - (r.right + grow), bottom: box.bottom - (r.bottom + grow) };
    });
    expect(ring.style).toBe('solid');
    for (const side of ['left', 'top', 'right', 'bottom'] as const) expect(ring[side], side).toBeGreaterThanOrEqual(0);
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Timeline: W/A/S/D work with the focus anywhere in the view (after Zoom in), and a tap moves a whole step', async () => {
    const page = await open(run('timeline'));
    await page.waitForSelector('[data-testid=timeline][data-t0]');
    const view = () =>
      page.evaluate(() => {
        const el = document.querySelector<HTMLElement>('[data-testid=timeline]')!;
        return { t0: Number(el.dataset.t0), t1: Number(el.dataset.t1) };
      });
    const whole = await view();
    // Zoom in with the button: the focus is on the button now, not on the canvas.
    await page.click('[data-action=zoom-in]');
    await page.waitForFunction((w) => Number(document.querySelector<HTMLElement>('[data-testid=timeline]')!.dataset.t1) - Number(document.querySelector<HTMLElement>('[data-testid=timeline]')!.dataset.t0) < 0.9 * (w.t1 - w.t0), whole);
    expect(await page.evaluate(() => document.activeElement?.getAttribute('data-action'))).toBe('zoom-in');
    const settled = (before: { t0: number; t1: number }) =>
      page.waitForFunction((b) => {
        const el = document.querySelector<HTMLElement>('[data-testid=timeline]')!;
        return el.dataset.moving === '' && (Number(el.dataset.t0) !== b.t0 || Number(el.dataset.t1) !== b.t1);
      }, before);
    const a = await view();
    await page.keyboard.press('w'); // a tap
    await settled(a);
    const b = await view();
    // A tap zooms a step (~1.8×, Perfetto's 200 ms of motion); it moved ~4% before.
    expect((a.t1 - a.t0) / (b.t1 - b.t0)).toBeGreaterThan(1.5);
    await page.keyboard.press('d');
    await settled(b);
    const c = await view();
    expect(c.t0).toBeGreaterThan(b.t0);
    expect(c.t1 - c.t0).toBeCloseTo(b.t1 - b.t0, -3);
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Live: each nvidia-smi sparkline prints its value at the replay time, GPU memory against the card', async () => {
    const page = await open(run('live'));
    await page.waitForSelector('[data-testid=pools][data-gpu]');
    const value = (key: string) => page.locator(`[data-spark-value=${key}]`).textContent();
    // A finished run opens at its end: this sample holds 85.5 GB of weights and KV on an 85.5 GB card's scale.
    await expect.poll(() => value('gpu_mem')).toMatch(/^\d+(\.\d+)? GB of \d+(\.\d+)? GB$/);
    expect(await value('gpu_util')).toMatch(/^\d+%$/);
    expect(await value('pcie_rx')).toMatch(/^\d+(\.\d+)? [kMG]?B\/s$/);
    const atEnd = await value('gpu_mem');
    // Home goes where the first request comes; Home again to the very start. The clock beside the
    // scrubber keeps the total's unit at the start ("0 ns / 58.15 s" before).
    await page.keyboard.press('Home');
    await page.keyboard.press('Home');
    await expect.poll(() => page.locator('.transport .time').textContent(), { timeout: 15_000 }).toMatch(/^0\.00 s \/ \d+\.\d\d s$/);
    // Before the first nvidia-smi sample there is no value ("–"): the value follows the replay time.
    await expect.poll(() => value('gpu_mem')).not.toBe(atEnd);
    await page.screenshot({ path: join(ARTIFACTS, 'review-live-sparks.png') });
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Compare names the selected runs it cannot find instead of charting "0 selected runs" silently', async () => {
    const page = await open(`#/compare?runs=${encodeURIComponent('gone-run')},${encodeURIComponent(SAMPLE)}`);
    await page.waitForSelector('[data-testid=chart-ttft]');
    expect(await page.locator('[data-testid=chart-ttft] g.series.measured').count()).toBe(1);
    expect(await page.textContent('[data-testid=compare-missing]')).toMatch(/^1 selected run is not in the library.*: gone-run$/);
    await page.evaluate((h) => (window.location.hash = h), '#/compare');
    await page.waitForSelector('[data-testid=compare-missing]', { state: 'detached' });
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Compare: queued and service TTFT charted and tabled, as the runs list them', async () => {
    const ids = ['users2-host55e9', 'users4-host55e9', 'users4-recompute'].map((x) => `sample:h100-llama-3.1-8b-${x}`);
    const page = await open(`#/compare?runs=${ids.map(encodeURIComponent).join(',')}`, { width: 1440, height: 900 });
    await page.waitForSelector('[data-testid=chart-service-ttft] g.series.measured circle');
    expect(await page.locator('.compare-table th').allTextContents()).toEqual(['Series', 'Users', 'Queued TTFT', 'Service TTFT', 'E2E']);
    const listed = await w.core.handlers.listRuns();
    const byUsers = new Map((listed.ok ? listed.value : []).filter((r) => ids.includes(r.id) && r.host_kv_bytes !== 0).map((r) => [r.users, r]));
    const rows = await page.locator('.compare-table tbody tr').evaluateAll((trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)));
    // The host-pool series' rows: each TTFT as the run's listing has it.
    for (const [users, r] of byUsers) {
      const row = rows.find((x) => x[1] === String(users) && !/recompute/.test(x[0]!))!;
      expect(row.slice(2)).toEqual([formatNs(r.ttft_ns_mean), formatNs(r.service_ttft_ns_mean), formatNs(r.e2e_ns)]);
    }
    expect(await page.locator('[data-testid=chart-service-ttft] figcaption').textContent()).toMatch(/^Service TTFT \(mean over the timed rounds\) vs users · llama-3\.1-8b$/);
    await page.screenshot({ path: join(ARTIFACTS, 'review-compare-8b.png'), fullPage: true });
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Settings: a theme previewed but not saved is dropped on leaving Settings, so the window and the form agree', async () => {
    const page = await open('#/settings');
    await page.waitForSelector('input[name="theme"]:checked');
    const saved = await page.getAttribute('input[name="theme"]:checked', 'value');
    const other = saved === 'dark' ? 'light' : 'dark';
    await page.check(`input[name="theme"][value="${other}"]`);
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe(other);
    await page.evaluate(() => (window.location.hash = '#/runs'));
    await page.waitForSelector('.runs-table');
    // "system" removes the pin; dark and light set it.
    expect(await page.evaluate(() => document.documentElement.dataset.theme ?? 'system')).toBe(saved);
    await page.evaluate(() => (window.location.hash = '#/settings'));
    expect(await page.getAttribute('input[name="theme"]:checked', 'value')).toBe(saved);
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Timeline: a clicked request\'s details write counts with separators and lead with the block total', async () => {
    const events = realRuns({ maxBytes: 20e6 }).find((r) => r.name === SAMPLE)!.events;
    const tm = buildTimelineModel(events, compileReplay(events));
    // A timed round's request: its prompt is the user's whole context, thousands of tokens.
    const req = tm.requests.find((r) => r.round === 3 && r.user === 3 && r.queued !== null)!;
    const prompt = (events.find((e) => e.type === 'req' && e.user === req.user && e.round === req.round && e.prompt_tokens !== undefined) as { prompt_tokens: number }).prompt_tokens;
    expect(prompt).toBeGreaterThan(999);
    const page = await open(run('timeline'));
    await page.waitForSelector('[data-testid=timeline][data-t0]');
    const t0 = Number(await page.getAttribute('[data-testid=timeline]', 'data-t0'));
    const t1 = Number(await page.getAttribute('[data-testid=timeline]', 'data-t1'));
    const layout = timelineLayout(tm, 130);
    const row = layout.rows.find((r) => r.kind === 'user' && r.index === req.user)!;
    const box = (await page.locator('[data-testid=timeline] canvas').boundingBox())!;
    const x = xOf({ t0, t1, width: box.width, height: layout.height }, 130, (req.first_token! + req.done!) / 2);
    await page.mouse.click(box.x + x, box.y + row.y + row.h / 2);
    await page.waitForSelector('.request-details');
    const text = (await page.textContent('.request-details'))!;
    expect(text).toContain(`prompt ${prompt.toLocaleString('en-US')} tokens`);
    expect(text).toMatch(/Block moves: [\d,]+ blocks in (store|offload|onboard)/);
    // No bare four-digit-or-longer number anywhere in the panel.
    expect(text.match(/(?<![\d,.])\d{4,}(?![\d,.])/g)).toBeNull();
    await page.screenshot({ path: join(ARTIFACTS, 'review-timeline-details.png') });
    await page.close();
    expect(w.errors).toEqual([]);
  });
  for (const view of ['live', 'timeline', 'summary']) {
    it(`${view} at 1100×750: the run tabs stay on the title row`, async () => {
      const page = await open(run(view), { width: 1100, height: 750 });
      await page.waitForSelector('.run-header .run-tabs');
      const mid = async (sel: string) => {
        const b = (await page.locator(sel).first().boundingBox())!;
        return b.y + b.height / 2;
      };
      expect(Math.abs((await mid('.run-header .run-tabs')) - (await mid('.run-header h1')))).toBeLessThan(8);
      // Cut short, the line still starts with what tells runs apart: the model and the users.
      expect(await page.textContent('.run-header .run-meta')).toMatch(/^llama-3\.1-8b · 4 users · /);
      await page.close();
      expect(w.errors).toEqual([]);
    });
  }
  it('Timeline from the keyboard: arrow keys choose a request (details shown, view follows), Esc clears', async () => {
    const page = await open(run('timeline'));
    await page.waitForSelector('[data-testid=timeline][data-t0]');
    const selected = () => page.getAttribute('[data-testid=timeline]', 'data-selected');
    // Zoomed in on the start: the requests lie later, off screen.
    for (let i = 0; i < 4; i++) await page.click('[data-action=zoom-in]');
    await page.focus('[data-testid=timeline]');
    await page.keyboard.press('ArrowRight');
    await expect.poll(selected).toMatch(/^\d+\/0$/);
    await page.waitForSelector('.request-details');
    const [user] = (await selected())!.split('/').map(Number);
    await page.keyboard.press('ArrowDown');
    await expect.poll(selected).toBe(`${user! + 1}/0`);
    // The chosen request is in view.
    const t0 = Number(await page.getAttribute('[data-testid=timeline]', 'data-t0'));
    const t1 = Number(await page.getAttribute('[data-testid=timeline]', 'data-t1'));
    const events = realRuns({ maxBytes: 20e6 }).find((r) => r.name === SAMPLE)!.events;
    const tm = buildTimelineModel(events, compileReplay(events));
    const r = tm.requests.find((q) => q.user === user! + 1 && q.round === 0)!;
    expect(r.queued! < t1 && (r.done ?? tm.t1) > t0).toBe(true);
    await page.keyboard.press('Escape');
    await expect.poll(selected).toBe('');
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Runs: "Compare all" looks as usable as it is, and one checked run reads "Compare 1 run"', async () => {
    const page = await open('#/runs');
    await page.waitForSelector('.runs-table');
    const compare = page.locator('[data-action=compare]');
    expect(await compare.textContent()).toBe('Compare all');
    expect(await compare.evaluate((el) => getComputedStyle(el).opacity)).toBe('1');
    await page.check(`tr[data-run-id="${SAMPLE}"] input[type=checkbox]`);
    expect(await compare.textContent()).toBe('Compare 1 run');
    await page.uncheck(`tr[data-run-id="${SAMPLE}"] input[type=checkbox]`);
    await compare.click();
    await page.waitForSelector('[data-testid=chart-ttft] g.series.measured');
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Runs: newest first with a date column, a failed run says why in its row, and a header click sorts', async () => {
    // A run that failed before the agent wrote anything, as the app records it, and a finished CPU run.
    const failed = join(runsDir, 'review-failed');
    mkdirSync(failed, { recursive: true });
    writeFileSync(join(failed, 'events.jsonl'), '');
    writeFileSync(join(failed, 'meta.json'), JSON.stringify({ id: 'review-failed', name: 'review failed', host: 'local', status: 'error', createdAt: '2030-01-02T03:04:00.000Z', workload: { model: 'tiny', users: 2 }, error: { code: 'agent_failed', message: 'torch does not import for python3' } }));
    const done = join(runsDir, 'review-done');
    mkdirSync(done, { recursive: true });
    copyFileSync(join(FIXTURE_RUNS_DIR, 'cpu-tiny-4users-offload', 'events.jsonl'), join(done, 'events.jsonl'));
    writeFileSync(join(done, 'meta.json'), JSON.stringify({ id: 'review-done', name: 'review done', host: 'local', status: 'ok', createdAt: '2030-01-01T00:00:00.000Z' }));
    const page = await open('#/runs', { width: 1440, height: 900 });
    await page.waitForSelector('tr[data-run-id="review-failed"]');
    const ids = () => page.locator('.runs-table tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-run-id')));
    // Newest first: the two 2030 runs lead, the samples (2026) follow.
    expect((await ids()).slice(0, 2)).toEqual(['review-failed', 'review-done']);
    expect(await page.locator('tr[data-run-id="review-failed"] td[data-col=date]').textContent()).toMatch(/^2030-01-0[12] \d\d:\d\d$/);
    const row = page.locator('tr[data-run-id="review-failed"]');
    expect(await row.locator('[data-col=error]').textContent()).toBe('agent_failed: torch does not import for python3');
    // Users: the 2 asked, not the 0 seen.
    expect(await row.locator('td.num').first().textContent()).toBe('2');
    // Sort by E2E, low first: runs with no E2E (the failed one) go last.
    await page.click('button[data-sort=e2e]');
    await expect.poll(async () => (await ids()).at(-1)).toBe('review-failed');
    expect(await page.getAttribute('th:has(button[data-sort=e2e])', 'aria-sort')).toBe('ascending');
    const e2e = await page.locator('.runs-table tbody tr').evaluateAll((rows) => rows.map((r) => r.querySelector('td[data-col=e2e]')?.textContent ?? ''));
    const secs = e2e.filter((t) => t !== '–').map((t) => Number.parseFloat(t) * (t.endsWith(' ms') ? 1e-3 : 1));
    expect(secs).toEqual([...secs].sort((a, b) => a - b));
    await page.screenshot({ path: join(ARTIFACTS, 'review-runs.png') });
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Runs at 1100×750: the table fits the window, and card and model names stay on one line', async () => {
    const page = await open('#/runs', { width: 1100, height: 750 });
    await page.waitForSelector('.runs-table tbody tr');
    const fit = await page.locator('.runs-table').evaluate((t) => [t.getBoundingClientRect().right, document.documentElement.clientWidth]);
    expect(fit[0]).toBeLessThanOrEqual(fit[1]!);
    // A cell of one line is about one line-height tall (text + padding); "llama-3.1-70b-fp8" broke at
    // its hyphens and "NVIDIA H100 80GB HBM3" over four lines.
    const tall = await page.locator('.runs-table tbody .nowrap').evaluateAll((tds) =>
      tds.map((td) => {
        const range = document.createRange();
        range.selectNodeContents(td);
        const lines = new Set(Array.from(range.getClientRects()).map((r) => Math.round(r.top)));
        return { text: td.textContent, lines: lines.size };
      }).filter((x) => x.lines > 1));
    expect(tall).toEqual([]);
    expect(await page.locator('.runs-table tbody .nowrap').count()).toBeGreaterThanOrEqual(2);
    const gpu = page.locator(`tr[data-run-id="${SAMPLE}"] [data-col=gpu]`);
    expect(await gpu.textContent()).not.toMatch(/^NVIDIA/);
    expect(await gpu.getAttribute('title')).toMatch(/^NVIDIA /);
    await page.close();
    expect(w.errors).toEqual([]);
  });

  it('Live in the nav with no run open lands on Runs saying why, and the hint goes once a run is opened', async () => {
    const page = await open('#/hosts');
    await page.waitForSelector('tr[data-host=local]');
    await page.keyboard.press('Alt+3');
    await page.waitForSelector('.runs-table');
    expect(await page.textContent('[data-testid=pick-hint]')).toMatch(/No run is open yet.*pools.*“pools” link/);
    expect(await page.getAttribute('.nav a[data-nav=runs]', 'aria-current')).toBe('page');
    await page.click(`tr[data-run-id="${SAMPLE}"] a:has-text("pools")`);
    await page.waitForSelector('[data-testid=pools][data-gpu]');
    // With a run open, the nav's Timeline goes to it (no hint).
    await page.click('.nav a[data-nav=timeline]');
    await page.waitForSelector('[data-testid=timeline][data-t0]');
    await page.click('.nav a[data-nav=runs]');
    await page.waitForSelector('.runs-table');
    expect(await page.locator('[data-testid=pick-hint]').count()).toBe(0);
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Live: blocks in flight read with a thousands separator when a big offload is in the air', async () => {
    const id = 'sample:h100-llama-3.1-70b-fp8-users4-host55e9';
    const events = realRuns({ maxBytes: 20e6 }).find((r) => r.name === id)?.events;
    if (!events) return; // the 8B sample moves at most a few hundred blocks at once
    const start = events.find((e) => e.type === 'run.start')!.t;
    // Playing at 0.25×, the moves of the last 400 ms of wall time (100 ms of run time, at most 2% of
    // the run) are in flight: find the time with the most.
    const moves = events.filter((e) => e.type === 'blocks' && (e.op === 'offload' || e.op === 'onboard')) as Array<{ t: number; ids: unknown[] }>;
    const inAir = Math.min(400e6 * 0.25, (events.reduce((m, e) => Math.max(m, e.t), 0) - start) / 50);
    let best = { t: 0, n: 0 };
    for (const m of moves) {
      const n = moves.filter((o) => o.t > m.t - inAir && o.t <= m.t).reduce((a, o) => a + o.ids.length, 0);
      if (n > best.n) best = { t: m.t, n };
    }
    expect(best.n).toBeGreaterThan(999);
    const page = await open(`#/runs/${encodeURIComponent(id)}/live`);
    await page.waitForSelector('[data-testid=pools][data-gpu]');
    const inflight = page.locator('.live-stats dd[data-stat=inflight]');
    // Paused, nothing is in the air: the grids are the pools as they stand.
    expect(await inflight.textContent()).toBe('0');
    // Play through the big offload; every value the count takes is recorded, and while it is in
    // the air it reads "2,034", not "2034".
    await page.evaluate(() => {
      const dd = document.querySelector('.live-stats dd[data-stat=inflight]')!;
      const seen: string[] = ((window as unknown as { inflightSeen: string[] }).inflightSeen = []);
      new MutationObserver(() => seen.push(dd.textContent ?? '')).observe(dd, { childList: true, characterData: true, subtree: true });
    });
    await page.evaluate((v) => {
      const s = document.querySelector<HTMLInputElement>('[data-action=scrub]')!;
      s.value = v;
      s.dispatchEvent(new Event('input', { bubbles: true }));
    }, String(best.t - start - inAir / 2));
    await page.selectOption('[data-action=speed]', '0.25');
    await page.click('[data-action=play]');
    await page.waitForFunction((t) => Number(document.querySelector<HTMLElement>('[data-testid=pools]')!.dataset.t) > t, best.t + inAir, { timeout: 60_000 });
    const seen = await page.evaluate(() => (window as unknown as { inflightSeen: string[] }).inflightSeen);
    expect(seen.filter((v) => Number(v.replace(/,/g, '')) > 999).length).toBeGreaterThan(0);
    for (const v of seen.filter((x) => Number(x.replace(/,/g, '')) > 999)) expect(v).toMatch(/^\d{1,3}(,\d{3})+$/);
    await page.click('[data-action=play]');
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Pools explain themselves: paused they are the pools as counted, a caption and a hover say what is there, play skips setup, next/previous move step the log', async () => {
    const events = realRuns({ maxBytes: 20e6 }).find((r) => r.name === SAMPLE)!.events;
    const start = events.find((e) => e.type === 'run.start')!.t;
    const lineTimes = [...new Set(events.filter((e) => e.type === 'blocks').map((e) => e.t))].sort((a, b) => a - b);
    const firstQueued = events.filter((e) => e.type === 'req' && e.phase === 'queued').reduce((m, e) => Math.min(m, e.t), Infinity);
    const page = await open(run('live'), { width: 1440, height: 900 });
    await page.waitForSelector('[data-testid=pools][data-gpu]');
    const dataT = async () => Number(await page.getAttribute('[data-testid=pools]', 'data-t'));
    // A finished run opens paused at its end: nothing in the air.
    expect(await page.locator('.live-stats dd[data-stat=inflight]').textContent()).toBe('0');
    expect(await page.textContent('[data-testid=pools-caption]')).toMatch(/blocks? (stored in|offloaded to|onboarded to|evicted from|reused in) the (GPU|host) pool/);
    // Every mark has a key.
    for (const mark of ['free', 'moving', 'landing', 'stored', 'evicted', 'hit']) expect(await page.locator(`[data-testid=pools-legend] [data-legend=${mark}]`).count(), mark).toBe(1);
    expect(await page.locator('[data-action=speed] option[value="0.01"]').count()).toBe(1);
    // Hover a GPU cell: whose block, and its last move.
    const canvas = (await page.locator('[data-testid=pools] canvas').boundingBox())!;
    // The middle of the GPU grid (the left half of the canvas), off any 1 px gutter between cells.
    for (const d of [0, 3, 6, 9]) {
      await page.mouse.move(canvas.x + canvas.width / 4 + d, canvas.y + canvas.height / 2 + d);
      if (!(await page.locator('[data-testid=pools-tip]').isHidden())) break;
    }
    expect(await page.textContent('[data-testid=pools-tip]')).toMatch(/^GPU pool slot [\d,]+: user \d+'s block · last move: R\d+ (stored|offloaded to the host pool|onboarded to the GPU pool|reused \(prefix hit\)) at [\d.]+ m?s$/);
    // Home goes to where the action starts (setup skipped), Home again to the very start.
    await page.focus('.live-view');
    await page.keyboard.press('Home');
    await expect.poll(dataT).toBe(Math.max(start, Math.min(firstQueued, lineTimes[0]!) - 200e6));
    expect(await page.textContent('[data-testid=pools-caption]')).toMatch(/^(setting up|no block has moved yet)/);
    await page.keyboard.press('Home');
    await expect.poll(dataT).toBe(start);
    // Next move: the log's first blocks line, then the second; previous: back to the first.
    await page.click('[data-action=next-move]');
    await expect.poll(dataT).toBe(lineTimes[0]);
    await page.click('[data-action=next-move]');
    await expect.poll(dataT).toBe(lineTimes[1]);
    await page.keyboard.press(',');
    await expect.poll(dataT).toBe(lineTimes[0]);
    expect(await page.textContent('[data-testid=pools-caption]')).toMatch(/blocks? stored in the GPU pool$/);
    // Play from the very start begins where the action starts.
    await page.keyboard.press('Home');
    await page.keyboard.press('Home');
    await page.click('[data-action=play]');
    await expect.poll(dataT).toBeGreaterThanOrEqual(Math.min(firstQueued, lineTimes[0]!) - 200e6);
    await page.click('[data-action=play]');
    await page.screenshot({ path: join(ARTIFACTS, 'review-pools-explained.png') });
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Escape answers a host-key or password prompt with no (refuse / cancel), and the page has the keyboard again', async () => {
    const page = await open('#/hosts');
    await page.waitForSelector('tr[data-host=local]');
    w.core.push({ kind: 'prompt', prompt: { id: 'review-key', type: 'host-key', host: 'gpu-box', hop: 'gpu-box:22', keyType: 'ssh-ed25519', fingerprint: 'SHA256:reviewreviewreviewreviewreviewreviewrevi', message: 'The authenticity of host gpu-box:22 cannot be established.' } });
    w.core.push({ kind: 'prompt', prompt: { id: 'review-pw', type: 'password', host: 'gpu-box', user: 'me', message: 'Password needed.' } });
    await page.waitForSelector('[data-testid=prompt]:has-text("Unknown host key")');
    await page.keyboard.press('Escape');
    // The next question in the queue, then nothing.
    await page.waitForSelector('[data-testid=prompt]:has-text("Password for me@gpu-box")');
    await page.keyboard.press('Escape');
    await page.waitForSelector('[data-testid=prompt]', { state: 'detached' });
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('File → Export from the menu: the dialog takes the focus and Escape cancels it', async () => {
    const page = await open(run('summary'));
    await page.waitForSelector('[data-testid=rounds-table]');
    w.core.push({ kind: 'menu', action: 'export' });
    await page.waitForSelector('.shell-dialog[aria-label="Export run"]');
    await expect.poll(() => page.evaluate(() => !!document.activeElement?.closest('.shell-dialog'))).toBe(true);
    await page.keyboard.press('Escape');
    await page.waitForSelector('.shell-dialog', { state: 'detached' });
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it('Live: the legend keys the free-slot colour the grids are mostly drawn in', async () => {
    const page = await open(run('live'));
    await page.waitForSelector('[data-testid=pools][data-gpu]');
    const swatch = await page.locator('[data-legend=free] i').evaluate((el) => getComputedStyle(el).backgroundColor);
    const grid = await page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--grid').trim());
    const hex = (rgb: string) => '#' + rgb.match(/\d+/g)!.slice(0, 3).map((n) => Number(n).toString(16).padStart(2, '0')).join('');
    // The canvas paints free cells in the theme's grid colour, the same value as --grid.
    expect(hex(swatch)).toBe(grid);
    expect(await page.textContent('[data-legend=free]')).toContain('free slot');
    await page.close();
    expect(w.errors).toEqual([]);
  });
  it.skipIf(!hasDebianTorch)('a live Local run, from New run to its Summary: the form follows the probe (tiny on the CPU, an interpreter with torch offered), the run is watched as it runs, and the Summary ends as the log', async () => {
    // Local's Python is one without torch (a venv without system packages), as on a machine whose
    // python3 is not Debian's: the probe must offer the one that has it.
    const venv = mkdtempSync(join(tmpdir(), 'kvscope-review-venv-'));
    execFileSync(DEBIAN_TORCH, ['-m', 'venv', '--without-pip', venv]);
    const before = await w.core.settings.load();
    await w.core.settings.save({ ...before, pythonByHost: { ...before.pythonByHost, local: join(venv, 'bin', 'python3') } });
    try {
      const page = await open('#/new?host=local', { width: 1440, height: 900 });
      // Local is probed as the view opens; its Python has no torch, so Start is refused and the
      // interpreters that have it are offered.
      await page.waitForSelector(`[data-testid=torch-pythons] [data-python="${DEBIAN_TORCH}"]`, { timeout: 120_000 });
      expect(await page.isDisabled('button[type=submit]')).toBe(true);
      expect(await page.textContent('.field.invalid small.error')).toContain(`does not import torch — use ${DEBIAN_TORCH}`);
      // A CPU host starts from the tiny model and pools sized so blocks move, not the seed's 70B and 55 GB.
      expect(await page.inputValue('#f-model')).toBe('tiny');
      expect(await page.inputValue('#f-host_pool')).not.toBe('55e9');
      expect(await page.textContent('[data-plan=gpu]')).toMatch(/: 2 users at once, .* — 4 users take turns/);
      await page.screenshot({ path: join(ARTIFACTS, 'review-new-run-cpu.png') });
      await page.click(`[data-action=use-python][data-python="${DEBIAN_TORCH}"]`);
      expect(await page.inputValue('#f-python')).toBe(DEBIAN_TORCH);
      // The pre-flight check refuses a GPU pool smaller than one request, before anything starts.
      await page.fill('#f-gpu_pool', '100000');
      await page.waitForSelector('#f-gpu_pool-err');
      expect(await page.textContent('#f-gpu_pool-err')).toBe('gpu_pool: 100 kB holds 6 blocks of 16.4 kB; one request needs 58 (1,856 tokens)');
      expect(await page.isDisabled('button[type=submit]')).toBe(true);
      // Back to the starting pool; a short run so the test stays short, named to find it.
      await page.fill('#f-gpu_pool', '2MB');
      await page.fill('#f-rounds', '6');
      await page.fill('#f-name', 'review live run');
      await page.waitForSelector('button[type=submit]:not([disabled])');
      await page.click('button[type=submit]');
      await page.waitForSelector('.progress-row a', { timeout: 60_000 });
      const runId = (await page.textContent('.progress-row a'))!.trim();
      // Open it at once (in-app link): it is still running, so the window follows its tail.
      await page.click('.progress-row a');
      await page.waitForSelector('[data-testid=pools]');
      expect(await page.textContent('.run-header .status')).toBe('running');
      await page.waitForSelector('.run-header .status-ok', { timeout: 180_000 });
      await page.screenshot({ path: join(ARTIFACTS, 'review-live-run-pools.png') });
      // The log as stored: what the Summary must show without a reload.
      const events = decodeAll(readFileSync(join(runsDir, runId, 'events.jsonl'))).events;
      const a = analyzeEvents(events);
      expect(a.status).toBe('ok');
      expect(a.roundRows.length).toBe(7);
      expect(a.blocks.onboarded).toBeGreaterThan(0);
      // The legend names every user (it had none: the analysis was the one made as the run opened).
      expect(await page.locator('.legend-item').allTextContents()).toEqual(expect.arrayContaining([0, 1, 2, 3].map((u) => ` user ${u}`)));
      await page.click('.run-tabs a:has-text("Summary")');
      await page.waitForSelector('[data-testid=rounds-table]');
      expect(await page.textContent('.run-header .run-meta')).toMatch(/^tiny · 4 users · torch · local$/);
      const rows = await page.locator('[data-testid=rounds-table] tbody tr').evaluateAll((trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)));
      expect(rows.length).toBe(7);
      for (const [i, r] of a.roundRows.entries()) {
        const moved = [0, 0, 0, 0, 0];
        for (const e of events) if (e.type === 'blocks' && e.round === r.round) moved[['store', 'offload', 'onboard', 'evict', 'hit'].indexOf(e.op)]! += e.ids.length;
        expect(rows[i], `round ${r.round}`).toEqual([
          r.round === 0 ? '0 (context)' : String(r.round),
          String(r.users),
          formatNs(r.ttft.mean),
          formatNs(r.ttft.p50),
          formatNs(r.ttft.p99),
          formatNs(r.serviceTtft.mean),
          formatNs(r.serviceTtft.p50),
          formatNs(r.serviceTtft.p99),
          formatNs(r.e2e_ns),
          ...moved.map(formatCount),
        ]);
      }
      expect(await page.locator('[data-testid=rounds-table] tfoot th').nth(8).textContent()).toBe(formatNs(a.e2e_ns));
      await page.screenshot({ path: join(ARTIFACTS, 'review-live-run-summary.png'), fullPage: true });
      await page.click('.run-tabs a:has-text("Timeline")');
      await page.waitForSelector('[data-testid=timeline][data-t0]');
      await page.screenshot({ path: join(ARTIFACTS, 'review-live-run-timeline.png') });
      await page.close();
      expect(w.errors).toEqual([]);
    } finally {
      await w.core.settings.save(before);
    }
  }, 300_000);
});
