import { createContext, useContext, useEffect, useState } from 'react';
import { DARK_THEME, LIGHT_THEME, type VizTheme } from './viz/ctx2d';
import type { RunData, RunDataCache } from './run-data';

export const RunCacheContext = createContext<RunDataCache | null>(null);

export function useRunCache(): RunDataCache {
  const c = useContext(RunCacheContext);
  if (!c) throw new Error('useRunCache outside RunCacheContext');
  return c;
}

/**
 * The run with id `runId`, re-rendered at most every `throttleMs` while a live tail appends to it
 * (canvases read the model directly each frame and need no re-render).
 */
export function useRunData(runId: string | null, throttleMs = 250): { data: RunData | null; error: string | null; version: number } {
  const cache = useRunCache();
  const [state, setState] = useState<{ data: RunData | null; error: string | null; version: number }>({ data: null, error: null, version: 0 });
  useEffect(() => {
    if (!runId) return;
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | null = null;
    setState({ data: null, error: null, version: 0 });
    cache.open(runId).then(
      (d) => alive && setState({ data: d, error: null, version: d.version }),
      (e: Error) => alive && setState({ data: null, error: e.message, version: 0 }),
    );
    const off = cache.listen(runId, (d) => {
      if (timer) return;
      timer = setTimeout(() => {
        timer = null;
        if (alive) setState({ data: d, error: null, version: d.version });
      }, throttleMs);
    });
    return () => {
      alive = false;
      off();
      if (timer) clearTimeout(timer);
    };
  }, [cache, runId, throttleMs]);
  return state;
}

/** Dark or light, following prefers-color-scheme live. */
export function useVizTheme(): VizTheme {
  const q = typeof window !== 'undefined' && window.matchMedia ? window.matchMedia('(prefers-color-scheme: light)') : null;
  const [light, setLight] = useState(q?.matches ?? false);
  useEffect(() => {
    if (!q) return;
    const on = () => setLight(q.matches);
    q.addEventListener('change', on);
    return () => q.removeEventListener('change', on);
  }, [q]);
  return light ? LIGHT_THEME : DARK_THEME;
}

/** Canvas backing size for its CSS size and the device pixel ratio. */
export function fitCanvas(canvas: HTMLCanvasElement, cssW: number, cssH: number, dpr = window.devicePixelRatio || 1): { w: number; h: number; dpr: number } {
  const w = Math.max(1, Math.round(cssW * dpr));
  const h = Math.max(1, Math.round(cssH * dpr));
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  canvas.style.width = `${cssW}px`;
  canvas.style.height = `${cssH}px`;
  return { w, h, dpr };
}
