/**
 * The Live view's pools: one grid per pool (the GPU pool, the host pool, a disk tier…), one cell per block,
 * painted straight into a 32-bit pixel buffer (then one putImageData) — 20,000 blocks at 60 fps in
 * software rendering leave no budget for a fillRect per block. Pure: no DOM, tested on a plain
 * Uint32Array.
 *
 * Motion: a move whose time lies in (now − anim, now] is drawn in flight — a block moving between
 * two pools (offload, onboard, a spill to disk or a promotion from it) travels from the source cell
 * to the destination cell along a curve above the grids (the destination cell is drawn dim until the block lands, so the grid always shows as many
 * cells as the pool holds), evictions fade out where the block was, hits flash, stores fade in.
 * A paused view passes anim 0: the pools exactly as they stand, nothing in the air.
 */
import { OP_CODE, POOL_GPU, POOL_HOST, type ReplayCursor, type ReplayModel } from '../../shared/replay';

export interface PixelBuffer {
  data: Uint32Array;
  width: number;
  height: number;
}

export interface PoolPanel {
  x: number;
  y: number;
  w: number;
  h: number;
  cols: number;
  /** Cell pitch and filled size in px (a 1 px gutter when the pitch allows). */
  pitch: number;
  size: number;
  /** Cells drawn; cells past this are beyond the panel and counted as hidden. */
  shown: number;
  cells: number;
}

export interface PoolsLayout {
  width: number;
  height: number;
  /** One panel per grid of the replay model (its `gridPools` order), placed left to right in the layout's order. */
  panels: PoolPanel[];
}

/** Colours as 0xAABBGGRR (little-endian RGBA bytes in the buffer). */
export interface PoolsPalette {
  background: number;
  emptyCell: number;
  users: number[];
  unknownUser: number;
  flash: number;
}

export function rgba(r: number, g: number, b: number, a = 255): number {
  return ((a << 24) | (b << 16) | (g << 8) | r) >>> 0;
}

/** "#rrggbb" → 0xAABBGGRR. */
export function hexToPixel(hex: string): number {
  const h = hex.replace('#', '');
  const n = Number.parseInt(h.length === 3 ? h.replace(/./g, (c) => c + c) : h.slice(0, 6), 16);
  return rgba((n >> 16) & 255, (n >> 8) & 255, n & 255);
}

function mix(a: number, b: number, k: number): number {
  const t = Math.max(0, Math.min(1, k));
  const ch = (s: number) => {
    const x = (a >>> s) & 255;
    const y = (b >>> s) & 255;
    return Math.round(x + (y - x) * t);
  };
  return rgba(ch(0), ch(8), ch(16));
}

/** How strong a landing cell's colour is while its block is still in the air (0 = empty, 1 = full). */
export const LANDING_TINT = 0.35;

/** Cells never grow past this pitch: a small pool still reads as a grid of blocks, not tiles. */
export const MAX_PITCH = 22;

function panelFor(x: number, y: number, w: number, h: number, cells: number): PoolPanel {
  const n = Math.max(1, cells);
  // Largest pitch (up to MAX_PITCH) whose grid holds every cell inside the panel.
  let pitch = Math.max(1, Math.min(MAX_PITCH, Math.floor(Math.sqrt((w * h) / n))));
  while (pitch > 1 && Math.floor(w / pitch) * Math.floor(h / pitch) < n) pitch--;
  let cols = Math.max(1, Math.floor(w / pitch));
  const rowsFit = Math.max(1, Math.floor(h / pitch));
  const shown = Math.min(cells, cols * rowsFit);
  // A pool smaller than the panel is drawn as a block of cells centred in it, not a long strip.
  if (shown < cols * rowsFit) cols = Math.max(1, Math.min(cols, Math.ceil(Math.sqrt(shown * (w / Math.max(1, h))))));
  const rows = Math.max(1, Math.ceil(shown / cols));
  const size = pitch >= 4 ? pitch - 1 : pitch;
  const ox = x + Math.floor((w - cols * pitch) / 2);
  const oy = y + Math.floor((h - rows * pitch) / 2);
  return { x: ox, y: oy, w: cols * pitch, h: rows * pitch, cols, pitch, size, shown, cells };
}

/**
 * One panel per grid side by side (GPU left, then the host pool, then tiers further from compute:
 * `order` lists the grids left to right, by default as given) with a gap between them for the
 * paths. `cells` per grid is what it shows: the capacity, or only the cells the run used when the
 * capacity is far beyond what fits (a 55 GB host pool of small blocks).
 */
export function poolsLayout(width: number, height: number, cells: readonly number[], headerPx = 0, order: readonly number[] = cells.map((_, g) => g)): PoolsLayout {
  const n = Math.max(1, cells.length);
  const gap = Math.max(24, Math.round(width * 0.08));
  const pw = Math.max(1, Math.floor((width - gap * (n - 1)) / n));
  const ph = Math.max(1, height - headerPx);
  const panels: PoolPanel[] = [];
  cells.forEach((c, g) => {
    const at = Math.max(0, order.indexOf(g));
    panels[g] = panelFor(at * (pw + gap), headerPx, pw, ph, c);
  });
  return { width, height, panels };
}

/** Top-left pixel of cell s of a panel (cells fill rows left to right). */
export function cellOrigin(p: PoolPanel, s: number): [number, number] {
  return [p.x + (s % p.cols) * p.pitch, p.y + Math.floor(s / p.cols) * p.pitch];
}

function fillBox(buf: PixelBuffer, x: number, y: number, size: number, color: number): void {
  const { data, width, height } = buf;
  const x0 = Math.max(0, Math.round(x));
  const y0 = Math.max(0, Math.round(y));
  const x1 = Math.min(width, Math.round(x) + size);
  const y1 = Math.min(height, Math.round(y) + size);
  if (x1 <= x0) return;
  for (let yy = y0; yy < y1; yy++) data.fill(color, yy * width + x0, yy * width + x1);
}

/** The grid with every cell empty: computed once per layout, copied at the start of each frame. */
export function emptyGrid(layout: PoolsLayout, palette: PoolsPalette): Uint32Array {
  const buf: PixelBuffer = { data: new Uint32Array(layout.width * layout.height).fill(palette.background), width: layout.width, height: layout.height };
  for (const p of layout.panels) for (let s = 0; s < p.shown; s++) {
    const [x, y] = cellOrigin(p, s);
    fillBox(buf, x, y, p.size, palette.emptyCell);
  }
  return buf.data;
}

export interface PoolsFrameStats {
  /** Blocks drawn in the air between two pools (evictions, hits and stores animate in place). */
  inFlight: number;
  /** Cells painted per grid. */
  drawn: number[];
}

/** Whether move `op` flies from one pool to another (an offload, an onboard, a move to or from another tier). */
const flies = (o: number): boolean => o === OP_CODE.offload || o === OP_CODE.onboard || o === OP_CODE.move;

const MAX_IN_FLIGHT = 6000;

/**
 * Paints one frame at run time `now`. The cursor must already stand at `now` (cursor.seek(now)).
 * `animNs` is how much run time a move stays visible in flight (the view scales it with speed so a
 * move always takes the same wall time).
 */
export function renderPoolsInto(
  buf: PixelBuffer,
  layout: PoolsLayout,
  background: Uint32Array,
  model: ReplayModel,
  cursor: ReplayCursor,
  now: number,
  animNs: number,
  palette: PoolsPalette,
): PoolsFrameStats {
  buf.data.set(background);
  const users = palette.users;
  const colorOf = (b: number) => {
    const u = model.blockUser.data[b]!;
    return u >= 0 ? users[u % users.length]! : palette.unknownUser;
  };
  const drawn: number[] = layout.panels.map(() => 0);
  for (let pool = 0; pool < layout.panels.length; pool++) {
    const p = layout.panels[pool]!;
    const cells = cursor.cells[pool];
    if (!cells) continue;
    const n = Math.min(p.shown, cells.length);
    for (let s = 0; s < n; s++) {
      const b = cells[s]!;
      if (b < 0) continue;
      const [x, y] = cellOrigin(p, s);
      fillBox(buf, x, y, p.size, colorOf(b));
      drawn[pool]++;
    }
  }
  const end = cursor.applied;
  let start = animNs > 0 ? model.movesUpTo(now - animNs) : end;
  if (end - start > MAX_IN_FLIGHT) start = end - MAX_IN_FLIGHT;
  const t = model.t.data;
  const op = model.op.data;
  const sp = model.srcPool.data;
  const ss = model.srcSlot.data;
  const dp = model.dstPool.data;
  const ds = model.dstSlot.data;
  const blk = model.block.data;
  // Pass 1: what stays in a cell (fades, flashes), and destination cells dim until landing.
  for (let i = start; i < end; i++) {
    const k = Math.max(0, Math.min(1, (now - t[i]!) / animNs));
    const o = op[i]!;
    if (flies(o)) {
      const dst = layout.panels[dp[i]!];
      if (!dst) continue;
      if (k < 1 && ds[i]! < dst.shown && cursor.cells[dp[i]!]![ds[i]!] === blk[i]) {
        const [dx, dy] = cellOrigin(dst, ds[i]!);
        fillBox(buf, dx, dy, dst.size, mix(palette.emptyCell, colorOf(blk[i]!), LANDING_TINT));
      }
    } else if (o === OP_CODE.evict) {
      if (sp[i]! < 0) continue;
      const p = layout.panels[sp[i]!]!;
      if (ss[i]! >= p.shown || cursor.cells[sp[i]!]![ss[i]!]! >= 0) continue;
      const [x, y] = cellOrigin(p, ss[i]!);
      fillBox(buf, x, y, p.size, mix(colorOf(blk[i]!), palette.emptyCell, k));
    } else if (o === OP_CODE.hit) {
      if (sp[i]! < 0) continue;
      const p = layout.panels[sp[i]!]!;
      if (ss[i]! >= p.shown) continue;
      const [x, y] = cellOrigin(p, ss[i]!);
      fillBox(buf, x, y, p.size, mix(palette.flash, colorOf(blk[i]!), k));
    } else if (o === OP_CODE.store) {
      const p = layout.panels[dp[i]!];
      if (!p || ds[i]! < 0 || ds[i]! >= p.shown || cursor.cells[dp[i]!]![ds[i]!] !== blk[i]) continue;
      const [x, y] = cellOrigin(p, ds[i]!);
      fillBox(buf, x, y, p.size, mix(palette.emptyCell, colorOf(blk[i]!), 0.3 + 0.7 * k));
    }
  }
  // Pass 2: blocks in flight, on top of everything.
  let inFlight = 0;
  for (let i = start; i < end; i++) {
    const o = op[i]!;
    if (!flies(o)) continue;
    const k = Math.max(0, Math.min(1, (now - t[i]!) / animNs));
    if (k >= 1) continue;
    inFlight++;
    const dst = layout.panels[dp[i]!];
    if (!dst || ds[i]! >= dst.shown) continue;
    const [dx, dy] = cellOrigin(dst, ds[i]!);
    let sx: number;
    let sy: number;
    let size = dst.size;
    if (sp[i]! >= 0 && ss[i]! < layout.panels[sp[i]!]!.shown) {
      const src = layout.panels[sp[i]!]!;
      [sx, sy] = cellOrigin(src, ss[i]!);
      size = Math.min(size, src.size);
    } else {
      // Its cell is not drawn (a pool shown only in part), or it came from nowhere (a rule break):
      // from the middle of its pool, or of the pool an offload or onboard leaves.
      const src = layout.panels[sp[i]! >= 0 ? sp[i]! : o === OP_CODE.offload ? POOL_GPU : o === OP_CODE.onboard ? POOL_HOST : -1];
      if (!src) continue;
      sx = src.x + src.w / 2;
      sy = src.y + src.h / 2;
    }
    const e = k * k * (3 - 2 * k); // smoothstep: leave and land gently
    // Quadratic curve bowing up above the grids (over any grid between the two).
    const cx = (sx + dx) / 2;
    const cy = Math.min(sy, dy) - Math.abs(dx - sx) * 0.25;
    const x = (1 - e) * (1 - e) * sx + 2 * (1 - e) * e * cx + e * e * dx;
    const y = (1 - e) * (1 - e) * sy + 2 * (1 - e) * e * cy + e * e * dy;
    fillBox(buf, x, y, Math.max(2, size), colorOf(blk[i]!));
  }
  return { inFlight, drawn };
}
