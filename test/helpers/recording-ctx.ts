/** A Ctx2D that records calls, for unit tests of the pure canvas renderers (no DOM in Node). */
import type { Ctx2D } from '../../src/renderer/viz/ctx2d';

export interface Call {
  fn: string;
  args: number[] | string[];
  fillStyle: string;
  strokeStyle: string;
  /** ctx.font at the call (for text: its size). */
  font: string;
}

export function recordingCtx(): Ctx2D & { calls: Call[]; rects(style?: string): Array<[number, number, number, number]> } {
  const calls: Call[] = [];
  const ctx = {
    fillStyle: '#000' as unknown,
    strokeStyle: '#000' as unknown,
    globalAlpha: 1,
    lineWidth: 1,
    font: '',
    textAlign: 'left',
    textBaseline: 'alphabetic',
    calls,
    // 11px system-ui averages ~6 px a character; tests compare against this same measure.
    measureText(text: string) {
      return { width: text.length * 6 };
    },
    rects(style?: string) {
      return calls.filter((c) => c.fn === 'fillRect' && (style === undefined || c.fillStyle === style)).map((c) => c.args as [number, number, number, number]);
    },
  } as Ctx2D & { calls: Call[]; rects(style?: string): Array<[number, number, number, number]> };
  for (const fn of ['fillRect', 'strokeRect', 'clearRect', 'beginPath', 'moveTo', 'lineTo', 'rect', 'stroke', 'fill', 'clip', 'save', 'restore', 'fillText', 'setLineDash']) {
    (ctx as unknown as Record<string, unknown>)[fn] = (...args: never[]) => {
      calls.push({ fn, args: args as unknown as number[], fillStyle: String(ctx.fillStyle), strokeStyle: String(ctx.strokeStyle), font: ctx.font });
    };
  }
  return ctx;
}
