/**
 * Timeline: requests per user, H2D/D2H copies and counter tracks on one clock, drawn on one canvas
 * by renderTimelineInto. d3-zoom owns pan/zoom (wheel, drag) and W/A/S/D move it from the keyboard
 * as in Perfetto (held keys keep moving, a tap moves a step) wherever the focus is in the view;
 * the zoom transform lives in a ref, never React state.
 * Hover shows the copy or request under the pointer; a click on a request highlights its blocks'
 * moves and the copies that carried them.
 */
import { useEffect, useMemo, useRef, useState } from 'react';
import { scaleLinear, select, zoom as d3zoom, zoomIdentity, type ZoomBehavior, type ZoomTransform } from 'd3';
import { formatBandwidth, formatBytes, formatCount, formatNs, plural } from '../../../shared/format';
import { linkRequest, type RequestLinks, type TimelineModel } from '../../../shared/timeline-model';
import { registerDraw } from '../../frame-scheduler';
import { fitCanvas, useRunData, useVizTheme } from '../../hooks';
import type { RunData } from '../../run-data';
import { barStart, formatCounterValue, hitTestTimeline, renderTimelineInto, stepRequest, timelineLayout, type TimelineHit, type TimelineLayout } from '../../viz/timeline-render';
import { isMotionKey, KeyMotion, typingTarget } from '../../viz/key-motion';
import { RunHeader } from '../live/LiveView';
import { ExportButton } from '../export/ExportButton';
import { saveChartImage } from '../export/save-image';
import { useApi } from '../../bridge/api-context';
import { RunOpening } from '../run-opening/RunOpening';
import { ttftBreakdown } from '../../../shared/ttft-breakdown';
import { RequestBreakdown } from '../ttft/TtftBreakdownView';

export function TimelineView({ runId }: { runId: string }) {
  const { data, error } = useRunData(runId, 1000);
  if (error) return <p role="alert" className="error">Could not open run {runId}: {error}</p>;
  if (!data) return <RunOpening runId={runId} />;
  return <Timeline data={data} />;
}

const LABEL_W = 130;

function describeHit(model: TimelineModel, hit: TimelineHit): string {
  if (!hit) return '';
  if (hit.kind === 'xfer') {
    const l = model.lanes[hit.lane]!;
    const d = l.end[hit.index]! - l.start[hit.index]!;
    const b = l.bytes[hit.index]!;
    const what = l.dir === 'f2h' ? 'disk read (file → host)' : l.dir === 'h2f' ? 'disk write (host → file)' : `${l.dir.toUpperCase()} copy`;
    return `${what} · ${formatBytes(b)} in ${formatNs(d)} · ${d > 0 ? formatBandwidth((b / d) * 1e9) : 'instant'} · at ${formatNs(l.start[hit.index]! - model.t0)}`;
  }
  if (hit.kind === 'request') {
    const r = model.requests[hit.index]!;
    const ph = (a: number | null, b: number | null) => (a !== null && b !== null ? formatNs(b - a) : '–');
    return `user ${r.user} · round ${r.round} · queued ${ph(r.queued, r.scheduled)} · prefill ${ph(r.scheduled, r.first_token)} · decode ${ph(r.first_token, r.done)} · queued TTFT ${formatNs(r.ttft_ns)} · service TTFT ${formatNs(r.service_ttft_ns)} (click to trace its blocks)`;
  }
  const c = model.counters[hit.counter]!;
  const v = c.v[hit.index]!;
  return `${c.label}: ${formatCounterValue(c.unit, v)} at ${formatNs(c.t[hit.index]! - model.t0)}`;
}

/** A token count from a req line, or "–" where the engine did not report it. */
function tokens(n: number | null | undefined): string {
  return n === null || n === undefined ? '–' : formatCount(n);
}

function Timeline({ data }: { data: RunData }) {
  const theme = useVizTheme();
  const wrapRef = useRef<HTMLDivElement>(null);
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const tipRef = useRef<HTMLDivElement>(null);
  const transform = useRef<ZoomTransform>(zoomIdentity);
  const links = useRef<RequestLinks | null>(null);
  const motion = useRef(new KeyMotion());
  /** Last pointer x over the plot (W/S zoom about it, as Perfetto), or null: the middle. */
  const pointerX = useRef<number | null>(null);
  const api = useRef<{ invalidate: () => void; zoomBy: (k: number) => void; reset: () => void; reveal: (t0: number, t1: number) => void } | null>(null);
  const [selected, setSelected] = useState<RequestLinks | null>(null);
  // The traced request (or none): the ref feeds the drawing, the state the side panel.
  const selectRequest = (l: RequestLinks | null) => {
    links.current = l;
    setSelected(l);
  };
  const [saved, setSaved] = useState<string | null>(null);
  const bridge = useApi();
  const model = data.timeline();
  const layout: TimelineLayout = useMemo(() => timelineLayout(model, LABEL_W), [model]);
  const empty = model.requests.length === 0 && model.lanes.every((l) => l.length === 0);

  useEffect(() => {
    const canvas = canvasRef.current!;
    const wrap = wrapRef.current!;
    const ctx = canvas.getContext('2d')!;
    let width = 0;
    const x0 = scaleLinear().domain([model.t0, model.t1]);
    const zb: ZoomBehavior<HTMLCanvasElement, unknown> = d3zoom<HTMLCanvasElement, unknown>()
      // Down to ~1 µs across the view, whatever the run's length.
      .scaleExtent([1, Math.max(1, (model.t1 - model.t0) / 1e3)])
      .on('zoom', (ev: { transform: ZoomTransform }) => {
        transform.current = ev.transform;
        reg.invalidate();
      });
    const sel = select(canvas);
    const size = () => {
      width = Math.max(300, wrap.clientWidth);
      fitCanvas(canvas, width, layout.height);
      x0.range([LABEL_W, width]);
      zb.extent([
        [LABEL_W, 0],
        [width, layout.height],
      ]).translateExtent([
        [LABEL_W, 0],
        [width, layout.height],
      ]);
    };
    size();
    sel.call(zb).on('dblclick.zoom', null);
    let draws = 0;
    const draw = (): boolean => {
      let moving = false;
      if (motion.current.active) {
        // Perfetto's W/S zoom (about the pointer) and A/D pan, by the time each key was down.
        const m = motion.current.step(performance.now());
        const px = pointerX.current;
        if (m.zoom !== 1) zb.scaleBy(sel, m.zoom, [px !== null && px > LABEL_W && px < width ? px : LABEL_W + (width - LABEL_W) / 2, 0]);
        if (m.pan !== 0) zb.translateBy(sel, m.pan / transform.current.k, 0);
        moving = m.active;
      }
      wrap.dataset.moving = moving ? '1' : '';
      const xs = transform.current.rescaleX(x0);
      const [t0, t1] = xs.domain() as [number, number];
      const dpr = window.devicePixelRatio || 1;
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const stats = renderTimelineInto(ctx, model, layout, { t0, t1, width, height: layout.height }, theme, { links: links.current });
      wrap.dataset.t0 = String(t0);
      wrap.dataset.t1 = String(t1);
      wrap.dataset.bars = String(stats.bars);
      wrap.dataset.binned = String(stats.binned);
      // How many times the canvas was drawn since the view opened (tests: a switch draws once).
      wrap.dataset.draws = String(++draws);
      if (draws === 1) performance.mark(`kvscope:timeline-first-draw:${data.id}`);
      return moving;
    };
    const reg = registerDraw(draw);
    api.current = {
      invalidate: reg.invalidate,
      zoomBy: (k) => zb.scaleBy(sel, k, [LABEL_W + (width - LABEL_W) / 2, 0]),
      reset: () => zb.transform(sel, zoomIdentity),
      // Pans (zoom kept) so a span off screen comes to the middle: a request chosen from the keyboard.
      reveal: (a, b) => {
        const [v0, v1] = transform.current.rescaleX(x0).domain() as [number, number];
        if (a < v0 || b > v1) zb.translateTo(sel, x0((a + b) / 2), 0);
      },
    };
    // Its first report (on observe) gives the size the canvas already has: drawing again for it
    // doubled what a switch to this view cost.
    const ro = new ResizeObserver(() => {
      if (Math.max(300, wrap.clientWidth) === width) return;
      size();
      reg.invalidate();
    });
    ro.observe(wrap);

    const view = () => {
      const [t0, t1] = transform.current.rescaleX(x0).domain() as [number, number];
      return { t0, t1, width, height: layout.height };
    };
    const pos = (e: MouseEvent) => {
      const b = canvas.getBoundingClientRect();
      return [e.clientX - b.left, e.clientY - b.top] as const;
    };
    const onMove = (e: MouseEvent) => {
      const [x, y] = pos(e);
      pointerX.current = x;
      const hit = hitTestTimeline(model, layout, view(), x, y);
      const tip = tipRef.current!;
      const text = describeHit(model, hit);
      tip.textContent = text;
      tip.hidden = !text;
      if (text) {
        tip.style.left = `${Math.min(x + 12, width - 360)}px`;
        tip.style.top = `${y + 16}px`;
      }
      canvas.style.cursor = hit?.kind === 'request' ? 'pointer' : '';
    };
    const onLeave = () => {
      tipRef.current!.hidden = true;
      pointerX.current = null;
    };
    const onClick = (e: MouseEvent) => {
      const [x, y] = pos(e);
      const hit = hitTestTimeline(model, layout, view(), x, y);
      if (hit?.kind === 'request') selectRequest(linkRequest(model, data.replay, hit.user, hit.round));
      else if (!hit) selectRequest(null);
      reg.invalidate();
    };
    canvas.addEventListener('mousemove', onMove);
    canvas.addEventListener('mouseleave', onLeave);
    canvas.addEventListener('click', onClick);
    return () => {
      ro.disconnect();
      reg.dispose();
      sel.on('.zoom', null);
      canvas.removeEventListener('mousemove', onMove);
      canvas.removeEventListener('mouseleave', onLeave);
      canvas.removeEventListener('click', onClick);
    };
  }, [model, layout, theme, data]);

  // Focus the timeline so its keys read as the view's at once.
  useEffect(() => wrapRef.current?.focus({ preventScroll: true }), []);

  // The view's keys, wherever the focus is in the window (after a click on Zoom in they stopped,
  // the canvas having lost the focus), except in a control that takes typing or in a dialog.
  useEffect(() => {
    const onDown = (e: KeyboardEvent) => {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || typingTarget(e.target)) return;
      const k = e.key.toLowerCase();
      if (isMotionKey(k)) {
        motion.current.press(k, performance.now());
        api.current?.invalidate();
        e.preventDefault();
      } else if (k === 'escape') {
        selectRequest(null);
        api.current?.invalidate();
      } else if (k === '0') api.current?.reset();
      else if (e.key === 'ArrowLeft' || e.key === 'ArrowRight' || e.key === 'ArrowUp' || e.key === 'ArrowDown') {
        // The keyboard's way to trace a request (clicking was the only one).
        const next = stepRequest(model, links.current, e.key);
        e.preventDefault();
        if (!next) return;
        selectRequest(linkRequest(model, data.replay, next.user, next.round));
        const r = model.requests.find((q) => q.user === next.user && q.round === next.round)!;
        api.current?.reveal(barStart(r) ?? model.t0, r.done ?? model.t1);
        api.current?.invalidate();
      }
    };
    const onUp = (e: KeyboardEvent) => {
      const k = e.key.toLowerCase();
      if (isMotionKey(k)) motion.current.release(k, performance.now());
    };
    const onBlur = () => motion.current.releaseAll(performance.now());
    const listeners: Array<[string, EventListener]> = [
      ['keydown', onDown as EventListener],
      ['keyup', onUp as EventListener],
      ['blur', onBlur],
    ];
    for (const [type, fn] of listeners) window.addEventListener(type, fn);
    return () => {
      for (const [type, fn] of listeners) window.removeEventListener(type, fn);
    };
  }, [model, data]);

  const req = selected ? data.loaded.analysis.requests.find((r) => r.user === selected.user && r.round === selected.round) : null;
  // The request's own bytes on those copies (a copy may carry other moves' blocks too).
  const bytesOf = (dir: string) => selected?.carriedBytes[dir] ?? 0;
  return (
    <section className="timeline-view">
      <RunHeader data={data} view="timeline" />
      <div className="transport" role="toolbar" aria-label="Timeline">
        <button type="button" onClick={() => api.current?.zoomBy(1.5)} title="Zoom in (W, wheel)" data-action="zoom-in">
          Zoom in
        </button>
        <button type="button" onClick={() => api.current?.zoomBy(1 / 1.5)} title="Zoom out (S, wheel)" data-action="zoom-out">
          Zoom out
        </button>
        <button type="button" onClick={() => api.current?.reset()} title="Whole run (0)" data-action="zoom-reset">
          Whole run
        </button>
        {/* The hint yields its width (ellipsis, full text on hover): at 1100 px it pushed Export onto a row of its own. */}
        <span className="muted hint-line" title="W/S zoom · A/D pan · drag to pan · click a request (or ← → ↑ ↓) to trace its blocks · Esc clears">
          W/S zoom · A/D pan · drag to pan · click a request (or ← → ↑ ↓) to trace its blocks · Esc clears
        </span>
        <span className="spacer" />
        <button type="button" data-action="save-image" title="Save the timeline as it is drawn now (PNG)" onClick={() => canvasRef.current && void saveChartImage(bridge, data.id, 'timeline', canvasRef.current.toDataURL('image/png'), 'png').then(setSaved)}>
          Save image…
        </button>
        <ExportButton runId={data.id} />
      </div>
      {saved && (
        <p className="notice" role="status">
          {saved}
        </p>
      )}
      {empty && <p className="empty">This run has no requests or copies to show{data.status === 'running' ? ' yet' : ''}.</p>}
      <div className="timeline-scroll">
        <div className="timeline-canvas" ref={wrapRef} tabIndex={0} data-testid="timeline" aria-label="Timeline: W/S zoom, A/D pan, arrow keys choose a request, Esc clears" data-selected={selected ? `${selected.user}/${selected.round}` : ''} data-selected-xfers={selected ? Object.values(selected.xfers).reduce((a, v) => a + v.length, 0) : 0}>
          <canvas ref={canvasRef} />
          <div className="tooltip" ref={tipRef} hidden role="status" />
        </div>
      </div>
      {selected && (
        <aside className="request-details" aria-live="polite">
          <h2>
            User {selected.user}, round {selected.round}
          </h2>
          <p>
            {/* Counts with separators, as everywhere else ("16,384 tokens", not "16384"). */}
            queued TTFT {formatNs(req?.ttft_ns)} · service TTFT {formatNs(req?.service_ttft_ns)} · prompt {tokens(req?.prompt_tokens)} tokens · reused on GPU {tokens(req?.reused_gpu_tokens)}, from host {tokens(req?.reused_host_tokens)}
            {req?.reused_disk_tokens !== null && req?.reused_disk_tokens !== undefined ? `, from disk ${tokens(req.reused_disk_tokens)}` : ''}, computed {tokens(req?.computed_tokens)}
          </p>
          <p>
            {/* The block total first: after the list, "onboard 1 line (1022 blocks)" read as the onboard count. */}
            Block moves: {plural(selected.moves.length, 'block')} in {Object.entries(selected.moveTimes).filter(([, v]) => v.length).map(([k, v]) => `${k} ${v.length} line${v.length === 1 ? '' : 's'}`).join(', ') || 'no lines'} · copies carrying them ({selected.source === 'cupti' ? 'traced by CUPTI' : "the engine's records"}): H2D {selected.xfers.h2d?.length ?? 0} ({formatBytes(bytesOf('h2d'))}), D2H {selected.xfers.d2h?.length ?? 0} ({formatBytes(bytesOf('d2h'))})
          </p>
          {/* Where its TTFT went: the engine's ttft_parts, or what the log lets one say without them. */}
          {req && <RequestBreakdown b={ttftBreakdown(req, data.loaded.analysis.pools.gpu?.block_bytes ?? null)} theme={theme} />}
        </aside>
      )}
    </section>
  );
}
