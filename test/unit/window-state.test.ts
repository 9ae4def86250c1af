import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseWindowState, readWindowState, restoreWindowBounds, writeWindowState, type Rect } from '../../src/main/core/window-state';

const DEFAULTS = { width: 1440, height: 900, minWidth: 960, minHeight: 600 };
// A laptop (primary, with a 25 px top bar) and a 4K monitor to its right.
const laptop: Rect = { x: 0, y: 25, width: 1920, height: 1055 };
const monitor: Rect = { x: 1920, y: 0, width: 3840, height: 2160 };

describe('window state', () => {
  it('first start: the default size, centred on the primary display', () => {
    expect(restoreWindowBounds(null, [laptop, monitor], DEFAULTS)).toEqual({ x: 240, y: 25 + 78, width: 1440, height: 900, maximized: false });
  });

  it('a window that still fits is restored exactly where it was', () => {
    const saved = { x: 2500, y: 300, width: 1600, height: 1000, maximized: false };
    expect(restoreWindowBounds(saved, [laptop, monitor], DEFAULTS)).toEqual(saved);
  });

  it('a window left on an unplugged monitor comes back to the primary display', () => {
    const saved = { x: 2500, y: 300, width: 1600, height: 1000, maximized: true };
    const r = restoreWindowBounds(saved, [laptop], DEFAULTS);
    expect(r).toEqual({ x: 160, y: 25 + 28, width: 1600, height: 1000, maximized: true });
  });

  it('a window too big for its display shrinks to the work area; one hanging off the edge moves in', () => {
    const r = restoreWindowBounds({ x: 1000, y: -200, width: 2600, height: 1400, maximized: false }, [laptop], DEFAULTS);
    expect(r).toEqual({ x: 0, y: 25, width: 1920, height: 1055, maximized: false });
    const edge = restoreWindowBounds({ x: 1700, y: 900, width: 1000, height: 700, maximized: false }, [laptop], DEFAULTS);
    expect(edge).toEqual({ x: 920, y: 380, width: 1000, height: 700, maximized: false });
  });

  it('straddling two displays: it belongs to the one holding most of it', () => {
    const r = restoreWindowBounds({ x: 1700, y: 100, width: 1200, height: 800, maximized: false }, [laptop, monitor], DEFAULTS);
    expect(r.x).toBe(1920);
    expect(r.y).toBe(100);
  });

  it('never below the minimum size unless the display itself is smaller', () => {
    expect(restoreWindowBounds({ x: 0, y: 25, width: 100, height: 100, maximized: false }, [laptop], DEFAULTS)).toMatchObject({ width: 960, height: 600 });
    const tiny: Rect = { x: 0, y: 0, width: 800, height: 500 };
    expect(restoreWindowBounds({ x: 0, y: 0, width: 1400, height: 900, maximized: false }, [tiny], DEFAULTS)).toEqual({ x: 0, y: 0, width: 800, height: 500, maximized: false });
  });

  it('garbage in the file is "no saved state"', async () => {
    expect(parseWindowState({ width: 'wide', height: 3 })).toBeNull();
    expect(parseWindowState({ width: 800, height: Number.NaN })).toBeNull();
    expect(parseWindowState({ width: 800, height: 600, x: 5 })).toEqual({ width: 800, height: 600, maximized: false });
    const d = mkdtempSync(join(tmpdir(), 'kvscope-ws-'));
    writeFileSync(join(d, 'w.json'), '{not json');
    expect(await readWindowState(join(d, 'w.json'))).toBeNull();
    expect(await readWindowState(join(d, 'missing.json'))).toBeNull();
    await writeWindowState(join(d, 'w.json'), { x: 1, y: 2, width: 1000, height: 700, maximized: true });
    expect(await readWindowState(join(d, 'w.json'))).toEqual({ x: 1, y: 2, width: 1000, height: 700, maximized: true });
  });
});
