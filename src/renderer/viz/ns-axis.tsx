/**
 * The time axis of the window's SVG charts (Compare's, Summary's TTFT breakdown): horizontal
 * gridlines at a scale's ticks, each labelled in one unit and precision for the whole axis
 * (axisNsFormat).
 */
import type { ScaleLinear } from 'd3';
import { axisNsFormat } from '../../shared/format';

export function NsGridlines({ y, count, x0, x1 }: { y: ScaleLinear<number, number>; count: number; x0: number; x1: number }) {
  const ticks = y.ticks(count);
  const label = axisNsFormat(ticks[ticks.length - 1] ?? 0, ticks.length > 1 ? ticks[1]! - ticks[0]! : 0);
  return (
    <>
      {ticks.map((t) => (
        <g key={t}>
          <line x1={x0} x2={x1} y1={y(t)} y2={y(t)} className="gridline" />
          <text x={x0 - 6} y={y(t)} textAnchor="end" dominantBaseline="middle" className="tick">
            {label(t)}
          </text>
        </g>
      ))}
    </>
  );
}
