/**
 * What the Pools view says about its picture, checked against the recorded log itself: the
 * caption names the last blocks line at the replay time (and the admission before it), a hovered
 * cell's last move is that block's last line, the replay starts where the action starts, and next /
 * previous move land on the log's blocks lines in order.
 */
import { describe, expect, it } from 'vitest';
import type { BlocksEvent, KvEvent } from '../../src/shared/protocol';
import { compileReplay, POOL_GPU, POOL_HOST, ReplayCursor } from '../../src/shared/replay';
import { captionAt, cellAt, describeCell, describeLine, firstActionT, moveLine, nextMoveT, prevMoveT } from '../../src/renderer/viz/pools-explain';
import { cellOrigin, emptyGrid, hexToPixel, poolsLayout, renderPoolsInto, rgba, type PixelBuffer } from '../../src/renderer/viz/pools-render';
import { USER_COLORS } from '../../src/renderer/viz/ctx2d';
import { realRuns } from '../helpers/real-runs';
import { formatCount } from '../../src/shared/format';

const runs = realRuns({ maxBytes: 5e6 }).filter((r) => r.events.some((e) => e.type === 'blocks' && e.op === 'onboard'));
const verbs = { store: 'stored in the GPU pool', offload: 'offloaded to the host pool', onboard: 'onboarded to the GPU pool', hit: 'reused in the GPU pool (prefix hit)' } as const;

describe('Pools explained', () => {
  it('has real runs with onboards to check against', () => expect(runs.length).toBeGreaterThan(1));
  for (const run of runs) {
    const events = run.events;
    const m = compileReplay(events);
    const lines = events.filter((e): e is BlocksEvent => e.type === 'blocks');
    it(`the caption names the log's last blocks line at the replay time (${run.name})`, () => {
      const c = new ReplayCursor(m);
      for (const line of lines.filter((_, i) => i % Math.max(1, Math.floor(lines.length / 30)) === 0)) {
        c.seek(line.t);
        // The last line at or before t (lines at the same t: the last of them).
        const last = lines.filter((l) => l.t <= line.t).at(-1)!;
        const caption = captionAt(m, c, line.t);
        if (last.op === 'evict' || last.op === 'move') continue; // v1 logs: no move lines
        expect(caption, `seq ${last.seq}`).toMatch(new RegExp(`(^|→ )user ${last.user} R${last.round}: ${formatCount(last.ids.length)} blocks? ${verbs[last.op].replace(/[()]/g, '\\$&')}$`));
        const admitted = caption.match(/^user (\d+) R(\d+) admitted → /);
        if (admitted) {
          // An admission the log has, at most 2 s before the line, and the latest one by then.
          const sched = events.filter((e) => e.type === 'req' && e.phase === 'scheduled' && e.t <= line.t) as Array<KvEvent & { user: number; round: number; t: number }>;
          const latest = sched.reduce((a, b) => (b.t > a.t ? b : a));
          expect([latest.user, latest.round]).toEqual([Number(admitted[1]), Number(admitted[2])]);
          expect(last.t - latest.t).toBeLessThanOrEqual(2e9);
        }
      }
    });

    it(`a hovered cell tells whose block it is and its last move, as the log says (${run.name})`, () => {
      const c = new ReplayCursor(m);
      const t = lines[Math.floor(lines.length * 0.7)]!.t;
      c.seek(t);
      let checked = 0;
      for (const pool of [POOL_GPU, POOL_HOST]) {
        for (let slot = 0; slot < c.cells[pool]!.length && checked < 40; slot += 37) {
          const b = c.cells[pool]![slot]!;
          if (b < 0) continue;
          const id = m.blockIds[b]!;
          const last = lines.filter((l) => l.t <= t && l.ids.includes(id as never)).at(-1)!;
          const text = describeCell(m, c, pool, slot);
          expect(text).toContain(`${pool === POOL_GPU ? 'GPU' : 'host'} pool slot ${formatCount(slot)}: user ${m.blockUser.data[b]}'s block · last move: R${last.round} `);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(0);
    });

    it(`replaying starts where the action starts, and next / previous move step through the log's lines (${run.name})`, () => {
      const firstQueued = Math.min(...events.filter((e) => e.type === 'req' && e.phase === 'queued').map((e) => e.t));
      expect(firstActionT(m)).toBe(Math.min(firstQueued, lines[0]!.t));
      const times = [...new Set(lines.map((l) => l.t))].sort((a, b) => a - b);
      let now = (m.startT ?? 0) - 1;
      const seen: number[] = [];
      for (let k = 0; k < Math.min(times.length, 200); k++) {
        const next = nextMoveT(m, now)!;
        seen.push(next);
        now = next;
      }
      expect(seen).toEqual(times.slice(0, seen.length));
      // Back again from there.
      const back: number[] = [];
      for (let k = 0; k < 5; k++) {
        const prev = prevMoveT(m, now)!;
        back.push(prev);
        now = prev;
      }
      expect(back).toEqual(times.slice(seen.length - 6, seen.length - 1).reverse());
      expect(prevMoveT(m, times[0]!)).toBeNull();
      expect(nextMoveT(m, times.at(-1)!)).toBeNull();
    });

    it(`while blocks fly, the cells they land in are drawn dim, not empty (${run.name})`, () => {
      const palette = { background: rgba(10, 10, 10), emptyCell: rgba(40, 40, 40), users: USER_COLORS.map(hexToPixel), unknownUser: rgba(128, 128, 128), flash: rgba(255, 255, 255) };
      const onboard = lines.filter((l) => l.op === 'onboard').reduce((a, b) => (b.ids.length > a.ids.length ? b : a));
      const c = new ReplayCursor(m);
      c.seek(onboard.t);
      const layout = poolsLayout(1200, 700, [m.slotCount(POOL_GPU), Math.max(1, m.usedCells[POOL_HOST])]);
      const buf: PixelBuffer = { data: new Uint32Array(1200 * 700), width: 1200, height: 700 };
      const stats = renderPoolsInto(buf, layout, emptyGrid(layout, palette), m, c, onboard.t, 1e9, palette);
      expect(stats.inFlight).toBeGreaterThanOrEqual(onboard.ids.length);
      // Every cell a block is flying to is drawn (dim), not left empty: an empty landing cell made a
      // near-empty grid under "1,080 / 1,084 blocks".
      let landing = 0;
      for (let i = m.movesUpTo(onboard.t - 1e9); i < c.applied; i++) {
        const op = m.op.data[i]!;
        if ((op !== 1 && op !== 2) || c.cells[m.dstPool.data[i]!]![m.dstSlot.data[i]!] !== m.block.data[i]) continue;
        const p = layout.panels[m.dstPool.data[i]!]!;
        if (m.dstSlot.data[i]! >= p.shown) continue;
        const [x, y] = cellOrigin(p, m.dstSlot.data[i]!);
        expect(buf.data[y * buf.width + x], `move ${i}`).not.toBe(palette.emptyCell);
        landing++;
      }
      expect(landing).toBeGreaterThan(0);
      // Hover finds the cells where they are drawn.
      const [x, y] = cellOrigin(layout.panels[POOL_GPU]!, 3);
      expect(cellAt(layout, x + 1, y + 1)).toEqual({ pool: POOL_GPU, slot: 3 });
    });
  }

  it('a line in words', () => {
    const m = compileReplay(runs[0]!.events);
    expect(describeLine({ ...moveLine(m, 0), op: 'evict', from: 'host', user: 2, round: 3, blocks: 1 })).toBe('user 2 R3: 1 block evicted from the host pool');
  });
});
