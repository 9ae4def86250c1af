/**
 * Projection files (issue 9): "what would these measured runs take on a link of another
 * bandwidth". Written by bench/projection.py (`projection_doc`) beside a sweep's runs or in bench
 * results; read by the Compare view, which draws them as dashed series labelled "projection" —
 * never as measurements.
 *
 * Accepted shape (kind "kvscope.projection", version 1):
 *   { label, link_bytes_per_s?, series?|host?|card?, seed_ratios?, points: [
 *       { users, measured: { e2e_ns, ttft_ns_mean | ttft: { mean } }, projected: { same keys } } ] }
 * A point may also give flat keys (`e2e_ns`, `ttft_ns_mean`, `projected_e2e_ns`,
 * `projected_ttft_ns_mean`) so a hand-made or older file still reads.
 */

export interface ProjectionPoint {
  users: number;
  measured: { e2e_ns: number | null; ttft_ns_mean: number | null };
  projected: { e2e_ns: number | null; ttft_ns_mean: number | null };
}

export interface ProjectionDoc {
  label: string;
  /** Which measured series it projects (host or card), when the file says. */
  series: string | null;
  link_bytes_per_s: number | null;
  points: ProjectionPoint[];
  seed_ratios: { ttft?: number; e2e?: number; past_users?: number; source?: string; why_they_differ?: string } | null;
  method: string | null;
}

export type ParsedProjection = { ok: true; error: null; doc: ProjectionDoc } | { ok: false; error: string; doc: null };

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function timings(o: unknown, flatPrefix: string, flat: Record<string, unknown>): { e2e_ns: number | null; ttft_ns_mean: number | null } {
  const r = (o && typeof o === 'object' ? o : {}) as Record<string, unknown>;
  const ttft = (r.ttft && typeof r.ttft === 'object' ? r.ttft : {}) as Record<string, unknown>;
  return {
    e2e_ns: num(r.e2e_ns) ?? num(flat[`${flatPrefix}e2e_ns`]),
    ttft_ns_mean: num(r.ttft_ns_mean) ?? num(ttft.mean) ?? num(flat[`${flatPrefix}ttft_ns_mean`]),
  };
}

/** Validates a parsed projection.json; the error names what is wrong. */
export function parseProjection(raw: unknown): ParsedProjection {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return { ok: false, error: 'not a JSON object', doc: null };
  const o = raw as Record<string, unknown>;
  if (o.kind !== undefined && o.kind !== 'kvscope.projection') return { ok: false, error: `kind is ${JSON.stringify(o.kind)}, not "kvscope.projection"`, doc: null };
  if (!Array.isArray(o.points)) return { ok: false, error: 'points: missing or not an array', doc: null };
  const points: ProjectionPoint[] = [];
  for (const [i, p] of o.points.entries()) {
    if (!p || typeof p !== 'object') return { ok: false, error: `points[${i}]: not an object`, doc: null };
    const pr = p as Record<string, unknown>;
    const users = num(pr.users);
    if (users === null || users < 1) return { ok: false, error: `points[${i}].users: not a positive number`, doc: null };
    points.push({ users, measured: timings(pr.measured, '', pr), projected: timings(pr.projected, 'projected_', pr) });
  }
  points.sort((a, b) => a.users - b.users);
  const label = typeof o.label === 'string' && o.label ? o.label : 'projection';
  const series = [o.series, o.host, o.card].find((v): v is string => typeof v === 'string' && v.length > 0) ?? null;
  return {
    ok: true,
    error: null,
    doc: {
      // The label always says "projection": the chart must never pass one off as a measurement.
      label: /projection/i.test(label) ? label : `projection: ${label}`,
      series,
      link_bytes_per_s: num(o.link_bytes_per_s),
      points,
      seed_ratios: o.seed_ratios && typeof o.seed_ratios === 'object' ? (o.seed_ratios as ProjectionDoc['seed_ratios']) : null,
      method: typeof o.method === 'string' ? o.method : null,
    },
  };
}
