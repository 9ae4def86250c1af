/** Sparklines of nvidia-smi counters draw the samples up to the replay's time, one point per column. */
import { describe, expect, it } from 'vitest';
import { renderSparklineInto, sampleAt } from '../../src/renderer/viz/sparkline-render';
import { recordingCtx } from '../helpers/recording-ctx';

describe('renderSparklineInto', () => {
  const t = Float64Array.from({ length: 1000 }, (_, i) => i * 1e6);
  const v = Float64Array.from({ length: 1000 }, (_, i) => (i % 100) + 1);

  it('draws only samples at or before now, at most one per pixel column, and a cursor at now', () => {
    const ctx = recordingCtx();
    const n = renderSparklineInto(ctx, t, v, t.length, 0, 999e6, 499e6, 100, 200, 30, '#0af', '#888');
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThanOrEqual(101); // columns 0..100 cover t ≤ now (half the width)
    const xs = ctx.calls.filter((c) => c.fn === 'lineTo' || c.fn === 'moveTo').map((c) => c.args[0] as number);
    expect(Math.max(...xs)).toBeLessThanOrEqual(100);
    const cursor = ctx.calls.filter((c) => c.fn === 'fillRect').at(-1)!;
    expect(cursor.args[0]).toBe(Math.floor((499e6 / 999e6) * 200));
  });

  it('scales values to the track height against max', () => {
    const ctx = recordingCtx();
    renderSparklineInto(ctx, Float64Array.of(0, 1e6), Float64Array.of(0, 100), 2, 0, 1e6, 1e6, 100, 100, 20, '#0af', '#888');
    const ys = ctx.calls.filter((c) => c.fn === 'lineTo' || c.fn === 'moveTo').map((c) => c.args[1] as number);
    expect(ys[0]).toBe(19); // 0 at the bottom
    expect(ys[1]).toBe(1); // max at the top
  });

  it('sampleAt gives the sample in force at now (the value printed beside the sparkline)', () => {
    expect(sampleAt(t, v, t.length, -1)).toBeNull();
    expect(sampleAt(t, v, t.length, 0)).toBe(1);
    expect(sampleAt(t, v, t.length, 1.5e6)).toBe(2);
    expect(sampleAt(t, v, t.length, 499e6)).toBe(100);
    expect(sampleAt(t, v, t.length, 5e12)).toBe(100);
    // Only the first n samples count (a live tail's columns are longer than what has arrived).
    expect(sampleAt(t, v, 10, 5e12)).toBe(10);
  });
});
