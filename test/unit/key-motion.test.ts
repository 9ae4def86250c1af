/**
 * W/A/S/D as Perfetto: a held key moves the view by the time it is down (not by the number of
 * frames drawn), and a tap moves a whole step (TAP_MS of motion), where it moved ~4% before.
 */
import { describe, expect, it } from 'vitest';
import { KeyMotion, PAN_PX_PER_MS, TAP_MS, typingTarget, ZOOM_PER_MS } from '../../src/renderer/viz/key-motion';

describe('KeyMotion', () => {
  it('a tap of W zooms in by TAP_MS of motion, whether its frames come often or seldom', () => {
    for (const frames of [[16, 32, 48, 300], [250], [100, 210]]) {
      const m = new KeyMotion();
      m.press('w', 1000);
      m.release('w', 1030);
      let zoom = 1;
      for (const f of frames) zoom *= m.step(1000 + f).zoom;
      expect(zoom).toBeCloseTo(Math.pow(ZOOM_PER_MS, TAP_MS), 6);
      expect(zoom).toBeGreaterThan(1.5);
      expect(m.active).toBe(false);
    }
  });

  it('a held key moves for as long as it is held; key repeats do not restart it', () => {
    const m = new KeyMotion();
    m.press('d', 0);
    expect(m.step(400)).toMatchObject({ pan: -PAN_PX_PER_MS * 400, active: true });
    m.press('d', 450); // auto-repeat
    m.release('d', 1000);
    const s = m.step(1200);
    expect(s.pan).toBeCloseTo(-PAN_PX_PER_MS * 600, 9);
    expect(s.active).toBe(false);
  });

  it('W and S together cancel; A pans right (earlier), D left', () => {
    const m = new KeyMotion();
    m.press('w', 0);
    m.press('s', 0);
    m.press('a', 0);
    const s = m.step(100);
    expect(s.zoom).toBe(1);
    expect(s.pan).toBeCloseTo(PAN_PX_PER_MS * 100, 9);
  });

  it('the window losing focus ends a held key after its tap step', () => {
    const m = new KeyMotion();
    m.press('a', 0);
    m.releaseAll(50);
    expect(m.step(TAP_MS + 500).pan).toBeCloseTo(PAN_PX_PER_MS * TAP_MS, 9);
    expect(m.active).toBe(false);
  });

  it('keys typed into a field or a dialog are not the view\'s', () => {
    const el = (tagName: string, inDialog = false) => ({ tagName, isContentEditable: false, closest: () => (inDialog ? {} : null) }) as unknown as EventTarget;
    expect(typingTarget(el('INPUT'))).toBe(true);
    expect(typingTarget(el('SELECT'))).toBe(true);
    expect(typingTarget(el('BUTTON'))).toBe(false);
    expect(typingTarget(el('BUTTON', true))).toBe(true);
    expect(typingTarget(el('DIV'))).toBe(false);
    expect(typingTarget(null)).toBe(false);
  });
});
