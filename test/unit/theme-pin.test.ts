/**
 * The Settings theme (Dark / Light) pins the whole window, whatever the OS prefers: every colour
 * app.css switches on prefers-color-scheme is also set under both `:root[data-theme]` rules, and
 * the canvases' theme follows the pin before the OS. Only the four base colours were pinned once,
 * so Dark on a light OS kept the light accent, grid and status colours, and the pools and timeline
 * canvases stayed light inside a dark window.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DARK_THEME, LIGHT_THEME, resolveVizTheme } from '../../src/renderer/viz/ctx2d';

const css = (p: string) => readFileSync(join(process.cwd(), p), 'utf8');
const APP = css('src/renderer/styles/app.css');
const THEME = css('src/renderer/features/settings/theme.css');

/** Custom properties declared inside blocks whose opening text matches `open`. */
function varsIn(text: string, open: RegExp): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(open)) {
    // The block's body up to its matching close brace (media blocks nest one level).
    let depth = 0;
    let i = m.index! + m[0].length - 1;
    const start = i;
    for (; i < text.length; i++) {
      if (text[i] === '{') depth++;
      else if (text[i] === '}' && --depth === 0) break;
    }
    for (const v of text.slice(start, i).matchAll(/(--[a-z-]+)\s*:/g)) out.add(v[1]!);
  }
  return out;
}

describe('theme pinned in Settings', () => {
  const switched = varsIn(APP, /@media \(prefers-color-scheme: light\)\s*\{/g);
  const base = varsIn(APP, /:root\s*\{/g);

  it('app.css switches colours on the OS preference (what the pin must cover)', () => {
    expect(switched.size).toBeGreaterThanOrEqual(8);
    for (const v of switched) expect(base.has(v), `${v} has no dark default`).toBe(true);
  });

  for (const t of ['dark', 'light']) {
    it(`:root[data-theme='${t}'] sets every colour the OS preference switches`, () => {
      const pinned = varsIn(THEME, new RegExp(`:root\\[data-theme='${t}'\\]\\s*\\{`, 'g'));
      expect([...switched].filter((v) => !pinned.has(v))).toEqual([]);
    });
  }

  it('the canvases follow the pin before the OS preference', () => {
    expect(resolveVizTheme('dark', true)).toBe(DARK_THEME);
    expect(resolveVizTheme('light', false)).toBe(LIGHT_THEME);
    expect(resolveVizTheme(undefined, true)).toBe(LIGHT_THEME);
    expect(resolveVizTheme(undefined, false)).toBe(DARK_THEME);
  });
});
