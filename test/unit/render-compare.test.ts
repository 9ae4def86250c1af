/** Compare's series: one line per host and configuration; projections kept apart and labelled. */
import { describe, expect, it } from 'vitest';
import type { ProjectionFile, RunListing } from '../../src/shared/api';
import { measuredSeries, projectionSeries } from '../../src/renderer/model/compare-model';
import { parseProjection } from '../../src/shared/projection';

const run = (o: Partial<RunListing>): RunListing => ({
  id: `r${Math.random()}`,
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

describe('compare series', () => {
  it('groups by host and configuration, averages repeats, skips runs without results', () => {
    const s = measuredSeries([
      run({ users: 2 }),
      run({ users: 4, e2e_ns: 3e9 }),
      run({ users: 4, e2e_ns: 5e9 }),
      run({ users: 4, host_kv_bytes: 0 }),
      run({ users: 2, host: 'gh200' }),
      run({ users: 8, e2e_ns: null, ttft_ns_mean: null }),
    ]);
    expect(s.map((x) => x.label)).toEqual([
      'gh200 · NVIDIA H100 80GB HBM3 · llama-3.1-70b · torch · 16,000 ctx',
      'h100 · NVIDIA H100 80GB HBM3 · llama-3.1-70b · torch · 16,000 ctx',
      'h100 · NVIDIA H100 80GB HBM3 · llama-3.1-70b · torch · 16,000 ctx · no host pool (recompute)',
    ]);
    const h100 = s[1]!;
    expect(h100.points.map((p) => [p.users, p.e2e_ns])).toEqual([
      [2, 1e9],
      [4, 4e9],
    ]);
    expect(h100.points[1]!.runId).toBeNull(); // two runs at 4 users: no single run to link
  });

  it('turns parsed projection files into dashed series labelled as projections, skipping broken files', () => {
    const good = parseProjection({ kind: 'kvscope.projection', label: 'copies at 900 GB/s', points: [{ users: 4, measured: { e2e_ns: 9, ttft_ns_mean: 3 }, projected: { e2e_ns: 4, ttft_ns_mean: 1 } }] });
    const bad = parseProjection({ points: 'x' });
    expect(bad.ok).toBe(false);
    const files = [{ path: '/a/projection.json', ...good }, { path: '/b/projection.json', ...bad }] as ProjectionFile[];
    const s = projectionSeries(files);
    expect(s).toHaveLength(1);
    expect(s[0]!.kind).toBe('projection');
    expect(s[0]!.label).toMatch(/^projection: /);
    expect(s[0]!.points).toEqual([{ users: 4, ttft_ns: 1, e2e_ns: 4, runId: null }]);
  });
});
