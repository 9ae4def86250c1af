/**
 * Compare's data: runs grouped into one series per host and configuration (the seed's chart: TTFT
 * and E2E against the number of users), measured and simulated (what-if) kept apart and labelled,
 * and series grouped by model, since only one model's series share a chart. Pure.
 */
import type { RunListing, WhatIfResult } from '../../shared/api';
import { formatBytes, formatCount, formatNs } from '../../shared/format';
import { calibrationFactorName } from './calibration-names';

export interface SeriesPoint {
  users: number;
  /** Queued TTFT (queued → first token), mean over the timed rounds. */
  ttft_ns: number | null;
  /** Service TTFT (admitted → first token), mean over the timed rounds. */
  service_ttft_ns: number | null;
  e2e_ns: number | null;
  runId: string | null;
  /** A simulated point's range where the calibration held a factor (low, high, ns), per metric it was computed for. */
  range?: Partial<Record<SeriesMetric, [number, number]>>;
}

/** What a Compare chart plots against users. */
export type SeriesMetric = 'ttft_ns' | 'service_ttft_ns' | 'e2e_ns';

export interface Series {
  key: string;
  label: string;
  /** A simulated series is drawn dashed and its label says "simulated". */
  kind: 'measured' | 'simulated';
  model: string | null;
  points: SeriesPoint[];
}

/** One chart group: a model's series, with the user counts and values their axes must span. */
export interface ModelGroup {
  model: string | null;
  series: Series[];
}

/**
 * One line per host and configuration: host, GPU, model, engine, context length, the pools (a
 * capped GPU pool's size, the host pool's size or "no host pool (recompute)", as in the seed's
 * with/without runs, and a disk tier's size): runs that differ in any of these never share a point.
 * A simulated run's line names the card it was simulated on and the card it was calibrated on.
 */
export function seriesKey(r: RunListing): string {
  const s = r.simulated;
  const parts = s
    ? [`SIMULATED on ${s.profileName}`, r.model, s.sourceGpu ? `from ${s.sourceGpu}` : null]
    : [r.host, r.gpu, r.model, r.engine];
  const out = parts.filter((x): x is string => !!x);
  if (typeof r.context_tokens === 'number') out.push(`${formatCount(r.context_tokens)} ctx`);
  if (typeof r.gpu_kv_bytes === 'number' && r.gpu_kv_bytes > 0) out.push(`GPU pool ${formatBytes(r.gpu_kv_bytes)}`);
  if (r.host_kv_bytes === 0) out.push('no host pool (recompute)');
  else if (typeof r.host_kv_bytes === 'number') out.push(`host pool ${formatBytes(r.host_kv_bytes)}`);
  if (typeof r.disk_kv_bytes === 'number' && r.disk_kv_bytes > 0) out.push(`+ disk tier ${formatBytes(r.disk_kv_bytes)}`);
  return out.join(' · ');
}

/**
 * Series from runs (only finished runs with a user count). Several runs at one user count in a
 * series (repeats) are averaged, and the table lists each.
 */
export function compareSeries(runs: readonly RunListing[]): Series[] {
  const by = new Map<string, { kind: Series['kind']; model: string | null; m: Map<number, RunListing[]> }>();
  for (const r of runs) {
    if (r.users === null || (r.e2e_ns === null && r.ttft_ns_mean === null)) continue;
    const k = seriesKey(r);
    const entry = by.get(k) ?? { kind: r.simulated ? ('simulated' as const) : ('measured' as const), model: r.model, m: new Map<number, RunListing[]>() };
    entry.m.set(r.users, [...(entry.m.get(r.users) ?? []), r]);
    by.set(k, entry);
  }
  const mean = (xs: Array<number | null>) => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  };
  return [...by.entries()]
    .sort((a, b) => (a[1].kind === b[1].kind ? a[0].localeCompare(b[0]) : a[1].kind === 'measured' ? -1 : 1))
    .map(([key, { kind, model, m }]) => ({
      key,
      label: key,
      kind,
      model,
      points: [...m.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([users, rs]) => {
          const point: SeriesPoint = {
            users,
            ttft_ns: mean(rs.map((r) => r.ttft_ns_mean)),
            service_ttft_ns: mean(rs.map((r) => r.service_ttft_ns_mean ?? null)),
            e2e_ns: mean(rs.map((r) => r.e2e_ns)),
            runId: rs.length === 1 ? rs[0]!.id : null,
          };
          // Repeats at one count: the range spans all of theirs.
          const ranges = rs.map((r) => r.simulated?.range).filter((x): x is NonNullable<typeof x> => !!x);
          if (ranges.length > 0) {
            const span = (k: 'e2e_ns' | 'ttft_ns_mean'): [number, number] => [Math.min(...ranges.map((x) => x[k][0])), Math.max(...ranges.map((x) => x[k][1]))];
            point.range = { e2e_ns: span('e2e_ns'), ttft_ns: span('ttft_ns_mean') };
          }
          return point;
        }),
    }));
}

/** Series by model, in the order their models first appear: a chart never mixes two models. */
export function groupByModel(series: readonly Series[]): ModelGroup[] {
  const groups = new Map<string | null, Series[]>();
  for (const s of series) groups.set(s.model, [...(groups.get(s.model) ?? []), s]);
  return [...groups.entries()].map(([model, ss]) => ({ model, series: ss }));
}

/**
 * The axes' domains for one group's chart of `metric`: users from the fewest to the most the
 * series have (a single count gets ±1), values from 0 to the largest (a simulated point's range
 * included) with 8% headroom.
 */
export function chartDomains(series: readonly Series[], metric: SeriesMetric): { users: [number, number]; value: [number, number] } {
  const pts = series.flatMap((s) => s.points.filter((p) => p[metric] !== null));
  if (pts.length === 0) return { users: [0, 1], value: [0, 1] };
  const lo = Math.min(...pts.map((p) => p.users));
  const hi = Math.max(...pts.map((p) => p.users));
  const top = Math.max(...pts.map((p) => Math.max(p[metric]!, p.range?.[metric]?.[1] ?? 0)));
  return { users: lo === hi ? [Math.max(0, lo - 1), hi + 1] : [lo, hi], value: [0, top * 1.08 || 1] };
}

/**
 * Which of the chosen runs a what-if can replay: measured runs of one model. `why` says what
 * stops it (no run chosen, only simulated runs, several models).
 */
export function whatIfSources(runs: readonly RunListing[]): { runIds: string[]; model: string | null; why: string | null } {
  const measured = runs.filter((r) => !r.simulated && r.users !== null && r.status === 'ok');
  if (runs.length === 0) return { runIds: [], model: null, why: 'choose a run or a sweep in the library first (its Compare link)' };
  if (measured.length === 0) return { runIds: [], model: null, why: 'the chosen runs are simulated or unfinished: a what-if replays finished measured runs' };
  const withDisk = measured.filter((r) => (r.disk_kv_bytes ?? 0) > 0);
  if (withDisk.length > 0) {
    return { runIds: [], model: null, why: `${withDisk.length === measured.length ? 'the chosen runs have' : `${withDisk.length} of the chosen runs ${withDisk.length === 1 ? 'has' : 'have'}`} a disk tier, which the what-if simulator does not model: choose runs without one` };
  }
  const models = [...new Set(measured.map((r) => r.model))];
  if (models.length > 1) return { runIds: [], model: null, why: `the chosen runs are of ${models.length} models (${models.join(', ')}): choose one model's runs` };
  const gpus = [...new Set(measured.map((r) => r.gpu))];
  if (gpus.length > 1) return { runIds: [], model: null, why: `the chosen runs ran on ${gpus.length} cards (${gpus.join(', ')}): choose one card's runs` };
  return { runIds: measured.map((r) => r.id), model: models[0] ?? null, why: null };
}

/**
 * What a what-if's source runs could not determine, a sentence per held factor (`held`), and how
 * far each simulated point could move for them (`ranges`, a sentence per users count): the What-if
 * panel's list under its result (both empty when every factor that matters here was measured).
 */
export function whatIfUncertainty(v: Pick<WhatIfResult, 'uncertain' | 'ranges'>): { held: string[]; ranges: string[] } {
  if (v.uncertain.length === 0) return { held: [], ranges: [] };
  return {
    held: v.uncertain.map((u) => `Not determined by the measured runs: ${calibrationFactorName(u.factor)}, ${u.why}.`),
    ranges: v.ranges.map(
      (r) => `Users ${formatCount(r.users)} could be: E2E ${formatNs(r.e2eNs[0])} to ${formatNs(r.e2eNs[1])}, mean TTFT ${formatNs(r.ttftNsMean[0])} to ${formatNs(r.ttftNsMean[1])}.`,
    ),
  };
}
