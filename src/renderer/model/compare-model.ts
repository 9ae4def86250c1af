/**
 * Compare's data: runs grouped into one series per host/configuration (the seed's chart: TTFT and
 * E2E against the number of users), plus projection series from projection.json files, kept apart
 * and labelled so a projection is never read as a measurement. Pure.
 */
import type { ProjectionFile, RunListing } from '../../shared/api';
import { formatCount } from '../../shared/format';

export interface SeriesPoint {
  users: number;
  ttft_ns: number | null;
  e2e_ns: number | null;
  runId: string | null;
}

export interface Series {
  key: string;
  label: string;
  kind: 'measured' | 'projection';
  points: SeriesPoint[];
}

/**
 * One line per host and configuration: host, GPU, model, engine, context length, and whether a
 * host pool was there (the recompute baseline is its own line, as in the seed's with/without runs).
 */
export function seriesKey(r: RunListing): string {
  const parts = [r.host, r.gpu, r.model, r.engine].filter((x): x is string => !!x);
  if (typeof r.context_tokens === 'number') parts.push(`${formatCount(r.context_tokens)} ctx`);
  if (r.host_kv_bytes === 0) parts.push('no host pool (recompute)');
  return parts.join(' · ');
}

/**
 * Measured series from runs (only finished runs with a user count). Several runs at one user count
 * in a series (repeats) are averaged, and the table lists each.
 */
export function measuredSeries(runs: readonly RunListing[]): Series[] {
  const by = new Map<string, Map<number, RunListing[]>>();
  for (const r of runs) {
    if (r.users === null || (r.e2e_ns === null && r.ttft_ns_mean === null)) continue;
    const k = seriesKey(r);
    const m = by.get(k) ?? new Map<number, RunListing[]>();
    m.set(r.users, [...(m.get(r.users) ?? []), r]);
    by.set(k, m);
  }
  const mean = (xs: Array<number | null>) => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  };
  return [...by.entries()]
    .sort((a, b) => a[0].localeCompare(b[0]))
    .map(([key, m]) => ({
      key,
      label: key,
      kind: 'measured' as const,
      points: [...m.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([users, rs]) => ({ users, ttft_ns: mean(rs.map((r) => r.ttft_ns_mean)), e2e_ns: mean(rs.map((r) => r.e2e_ns)), runId: rs.length === 1 ? rs[0]!.id : null })),
    }));
}

export function projectionSeries(files: readonly ProjectionFile[]): Series[] {
  const out: Series[] = [];
  for (const f of files) {
    if (!f.ok) continue;
    out.push({
      key: `projection:${f.path}`,
      label: f.doc.label,
      kind: 'projection',
      points: f.doc.points.map((p) => ({ users: p.users, ttft_ns: p.projected.ttft_ns_mean, e2e_ns: p.projected.e2e_ns, runId: null })),
    });
  }
  return out;
}
