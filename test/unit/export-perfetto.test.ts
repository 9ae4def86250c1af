/**
 * Perfetto export: lanes for overlapping copies, the move → copy matching rule, broken inputs and
 * backpressure. Cases are derived from the real CPU run fixture (test/fixtures/runs/cpu-tiny-export)
 * by editing its events, so their shape stays the engine's.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { exportLog } from '../../src/main/core/export/run-export';
import { gridText, JsonTraceSink, PerfettoTraceBuilder, usGrid, writePerfettoTrace } from '../../src/main/core/export/perfetto';
import { decodeAll } from '../../src/shared/events-reader';
import type { KvEvent, XferEvent } from '../../src/shared/protocol';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { assignLanes, LaneAssigner } from '../../src/shared/trace-lanes';
import { checkTrace, type TraceDoc } from '../integration/export-trace-check';

const FIXTURE = join(process.cwd(), 'test', 'fixtures', 'runs', 'cpu-tiny-export', 'events.jsonl');
const fixtureBytes = readFileSync(FIXTURE);
const fixture = decodeAll(fixtureBytes).events;
const dir = mkdtempSync(join(tmpdir(), 'kvscope-export-unit-'));
const meta = { id: 'x', name: 'x', host: 'test', status: 'ok' as const, createdAt: '' };
const jsonl = (events: unknown[]) => events.map((e) => JSON.stringify(e)).join('\n') + '\n';

async function exportText(name: string, text: string | Buffer, perfetto = {}) {
  const file = join(dir, name);
  writeFileSync(file, text);
  const dest = `${file}.trace.json`;
  const r = await exportLog({ logFile: file, meta, format: 'perfetto', dest, perfetto });
  return { r, doc: JSON.parse(readFileSync(dest, 'utf8')) as TraceDoc };
}

describe('LaneAssigner', () => {
  it('puts an interval on the first lane that is free at its start, and opens a lane only on overlap', () => {
    const l = new LaneAssigner();
    expect(l.place(0, 10).lane).toBe(0);
    expect(l.place(5, 12).lane).toBe(1);
    expect(l.place(10, 11).lane).toBe(0); // lane 0 ended at 10: touching is not overlapping
    expect(l.place(11, 20).lane).toBe(0);
    expect(l.place(12, 13).lane).toBe(1);
    expect(l.laneCount).toBe(2);
  });

  it('stays correct out of order (no two intervals on a lane overlap) and is optimal when sorted', () => {
    const items = Array.from({ length: 200 }, (_, i) => {
      const s = (i * 7919) % 1000;
      return { s, e: s + 1 + ((i * 31) % 50) };
    });
    const lanes = new LaneAssigner();
    const got = items.map((x) => lanes.place(x.s, x.e).lane);
    for (let i = 0; i < items.length; i++) {
      for (let j = i + 1; j < items.length; j++) {
        if (got[i] === got[j]) expect(items[i]!.e <= items[j]!.s || items[j]!.e <= items[i]!.s).toBe(true);
      }
    }
    // Sorted by start, the lane count equals the peak overlap (interval partitioning).
    const sorted = assignLanes(items, (x) => x.s, (x) => x.e);
    let peak = 0;
    for (const x of items) peak = Math.max(peak, items.filter((y) => y.s <= x.s && y.e > x.s).length);
    expect(sorted.laneCount).toBe(peak);
  });
});

describe('JSON microseconds on the 2⁻¹¹ µs grid', () => {
  it('give back integer ns when rounded, and ts + dur adds up exactly in floating point', () => {
    // Times across a long run (up to ~4 h), including the ones plain ns/1000 gets wrong.
    const times = [0, 1, 2, 999, 1000, 1001, 517723346, 537202450, 30925456972, 322033748481, 14_400_000_000_000];
    let x = 12345;
    for (let i = 0; i < 2000; i++) {
      x = (x * 1103515245 + 12345) % 2147483648;
      times.push(Math.floor((x / 2147483648) * 3.3e11));
    }
    for (const n of times) {
      const text = gridText(usGrid(n));
      expect(Number(text) * 2048, text).toBe(usGrid(n));
      expect(Math.round(Number(text) * 1000), text).toBe(n);
    }
    for (let i = 1; i < times.length; i++) {
      const [a, b] = [Math.min(times[i - 1]!, times[i]!), Math.max(times[i - 1]!, times[i]!)];
      const ts = Number(gridText(usGrid(a)));
      const dur = Number(gridText(usGrid(b) - usGrid(a)));
      expect(ts + dur).toBe(Number(gridText(usGrid(b))));
      expect(Math.round(dur * 1000)).toBe(b - a);
    }
  });
});

describe('Perfetto export, derived cases', () => {
  it('puts overlapping copies on separate lanes, so every copy track nests strictly', async () => {
    // Make each d2h copy start halfway through the previous one (as two copy engines would).
    let prev: XferEvent | null = null;
    const events = fixture.map((e) => {
      if (e.type !== 'xfer' || e.dir !== 'd2h') return e;
      const x = { ...e };
      if (prev) {
        const dur = x.end - x.start;
        x.start = prev.start + Math.floor((prev.end - prev.start) / 2);
        x.end = x.start + dur;
      }
      prev = x;
      return x;
    });
    const { doc } = await exportText('overlap.jsonl', jsonl(events));
    const check = checkTrace(doc);
    expect(check.problems).toEqual([]);
    const lanes = doc.traceEvents.filter((e) => e.ph === 'M' && e.name === 'thread_name' && String(e.args!.name).startsWith('D2H copies'));
    expect(lanes.length).toBeGreaterThan(1);
    const copyTids = new Set(check.slices.filter((s) => s.cat === 'xfer' && s.args!.dir === 'd2h').map((s) => s.tid));
    expect(copyTids.size).toBe(lanes.length);
  });

  it('matches moves to a second trace source copy by copy (CUPTI-like per-block copies) and to the engine batch', async () => {
    // Split every engine copy into one copy per block, marked cupti, as CUPTI records contiguous runs.
    const out: Array<Record<string, unknown>> = [];
    for (const e of fixture) {
      out.push({ ...e });
      if (e.type === 'xfer') {
        const blocks = (e as unknown as { blocks: number }).blocks;
        const per = e.bytes / blocks;
        const step = Math.floor((e.end - e.start) / blocks);
        for (let i = 0; i < blocks; i++) out.push({ ...e, source: 'cupti', bytes: per, start: e.start + i * step, end: e.start + (i + 1) * step });
        // A small non-block copy (token ids) must not be taken for blocks.
        out.push({ ...e, source: 'cupti', bytes: 40, start: e.end + 1, end: e.end + 2 });
      }
    }
    const events = out.map((e, i) => ({ ...e, seq: i }));
    const { r, doc } = await exportText('cupti.jsonl', jsonl(events));
    const check = checkTrace(doc);
    expect(check.problems).toEqual([]);
    const p = r.perfetto!;
    expect(p.moves.unmatched).toBe(0);
    const moves = check.slices.filter((s) => s.cat === 'kv');
    expect(moves.length).toBe(p.moves.total);
    expect(check.flowsOut.size).toBe(p.moves.total);
    for (const move of moves) {
      const carried = move.args!.carried_bytes as Record<string, number>;
      expect(carried.engine).toBe(move.args!.bytes);
      expect(carried.cupti).toBe(move.args!.bytes);
    }
    const small = check.slices.filter((s) => s.cat === 'xfer' && s.args!.bytes === 40);
    expect(small.length).toBeGreaterThan(0);
    for (const s of small) expect(s.args!.carries_blocks_of_moves).toEqual([]);
  });

  it('reports the bytes no copy carried when a copy is missing (the metadata names the moves), and flows only real carriers', async () => {
    const firstXfer = fixture.find((e): e is XferEvent => e.type === 'xfer' && e.dir === 'd2h')!;
    const events = fixture.filter((e) => e !== firstXfer);
    const { r, doc } = await exportText('missing-copy.jsonl', jsonl(events));
    const check = checkTrace(doc);
    expect(check.problems).toEqual([]);
    const p = r.perfetto!;
    // FIFO by bytes (docs/export.md): later copies carry the earliest waiting moves, so the bytes
    // left uncarried are exactly the missing copy's, at the tail of the offload stream.
    const moveSlices = check.slices.filter((s) => s.cat === 'kv' && String(s.name).startsWith('offload'));
    const uncarried = moveSlices.reduce((a, s) => a + (s.args!.bytes as number) - (s.args!.carried_bytes as { engine: number }).engine, 0);
    expect(uncarried).toBe(firstXfer.bytes);
    expect(p.moves.unmatched + p.moves.partial).toBeGreaterThanOrEqual(1);
    const named = [...p.moves.unmatchedSample, ...p.moves.partialSample];
    const meta = doc.metadata!.kvscope! as { moves: { unmatchedSample: number[]; partialSample: number[] } };
    expect([...meta.moves.unmatchedSample, ...meta.moves.partialSample].sort()).toEqual([...named].sort());
    for (const seq of p.moves.unmatchedSample) {
      const slice = moveSlices.find((s) => s.args!.seq === seq)!;
      expect(slice.args!.matched).toBe(false);
      expect(slice.bind_id).toBeUndefined();
    }
    const report = doc.traceEvents.find((e) => e.name === 'kvscope export report')!;
    expect((report.args!.moves as { unmatched: number }).unmatched).toBe(p.moves.unmatched);
  });

  it('leaves a move unmatched when no copy of its direction starts inside its window', async () => {
    // Push every d2h copy 10 s past its move line: outside [t - 50 ms, t + 5 s].
    const late = fixture.map((e) => (e.type === 'xfer' && e.dir === 'd2h' ? { ...e, start: e.start + 10e9, end: e.end + 10e9 } : e));
    const { r, doc } = await exportText('late-copies.jsonl', jsonl(late));
    expect(checkTrace(doc).problems).toEqual([]);
    const offloads = fixture.filter((e) => e.type === 'blocks' && e.op === 'offload').length;
    expect(r.perfetto!.moves.unmatched).toBe(offloads);
    expect(r.perfetto!.moves.matched).toBe(r.perfetto!.moves.total - offloads);
  });

  it('exports what is valid from a log cut off mid-line, and says what was skipped', async () => {
    const cut = fixtureBytes.subarray(0, Math.floor(fixtureBytes.length * 0.6));
    const valid = decodeAll(cut);
    expect(valid.bad).toHaveLength(1);
    const { r, doc } = await exportText('truncated.jsonl', cut);
    expect(checkTrace(doc).problems).toEqual([]);
    expect(r.events).toBe(valid.events.length);
    expect(r.badLines).toBe(1);
    expect(r.badLineSamples[0]!.reason).toBe('truncated');
    const meta = doc.metadata!.kvscope! as { bad_lines_skipped: number; bad_line_samples: string[] };
    expect(meta.bad_lines_skipped).toBe(1);
    expect(meta.bad_line_samples[0]).toMatch(/truncated/);
    // Requests cut off before `done` still show, marked incomplete: one slice per request.
    const reqs = doc.traceEvents.filter((e) => e.cat === 'request');
    expect(reqs).toHaveLength(analyzeEvents(valid.events).requests.length);
    expect(reqs.some((e) => e.args!.incomplete === true)).toBe(true);
  });

  it('skips bad lines (not JSON, unknown type, schema) and keeps every valid event', async () => {
    const lines = fixtureBytes.toString('utf8').split('\n');
    lines.splice(10, 0, '{"seq": 9999, "t": 5, "type": "nonsense"}');
    lines.splice(20, 0, '%% not json');
    lines.splice(30, 0, '{"seq": 9998, "t": 5, "type": "xfer", "dir": "sideways", "bytes": 1, "start": 0, "end": 1, "source": "cupti"}');
    const { r, doc } = await exportText('bad-lines.jsonl', lines.join('\n'));
    expect(checkTrace(doc).problems).toEqual([]);
    expect(r.badLines).toBe(3);
    expect(r.events).toBe(fixture.length);
    expect(doc.traceEvents.filter((e) => e.cat === 'xfer')).toHaveLength(fixture.filter((e) => e.type === 'xfer').length);
    expect((doc.metadata!.kvscope! as { bad_lines_skipped: number }).bad_lines_skipped).toBe(3);
  });

  it('exports what decompressed from a cut-off .gz log', async () => {
    const gz = gzipSync(fixtureBytes);
    const { r, doc } = await exportText('cut.jsonl.gz', gz.subarray(0, Math.floor(gz.length * 0.7)));
    expect(checkTrace(doc).problems).toEqual([]);
    expect(r.events).toBeGreaterThan(0);
    expect(r.events).toBeLessThan(fixture.length);
    expect(r.badLineSamples.some((b) => /cut off|damaged|no newline/.test(b.message))).toBe(true);
  });

  it('exports what was readable from a damaged .kvscope file, and says it was cut off', async () => {
    const { writeKvscopeFile } = await import('../../src/main/core/export/kvscope-file');
    const whole = join(dir, 'whole.kvscope');
    await writeKvscopeFile(FIXTURE, meta, whole);
    const bytes = readFileSync(whole);
    const { r, doc } = await exportText('cut.kvscope', bytes.subarray(0, bytes.length - 30));
    expect(checkTrace(doc).problems).toEqual([]);
    expect(r.events).toBeGreaterThan(fixture.length / 2);
    expect(r.badLineSamples.some((b) => b.reason === 'truncated' && /cut off|damaged/.test(b.message))).toBe(true);
  });

  it('holds bounded state: a run 100 times longer leaves no more pending moves, copies, requests or lanes', () => {
    const span = Math.max(...fixture.map((e) => (e.type === 'xfer' ? e.end : e.t))) + 1_000_000;
    const sizes: Array<ReturnType<PerfettoTraceBuilder['stateSize']>> = [];
    // A 1 s matching window (after + late) over reps of ~0.13 s of run time.
    const b = new PerfettoTraceBuilder(new JsonTraceSink(() => undefined), { matchAfterNs: 5e8, lateNs: 5e8 });
    let seq = 0;
    for (let rep = 0; rep < 100; rep++) {
      const dt = rep * span;
      for (const e of fixture) {
        if (e.type === 'run.end' || (rep > 0 && (e.type === 'run.start' || e.type === 'pool'))) continue;
        const x = { ...e, seq: seq++, t: e.t + dt } as KvEvent;
        if (x.type === 'xfer') Object.assign(x, { start: (e as XferEvent).start + dt, end: (e as XferEvent).end + dt });
        if ('round' in x && typeof x.round === 'number') x.round += rep * 4;
        b.push(x);
      }
      sizes.push(b.stateSize());
    }
    const at10 = sizes[9]!;
    const at100 = sizes[99]!;
    expect(at100.pendingMoves).toBeLessThanOrEqual(at10.pendingMoves);
    expect(at100.pendingCopies).toBeLessThanOrEqual(at10.pendingCopies);
    expect(at100.openRequests).toBeLessThanOrEqual(at10.openRequests);
    expect(at100.lanes).toBe(at10.lanes);
    expect(at100.inFlightEnds).toBeLessThanOrEqual(at10.inFlightEnds);
    const r = b.finish();
    expect(r.moves.unmatched).toBe(0);
    expect(b.stateSize()).toMatchObject({ pendingMoves: 0, pendingCopies: 0, openRequests: 0, openPhases: 0 });
  });

  it('waits for a slow destination (backpressure) and writes the same bytes as to a fast one', async () => {
    const run = (slow: boolean) =>
      new Promise<{ text: string; maxPending: number }>((resolve, reject) => {
        const chunks: Buffer[] = [];
        let pending = 0;
        let maxPending = 0;
        const out = new Writable({
          highWaterMark: 1024,
          write(chunk: Buffer, _enc, cb) {
            chunks.push(chunk);
            pending++;
            maxPending = Math.max(maxPending, pending);
            const done = () => {
              pending--;
              cb();
            };
            if (slow) setTimeout(done, 2);
            else done();
          },
        });
        // A long run: the fixture's events repeated with fresh seq (bigger than one output batch).
        const many: KvEvent[] = [];
        for (let k = 0; k < 40; k++) for (const e of fixture) many.push({ ...e, seq: many.length } as KvEvent);
        const src = Readable.from([Buffer.from(jsonl(many))]);
        writePerfettoTrace(src, out).then(() => resolve({ text: Buffer.concat(chunks).toString('utf8'), maxPending }), reject);
      });
    const fast = await run(false);
    const slow = await run(true);
    expect(slow.text).toBe(fast.text);
    // Never more than one chunk handed over while the destination is busy.
    expect(slow.maxPending).toBe(1);
    expect(() => JSON.parse(slow.text)).not.toThrow();
  });
});
