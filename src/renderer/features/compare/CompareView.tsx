/**
 * Compare: queued TTFT, service TTFT and E2E against the number of users, one line per host and configuration, with the
 * table beside it (the seed's comparison chart). One pair of charts per model: series of different
 * models never share axes, and each chart's axes span its own data. Simulated (what-if) series are
 * dashed and labelled "simulated"; the What-if action replays the chosen measured runs on another
 * card (docs/whatif.md). A few dozen marks, so React draws SVG and d3 supplies scales and paths.
 */
import { useEffect, useMemo, useRef, useState } from 'react';
import { chartsAsSvg, saveChartImage } from '../export/save-image';
import { line, scaleLinear } from 'd3';
import type { RunListing, WhatIfProfile } from '../../../shared/api';
import { formatNs } from '../../../shared/format';
import { NsGridlines } from '../../viz/ns-axis';
import { useApi } from '../../bridge/api-context';
import { useVizTheme } from '../../hooks';
import { routeHref } from '../../router';
import { chartDomains, compareSeries, groupByModel, whatIfSources, whatIfUncertainty, type Series, type SeriesMetric } from '../../model/compare-model';
import { calibrationCheckText } from '../../model/calibration-names';
import { TTFT_QUEUED_TITLE, TTFT_SERVICE_TITLE } from '../../model/ttft-names';
import { HELPS_RATIO, verdicts, type Verdict } from '../../model/verdict';

const W = 460;
const H = 280;
const M = { l: 64, r: 16, t: 16, b: 36 };

function Chart({ title, series, metric, colors, testid, model, tip }: { title: string; series: Series[]; metric: SeriesMetric; colors: Map<string, string>; testid: string; model: string; tip?: string }) {
  const dom = chartDomains(series, metric);
  const x = scaleLinear().domain(dom.users).nice().range([M.l, W - M.r]);
  const y = scaleLinear().domain(dom.value).nice().range([H - M.b, M.t]);
  const xTicks = x.ticks(Math.min(8, Math.max(2, dom.users[1] - dom.users[0]))).filter(Number.isInteger);
  const path = line<{ users: number; v: number }>()
    .x((p) => x(p.users))
    .y((p) => y(p.v));
  return (
    <figure className="chart" data-testid={testid} data-model={model}>
      <figcaption title={tip}>{title}</figcaption>
      <svg width={W} height={H} role="img" aria-label={`${title}, ${model}`}>
        <NsGridlines y={y} count={5} x0={M.l} x1={W - M.r} />
        {xTicks.map((t) => (
          <text key={t} x={x(t)} y={H - M.b + 16} textAnchor="middle" className="tick">
            {t}
          </text>
        ))}
        <text x={(M.l + W - M.r) / 2} y={H - 4} textAnchor="middle" className="axis-label">
          users
        </text>
        {series.map((s) => {
          const ps = s.points.filter((p) => p[metric] !== null).map((p) => ({ users: p.users, v: p[metric]!, range: p.range?.[metric] }));
          const color = colors.get(s.key)!;
          const dashed = s.kind === 'simulated';
          return (
            <g key={s.key} className={`series ${s.kind}`} data-series={s.label} data-kind={s.kind}>
              <path d={path(ps) ?? ''} fill="none" stroke={color} strokeWidth={2} strokeDasharray={dashed ? '6 4' : undefined} />
              {ps.map((p) =>
                p.range ? (
                  <g key={`range-${p.users}`} className="range" data-users={p.users}>
                    <line x1={x(p.users)} x2={x(p.users)} y1={y(p.range[0])} y2={y(p.range[1])} stroke={color} strokeWidth={1.5} />
                    <line x1={x(p.users) - 4} x2={x(p.users) + 4} y1={y(p.range[0])} y2={y(p.range[0])} stroke={color} strokeWidth={1.5} />
                    <line x1={x(p.users) - 4} x2={x(p.users) + 4} y1={y(p.range[1])} y2={y(p.range[1])} stroke={color} strokeWidth={1.5} />
                    <title>{`${s.label}: ${p.users} users could be ${formatNs(p.range[0])} to ${formatNs(p.range[1])} (what the measured runs could not determine)`}</title>
                  </g>
                ) : null,
              )}
              {ps.map((p) => (
                <circle key={p.users} cx={x(p.users)} cy={y(p.v)} r={3.5} fill={dashed ? 'none' : color} stroke={color}>
                  <title>{`${s.label}: ${p.users} users, ${formatNs(p.v)}${p.range ? ` (could be ${formatNs(p.range[0])} to ${formatNs(p.range[1])})` : ''}`}</title>
                </circle>
              ))}
            </g>
          );
        })}
      </svg>
    </figure>
  );
}

/** Up to this many users counts, each point's range is a line of the What-if result; more fold into one. */
const RANGES_LISTED = 4;

/** The What-if action: the chosen measured runs replayed on a card the simulator has a profile for. */
function WhatIfPanel({ chosen, runIds }: { chosen: RunListing[]; runIds: string[] }) {
  const api = useApi();
  const [profiles, setProfiles] = useState<WhatIfProfile[] | null>(null);
  const [profileError, setProfileError] = useState<string | null>(null);
  const [profile, setProfile] = useState('');
  const [users, setUsers] = useState('');
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ ok: boolean; text: string; uncertain?: { held: string[]; ranges: string[] } } | null>(null);
  const sources = useMemo(() => whatIfSources(chosen), [chosen]);
  useEffect(() => {
    void api.whatIfProfiles().then((r) => {
      if (!r.ok) return setProfileError(r.error.message);
      setProfiles(r.value);
      setProfile((p) => p || (r.value.find((x) => x.id === 'gh200-96') ?? r.value[0])?.id || '');
    });
  }, [api]);
  const run = async () => {
    setBusy(true);
    setResult(null);
    const r = await api.runWhatIf({ runIds: sources.runIds, profile, ...(users.trim() ? { users: users.trim() } : {}) });
    setBusy(false);
    if (!r.ok) return setResult({ ok: false, text: `What-if failed: ${r.error.message}` });
    const v = r.value;
    const checks = calibrationCheckText(v.selfCheck);
    setResult({
      ok: true,
      text: `Simulated ${v.runIds.length} run${v.runIds.length === 1 ? '' : 's'}; the GPU pool there holds ${v.gpuPool.usersItHolds} users' requests. Calibration, replayed on its own card: ${checks}.`,
      uncertain: whatIfUncertainty(v),
    });
    window.location.hash = routeHref({ view: 'compare', runIds: [...new Set([...runIds, ...v.runIds])] });
  };
  const card = profiles?.find((p) => p.id === profile);
  return (
    <section className="whatif-panel" aria-label="What-if">
      <h2>What-if: the same workload on another card</h2>
      {profileError ? (
        <p className="warn">What-if needs the agent's simulator, run with this machine's Python: {profileError}</p>
      ) : (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void run();
          }}
        >
          <label>
            Card{' '}
            <select data-action="whatif-profile" value={profile} onChange={(e) => setProfile(e.target.value)} disabled={!profiles || busy}>
              {(profiles ?? []).map((p) => (
                <option key={p.id} value={p.id}>
                  {p.name}
                </option>
              ))}
            </select>
          </label>{' '}
          <label>
            Users{' '}
            <input data-action="whatif-users" value={users} onChange={(e) => setUsers(e.target.value)} placeholder="as measured, or 2..16" size={10} disabled={busy} />
          </label>{' '}
          <button type="submit" data-action="whatif-run" disabled={!!sources.why || !profile || busy}>
            {busy ? 'Simulating…' : 'Simulate'}
          </button>
          <span className="muted">
            {' '}
            {sources.why ?? `${sources.runIds.length} measured run${sources.runIds.length === 1 ? '' : 's'} of ${sources.model ?? 'one model'} calibrate it`}
          </span>
        </form>
      )}
      {card && (
        <p className="muted whatif-card" title={Object.entries(card.numbers).map(([k, n]) => `${k}: ${n.value} (${n.basis}) — ${n.source}`).join('\n')}>
          {card.name}: {formatGib(card.numbers['memory_total_bytes']?.value)} GiB reported, HBM {formatTb(card.numbers['hbm_bytes_per_s']?.value)} TB/s, {card.link} copies{' '}
          {formatGb(card.numbers['link.h2d_bytes_per_s']?.value)} / {formatGb(card.numbers['link.d2h_bytes_per_s']?.value)} GB/s (every number's source in docs/whatif.md and on hover). A
          simulation, not a measurement: its runs say so wherever they are shown.
        </p>
      )}
      {result && (
        <div className={result.ok ? 'notice' : 'warn'} role="status" data-testid="whatif-result">
          <p>{result.text}</p>
          {result.uncertain && result.uncertain.held.length > 0 && (
            <ul className="whatif-uncertain" aria-label="What the measured runs could not determine">
              {result.uncertain.held.map((line) => (
                <li key={line}>{line}</li>
              ))}
              {result.uncertain.ranges.length > 0 && result.uncertain.ranges.length <= RANGES_LISTED && result.uncertain.ranges.map((line) => <li key={line}>{line}</li>)}
              {result.uncertain.ranges.length > RANGES_LISTED && (
                <li>
                  <details>
                    <summary>What each of the {result.uncertain.ranges.length} users counts could be (the bars on the charts)</summary>
                    <ul>
                      {result.uncertain.ranges.map((line) => (
                        <li key={line}>{line}</li>
                      ))}
                    </ul>
                  </details>
                </li>
              )}
            </ul>
          )}
        </div>
      )}
    </section>
  );
}

/** A verdict on a pair of pool setups, with the measured numbers it rests on beside it. */
function VerdictPanel({ v }: { v: Verdict }) {
  const runLinks = (ids: string[]) =>
    ids.map((id, i) => (
      <span key={id}>
        {i > 0 ? ', ' : ''}
        <a href={routeHref({ view: 'summary', runId: id })}>{ids.length === 1 ? 'run' : `run ${i + 1}`}</a>
      </span>
    ));
  return (
    <section className="verdict" data-testid="verdict" data-what={v.what} data-from={v.from ?? ''} aria-label={`Verdict: ${v.what}`}>
      <p>
        <strong>{v.text}</strong>
      </p>
      <p className="muted">
        {v.scope} · mean queued TTFT over the timed rounds, measured runs only; a user count counts when {v.what} is at least {HELPS_RATIO}× faster there and carried blocks (a tier that moved no block cannot have made
        the difference)
      </p>
      <table data-testid="verdict-table">
        <thead>
          <tr>
            <th className="num">Users</th>
            <th className="num">{v.baselineLabel}</th>
            <th className="num">{v.treatmentLabel}</th>
            <th className="num">baseline ÷ treatment</th>
            <th>{v.what} carried blocks</th>
          </tr>
        </thead>
        <tbody>
          {v.points.map((p) => (
            <tr key={p.users} data-users={p.users} data-helps={p.helps ? '1' : ''}>
              <td className="num">{p.users}</td>
              <td className="num">
                {formatNs(p.baseline.ttft_ns)} <span className="muted">({runLinks(p.baseline.runIds)})</span>
              </td>
              <td className="num">
                {formatNs(p.treatment.ttft_ns)} <span className="muted">({runLinks(p.treatment.runIds)})</span>
              </td>
              <td className="num">{p.ratio.toFixed(2)}×</td>
              <td>{p.used === null ? 'not recorded' : p.used ? 'yes' : 'no block moved through it'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

const formatGb = (v: number | undefined) => (v === undefined ? '?' : (v / 1e9).toFixed(0));
const formatGib = (v: number | undefined) => (v === undefined ? '?' : (v / 2 ** 30).toFixed(1));
const formatTb = (v: number | undefined) => (v === undefined ? '?' : (v / 1e12).toFixed(2));

export function CompareView({ runIds }: { runIds: string[] }) {
  const api = useApi();
  const theme = useVizTheme();
  const [runs, setRuns] = useState<RunListing[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const chartsRef = useRef<HTMLDivElement>(null);
  const idsKey = runIds.join(',');
  useEffect(() => {
    void api.listRuns().then((r) => (r.ok ? setRuns(r.value) : setError(r.error.message)));
  }, [api, idsKey]);
  const chosen = useMemo(() => (runs ?? []).filter((r) => runIds.length === 0 || runIds.includes(r.id)), [runs, runIds]);
  const all = useMemo(() => compareSeries(chosen), [chosen]);
  const groups = useMemo(() => groupByModel(all), [all]);
  const judged = useMemo(() => verdicts(chosen), [chosen]);
  const colors = new Map(all.map((s, i) => [s.key, theme.users[i % theme.users.length]!]));
  if (error) return <p role="alert" className="error">Could not list runs: {error}</p>;
  if (!runs) return <p className="loading">Loading runs…</p>;
  // A link can name runs since deleted or renamed away: say which, not just "0 selected runs".
  const missing = runIds.filter((id) => !runs.some((r) => r.id === id));
  const simulated = all.some((s) => s.kind === 'simulated');
  const ranged = all.some((s) => s.points.some((p) => p.range));
  return (
    <section className="compare-view">
      <h1>Compare</h1>
      <p className="muted">
        {runIds.length ? `${chosen.length} selected run${chosen.length === 1 ? '' : 's'}` : 'All runs with results'} · one line per host and configuration, one pair of charts per model
        {simulated ? ' · dashed lines are simulated (what-if), not measured' : ''}
        {ranged ? ' · a bar on a simulated point spans what the measured runs could not determine' : ''} · <a href="#/runs">choose runs in the library</a>{' '}
        <button type="button" data-action="save-image" title="Save the charts as SVG" disabled={all.length === 0} onClick={() => chartsRef.current && void saveChartImage(api, 'compare', 'compare', chartsAsSvg(chartsRef.current), 'svg').then(setSaved)}>
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
      <WhatIfPanel chosen={runIds.length ? chosen : []} runIds={runIds} />
      {all.length === 0 ? (
        <p className="empty">No finished runs with TTFT or E2E to compare yet. Run a sweep (users 2, 4, 8, …) from New run, or import runs.</p>
      ) : (
        <div className="compare-body">
          <div className="charts" ref={chartsRef}>
            {groups.map((g) => {
              const model = g.model ?? 'model not recorded';
              return (
                <div className="model-group" key={model} data-model={model}>
                  <h2>{model}</h2>
                  {judged
                    .filter((v) => (v.model ?? 'model not recorded') === model)
                    .map((v) => (
                      <VerdictPanel key={`${v.scope}/${v.what}`} v={v} />
                    ))}
                  <div className="charts">
                    <Chart title={`Queued TTFT (mean over the timed rounds) vs users · ${model}`} tip={TTFT_QUEUED_TITLE} series={g.series} metric="ttft_ns" colors={colors} testid="chart-ttft" model={model} />
                    <Chart title={`Service TTFT (mean over the timed rounds) vs users · ${model}`} tip={TTFT_SERVICE_TITLE} series={g.series} metric="service_ttft_ns" colors={colors} testid="chart-service-ttft" model={model} />
                    <Chart title={`E2E (rounds 1..R) vs users · ${model}`} series={g.series} metric="e2e_ns" colors={colors} testid="chart-e2e" model={model} />
                  </div>
                  <ul className="legend">
                    {g.series.map((s) => (
                      <li key={s.key} className={s.kind}>
                        <i style={{ borderColor: colors.get(s.key), borderStyle: s.kind === 'simulated' ? 'dashed' : 'solid' }} /> {s.label}
                      </li>
                    ))}
                  </ul>
                </div>
              );
            })}
          </div>
          <table className="compare-table" data-testid="compare-table">
            <thead>
              <tr>
                <th>Series</th>
                <th className="num">Users</th>
                <th className="num" title={TTFT_QUEUED_TITLE}>Queued TTFT</th>
                <th className="num" title={TTFT_SERVICE_TITLE}>Service TTFT</th>
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
                    <td className="num">{formatNs(p.service_ttft_ns)}</td>
                    <td className="num">{formatNs(p.e2e_ns)}</td>
                  </tr>
                )),
              )}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
