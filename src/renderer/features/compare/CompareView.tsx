/**
 * Compare: TTFT and E2E against the number of users, one line per host/configuration, with the
 * table beside it (the seed's comparison chart). Projections (issue 9) are dashed and labelled
 * "projection". A few dozen marks, so React draws SVG and d3 supplies scales and paths.
 */
import { useEffect, useMemo, useRef, useState } from 'react';
import { chartsAsSvg, saveChartImage } from '../export/save-image';
import { line, max, scaleLinear } from 'd3';
import type { ProjectionFile, RunListing } from '../../../shared/api';
import { axisNsFormat, formatNs } from '../../../shared/format';
import { useApi } from '../../bridge/api-context';
import { useVizTheme } from '../../hooks';
import { routeHref } from '../../router';
import { measuredSeries, projectionSeries, type Series } from '../../model/compare-model';

const W = 460;
const H = 280;
const M = { l: 64, r: 16, t: 16, b: 36 };

function Chart({ title, series, metric, colors, testid }: { title: string; series: Series[]; metric: 'ttft_ns' | 'e2e_ns'; colors: Map<string, string>; testid: string }) {
  const pts = series.flatMap((s) => s.points.filter((p) => p[metric] !== null));
  const xMax = max(pts, (p) => p.users) ?? 1;
  const yMax = max(pts, (p) => p[metric]!) ?? 1;
  const x = scaleLinear().domain([0, Math.max(2, xMax)]).nice().range([M.l, W - M.r]);
  const y = scaleLinear().domain([0, yMax * 1.08 || 1]).nice().range([H - M.b, M.t]);
  const yTicks = y.ticks(5);
  const yTick = axisNsFormat(yTicks[yTicks.length - 1] ?? 0, yTicks.length > 1 ? yTicks[1]! - yTicks[0]! : 0);
  const path = line<{ users: number; v: number }>()
    .x((p) => x(p.users))
    .y((p) => y(p.v));
  return (
    <figure className="chart" data-testid={testid}>
      <figcaption>{title}</figcaption>
      <svg width={W} height={H} role="img" aria-label={title}>
        {yTicks.map((t) => (
          <g key={t}>
            <line x1={M.l} x2={W - M.r} y1={y(t)} y2={y(t)} className="gridline" />
            <text x={M.l - 6} y={y(t)} textAnchor="end" dominantBaseline="middle" className="tick">
              {yTick(t)}
            </text>
          </g>
        ))}
        {x.ticks(Math.min(8, Math.max(2, xMax))).filter(Number.isInteger).map((t) => (
          <text key={t} x={x(t)} y={H - M.b + 16} textAnchor="middle" className="tick">
            {t}
          </text>
        ))}
        <text x={(M.l + W - M.r) / 2} y={H - 4} textAnchor="middle" className="axis-label">
          users
        </text>
        {series.map((s) => {
          const ps = s.points.filter((p) => p[metric] !== null).map((p) => ({ users: p.users, v: p[metric]! }));
          const color = colors.get(s.key)!;
          return (
            <g key={s.key} className={`series ${s.kind}`} data-series={s.label} data-kind={s.kind}>
              <path d={path(ps) ?? ''} fill="none" stroke={color} strokeWidth={2} strokeDasharray={s.kind === 'projection' ? '6 4' : undefined} />
              {ps.map((p) => (
                <circle key={p.users} cx={x(p.users)} cy={y(p.v)} r={3.5} fill={s.kind === 'projection' ? 'none' : color} stroke={color}>
                  <title>{`${s.label}: ${p.users} users, ${formatNs(p.v)}`}</title>
                </circle>
              ))}
            </g>
          );
        })}
      </svg>
    </figure>
  );
}

export function CompareView({ runIds }: { runIds: string[] }) {
  const api = useApi();
  const theme = useVizTheme();
  const [runs, setRuns] = useState<RunListing[] | null>(null);
  const [projections, setProjections] = useState<ProjectionFile[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const chartsRef = useRef<HTMLDivElement>(null);
  useEffect(() => {
    void api.listRuns().then((r) => (r.ok ? setRuns(r.value) : setError(r.error.message)));
    void api.listProjections().then((r) => r.ok && setProjections(r.value));
  }, [api]);
  const chosen = useMemo(() => (runs ?? []).filter((r) => runIds.length === 0 || runIds.includes(r.id)), [runs, runIds]);
  const measured = useMemo(() => measuredSeries(chosen), [chosen]);
  const projected = useMemo(() => projectionSeries(projections), [projections]);
  const all = [...measured, ...projected];
  const colors = new Map(all.map((s, i) => [s.key, theme.users[i % theme.users.length]!]));
  if (error) return <p role="alert" className="error">Could not list runs: {error}</p>;
  if (!runs) return <p className="loading">Loading runs…</p>;
  const bad = projections.filter((p) => !p.ok);
  // A link can name runs since deleted or renamed away: say which, not just "0 selected runs".
  const missing = runIds.filter((id) => !runs.some((r) => r.id === id));
  return (
    <section className="compare-view">
      <h1>Compare</h1>
      <p className="muted">
        {runIds.length ? `${chosen.length} selected run${chosen.length === 1 ? '' : 's'}` : 'All runs with results'} · one line per host and configuration
        {projected.length ? ' · dashed lines are projections, not measurements' : ''} · <a href="#/runs">choose runs in the library</a>{' '}
        <button type="button" data-action="save-image" title="Save the charts as SVG" disabled={measured.length + projected.length === 0} onClick={() => chartsRef.current && void saveChartImage(api, 'compare', 'compare', chartsAsSvg(chartsRef.current), 'svg').then(setSaved)}>
          Save image…
        </button>
      </p>
      {missing.length > 0 && (
        <p className="warn" data-testid="compare-missing">
          {missing.length === 1 ? '1 selected run is' : `${missing.length} selected runs are`} not in the library (deleted, or a link from elsewhere): {missing.join(', ')}
        </p>
      )}
      {saved && (
        <p className="notice" role="status">
          {saved}
        </p>
      )}
      {measured.length === 0 && projected.length === 0 ? (
        <p className="empty">No finished runs with TTFT or E2E to compare yet. Run a sweep (users 2, 4, 8, …) from New run, or import runs.</p>
      ) : (
        <div className="compare-body">
          <div className="charts" ref={chartsRef}>
            <Chart title="TTFT (mean over the timed rounds) vs users" series={all} metric="ttft_ns" colors={colors} testid="chart-ttft" />
            <Chart title="E2E (rounds 1..R) vs users" series={all} metric="e2e_ns" colors={colors} testid="chart-e2e" />
            <ul className="legend">
              {all.map((s) => (
                <li key={s.key} className={s.kind}>
                  {/* A projection's label always says so (parseProjection sees to it): no second prefix. */}
                  <i style={{ borderColor: colors.get(s.key), borderStyle: s.kind === 'projection' ? 'dashed' : 'solid' }} /> {s.label}
                </li>
              ))}
            </ul>
          </div>
          <table className="compare-table" data-testid="compare-table">
            <thead>
              <tr>
                <th>Series</th>
                <th className="num">Users</th>
                <th className="num">TTFT mean</th>
                <th className="num">E2E</th>
              </tr>
            </thead>
            <tbody>
              {all.flatMap((s) =>
                s.points.map((p) => (
                  <tr key={`${s.key}/${p.users}`} className={s.kind}>
                    <td>
                      <i className="swatch" style={{ background: colors.get(s.key) }} />
                      {p.runId ? <a href={routeHref({ view: 'summary', runId: p.runId })}>{s.label}</a> : s.label}
                    </td>
                    <td className="num">{p.users}</td>
                    <td className="num">{formatNs(p.ttft_ns)}</td>
                    <td className="num">{formatNs(p.e2e_ns)}</td>
                  </tr>
                )),
              )}
            </tbody>
          </table>
        </div>
      )}
      {projections.filter((p) => p.ok && p.doc.seed_ratios).map((p) =>
        p.ok && p.doc.seed_ratios ? (
          <p key={p.path} className="muted projection-note">
            Seed's published ratios (measured on real hardware): {p.doc.seed_ratios.ttft}× TTFT, ~{p.doc.seed_ratios.e2e}× E2E past {p.doc.seed_ratios.past_users} users. {p.doc.seed_ratios.why_they_differ}
          </p>
        ) : null,
      )}
      {bad.map((p) => (
        <p key={p.path} className="warn">
          Projection file {p.path} was not read: {p.error}
        </p>
      ))}
    </section>
  );
}
