/**
 * The timeline renderer: requests and copies land where the time scale puts them, dense lanes
 * fold into at most one rect per pixel column, zooming changes what is drawn, a selected request's
 * copies are drawn in the highlight colour, and hit testing finds what was drawn.
 */
import { describe, expect, it } from 'vitest';
import { compileReplay } from '../../src/shared/replay';
import { buildTimelineModel, linkRequest } from '../../src/shared/timeline-model';
import { formatCounterValue, hitTestTimeline, renderTimelineInto, stepRequest, timelineLayout, xOf, type TimelineView } from '../../src/renderer/viz/timeline-render';
import { formatCount } from '../../src/shared/format';
import { DARK_THEME, LIGHT_THEME } from '../../src/renderer/viz/ctx2d';
import type { KvEvent, XferEvent } from '../../src/shared/protocol';
import { syntheticRun } from '../helpers/synthetic-run';
import { realRuns } from '../helpers/real-runs';
import { recordingCtx } from '../helpers/recording-ctx';

/** fillRects of `color` inside the lane row of `dir` (onboard ticks in request rows share the colour). */
function laneRects(ctx: ReturnType<typeof recordingCtx>, layout: ReturnType<typeof timelineLayout>, tm: ReturnType<typeof buildTimelineModel>, dir: string, color: string) {
  const row = layout.rows.find((r) => r.kind === 'lane' && tm.lanes[r.index]!.dir === dir)!;
  return ctx.rects(color).filter(([, y]) => y >= row.y && y < row.y + row.h);
}

function model(events: KvEvent[]) {
  const r = compileReplay(events);
  return { replay: r, tm: buildTimelineModel(events, r) };
}

describe('timeline model and renderTimelineInto', () => {
  it('draws every copy of a lane as a bar at its time when zoomed in, and bins when dense', () => {
    const events = syntheticRun({ users: 2, rounds: 3 });
    const { tm } = model(events);
    const layout = timelineLayout(tm);
    const view: TimelineView = { t0: tm.t0, t1: tm.t1, width: 2000, height: layout.height };
    const ctx = recordingCtx();
    const stats = renderTimelineInto(ctx, tm, layout, view, DARK_THEME);
    const h2d = tm.lanes.find((l) => l.dir === 'h2d')!;
    expect(stats.bars).toBe(tm.lanes.reduce((a, l) => a + l.length, 0));
    const bars = laneRects(ctx, layout, tm, 'h2d', DARK_THEME.h2d);
    expect(bars.length).toBe(h2d.length);
    expect(bars[0]![0]).toBeCloseTo(xOf(view, layout.labelWidth, h2d.start[0]!), 5);

    // A lane far denser than the canvas is wide: at most one rect per pixel column.
    const dense: KvEvent[] = [...events];
    let seq = events.length;
    for (let i = 0; i < 50_000; i++) dense.push({ seq: seq++, t: tm.t1, type: 'xfer', dir: 'h2d', bytes: 4096, start: tm.t0 + i * 10, end: tm.t0 + i * 10 + 5, source: 'cupti' } as XferEvent);
    const d = model(dense).tm;
    const dl = timelineLayout(d);
    const ctx2 = recordingCtx();
    const s2 = renderTimelineInto(ctx2, d, dl, { t0: d.t0, t1: d.t1, width: 800, height: dl.height }, DARK_THEME);
    expect(s2.binned).toBeGreaterThanOrEqual(50_000);
    expect(laneRects(ctx2, dl, d, 'h2d', DARK_THEME.h2d).length).toBeLessThanOrEqual(800 - dl.labelWidth + 1);
  });

  it('zooming into a window draws only what overlaps it', () => {
    const { tm } = model(syntheticRun({ users: 2, rounds: 4 }));
    const layout = timelineLayout(tm);
    const h2d = tm.lanes.find((l) => l.dir === 'h2d')!;
    const a = h2d.start[1]!;
    const b = h2d.end[1]!;
    const ctx = recordingCtx();
    renderTimelineInto(ctx, tm, layout, { t0: a, t1: b, width: 1000, height: layout.height }, DARK_THEME);
    expect(laneRects(ctx, layout, tm, 'h2d', DARK_THEME.h2d).length).toBe(1);
  });

  it('links a request to its moves and the copies that carried them, and draws them highlighted', () => {
    const events = syntheticRun({ users: 2, rounds: 3 });
    const { tm, replay } = model(events);
    const onboard = events.find((e): e is Extract<KvEvent, { type: 'blocks' }> => e.type === 'blocks' && e.op === 'onboard')!;
    const links = linkRequest(tm, replay, onboard.user!, onboard.round!);
    expect(links.moveTimes.onboard).toContain(onboard.t);
    const h2d = tm.lanes.find((l) => l.dir === 'h2d')!;
    expect(links.xfers.h2d?.length).toBeGreaterThan(0);
    // The copy linked is the one the synthetic engine issued for this onboard line (same time).
    const carried = events.find((e): e is XferEvent => e.type === 'xfer' && e.dir === 'h2d' && e.seq === onboard.seq + 1)!;
    expect(links.xfers.h2d!.map((i) => h2d.start[i])).toContain(carried.start);
    const layout = timelineLayout(tm);
    const ctx = recordingCtx();
    renderTimelineInto(ctx, tm, layout, { t0: tm.t0, t1: tm.t1, width: 1200, height: layout.height }, DARK_THEME, { links });
    expect(ctx.rects(DARK_THEME.highlight).length).toBeGreaterThanOrEqual(links.xfers.h2d!.length);
    const none = recordingCtx();
    renderTimelineInto(none, tm, layout, { t0: tm.t0, t1: tm.t1, width: 1200, height: layout.height }, DARK_THEME);
    expect(none.rects(DARK_THEME.highlight).length).toBe(0);
  });

  it('marks the onboard lines of each request inside its bar', () => {
    const events = syntheticRun({ users: 2, rounds: 3 });
    const { tm } = model(events);
    const onboardLines = events.filter((e): e is Extract<KvEvent, { type: 'blocks' }> => e.type === 'blocks' && e.op === 'onboard');
    expect(onboardLines.length).toBeGreaterThan(0);
    for (const l of onboardLines) expect(tm.requests.find((r) => r.user === l.user && r.round === l.round)!.onboards).toContain(l.t);
    const layout = timelineLayout(tm);
    const ctx = recordingCtx();
    renderTimelineInto(ctx, tm, layout, { t0: tm.t0, t1: tm.t1, width: 4000, height: layout.height }, DARK_THEME);
    const userRows = layout.rows.filter((r) => r.kind === 'user');
    const ticks = ctx.rects(DARK_THEME.h2d).filter(([, y]) => userRows.some((r) => y >= r.y && y < r.y + r.h));
    expect(ticks.length).toBe(onboardLines.length);
  });

  it('names user rows in the text colour beside a swatch of the user colour (light theme legible)', () => {
    const events = syntheticRun({ users: 6, rounds: 2 });
    const { tm } = model(events);
    const layout = timelineLayout(tm);
    const ctx = recordingCtx();
    renderTimelineInto(ctx, tm, layout, { t0: tm.t0, t1: tm.t1, width: 900, height: layout.height }, LIGHT_THEME);
    const userRows = layout.rows.filter((r) => r.kind === 'user');
    expect(userRows.length).toBe(6);
    for (const row of userRows) {
      const name = ctx.calls.find((c) => c.fn === 'fillText' && c.args[0] === row.label && Number(c.args[1]) < layout.labelWidth)!;
      // #edc949 on #f7f8fa is 1.6:1; the text colour is what the names are read in.
      expect(name.fillStyle, row.label).toBe(LIGHT_THEME.text);
      const colour = LIGHT_THEME.users[row.index % LIGHT_THEME.users.length]!;
      const swatch = ctx.rects(colour).filter(([x, y]) => x < Number(name.args[1]) && y >= row.y && y < row.y + row.h);
      expect(swatch.length, row.label).toBe(1);
    }
  });

  it('track names in the label column are at least 12 px (they read as ~10 px text at 11 px)', () => {
    const { tm } = model(syntheticRun({ users: 3, rounds: 2 }));
    const layout = timelineLayout(tm);
    const ctx = recordingCtx();
    renderTimelineInto(ctx, tm, layout, { t0: tm.t0, t1: tm.t1, width: 1200, height: layout.height }, DARK_THEME);
    for (const row of layout.rows.filter((r) => r.kind !== 'axis')) {
      const name = ctx.calls.find((c) => c.fn === 'fillText' && c.args[0] === row.label && Number(c.args[1]) < layout.labelWidth)!;
      expect(Number(/(\d+)px/.exec(name.font)?.[1]), row.label).toBeGreaterThanOrEqual(12);
      // The name fits its row.
      expect(row.h, row.label).toBeGreaterThanOrEqual(Number(/(\d+)px/.exec(name.font)?.[1]) + 6);
    }
  });

  it('the axis labels stay inside the canvas: the last one ends at its tick instead of being cut', () => {
    const { tm } = model(syntheticRun({ users: 2, rounds: 3 }));
    const layout = timelineLayout(tm);
    const width = 1000;
    const plot = width - layout.labelWidth;
    // A window whose last tick falls 4 px short of the right edge.
    for (const step of [1e6, 2e6, 5e6, 1e9]) {
      const span = (10 * step * plot) / (plot - 4);
      const view: TimelineView = { t0: tm.t0, t1: tm.t0 + span, width, height: layout.height };
      const ctx = recordingCtx();
      renderTimelineInto(ctx, tm, layout, view, DARK_THEME);
      const axis = ctx.calls.filter((c) => c.fn === 'fillText' && Number(c.args[2]) === 11);
      expect(axis.length).toBeGreaterThan(3);
      for (const c of axis) {
        const x = Number(c.args[1]);
        expect(x, String(c.args[0])).toBeGreaterThanOrEqual(layout.labelWidth);
        expect(x + ctx.measureText(String(c.args[0])).width, String(c.args[0])).toBeLessThanOrEqual(width);
      }
      // The tick at the edge keeps its label.
      expect(axis.some((c) => Number(c.args[1]) + ctx.measureText(String(c.args[0])).width > width - 40)).toBe(true);
    }
  });

  it('pool tracks say what their scale is: the capacity ("of") or, for a pool far larger than used, the peak', () => {
    const events = realRuns({ maxBytes: 20e6 }).find((r) => r.name === 'sample:h100-llama-3.1-8b-users4-host55e9')?.events ?? syntheticRun({ users: 2, rounds: 3 });
    const { tm, replay } = model(events);
    const layout = timelineLayout(tm);
    const ctx = recordingCtx();
    renderTimelineInto(ctx, tm, layout, { t0: tm.t0, t1: tm.t1, width: 1200, height: layout.height }, DARK_THEME);
    const texts = ctx.calls.filter((c) => c.fn === 'fillText' && Number(c.args[1]) < layout.labelWidth).map((c) => String(c.args[0]));
    for (const key of ['gpu_pool', 'host_pool'] as const) {
      const c = tm.counters.find((x) => x.key === key)!;
      if (c.length === 0) continue;
      const cap = replay.pools[key === 'gpu_pool' ? 'gpu' : 'host']?.capacity_blocks ?? 0;
      const peak = c.v.slice(0, c.length).reduce((m, v) => Math.max(m, v), 0);
      const want = c.scale === 'capacity' ? `of ${formatCount(cap)} blocks` : `peak ${formatCount(peak)} block${peak === 1 ? '' : 's'}`;
      expect(c.scale === 'capacity' ? c.max : peak).toBe(c.max);
      expect(texts, key).toContain(want);
    }
    expect(formatCounterValue('blocks', 1)).toBe('1 block');
  });

  it('hit-tests requests and copies where they were drawn', () => {
    const { tm } = model(syntheticRun({ users: 2, rounds: 2 }));
    const layout = timelineLayout(tm);
    const view: TimelineView = { t0: tm.t0, t1: tm.t1, width: 1200, height: layout.height };
    const r = tm.requests.find((q) => q.round === 1)!;
    const row = layout.rows.find((x) => x.kind === 'user' && x.index === r.user)!;
    const hit = hitTestTimeline(tm, layout, view, xOf(view, layout.labelWidth, (r.scheduled! + r.done!) / 2), row.y + 5);
    expect(hit).toMatchObject({ kind: 'request', user: r.user, round: r.round });
    const laneRow = layout.rows.find((x) => x.kind === 'lane' && tm.lanes[x.index]!.dir === 'd2h')!;
    const d2h = tm.lanes[laneRow.index]!;
    const xh = hitTestTimeline(tm, layout, view, xOf(view, layout.labelWidth, (d2h.start[0]! + d2h.end[0]!) / 2), laneRow.y + 5);
    expect(xh).toMatchObject({ kind: 'xfer', lane: laneRow.index });
  });

  it('hit-tests a request known only from its first token where its bar is drawn', () => {
    // A log that begins mid-request (a tail, or a request whose queued/scheduled lines were
    // lost) has a bar from the first token on: it is drawn, so it must be clickable there too.
    const { tm } = model(syntheticRun({ users: 2, rounds: 2 }));
    const k = tm.requests.findIndex((q) => q.round === 1);
    const r = { ...tm.requests[k]!, queued: null, scheduled: null };
    const cut = { ...tm, requests: tm.requests.map((q, i) => (i === k ? r : q)) };
    const layout = timelineLayout(cut);
    const view: TimelineView = { t0: cut.t0, t1: cut.t1, width: 1200, height: layout.height };
    const row = layout.rows.find((x) => x.kind === 'user' && x.index === r.user)!;
    const hit = hitTestTimeline(cut, layout, view, xOf(view, layout.labelWidth, (r.first_token! + r.done!) / 2), row.y + 5);
    expect(hit).toMatchObject({ kind: 'request', user: r.user, round: r.round, index: k });
  });

  for (const run of realRuns({ maxBytes: 5e6 })) {
    it(`request labels stay inside their bars at any width (${run.name})`, () => {
      const { tm } = model(run.events);
      const layout = timelineLayout(tm);
      const lw = layout.labelWidth;
      for (const width of [700, 1400, 4000]) {
        const ctx = recordingCtx();
        const view: TimelineView = { t0: tm.t0, t1: tm.t1, width, height: layout.height };
        renderTimelineInto(ctx, tm, layout, view, DARK_THEME);
        const userRows = layout.rows.filter((r) => r.kind === 'user');
        const inUserRow = (y: number) => userRows.some((r) => y >= r.y && y <= r.y + r.h);
        const labels = ctx.calls.filter((c) => c.fn === 'fillText' && /^R\d+/.test(String(c.args[0])) && inUserRow(Number(c.args[2])));
        expect(labels.length, `width ${width}`).toBeGreaterThan(0);
        for (const c of labels) {
          const [text, x, y] = c.args as unknown as [string, number, number];
          const row = userRows.find((r) => y >= r.y && y <= r.y + r.h)!;
          const round = Number(/^R(\d+)/.exec(text)![1]);
          const req = tm.requests.find((q) => q.user === row.index && q.round === round)!;
          const x1 = Math.min(xOf(view, lw, req.done ?? tm.t1), width);
          // A label that ran past its bar overlapped the next round's label (seen on the 8B sample).
          expect(x + ctx.measureText(text).width, `${text} at width ${width}`).toBeLessThanOrEqual(x1 - 3 + 1e-9);
          // Nor over the TTFT mark (a 2 px bar in the text colour at first token), which struck the label through.
          if (req.first_token !== null) {
            const mark = Math.round(xOf(view, lw, req.first_token));
            const crosses = x < mark + 1 && x + ctx.measureText(text).width > mark - 1;
            expect(crosses, `${text} at ${x.toFixed(1)} over the TTFT mark at ${mark}, width ${width}`).toBe(false);
          }
        }
      }
    });

    it(`pool tracks' scale labels read as block counts with separators (${run.name})`, () => {
      const { tm } = model(run.events);
      const layout = timelineLayout(tm);
      const ctx = recordingCtx();
      renderTimelineInto(ctx, tm, layout, { t0: tm.t0, t1: tm.t1, width: 1400, height: layout.height }, DARK_THEME);
      for (const row of layout.rows.filter((r) => r.kind === 'counter' && tm.counters[r.index]!.unit === 'blocks')) {
        const c = tm.counters[row.index]!;
        // The scale label is the text drawn in the labels column below the track's name.
        const under = ctx.calls.filter((k) => k.fn === 'fillText' && Number(k.args[1]) === 6 && Number(k.args[2]) > row.y + row.h / 2 && Number(k.args[2]) < row.y + row.h).map((k) => String(k.args[0]));
        // A bare "1084" under "GPU pool" named neither the unit nor matched "1,084 blocks" in the Live view.
        expect(under, c.label).toEqual([`${c.scale === 'capacity' ? 'of' : 'peak'} ${c.max.toLocaleString('en-US')} block${c.max === 1 ? '' : 's'}`]);
      }
    });

    it(`arrow keys step through every request bar in time order and across users (${run.name})`, () => {
      const { tm } = model(run.events);
      const start = (r: (typeof tm.requests)[number]) => r.queued ?? r.scheduled ?? r.first_token;
      const bars = tm.requests.filter((r) => start(r) !== null);
      if (bars.length === 0) return;
      // → from nothing, then → until the end: every bar once, never back in time.
      const seen: string[] = [];
      let at = stepRequest(tm, null, 'ArrowRight');
      let lastT = -Infinity;
      while (at) {
        const r = tm.requests.find((q) => q.user === at!.user && q.round === at!.round)!;
        expect(start(r)!).toBeGreaterThanOrEqual(lastT);
        lastT = start(r)!;
        seen.push(`${at.user}/${at.round}`);
        at = stepRequest(tm, at, 'ArrowRight');
      }
      expect(new Set(seen).size).toBe(bars.length);
      expect(seen.length).toBe(bars.length);
      // ← from the last goes back one; ← from nothing is the last.
      expect(stepRequest(tm, null, 'ArrowLeft')).toEqual({ user: Number(seen.at(-1)!.split('/')[0]), round: Number(seen.at(-1)!.split('/')[1]) });
      // ↓ keeps the round and moves to the next user row; ↑ from the top row goes nowhere.
      const top = tm.users[0]!;
      const r0 = bars.find((b) => b.user === top)!;
      expect(stepRequest(tm, { user: top, round: r0.round }, 'ArrowUp')).toBeNull();
      if (tm.users.length > 1 && bars.some((b) => b.user === tm.users[1] && b.round === r0.round)) {
        expect(stepRequest(tm, { user: top, round: r0.round }, 'ArrowDown')).toEqual({ user: tm.users[1], round: r0.round });
      }
    });

    it(`lane byte totals and request rows agree with the log (${run.name})`, () => {
      const { tm } = model(run.events);
      // The lanes show CUPTI's traced copies when the run has any, else the engine's reports; disk
      // I/O (f2h, h2f) is always the engine's, which CUPTI cannot see. The start-up copy check
      // (copies that start before the setup phase ends) is kept apart.
      const traced = run.events.some((e) => e.type === 'xfer' && e.source === 'cupti');
      const sourceOf = (dir: string) => (traced && dir !== 'f2h' && dir !== 'h2f' ? 'cupti' : 'engine');
      const setupEnd = run.events.find((e) => e.type === 'phase' && e.name === 'setup' && e.state === 'end')?.t ?? -Infinity;
      const copies = (dir: string, startup: boolean) =>
        run.events.filter((e): e is XferEvent => e.type === 'xfer' && e.dir === dir && e.source === sourceOf(dir) && e.start < setupEnd === startup);
      for (const l of tm.lanes) {
        expect(l.totalBytes).toBe(copies(l.dir, false).reduce((a, x) => a + x.bytes, 0));
        expect(l.length).toBe(copies(l.dir, false).length);
      }
      for (const dir of ['h2d', 'd2h'] as const) {
        expect(tm.startupCopies[dir]).toEqual({ count: copies(dir, true).length, bytes: copies(dir, true).reduce((a, x) => a + x.bytes, 0) });
      }
      const reqs = new Set(run.events.filter((e) => e.type === 'req').map((e) => `${(e as { user: number }).user}/${(e as { round: number }).round}`));
      expect(tm.requests.length).toBe(reqs.size);
    });
  }
});
