/**
 * The replay model against the foundation's BlockLedger (an independent replay of the same rules):
 * at every probed time t the cursor's pools hold exactly the blocks the ledger holds after applying
 * the log's blocks lines up to t. Runs on every real run found (bundled samples, committed
 * fixtures) and on the synthetic run, never on numbers that hold for one file only.
 */
import { describe, expect, it } from 'vitest';
import { BlockLedger } from '../../src/shared/ledger';
import type { KvEvent } from '../../src/shared/protocol';
import { compileReplay, POOL_GPU, POOL_HOST, ReplayCursor } from '../../src/shared/replay';
import { syntheticRun } from '../helpers/synthetic-run';
import { realRuns } from '../helpers/real-runs';

function ledgerAt(events: readonly KvEvent[], t: number): BlockLedger {
  const l = new BlockLedger();
  for (const e of events) if (e.t <= t || e.type !== 'blocks') l.apply(e);
  return l;
}

function cellsAsIds(c: ReplayCursor, pool: number): Set<string | number> {
  const out = new Set<string | number>();
  for (const b of c.cells[pool]!) if (b >= 0) out.add(c.model.blockIds[b]!);
  return out;
}

function checkRun(events: KvEvent[]): void {
  const m = compileReplay(events);
  const times = [...new Set(events.filter((e) => e.type === 'blocks').map((e) => e.t))].sort((a, b) => a - b);
  expect(times.length).toBeGreaterThan(0);
  const probes = [-1, ...times.filter((_, i) => i % Math.max(1, Math.floor(times.length / 25)) === 0), times[times.length - 1]!];
  const cursor = new ReplayCursor(m);
  // Forwards, then backwards in a shuffled order: undo must land on the same state.
  const order = [...probes, ...[...probes].reverse(), ...probes.filter((_, i) => i % 3 === 0)];
  for (const t of order) {
    cursor.seek(t);
    const l = ledgerAt(events, t);
    expect(cursor.counts[POOL_GPU]).toBe(l.gpu.size);
    expect(cursor.counts[POOL_HOST]).toBe(l.host.size);
    expect(cellsAsIds(cursor, POOL_GPU)).toEqual(new Set(l.gpu));
    expect(cellsAsIds(cursor, POOL_HOST)).toEqual(new Set(l.host));
  }
}

describe('replay model (events → pool state at time t)', () => {
  it('matches the block ledger at every probed time on the synthetic run', () => {
    checkRun(syntheticRun({ users: 3, rounds: 4, gpuBlocks: 8 }));
  });

  const runs = realRuns();
  it.skipIf(runs.length === 0)(`matches the block ledger on every real run found (${runs.map((r) => r.name).join(', ') || 'none: no samples or fixtures yet'})`, () => {
    for (const r of runs) checkRun(r.events);
  });

  it('keeps each block in one cell while it stays in a pool, within capacity', () => {
    const events = syntheticRun({ users: 2, rounds: 3, gpuBlocks: 6 });
    const m = compileReplay(events);
    expect(m.slotCount(POOL_GPU)).toBe(6);
    const c = new ReplayCursor(m);
    const cellOf = new Map<number, number>();
    for (let i = 1; i <= m.moveCount; i++) {
      c.seekIndex(i);
      const now = new Map<number, number>();
      c.cells[POOL_GPU]!.forEach((b, s) => b >= 0 && now.set(b, s));
      const moved = m.block.data[i - 1]!;
      for (const [b, s] of now) if (b !== moved && cellOf.has(b)) expect(s).toBe(cellOf.get(b));
      cellOf.clear();
      for (const [b, s] of now) cellOf.set(b, s);
    }
  });

  it('appending a tail in pieces equals compiling the whole log, and repeated lines are ignored', () => {
    const events = syntheticRun({ users: 2, rounds: 4 });
    const whole = compileReplay(events);
    const tail = compileReplay([]);
    for (let i = 0; i < events.length; i += 7) tail.append(events.slice(Math.max(0, i - 3), i + 7));
    expect(tail.moveCount).toBe(whole.moveCount);
    expect(Array.from(tail.dstSlot.data.subarray(0, tail.moveCount))).toEqual(Array.from(whole.dstSlot.data.subarray(0, whole.moveCount)));
  });

  it('counts bytes moved and bandwidth from xfer lines by their end time', () => {
    const events = syntheticRun();
    const m = compileReplay(events);
    const xs = events.filter((e): e is Extract<KvEvent, { type: 'xfer' }> => e.type === 'xfer' && e.dir === 'h2d');
    expect(xs.length).toBeGreaterThan(0);
    const mid = xs[Math.floor(xs.length / 2)]!.end;
    const want = xs.filter((x) => x.end <= mid).reduce((a, x) => a + x.bytes, 0);
    expect(m.bytesMovedBy('h2d', mid)).toBe(want);
    expect(m.bandwidthAt('h2d', mid, 1e9)).toBeCloseTo(want, 6);
    expect(m.bytesMovedBy('h2d', -1)).toBe(0);
  });

  it('counts one source of copies: CUPTI traces when the run has them, not also the engine reports of the same bytes', () => {
    const base = syntheticRun();
    const cupti = base.filter((e): e is Extract<KvEvent, { type: 'xfer' }> => e.type === 'xfer' && e.dir === 'h2d');
    // The engine reports each traced copy again (as the built-in engine does beside CUPTI).
    const doubled = base.flatMap((e): KvEvent[] => (e.type === 'xfer' ? [e, { ...e, source: 'engine' }] : [e]));
    const m = compileReplay(doubled);
    const end = Math.max(...cupti.map((x) => x.end));
    expect(m.bytesMovedBy('h2d', end)).toBe(cupti.reduce((a, x) => a + x.bytes, 0));
    expect(m.xfer.h2d.start.length).toBe(cupti.length);
    // With no CUPTI lines at all, the engine's reports are what there is.
    const engineOnly = base.map((e) => (e.type === 'xfer' ? { ...e, source: 'engine' as const } : e));
    expect(compileReplay(engineOnly).bytesMovedBy('h2d', end)).toBe(cupti.reduce((a, x) => a + x.bytes, 0));
  });

  it('reports the round and the requests running at t', () => {
    const events = syntheticRun({ users: 2, rounds: 2 });
    const m = compileReplay(events);
    const q = events.find((e) => e.type === 'req' && e.round === 2 && e.phase === 'queued')!;
    const p = m.progressAt(q.t);
    expect(p.round).toBe(2);
    expect(p.running.some((r) => r.round === 2)).toBe(true);
  });
});
