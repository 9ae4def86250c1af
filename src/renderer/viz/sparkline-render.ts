/**
 * A counter as a sparkline up to the replay's current time (nvidia-smi samples in the Live view).
 * Pure; min/max per pixel column so a long run still costs one segment per column.
 */
import type { Ctx2D } from './ctx2d';
import { upperBound } from '../../shared/replay';

export function renderSparklineInto(ctx: Ctx2D, t: Float64Array, v: Float64Array, n: number, t0: number, t1: number, now: number, max: number, w: number, h: number, color: string, cursorColor: string): number {
  ctx.clearRect(0, 0, w, h);
  if (n === 0 || t1 <= t0) return 0;
  const sx = w / (t1 - t0);
  const sy = (x: number) => h - 1 - (Math.max(0, x) / (max || 1)) * (h - 2);
  ctx.strokeStyle = color;
  ctx.lineWidth = 1;
  ctx.beginPath();
  let col = -1;
  let drawn = 0;
  for (let i = 0; i < n && t[i]! <= now; i++) {
    const x = Math.floor((t[i]! - t0) * sx);
    if (x === col) continue;
    col = x;
    if (drawn === 0) ctx.moveTo(x, sy(v[i]!));
    else ctx.lineTo(x, sy(v[i]!));
    drawn++;
  }
  ctx.stroke();
  ctx.fillStyle = cursorColor;
  ctx.fillRect(Math.min(w - 1, Math.max(0, Math.floor((now - t0) * sx))), 0, 1, h);
  return drawn;
}

/**
 * The sample in force at `now` (the last at or before it), or null before the first: the Live
 * view prints it beside each sparkline, which otherwise showed a shape with no value and no scale.
 */
export function sampleAt(t: Float64Array, v: Float64Array, n: number, now: number): number | null {
  const i = upperBound(t, n, now);
  return i === 0 ? null : v[i - 1]!;
}
