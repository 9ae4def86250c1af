/**
 * Perfetto export of REAL runs: the committed CPU run fixtures (test/fixtures/runs/*) and every
 * bundled sample present (resources/samples/*.jsonl.gz, real H100 runs). Structure as Perfetto
 * needs it, and content checked against the log itself and against analyzeEvents.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { exportLog } from '../../src/main/core/export/run-export';
import { decodeAll } from '../../src/shared/events-reader';
import type { KvEvent, XferEvent } from '../../src/shared/protocol';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { checkTrace, type TraceDoc } from './export-trace-check';

const ROOT = process.cwd();
const ns = (us: number): number => Math.round(us * 1000);
const PYTHON = '/usr/bin/python3';

/** Every real run this checkout has: fixtures recorded on this machine, samples recorded on GPUs. */
function realRuns(): Array<{ name: string; file: string }> {
  const out: Array<{ name: string; file: string }> = [];
  const fixtures = join(ROOT, 'test', 'fixtures', 'runs');
  if (existsSync(fixtures)) {
    for (const d of readdirSync(fixtures).sort()) {
      const f = join(fixtures, d, 'events.jsonl');
      if (existsSync(f)) out.push({ name: `fixture ${d}`, file: f });
    }
  }
  const samples = join(ROOT, 'resources', 'samples');
  if (existsSync(samples)) {
    for (const n of readdirSync(samples).sort()) if (n.endsWith('.jsonl.gz')) out.push({ name: `sample ${n}`, file: join(samples, n) });
  }
  return out;
}

const runs = realRuns();
const dir = mkdtempSync(join(tmpdir(), 'kvscope-export-real-'));

describe('Perfetto export of real runs', () => {
  it('finds the committed real CPU run fixture', () => {
    expect(runs.map((r) => r.name)).toContain('fixture cpu-tiny-export');
  });

  for (const run of runs) {
    describe(run.name, () => {
      const raw = readFileSync(run.file);
      const { events, bad } = decodeAll(run.file.endsWith('.gz') ? gunzipSync(raw) : raw);
      const analysis = analyzeEvents(events);
      const dest = join(dir, `${run.name.replace(/[^A-Za-z0-9]+/g, '-')}.trace.json`);
      const exported = exportLog({ logFile: run.file, meta: { id: 'x', name: run.name, host: 'test', status: 'ok', createdAt: '' }, format: 'perfetto', dest });

      it('is a trace Perfetto reads: named tracks, strict nesting, numeric counters, flows with both ends, ts ≥ 0', async () => {
        const r = await exported;
        const doc = JSON.parse(readFileSync(dest, 'utf8')) as TraceDoc;
        const check = checkTrace(doc);
        expect(check.problems).toEqual([]);
        expect(r.events).toBe(events.length);
        expect(r.badLines).toBe(bad.length);
        expect(doc.metadata?.kvscope?.events_read).toBe(events.length);
      });

      it('writes times relative to run start, in µs', async () => {
        await exported;
        const doc = JSON.parse(readFileSync(dest, 'utf8')) as TraceDoc;
        const xferEnds = events.filter((e): e is XferEvent => e.type === 'xfer').map((e) => e.end);
        // reduce, not Math.max(...xs): a traced H100 run has ~10^5 copies, past the engine's argument limit.
        const lastNs = xferEnds.reduce((m, x) => Math.max(m, x), analysis.durationNs);
        const timed = doc.traceEvents.filter((e) => e.ph !== 'M');
        const maxEnd = timed.reduce((m, e) => Math.max(m, e.ts! + (e.dur ?? 0)), -Infinity);
        // Every event lies within the run: µs of the run clock, not absolute (unix) time, not ns.
        expect(maxEnd).toBeLessThanOrEqual(lastNs / 1000 + 1e-6);
        expect(maxEnd).toBeGreaterThan(lastNs / 1000 / 2);
        const firstReq = events.find((e) => e.type === 'req')!;
        const reqSlices = timed.filter((e) => e.cat === 'request');
        expect(Math.round(reqSlices.reduce((m, e) => Math.min(m, e.ts!), Infinity) * 1000)).toBe(firstReq.t);
      });

      it("transfer slices carry exactly the bytes of the log's xfer lines", async () => {
        await exported;
        const doc = JSON.parse(readFileSync(dest, 'utf8')) as TraceDoc;
        const xfers = events.filter((e): e is XferEvent => e.type === 'xfer');
        // A disk tier's reads and writes (f2h, h2f) are transfers too, on tracks of their own.
        const slices = doc.traceEvents.filter((e) => e.ph === 'X' && (e.cat === 'xfer' || e.cat === 'xfer.startup' || e.cat === 'xfer.disk'));
        expect(slices).toHaveLength(xfers.length);
        const bySeq = new Map(slices.map((s) => [s.args!.seq as number, s]));
        // The start-up copy check (copies that start before the setup phase ends) sits apart.
        const setupEnd = events.find((e) => e.type === 'phase' && e.name === 'setup' && e.state === 'end')?.t ?? -Infinity;
        for (const x of xfers) {
          const s = bySeq.get(x.seq)!;
          expect(s, `xfer seq ${x.seq}`).toBeDefined();
          expect(s.cat, `xfer seq ${x.seq}`).toBe(x.dir === 'f2h' || x.dir === 'h2f' ? 'xfer.disk' : x.start < setupEnd ? 'xfer.startup' : 'xfer');
          expect(s.args!.bytes).toBe(x.bytes);
          // Integer ns read back the way Perfetto does (µs × 1000, rounded) give the log's times, for
          // the start, the duration and the end (ts + dur added in floating point, as DevTools does).
          expect(Math.round(s.ts! * 1000)).toBe(x.start);
          expect(Math.round(s.dur! * 1000)).toBe(x.end - x.start);
          expect(Math.round((s.ts! + s.dur!) * 1000)).toBe(x.end);
          if (x.end > x.start) expect(s.args!.bandwidth_gb_per_s).toBeCloseTo(x.bytes / (x.end - x.start), 9);
        }
        const total = (cat: string) => slices.filter((s) => s.args!.dir === cat).reduce((a, s) => a + (s.args!.bytes as number), 0);
        expect(total('h2d')).toBe(analysis.xferBytes.h2d);
        expect(total('d2h')).toBe(analysis.xferBytes.d2h);
        const disk = (cat: string) => slices.filter((s) => s.cat === 'xfer.disk' && s.args!.seq !== undefined && xfers.find((x) => x.seq === s.args!.seq)!.dir === cat).reduce((a, s) => a + (s.args!.bytes as number), 0);
        expect(disk('f2h')).toBe(analysis.diskXferBytes?.f2h ?? 0);
        expect(disk('h2f')).toBe(analysis.diskXferBytes?.h2f ?? 0);
      });

      it('has one request slice per request, with the TTFT of the run summary', async () => {
        await exported;
        const doc = JSON.parse(readFileSync(dest, 'utf8')) as TraceDoc;
        const reqs = doc.traceEvents.filter((e) => e.ph === 'X' && e.cat === 'request');
        expect(reqs).toHaveLength(analysis.requests.length);
        const keys = new Set(reqs.map((e) => `${e.args!.user}/${e.args!.round}`));
        expect(keys.size).toBe(analysis.requests.length);
        for (const r of analysis.requests) {
          const s = reqs.find((e) => e.args!.user === r.user && e.args!.round === r.round)!;
          expect(s.args!.ttft_ns).toBe(r.ttft_ns);
          // Each user's requests sit on that user's track(s).
          expect(s.pid).toBe(reqs[0]!.pid);
        }
      });

      it('counts pool occupancy as the ledger does, and bytes in flight return to zero', async () => {
        await exported;
        const setupEnd = events.find((e) => e.type === 'phase' && e.name === 'setup' && e.state === 'end')?.t ?? -Infinity;
        const doc = JSON.parse(readFileSync(dest, 'utf8')) as TraceDoc;
        const peak = (name: string) => Math.max(0, ...doc.traceEvents.filter((e) => e.ph === 'C' && e.name === name).map((e) => e.args!.blocks as number));
        expect(peak('GPU pool occupancy')).toBe(analysis.peakOccupancy.gpu);
        expect(peak('Host pool occupancy')).toBe(analysis.peakOccupancy.host);
        const inflight = doc.traceEvents.filter((e) => e.ph === 'C' && String(e.name).includes('bytes in flight'));
        if (analysis.xferBytes.h2d + analysis.xferBytes.d2h > 0) expect(inflight.length).toBeGreaterThan(0);
        const last = new Map<string, number>();
        for (const c of [...inflight].sort((a, b) => a.ts! - b.ts!)) for (const [k, v] of Object.entries(c.args!)) last.set(`${c.name}/${k}`, v as number);
        for (const v of last.values()) expect(v).toBe(0);
        // One counter per direction and source (chrome://tracing keeps one key set per name).
        const kvCopies = events.filter((e): e is XferEvent => e.type === 'xfer' && (e.dir === 'h2d' || e.dir === 'd2h') && e.start >= setupEnd);
        const names = new Set(inflight.map((c) => c.name));
        for (const x of kvCopies) expect(names, `seq ${x.seq}`).toContain(`${x.dir.toUpperCase()} bytes in flight (${x.source})`);
        for (const c of inflight) expect(Object.keys(c.args!)).toEqual(['bytes']);
        const evictions = doc.traceEvents.filter((e) => e.ph === 'I' && e.cat === 'kv');
        expect(evictions.reduce((a, e) => a + (e.args!.blocks as number), 0)).toBe(analysis.blocks.evicted);
      });

      it('draws a flow from every block move to the copies that carried its bytes', async () => {
        const r = await exported;
        const doc = JSON.parse(readFileSync(dest, 'utf8')) as TraceDoc;
        const check = checkTrace(doc);
        const moves = events.filter((e) => e.type === 'blocks' && (e.op === 'offload' || e.op === 'onboard'));
        const p = r.perfetto!;
        expect(p.moves.total).toBe(moves.length);
        expect(p.moves.matched + p.moves.unmatched).toBe(moves.length);
        expect(check.flowsOut.size).toBe(p.moves.matched);
        const moveBySeq = new Map(check.slices.filter((s) => s.cat === 'kv').map((s) => [s.args!.seq as number, s]));
        // Each move slice says which bytes were carried; the flow ends' bytes add up to it, per source.
        for (const [id, out] of check.flowsOut) {
          const move = moveBySeq.get(out.args!.move_seq as number)!;
          expect(move.args!.seq).toBe(id);
          const parts = check.flowsIn.get(id)!;
          const carried = move.args!.carried_bytes as Record<string, number>;
          const sum = parts.reduce((a, s) => a + (s.args!.bytes as number), 0);
          expect(sum).toBe(Object.values(carried).reduce((a, b) => a + b, 0));
          for (const v of Object.values(carried)) expect(v).toBeLessThanOrEqual(move.args!.bytes as number);
          // The flow starts where the move begins: on a child that opens with the move slice and
          // ends where its first copy starts, so an arrow drawn from its end never points back.
          expect(ns(out.ts!)).toBe(ns(move.ts!));
          const firstCopy = Math.min(...parts.map((s) => ns(s.ts!)));
          expect(ns(out.ts! + out.dur!)).toBeLessThanOrEqual(firstCopy);
        }
        if (run.name.startsWith('fixture')) {
          // The CPU engine records one copy per batch of moved blocks: every move has its copy, in full.
          expect(p.moves.unmatched).toBe(0);
          for (const out of check.flowsOut.values()) expect((moveBySeq.get(out.args!.move_seq as number)!.args!.carried_bytes as Record<string, number>).engine).toBe(moveBySeq.get(out.args!.move_seq as number)!.args!.bytes);
        }
      });

      it.skipIf(!existsSync(PYTHON))('passes the independent Python checker (skipped without /usr/bin/python3)', async () => {
        await exported;
        const res = spawnSync(PYTHON, [join(ROOT, 'test', 'integration', 'export-check-trace.py'), dest], { encoding: 'utf8', timeout: 60_000 });
        const summary = JSON.parse(res.stdout) as { problems: string[]; flows: number; events: number };
        expect(summary.problems).toEqual([]);
        expect(res.status).toBe(0);
        expect(summary.events).toBeGreaterThan(events.length / 2);
      });
    });
  }
});

// Keep the type import used when no sample is present.
export type { KvEvent };
