/**
 * Live pools: one grid per pool — the GPU pool, the host pool and any tier below them (a disk) —
 * one cell per block, coloured by user, with every move between any two animated, replayed with play/pause, speed 0.01×–16×, a scrubber and
 * next/previous move, or following the tail of a running run. A caption says what is happening at
 * the replay time, a hovered cell says whose block it is and how it got there, and a legend keys
 * every mark. Paused, the grids are the pools exactly as they stand (nothing in the air), so the
 * counts above them and the picture agree. All per-frame state (time, speed, cursor) lives in refs
 * and is drawn by the one rAF scheduler; React renders the frame around it.
 */
import { Fragment, useEffect, useRef, useState } from 'react';
import { formatBandwidth, formatBytes, formatCount, formatNs, formatNsClock } from '../../../shared/format';
import { poolTitle } from '../../../shared/protocol';
import { POOL_GPU, POOL_HOST, ReplayCursor, type ReplayModel } from '../../../shared/replay';
import { STARTUP_COPIES_LABEL } from '../../../shared/startup-copies';
import { registerDraw } from '../../frame-scheduler';
import { fitCanvas, useRunData, useVizTheme } from '../../hooks';
import { routeHref } from '../../router';
import { emptyGrid, hexToPixel, LANDING_TINT, poolsLayout, renderPoolsInto, type PixelBuffer, type PoolsLayout, type PoolsPalette } from '../../viz/pools-render';
import { captionAt, cellAt, describeCell, firstActionT, nextMoveT, prevMoveT } from '../../viz/pools-explain';
import { renderSparklineInto, sampleAt } from '../../viz/sparkline-render';
import { formatCounterValue } from '../../viz/timeline-render';
import type { RunData } from '../../run-data';
import type { VizTheme } from '../../viz/ctx2d';
import { ExportButton } from '../export/ExportButton';
import { RunOpening } from '../run-opening/RunOpening';

const DISK_DIRS = ['f2h', 'h2f'] as const;
/** A disk tier's reads and writes, named by what moves where. */
export const DISK_DIR_LABEL = { f2h: 'Disk reads (file → host) moved', h2f: 'Disk writes (host → file) moved' } as const;

/** Down to 0.01×: a 2 GB onboard takes ~40 ms of run time, 4 s to watch at 0.01×. */
export const SPEEDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16];
/** Wall time a move spends in flight, whatever the speed. */
const ANIM_MS = 400;
/** Bandwidth readout window (run time) while paused; moving, the window the flights cover. */
const BW_WINDOW_NS = 250e6;
/** Replaying from the start begins this long before the first request or move. */
const SETUP_LEAD_NS = 200e6;
/** A pool bigger than this shows only the cells the run used (a 55 GB host pool of small blocks). */
const MAX_GRID_CELLS = 60_000;

function gridCells(r: ReplayModel, grid: number): number {
  const cap = r.pools[r.gridPools[grid]!]?.capacity_blocks ?? 0;
  const used = r.usedCells[grid]!;
  if (cap > 0 && cap <= MAX_GRID_CELLS) return Math.max(cap, used);
  return Math.max(1, Math.min(Math.max(used, 1), MAX_GRID_CELLS * 4));
}

/** Cells of every grid, in the model's grid order. */
const allGridCells = (r: ReplayModel): number[] => r.gridPools.map((_, g) => gridCells(r, g));

/** "1,084 / 1,084 blocks (100.0%)", or what a host pool of capacity 0 is (docs/protocol.md: the recompute baseline). */
function poolCountText(pool: string, n: number, capacity: number): string {
  if (capacity <= 0 && pool === 'host') return 'no host pool (recompute baseline)';
  return `${n.toLocaleString()} / ${capacity.toLocaleString()} blocks${capacity > 0 ? ` (${((n / capacity) * 100).toFixed(1)}%)` : ''}`;
}

function palette(theme: VizTheme): PoolsPalette {
  return {
    background: hexToPixel(theme.background),
    emptyCell: hexToPixel(theme.grid),
    users: theme.users.map(hexToPixel),
    unknownUser: hexToPixel(theme.muted),
    flash: hexToPixel('#ffffff'),
  };
}

export function LiveView({ runId }: { runId: string }) {
  const { data, error, version } = useRunData(runId);
  if (error) return <p role="alert" className="error">Could not open run {runId}: {error}</p>;
  if (!data) return <RunOpening runId={runId} />;
  return <LivePools data={data} version={version} />;
}

/** Why a run failed, from its run.end or (it never wrote one) from the app; null when it did not. */
export function failureOf(data: RunData): string | null {
  const e = data.loaded.analysis.error;
  if (e) return `${e.code}: ${e.message}`;
  return data.status === 'error' ? (data.loaded.listing.error ?? 'no reason was recorded') : null;
}

function LivePools({ data }: { data: RunData; version: number }) {
  const failure = failureOf(data);
  // A run that failed before any block moved: the reason, not a stray empty grid.
  if (failure && data.replay.moveCount === 0) {
    return (
      <section className="live-view">
        <RunHeader data={data} view="live" />
        <p role="alert" className="error" data-testid="run-error">
          The run failed before any block moved: {failure}
        </p>
      </section>
    );
  }
  return <LiveReplay data={data} failure={failure} />;
}

function LiveReplay({ data, failure }: { data: RunData; failure: string | null }) {
  const theme = useVizTheme();
  const wrapRef = useRef<HTMLDivElement>(null);
  const sectionRef = useRef<HTMLElement>(null);
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const scrubRef = useRef<HTMLInputElement>(null);
  const statsRef = useRef<Record<string, HTMLElement | null>>({});
  const tipRef = useRef<HTMLDivElement>(null);
  /** The layout and cursor drawn last, for hover and the caption. */
  const drawnRef = useRef<{ layout: PoolsLayout | null; cursor: ReplayCursor | null }>({ layout: null, cursor: null });
  const sparkRefs = useRef<Record<string, HTMLCanvasElement | null>>({});
  const live = data.status === 'running';
  const r = data.replay;
  const start = r.startT ?? 0;
  // A finished run opens on its final pools (Play replays it from the start); a running one follows its tail.
  const st = useRef({ playing: false, speed: 1, now: Math.max(r.endT, start), lastWall: 0, follow: live, invalidate: () => {} });
  const [playing, setPlaying] = useState(false);
  const [speed, setSpeed] = useState(1);
  const [follow, setFollow] = useState(live);
  const hasMoves = r.moveCount > 0;

  // Focus the view so its shortcuts work at once (Space, [ ], arrows), without a click first.
  useEffect(() => sectionRef.current?.focus({ preventScroll: true }), []);

  useEffect(() => {
    st.current.follow = live;
    setFollow(live);
    if (live) st.current.now = r.endT;
  }, [live, r]);

  useEffect(() => {
    const canvas = canvasRef.current!;
    const wrap = wrapRef.current!;
    const ctx = canvas.getContext('2d', { alpha: false })!;
    const cursor = new ReplayCursor(r);
    const pal = palette(theme);
    let layout: PoolsLayout | null = null;
    let bg: Uint32Array = new Uint32Array(0);
    let image: ImageData | null = null;
    let buf: PixelBuffer | null = null;
    let cells: number[] = [];
    let size = { w: 0, h: 0 };
    const wrapSize = () => ({ w: Math.max(200, Math.floor(wrap.clientWidth)), h: Math.max(160, Math.floor(wrap.clientHeight)) });
    const relayout = () => {
      const { w, h } = wrapSize();
      fitCanvas(canvas, w, h, 1);
      size = { w, h };
      cells = allGridCells(r);
      layout = poolsLayout(w, h, cells, 0, r.gridsByTier());
      bg = emptyGrid(layout, pal);
      image = ctx.createImageData(w, h);
      buf = { data: new Uint32Array(image.data.buffer), width: w, height: h };
    };
    // Its first report (on observe) gives the size the first draw laid out for: drawing again for
    // it doubled what a switch to this view cost.
    const ro = new ResizeObserver(() => {
      const now = wrapSize();
      if (layout && now.w === size.w && now.h === size.h) return;
      relayout();
      reg.invalidate();
    });
    const set = (k: string, text: string) => {
      const el = statsRef.current[k];
      if (el && el.textContent !== text) el.textContent = text;
    };
    let counters = data.timeline().counters;
    let seenVersion = data.version;
    let draws = 0;
    const draw = (wall: number): boolean => {
      const s = st.current;
      const dt = s.lastWall ? wall - s.lastWall : 0;
      s.lastWall = wall;
      const end = Math.max(r.endT, start);
      if (s.follow) s.now = end;
      else if (s.playing) {
        s.now += dt * 1e6 * s.speed;
        if (s.now >= end) {
          s.now = end;
          s.playing = false;
          setPlaying(false);
        }
      }
      cursor.seek(s.now);
      // Moving, a move stays in flight ANIM_MS of wall time, but never more than 2% of the run, so
      // a short run at high speed does not show every block in the air at once. Paused: nothing in
      // the air (a still frame with blocks frozen mid-flight showed a near-empty grid under
      // "1,080 / 1,084", and a finished run "276 in flight" forever).
      const moving = s.playing || s.follow;
      const anim = moving ? Math.min(ANIM_MS * 1e6 * (s.follow ? 1 : s.speed), Math.max(1, (end - start) / 50)) : 0;
      // The words first, then the grids: the words can change the height the grids get (the stats
      // panel sets the row's height), and grids laid out before them were drawn again at once for
      // their new size, doubling what opening this view cost.
      r.gridPools.forEach((p, g) => set(`pool-${p}`, poolCountText(p, cursor.counts[g] ?? 0, r.pools[p]?.capacity_blocks ?? 0)));
      set('time', formatNsClock(s.now - start, end - start));
      // The rate over the same run time the flights in the air stand for (paused: the last 250 ms),
      // so "Blocks in flight" and the rate beside it describe one span ("2,114 in flight" sat
      // beside "now 640 B/s" measured over another).
      const bw = anim > 0 ? anim : BW_WINDOW_NS;
      set('bw-window', formatNs(bw));
      set('h2d', `${formatBytes(r.bytesMovedBy('h2d', s.now))} · ${formatBandwidth(r.bandwidthAt('h2d', s.now, bw))}`);
      set('d2h', `${formatBytes(r.bytesMovedBy('d2h', s.now))} · ${formatBandwidth(r.bandwidthAt('d2h', s.now, bw))}`);
      for (const dir of DISK_DIRS) if (r.diskIo[dir].bytes.length > 0) set(dir, `${formatBytes(r.bytesMovedBy(dir, s.now))} · ${formatBandwidth(r.bandwidthAt(dir, s.now, bw))}`);
      set('caption', captionAt(r, cursor, s.now));
      const p = r.progressAt(s.now);
      set('round', p.round === null ? '–' : p.round === 0 ? '0 (context prefill)' : String(p.round));
      set('requests', p.running.length ? p.running.slice(0, 6).map((q) => `user ${q.user} R${q.round} ${q.phase}`).join(', ') + (p.running.length > 6 ? ` +${p.running.length - 6}` : '') : 'none');
      const scrub = scrubRef.current;
      if (scrub && document.activeElement !== scrub) {
        scrub.max = String(end - start);
        scrub.value = String(s.now - start);
      }
      if (data.version !== seenVersion) {
        seenVersion = data.version;
        counters = data.timeline().counters;
      }
      for (const c of counters) {
        const el = sparkRefs.current[c.key];
        if (!el || c.length === 0) continue;
        const sctx = el.getContext('2d');
        if (sctx) renderSparklineInto(sctx, c.t, c.v, c.length, start, end, s.now, c.max, el.width, el.height, theme.accent, theme.muted);
        const v = sampleAt(c.t, c.v, c.length, s.now);
        // Memory against the card's total; rates and % alone (their track max is only the largest sample).
        set(`spark-${c.key}`, v === null ? '–' : `${formatCounterValue(c.unit, v)}${c.unit === 'bytes' ? ` of ${formatCounterValue(c.unit, c.max)}` : ''}`);
      }
      if (!layout || wrap.clientWidth !== size.w || allGridCells(r).some((n, g) => n !== cells[g])) relayout();
      const stats = renderPoolsInto(buf!, layout!, bg, r, cursor, s.now, anim, pal);
      drawnRef.current = { layout, cursor };
      ctx.putImageData(image!, 0, 0);
      wrap.dataset.t = String(s.now);
      wrap.dataset.gpu = String(cursor.counts[POOL_GPU]);
      wrap.dataset.host = String(cursor.counts[POOL_HOST]);
      // Every pool's blocks, "gpu:12 host:40 disk:87" (the two above kept for what reads them).
      wrap.dataset.pools = r.gridPools.map((p, g) => `${p}:${cursor.counts[g] ?? 0}`).join(' ');
      wrap.dataset.applied = String(cursor.applied);
      // How many times the pools were drawn since the view opened (tests: a switch draws once).
      wrap.dataset.draws = String(++draws);
      // One line however many (the panel keeps a line for it before the first count: .live-stats dd).
      set('inflight', formatCount(stats.inFlight)); // "2,034", as every other count (was "2034")
      // Frames only while time moves (playing or following); a paused replay is one still frame,
      // moves caught in flight included, and costs nothing until the next change.
      return s.playing || s.follow;
    };
    const reg = registerDraw(draw);
    st.current.invalidate = reg.invalidate;
    ro.observe(wrap);
    return () => {
      ro.disconnect();
      reg.dispose();
    };
  }, [data, r, theme, start]);

  useEffect(() => {
    const scrub = scrubRef.current!;
    // A native listener (not React's onChange) so any input event moves the replay, scripted ones too.
    const onInput = () => {
      const s = st.current;
      s.now = start + Number(scrub.value);
      s.follow = false;
      setFollow(false);
      s.invalidate();
    };
    scrub.addEventListener('input', onInput);
    return () => scrub.removeEventListener('input', onInput);
  }, [start]);

  /** Where replaying from the start begins: the first request or move, setup skipped (its grids stay empty ~12 s at 1×). */
  const actionStart = () => Math.max(start, (firstActionT(r) ?? start) - SETUP_LEAD_NS);
  const togglePlay = () => {
    const s = st.current;
    if (!s.playing && (s.now >= Math.max(r.endT, start) || s.now < actionStart())) s.now = actionStart(); // play again from where the action starts
    s.playing = !s.playing;
    s.follow = false;
    s.lastWall = 0;
    setPlaying(s.playing);
    setFollow(false);
    s.invalidate();
  };
  const changeSpeed = (v: number) => {
    st.current.speed = v;
    setSpeed(v);
  };
  const seekBy = (frac: number) => {
    const s = st.current;
    const end = Math.max(r.endT, start);
    s.now = Math.min(end, Math.max(start, s.now + frac * (end - start)));
    s.follow = false;
    setFollow(false);
    s.invalidate();
  };
  const seekTo = (t: number | null) => {
    if (t === null) return;
    const s = st.current;
    s.now = t;
    s.playing = false;
    s.follow = false;
    setPlaying(false);
    setFollow(false);
    s.invalidate();
  };
  const stepMove = (dir: 1 | -1) => seekTo(dir > 0 ? nextMoveT(r, st.current.now) : prevMoveT(r, st.current.now));
  const toggleFollow = () => {
    const s = st.current;
    s.follow = !s.follow;
    setFollow(s.follow);
    s.invalidate();
  };

  const onKey = (e: React.KeyboardEvent) => {
    if ((e.target as HTMLElement).tagName === 'SELECT') return;
    const i = SPEEDS.indexOf(st.current.speed);
    if (e.key === ' ') togglePlay();
    else if (e.key === '[') changeSpeed(SPEEDS[Math.max(0, i - 1)]!);
    else if (e.key === ']') changeSpeed(SPEEDS[Math.min(SPEEDS.length - 1, i + 1)]!);
    else if (e.key === 'ArrowLeft' && (e.target as HTMLElement).tagName !== 'INPUT') seekBy(-0.01);
    else if (e.key === 'ArrowRight' && (e.target as HTMLElement).tagName !== 'INPUT') seekBy(0.01);
    else if (e.key === '.') stepMove(1);
    else if (e.key === ',') stepMove(-1);
    else if (e.key === 'Home') seekTo(st.current.now > actionStart() ? actionStart() : start);
    else if (e.key === 'End') seekBy(1);
    else if ((e.key === 'l' || e.key === 'L') && live) toggleFollow();
    else return;
    e.preventDefault();
  };

  const onHover = (e: React.MouseEvent<HTMLDivElement>) => {
    const tip = tipRef.current;
    const { layout, cursor } = drawnRef.current;
    if (!tip || !layout || !cursor) return;
    const box = e.currentTarget.getBoundingClientRect();
    const x = e.clientX - box.left;
    const y = e.clientY - box.top;
    const cell = cellAt(layout, x, y);
    tip.hidden = !cell;
    if (!cell) return;
    tip.textContent = describeCell(r, cursor, cell.pool, cell.slot);
    tip.style.left = `${Math.min(x + 12, box.width - 320)}px`;
    tip.style.top = `${y + 14}px`;
  };

  const counters = data.timeline().counters.filter((c) => c.length > 0 && !c.key.endsWith('_pool'));
  const grids = r.gridsByTier();
  const bb = r.pools.gpu?.block_bytes;
  return (
    <section className="live-view" onKeyDown={onKey} tabIndex={-1} ref={sectionRef} aria-label="Live pools: Space play/pause, [ ] speed, ← → step, , . previous / next move, Home/End">
      <RunHeader data={data} view="live" />
      <div className="transport" role="toolbar" aria-label="Replay">
        <button type="button" onClick={togglePlay} title="Play / pause (Space)" data-action="play" aria-pressed={playing}>
          {playing ? 'Pause' : 'Play'}
        </button>
        <label title="Replay speed ([ slower, ] faster)">
          Speed{' '}
          <select value={speed} onChange={(e) => changeSpeed(Number(e.target.value))} data-action="speed">
            {SPEEDS.map((s) => (
              <option key={s} value={s}>
                {s}×
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={() => stepMove(-1)} title="Previous move (,)" data-action="prev-move" disabled={!hasMoves}>
          ◀ move
        </button>
        <button type="button" onClick={() => stepMove(1)} title="Next move (.)" data-action="next-move" disabled={!hasMoves}>
          move ▶
        </button>
        <input ref={scrubRef} type="range" className="scrubber" min={0} step="any" defaultValue={0} aria-label="Replay time (← →, Home, End)" title="Replay time (← → step, Home / End)" data-action="scrub" />
        <span className="time" ref={(el) => void (statsRef.current.time = el)} />
        {live && (
          <button type="button" onClick={toggleFollow} aria-pressed={follow} title="Follow the live tail (L)" data-action="follow">
            {follow ? 'Following live' : 'Follow live'}
          </button>
        )}
        <ExportButton runId={data.id} />
      </div>
      {failure && (
        <p role="alert" className="error" data-testid="run-error">
          The run failed: {failure}
        </p>
      )}
      {!hasMoves && <p className="empty">This run has no block moves{data.status === 'running' ? ' yet: they appear as the run goes' : ''}.</p>}
      <div className="live-body">
        {/* The titles share the canvas's column: across the whole row, the host pool's title sat
            over the stats panel instead of over its grid. */}
        <div className="pools-column">
          {/* Two pools: one title at each end, over its grid; more: one column per grid, as drawn. */}
          <div className="pool-titles" style={grids.length > 2 ? { display: 'grid', gridTemplateColumns: `repeat(${grids.length}, 1fr)` } : undefined}>
            {grids.map((g) => {
              const p = r.gridPools[g]!;
              return (
                <span key={p} data-title={p}>
                  <strong>{poolTitle(p)}</strong> <span ref={(el) => void (statsRef.current[`pool-${p}`] = el)} data-stat={p} />
                </span>
              );
            })}
          </div>
          {/* What is happening at the replay time, in words. */}
          <p className="pools-caption" data-testid="pools-caption" aria-live="polite" ref={(el) => void (statsRef.current.caption = el)} />
          <div className="pools-canvas" ref={wrapRef} data-testid="pools" onMouseMove={onHover} onMouseLeave={() => tipRef.current && (tipRef.current.hidden = true)}>
            <canvas ref={canvasRef} aria-label="GPU pool and host pool, one cell per block, coloured by user; hover a cell for its user, round and last move" />
            <div className="tooltip" ref={tipRef} hidden role="status" data-testid="pools-tip" />
          </div>
        </div>
        <aside className="live-stats">
          <dl>
            <dt>Round</dt>
            <dd ref={(el) => void (statsRef.current.round = el)} />
            <dt>Requests running</dt>
            <dd ref={(el) => void (statsRef.current.requests = el)} />
            <dt>
              H2D (onboard) moved · rate over the last <span ref={(el) => void (statsRef.current['bw-window'] = el)} data-stat="bw-window" />
            </dt>
            <dd ref={(el) => void (statsRef.current.h2d = el)} data-stat="h2d" />
            <dt>D2H (offload) moved · rate over the same span</dt>
            <dd ref={(el) => void (statsRef.current.d2h = el)} data-stat="d2h" />
            {/* A disk tier's own I/O, timed by the engine: no memory copy, so not in the two above. */}
            {DISK_DIRS.filter((dir) => r.diskIo[dir].bytes.length > 0).map((dir) => (
              <Fragment key={dir}>
                <dt>{DISK_DIR_LABEL[dir]} · rate over the same span</dt>
                <dd ref={(el) => void (statsRef.current[dir] = el)} data-stat={dir} />
              </Fragment>
            ))}
            {/* Not KV traffic, so not in the two figures above: named apart. */}
            {r.startupCopies.h2d.count + r.startupCopies.d2h.count > 0 && (
              <>
                <dt>Not counted: {STARTUP_COPIES_LABEL}</dt>
                <dd data-stat="startup-copies">
                  H2D {formatBytes(r.startupCopies.h2d.bytes)} · D2H {formatBytes(r.startupCopies.d2h.bytes)}
                </dd>
              </>
            )}
            <dt title="Offloads and onboards drawn in the air over that span (none while paused: the pools are drawn as they stand)">Blocks in flight</dt>
            <dd ref={(el) => void (statsRef.current.inflight = el)} data-stat="inflight" />
            {bb ? (
              <>
                <dt>Block</dt>
                <dd>
                  {formatBytes(bb)} · {r.pools.gpu?.block_tokens} tokens
                </dd>
              </>
            ) : null}
          </dl>
          {/* A key for every mark the grids draw: users' colours, free slots, and how each move looks. */}
          <div className="legend" data-testid="pools-legend">
            {data.loaded.analysis.users.map((u) => (
              <span key={u} className="legend-item">
                <i style={{ background: theme.users[u % theme.users.length] }} /> user {u}
              </span>
            ))}
            {/* The grids' other colour: a slot with no block (it had no key, so half a host pool of
                grey read as unexplained). */}
            <span className="legend-item" data-legend="free">
              <i style={{ background: theme.grid, outline: `1px solid ${theme.muted}` }} /> free slot
            </span>
            <span className="legend-item" data-legend="moving" title={grids.length > 2 ? 'A block moving from one pool to another (GPU ↔ host, host ↔ disk) in the air, while playing' : 'An offload (GPU → host) or onboard (host → GPU) in the air, while playing'}>
              <i style={{ background: theme.users[0], transform: 'scale(0.6) translateY(-4px)' }} /> block moving between the pools
            </span>
            <span className="legend-item" data-legend="landing" title="The cell a moving block lands in, dim until it arrives">
              <i style={{ background: `color-mix(in srgb, ${theme.users[0]} ${Math.round(LANDING_TINT * 100)}%, ${theme.grid})` }} /> its cell, dim until it lands
            </span>
            <span className="legend-item" data-legend="stored" title="A block computed and stored in the GPU pool">
              <i style={{ background: `linear-gradient(90deg, ${theme.grid}, ${theme.users[0]})` }} /> stored (fades in)
            </span>
            <span className="legend-item" data-legend="evicted" title="A block dropped from a pool (recomputed if needed again)">
              <i style={{ background: `linear-gradient(90deg, ${theme.users[0]}, ${theme.grid})` }} /> evicted (fades out)
            </span>
            <span className="legend-item" data-legend="hit" title="A block reused where it is (a prefix hit)">
              <i style={{ background: '#ffffff', outline: `2px solid ${theme.users[0]}` }} /> reused (flashes)
            </span>
          </div>
          {counters.length === 0 ? (
            <p className="muted">No nvidia-smi samples in this run.</p>
          ) : (
            counters.map((c) => (
              <div key={c.key} className="spark">
                <span>
                  {c.label} <span className="spark-value" ref={(el) => void (statsRef.current[`spark-${c.key}`] = el)} data-spark-value={c.key} />
                </span>
                <canvas ref={(el) => void (sparkRefs.current[c.key] = el)} width={220} height={34} data-counter={c.key} />
              </div>
            ))
          )}
        </aside>
      </div>
    </section>
  );
}

/** Title row shared by the run views: name, host, status, and links between the views. */
export function RunHeader({ data, view }: { data: RunData; view: 'live' | 'timeline' | 'summary' }) {
  const l = data.loaded.listing;
  const a = data.loaded.analysis;
  // What tells runs apart first (model, users), so a cut line keeps it; the host last.
  const meta = [l.model, a.users.length ? `${a.users.length} users` : null, l.gpu, l.engine, l.host].filter(Boolean).join(' · ');
  return (
    <header className="run-header">
      <h1>{l.name}</h1>
      <span className={`status status-${data.status}`}>{data.status}</span>
      {/* The meta line yields its width (ellipsis, full text on hover): at 1100 px it pushed the
          Pools/Timeline/Summary tabs onto a row of their own. */}
      <span className="muted run-meta" title={meta}>
        {meta}
      </span>
      {data.loaded.badLineTotal > 0 && (
        <span className="warn" title={data.loaded.badLines.slice(0, 5).map((b) => `line ${b.line}: ${b.message}`).join('\n')}>
          {data.loaded.badLineTotal} bad line{data.loaded.badLineTotal === 1 ? '' : 's'} skipped
        </span>
      )}
      <nav className="run-tabs" aria-label="Run views">
        {(['live', 'timeline', 'summary'] as const).map((v) => (
          <a key={v} href={routeHref({ view: v, runId: data.id })} className={v === view ? 'active' : ''} aria-current={v === view ? 'page' : undefined}>
            {v === 'live' ? 'Pools' : v === 'timeline' ? 'Timeline' : 'Summary'}
          </a>
        ))}
      </nav>
    </header>
  );
}
