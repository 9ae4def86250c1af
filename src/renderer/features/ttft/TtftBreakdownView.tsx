/**
 * Where TTFT went (shared/ttft-breakdown.ts, the numbers the CSV and Perfetto exports carry too):
 * one request's parts as a bar and a table (Timeline, when a request is selected), and each
 * round's mean parts as stacked bars (Summary). A part the log does not record says so; nothing
 * is estimated.
 */
import { scaleBand, scaleLinear } from 'd3';
import { axisNsFormat, formatBandwidth, formatBytes, formatCount, formatNs } from '../../../shared/format';
import { partNs, TTFT_PART_LABEL, TTFT_TIME_PARTS, type RoundBreakdown, type TtftBreakdown, type TtftTimePart } from '../../../shared/ttft-breakdown';
import type { VizTheme } from '../../viz/ctx2d';

const NOT_RECORDED = 'not recorded';

/** Each time part's colour: the disk's and the host link's as in the timeline's lanes. */
export function partColor(theme: VizTheme, part: TtftTimePart): string {
  switch (part) {
    case 'queued':
      return theme.muted;
    case 'disk_promote':
      return theme.disk;
    case 'host_reload':
      return theme.h2d;
    case 'recompute':
      return theme.accent;
    case 'other':
      return theme.d2h;
    case 'unsplit':
      return theme.users[9] ?? theme.other;
  }
}

/** The parts a breakdown of this source stacks: the engine's split, or queued and the unsplit rest. */
export const partsOf = (source: TtftBreakdown['source'] | RoundBreakdown['source']): readonly TtftTimePart[] =>
  source === 'recorded' ? TTFT_TIME_PARTS.filter((p) => p !== 'unsplit') : (['queued', 'unsplit'] as const);

const count = (n: number | null) => (n === null ? NOT_RECORDED : formatCount(n));
const bytes = (n: number | null) => (n === null ? NOT_RECORDED : formatBytes(n));
const time = (n: number | null) => (n === null ? NOT_RECORDED : formatNs(n));

/** One request's breakdown: a bar of its time parts and a table of every part. */
export function RequestBreakdown({ b, theme }: { b: TtftBreakdown; theme: VizTheme }) {
  if (b.source === 'none') return <p className="muted" data-testid="ttft-breakdown">No first token: no TTFT to break down.</p>;
  const parts = partsOf(b.source);
  const total = b.ttft_ns ?? 0;
  let x = 0;
  return (
    <div className="ttft-breakdown" data-testid="ttft-breakdown" data-source={b.source}>
      <svg width="100%" height={14} viewBox={`0 0 1000 14`} preserveAspectRatio="none" role="img" aria-label="TTFT by part">
        {parts.map((p) => {
          const ns = partNs(b, p) ?? 0;
          const w = total > 0 ? (ns / total) * 1000 : 0;
          const r = (
            <rect key={p} x={x} y={0} width={Math.max(0, w)} height={14} fill={partColor(theme, p)} data-part={p} data-ns={ns}>
              <title>{`${TTFT_PART_LABEL[p]}: ${formatNs(ns)}`}</title>
            </rect>
          );
          x += w;
          return r;
        })}
      </svg>
      <table className="ttft-parts">
        <thead>
          <tr>
            <th>TTFT {formatNs(b.ttft_ns)}</th>
            <th className="num">time</th>
            <th className="num">blocks</th>
            <th className="num">bytes</th>
            <th className="num">rate</th>
            <th className="num">tokens</th>
          </tr>
        </thead>
        <tbody>
          <tr data-part="queued">
            <th><i style={{ background: partColor(theme, 'queued') }} /> queued</th>
            <td className="num">{time(b.queued_ns)}</td>
            <td colSpan={4} />
          </tr>
          <tr data-part="gpu_hit">
            <th>hit on the GPU</th>
            <td className="num muted">–</td>
            <td className="num">{count(b.gpu_hit.blocks)}</td>
            <td />
            <td />
            <td className="num">{count(b.gpu_hit.tokens)}</td>
          </tr>
          <tr data-part="host_reload">
            <th><i style={{ background: partColor(theme, 'host_reload') }} /> reloaded from host</th>
            <td className="num">{time(b.host_reload.ns)}</td>
            <td className="num">{count(b.host_reload.blocks)}</td>
            <td className="num">{bytes(b.host_reload.bytes)}</td>
            <td className="num" title={b.disk_promote.blocks ? 'pipelined behind the disk reads: its time is the tail after the last read, not a copy rate' : 'bytes over the reload time'}>
              {b.host_reload_bytes_per_s === null ? '–' : formatBandwidth(b.host_reload_bytes_per_s)}
            </td>
            <td className="num">{count(b.host_reload.tokens)}</td>
          </tr>
          <tr data-part="disk_promote">
            <th><i style={{ background: partColor(theme, 'disk_promote') }} /> promoted from disk</th>
            <td className="num">{time(b.disk_promote.ns)}</td>
            <td className="num">{count(b.disk_promote.blocks)}</td>
            <td className="num">{bytes(b.disk_promote.bytes)}</td>
            <td />
            <td className="num">{count(b.disk_promote.tokens)}</td>
          </tr>
          <tr data-part="recompute">
            <th><i style={{ background: partColor(theme, 'recompute') }} /> recomputed</th>
            <td className="num">{time(b.recompute.ns)}</td>
            <td />
            <td />
            <td />
            <td className="num">{count(b.recompute.tokens)}</td>
          </tr>
          {b.source === 'recorded' ? (
            <tr data-part="other">
              <th><i style={{ background: partColor(theme, 'other') }} /> {TTFT_PART_LABEL.other}</th>
              <td className="num">{time(b.other_ns)}</td>
              <td colSpan={4} />
            </tr>
          ) : (
            <tr data-part="unsplit">
              <th><i style={{ background: partColor(theme, 'unsplit') }} /> {TTFT_PART_LABEL.unsplit}</th>
              <td className="num">{time(b.unsplit_ns)}</td>
              <td colSpan={4} />
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}

const W = 520;
const H = 240;
const M = { l: 64, r: 12, t: 12, b: 34 };

/** Each round's mean TTFT split by part, as stacked bars. */
export function RoundBreakdownChart({ rounds, theme }: { rounds: RoundBreakdown[]; theme: VizTheme }) {
  const stackable = rounds.filter((r) => r.source !== 'mixed');
  if (stackable.length === 0) return <p className="empty">No request reached its first token.</p>;
  const recorded = stackable.some((r) => r.source === 'recorded');
  const parts = TTFT_TIME_PARTS.filter((p) => stackable.some((r) => partsOf(r.source).includes(p)));
  const x = scaleBand<number>()
    .domain(stackable.map((r) => r.round))
    .range([M.l, W - M.r])
    .padding(0.25);
  const y = scaleLinear()
    .domain([0, Math.max(...stackable.map((r) => r.ttft_ns_mean)) * 1.05 || 1])
    .nice()
    .range([H - M.b, M.t]);
  const ticks = y.ticks(4);
  const tick = axisNsFormat(ticks[ticks.length - 1] ?? 0, ticks.length > 1 ? ticks[1]! - ticks[0]! : 0);
  return (
    <figure className="chart" data-testid="ttft-breakdown-chart" data-source={recorded ? 'recorded' : 'derived'}>
      <figcaption>Mean queued TTFT per round, by part</figcaption>
      <svg width={W} height={H} role="img" aria-label="Mean TTFT per round, split by part">
        {ticks.map((t) => (
          <g key={t}>
            <line x1={M.l} x2={W - M.r} y1={y(t)} y2={y(t)} className="gridline" />
            <text x={M.l - 6} y={y(t)} textAnchor="end" dominantBaseline="middle" className="tick">
              {tick(t)}
            </text>
          </g>
        ))}
        {stackable.map((r) => {
          let top = 0;
          return (
            <g key={r.round} data-round={r.round}>
              {partsOf(r.source).map((p) => {
                const ns = r.mean[p] ?? 0;
                const y0 = y(top);
                top += ns;
                return (
                  <rect key={p} x={x(r.round)} width={x.bandwidth()} y={y(top)} height={Math.max(0, y0 - y(top))} fill={partColor(theme, p)} data-part={p} data-ns={ns}>
                    <title>{`round ${r.round}: ${TTFT_PART_LABEL[p]} ${formatNs(ns)} (mean of ${r.requests})`}</title>
                  </rect>
                );
              })}
              <text x={x(r.round)! + x.bandwidth() / 2} y={H - M.b + 14} textAnchor="middle" className="tick">
                {r.round === 0 ? '0 (ctx)' : r.round}
              </text>
            </g>
          );
        })}
        <text x={(M.l + W - M.r) / 2} y={H - 4} textAnchor="middle" className="axis-label">
          round
        </text>
      </svg>
      <ul className="legend">
        {parts.map((p) => (
          <li key={p} data-legend={p}>
            <i style={{ background: partColor(theme, p) }} /> {TTFT_PART_LABEL[p]}
          </li>
        ))}
      </ul>
      {!recorded && <p className="muted">This log records no ttft_parts: the time from admission to the first token is not split by tier (the token counts per request are in the Timeline and the CSV export).</p>}
    </figure>
  );
}
