/**
 * The part of CanvasRenderingContext2D the pure renderers use, declared here so they compile and
 * are unit-tested without the DOM (a recording context stands in for the canvas in tests).
 */
export interface Ctx2D {
  fillStyle: string | unknown;
  strokeStyle: string | unknown;
  globalAlpha: number;
  lineWidth: number;
  font: string;
  textAlign: string;
  textBaseline: string;
  fillRect(x: number, y: number, w: number, h: number): void;
  strokeRect(x: number, y: number, w: number, h: number): void;
  clearRect(x: number, y: number, w: number, h: number): void;
  beginPath(): void;
  moveTo(x: number, y: number): void;
  lineTo(x: number, y: number): void;
  rect(x: number, y: number, w: number, h: number): void;
  stroke(): void;
  fill(): void;
  clip(): void;
  save(): void;
  restore(): void;
  fillText(text: string, x: number, y: number): void;
  measureText(text: string): { width: number };
  setLineDash(segments: number[]): void;
}

/** Colours the renderers take from the page's theme (CSS variables), so dark and light both work. */
export interface VizTheme {
  background: string;
  panel: string;
  grid: string;
  text: string;
  muted: string;
  accent: string;
  h2d: string;
  d2h: string;
  /** A disk tier's reads and writes (and, in TTFT breakdowns, promotion from disk). */
  disk: string;
  other: string;
  highlight: string;
  users: string[];
}

/** Tableau 10 (d3.schemeTableau10): distinct on dark and light backgrounds. */
export const USER_COLORS = ['#4e79a7', '#f28e2c', '#e15759', '#76b7b2', '#59a14f', '#edc949', '#af7aa1', '#ff9da7', '#9c755f', '#bab0ab'];

export const DARK_THEME: VizTheme = {
  background: '#111418',
  panel: '#1a1f26',
  grid: '#2a313b',
  text: '#e6e9ee',
  muted: '#8d96a3',
  accent: '#4ea1ff',
  h2d: '#3fb950',
  d2h: '#d29922',
  disk: '#a371f7',
  other: '#8d96a3',
  highlight: '#ff4fd8',
  users: USER_COLORS,
};

export const LIGHT_THEME: VizTheme = {
  ...DARK_THEME,
  background: '#f7f8fa',
  panel: '#ffffff',
  grid: '#e3e6ea',
  text: '#1b1f24',
  muted: '#5b6572',
  accent: '#1f6feb',
  h2d: '#1a7f37',
  d2h: '#9a6700',
  disk: '#8250df',
  highlight: '#d300a6',
};

/**
 * The canvases' theme: the one pinned in Settings (`<html data-theme>`, set by applyTheme) wins;
 * without a pin, the OS preference. Reading prefers-color-scheme alone left the pools and the
 * timeline light on a dark window when the user picked Dark on a light OS.
 */
export function resolveVizTheme(pinned: string | undefined, prefersLight: boolean): VizTheme {
  if (pinned === 'light') return LIGHT_THEME;
  if (pinned === 'dark') return DARK_THEME;
  return prefersLight ? LIGHT_THEME : DARK_THEME;
}
