/**
 * Where TTFT went (shared/ttft-breakdown.ts, the numbers the CSV and Perfetto exports carry too):
 * one request's parts as a bar and a table (Timeline, when a request is selected), and each
 * round's mean parts as stacked bars (Summary). A part the log does not record says so; nothing
 * is estimated.
 */
import { scaleBand, scaleLinear } from 'd3';
import { formatBandwidth, formatBytes, formatCount, formatNs } from '../../../shared/format';
import { NsGridlines } from '../../viz/ns-axis';
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

/** A row of a request's table: each cell as shown ("" where the part has no such quantity). */
interface PartRow {
  part: string;
  label: string;
  swatch: TtftTimePart | null;
  time: string;
  blocks: string;
  bytes: string;
  rate: string;
  rateTitle?: string;
  tokens: string;
}

/** The table's rows: every part, in critical-path order, with what the log says of it. */
function rowsOf(b: TtftBreakdown): PartRow[] {
  const empty = { blocks: '', bytes: '', rate: '', tokens: '' };
  const last: PartRow =
    b.source === 'recorded'
      ? { part: 'other', label: TTFT_PART_LABEL.other, swatch: 'other', time: time(b.other_ns), ...empty }
      : { part: 'unsplit', label: TTFT_PART_LABEL.unsplit, swatch: 'unsplit', time: time(b.unsplit_ns), ...empty };
  return [
    { part: 'queued', label: TTFT_PART_LABEL.queued, swatch: 'queued', time: time(b.queued_ns), ...empty },
    { part: 'gpu_hit', label: 'hit on the GPU', swatch: null, time: '–', ...empty, blocks: count(b.gpu_hit.blocks), tokens: count(b.gpu_hit.tokens) },
    {
      part: 'host_reload',
      label: TTFT_PART_LABEL.host_reload,
      swatch: 'host_reload',
      time: time(b.host_reload.ns),
      blocks: count(b.host_reload.blocks),
      bytes: bytes(b.host_reload.bytes),
      rate: b.host_reload_bytes_per_s === null ? '–' : formatBandwidth(b.host_reload_bytes_per_s),
      rateTitle: b.disk_promote.blocks ? 'pipelined behind the disk reads: its time is the tail after the last read, not a copy rate' : 'bytes over the reload time',
      tokens: count(b.host_reload.tokens),
    },
    { part: 'disk_promote', label: TTFT_PART_LABEL.disk_promote, swatch: 'disk_promote', time: time(b.disk_promote.ns), blocks: count(b.disk_promote.blocks), bytes: bytes(b.disk_promote.bytes), rate: '', tokens: count(b.disk_promote.tokens) },
    { part: 'recompute', label: TTFT_PART_LABEL.recompute, swatch: 'recompute', time: time(b.recompute.ns), ...empty, tokens: count(b.recompute.tokens) },
    last,
  ];
}

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
          {rowsOf(b).map((row) => (
            <tr key={row.part} data-part={row.part}>
              <th>
                {row.swatch && <i style={{ background: partColor(theme, row.swatch) }} />} {row.label}
              </th>
              <td className="num">{row.time}</td>
              <td className="num">{row.blocks}</td>
              <td className="num">{row.bytes}</td>
              <td className="num" title={row.rateTitle}>
                {row.rate}
              </td>
              <td className="num">{row.tokens}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {b.source === 'recorded' && (b.disk_promote.blocks ?? 0) > 0 && (
        <p className="muted" data-testid="ttft-pipelined-note">
          The {formatCount(b.host_reload.blocks ?? 0)} blocks reloaded from host include the {formatCount(b.disk_promote.blocks ?? 0)} promoted from disk (disk → host → GPU, pipelined):
          the reload&apos;s time is its tail after the last disk read, not a copy time, so it has no rate; its tokens are those the host pool held.
        </p>
      )}
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
  return (
    <figure className="chart" data-testid="ttft-breakdown-chart" data-source={recorded ? 'recorded' : 'derived'}>
      <figcaption>Mean queued TTFT per round, by part</figcaption>
      <svg width={W} height={H} role="img" aria-label="Mean TTFT per round, split by part">
        <NsGridlines y={y} count={4} x0={M.l} x1={W - M.r} />
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
