/**
 * A verdict on a sweep or an A/B pair of pool setups — a host pool against recompute, a disk tier
 * against the host pool alone: "for this workload on this card, the host pool cuts mean TTFT by
 * 8.3× at users ≥ 4 and costs nothing below", computed from the measured runs Compare shows, with
 * every number it rests on. Pure.
 *
 * Runs are paired when they differ only in their pools (the same host, card, model, engine and
 * context: Compare's series key without the pool setup) and were measured at the same user count
 * (repeats averaged, as the charts do). A user count counts as helped when the treatment's mean
 * queued TTFT is at least HELPS_RATIO times shorter and the tier it adds carried blocks there
 * (a pool that moved no block cannot have made the difference: the runs then differ by noise).
 */
import type { RunListing } from '../../shared/api';
import { formatCount } from '../../shared/format';
import { seriesKey } from './compare-model';

/** A user count is helped when the baseline's mean TTFT is at least this many times the treatment's. */
export const HELPS_RATIO = 1.1;
/** Below the helped user counts, a treatment within this factor of the baseline costs nothing. */
export const COSTS_NOTHING_RATIO = 1.05;

export type PoolSetup = 'recompute' | 'host' | 'host+disk';

/** A run's pools: no host pool (recompute), a host pool, or a host pool with a disk tier behind it. */
export function poolSetup(r: RunListing): PoolSetup {
  if (r.host_kv_bytes === 0) return 'recompute';
  return typeof r.disk_kv_bytes === 'number' && r.disk_kv_bytes > 0 ? 'host+disk' : 'host';
}

/** What a pair compares: the treatment's pools against the baseline's, the tier that makes the difference and the move that shows it carried blocks. */
interface Comparison {
  baseline: PoolSetup;
  treatment: PoolSetup;
  /** "the host pool", "the disk tier". */
  what: string;
  baselineLabel: string;
  treatmentLabel: string;
  /** The tier pair (RunListing.tier_moves key) whose moves show the treatment's tier in use. */
  usedMove: string;
  /** Only when the group has no run of this setup (then the two tiers are judged together). */
  unless?: PoolSetup;
}

const COMPARISONS: readonly Comparison[] = [
  { baseline: 'recompute', treatment: 'host', what: 'the host pool', baselineLabel: 'recompute (no host pool)', treatmentLabel: 'host pool', usedMove: 'host>gpu' },
  { baseline: 'host', treatment: 'host+disk', what: 'the disk tier', baselineLabel: 'host pool, no disk tier', treatmentLabel: 'host pool + disk tier', usedMove: 'disk>host' },
  { baseline: 'recompute', treatment: 'host+disk', what: 'the host pool with a disk tier', baselineLabel: 'recompute (no host pool)', treatmentLabel: 'host pool + disk tier', usedMove: 'host>gpu', unless: 'host' },
];

/** One side of a point: its runs at that user count and their mean queued TTFT. */
export interface VerdictSide {
  runIds: string[];
  ttft_ns: number;
}

export interface VerdictPoint {
  users: number;
  baseline: VerdictSide;
  treatment: VerdictSide;
  /** baseline ÷ treatment mean TTFT: above 1, the treatment is faster. */
  ratio: number;
  /** Whether the treatment's tier carried blocks in its runs here (null: a run does not say). */
  used: boolean | null;
  helps: boolean;
}

export interface Verdict {
  /** The series key both sides share (host, card, model, engine, context). */
  scope: string;
  model: string | null;
  what: string;
  baselineLabel: string;
  treatmentLabel: string;
  points: VerdictPoint[];
  /** The fewest users from which every measured count is helped; null when the most users measured are not. */
  from: number | null;
  text: string;
}

const measured = (r: RunListing): r is RunListing & { users: number; ttft_ns_mean: number } => !r.simulated && r.status === 'ok' && r.users !== null && r.ttft_ns_mean !== null;

/** "8.3×", "2.1–8.3×". */
function factor(ratios: number[]): string {
  const lo = Math.min(...ratios).toFixed(1);
  const hi = Math.max(...ratios).toFixed(1);
  return lo === hi ? `${hi}×` : `${lo}–${hi}×`;
}

const pct = (x: number) => `${((x - 1) * 100).toFixed(0)}%`;

/** The sentence a verdict says, from its points. */
function sentence(what: string, points: VerdictPoint[], from: number | null): string {
  const last = points[points.length - 1]!;
  if (from === null) {
    const why = last.used === false ? ', but it moved no block there' : '';
    return `For this workload on this card, ${what} does not cut mean TTFT at the most users measured (users ${formatCount(last.users)}: ${last.ratio.toFixed(2)}×${why}).`;
  }
  const helped = points.filter((p) => p.users >= from);
  const below = points.filter((p) => p.users < from);
  let tail: string;
  if (below.length === 0) tail = points.length === 1 ? ' (the one user count measured with both)' : ' (every user count measured)';
  else {
    // The treatment's cost below: its TTFT over the baseline's, where that is above the tolerance.
    const costs = below.map((p) => ({ p, cost: p.treatment.ttft_ns / p.baseline.ttft_ns })).filter((c) => c.cost > COSTS_NOTHING_RATIO);
    if (costs.length === 0) tail = ' and costs nothing below';
    else {
      const worst = costs.reduce((a, b) => (b.cost > a.cost ? b : a));
      tail = ` and costs up to ${pct(worst.cost)} below (users ${formatCount(worst.p.users)})`;
    }
  }
  const where = points.length === 1 ? `${formatCount(from)} users` : `users ≥ ${formatCount(from)}`;
  return `For this workload on this card, ${what} cuts mean TTFT by ${factor(helped.map((p) => p.ratio))} at ${where}${tail}.`;
}

/** Every verdict the chosen runs support: one per pair of pool setups measured at a common user count. */
export function verdicts(runs: readonly RunListing[]): Verdict[] {
  const groups = new Map<string, Map<PoolSetup, Array<RunListing & { users: number; ttft_ns_mean: number }>>>();
  for (const r of runs) {
    if (!measured(r)) continue;
    const scope = seriesKey({ ...r, host_kv_bytes: null, disk_kv_bytes: null });
    const bySetup = groups.get(scope) ?? new Map();
    const setup = poolSetup(r);
    bySetup.set(setup, [...(bySetup.get(setup) ?? []), r]);
    groups.set(scope, bySetup);
  }
  const out: Verdict[] = [];
  for (const [scope, bySetup] of groups) {
    for (const c of COMPARISONS) {
      const base = bySetup.get(c.baseline);
      const treat = bySetup.get(c.treatment);
      if (!base || !treat || (c.unless && bySetup.has(c.unless))) continue;
      const users = [...new Set(base.map((r) => r.users))].filter((u) => treat.some((r) => r.users === u)).sort((a, b) => a - b);
      if (users.length === 0) continue;
      const side = (rs: typeof base, u: number): VerdictSide => {
        const at = rs.filter((r) => r.users === u);
        return { runIds: at.map((r) => r.id), ttft_ns: at.reduce((a, r) => a + r.ttft_ns_mean, 0) / at.length };
      };
      const points = users.map((u): VerdictPoint => {
        const b = side(base, u);
        const t = side(treat, u);
        const moved = treat.filter((r) => r.users === u).map((r) => (r.tier_moves ? (r.tier_moves[c.usedMove] ?? 0) > 0 : null));
        const used = moved.includes(false) ? false : moved.includes(null) ? null : true;
        const ratio = b.ttft_ns / t.ttft_ns;
        return { users: u, baseline: b, treatment: t, ratio, used, helps: used !== false && ratio >= HELPS_RATIO };
      });
      let from: number | null = null;
      for (let i = points.length - 1; i >= 0 && points[i]!.helps; i--) from = points[i]!.users;
      out.push({ scope, model: base[0]!.model, what: c.what, baselineLabel: c.baselineLabel, treatmentLabel: c.treatmentLabel, points, from, text: sentence(c.what, points, from) });
    }
  }
  return out;
}
