/** Compare's series: one line per host and configuration; simulated runs kept apart and labelled; one chart pair per model. */
import { describe, expect, it } from 'vitest';
import type { RunListing } from '../../src/shared/api';
import { chartDomains, compareSeries, groupByModel, whatIfSources, whatIfUncertainty } from '../../src/renderer/model/compare-model';

let n = 0;
const run = (o: Partial<RunListing>): RunListing => ({
  id: `r${n++}`,
  name: 'r',
  host: 'h100',
  status: 'ok',
  createdAt: '',
  model: 'llama-3.1-70b',
  users: 2,
  rounds: 10,
  engine: 'torch',
  gpu: 'NVIDIA H100 80GB HBM3',
  e2e_ns: 1e9,
  ttft_ns_mean: 1e8,
  bundled: false,
  context_tokens: 16000,
  host_kv_bytes: 55e9,
  ...o,
});
const sim = { profile: 'gh200-96', profileName: 'NVIDIA GH200 (96 GB)', sourceRunIds: ['a'], sourceGpu: 'NVIDIA H100 80GB HBM3' };

describe('compare series', () => {
  it('groups by host and configuration, averages repeats, skips runs without results', () => {
    const s = compareSeries([
      run({ users: 2 }),
      run({ users: 4, e2e_ns: 3e9 }),
      run({ users: 4, e2e_ns: 5e9 }),
      run({ users: 4, host_kv_bytes: 0 }),
      run({ users: 2, host: 'gh200' }),
      run({ users: 8, e2e_ns: null, ttft_ns_mean: null }),
    ]);
    expect(s.map((x) => x.label)).toEqual([
      'gh200 · NVIDIA H100 80GB HBM3 · llama-3.1-70b · torch · 16,000 ctx · host pool 55.0 GB',
      'h100 · NVIDIA H100 80GB HBM3 · llama-3.1-70b · torch · 16,000 ctx · host pool 55.0 GB',
      'h100 · NVIDIA H100 80GB HBM3 · llama-3.1-70b · torch · 16,000 ctx · no host pool (recompute)',
    ]);
    const h100 = s[1]!;
    expect(h100.points.map((p) => [p.users, p.e2e_ns])).toEqual([
      [2, 1e9],
      [4, 4e9],
    ]);
    expect(h100.points[1]!.runId).toBeNull(); // two runs at 4 users: no single run to link
  });

  it('never averages runs of different pool sizes into one point: a capped GPU pool and the host pool size are part of the line', () => {
    // The disk-tier A/B's four runs: recompute with a 2-user GPU pool, and all users on the GPU (no cap), both without a host pool.
    const s = compareSeries([
      run({ users: 4, host_kv_bytes: 0, gpu_kv_bytes: 4546625536, e2e_ns: 34e9 }),
      run({ users: 4, host_kv_bytes: 0, gpu_kv_bytes: null, e2e_ns: 6.4e9 }),
      run({ users: 4, host_kv_bytes: 3409969152, gpu_kv_bytes: 4546625536, e2e_ns: 34.9e9 }),
      run({ users: 4, host_kv_bytes: 55e9, gpu_kv_bytes: 4546625536, e2e_ns: 36e9 }),
    ]);
    const line = 'h100 · NVIDIA H100 80GB HBM3 · llama-3.1-70b · torch · 16,000 ctx';
    expect(s.map((x) => [x.label, x.points[0]!.e2e_ns])).toEqual([
      [`${line} · GPU pool 4.55 GB · host pool 3.41 GB`, 34.9e9],
      [`${line} · GPU pool 4.55 GB · host pool 55.0 GB`, 36e9],
      [`${line} · GPU pool 4.55 GB · no host pool (recompute)`, 34e9],
      [`${line} · no host pool (recompute)`, 6.4e9],
    ]);
  });

  it('carries both TTFTs: queued and service means, averaged over repeats', () => {
    const s = compareSeries([run({ users: 4, ttft_ns_mean: 1.087e9, service_ttft_ns_mean: 118.6e6 }), run({ users: 4, ttft_ns_mean: 1.2e9, service_ttft_ns_mean: 121.4e6 })]);
    expect(s[0]!.points).toEqual([{ users: 4, ttft_ns: (1.087e9 + 1.2e9) / 2, service_ttft_ns: 120e6, e2e_ns: 1e9, runId: null }]);
    expect(chartDomains(s, 'service_ttft_ns').value).toEqual([0, 120e6 * 1.08]);
  });

  it('keeps simulated runs in their own series, after the measured ones, labelled with both cards', () => {
    const s = compareSeries([run({ users: 4, host: 'simulated', gpu: 'NVIDIA GH200 (simulated)', simulated: sim }), run({ users: 4 })]);
    expect(s.map((x) => x.kind)).toEqual(['measured', 'simulated']);
    expect(s[1]!.label).toBe('SIMULATED on NVIDIA GH200 (96 GB) · llama-3.1-70b · from NVIDIA H100 80GB HBM3 · 16,000 ctx · host pool 55.0 GB');
  });

  it('never puts two models on one chart, and each chart spans its own data', () => {
    const s = compareSeries([
      run({ users: 4, model: 'llama-3.1-8b', e2e_ns: 36e9, ttft_ns_mean: 1e9 }),
      run({ users: 8, model: 'llama-3.1-70b-fp8', e2e_ns: 252e9, ttft_ns_mean: 9.8e9 }),
      run({ users: 16, model: 'llama-3.1-70b-fp8', e2e_ns: 500e9, ttft_ns_mean: 20e9, host: 'simulated', simulated: sim }),
      run({ users: 2, model: 'llama-3.1-8b', e2e_ns: 16e9, ttft_ns_mean: 5e7 }),
    ]);
    const groups = groupByModel(s);
    expect(groups.map((g) => [g.model, g.series.length])).toEqual([
      ['llama-3.1-70b-fp8', 2],
      ['llama-3.1-8b', 1],
    ]);
    const eightB = groups.find((g) => g.model === 'llama-3.1-8b')!;
    expect(chartDomains(eightB.series, 'e2e_ns')).toEqual({ users: [2, 4], value: [0, 36e9 * 1.08] });
    expect(chartDomains(groups[0]!.series, 'ttft_ns').users).toEqual([8, 16]);
    expect(chartDomains([groups[0]!.series[0]!], 'ttft_ns').users).toEqual([7, 9]); // one count: ±1
  });

  it('lets a what-if replay only finished measured runs of one model on one card, and says why not', () => {
    expect(whatIfSources([]).why).toMatch(/choose a run/);
    expect(whatIfSources([run({ simulated: sim })]).why).toMatch(/simulated/);
    expect(whatIfSources([run({}), run({ model: 'llama-3.1-8b' })]).why).toMatch(/2 models/);
    expect(whatIfSources([run({}), run({ gpu: 'NVIDIA H200' })]).why).toMatch(/2 cards/);
    // The simulator refuses a run with a disk tier (whatif/replay.py); the panel says so before it is asked.
    expect(whatIfSources([run({ disk_kv_bytes: 64e9 })]).why).toMatch(/^the chosen runs have a disk tier/);
    expect(whatIfSources([run({}), run({ disk_kv_bytes: 64e9 })]).why).toMatch(/^1 of the chosen runs has a disk tier/);
    expect(whatIfSources([run({ disk_kv_bytes: 0 })]).why).toBeNull();
    const a = run({ users: 4 });
    const ok = whatIfSources([a, run({ users: 8, status: 'running' }), run({ simulated: sim })]);
    expect(ok).toEqual({ runIds: [a.id], model: 'llama-3.1-70b', why: null });
  });

  it("carries a simulated point's range (repeats spanned) and makes room for it on the axis", () => {
    const range = (e: [number, number], t: [number, number]) => ({ ...sim, range: { e2e_ns: e, ttft_ns_mean: t } });
    const s = compareSeries([
      run({ users: 4, e2e_ns: 5e9, ttft_ns_mean: 1e8, simulated: range([4e9, 6e9], [0.9e8, 1.2e8]) }),
      run({ users: 4, e2e_ns: 5.2e9, ttft_ns_mean: 1e8, simulated: range([4.5e9, 7e9], [0.8e8, 1.1e8]) }),
      run({ users: 8, e2e_ns: 9e9, ttft_ns_mean: 2e8, simulated: sim }),
      run({ users: 4, e2e_ns: 8e9 }),
    ]);
    const simulated = s.find((x) => x.kind === 'simulated')!;
    expect(simulated.points[0]!.range).toEqual({ e2e_ns: [4e9, 7e9], ttft_ns: [0.8e8, 1.2e8] });
    expect(simulated.points[1]!.range).toBeUndefined();
    expect(s.find((x) => x.kind === 'measured')!.points[0]!.range).toBeUndefined();
    // The axis reaches the range's top (7 s), not only the points' (9 s at 8 users is higher here).
    expect(chartDomains([simulated], 'e2e_ns').value[1]).toBeCloseTo(9e9 * 1.08);
    expect(chartDomains([{ ...simulated, points: [simulated.points[0]!] }], 'e2e_ns').value[1]).toBeCloseTo(7e9 * 1.08);
    expect(chartDomains([simulated], 'service_ttft_ns').value[1]).toBe(1);
  });

  it('says which factor a what-if could not determine and how far each point could move, or nothing', () => {
    expect(whatIfUncertainty({ uncertain: [], ranges: [] })).toEqual({ held: [], ranges: [] });
    const lines = whatIfUncertainty({
      uncertain: [
        { factor: 'prefill_step_ns', why: 'held at 15.8 ms, the middle of 0 to 31.6 ms' },
        { factor: 'a_newer_factor', why: 'held at 2' },
      ],
      ranges: [{ users: 4, e2eNs: [6.41e9, 6.63e9], ttftNsMean: [29.3e6, 53.46e6] }],
    });
    expect(lines).toEqual({
      held: [
        "Not determined by the measured runs: a prefill step's fixed cost, held at 15.8 ms, the middle of 0 to 31.6 ms.",
        'Not determined by the measured runs: a_newer_factor, held at 2.',
      ],
      ranges: ['Users 4 could be: E2E 6.410 s to 6.630 s, mean TTFT 29.30 ms to 53.46 ms.'],
    });
  });
});
