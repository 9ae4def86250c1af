/**
 * The pools renderer paints the cursor's state: a cell is coloured exactly where the replay holds a
 * block (read back from the pixel buffer), blocks in flight are drawn between the grids, and an
 * evicted block fades rather than vanishing.
 */
import { describe, expect, it } from 'vitest';
import { compileReplay, OP_CODE, POOL_GPU, ReplayCursor } from '../../src/shared/replay';
import { cellOrigin, emptyGrid, hexToPixel, poolsLayout, renderPoolsInto, rgba, type PixelBuffer, type PoolsPalette } from '../../src/renderer/viz/pools-render';
import { USER_COLORS } from '../../src/renderer/viz/ctx2d';
import { syntheticRun } from '../helpers/synthetic-run';
import { realRuns } from '../helpers/real-runs';
import type { KvEvent } from '../../src/shared/protocol';

const palette: PoolsPalette = { background: rgba(10, 10, 10), emptyCell: rgba(40, 40, 40), users: USER_COLORS.map(hexToPixel), unknownUser: rgba(128, 128, 128), flash: rgba(255, 255, 255) };

function paint(events: KvEvent[], t: number, anim = 0) {
  const m = compileReplay(events);
  const c = new ReplayCursor(m);
  c.seek(t);
  // Every grid: the GPU pool's whole, the others as much as the run used (as the view does for a huge pool).
  const layout = poolsLayout(400, 200, m.gridPools.map((_, g) => (g === POOL_GPU ? m.slotCount(g) : Math.max(1, m.usedCells[g]!))), 0, m.gridsByTier());
  const buf: PixelBuffer = { data: new Uint32Array(400 * 200), width: 400, height: 200 };
  const stats = renderPoolsInto(buf, layout, emptyGrid(layout, palette), m, c, t, anim, palette);
  return { m, c, layout, buf, stats };
}

function paintedCells(buf: PixelBuffer, layout: ReturnType<typeof poolsLayout>, pool: number): number {
  const p = layout.panels[pool]!;
  let n = 0;
  for (let s = 0; s < p.shown; s++) {
    const [x, y] = cellOrigin(p, s);
    const px = buf.data[y * buf.width + x]!;
    if (px !== palette.emptyCell && px !== palette.background) n++;
  }
  return n;
}

describe('renderPoolsInto', () => {
  const runs: Array<{ name: string; events: KvEvent[] }> = [{ name: 'synthetic', events: syntheticRun({ users: 3, rounds: 3, gpuBlocks: 9 }) }, ...realRuns({ maxBytes: 5e6 })];
  for (const run of runs) {
    it(`colours exactly the cells the replay fills, at several times (${run.name})`, () => {
      const times = run.events.filter((e) => e.type === 'blocks').map((e) => e.t);
      for (const t of [times[0]!, times[Math.floor(times.length / 2)]!, times[times.length - 1]!]) {
        const { c, layout, buf } = paint(run.events, t);
        for (let pool = 0; pool < c.cells.length; pool++) {
          const shown = layout.panels[pool]!.shown;
          let inShown = 0;
          c.cells[pool]!.forEach((b, s) => b >= 0 && s < shown && inShown++);
          expect(paintedCells(buf, layout, pool)).toBe(inShown);
        }
      }
    });
  }

  it('draws a block in flight between the grids while an offload animates, and not once it landed', () => {
    const events = syntheticRun({ users: 2, rounds: 2, gpuBlocks: 6 });
    const off = events.find((e) => e.type === 'blocks' && e.op === 'offload')!;
    // Pixels drawn outside both grids: only a block in flight can put them there.
    const gap = (buf: PixelBuffer, layout: ReturnType<typeof poolsLayout>) => {
      const inside = (x: number, y: number) => layout.panels.some((p) => x >= p.x && x < p.x + p.w && y >= p.y && y < p.y + p.h);
      let n = 0;
      for (let y = 0; y < buf.height; y++) for (let x = 0; x < buf.width; x++) if (!inside(x, y) && buf.data[y * buf.width + x] !== palette.background) n++;
      return n;
    };
    const mid = paint(events, off.t + 500, 1000);
    expect(mid.stats.inFlight).toBeGreaterThan(0);
    expect(gap(mid.buf, mid.layout)).toBeGreaterThan(0);
    const after = paint(events, off.t + 5000, 1000);
    expect(gap(after.buf, after.layout)).toBe(0);
  });

  it('flies a block between the host grid and the disk grid while a spill animates (a v2 run)', () => {
    const run = realRuns().find((r) => r.events.some((e) => e.type === 'pool' && e.pool === 'disk'));
    expect(run, 'a recorded run with a disk tier (test/fixtures/runs/cpu-tiny-three-tiers)').toBeDefined();
    const spill = run!.events.find((e) => e.type === 'blocks' && e.op === 'move' && e.from === 'host' && e.to === 'disk')!;
    const { stats, layout, buf, m } = paint(run!.events, spill.t + 500, 1000);
    expect(layout.panels).toHaveLength(3);
    expect(m.gridPools[2]).toBe('disk');
    expect(stats.inFlight).toBeGreaterThan(0);
    // Pixels outside every grid, right of the host grid's left edge: only a block in the air between host and disk puts them there.
    const inside = (x: number, y: number) => layout.panels.some((p) => x >= p.x && x < p.x + p.w && y >= p.y && y < p.y + p.h);
    let n = 0;
    for (let y = 0; y < buf.height; y++) for (let x = layout.panels[1]!.x; x < buf.width; x++) if (!inside(x, y) && buf.data[y * buf.width + x] !== palette.background) n++;
    expect(n).toBeGreaterThan(0);
  });

  it('fades an evicted block out over the animation instead of dropping it at once', () => {
    const events = syntheticRun({ users: 2, rounds: 3, gpuBlocks: 6, hostBlocks: 2 });
    const ev = events.find((e) => e.type === 'blocks' && e.op === 'evict')!;
    const m = compileReplay(events);
    const i = Array.from(m.op.data.subarray(0, m.moveCount)).findIndex((o, k) => o === OP_CODE.evict && m.t.data[k] === ev.t);
    expect(i).toBeGreaterThanOrEqual(0);
    const pool = m.srcPool.data[i]!;
    const slot = m.srcSlot.data[i]!;
    const at = (t: number) => {
      const { buf, layout } = paint(events, t, 1000);
      const [x, y] = cellOrigin(layout.panels[pool]!, slot);
      return buf.data[y * buf.width + x]!;
    };
    const fading = at(ev.t + 300);
    expect(fading).not.toBe(palette.emptyCell);
    const gone = at(ev.t + 2000);
    // Once faded, the cell is empty unless another block took it since.
    const later = paint(events, ev.t + 2000, 1000);
    if (later.c.cells[pool]![slot]! < 0) expect(gone).toBe(palette.emptyCell);
  });
});
