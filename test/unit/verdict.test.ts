/**
 * Verdicts on a sweep or an A/B pair of pool setups, from runs as the library lists them: which
 * runs pair up (same host, card, model, engine and context, different pools), the user count from
 * which the treatment helps, what it costs below, and that a tier which carried no block is never
 * credited. Synthetic listings hold each rule; the recorded CPU sweep (test/fixtures/sweeps) the
 * numbers against its logs.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { RunListing } from '../../src/shared/api';
import { decodeAll } from '../../src/shared/events-reader';
import { analyzeEvents } from '../../src/shared/run-analysis';
import { poolSetup, verdicts } from '../../src/renderer/model/verdict';

let n = 0;
/** A finished measured run: `ttft` ms mean queued TTFT; `moves` the tier pairs it moved blocks between. */
function run(users: number, ttftMs: number, pools: { host?: number; disk?: number }, moves: Record<string, number> = {}, extra: Partial<RunListing> = {}): RunListing {
  n++;
  return {
    id: `r${n}`,
    name: `r${n}`,
    host: 'h100-box',
    status: 'ok',
    createdAt: '',
    model: 'llama-3.1-8b',
    users,
    rounds: 10,
    engine: 'torch',
    gpu: 'NVIDIA H100 80GB HBM3',
    e2e_ns: 1e9,
    ttft_ns_mean: ttftMs * 1e6,
    bundled: false,
    context_tokens: 16000,
    host_kv_bytes: pools.host ?? 55e9,
    disk_kv_bytes: pools.disk ?? null,
    tier_moves: moves,
    ...extra,
  };
}
const HOST = { 'gpu>host': 10, 'host>gpu': 10 };
const DISK = { ...HOST, 'host>disk': 5, 'disk>host': 5 };

describe('verdicts', () => {
  it('host pool against recompute: cuts mean TTFT from the fewest users where it moved blocks, and costs nothing below', () => {
    const v = verdicts([run(2, 100, { host: 0 }), run(2, 101, {}), run(4, 900, { host: 0 }), run(4, 300, {}, HOST), run(8, 2000, { host: 0 }), run(8, 250, {}, HOST)]);
    expect(v).toHaveLength(1);
    expect(v[0]!.what).toBe('the host pool');
    expect(v[0]!.from).toBe(4);
    expect(v[0]!.points.map((p) => [p.users, p.ratio.toFixed(2), p.used, p.helps])).toEqual([
      [2, '0.99', false, false],
      [4, '3.00', true, true],
      [8, '8.00', true, true],
    ]);
    expect(v[0]!.text).toBe('For this workload on this card, the host pool cuts mean TTFT by 3.0–8.0× at users ≥ 4 and costs nothing below.');
    expect(v[0]!.scope).toBe('h100-box · NVIDIA H100 80GB HBM3 · llama-3.1-8b · torch · 16,000 ctx');
  });

  it('pairs only runs with the same GPU pool: an uncapped GPU-only run is no recompute baseline for a capped host-pool run', () => {
    const cap = { gpu_kv_bytes: 4546625536 };
    const v = verdicts([run(4, 42, { host: 0 }), run(4, 1773, { host: 0 }, {}, cap), run(4, 1832, { host: 3409969152 }, HOST, cap)]);
    expect(v).toHaveLength(1);
    expect(v[0]!.points.map((p) => [p.baseline.ttft_ns / 1e6, p.treatment.ttft_ns / 1e6])).toEqual([[1773, 1832]]);
    expect(v[0]!.scope).toBe('h100-box · NVIDIA H100 80GB HBM3 · llama-3.1-8b · torch · 16,000 ctx · GPU pool 4.55 GB');
  });

  it('says what it costs below, where the treatment is slower beyond the tolerance', () => {
    const v = verdicts([run(2, 100, { host: 0 }), run(2, 120, {}, HOST), run(4, 900, { host: 0 }), run(4, 300, {}, HOST)]);
    expect(v[0]!.text).toBe('For this workload on this card, the host pool cuts mean TTFT by 3.0× at users ≥ 4 and costs up to 20% below (users 2).');
  });

  it('does not credit a tier that carried no block, however much faster its run was', () => {
    const v = verdicts([run(4, 900, { host: 0 }), run(4, 300, {}, { 'gpu>host': 0 })]);
    expect(v[0]!.from).toBeNull();
    expect(v[0]!.text).toBe('For this workload on this card, the host pool does not cut mean TTFT at the most users measured (users 4: 3.00×, but it moved no block there).');
  });

  it('does not cut when the most users measured are not helped, even if fewer are', () => {
    const v = verdicts([run(2, 200, { host: 0 }), run(2, 100, {}, HOST), run(4, 300, { host: 0 }), run(4, 290, {}, HOST)]);
    expect(v[0]!.from).toBeNull();
    expect(v[0]!.text).toMatch(/^For this workload on this card, the host pool does not cut mean TTFT at the most users measured \(users 4: 1\.03×\)\.$/);
  });

  it('a disk tier is judged against the host pool alone, by the blocks promoted from it', () => {
    const v = verdicts([run(4, 900, {}, HOST), run(4, 450, { disk: 4e9 }, DISK), run(4, 2000, { host: 0 })]);
    expect(v.map((x) => x.what)).toEqual(['the host pool', 'the disk tier']);
    expect(v[1]!.text).toBe('For this workload on this card, the disk tier cuts mean TTFT by 2.0× at 4 users (the one user count measured with both).');
    // Spilled to disk but never promoted: the disk tier served no request.
    const unused = verdicts([run(4, 900, {}, HOST), run(4, 450, { disk: 4e9 }, { ...HOST, 'host>disk': 5 })]);
    expect(unused[0]!.points[0]!.used).toBe(false);
  });

  it('with no host-pool-only runs, host pool and disk tier are judged together against recompute', () => {
    const v = verdicts([run(4, 900, { host: 0 }), run(4, 300, { disk: 4e9 }, DISK)]);
    expect(v.map((x) => x.what)).toEqual(['the host pool with a disk tier']);
  });

  it('pairs only runs that differ in their pools; simulated and unfinished runs are left out; repeats are averaged', () => {
    const otherCard = run(4, 300, {}, HOST, { gpu: 'NVIDIA H200' });
    const simulated = run(4, 100, {}, HOST, { simulated: { profile: 'h200', profileName: 'H200', sourceRunIds: [], sourceGpu: null } });
    const failed = run(4, 100, {}, HOST, { status: 'error' });
    expect(verdicts([run(4, 900, { host: 0 }), otherCard, simulated, failed])).toEqual([]);
    const v = verdicts([run(4, 900, { host: 0 }), run(4, 300, {}, HOST), run(4, 500, {}, HOST)]);
    expect(v[0]!.points[0]!.treatment.ttft_ns).toBe(400e6);
    expect(v[0]!.points[0]!.treatment.runIds).toHaveLength(2);
  });

  it('on the recorded CPU sweep: each point is the two runs’ mean TTFT from their logs, and their moves say whether the tier was used', () => {
    const dir = join(process.cwd(), 'test', 'fixtures', 'sweeps', 'cpu-tiny-tiers');
    const listings = readdirSync(dir)
      .filter((d) => d.includes('-users-'))
      .map((d) => {
        const events = decodeAll(gunzipSync(readFileSync(join(dir, d, 'events.jsonl.gz')))).events;
        const a = analyzeEvents(events);
        const cfg = a.start!.config;
        return { listing: run(cfg.users!, a.ttft.mean! / 1e6, { host: cfg.host_kv_bytes, disk: (cfg.disk_kv_bytes as number | undefined) ?? undefined }, a.moves, { id: d, host: 'cpu', gpu: null, model: 'tiny', context_tokens: cfg.context_tokens }), a, d };
      });
    expect(listings.map((l) => poolSetup(l.listing)).sort()).toEqual(['host', 'host', 'host', 'host+disk', 'host+disk', 'host+disk', 'recompute', 'recompute', 'recompute']);
    const v = verdicts(listings.map((l) => l.listing));
    expect(v.map((x) => x.what)).toEqual(['the host pool', 'the disk tier']);
    for (const [verdict, base, treat, move] of [
      [v[0]!, 'recompute', 'host', 'host>gpu'],
      [v[1]!, 'host', 'host-disk', 'disk>host'],
    ] as const) {
      for (const p of verdict.points) {
        const b = listings.find((l) => l.d === `${base}-users-${p.users}`)!.a;
        const t = listings.find((l) => l.d === `${treat}-users-${p.users}`)!.a;
        expect(p.baseline.ttft_ns).toBeCloseTo(b.ttft.mean!, 0);
        expect(p.treatment.ttft_ns).toBeCloseTo(t.ttft.mean!, 0);
        expect(p.used).toBe((t.moves[move] ?? 0) > 0);
      }
    }
  });
});
