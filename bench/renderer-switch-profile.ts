/**
 * Where a switch between a run's views spends its time: opens the generated 16-user run (as
 * bench/renderer-open.bench.ts does) in Pools, then switches Pools → Timeline → Summary → Pools
 * `--repeat` times, recording each switch with Chromium's CPU profiler (100 µs samples) and a
 * performance trace (devtools.timeline, Blink, cc), through the page's CDP session. Writes
 * `<view>-<k>.cpuprofile` and `<view>-<k>.trace.json` under --out (open them in Chrome DevTools'
 * Performance panel or ui.perfetto.dev) and prints each switch's click → paint time (inflated by
 * the profiling itself: for attribution, not for the targets, which renderer-open.bench.ts measures).
 *
 *   npm run build && node scripts/run-ts.mjs bench/renderer-switch-profile.ts [--lines 1000000] [--repeat 2] [--out test-artifacts/switch-profile]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generatedSweepPointRun } from './generated-run';
import { openHarness, writeRun } from './renderer-common';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : fallback;
};
const LINES = Number(arg('--lines', '1000000'));
const REPEAT = Number(arg('--repeat', '2'));
const OUT = arg('--out', join('test-artifacts', 'switch-profile'));
const ID = 'generated-run';
const PAINTED = { live: '[data-testid=pools][data-gpu]', timeline: '[data-testid=timeline][data-t0]', summary: '[data-testid=bandwidth-table]' } as const;
type View = keyof typeof PAINTED;

/** Page side: clicks the tab, resolves at the frame after the one that first holds the view's content (ms from the click). */
function clickToPaint([link, painted]: [string, string]): Promise<number> {
  const g = globalThis as unknown as { performance: { now(): number }; requestAnimationFrame(cb: () => void): void; document: { querySelector(s: string): { click(): void } | null } };
  return new Promise((resolve) => {
    const t0 = g.performance.now();
    g.document.querySelector(link)!.click();
    const check = () => (g.document.querySelector(painted) ? g.requestAnimationFrame(() => resolve(g.performance.now() - t0)) : g.requestAnimationFrame(check));
    g.requestAnimationFrame(check);
  });
}

mkdirSync(OUT, { recursive: true });
const h = await openHarness();
try {
  await writeRun(h.runsDir, ID, generatedSweepPointRun(LINES));
  await h.core.store.index.build(await h.core.store.indexTarget(ID));
  const page = await h.open(`#/runs/${ID}/live`);
  await page.waitForSelector(PAINTED.live, { timeout: 300_000 });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 100 });
  const times: Record<string, number> = {};
  for (let k = 0; k < REPEAT; k++) {
    for (const view of ['timeline', 'summary', 'live'] as View[]) {
      await cdp.send('Profiler.start');
      await h.browser.startTracing(page, { categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'disabled-by-default-devtools.timeline.frame', 'blink', 'cc', 'v8.execute', 'toplevel'] });
      const ms = await page.evaluate(clickToPaint, [`.run-tabs a[href="#/runs/${ID}/${view}"]`, PAINTED[view]] as [string, string]);
      writeFileSync(join(OUT, `${view}-${k}.trace.json`), await h.browser.stopTracing());
      writeFileSync(join(OUT, `${view}-${k}.cpuprofile`), JSON.stringify((await cdp.send('Profiler.stop')).profile));
      times[`→${view} #${k + 1}`] = Math.round(ms);
    }
  }
  console.log(JSON.stringify({ bench: 'view switch profile', lines: LINES, out: OUT, click_to_paint_ms_profiled: times }, null, 2));
} finally {
  await h.close();
}
