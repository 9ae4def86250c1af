/**
 * The window's size and position across restarts, as pure functions over plain rectangles so they
 * are tested without Electron. A saved position is trusted only if it still fits a display that
 * exists now: monitors get unplugged, resolutions change, and a window restored off-screen is a
 * window the user cannot reach (VS Code's windowsStateHandler validates restored bounds the same way).
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './settings';

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** window-state.json. x/y are absent until the window has been placed once. */
export interface WindowState {
  x?: number;
  y?: number;
  width: number;
  height: number;
  maximized: boolean;
}

export interface WindowSizeDefaults {
  width: number;
  height: number;
  minWidth: number;
  minHeight: number;
}

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Reads a saved state from untrusted JSON; null when it has no usable size. */
export function parseWindowState(raw: unknown): WindowState | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const r = raw as Record<string, unknown>;
  if (!finite(r.width) || !finite(r.height) || r.width <= 0 || r.height <= 0) return null;
  const out: WindowState = { width: Math.round(r.width), height: Math.round(r.height), maximized: r.maximized === true };
  if (finite(r.x) && finite(r.y)) {
    out.x = Math.round(r.x);
    out.y = Math.round(r.y);
  }
  return out;
}

function overlapArea(a: Rect, b: Rect): number {
  const w = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y);
  return w > 0 && h > 0 ? w * h : 0;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(Math.max(v, lo), Math.max(lo, hi));
}

/**
 * Where the window opens. `workAreas` are the displays' work areas (without taskbar/dock), the
 * primary display first. Rules:
 * - no saved state, or no displays known: the defaults, centred on the primary display;
 * - the size is clamped to [min, the work area] of the display the window belongs to;
 * - that display is the one holding most of the window; a window on no current display moves to
 *   the primary one;
 * - the position is clamped so the whole window lies inside that work area.
 */
export function restoreWindowBounds(saved: WindowState | null, workAreas: Rect[], defaults: WindowSizeDefaults): WindowState {
  const primary = workAreas[0];
  const fitSize = (w: number, h: number, area: Rect) => ({
    width: clamp(w, Math.min(defaults.minWidth, area.width), area.width),
    height: clamp(h, Math.min(defaults.minHeight, area.height), area.height),
  });
  if (!primary) {
    return { width: saved?.width ?? defaults.width, height: saved?.height ?? defaults.height, maximized: saved?.maximized ?? false };
  }
  const centred = (size: { width: number; height: number }, area: Rect, maximized: boolean): WindowState => ({
    ...size,
    x: area.x + Math.round((area.width - size.width) / 2),
    y: area.y + Math.round((area.height - size.height) / 2),
    maximized,
  });
  if (!saved) return centred(fitSize(defaults.width, defaults.height, primary), primary, false);
  if (saved.x === undefined || saved.y === undefined) return centred(fitSize(saved.width, saved.height, primary), primary, saved.maximized);
  const rect: Rect = { x: saved.x, y: saved.y, width: saved.width, height: saved.height };
  let best: Rect | null = null;
  let bestArea = 0;
  for (const area of workAreas) {
    const a = overlapArea(rect, area);
    if (a > bestArea) {
      best = area;
      bestArea = a;
    }
  }
  if (!best) return centred(fitSize(saved.width, saved.height, primary), primary, saved.maximized);
  const size = fitSize(saved.width, saved.height, best);
  return {
    ...size,
    x: clamp(saved.x, best.x, best.x + best.width - size.width),
    y: clamp(saved.y, best.y, best.y + best.height - size.height),
    maximized: saved.maximized,
  };
}

/** Reads window-state.json; a missing or unreadable file is "no saved state", never an error. */
export async function readWindowState(file: string): Promise<WindowState | null> {
  try {
    return parseWindowState(JSON.parse(await readFile(file, 'utf8')));
  } catch {
    return null;
  }
}

export async function writeWindowState(file: string, state: WindowState): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(state) + '\n');
}
