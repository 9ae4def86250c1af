/**
 * Pool tiers and where TTFT went, in real Chromium through `kvscope serve`, on recorded CPU runs:
 * a protocol 2 run with a disk tier (test/fixtures/runs/cpu-tiny-three-tiers), a sweep of three
 * pool setups (test/fixtures/sweeps/cpu-tiny-tiers) and the bundled v1 samples. Each check is
 * held against the log itself: the pool grids' counts against the ledger at several times, the
 * disk lanes' transfers against its xfer lines, a selected request's breakdown against its
 * first_token's ttft_parts, the Summary's stacked bars against the means of those parts, and
 * Compare's verdicts against the runs' mean TTFTs. Screenshots go to test-artifacts/.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { decodeAll } from '../../src/shared/events-reader';
import { formatNs } from '../../src/shared/format';
import { BlockLedger } from '../../src/shared/ledger';
import type { KvEvent, ReqEvent } from '../../src/shared/protocol';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { compileReplay } from '../../src/shared/replay';
import { buildTimelineModel } from '../../src/shared/timeline-model';
import { timelineLayout, xOf } from '../../src/renderer/viz/timeline-render';
import { ARTIFACTS, browserSkipReason, serveWindow, type ServedWindow } from '../helpers/browser';
import type { PageGlobal } from '../helpers/page-dom';

const FIXTURES = join(process.cwd(), 'test', 'fixtures');
const THREE_TIERS = join(FIXTURES, 'runs', 'cpu-tiny-three-tiers', 'events.jsonl');
const SWEEP = join(FIXTURES, 'sweeps', 'cpu-tiny-tiers');
const V1_SAMPLE = 'sample:h100-llama-3.1-8b-users4-host55e9';
const read = (path: string): KvEvent[] => decodeAll(path.endsWith('.gz') ? gunzipSync(readFileSync(path)) : readFileSync(path)).events;

/** Page-side: moves the replay scrubber as a user would (an input event). */
function scrubTo(value: string): void {
  const g = globalThis as unknown as PageGlobal;
  const s = g.document.querySelector('[data-action=scrub]')!;
  s.value = value;
  s.dispatchEvent(new g.Event('input', { bubbles: true }));
}

/** Page-side: a data-* attribute of an element. */
function dataOf([sel, key]: [string, string]): string | undefined {
  return (globalThis as unknown as PageGlobal).document.querySelector(sel)?.dataset[key];
}

const skip = browserSkipReason();

describe.skipIf(skip !== null)(`pool tiers and TTFT breakdowns in real Chromium${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let served: ServedWindow;
  let page: Page;
  let consoleErrors: string[];
  const tiers = read(THREE_TIERS);
  const sweep = readdirSync(SWEEP)
    .filter((d) => d.includes('-users-'))
    .map((d) => ({ id: `sweep-${d}`, dir: d, events: read(join(SWEEP, d, 'events.jsonl.gz')) }));

  beforeAll(async () => {
    const runsDir = mkdtempSync(join(tmpdir(), 'kvscope-tiers-e2e-'));
    // A run folder holds its log as events.jsonl (the runs folder's layout).
    const put = (id: string, from: string, name: string) => {
      mkdirSync(join(runsDir, id), { recursive: true });
      writeFileSync(join(runsDir, id, 'events.jsonl'), from.endsWith('.gz') ? gunzipSync(readFileSync(from)) : readFileSync(from));
      writeFileSync(join(runsDir, id, 'meta.json'), JSON.stringify({ id, name, host: 'cpu-box', status: 'ok', createdAt: '2026-12-07T02:00:00Z' }));
    };
    put('three-tiers', THREE_TIERS, 'CPU tiny, GPU + host + disk pools');
    for (const s of sweep) put(s.id, join(SWEEP, s.dir, 'events.jsonl.gz'), `sweep ${s.dir}`);
    served = await serveWindow({ runsDir, samplesDir: join(process.cwd(), 'resources', 'samples') });
    page = await served.open(null);
    consoleErrors = served.errors;
  }, 120_000);

  afterAll(() => served?.close());

  const go = (hash: string) => page.goto(`${served.server.url}${hash}`);

  it('Pools: a grid per tier (GPU, host, disk), each holding what the ledger holds at the replay time', async () => {
    await go('#/runs/three-tiers/live');
    await page.waitForSelector('[data-testid=pools][data-pools]');
    expect(await page.locator('.pool-titles [data-title]').evaluateAll((els) => els.map((e) => e.getAttribute('data-title')))).toEqual(['gpu', 'host', 'disk']);
    const start = tiers.find((e) => e.type === 'run.start')!.t;
    // Times where the disk pool holds blocks, and some where it holds none yet.
    const times = [...new Set(tiers.filter((e) => e.type === 'blocks').map((e) => e.t))].sort((a, b) => a - b);
    const seenDisk = new Set<number>();
    for (const t of [times[Math.floor(times.length / 4)]!, times[Math.floor(times.length / 2)]!, times[Math.floor((3 * times.length) / 4)]!, times[times.length - 1]!]) {
      await page.evaluate(scrubTo, String(t - start));
      await page.waitForFunction(([want]) => Number((globalThis as unknown as PageGlobal).document.querySelector('[data-testid=pools]')?.dataset.t) === want, [t]);
      const l = new BlockLedger();
      for (const e of tiers) if (e.type !== 'blocks' || e.t <= t) l.apply(e);
      const want = ['gpu', 'host', 'disk'].map((p) => `${p}:${l.holding(p)?.size ?? 0}`).join(' ');
      expect(await page.evaluate(dataOf, ['[data-testid=pools]', 'pools'] as [string, string])).toBe(want);
      seenDisk.add(l.holding('disk')?.size ?? 0);
      expect(await page.textContent('[data-stat=disk]')).toContain(`${(l.holding('disk')?.size ?? 0).toLocaleString()} / 244 blocks`);
    }
    expect([...seenDisk].some((n) => n > 0)).toBe(true);
    // Disk reads and writes moved by then, beside the copies.
    expect(await page.textContent('[data-stat=f2h]')).toMatch(/MB|kB/);
    await page.screenshot({ path: join(ARTIFACTS, 'tiers-live-three-tiers.png') });
    expect(consoleErrors).toEqual([]);
  });

  it('Timeline: disk reads and writes as lanes with bytes and bandwidth, occupancy per tier, and a selected request that promoted from disk broken down as its ttft_parts say', async () => {
    await go('#/runs/three-tiers/timeline');
    await page.waitForSelector('[data-testid=timeline][data-t0]');
    const replay = compileReplay(tiers);
    const tm = buildTimelineModel(tiers, replay);
    expect(tm.lanes.map((l) => l.dir)).toEqual(['h2d', 'd2h', 'f2h', 'h2f']);
    const reads = tiers.filter((e) => e.type === 'xfer' && e.dir === 'f2h');
    expect(tm.lanes[2]!.length).toBe(reads.length);
    const layout = timelineLayout(tm, 130);
    expect(layout.rows.filter((r) => r.kind === 'counter').map((r) => r.label)).toEqual(['GPU pool', 'Host pool', 'Disk pool']);
    const box = (await page.locator('[data-testid=timeline] canvas').boundingBox())!;
    const view = { t0: Number(await page.evaluate(dataOf, ['[data-testid=timeline]', 't0'] as [string, string])), t1: Number(await page.evaluate(dataOf, ['[data-testid=timeline]', 't1'] as [string, string])), width: box.width, height: layout.height };
    // Hover the largest disk read: its tooltip gives its bytes and bandwidth.
    const lane = tm.lanes[2]!;
    let big = 0;
    for (let i = 1; i < lane.length; i++) if (lane.bytes[i]! > lane.bytes[big]!) big = i;
    const row = layout.rows.find((r) => r.kind === 'lane' && r.index === 2)!;
    await page.mouse.move(box.x + xOf(view, 130, (lane.start[big]! + lane.end[big]!) / 2), box.y + row.y + row.h / 2);
    await page.waitForSelector('[data-testid=timeline] .tooltip:not([hidden]):has-text("disk read (file → host)")');
    const tip = (await page.textContent('[data-testid=timeline] .tooltip'))!;
    expect(tip).toMatch(/^disk read \(file → host\) · [\d.]+ (kB|MB) in [\d.]+ (µs|ms) · [\d.]+ (MB|GB)\/s/);

    // The request whose first token waited longest on disk promotion.
    const firsts = tiers.filter((e): e is ReqEvent => e.type === 'req' && e.phase === 'first_token' && (e.ttft_parts?.disk_promote?.blocks ?? 0) > 0);
    expect(firsts.length).toBeGreaterThan(0);
    const target = firsts.reduce((a, b) => (b.ttft_parts!.disk_promote!.ns > a.ttft_parts!.disk_promote!.ns ? b : a));
    const bar = tm.requests.find((r) => r.user === target.user && r.round === target.round)!;
    const userRow = layout.rows.find((r) => r.kind === 'user' && r.index === target.user)!;
    await page.mouse.click(box.x + xOf(view, 130, (bar.first_token! + bar.done!) / 2), box.y + userRow.y + userRow.h / 2);
    await page.waitForSelector(`.request-details [data-testid=ttft-breakdown][data-source=recorded]`);
    expect(await page.evaluate(dataOf, ['[data-testid=timeline]', 'selected'] as [string, string])).toBe(`${target.user}/${target.round}`);
    const p = target.ttft_parts!;
    const cell = async (part: string, col: number) => (await page.locator(`.request-details tr[data-part=${part}] td`).nth(col).textContent())!.trim();
    expect(await cell('queued', 0)).toBe(formatNs(p.queued_ns));
    expect(await cell('disk_promote', 0)).toBe(formatNs(p.disk_promote!.ns));
    expect(await cell('disk_promote', 1)).toBe(p.disk_promote!.blocks.toLocaleString('en-US'));
    expect(await cell('host_reload', 0)).toBe(formatNs(p.host_reload!.ns));
    expect(await cell('recompute', 0)).toBe(formatNs(p.recompute!.ns));
    expect(await cell('other', 0)).toBe(formatNs(p.other_ns));
    // Promoted from disk in the same request: the reload's time is the tail after the last read, no rate.
    expect(await cell('host_reload', 3)).toBe('–');
    // ...and the panel says so in words, with the blocks of both rows.
    expect(await page.textContent('.request-details [data-testid=ttft-pipelined-note]')).toContain(
      `The ${p.host_reload!.blocks.toLocaleString('en-US')} blocks reloaded from host include the ${p.disk_promote!.blocks.toLocaleString('en-US')} promoted from disk`,
    );
    expect(await page.textContent('.request-details .ttft-parts thead th')).toBe(`TTFT ${formatNs(target.t - tiers.find((e) => e.type === 'req' && e.user === target.user && e.round === target.round && e.phase === 'queued')!.t)}`);
    await page.screenshot({ path: join(ARTIFACTS, 'tiers-timeline-three-tiers.png'), fullPage: true });
    expect(consoleErrors).toEqual([]);
  });

  it('Summary: each round’s bars stack the mean of its requests’ ttft_parts; the disk’s I/O beside its plain sequential rate', async () => {
    await go('#/runs/three-tiers/summary');
    await page.waitForSelector('[data-testid=ttft-breakdown-chart][data-source=recorded]');
    const a = analyzeEvents(tiers);
    for (const row of a.roundRows) {
      const reqs = a.requests.filter((r) => r.round === row.round && r.ttft_parts);
      const mean = (f: (r: (typeof reqs)[number]) => number) => reqs.reduce((s, r) => s + f(r), 0) / reqs.length;
      const want = { queued: mean((r) => r.ttft_parts!.queued_ns), disk_promote: mean((r) => r.ttft_parts!.disk_promote?.ns ?? 0), host_reload: mean((r) => r.ttft_parts!.host_reload?.ns ?? 0), recompute: mean((r) => r.ttft_parts!.recompute?.ns ?? 0), other: mean((r) => r.ttft_parts!.other_ns) };
      for (const [part, ns] of Object.entries(want)) {
        const got = Number(await page.getAttribute(`[data-testid=ttft-breakdown-chart] g[data-round="${row.round}"] rect[data-part=${part}]`, 'data-ns'));
        expect(got, `round ${row.round} ${part}`).toBeCloseTo(ns, 3);
      }
      // The parts add up to the round's mean queued TTFT (ttft_parts_sum: within 1 µs each).
      expect(Math.abs(Object.values(want).reduce((s, x) => s + x, 0) - row.ttft.mean!)).toBeLessThanOrEqual(1000);
    }
    const disk = tiers.find((e): e is Extract<KvEvent, { type: 'run.end' }> => e.type === 'run.end')!.summary.disk!;
    expect(await page.textContent('[data-testid=disk-io-table] tr[data-dir=f2h]')).toContain(`${(disk.plain_read_bytes_per_s! / 1e9).toFixed(2)} GB/s`);
    expect(await page.locator('[data-testid=rounds-table] thead th[title^="blocks: moved"]').count()).toBe(1);
    await page.screenshot({ path: join(ARTIFACTS, 'tiers-summary-three-tiers.png'), fullPage: true });
    expect(consoleErrors).toEqual([]);
  });

  it('a v1 run without ttft_parts: queued and the unsplit rest, the tiers’ times "not recorded"', async () => {
    await go(`#/runs/${encodeURIComponent(V1_SAMPLE)}/summary`);
    await page.waitForSelector('[data-testid=ttft-breakdown-chart][data-source=derived]');
    expect(await page.locator('[data-testid=ttft-breakdown-chart] rect[data-part=recompute]').count()).toBe(0);
    expect(await page.locator('[data-testid=rounds-table] thead th[title^="blocks: moved"]').count()).toBe(0);
    await page.screenshot({ path: join(ARTIFACTS, 'tiers-summary-v1.png'), fullPage: true });
    await go(`#/runs/${encodeURIComponent(V1_SAMPLE)}/timeline`);
    await page.waitForSelector('[data-testid=timeline][data-t0]');
    await page.focus('[data-testid=timeline]');
    await page.keyboard.press('ArrowRight');
    await page.waitForSelector('.request-details [data-testid=ttft-breakdown][data-source=derived]');
    expect((await page.locator('.request-details tr[data-part=host_reload] td').first().textContent())!.trim()).toBe('not recorded');
    expect(await page.locator('.request-details tr[data-part=unsplit]').count()).toBe(1);
    await page.screenshot({ path: join(ARTIFACTS, 'tiers-timeline-v1.png'), fullPage: true });
    expect(consoleErrors).toEqual([]);
  });

  it('Compare: verdicts on the sweep (host pool against recompute, disk tier against the host pool alone), each beside the mean TTFTs it rests on', async () => {
    const ids = sweep.map((s) => s.id);
    await go(`#/compare?runs=${ids.join(',')}`);
    await page.waitForSelector('[data-testid=verdict]');
    const by = (setup: string, users: number) => analyzeEvents(sweep.find((s) => s.dir === `${setup}-users-${users}`)!.events);
    for (const [what, baseline, treatment, tierMove] of [
      ['the host pool', 'recompute', 'host', 'host>gpu'],
      ['the disk tier', 'host', 'host-disk', 'disk>host'],
    ] as const) {
      const panel = page.locator(`[data-testid=verdict][data-what="${what}"]`);
      await panel.waitFor();
      // The table: each user count's two means, as the runs measured them.
      // The fewest users from which every count up to the most is helped.
      let from: number | null = null;
      let chain = true;
      for (const users of [4, 3, 2]) {
        const b = by(baseline, users);
        const t = by(treatment, users);
        const cells = await panel.locator(`tr[data-users="${users}"] td`).allTextContents();
        expect(cells[1]).toContain(formatNs(b.ttft.mean));
        expect(cells[2]).toContain(formatNs(t.ttft.mean));
        const helps = b.ttft.mean! / t.ttft.mean! >= 1.1 && (t.moves[tierMove] ?? 0) > 0;
        chain &&= helps;
        if (chain) from = users;
        expect(cells[4]).toBe((t.moves[tierMove] ?? 0) > 0 ? 'yes' : 'no block moved through it');
      }
      expect(await panel.getAttribute('data-from')).toBe(from === null ? '' : String(from));
      const text = (await panel.locator('p strong').textContent())!;
      expect(text).toMatch(from === null ? new RegExp(`^For this workload on this card, ${what} does not cut mean TTFT`) : new RegExp(`^For this workload on this card, ${what} cuts mean TTFT by [\\d.–]+× at users ≥ ${from}`));
    }
    await page.screenshot({ path: join(ARTIFACTS, 'tiers-compare-sweep.png'), fullPage: true });
    expect(consoleErrors).toEqual([]);
  });

  it('Compare: the bundled A/B pair (host pool against recompute at 4 users) gets its verdict', async () => {
    const pair = ['sample:h100-llama-3.1-8b-users4-host55e9', 'sample:h100-llama-3.1-8b-users4-recompute'];
    await go(`#/compare?runs=${pair.map(encodeURIComponent).join(',')}`);
    const panel = page.locator('[data-testid=verdict][data-what="the host pool"]');
    await panel.waitFor();
    const host = analyzeEvents(read(join(process.cwd(), 'resources', 'samples', 'h100-llama-3.1-8b-users4-host55e9.jsonl.gz')));
    const recompute = analyzeEvents(read(join(process.cwd(), 'resources', 'samples', 'h100-llama-3.1-8b-users4-recompute.jsonl.gz')));
    const ratio = recompute.ttft.mean! / host.ttft.mean!;
    expect(await panel.locator('p strong').textContent()).toBe(`For this workload on this card, the host pool cuts mean TTFT by ${ratio.toFixed(1)}× at 4 users (the one user count measured with both).`);
    expect(await panel.locator('tr[data-users="4"] td').nth(3).textContent()).toBe(`${ratio.toFixed(2)}×`);
    await page.screenshot({ path: join(ARTIFACTS, 'tiers-compare-pair.png'), fullPage: true });
    expect(consoleErrors).toEqual([]);
  });
});
