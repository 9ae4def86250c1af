/**
 * Opening a run: from a click in the runs list to the first paint of Pools, Timeline and Summary,
 * with the run's index (docs/run-index.md) and from its log (`?open=log`, how every run opened
 * before indexes), side by side in one run of this script, in Debian's Chromium with software
 * rendering through the real `kvscope serve` bridge. Also: switching between a run's views, the
 * renderer's memory with the run open, the index's size against its log's, and what building each
 * index once costs.
 *
 * Runs: the bundled 70B users-8 run (resources/samples, 59,604 lines, 90,357 block moves) and a
 * generated 16-user sweep point of ~1,055,000 lines (bench/generated-run.ts).
 * Targets: click → first paint ≤ 0.5 s (bundled) and ≤ 1.5 s (generated); a view switch ≤ 100 ms;
 * renderer memory ≤ 500 MB with the generated run open; index ≤ 1/3 of its log.
 *
 *   npm run build && node scripts/run-ts.mjs bench/renderer-open.bench.ts [--repeat 3] [--log-repeat 1] [--lines 1000000]
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { generatedSweepPointRun } from './generated-run';
import { loadAvg, machine, openHarness, writeRun } from './renderer-common';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const REPEAT = arg('--repeat', 3);
/** Opens from the log of the generated run take ~10 s each on the 2-core box: fewer by default. */
const LOG_REPEAT_GENERATED = arg('--log-repeat', 1);
const LINES = arg('--lines', 1_000_000);
const SAMPLE = 'h100-llama-3.1-70b-fp8-users8-host55e9';
const SAMPLES_DIR = join(process.cwd(), 'resources', 'samples');
const GENERATED = 'generated-16u-1m';

type View = 'live' | 'timeline' | 'summary';
const VIEWS: View[] = ['live', 'timeline', 'summary'];
/** What each view shows once it has painted its content. */
const PAINTED: Record<View, string> = {
  live: '[data-testid=pools][data-gpu]',
  timeline: '[data-testid=timeline][data-t0]',
  summary: '[data-testid=bandwidth-table]',
};

interface PageG {
  document: { querySelector(s: string): { click(): void } | null };
  performance: { now(): number };
  requestAnimationFrame(cb: () => void): void;
}

/**
 * Page side: clicks the link, then polls each frame for the view's content; the paint is the
 * next frame after the one that first holds it. Returns ms from the click.
 */
function clickToPaint([link, painted]: [string, string]): Promise<{ contentMs: number; paintMs: number }> {
  const g = globalThis as unknown as PageG;
  return new Promise((resolve, reject) => {
    const a = g.document.querySelector(link);
    if (!a) return reject(new Error(`no link ${link}`));
    const t0 = g.performance.now();
    a.click();
    const check = () => {
      if (g.document.querySelector(painted)) {
        const contentMs = g.performance.now() - t0;
        g.requestAnimationFrame(() => resolve({ contentMs, paintMs: g.performance.now() - t0 }));
      } else g.requestAnimationFrame(check);
    };
    g.requestAnimationFrame(check);
  });
}

const hrefOf = (id: string, view: View) => `#/runs/${encodeURIComponent(id)}/${view}`;

/** Before anything of this script runs: what the machine was doing (the result says it again at the end). */
const loadAtStart = loadAvg();
const h = await openHarness(undefined, { samplesDir: SAMPLES_DIR });
async function freshPage(mode: 'index' | 'log'): Promise<Page> {
  const page = await h.open(`${mode === 'log' ? '&open=log' : ''}#/runs`);
  await page.waitForSelector('a[data-action=open]', { timeout: 600_000 });
  return page;
}

/** Renderer processes' ids, from the browser's process list. */
async function rendererPids(): Promise<number[]> {
  const cdp = await h.browser.newBrowserCDPSession();
  const info = (await cdp.send('SystemInfo.getProcessInfo')) as { processInfo: Array<{ type: string; id: number }> };
  await cdp.detach();
  return info.processInfo.filter((p) => p.type === 'renderer').map((p) => p.id);
}

/** A process's resident memory (MB), from /proc. */
function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : NaN;
  } catch {
    return NaN;
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};

try {
  const commit = (() => {
    try {
      const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
      const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim() ? ' (with uncommitted changes)' : '';
      return head + dirty;
    } catch {
      return 'unknown';
    }
  })();
  const t0 = Date.now();
  const lines = await writeRun(h.runsDir, GENERATED, generatedSweepPointRun(LINES));
  const writeS = (Date.now() - t0) / 1000;
  const store = h.core.store;
  const runs = [
    { id: `sample:${SAMPLE}`, log: join(SAMPLES_DIR, `${SAMPLE}.jsonl.gz`), index: join(h.runsDir, '.index', `${SAMPLE}.kvindex`), target: 500 },
    { id: GENERATED, log: join(h.runsDir, GENERATED, 'events.jsonl'), index: join(h.runsDir, GENERATED, 'events.kvindex'), target: 1500 },
  ];
  // Built once (what the first listing or open does): timed per run.
  const build: Record<string, number> = {};
  for (const r of runs) {
    const b = Date.now();
    await store.index.build(await store.indexTarget(r.id));
    build[r.id] = (Date.now() - b) / 1000;
  }
  await store.list(); // every other bundled sample's index too, so listing never builds during a measurement

  const open: Record<string, Record<string, Record<View, number[]>>> = {};
  for (const r of runs) {
    open[r.id] = { index: { live: [], timeline: [], summary: [] }, log: { live: [], timeline: [], summary: [] } };
    const reps = Math.max(REPEAT, r.id === GENERATED ? LOG_REPEAT_GENERATED : REPEAT);
    for (let k = 0; k < reps; k++) {
      for (const view of VIEWS) {
        for (const mode of ['index', 'log'] as const) {
          if (mode === 'log' && r.id === GENERATED && k >= LOG_REPEAT_GENERATED) continue;
          if (mode === 'index' && k >= REPEAT) continue;
          const page = await freshPage(mode);
          const m = await page.evaluate(clickToPaint, [`.links a[href="${hrefOf(r.id, view)}"]`, PAINTED[view]] as [string, string]);
          open[r.id]![mode]![view].push(Math.round(m.paintMs));
          await page.close();
        }
      }
    }
  }

  // View switches on an open run (index), and the renderer's memory with it open in every view.
  const switches: Record<string, Record<string, number[]>> = {};
  const memory: Record<string, { rendererRssMb: number[]; ownProcess: boolean; jsHeapMb: number }> = {};
  for (const r of runs) {
    switches[r.id] = {};
    const before = new Set(await rendererPids());
    const page = await freshPage('index');
    // The page's own renderer: the one that was not there before it.
    const own = (await rendererPids()).filter((p) => !before.has(p));
    await page.evaluate(clickToPaint, [`.links a[href="${hrefOf(r.id, 'live')}"]`, PAINTED.live] as [string, string]);
    for (let k = 0; k < REPEAT; k++) {
      for (const [from, to] of [
        ['live', 'timeline'],
        ['timeline', 'summary'],
        ['summary', 'live'],
      ] as Array<[View, View]>) {
        const m = await page.evaluate(clickToPaint, [`.run-tabs a[href="${hrefOf(r.id, to)}"]`, PAINTED[to]] as [string, string]);
        (switches[r.id]![`${from}→${to}`] ??= []).push(Math.round(m.paintMs));
      }
    }
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('HeapProfiler.collectGarbage');
    const heap = (await cdp.send('Runtime.getHeapUsage')) as { usedSize: number };
    // Every renderer when the page's own cannot be told apart (a reused process): the largest bounds it.
    const measured = own.length === 1 ? own : await rendererPids();
    memory[r.id] = { rendererRssMb: measured.map(rssMb), ownProcess: own.length === 1, jsHeapMb: Math.round(heap.usedSize / 2 ** 20) };
    await page.close();
  }

  const result = {
    bench: 'opening a run: click to first paint, index vs log',
    date: new Date().toISOString(),
    commit,
    machine: machine(),
    load_avg_at_start: loadAtStart,
    generated_log_lines: lines,
    generated_log_write_s: writeS,
    index_build_once_s: build,
    sizes: Object.fromEntries(
      runs.map((r) => {
        const log = statSync(r.log).size;
        const index = statSync(r.index).size;
        return [r.id, { log_bytes: log, index_bytes: index, index_over_log: Number((index / log).toFixed(4)), target: '≤ 0.3333', pass: index <= log / 3 }];
      }),
    ),
    click_to_first_paint_ms: Object.fromEntries(
      runs.map((r) => [
        r.id,
        Object.fromEntries(
          (['index', 'log'] as const).map((mode) => [
            mode,
            Object.fromEntries(VIEWS.map((v) => [v, { median: median(open[r.id]![mode]![v]), all: open[r.id]![mode]![v], ...(mode === 'index' ? { target: `≤ ${r.target}`, pass: median(open[r.id]![mode]![v]) <= r.target } : {}) }])),
          ]),
        ),
      ]),
    ),
    view_switch_ms: Object.fromEntries(
      runs.map((r) => [r.id, Object.fromEntries(Object.entries(switches[r.id]!).map(([k, v]) => [k, { median: median(v), all: v, target: '≤ 100', pass: median(v) <= 100 }]))]),
    ),
    memory_with_run_open: Object.fromEntries(runs.map((r) => [r.id, { ...memory[r.id]!, target: r.id === GENERATED ? '≤ 500 MB' : undefined, pass: r.id === GENERATED ? Math.max(...memory[r.id]!.rendererRssMb) <= 500 : undefined }])),
  };
  console.log(JSON.stringify(result, null, 2));
} finally {
  await h.close();
}
