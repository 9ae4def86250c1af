import { createContext, useContext, useEffect, useState } from 'react';
import { resolveVizTheme, type VizTheme } from './viz/ctx2d';
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

/** Dark or light: the Settings theme when pinned, else prefers-color-scheme; both followed live. */
export function useVizTheme(): VizTheme {
  const [theme, setTheme] = useState<VizTheme>(currentVizTheme);
  useEffect(() => {
    const q = window.matchMedia?.('(prefers-color-scheme: light)') ?? null;
    const on = () => setTheme(currentVizTheme());
    on();
    q?.addEventListener('change', on);
    // applyTheme pins <html data-theme>: an attribute observer sees Settings' preview and startup alike.
    const mo = new MutationObserver(on);
    mo.observe(document.documentElement, { attributes: true, attributeFilter: ['data-theme'] });
    return () => {
      q?.removeEventListener('change', on);
      mo.disconnect();
    };
  }, []);
  return theme;
}

function currentVizTheme(): VizTheme {
  if (typeof window === 'undefined') return resolveVizTheme(undefined, false);
  return resolveVizTheme(document.documentElement.dataset.theme, window.matchMedia?.('(prefers-color-scheme: light)').matches ?? false);
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
