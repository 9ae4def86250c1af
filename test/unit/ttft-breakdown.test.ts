/**
 * Where each request's TTFT went, held against the logs themselves: a recorded run's breakdown is
 * its first_token's ttft_parts and adds up to its TTFT; a log without them is split only where it
 * says so (queued, and the rest unsplit), its tiers' times "not recorded"; and the CSV export and
 * the Perfetto export carry the same numbers for every request.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { writeCsv, REQUESTS_HEADER } from '../../src/main/core/export/csv';
import { writePerfettoTrace } from '../../src/main/core/export/perfetto';
import { blockMove, type KvEvent, type ReqEvent } from '../../src/shared/protocol';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { BREAKDOWN_FIELDS, partNs, roundBreakdowns, TTFT_TIME_PARTS, ttftBreakdown } from '../../src/shared/ttft-breakdown';
import { realRuns } from '../helpers/real-runs';

const runs = realRuns({ maxBytes: 5e6 });
const recorded = runs.filter((r) => r.events.some((e) => e.type === 'req' && e.phase === 'first_token' && e.ttft_parts));
const unrecorded = runs.filter((r) => !r.events.some((e) => e.type === 'req' && e.ttft_parts) && r.events.some((e) => e.type === 'req' && e.phase === 'first_token'));

const firstTokens = (events: KvEvent[]) => events.filter((e): e is ReqEvent => e.type === 'req' && e.phase === 'first_token');
const phaseT = (events: KvEvent[], user: number, round: number, phase: string) => events.find((e) => e.type === 'req' && e.user === user && e.round === round && e.phase === phase)?.t ?? null;

describe('TTFT breakdown', () => {
  it('has recorded runs with ttft_parts and runs without them', () => {
    expect(recorded.length).toBeGreaterThan(0);
    expect(unrecorded.length).toBeGreaterThan(0);
  });

  for (const run of recorded) {
    it(`is each first_token's ttft_parts, adding up to the request's TTFT (${run.name})`, () => {
      const a = analyzeEvents(run.events);
      const bb = a.pools.gpu?.block_bytes ?? null;
      for (const ft of firstTokens(run.events)) {
        const req = a.requests.find((r) => r.user === ft.user && r.round === ft.round)!;
        const b = ttftBreakdown(req, bb);
        const p = ft.ttft_parts!;
        expect(b.source).toBe('recorded');
        expect(b.ttft_ns).toBe(ft.t - phaseT(run.events, ft.user, ft.round, 'queued')!);
        expect([b.queued_ns, b.host_reload.ns, b.host_reload.bytes, b.disk_promote.ns, b.disk_promote.blocks, b.recompute.ns, b.recompute.tokens, b.other_ns]).toEqual([
          p.queued_ns,
          p.host_reload?.ns ?? 0,
          p.host_reload?.bytes ?? 0,
          p.disk_promote?.ns ?? 0,
          p.disk_promote?.blocks ?? 0,
          p.recompute?.ns ?? 0,
          p.recompute?.tokens ?? 0,
          p.other_ns,
        ]);
        const sum = TTFT_TIME_PARTS.reduce((s, part) => s + (partNs(b, part) ?? 0), 0);
        expect(Math.abs(sum - b.ttft_ns!)).toBeLessThanOrEqual(1000);
        // A reload behind disk reads has no copy rate (its time is the tail after the last read).
        if ((p.disk_promote?.blocks ?? 0) > 0) expect(b.host_reload_bytes_per_s).toBeNull();
        else if ((p.host_reload?.ns ?? 0) > 0 && (p.host_reload?.bytes ?? 0) > 0) expect(b.host_reload_bytes_per_s).toBeCloseTo((p.host_reload!.bytes / p.host_reload!.ns) * 1e9, 6);
      }
    });

    it(`per round, the stacked means add up to the round's mean queued TTFT (${run.name})`, () => {
      const a = analyzeEvents(run.events);
      const rounds = roundBreakdowns(a.requests.map((r) => ttftBreakdown(r, null)));
      expect(rounds.map((r) => r.round)).toEqual(a.roundRows.filter((r) => r.ttft.count > 0).map((r) => r.round));
      for (const r of rounds) {
        const row = a.roundRows.find((x) => x.round === r.round)!;
        expect(r.source).toBe('recorded');
        expect(r.ttft_ns_mean).toBeCloseTo(row.ttft.mean!, 3);
        const stacked = TTFT_TIME_PARTS.reduce((s, p) => s + (r.mean[p] ?? 0), 0);
        expect(Math.abs(stacked - row.ttft.mean!)).toBeLessThanOrEqual(1000);
      }
    });
  }

  for (const run of unrecorded) {
    it(`without ttft_parts: queued and the unsplit rest from the phase lines, the tiers' times not recorded (${run.name})`, () => {
      const a = analyzeEvents(run.events);
      const bb = a.pools.gpu!.block_bytes;
      for (const ft of firstTokens(run.events)) {
        const b = ttftBreakdown(a.requests.find((r) => r.user === ft.user && r.round === ft.round)!, bb);
        const q = phaseT(run.events, ft.user, ft.round, 'queued')!;
        const s = phaseT(run.events, ft.user, ft.round, 'scheduled')!;
        expect(b.source).toBe('derived');
        expect([b.queued_ns, b.unsplit_ns]).toEqual([s - q, ft.t - s]);
        expect([b.host_reload.ns, b.disk_promote.ns, b.recompute.ns, b.other_ns, b.host_reload_bytes_per_s]).toEqual([null, null, null, null, null]);
        // The blocks its onboard lines moved (host → GPU, tagged with the request), counted from the log here.
        const onboarded = run.events.reduce((n, e) => {
          if (e.type !== 'blocks' || e.user !== ft.user || e.round !== ft.round) return n;
          const mv = blockMove(e);
          return mv?.from === 'host' && mv.to === 'gpu' ? n + e.ids.length : n;
        }, 0);
        expect([b.host_reload.blocks, b.host_reload.bytes]).toEqual([onboarded, onboarded * bb]);
      }
    });
  }

  it('the CSV and the Perfetto export carry the same breakdown for every request, as the log records it', async () => {
    const run = recorded.find((r) => r.events.some((e) => e.type === 'pool' && e.pool === 'disk')) ?? recorded[0]!;
    const a = analyzeEvents(run.events);
    const file = join(mkdtempSync(join(tmpdir(), 'kvscope-breakdown-')), 'requests.csv');
    await writeCsv(a, file, 'requests');
    const lines = readFileSync(file, 'utf8').trim().split('\r\n').map((l) => l.split(','));
    expect(lines[0]).toEqual([...REQUESTS_HEADER]);
    const col = (name: string) => lines[0]!.indexOf(name);
    const chunks: Buffer[] = [];
    await writePerfettoTrace(
      (async function* () {
        yield Buffer.from(run.events.map((e) => JSON.stringify(e)).join('\n') + '\n');
      })(),
      new Writable({
        write(c: Buffer, _e, done) {
          chunks.push(c);
          done();
        },
      }),
    );
    const trace = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { traceEvents: Array<{ ph: string; cat?: string; args?: Record<string, unknown> }> };
    const slices = trace.traceEvents.filter((e) => e.ph === 'X' && e.cat === 'request');
    for (const ft of firstTokens(run.events)) {
      const p = ft.ttft_parts!;
      const row = lines.find((l) => l[col('user')] === String(ft.user) && l[col('round')] === String(ft.round))!;
      const args = slices.find((s) => s.args!.user === ft.user && s.args!.round === ft.round)!.args!.ttft_breakdown as Record<string, unknown>;
      // The log's own numbers, in both exports.
      const want: Record<string, number | string> = {
        ttft_parts_source: 'recorded',
        ttft_queued_ns: p.queued_ns,
        host_reload_bytes: p.host_reload?.bytes ?? 0,
        host_reload_ns: p.host_reload?.ns ?? 0,
        disk_promote_blocks: p.disk_promote?.blocks ?? 0,
        disk_promote_ns: p.disk_promote?.ns ?? 0,
        recompute_tokens: p.recompute?.tokens ?? 0,
        recompute_ns: p.recompute?.ns ?? 0,
        ttft_other_ns: p.other_ns,
      };
      for (const [k, v] of Object.entries(want)) {
        expect(row[col(k)], `${k} in the CSV`).toBe(String(v));
        expect(args[k], `${k} in the trace`).toBe(v);
      }
      // Every column the same in both.
      for (const k of BREAKDOWN_FIELDS) expect(row[col(k)], k).toBe(args[k] === null ? '' : String(args[k]));
    }
  });
});
