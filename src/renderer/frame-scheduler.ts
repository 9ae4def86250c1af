/**
 * The one requestAnimationFrame loop of the window (docs/window.md, "Conventions"): views register
 * draw callbacks and ask for frames; every dirty view is drawn once per animation frame, and
 * continuous animations (replay playback) keep asking. Frame times are kept for the benchmarks.
 */
type Draw = (now: number) => boolean | void;

interface Entry {
  draw: Draw;
  dirty: boolean;
}

const entries = new Set<Entry>();
let scheduled = false;
let lastFrame = 0;
/** Recent frame intervals (ms), for the fps readout and bench/renderer-*. */
export const frameIntervals: number[] = [];

function tick(now: number): void {
  scheduled = false;
  if (lastFrame) {
    frameIntervals.push(now - lastFrame);
    if (frameIntervals.length > 600) frameIntervals.splice(0, frameIntervals.length - 600);
  }
  lastFrame = now;
  let again = false;
  for (const e of entries) {
    if (!e.dirty) continue;
    e.dirty = false;
    // A draw returning true wants the next frame too (an animation in progress).
    if (e.draw(now) === true) {
      e.dirty = true;
      again = true;
    }
  }
  if (again) request();
  else lastFrame = 0;
}

function request(): void {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(tick);
}

/** Registers a draw callback; returns `invalidate` (ask for a frame) and `dispose`. */
export function registerDraw(draw: Draw): { invalidate: () => void; dispose: () => void } {
  const entry: Entry = { draw, dirty: true };
  entries.add(entry);
  request();
  return {
    invalidate: () => {
      entry.dirty = true;
      request();
    },
    dispose: () => {
      entries.delete(entry);
    },
  };
}
