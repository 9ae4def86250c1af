/**
 * W/A/S/D zoom and pan as Perfetto does them: a key held keeps moving the view at a steady rate,
 * and a tap still moves it a fixed step (the motion lasts at least TAP_MS, however short the
 * press). Motion is integrated over time, not counted per frame, so a slow frame moves as far as
 * several fast ones. Pure (times in ms on one clock, e.g. performance.now()), unit-tested.
 */

/** How long a tap moves the view: a tap of W zooms in by ZOOM_PER_MS^TAP_MS ≈ 1.8×. */
export const TAP_MS = 200;
/** Zoom factor per ms while W (in) or S (out) is down: ~5% a frame at 60 fps, as Perfetto. */
export const ZOOM_PER_MS = 1.003;
/** Pan speed while A (left) or D (right) is down, px per ms: ~20 px a frame at 60 fps. */
export const PAN_PX_PER_MS = 1.2;

export type MotionKey = 'w' | 'a' | 's' | 'd';

export function isMotionKey(k: string): k is MotionKey {
  return k === 'w' || k === 'a' || k === 's' || k === 'd';
}

export interface MotionStep {
  /** Multiply the zoom by this (> 1 zooms in). */
  zoom: number;
  /** Move the view's content right by this many px (A: positive, the view goes earlier in time). */
  pan: number;
  /** Still moving after this step (a key held, or a tap's step not yet done). */
  active: boolean;
}

export class KeyMotion {
  private readonly keys = new Map<MotionKey, { down: number; up: number | null }>();
  private last: number | null = null;

  /** A key went down (key repeats of a held key change nothing). */
  press(key: MotionKey, now: number): void {
    const k = this.keys.get(key);
    if (k && k.up === null) return;
    this.keys.set(key, { down: now, up: null });
    if (this.last === null) this.last = now;
  }

  /** The key came up: it moves on until its tap step is done. */
  release(key: MotionKey, now: number): void {
    const k = this.keys.get(key);
    if (k && k.up === null) k.up = now;
  }

  /** Focus left the window: every key is up (a keyup may never come). */
  releaseAll(now: number): void {
    for (const key of this.keys.keys()) this.release(key, now);
  }

  get active(): boolean {
    return this.keys.size > 0;
  }

  /** The motion between the last step (or the first press) and `now`. */
  step(now: number): MotionStep {
    const from = this.last ?? now;
    const moved: Record<MotionKey, number> = { w: 0, a: 0, s: 0, d: 0 };
    for (const [key, k] of this.keys) {
      const end = k.up === null ? now : Math.max(k.up, k.down + TAP_MS);
      moved[key] = Math.max(0, Math.min(now, end) - Math.max(from, k.down));
      if (k.up !== null && end <= now) this.keys.delete(key);
    }
    this.last = this.keys.size ? now : null;
    return { zoom: Math.pow(ZOOM_PER_MS, moved.w - moved.s), pan: PAN_PX_PER_MS * (moved.a - moved.d), active: this.keys.size > 0 };
  }
}

/** Whether a key event belongs to a control that takes typing or choices (it is not for the view). */
export function typingTarget(target: EventTarget | null): boolean {
  const el = target as { tagName?: string; isContentEditable?: boolean; closest?: (s: string) => unknown } | null;
  if (!el || typeof el.tagName !== 'string') return false;
  const tag = el.tagName.toUpperCase();
  if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' || el.isContentEditable === true) return true;
  // A dialog over the view has the keyboard (a prompt, the export dialog).
  return !!el.closest?.('[role=dialog], dialog, .modal, .shell-dialog');
}
