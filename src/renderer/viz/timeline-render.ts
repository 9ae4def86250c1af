/**
 * The timeline on one canvas: axis, round boundaries, a row per user (each round's request as
 * queued → scheduled → first token → done, TTFT marked, onboarding ticks inside), a lane per
 * transfer direction (a disk tier's reads and writes too), and counter tracks (every pool's occupancy). Pure `renderTimelineInto(ctx, model, layout, view, …)`:
 * the view hands it the visible time window from d3-zoom; nothing here allocates per mark.
 *
 * Level of detail (as Perfetto and speedscope do): where a lane has more copies in view than
 * pixels, copies are binned per pixel column and drawn as a density (busy fraction of the column),
 * so 1,000,000 copies cost one pass over the visible ones and at most one rect per column.
 */
import { axisNsFormat, formatBandwidth, formatBytes, formatNs, plural } from '../../shared/format';
import { laneWindow, type CounterTrack, type RequestLinks, type TimelineModel, type XferLane } from '../../shared/timeline-model';
import type { Ctx2D, VizTheme } from './ctx2d';

export interface TimelineView {
  /** Visible time window (ns, run clock). */
  t0: number;
  t1: number;
  width: number;
  height: number;
}

export type RowKind = 'axis' | 'user' | 'lane' | 'counter';

export interface TimelineRow {
  kind: RowKind;
  y: number;
  h: number;
  label: string;
  /** user id, lane index or counter index. */
  index: number;
}

export interface TimelineLayout {
  rows: TimelineRow[];
  labelWidth: number;
  height: number;
}

export const AXIS_H = 22;
/** Track names in the label column and their scale lines: at 11 px the names read as ~10 px text. */
export const LABEL_FONT = '13px system-ui, sans-serif';
export const SCALE_FONT = '11px system-ui, sans-serif';
const AXIS_FONT = '11px system-ui, sans-serif';
const USER_H = 20;
const LANE_H = 24;
const COUNTER_H = 36;

export function timelineLayout(model: TimelineModel, labelWidth = 120): TimelineLayout {
  const rows: TimelineRow[] = [{ kind: 'axis', y: 0, h: AXIS_H, label: '', index: 0 }];
  // A strip under the axis for the round labels.
  let y = AXIS_H + 14;
  for (const u of model.users) {
    rows.push({ kind: 'user', y, h: USER_H, label: `user ${u}`, index: u });
    y += USER_H + 2;
  }
  y += 6;
  model.lanes.forEach((l, i) => {
    rows.push({ kind: 'lane', y, h: LANE_H, label: laneLabel(l.dir), index: i });
    y += LANE_H + 2;
  });
  y += 6;
  model.counters.forEach((c, i) => {
    if (c.length === 0) return;
    rows.push({ kind: 'counter', y, h: COUNTER_H, label: c.label, index: i });
    y += COUNTER_H + 4;
  });
  return { rows, labelWidth, height: y };
}

/** A lane's name: "H2D copies", …, or a disk tier's "Disk reads" (file → host) and "Disk writes" (host → file). */
export function laneLabel(dir: XferLane['dir']): string {
  return dir === 'f2h' ? 'Disk reads' : dir === 'h2f' ? 'Disk writes' : `${dir.toUpperCase()} copies`;
}

/** Linear time → px over the plot area (right of the labels). */
export function xOf(view: TimelineView, labelWidth: number, t: number): number {
  return labelWidth + ((t - view.t0) / (view.t1 - view.t0)) * (view.width - labelWidth);
}

export function tOf(view: TimelineView, labelWidth: number, x: number): number {
  return view.t0 + ((x - labelWidth) / (view.width - labelWidth)) * (view.t1 - view.t0);
}

/** "Nice" tick step (1, 2, 5 × 10^k ns) for about `target` ticks. */
export function tickStep(span: number, target: number): number {
  const raw = span / Math.max(1, target);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

export interface TimelineDrawStats {
  /** Copies drawn one rect each, and copies folded into per-pixel bins. */
  bars: number;
  binned: number;
}

export interface Highlight {
  links: RequestLinks | null;
}

/** Scratch bins reused across frames (one per canvas width). */
let bins = new Float32Array(0);

function drawLane(ctx: Ctx2D, lane: XferLane, row: TimelineRow, view: TimelineView, lw: number, color: string, picked: number[] | undefined, theme: VizTheme, stats: TimelineDrawStats): void {
  const [i0, i1] = laneWindow(lane, view.t0, view.t1);
  const plotW = view.width - lw;
  const scale = plotW / (view.t1 - view.t0);
  const y = row.y + 2;
  const h = row.h - 4;
  ctx.fillStyle = color;
  if (i1 - i0 > plotW * 2) {
    // Per-pixel busy fraction: the sum of each copy's overlap with the column.
    const w = Math.ceil(plotW);
    if (bins.length < w) bins = new Float32Array(w);
    bins.fill(0, 0, w);
    const s = lane.start;
    const e = lane.end;
    const t0 = view.t0;
    for (let i = i0; i < i1; i++) {
      let a = (s[i]! - t0) * scale;
      let b = (e[i]! - t0) * scale;
      if (b < 0 || a >= w) continue;
      if (a < 0) a = 0;
      if (b > w) b = w;
      let c = a | 0;
      if (b - a < 1e-3) {
        bins[c] = bins[c]! + 0.35; // an instant copy still shows
        continue;
      }
      while (c < b) {
        const cEnd = c + 1 < b ? c + 1 : b;
        bins[c] = bins[c]! + (cEnd - (a > c ? a : c));
        c++;
      }
    }
    stats.binned += i1 - i0;
    for (let c = 0; c < w; c++) {
      const v = bins[c]!;
      if (v <= 0) continue;
      const bh = Math.max(1, Math.min(1, v) * h);
      ctx.fillRect(lw + c, y + h - bh, 1, bh);
    }
  } else {
    for (let i = i0; i < i1; i++) {
      const a = xOf(view, lw, lane.start[i]!);
      const b = xOf(view, lw, lane.end[i]!);
      if (b < lw || a > view.width) continue;
      const x = Math.max(lw, a);
      ctx.fillRect(x, y, Math.max(1, Math.min(view.width, b) - x), h);
    }
    stats.bars += i1 - i0;
  }
  if (picked && picked.length) {
    ctx.fillStyle = theme.highlight;
    for (const i of picked) {
      const a = xOf(view, lw, lane.start[i]!);
      const b = xOf(view, lw, lane.end[i]!);
      if (b < lw || a > view.width) continue;
      const x = Math.max(lw, a - 1);
      ctx.fillRect(x, row.y, Math.max(3, Math.min(view.width, b + 1) - x), row.h);
    }
  }
}

function drawCounter(ctx: Ctx2D, c: CounterTrack, row: TimelineRow, view: TimelineView, lw: number, theme: VizTheme): void {
  const plotW = view.width - lw;
  const scale = plotW / (view.t1 - view.t0);
  const yOf = (v: number) => row.y + row.h - 2 - (Math.max(0, v) / (c.max || 1)) * (row.h - 4);
  let i0 = 0;
  let lo = 0;
  let hi = c.length;
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    if (c.t[m]! < view.t0) lo = m + 1;
    else hi = m;
  }
  i0 = Math.max(0, lo - 1);
  ctx.strokeStyle = theme.accent;
  ctx.fillStyle = theme.accent;
  ctx.lineWidth = 1;
  ctx.beginPath();
  // Min/max per pixel column keeps the shape of dense series at one segment per column.
  let col = -1;
  let mn = 0;
  let mx = 0;
  let last = NaN;
  let started = false;
  const flush = () => {
    if (col < 0) return;
    const x = lw + col;
    if (!started) {
      ctx.moveTo(x, yOf(mn));
      started = true;
    } else ctx.lineTo(x, yOf(mn));
    if (mx !== mn) ctx.lineTo(x, yOf(mx));
    ctx.lineTo(x, yOf(last));
  };
  for (let i = i0; i < c.length; i++) {
    const v = c.v[i]!;
    let cx = Math.floor((c.t[i]! - view.t0) * scale);
    if (cx < 0) cx = 0;
    if (cx > plotW) {
      // Carry the value to the right edge (a step holds; a line heads to the next sample).
      if (c.step) {
        flush();
        col = -1;
        ctx.lineTo(view.width, yOf(last));
      } else {
        flush();
        col = -1;
        const prevT = c.t[i - 1] ?? c.t[i]!;
        const k = (view.t1 - prevT) / Math.max(1, c.t[i]! - prevT);
        ctx.lineTo(view.width, yOf(last + (v - last) * k));
      }
      break;
    }
    if (cx !== col) {
      flush();
      if (c.step && started) ctx.lineTo(lw + cx, yOf(last));
      col = cx;
      mn = v;
      mx = v;
    } else {
      if (v < mn) mn = v;
      if (v > mx) mx = v;
    }
    last = v;
    if (i === c.length - 1) {
      flush();
      col = -1;
      if (c.step) ctx.lineTo(Math.min(view.width, lw + (view.t1 - view.t0) * scale), yOf(last));
    }
  }
  ctx.stroke();
}

/**
 * A counter track's value in its unit, for the scale label under the track's name and the hover
 * tooltip alike. Pool tracks read "1,084 blocks" as the Live view and the Summary do (the scale
 * label was a bare "1084", with no unit, under "GPU pool").
 */
export function formatCounterValue(unit: CounterTrack['unit'], v: number): string {
  if (unit === 'pct') return `${v.toFixed(0)}%`;
  if (unit === 'bytes') return formatBytes(v);
  if (unit === 'bytes/s') return formatBandwidth(v);
  return plural(v, 'block');
}

/**
 * The scale label under a counter track's name, saying what the top of the track is: "of 1,084
 * blocks" (a pool's capacity, the card's memory), "peak 1,619 blocks" (the most the run used of a
 * pool far larger), "0–100%". Both pools read "1,084 blocks" / "1,619 blocks" before, one a
 * capacity and the other a peak.
 */
export function counterScaleLabel(c: Pick<CounterTrack, 'unit' | 'max' | 'scale'>): string {
  if (c.scale === 'percent') return '0–100%';
  return `${c.scale === 'capacity' ? 'of' : 'peak'} ${formatCounterValue(c.unit, c.max)}`;
}

/** Where a request's bar starts (as drawn: queued, else scheduled, else first token). */
export function barStart(r: TimelineModel['requests'][number]): number | null {
  return r.queued ?? r.scheduled ?? r.first_token;
}

/**
 * The request the arrow keys move the selection to, so a request can be traced without a mouse:
 * ← → the previous / next bar in time (ties by user), ↑ ↓ the same round on the user above /
 * below. From no selection, → and ↓ take the first bar and ← and ↑ the last. Null where there is
 * nowhere to go.
 */
export function stepRequest(model: TimelineModel, from: { user: number; round: number } | null, key: 'ArrowLeft' | 'ArrowRight' | 'ArrowUp' | 'ArrowDown'): { user: number; round: number } | null {
  const bars = model.requests.filter((r) => barStart(r) !== null).sort((a, b) => barStart(a)! - barStart(b)! || a.user - b.user);
  if (bars.length === 0) return null;
  const pick = (r: (typeof bars)[number] | undefined) => (r ? { user: r.user, round: r.round } : null);
  const i = from ? bars.findIndex((r) => r.user === from.user && r.round === from.round) : -1;
  if (i < 0) return pick(key === 'ArrowRight' || key === 'ArrowDown' ? bars[0] : bars[bars.length - 1]);
  if (key === 'ArrowRight') return pick(bars[i + 1]);
  if (key === 'ArrowLeft') return pick(bars[i - 1]);
  // Up and down walk the rows as drawn (users in model.users order), keeping the round.
  const row = model.users.indexOf(from!.user);
  const users = key === 'ArrowDown' ? model.users.slice(row + 1) : model.users.slice(0, row).reverse();
  for (const u of users) {
    const r = bars.find((b) => b.user === u && b.round === from!.round);
    if (r) return pick(r);
  }
  return null;
}

/** Paints the whole timeline for the window in `view`. */
export function renderTimelineInto(ctx: Ctx2D, model: TimelineModel, layout: TimelineLayout, view: TimelineView, theme: VizTheme, highlight: Highlight = { links: null }): TimelineDrawStats {
  const stats: TimelineDrawStats = { bars: 0, binned: 0 };
  const lw = layout.labelWidth;
  ctx.fillStyle = theme.background;
  ctx.fillRect(0, 0, view.width, view.height);
  ctx.save();
  ctx.beginPath();
  ctx.rect(lw, 0, view.width - lw, view.height);
  ctx.clip();

  // Axis and grid.
  const span = view.t1 - view.t0;
  const step = tickStep(span, Math.max(2, (view.width - lw) / 110));
  ctx.font = AXIS_FONT;
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'left';
  // Ticks at round multiples of the run's own clock (labels read 0 ms, 100 ms, 200 ms, ...), one
  // unit and precision for the whole axis (per-tick formatNs read "0 ns", "20.00 s", "100.0 s").
  const tickLabel = axisNsFormat(Math.max(Math.abs(view.t0 - model.t0), Math.abs(view.t1 - model.t0)), step);
  let labelEnd = -Infinity;
  for (let t = model.t0 + Math.ceil((view.t0 - model.t0) / step) * step; t <= view.t1; t += step) {
    const x = Math.round(xOf(view, lw, t)) + 0.5;
    ctx.fillStyle = theme.grid;
    ctx.fillRect(x, AXIS_H, 1, view.height - AXIS_H);
    ctx.fillStyle = theme.muted;
    // A label runs right of its tick; near the right edge it ends at the tick instead, so the last
    // one is read whole (it was cut at the canvas edge), unless that would run into the one before.
    const text = tickLabel(t - model.t0);
    const w = ctx.measureText(text).width;
    let lx = x + 3;
    if (lx + w > view.width) lx = x - 3 - w;
    if (lx < labelEnd + 4 || lx < lw) continue;
    ctx.fillText(text, lx, AXIS_H / 2);
    labelEnd = lx + w;
  }
  // Round boundaries.
  ctx.setLineDash([4, 3]);
  ctx.strokeStyle = theme.muted;
  for (const r of model.rounds) {
    const x = Math.round(xOf(view, lw, r.t)) + 0.5;
    if (x < lw || x > view.width) continue;
    ctx.beginPath();
    ctx.moveTo(x, AXIS_H);
    ctx.lineTo(x, layout.height);
    ctx.stroke();
    ctx.fillStyle = theme.text;
    ctx.fillText(`R${r.round}`, x + 3, AXIS_H + 6);
  }
  ctx.setLineDash([]);

  const sel = highlight.links;
  for (const row of layout.rows) {
    if (row.kind === 'user') {
      const color = theme.users[row.index % theme.users.length]!;
      for (const r of model.requests) {
        if (r.user !== row.index) continue;
        const q = barStart(r);
        const d = r.done ?? model.t1;
        if (q === null) continue;
        const x0 = xOf(view, lw, q);
        const x1 = xOf(view, lw, d);
        if (x1 < lw || x0 > view.width) continue;
        const selected = sel !== null && sel.user === r.user && sel.round === r.round;
        // queued: outline only; scheduled → first token (prefill): translucent; decode: solid.
        ctx.globalAlpha = 1;
        ctx.strokeStyle = color;
        ctx.lineWidth = 1;
        ctx.strokeRect(x0 + 0.5, row.y + 0.5, Math.max(1, x1 - x0 - 1), row.h - 1);
        const s = r.scheduled ?? q;
        const f = r.first_token ?? d;
        ctx.fillStyle = color;
        ctx.globalAlpha = 0.45;
        ctx.fillRect(xOf(view, lw, s), row.y + 1, Math.max(1, xOf(view, lw, f) - xOf(view, lw, s)), row.h - 2);
        ctx.globalAlpha = 1;
        if (r.first_token !== null) {
          ctx.fillRect(xOf(view, lw, f), row.y + 1, Math.max(1, x1 - xOf(view, lw, f)), row.h - 2);
          // TTFT mark: a bar across the row at first token.
          ctx.fillStyle = theme.text;
          ctx.fillRect(Math.round(xOf(view, lw, r.first_token)) - 1, row.y - 1, 2, row.h + 2);
        }
        // Onboarding inside the request (ticks along its foot) and the offloads it caused (along its top).
        if (x1 - x0 > 4) {
          ctx.fillStyle = theme.h2d;
          for (const t of r.onboards) ctx.fillRect(xOf(view, lw, t) - 0.5, row.y + row.h - 4, 1.5, 4);
          ctx.fillStyle = theme.d2h;
          for (const t of r.offloads) ctx.fillRect(xOf(view, lw, t) - 0.5, row.y, 1.5, 3);
        }
        if (selected) {
          ctx.strokeStyle = theme.highlight;
          ctx.lineWidth = 2;
          ctx.strokeRect(x0 - 1, row.y - 1, Math.max(2, x1 - x0 + 2), row.h + 2);
          ctx.lineWidth = 1;
        }
        // The label stays inside its bar (a long label ran into the next round's bar) and off the
        // TTFT mark, drawn in the text colour, which struck through it ("R2 · TTF|T 1.969 s"): the
        // full label before the mark, else after it, else the round alone likewise, else none.
        const left = Math.max(lw, x0);
        const right = Math.min(x1, view.width);
        const mark = r.first_token !== null ? Math.round(xOf(view, lw, r.first_token)) : null;
        const spans: Array<[number, number]> = mark !== null && mark > left && mark < right ? [[left, mark - 2], [mark + 2, right]] : [[left, right]];
        const short = `R${r.round}`;
        const texts = r.ttft_ns !== null ? [`${short} · queued TTFT ${formatNs(r.ttft_ns)}`, short] : [short];
        let placed: [string, number] | null = null;
        for (const t of texts) {
          const span = spans.find(([a, b]) => ctx.measureText(t).width <= b - a - 6);
          if (span) {
            placed = [t, span[0] + 3];
            break;
          }
        }
        if (placed) {
          ctx.fillStyle = theme.text;
          ctx.fillText(placed[0], placed[1], row.y + row.h / 2);
        }
      }
      // Onboarding inside the request: a tick per onboard line of the selected request.
      if (sel && sel.user === row.index) {
        ctx.fillStyle = theme.highlight;
        for (const t of sel.moveTimes.onboard) ctx.fillRect(xOf(view, lw, t) - 1, row.y + row.h - 5, 2, 5);
        for (const t of sel.moveTimes.offload) ctx.fillRect(xOf(view, lw, t) - 1, row.y, 2, 5);
      }
    } else if (row.kind === 'lane') {
      const lane = model.lanes[row.index]!;
      const color = lane.dir === 'h2d' ? theme.h2d : lane.dir === 'd2h' ? theme.d2h : lane.dir === 'f2h' || lane.dir === 'h2f' ? theme.disk : theme.other;
      ctx.fillStyle = theme.panel;
      ctx.fillRect(lw, row.y, view.width - lw, row.h);
      drawLane(ctx, lane, row, view, lw, color, sel?.xfers[lane.dir], theme, stats);
    } else if (row.kind === 'counter') {
      ctx.fillStyle = theme.panel;
      ctx.fillRect(lw, row.y, view.width - lw, row.h);
      drawCounter(ctx, model.counters[row.index]!, row, view, lw, theme);
    }
  }
  ctx.restore();

  // Labels column.
  ctx.fillStyle = theme.background;
  ctx.fillRect(0, 0, lw, view.height);
  ctx.textAlign = 'left';
  for (const row of layout.rows) {
    if (row.kind === 'axis') continue;
    ctx.font = LABEL_FONT;
    if (row.kind === 'user') {
      // The user's colour as a swatch, the name in the text colour: drawn in the colour itself,
      // "user 3" (#76b7b2) and "user 5" (#edc949) were near-invisible on the light background.
      ctx.fillStyle = theme.users[row.index % theme.users.length]!;
      ctx.fillRect(6, Math.round(row.y + row.h / 2 - 4), 8, 8);
      ctx.fillStyle = theme.text;
      ctx.fillText(row.label, 18, row.y + row.h / 2);
    } else if (row.kind === 'counter') {
      ctx.fillStyle = theme.text;
      ctx.fillText(row.label, 6, row.y + 9);
      ctx.font = SCALE_FONT;
      ctx.fillStyle = theme.muted;
      ctx.fillText(counterScaleLabel(model.counters[row.index]!), 6, row.y + row.h - 8);
    } else {
      ctx.fillStyle = theme.text;
      ctx.fillText(row.label, 6, row.y + row.h / 2);
    }
  }
  return stats;
}

export type TimelineHit =
  | { kind: 'request'; user: number; round: number; index: number }
  | { kind: 'xfer'; lane: number; index: number }
  | { kind: 'counter'; counter: number; index: number }
  | null;

/** What is under (x, y): a request bar, a copy (nearest within 3 px), or a counter sample. */
export function hitTestTimeline(model: TimelineModel, layout: TimelineLayout, view: TimelineView, x: number, y: number): TimelineHit {
  if (x < layout.labelWidth) return null;
  const row = layout.rows.find((r) => y >= r.y && y < r.y + r.h);
  if (!row) return null;
  const t = tOf(view, layout.labelWidth, x);
  const tol = (3 / (view.width - layout.labelWidth)) * (view.t1 - view.t0);
  if (row.kind === 'user') {
    const i = model.requests.findIndex((r) => r.user === row.index && (barStart(r) ?? Infinity) - tol <= t && t <= (r.done ?? model.t1) + tol);
    return i >= 0 ? { kind: 'request', user: model.requests[i]!.user, round: model.requests[i]!.round, index: i } : null;
  }
  if (row.kind === 'lane') {
    const lane = model.lanes[row.index]!;
    const [i0, i1] = laneWindow(lane, t - tol, t + tol);
    let best = -1;
    let bestD = Infinity;
    for (let i = i0; i < i1; i++) {
      const d = t < lane.start[i]! ? lane.start[i]! - t : t > lane.end[i]! ? t - lane.end[i]! : 0;
      if (d <= tol && d < bestD) {
        best = i;
        bestD = d;
      }
    }
    return best >= 0 ? { kind: 'xfer', lane: row.index, index: best } : null;
  }
  if (row.kind === 'counter') {
    const c = model.counters[row.index]!;
    let lo = 0;
    let hi = c.length;
    while (lo < hi) {
      const m = (lo + hi) >>> 1;
      if (c.t[m]! <= t) lo = m + 1;
      else hi = m;
    }
    return lo > 0 ? { kind: 'counter', counter: row.index, index: lo - 1 } : null;
  }
  return null;
}
