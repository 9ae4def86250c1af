/**
 * Start-up copies (shared/startup-copies.ts): the agent's plain pinned-copy check before the
 * workload is traced like any copy, but carries no KV block. Every KV figure leaves it out — Pools'
 * "H2D (onboard) moved" (the replay's bytes moved), Summary's "Copies against the link" (the
 * timeline's lanes), the trace exports' copy lanes and bytes-in-flight counters — and each shows it
 * apart. Checked on every real run against the log itself: the check's copies are those that start
 * before the `setup` phase ends, and its `run.end` summary says how many it made and of what size.
 */
import { describe, expect, it } from 'vitest';
import { PerfettoTraceBuilder, type TraceSink } from '../../src/main/core/export/perfetto';
import type { KvEvent, PoolEvent, RunEndEvent, XferEvent } from '../../src/shared/protocol';
import { compileReplay } from '../../src/shared/replay';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { StartupCopyRule } from '../../src/shared/startup-copies';
import { buildTimelineModel } from '../../src/shared/timeline-model';
import { realRuns } from '../helpers/real-runs';

interface PlainCopy {
  blocks: number;
  bytes: number;
  copies: number;
  reps: number;
}

/** What the trace export wrote: its copy slices by category, and the bytes-in-flight counter samples. */
function traced(events: readonly KvEvent[]) {
  const slices: Array<{ cat: string; seq: number }> = [];
  const inFlight: Array<{ t: number; name: string }> = [];
  const sink: TraceSink = {
    processName() {},
    threadName() {},
    openSlice(_p, _t, _n, cat, _s, _e, args) {
      if (cat === 'xfer' || cat === 'xfer.startup') slices.push({ cat, seq: (JSON.parse(args) as { seq: number }).seq });
    },
    closeSlice() {},
    instant() {},
    counter(_pid, spec, t) {
      if (spec.name.includes('bytes in flight')) inFlight.push({ t, name: spec.name });
    },
  };
  const b = new PerfettoTraceBuilder(sink);
  for (const e of events) b.push(e);
  return { report: b.finish(), slices, inFlight };
}

describe('start-up copies are kept out of every KV figure and shown apart', () => {
  for (const run of realRuns()) {
    it(`on ${run.name}`, () => {
      const ev = run.events;
      const setupEnd = ev.find((e) => e.type === 'phase' && e.name === 'setup' && e.state === 'end')?.t ?? -Infinity;
      const xfers = ev.filter((e): e is XferEvent => e.type === 'xfer');
      const startup = xfers.filter((x) => x.start < setupEnd);
      const kv = xfers.filter((x) => x.start >= setupEnd);
      const shown = xfers.some((x) => x.source === 'cupti') ? 'cupti' : 'engine';
      const sum = (xs: XferEvent[]) => xs.reduce((a, x) => a + x.bytes, 0);

      // The run's own account of its check: run.end's plain_copy (copies per direction × reps).
      const plain = (ev.find((e): e is RunEndEvent => e.type === 'run.end')?.summary as { plain_copy?: PlainCopy } | undefined)?.plain_copy;
      const blockBytes = ev.find((e): e is PoolEvent => e.type === 'pool' && e.pool === 'gpu')?.block_bytes ?? 0;
      if (plain && xfers.some((x) => x.source === 'cupti')) {
        for (const dir of ['h2d', 'd2h'] as const) {
          const whole = startup.filter((x) => x.source === 'cupti' && x.dir === dir && blockBytes > 0 && x.bytes % blockBytes === 0);
          expect(whole.length, dir).toBe(plain.copies * plain.reps);
          expect(sum(whole), dir).toBe(plain.bytes * plain.reps);
        }
      }

      const replay = compileReplay(ev);
      const tm = buildTimelineModel(ev, replay);
      for (const dir of ['h2d', 'd2h'] as const) {
        const mine = (xs: XferEvent[]) => xs.filter((x) => x.source === shown && x.dir === dir);
        // Pools: bytes moved by the end of the run are the KV copies' only.
        expect(replay.bytesMovedBy(dir, Infinity), dir).toBe(sum(mine(kv)));
        // Summary: the lanes it measures against the link hold the KV copies only...
        expect(tm.lanes.find((l) => l.dir === dir)!.totalBytes, dir).toBe(sum(mine(kv)));
        // ... and the check is shown apart.
        expect(tm.startupCopies[dir], dir).toEqual({ count: mine(startup).length, bytes: sum(mine(startup)) });
      }

      // Exports: the check's copies on their own track, counted apart, never in bytes in flight.
      const t = traced(ev);
      expect(t.slices.filter((s) => s.cat === 'xfer.startup').map((s) => s.seq).sort((a, b) => a - b)).toEqual(startup.map((x) => x.seq).sort((a, b) => a - b));
      expect(t.report.copies.startup.count).toBe(startup.length);
      expect(t.report.copies.startup.bytes.h2d).toBe(sum(startup.filter((x) => x.dir === 'h2d')));
      expect(t.inFlight.filter((c) => c.t < setupEnd)).toEqual([]);
      // validate's summary names them too.
      const a = analyzeEvents(ev);
      expect(a.startupXferBytesBySource.cupti.d2h + a.startupXferBytesBySource.engine.d2h).toBe(sum(startup.filter((x) => x.dir === 'd2h')));
    });
  }

  it('the 8B users-2 run, which onboards nothing, shows no onboard traffic (its 6.8 GB were the check)', () => {
    const run = realRuns().find((r) => r.name === 'sample:h100-llama-3.1-8b-users2-host55e9');
    expect(run, 'the 8B users-2 sample ships with the app').toBeDefined();
    const replay = compileReplay(run!.events);
    expect(analyzeEvents(run!.events).blocks.onboarded).toBe(0);
    const blockBytes = replay.pools.gpu!.block_bytes;
    // What is left is the engine's small copies (token ids), less than one block in all.
    expect(replay.bytesMovedBy('h2d', Infinity)).toBeLessThan(blockBytes);
    expect((replay.startupCopies.h2d.bytes / 1e9).toFixed(2)).toBe('6.82');
  });

  it('reads a copy whose xfer line comes after setup ended by its start, and a log with no setup phase as having none', () => {
    const rule = new StartupCopyRule();
    expect(rule.isStartup({ start: 5 })).toBe(false);
    const phase = (state: 'begin' | 'end', t: number) => ({ seq: 0, t, type: 'phase', name: 'setup', state }) as KvEvent;
    rule.observe(phase('begin', 10));
    // Setup still open: whatever started so far is the check.
    expect(rule.isStartup({ start: 12 })).toBe(true);
    rule.observe(phase('end', 100));
    // CUPTI flushes late: a line written now is judged by when the copy started.
    expect(rule.isStartup({ start: 99 })).toBe(true);
    expect(rule.isStartup({ start: 100 })).toBe(false);
  });
});
