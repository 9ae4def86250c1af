/**
 * One move ↔ copy matching rule (shared/copy-matching.ts): the timeline's "Trace its blocks" and
 * the trace export's flows name the same copies, on every real run this checkout has; and on the
 * 8B users-4 sample, user 2's round-3 onboard lights the copies the log shows carrying it.
 */
import { describe, expect, it } from 'vitest';
import { PerfettoTraceBuilder, type SliceFlow, type TraceSink } from '../../src/main/core/export/perfetto';
import type { BlocksEvent, KvEvent, PoolEvent, XferEvent } from '../../src/shared/protocol';
import { compileReplay, type ReplayModel } from '../../src/shared/replay';
import { buildTimelineModel, linkRequest, type TimelineModel } from '../../src/shared/timeline-model';
import { realRunPaths, realRuns } from '../helpers/real-runs';

/** What the export says: per move seq, the copies (by xfer seq) carrying it and how many bytes each. */
function exportedPairs(events: readonly KvEvent[]): Map<number, Map<number, number>> {
  const pairs = new Map<number, Map<number, number>>();
  let copySeq = -1;
  const sink: TraceSink = {
    processName() {},
    threadName() {},
    openSlice(_pid, _tid, _name, cat, _s, _e, args, flow: SliceFlow | null) {
      if (cat === 'xfer') copySeq = (JSON.parse(args) as { seq: number }).seq;
      if (cat === 'xfer.part' && flow && !flow.out) {
        const bytes = (JSON.parse(args) as { bytes: number }).bytes;
        let m = pairs.get(flow.bind);
        if (!m) pairs.set(flow.bind, (m = new Map()));
        m.set(copySeq, (m.get(copySeq) ?? 0) + bytes);
      }
    },
    closeSlice() {},
    instant() {},
    counter() {},
  };
  const b = new PerfettoTraceBuilder(sink);
  for (const e of events) b.push(e);
  b.finish();
  return pairs;
}

/** The same from the replay model the timeline reads. */
function replayPairs(replay: ReplayModel): Map<number, Map<number, number>> {
  const out = new Map<number, Map<number, number>>();
  const p = replay.copyPairs();
  for (let k = 0; k < p.length; k++) {
    const seq = replay.copySeq(p.copy[k]!);
    let m = out.get(p.move[k]!);
    if (!m) out.set(p.move[k]!, (m = new Map()));
    m.set(seq, (m.get(seq) ?? 0) + p.bytes[k]!);
  }
  return out;
}

/** xfer seq of each lane index of a timeline lane. */
const laneSeqs = (tm: TimelineModel, dir: string): number[] => Array.from(tm.lanes.find((l) => l.dir === dir)!.seq);

describe('one matching rule for the timeline and the trace export', () => {
  const runs = realRuns();

  it('has the bundled runs to check', () => {
    // Five samples ship with the app (resources/samples); the CPU fixture is committed.
    expect(realRunPaths().filter((r) => r.name.startsWith('sample:')).length).toBeGreaterThanOrEqual(5);
  });

  for (const run of runs) {
    it(`names the same copies, with the same bytes, for every block move (${run.name})`, () => {
      const exported = exportedPairs(run.events);
      const replay = compileReplay(run.events);
      const fromReplay = replayPairs(replay);
      const moves = run.events.filter((e): e is BlocksEvent => e.type === 'blocks' && (e.op === 'offload' || e.op === 'onboard'));
      // A run whose blocks move on copies has pairs to compare (the check is not empty).
      if (moves.length && run.events.some((e) => e.type === 'xfer' && (e.dir === 'h2d' || e.dir === 'd2h'))) expect(exported.size).toBeGreaterThan(0);
      for (const m of moves) {
        const a = [...(exported.get(m.seq) ?? new Map<number, number>())].sort((x, y) => x[0] - y[0]);
        const b = [...(fromReplay.get(m.seq) ?? new Map<number, number>())].sort((x, y) => x[0] - y[0]);
        expect(b, `move seq ${m.seq}`).toEqual(a);
      }
      expect([...fromReplay.keys()].sort((x, y) => x - y)).toEqual([...exported.keys()].sort((x, y) => x - y));

      // And what a click on each request lights in the timeline is the export's copies of the
      // source the lanes show, carrying the export's bytes.
      const tm = buildTimelineModel(run.events, replay);
      const shown = replay.shownSource;
      const xferSource = new Map(run.events.filter((e): e is XferEvent => e.type === 'xfer').map((e) => [e.seq, e.source]));
      const lanes = { h2d: laneSeqs(tm, 'h2d'), d2h: laneSeqs(tm, 'd2h') };
      for (const r of tm.requests) {
        const links = linkRequest(tm, replay, r.user, r.round);
        for (const dir of ['h2d', 'd2h'] as const) {
          const op = dir === 'h2d' ? 'onboard' : 'offload';
          const want = new Map<number, number>();
          for (const m of moves) {
            if (m.user !== r.user || m.round !== r.round || m.op !== op) continue;
            for (const [seq, bytes] of exported.get(m.seq) ?? []) if (xferSource.get(seq) === shown) want.set(seq, (want.get(seq) ?? 0) + bytes);
          }
          const got = (links.xfers[dir] ?? []).map((i) => lanes[dir][i]!);
          expect(got.sort((x, y) => x - y), `user ${r.user} round ${r.round} ${dir}`).toEqual([...want.keys()].sort((x, y) => x - y));
          expect(links.carriedBytes[dir] ?? 0).toBe([...want.values()].reduce((x, y) => x + y, 0));
        }
      }
    });
  }

  it('lights every copy the log shows carrying user 2 round 3 of the 8B users-4 sample', () => {
    const run = runs.find((r) => r.name === 'sample:h100-llama-3.1-8b-users4-host55e9');
    expect(run, 'the 8B users-4 sample ships with the app').toBeDefined();
    const events = run!.events;
    // From the log alone: the request's onboard line, and the CUPTI h2d copies of whole blocks that
    // start after it, in start order, until their bytes cover its blocks (no earlier onboard is
    // still waiting for bytes then: the copies before the line add up to the earlier onboards).
    const line = events.find((e): e is BlocksEvent => e.type === 'blocks' && e.op === 'onboard' && e.user === 2 && e.round === 3)!;
    expect(events.filter((e) => e.type === 'blocks' && e.op === 'onboard' && e.user === 2 && e.round === 3)).toHaveLength(1);
    const blockBytes = events.find((e): e is PoolEvent => e.type === 'pool' && e.pool === 'host')!.block_bytes;
    const need = line.ids.length * blockBytes;
    const h2d = events.filter((e): e is XferEvent => e.type === 'xfer' && e.source === 'cupti' && e.dir === 'h2d' && e.bytes % blockBytes === 0);
    const setupEnd = events.find((e) => e.type === 'phase' && e.name === 'setup' && e.state === 'end')!.t;
    const before = h2d.filter((x) => x.start >= setupEnd && x.start < line.t).reduce((a, x) => a + x.bytes, 0);
    const earlier = events.filter((e): e is BlocksEvent => e.type === 'blocks' && e.op === 'onboard' && e.seq < line.seq).reduce((a, e) => a + e.ids.length * blockBytes, 0);
    expect(before).toBe(earlier);
    const after = h2d.filter((x) => x.start >= line.t).sort((a, b) => a.start - b.start);
    const carrying: XferEvent[] = [];
    let got = 0;
    for (const x of after) {
      if (got >= need) break;
      carrying.push(x);
      got += x.bytes;
    }
    expect(got).toBe(need);
    // The figures, checked against the log: 509 blocks, 2.13 GB, on 82 CUPTI copies — plus
    // the engine's own record of the same bytes, one copy, which the export counts too (83).
    expect(line.ids.length).toBe(509);
    expect((need / 1e9).toFixed(2)).toBe('2.13');
    const engine = events.filter((e): e is XferEvent => e.type === 'xfer' && e.source === 'engine' && e.dir === 'h2d' && e.start >= line.t - 50e6 && e.start <= carrying.at(-1)!.start);
    expect(engine.reduce((a, x) => a + x.bytes, 0)).toBe(need);
    expect(carrying.length + engine.length).toBe(83);

    const replay = compileReplay(events);
    const tm = buildTimelineModel(events, replay);
    const links = linkRequest(tm, replay, 2, 3);
    expect(links.source).toBe('cupti');
    const lit = (links.xfers.h2d ?? []).map((i) => laneSeqs(tm, 'h2d')[i]!).sort((a, b) => a - b);
    expect(lit).toEqual(carrying.map((x) => x.seq).sort((a, b) => a - b));
    expect(links.carriedBytes.h2d).toBe(need);
    // The 1 GiB-scale copies of its prefill are among them (the nearest-copy rule had missed them).
    expect(carrying.some((x) => x.bytes >= 234 * blockBytes)).toBe(true);
  });
});
